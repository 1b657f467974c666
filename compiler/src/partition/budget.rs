//! The per-rank parameter budget of the `memory` and `time` objectives.
//!
//! Default budget = Σ over *large* weights of their smallest even share (bytes / N when some
//! axis divides by N, else the whole weight) + slack, where slack = the bytes of every other
//! weight (norm scales, biases, masks, rotary caches, small tables). All bytes are stored
//! bytes: a quantised weight counts its int8 bytes plus its scale and zero point (their
//! share when split along, whole otherwise), and splits only where [`Weight::splittable`].
//! Large weights are the `B` operand of a MatMul/Gemm, the vocabulary table, Gather tables
//! over [`SMALL_TABLE_BYTES`] and stored tables added to the activations (a position
//! embedding folded to its lookup); see [`large_weights`]. A stored table's default share is
//! its whole bytes, so it weighs in the cap only. When all large weights divide, the
//! default is `total/N + slack`.
//! The default total is capped at [`PARAM_SLACK`] / N of the large weights plus the small
//! ones, when the smallest shares fit in that; where no plan fits the cap, the stored tables
//! become slack ([`Budgets::with_constants_slack`]), then the cap goes. `--memory-per-device`
//! replaces the total. Segments (layers) get their small weights' bytes and, per large
//! weight, its smallest share plus a common part of what its default share adds (or, with
//! a total above the default, the default shares scaled up alike): [`SegmentRule`]. A
//! weight read by several segments is charged to each in equal parts.
use super::ragged::Grains;
use super::{ObjectiveKind, PartitionOptions};
use std::collections::{BTreeMap, BTreeSet};
use tessera_ir::{Graph, NodeId, Op, TensorId, Weight};

/// Gather tables up to this size count as small (slack).
pub const SMALL_TABLE_BYTES: usize = 2 << 20;

/// Budgets of the whole graph and of its segments.
#[derive(Debug, Clone)]
pub struct Budgets {
    /// Whole-graph per-rank budget in bytes (None under `latency`).
    pub total: Option<f64>,
    shares: Vec<f64>,
    /// Whether each tensor is a large weight ([`large_weights`]).
    large: Vec<bool>,
    /// The smallest share of each weight: its split share for a large weight that splits,
    /// else its bytes.
    floors: Vec<f64>,
    /// How the total is shared among the segments ([`SegmentRule::of`]).
    rule: SegmentRule,
    /// The default total before the cap, when the cap lowered it.
    uncapped: Option<f64>,
}

/// The large weights of `g`: MatMul/Gemm `B` operands, Gather tables that are the
/// vocabulary (the most rows of any gathered table, as Megatron's vocab-parallel embedding)
/// or over [`SMALL_TABLE_BYTES`], and stored tables added to the activations
/// ([`stored_constants`]). Smaller gathered tables (positions, token types, rotary caches
/// looked up by position), masks and convolution kernels are slack.
pub fn large_weights(g: &Graph) -> BTreeSet<TensorId> {
    let mut big = product_weights(g);
    big.extend(stored_constants(g));
    big
}

/// The MatMul/Gemm `B` operands and the vocabulary or large Gather tables of `g` (the
/// large weights of [`large_weights`] but its stored constants).
fn product_weights(g: &Graph) -> BTreeSet<TensorId> {
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

/// Stored tables added to the activations: constants with two or more axes longer than 1,
/// every reader an Add that broadcasts them over its output's first (batch) axis only — a
/// position embedding folded to its lookup `[1, S, H]` at a fixed shape, a relative
/// position bias `[1, H, S, S]`. They are trained parameters, and issue 15's parameters per
/// rank count them as matrices (at the export zoo's sizes one such table is a fifth of a
/// rank's share). Masks and rotary caches, which broadcast over the heads, stay slack (they
/// are buffers, and every head reads them whole), as do convolution kernels and products'
/// weights (counted apart).
fn stored_constants(g: &Graph) -> BTreeSet<TensorId> {
    let mut readers: BTreeMap<TensorId, Vec<&tessera_ir::Node>> = BTreeMap::new();
    for nd in &g.nodes {
        for t in nd.inputs.iter().filter(|t| g.weights.contains_key(t)) {
            readers.entry(*t).or_default().push(nd);
        }
    }
    let added_per_row = |t: TensorId, nd: &tessera_ir::Node| {
        let (Op::Binary(b), Some(&y)) = (&nd.op, nd.outputs.first()) else {
            return false;
        };
        if b.kind != tessera_ir::op::BinaryOp::Add {
            return false;
        }
        let (ws, ys) = (&g.tensor(t).shape, &g.tensor(y).shape);
        ws.len() <= ys.len()
            && ws
                .iter()
                .rev()
                .zip(ys.iter().rev())
                .enumerate()
                .all(|(i, (w, y))| w == y || (i + 1 == ys.len() && *w == 1))
    };
    g.weights
        .iter()
        .filter(|(t, w)| {
            w.shape.iter().filter(|&&d| d > 1).count() >= 2
                && readers
                    .get(t)
                    .is_some_and(|rs| rs.iter().all(|nd| added_per_row(**t, nd)))
        })
        .map(|(t, _)| *t)
        .collect()
}

/// The stored share (the largest rank's part) of `w` on each axis it splits N ways, evenly
/// or ragged ([`Grains::bounds`], whole quantisation blocks, extent over 1).
fn axis_shares<'a>(
    w: &'a Weight,
    n: usize,
    grains: &'a Grains,
) -> impl Iterator<Item = usize> + 'a {
    (0..w.shape.len())
        .filter(|&a| w.shape[a] > 1)
        .filter_map(move |a| {
            let b = grains.bounds(w.shape[a], n)?;
            w.splittable_at(a, &b).then_some(())?;
            let mut local = w.shape.clone();
            local[a] = b[0].1 - b[0].0;
            Some(w.part_bytes(&local))
        })
}

/// The smallest stored share of `w` over the axes it splits N ways ([`axis_shares`]), or
/// None when none does.
pub fn split_share(w: &Weight, n: usize, grains: &Grains) -> Option<usize> {
    axis_shares(w, n, grains).min()
}

/// The largest stored share of a quantised `w` over the axes it splits N ways
/// ([`axis_shares`]): a row-split int8 weight holds its whole per-column scale, a
/// column-split one half of it, and a plan may need either (Megatron's plan splits half its
/// projections by rows), so the budget allows the larger. None when not quantised or no
/// axis splits.
pub fn quantised_share(w: &Weight, n: usize, grains: &Grains) -> Option<usize> {
    w.quant.as_ref()?;
    axis_shares(w, n, grains).max()
}

/// Slack on the share of a weight whose split is ragged (N divides none of its axes): its
/// largest element-wise chunk is what [`split_share`] counts, but the plan that splits it
/// along whole heads (a fused QKV projection's sections, 3,3,2 heads of 8 at N = 3) holds up
/// to a head more per section; without slack the budget would forbid the head split.
pub const RAGGED_SLACK: f64 = 0.125;

/// The default budget holds at most this times the large weights' bytes / N (plus the small
/// weights), where their smallest shares fit in it.
pub const PARAM_SLACK: f64 = 1.25;

impl Budgets {
    /// Budgets for `opts`.
    pub fn new(g: &Graph, n: usize, opts: &PartitionOptions) -> Self {
        Self::with_large(g, n, opts, true)
    }

    /// The budgets with the stored tables ([`stored_constants`]) as slack, as norm scales
    /// are: the fallback when no plan fits [`Budgets::new`] (a table that the model's plans
    /// cannot split within the cap), or `None` when the model has no such tables (the
    /// budgets would be the same).
    pub fn with_constants_slack(g: &Graph, n: usize, opts: &PartitionOptions) -> Option<Self> {
        if stored_constants(g).is_empty() {
            return None;
        }
        Some(Self::with_large(g, n, opts, false))
    }

    /// The budgets whose large weights are the products' weights and large tables, plus the
    /// stored tables when `constants_large`.
    fn with_large(g: &Graph, n: usize, opts: &PartitionOptions, constants_large: bool) -> Self {
        let grains = Grains::of(g);
        let constants = stored_constants(g);
        let mut big = product_weights(g);
        if constants_large {
            big.extend(constants.iter().copied());
        }
        let mut shares = vec![0.0; g.tensors.len()];
        for (t, w) in &g.weights {
            // Stored bytes: a quantised weight counts its int8 bytes, scale and zero point.
            let bytes = w.size_bytes() as f64;
            // A stored constant's default share is the whole of it (its place in the
            // budget is the cap's: 1.25/N of every matrix, below).
            let share = split_share(w, n, &grains).filter(|_| !constants.contains(t));
            shares[t.index()] = match share {
                // Ragged: the largest chunk times N exceeds the whole.
                Some(s) if big.contains(t) && (s * n) as f64 > bytes => {
                    (s as f64 * (1.0 + RAGGED_SLACK)).min(bytes)
                }
                // Quantised: whichever split the plan picks (scales whole on a row split).
                Some(s) if big.contains(t) => {
                    quantised_share(w, n, &grains).map_or(s, |q| q.max(s)) as f64
                }
                _ => bytes,
            };
        }
        // Key/value projections on more ranks than key/value heads: Megatron's plan holds
        // one head's block of each (1/kv, not 1/N), and the budget allows it.
        if let Some(kv) = grains.kv_blocks(n) {
            for nd in &g.nodes {
                let (Op::MatMul(_) | Op::Gemm(_), Some(&y), Some(&w)) =
                    (&nd.op, nd.outputs.first(), nd.inputs.get(1))
                else {
                    continue;
                };
                if grains.on_kv_path(y) {
                    if let Some(wt) = g.weights.get(&w) {
                        let block = wt.size_bytes() as f64 / kv as f64;
                        shares[w.index()] = shares[w.index()].max(block);
                    }
                }
            }
        }
        let default: f64 = shares.iter().sum();
        // At most PARAM_SLACK / N of the large weights (plus the small ones) when the
        // smallest shares fit in it: ragged head splits and key/value blocks may otherwise
        // add up past it (8 heads on 7 ranks hold 2/8 of attention on rank 0).
        let (mut large, mut floor) = (0.0, 0.0);
        let mut floors = shares.clone();
        for (t, w) in &g.weights {
            if big.contains(t) {
                let f = split_share(w, n, &grains).map_or(w.size_bytes(), |s| s) as f64;
                large += w.size_bytes() as f64;
                floor += f;
                floors[t.index()] = f.min(shares[t.index()]);
            }
        }

        let small: f64 = g
            .weights
            .iter()
            .filter(|(t, _)| !big.contains(t))
            .map(|(_, w)| w.size_bytes() as f64)
            .sum();
        let cap = PARAM_SLACK * large / n.max(1) as f64 + small;
        let capped = if floor + small <= cap {
            default.min(cap)
        } else {
            default
        };
        let total = match (opts.objective, opts.memory_per_device) {
            (ObjectiveKind::Latency, _) => None,
            (ObjectiveKind::Memory | ObjectiveKind::Time, None) => Some(capped),
            (ObjectiveKind::Memory | ObjectiveKind::Time, Some(b)) => Some(b as f64),
        };
        let large: Vec<bool> = (0..g.tensors.len())
            .map(|i| big.contains(&TensorId(i as u32)))
            .collect();
        let rule = total.map_or(SegmentRule::Scale(1.0, 1.0), |t| {
            SegmentRule::of(&shares, &floors, &large, t)
        });
        Budgets {
            total,
            shares,
            large,
            floors,
            rule,
            uncapped: (capped < default).then_some(default),
        }
    }

    /// The same budgets without the [`PARAM_SLACK`] cap, when the cap lowered them (the
    /// search falls back to them when no plan fits the capped budget).
    pub fn uncapped(&self) -> Option<Budgets> {
        let default = self.uncapped?;
        Some(Budgets {
            total: Some(default),
            shares: self.shares.clone(),
            large: self.large.clone(),
            floors: self.floors.clone(),
            rule: SegmentRule::of(&self.shares, &self.floors, &self.large, default),
            uncapped: None,
        })
    }

    /// The same budgets with the total times `factor` (segments scaled to it), for the last
    /// fallback of a default budget no plan fits; `None` under `latency` (no budget).
    pub fn relaxed(&self, factor: f64) -> Option<Budgets> {
        let total = self.total? * factor;
        Some(Budgets {
            total: Some(total),
            shares: self.shares.clone(),
            large: self.large.clone(),
            floors: self.floors.clone(),
            rule: SegmentRule::of(&self.shares, &self.floors, &self.large, total),
            uncapped: None,
        })
    }

    /// Budget of a segment made of `nodes`: its weights' default shares, each times the
    /// part of it the segment is charged (`charges`, absent: 1), scaled.
    pub fn for_nodes(
        &self,
        g: &Graph,
        nodes: &[NodeId],
        charges: &BTreeMap<TensorId, f64>,
    ) -> Option<f64> {
        self.total?;
        let ws = weights_read(g, nodes);
        Some(
            ws.iter()
                .map(|t| {
                    let (i, large) = (t.index(), self.large[t.index()]);
                    let part = match self.rule {
                        SegmentRule::Scale(l, _) if large => self.shares[i] * l,
                        SegmentRule::Scale(_, s) => self.shares[i] * s,
                        SegmentRule::Between(a) if large => {
                            self.floors[i] + a * (self.shares[i] - self.floors[i])
                        }
                        SegmentRule::Between(_) => self.shares[i],
                    };
                    part * charges.get(t).copied().unwrap_or(1.0)
                })
                .sum::<f64>(),
        )
    }

    /// The part of each weight that each of `segments` is charged: a weight read by `c`
    /// of them is held once (all its readers of a repeated block pick one layout; a
    /// prologue and an epilogue that pick two are caught after lowering), so each reader is
    /// charged 1/c of its bytes and the segments' budgets sum to the whole budget. Weights
    /// read by one segment are absent (charged in full).
    pub fn shared_charges(g: &Graph, segments: &[&[NodeId]]) -> BTreeMap<TensorId, f64> {
        let mut readers: BTreeMap<TensorId, usize> = BTreeMap::new();
        for seg in segments {
            for t in weights_read(g, seg) {
                *readers.entry(t).or_default() += 1;
            }
        }
        readers
            .into_iter()
            .filter(|(_, c)| *c > 1)
            .map(|(t, c)| (t, 1.0 / c as f64))
            .collect()
    }
}

/// How a whole budget is shared among the segments: the large weights' default shares
/// scaled alike (and the small weights' bytes), or, when the total lies between the large
/// weights' smallest shares and their default ones (the 1.25/N cap on a model whose stored
/// constants or ragged heads the default counts whole), each large weight's smallest share
/// plus the same part `a` of what its default share adds to it: then no segment gets less
/// than its weights can be split to, which a uniform scale below 1 would give a layer of
/// evenly split products.
#[derive(Debug, Clone, Copy)]
enum SegmentRule {
    /// Factors on the (large, small) weights' shares ([`segment_scales`]).
    Scale(f64, f64),
    /// A large weight gets `floor + a · (share - floor)`, a small one its bytes.
    Between(f64),
}

impl SegmentRule {
    fn of(shares: &[f64], floors: &[f64], large: &[bool], total: f64) -> Self {
        let (mut floor, mut above, mut small) = (0.0, 0.0, 0.0);
        for ((s, f), l) in shares.iter().zip(floors).zip(large) {
            if *l {
                floor += f;
                above += s - f;
            } else {
                small += s;
            }
        }
        let room = total - small - floor;
        if above > 0.0 && room >= 0.0 && room < above {
            SegmentRule::Between(room / above)
        } else {
            let (l, s) = segment_scales(shares, large, total);
            SegmentRule::Scale(l, s)
        }
    }
}

/// Factors on the large and the small weights' shares for a whole budget of `total`: the
/// small weights (norm scales, biases, masks, small tables: replicated in any plan) keep
/// their bytes and the large weights' shares take the rest; when `total` does not cover the
/// small weights, both scale alike.
fn segment_scales(shares: &[f64], large: &[bool], total: f64) -> (f64, f64) {
    let (mut big, mut small) = (0.0, 0.0);
    for (s, l) in shares.iter().zip(large) {
        if *l {
            big += s;
        } else {
            small += s;
        }
    }
    if big > 0.0 && total >= small {
        ((total - small) / big, 1.0)
    } else if big + small > 0.0 {
        let f = total / (big + small);
        (f, f)
    } else {
        (1.0, 1.0)
    }
}

/// The weights that `nodes` read.
pub fn weights_read(g: &Graph, nodes: &[NodeId]) -> BTreeSet<TensorId> {
    nodes
        .iter()
        .flat_map(|&nid| g.node(nid).inputs.iter())
        .filter(|t| g.weights.contains_key(t))
        .copied()
        .collect()
}
