//! Checks a plan and the run's inputs before anything executes, so that a malformed plan
//! gives one clear error instead of a panic or a hang.
use super::error::ExecError;
use std::collections::{BTreeMap, BTreeSet};
use tessera_ir::infer::infer;
use tessera_ir::plan::{Plan, PlanValue, StepKind, FORMAT_VERSION};
use tessera_ir::{check_tensor_size, numel, DType, Layout, Op, Tensor, TensorData, MAX_DEVICES};

fn bad(msg: String) -> ExecError {
    ExecError::InvalidPlan(msg)
}

/// Checks the format version, that every id a plan uses is in range, that every size is
/// within the caps and every inline tensor matches its shape, that every rank
/// defines each value before reading it, and that the members of every group call the same
/// collectives in the same order (otherwise a run would hang).
pub fn validate_plan(plan: &Plan) -> Result<(), ExecError> {
    if plan.format_version > FORMAT_VERSION {
        return Err(ExecError::FormatVersion {
            found: plan.format_version,
            supported: FORMAT_VERSION,
        });
    }
    validate_graph_ids(plan)?;
    validate_sizes(plan)?;
    let n = plan.ranks.len();
    if n == 0 {
        return Err(bad("the plan has no ranks".into()));
    }
    if plan.mesh.devices() != n {
        return Err(bad(format!(
            "mesh {:?} has {} devices but the plan has {n} rank programs",
            plan.mesh.shape,
            plan.mesh.devices()
        )));
    }
    plan.check_mesh().map_err(bad)?;
    let n_values = plan.values.len();
    let n_tensors = plan.graph.tensors.len();
    for (i, v) in plan.values.iter().enumerate() {
        if v.tensor.index() >= n_tensors {
            return Err(bad(format!(
                "value {i} refers to tensor {} but the graph has {n_tensors} tensors",
                v.tensor.0
            )));
        }
        check_value_shape(plan, v).map_err(|e| {
            bad(format!(
                "value {i} (tensor '{}'): {e}",
                plan.graph.tensor(v.tensor).name
            ))
        })?;
    }
    if plan.outputs.len() != plan.graph.outputs.len() {
        return Err(bad(format!(
            "{} plan outputs for {} graph outputs",
            plan.outputs.len(),
            plan.graph.outputs.len()
        )));
    }
    let mut defined_anywhere = vec![false; n_values];
    for (r, prog) in plan.ranks.iter().enumerate() {
        if prog.rank != r {
            return Err(bad(format!(
                "rank program {r} is labelled rank {}",
                prog.rank
            )));
        }
        let mut defined = vec![false; n_values];
        for (s, step) in prog.steps.iter().enumerate() {
            let at = |msg: String| bad(format!("rank {r} step {s}: {msg}"));
            for v in step.inputs.iter().chain(&step.outputs) {
                if v.index() >= n_values {
                    return Err(at(format!(
                        "value {} out of range ({n_values} values)",
                        v.0
                    )));
                }
            }
            check_step_kind(plan, r, &step.kind, step.inputs.len(), step.outputs.len())
                .map_err(at)?;
            check_compute_sizes(plan, step, r).map_err(at)?;
            for v in &step.inputs {
                if !defined[v.index()] {
                    return Err(at(format!(
                        "reads value {} before it is defined on this rank",
                        v.0
                    )));
                }
            }
            for v in &step.outputs {
                if defined[v.index()] {
                    return Err(at(format!("defines value {} a second time", v.0)));
                }
                defined[v.index()] = true;
                defined_anywhere[v.index()] = true;
            }
        }
    }
    for v in &plan.outputs {
        if v.index() >= n_values || !defined_anywhere[v.index()] {
            return Err(bad(format!("plan output value {} is never computed", v.0)));
        }
    }
    validate_collective_order(plan)
}

fn validate_graph_ids(plan: &Plan) -> Result<(), ExecError> {
    let g = &plan.graph;
    let n = g.tensors.len();
    let out_of_range = |what: &str, id: u32| {
        bad(format!(
            "{what} refers to tensor {id} but the graph has {n} tensors"
        ))
    };
    for t in g.inputs.iter().chain(&g.outputs).chain(g.weights.keys()) {
        if t.index() >= n {
            return Err(out_of_range("a graph input/output/weight", t.0));
        }
    }
    for node in &g.nodes {
        for t in node.inputs.iter().chain(&node.outputs) {
            if t.index() >= n {
                return Err(out_of_range(&format!("node '{}'", node.name), t.0));
            }
        }
    }
    g.validate().map_err(|e| bad(e.to_string()))
}

/// Checks every size before anything is allocated: the mesh and the rank count against
/// [`MAX_DEVICES`], every graph tensor and plan value against overflow and
/// [`tessera_ir::MAX_TENSOR_BYTES`], and that every inline weight holds exactly the
/// elements its shape needs, in storage of its dtype.
fn validate_sizes(plan: &Plan) -> Result<(), ExecError> {
    let g = &plan.graph;
    let devices = plan
        .mesh
        .shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_DEVICES);
    if devices.is_none() || plan.ranks.len() > MAX_DEVICES {
        return Err(bad(format!(
            "mesh {:?} with {} rank programs is over the limit of {MAX_DEVICES} devices",
            plan.mesh.shape,
            plan.ranks.len()
        )));
    }
    for t in &g.tensors {
        check_tensor_size(&t.shape, t.dtype)
            .map_err(|e| bad(format!("tensor '{}': {e}", t.name)))?;
    }
    for (i, v) in plan.values.iter().enumerate() {
        // The tensor id is range-checked later: name it only when it is valid.
        let name = || g.tensors.get(v.tensor.index()).map_or("?", |t| &t.name);
        // One shape per rank of the tensor-parallel axis (the mesh's last).
        let tp = plan.mesh.shape.last().copied().unwrap_or(0);
        if !v.rank_shapes.is_empty() && v.rank_shapes.len() != tp {
            return Err(bad(format!(
                "value {i} (tensor '{}') has {} per-rank shapes for {tp} tensor-parallel ranks",
                name(),
                v.rank_shapes.len(),
            )));
        }
        for s in std::iter::once(&v.shape).chain(&v.rank_shapes) {
            check_tensor_size(s, v.dtype)
                .map_err(|e| bad(format!("value {i} (tensor '{}'): {e}", name())))?;
        }
    }
    for (id, w) in &g.weights {
        let info = g.tensor(*id);
        if w.logical_dtype() != info.dtype || w.shape != info.shape {
            return Err(bad(format!(
                "weight '{}' is {}{:?}, the graph declares {}{:?}",
                w.name,
                w.logical_dtype(),
                w.shape,
                info.dtype,
                info.shape
            )));
        }
        // A quantised weight's inline bytes (and scale, zero point) hold stored values, in
        // the stored (untransposed) shape.
        let stored = w
            .stored_view()
            .map_err(|e| bad(format!("weight of '{}': {e}", info.name)))?;
        for p in stored.parts() {
            check_inline(p, &info.name)?;
        }
    }
    Ok(())
}

/// Checks that every rank's local shape of `v` is a piece of its tensor's logical shape:
/// as many axes, none longer than the tensor's (a replicated value may still be a local
/// piece: ranks that hold a slice of heads label it replicated among themselves), and
/// that a split or block axis exists. A value that claimed more than its tensor would let a
/// plan size buffers beyond what the graph was checked for.
fn check_value_shape(plan: &Plan, v: &PlanValue) -> Result<(), String> {
    let whole = &plan.graph.tensor(v.tensor).shape;
    if let Layout::Split(a) | Layout::Block(a) = v.layout {
        if a >= whole.len() {
            return Err(format!(
                "layout {} names axis {a} of a {}-D tensor",
                v.layout,
                whole.len()
            ));
        }
    }
    let tp = plan.mesh.shape.last().copied().unwrap_or(1);
    for r in 0..tp.max(1) {
        let local = v.shape_on(r);
        if local.len() != whole.len() || local.iter().zip(whole).any(|(l, w)| l > w) {
            return Err(format!(
                "local shape {local:?} on rank {r} is not a piece of its shape {whole:?}"
            ));
        }
    }
    Ok(())
}

/// An inline weight (or quantisation parameter) `w` of graph tensor `name` holds exactly
/// the elements of its stored dtype and shape.
fn check_inline(w: &tessera_ir::Weight, name: &str) -> Result<(), ExecError> {
    check_tensor_size(&w.shape, w.dtype)
        .map_err(|e| bad(format!("weight '{}' of '{name}': {e}", w.name)))?;
    let Some(t) = w.inline() else { return Ok(()) };
    let what = if w.name == name {
        format!("'{name}'")
    } else {
        format!("'{}' of '{name}'", w.name)
    };
    let at = |msg: String| bad(format!("inline tensor {what}: {msg}"));
    if t.dtype != w.dtype || t.shape != w.shape {
        return Err(at(format!(
            "holds {}{:?}, the weight declares {}{:?}",
            t.dtype, t.shape, w.dtype, w.shape
        )));
    }
    // The shape is within the cap (checked first), so its count does not overflow.
    let want = numel(&t.shape);
    if t.data.len() != want {
        return Err(at(format!(
            "has {} elements, its shape {:?} needs {want}",
            t.data.len(),
            t.shape
        )));
    }
    let class_ok = match &t.data {
        TensorData::F32(_) => t.dtype.is_float(),
        TensorData::I64(_) => t.dtype.is_int(),
        TensorData::Bool(_) => t.dtype == DType::Bool,
    };
    if !class_ok {
        return Err(at(format!("its data is not stored as {}", t.dtype)));
    }
    Ok(())
}

/// A compute step's op, applied to its input values, must infer outputs within the caps
/// and equal to its output values (an Expand's or Reshape's target is in its attributes,
/// not only in the plan values): the kernel allocates what the op says, so this is checked
/// before anything runs.
fn check_compute_sizes(
    plan: &Plan,
    step: &tessera_ir::plan::Step,
    rank: usize,
) -> Result<(), String> {
    let StepKind::Compute { node, op } = &step.kind else {
        return Ok(());
    };
    // Validation checked the value ids and the node id before this.
    let inputs: Vec<(DType, &[usize])> = step
        .inputs
        .iter()
        .map(|v| {
            let pv = &plan.values[v.index()];
            (pv.dtype, pv.shape_on(rank))
        })
        .collect();
    let name = &plan.graph.node(*node).name;
    let inferred = infer(name, op, &inputs).map_err(|e| e.to_string())?;
    for (k, ((d, shape), v)) in inferred.iter().zip(&step.outputs).enumerate() {
        let pv = &plan.values[v.index()];
        let at = |msg: String| format!("node '{name}' ({}): output {k} {msg}", op.name());
        if *d != pv.dtype {
            return Err(at(format!("is {d}, the plan expects {}", pv.dtype)));
        }
        if shape.as_slice() != pv.shape_on(rank) {
            return Err(at(format!(
                "has shape {shape:?}, the plan expects {:?}",
                pv.shape_on(rank)
            )));
        }
    }
    Ok(())
}

/// `Ok` when `ok`, else the error `msg()`.
fn require(ok: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(msg())
    }
}

fn check_step_kind(
    plan: &Plan,
    rank: usize,
    kind: &StepKind,
    n_in: usize,
    n_out: usize,
) -> Result<(), String> {
    let g = &plan.graph;
    let arity = |want_in: usize, want_out: usize, what: &str| {
        if n_in != want_in || n_out != want_out {
            Err(format!(
                "{what} takes {want_in} input(s) and {want_out} output(s), got {n_in} and {n_out}"
            ))
        } else {
            Ok(())
        }
    };
    match kind {
        StepKind::LoadWeight { tensor, .. } => {
            require(g.weights.contains_key(tensor), || {
                format!("load_weight of tensor {} which is not a weight", tensor.0)
            })?;
            arity(0, 1, "load_weight")
        }
        StepKind::Input { tensor, .. } => {
            require(g.inputs.contains(tensor), || {
                format!(
                    "input step for tensor {} which is not a graph input",
                    tensor.0
                )
            })?;
            arity(0, 1, "input")
        }
        StepKind::Compute { node, .. } => {
            if node.index() >= g.nodes.len() {
                return Err(format!(
                    "compute node {} out of range ({} nodes)",
                    node.0,
                    g.nodes.len()
                ));
            }
            if n_out == 0 {
                return Err("compute step without outputs".into());
            }
            Ok(())
        }
        StepKind::ShardedGather { node, .. } => {
            let nd = g.nodes.get(node.index()).ok_or_else(|| {
                format!(
                    "sharded_gather node {} out of range ({} nodes)",
                    node.0,
                    g.nodes.len()
                )
            })?;
            if !matches!(nd.op, Op::Gather(ref a) if a.axis == 0) || nd.inputs.len() != 2 {
                return Err(format!(
                    "sharded_gather of node '{}' which is not a Gather along axis 0",
                    nd.name
                ));
            }
            arity(2, 1, "sharded_gather")
        }
        StepKind::LocalSlice { .. } => arity(1, 1, "local_slice"),
        StepKind::ScaleToPartial { n } => {
            if *n == 0 {
                return Err("scale_to_partial by 0".into());
            }
            arity(1, 1, "scale_to_partial")
        }
        StepKind::Collective { group, counts, .. } => {
            let n = plan.ranks.len();
            if !counts.is_empty() && counts.len() != group.len() {
                return Err(format!(
                    "collective over {group:?} gives {} per-member counts",
                    counts.len()
                ));
            }
            let distinct: BTreeSet<_> = group.iter().collect();
            if group.is_empty() || distinct.len() != group.len() || group.iter().any(|&m| m >= n) {
                return Err(format!(
                    "collective group {group:?} is not a set of ranks below {n}"
                ));
            }
            if !group.contains(&rank) {
                return Err(format!(
                    "collective group {group:?} does not contain rank {rank}"
                ));
            }
            arity(1, 1, "collective")
        }
    }
}

/// Every member of a group must issue the group's collectives in the same sequence.
fn validate_collective_order(plan: &Plan) -> Result<(), ExecError> {
    type Call<'a> = (&'a str, Option<usize>, Option<usize>);
    let mut seqs: BTreeMap<&[usize], BTreeMap<usize, Vec<Call>>> = BTreeMap::new();
    for prog in &plan.ranks {
        for step in &prog.steps {
            if let StepKind::Collective {
                collective,
                axis,
                to_axis,
                group,
                ..
            } = &step.kind
            {
                let per_rank = seqs.entry(group.as_slice()).or_default();
                per_rank
                    .entry(prog.rank)
                    .or_default()
                    .push((collective.as_str(), *axis, *to_axis));
            }
        }
    }
    for (group, per_rank) in seqs {
        let empty = Vec::new();
        let first = per_rank.get(&group[0]).unwrap_or(&empty);
        for &m in group {
            let seq = per_rank.get(&m).unwrap_or(&empty);
            if seq != first {
                let at = seq
                    .iter()
                    .zip(first)
                    .position(|(a, b)| a != b)
                    .unwrap_or(seq.len().min(first.len()));
                return Err(bad(format!(
                    "ranks {} and {m} of group {group:?} disagree at collective #{at} ({} vs {} collectives in all): the run would hang",
                    group[0],
                    first.len(),
                    seq.len()
                )));
            }
        }
    }
    Ok(())
}

/// Checks that `inputs` are exactly the model's inputs, with the right dtype and shape.
pub fn validate_inputs(plan: &Plan, inputs: &BTreeMap<String, Tensor>) -> Result<(), ExecError> {
    let g = &plan.graph;
    let names: Vec<&str> = g
        .inputs
        .iter()
        .map(|t| g.tensor(*t).name.as_str())
        .collect();
    for name in inputs.keys() {
        if !names.contains(&name.as_str()) {
            return Err(ExecError::Input {
                name: name.clone(),
                msg: format!(
                    "not an input of the model (its inputs are: {})",
                    names.join(", ")
                ),
            });
        }
    }
    for t in &g.inputs {
        let info = g.tensor(*t);
        let Some(x) = inputs.get(&info.name) else {
            return Err(ExecError::Input {
                name: info.name.clone(),
                msg: format!("missing (expected {}{:?})", info.dtype, info.shape),
            });
        };
        // The whole batch's shape (a `[D, T]` mesh slices it for its data groups).
        let shape = super::data::whole_input_shape(plan, *t);
        if x.dtype != info.dtype || x.shape != shape {
            return Err(ExecError::Input {
                name: info.name.clone(),
                msg: format!(
                    "expected {}{:?}, got {}{:?}",
                    info.dtype, shape, x.dtype, x.shape
                ),
            });
        }
    }
    Ok(())
}
