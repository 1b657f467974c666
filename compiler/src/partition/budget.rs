//! The per-rank parameter budget of the `memory` and `time` objectives.
//!
//! Default budget = Σ over *large* weights of their smallest even share (bytes / N when some
//! axis divides by N, else the whole weight) + slack, where slack = the bytes of every other
//! weight (norm scales, biases, masks, small tables). All bytes are stored bytes: a
//! quantised weight counts its int8 bytes plus its scale and zero point (their share when
//! split along, whole otherwise), and splits only where [`Weight::splittable`]. Large
//! weights are the `B` operand of a MatMul/Gemm, the vocabulary table and Gather tables over
//! [`SMALL_TABLE_BYTES`] (see [`large_weights`]). When all large weights divide, this is exactly `total/N + slack`
//! with slack = bytes of the small weights.
//! `--memory-per-device` replaces the total; segments (layers) get shares proportional to
//! their default budgets.
use super::ragged::Grains;
use super::{ObjectiveKind, PartitionOptions};
use std::collections::BTreeSet;
use tessera_ir::{Graph, NodeId, Op, TensorId, Weight};

/// Gather tables up to this size count as small (slack).
pub const SMALL_TABLE_BYTES: usize = 2 << 20;

/// Budgets of the whole graph and of its segments.
#[derive(Debug, Clone)]
pub struct Budgets {
    /// Whole-graph per-rank budget in bytes (None under `latency`).
    pub total: Option<f64>,
    shares: Vec<f64>,
    scale: f64,
}

/// The large weights of `g`: MatMul/Gemm `B` operands, and Gather tables that are the
/// vocabulary (the most rows of any gathered table, as Megatron's vocab-parallel embedding)
/// or over [`SMALL_TABLE_BYTES`]. Other tables (positions, token types, rotary caches) are
/// slack.
pub fn large_weights(g: &Graph) -> BTreeSet<TensorId> {
    let tables = || {
        g.nodes
            .iter()
            .filter(|nd| matches!(nd.op, Op::Gather(_)))
            .filter_map(|nd| nd.inputs.first())
            .filter_map(|t| g.weights.get(t).map(|w| (*t, w)))
            .filter(|(_, w)| w.shape.len() >= 2)
    };
    let vocab_rows = tables().map(|(_, w)| w.shape[0]).max().unwrap_or(0);
    let mut big = BTreeSet::new();
    for nd in &g.nodes {
        let cand = match &nd.op {
            Op::MatMul(_) | Op::Gemm(_) => nd.inputs.get(1),
            Op::Gather(_) => nd.inputs.first().filter(|t| {
                g.weights.get(t).is_some_and(|w| {
                    w.size_bytes() > SMALL_TABLE_BYTES
                        || (w.shape.len() >= 2 && w.shape[0] == vocab_rows)
                })
            }),
            _ => None,
        };
        if let Some(t) = cand.filter(|t| g.weights.contains_key(t)) {
            big.insert(*t);
        }
    }
    big
}

/// The smallest stored share (the largest rank's part) of `w` over the axes it splits N
/// ways, evenly or ragged ([`Grains::bounds`], whole quantisation blocks, extent over 1),
/// or None when none does.
pub fn split_share(w: &Weight, n: usize, grains: &Grains) -> Option<usize> {
    (0..w.shape.len())
        .filter(|&a| w.shape[a] > 1)
        .filter_map(|a| {
            let b = grains.bounds(w.shape[a], n)?;
            w.splittable_at(a, &b).then_some(())?;
            let mut local = w.shape.clone();
            local[a] = b[0].1 - b[0].0;
            Some(w.part_bytes(&local))
        })
        .min()
}

/// Slack on the share of a weight whose split is ragged (N divides none of its axes): its
/// largest element-wise chunk is what [`split_share`] counts, but the plan that splits it
/// along whole heads (a fused QKV projection's sections, 3,3,2 heads of 8 at N = 3) holds up
/// to a head more per section; without slack the budget would forbid the head split.
pub const RAGGED_SLACK: f64 = 0.125;

impl Budgets {
    /// Budgets for `opts`.
    pub fn new(g: &Graph, n: usize, opts: &PartitionOptions) -> Self {
        let big = large_weights(g);
        let grains = Grains::of(g);
        let mut shares = vec![0.0; g.tensors.len()];
        for (t, w) in &g.weights {
            // Stored bytes: a quantised weight counts its int8 bytes, scale and zero point.
            let bytes = w.size_bytes() as f64;
            let share = split_share(w, n, &grains);
            shares[t.index()] = match share {
                // Ragged: the largest chunk times N exceeds the whole.
                Some(s) if big.contains(t) && (s * n) as f64 > bytes => {
                    (s as f64 * (1.0 + RAGGED_SLACK)).min(bytes)
                }
                Some(s) if big.contains(t) => s as f64,
                _ => bytes,
            };
        }
        let default: f64 = shares.iter().sum();
        let (total, scale) = match (opts.objective, opts.memory_per_device) {
            (ObjectiveKind::Latency, _) => (None, 1.0),
            (ObjectiveKind::Memory | ObjectiveKind::Time, None) => (Some(default), 1.0),
            (ObjectiveKind::Memory | ObjectiveKind::Time, Some(b)) => (
                Some(b as f64),
                if default > 0.0 {
                    b as f64 / default
                } else {
                    1.0
                },
            ),
        };
        Budgets {
            total,
            shares,
            scale,
        }
    }

    /// Budget of a segment made of `nodes`: its weights' default shares, scaled.
    pub fn for_nodes(&self, g: &Graph, nodes: &[NodeId]) -> Option<f64> {
        self.total?;
        let mut ws = BTreeSet::new();
        for &nid in nodes {
            ws.extend(
                g.node(nid)
                    .inputs
                    .iter()
                    .filter(|t| g.weights.contains_key(t))
                    .copied(),
            );
        }
        Some(ws.iter().map(|t| self.shares[t.index()]).sum::<f64>() * self.scale)
    }
}
