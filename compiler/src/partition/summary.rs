//! Per-rank estimates and the plan summary (collectives, matmul choices, notes).
use super::form::Lowering;
use super::lower::Lowered;
use super::segment::Selection;
use crate::cost::{collective_seconds, op_seconds, ring_bytes, CostModel};
use std::collections::BTreeMap;
use tessera_ir::plan::{PlanSummary, RankEstimate, StepKind};
use tessera_ir::{numel, Graph, Layout, Op};

/// Estimates per rank (every rank holds the same local shapes).
/// `model_s` is the modelled time under `model` (the plan's cost model, not the search's
/// weighted one): every op's [`op_seconds`] plus every collective's [`collective_seconds`].
pub fn estimates(_g: &Graph, n: usize, lw: &Lowered, model: &CostModel) -> Vec<RankEstimate> {
    let model_s = lw.work.iter().map(|w| op_seconds(model, *w)).sum::<f64>()
        + lw.collectives
            .iter()
            .map(|c| collective_seconds(model, c.kind, c.bytes, n))
            .sum::<f64>();
    let comm: f64 = lw
        .collectives
        .iter()
        .map(|c| ring_bytes(c.kind, c.bytes, n))
        .sum();
    let peak = peak_activation_bytes(lw);
    (0..n)
        .map(|rank| RankEstimate {
            rank,
            param_bytes: lw.param_bytes,
            peak_activation_bytes: peak,
            flops: lw.flops,
            comm_bytes: comm.round() as u64,
            model_s,
        })
        .collect()
}

/// Peak bytes of live non-weight values of rank 0, freeing each value after its last use
/// (plan outputs live to the end).
fn peak_activation_bytes(lw: &Lowered) -> u64 {
    let Some(prog) = lw.ranks.first() else {
        return 0;
    };
    let size = |v: usize| {
        let pv = &lw.values[v];
        (numel(&pv.shape) * pv.dtype.size_bytes()) as u64
    };
    let mut weight = vec![false; lw.values.len()];
    let mut last = vec![usize::MAX; lw.values.len()];
    for (i, s) in prog.steps.iter().enumerate() {
        if matches!(s.kind, StepKind::LoadWeight { .. }) {
            s.outputs.iter().for_each(|v| weight[v.index()] = true);
        }
        s.inputs.iter().for_each(|v| last[v.index()] = i);
    }
    for v in &lw.outputs {
        last[v.index()] = prog.steps.len();
    }
    let (mut live, mut peak) = (0u64, 0u64);
    for (i, s) in prog.steps.iter().enumerate() {
        let outs: Vec<usize> = s
            .outputs
            .iter()
            .map(|v| v.index())
            .filter(|&v| !weight[v])
            .collect();
        live += outs.iter().map(|&v| size(v)).sum::<u64>();
        peak = peak.max(live);
        let mut ins: Vec<usize> = s
            .inputs
            .iter()
            .map(|v| v.index())
            .filter(|&v| !weight[v] && last[v] == i)
            .collect();
        ins.sort_unstable();
        ins.dedup();
        live -= ins.iter().map(|&v| size(v)).sum::<u64>();
        live -= outs
            .iter()
            .filter(|&&v| last[v] == usize::MAX)
            .map(|&v| size(v))
            .sum::<u64>();
    }
    peak
}

/// The plan summary.
pub fn summarize(
    g: &Graph,
    n: usize,
    lw: &Lowered,
    sel: &Selection,
    lower_bound_bytes: u64,
) -> PlanSummary {
    let mut collectives: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for c in &lw.collectives {
        let e = collectives.entry(c.kind.as_str().to_string()).or_default();
        e.0 += 1;
        e.1 += c.bytes;
    }
    let mut matmul_choices: BTreeMap<String, u64> = BTreeMap::new();
    let mut fused: BTreeMap<tessera_ir::NodeId, ()> = BTreeMap::new();
    for f in sel.prod.values() {
        if let Lowering::FusedSection { matmul, .. } = f.lowering {
            fused.insert(matmul, ());
        }
    }
    for (i, nd) in g.nodes.iter().enumerate() {
        if !matches!(nd.op, Op::MatMul(_) | Op::Gemm(_)) {
            continue;
        }
        let kind = match sel.prod.get(&nd.outputs[0]).map(|f| f.rule) {
            _ if fused.contains_key(&tessera_ir::NodeId(i as u32)) => "column",
            Some("matmul-column" | "gemm-column") => "column",
            Some("matmul-row" | "gemm-row") => "row",
            Some("replicated") => "replicated",
            Some(_) => "other",
            None => "other",
        };
        *matmul_choices.entry(kind.to_string()).or_default() += 1;
    }
    let mut notes = notes(g, n, sel);
    let has = |k: tessera_ir::plan::CollectiveKind| lw.collectives.iter().any(|c| c.kind == k);
    if has(tessera_ir::plan::CollectiveKind::ReduceScatter) {
        notes.push(if has(tessera_ir::plan::CollectiveKind::AllGather) {
            "reduce-scatter + all-gather pairs stand in for all-reduces: the ops between them (norms, residual adds) run split on the sequence axis (same ring bytes, one more latency term, less compute)".into()
        } else {
            "a reduce-scatter hands a partial sum straight to the next row-split product, which reads it split (half an all-reduce's ring bytes)".into()
        });
    }
    let layered = lw.collectives.iter().any(|c| c.layer.is_some());
    for c in &lw.collectives {
        if g.outputs.contains(&c.tensor) {
            notes.push(format!(
                "output '{}' is computed split and gathered at the end ({}): the last ops (LM head, pooling) run sharded",
                c.tensor_name,
                c.kind.as_str()
            ));
        } else if layered && c.layer.is_none() {
            notes.push(format!(
                "{} of '{}' outside the repeated layers (embedding / final norm / LM head)",
                c.kind.as_str(),
                c.tensor_name
            ));
        }
    }
    notes.sort();
    notes.dedup();
    PlanSummary {
        collectives,
        lower_bound_bytes,
        matmul_choices,
        notes,
    }
}

/// Notes explaining choices the shapes forced.
fn notes(g: &Graph, n: usize, sel: &Selection) -> Vec<String> {
    let mut out = Vec::new();
    if n == 1 {
        out.push("one device: every tensor is replicated and there are no collectives".into());
        return out;
    }
    for nd in &g.nodes {
        if let Op::Reshape(r) = &nd.op {
            let ins = &g.tensor(nd.inputs[0]).shape;
            let outs = &r.shape;
            // [.., H*D] -> [.., H, D]: a head split of the last axis.
            if outs.len() == ins.len() + 1 && outs[..ins.len() - 1] == ins[..ins.len() - 1] {
                let heads = outs[outs.len() - 2];
                let in_blocks = sel.prod.values().any(|f| {
                    f.tensor == nd.outputs[0] && matches!(f.out, tessera_ir::Layout::Block(_))
                });
                if heads > 1 && heads < n && in_blocks {
                    out.push(format!(
                        "Reshape '{}': {heads} key/value heads are fewer than {n} devices: each is held in a block by the devices whose query heads read it (Megatron's KV-head replication)",
                        nd.name
                    ));
                } else if heads > 1 && heads < n {
                    out.push(format!(
                        "Reshape '{}': {heads} heads are fewer than {n} devices, so attention heads cannot be split (the attention runs on another axis or replicated)",
                        nd.name
                    ));
                } else if heads > 1 && heads % n != 0 {
                    out.push(format!(
                        "Reshape '{}': {heads} heads do not divide over {n} devices: a head split is ragged ({} or {} heads per device)",
                        nd.name,
                        heads / n + 1,
                        heads / n
                    ));
                }
            }
        }
    }
    for f in sel.prod.values() {
        let nd = g.node(f.node);
        if let (
            Op::Gather(_),
            Lowering::Op,
            Some(super::form::Operand::Tensor {
                t,
                layout: Layout::Split(a),
            }),
        ) = (&nd.op, &f.lowering, f.inputs.first())
        {
            if g.weights.contains_key(t) {
                out.push(format!(
                    "embedding table '{}' {:?} is split on axis {a} to meet the budget (its lookup output is gathered once)",
                    g.tensor(*t).name,
                    g.tensor(*t).shape
                ));
            }
        }
        if f.lowering == Lowering::ShardedGather {
            let table = g.node(f.node).inputs[0];
            out.push(format!(
                "embedding table '{}' is split by vocabulary (vocab-parallel gather, one extra all-reduce) to meet the budget",
                g.tensor(table).name
            ));
        }
    }
    let (large, grains) = (
        super::budget::large_weights(g),
        super::ragged::Grains::of(g),
    );
    for (t, w) in &g.weights {
        if large.contains(t) && super::budget::split_share(w, n, &grains).is_none() {
            out.push(format!(
                "weight '{}' {:?} has no axis that splits over {n} devices: it stays replicated",
                w.name, w.shape
            ));
        }
    }
    out.extend(super::conv_notes::conv_notes(g, n, sel));
    out.sort();
    out.dedup();
    out
}
