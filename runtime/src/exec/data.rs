//! The data axis of a plan over a `[D, T]` mesh at run time: the whole batch's inputs are
//! sliced into one input set per data group, every group's ranks run on their own slice, and
//! the groups' outputs are concatenated, in group order, along each output's batch axis
//! (`tessera_ir::plan::DataSplit`). On a 1-D mesh there is one group and nothing is copied.
use super::error::ExecError;
use crate::collectives::{concat_axis, slice_axis};
use std::collections::BTreeMap;
use tessera_ir::plan::Plan;
use tessera_ir::{Tensor, TensorId};

/// The inputs of one run, by model input name.
pub type Inputs = BTreeMap<String, Tensor>;

/// The whole batch's shape of graph input `t` (its graph shape on a 1-D mesh).
pub fn whole_input_shape(plan: &Plan, t: TensorId) -> Vec<usize> {
    let info = plan.graph.tensor(t);
    match &plan.data {
        Some(_) => plan
            .input_shapes
            .get(&info.name)
            .cloned()
            .unwrap_or_else(|| info.shape.clone()),
        None => info.shape.clone(),
    }
}

/// The whole batch's shape of graph output `i` (its graph shape on a 1-D mesh).
pub fn whole_output_shape(plan: &Plan, i: usize) -> Vec<usize> {
    let g = &plan.graph;
    let mut shape = g
        .outputs
        .get(i)
        .map(|t| g.tensor(*t).shape.clone())
        .unwrap_or_default();
    if let Some(axis) = plan.data.as_ref().and_then(|d| d.outputs.get(i)) {
        if let Some(dim) = shape.get_mut(*axis) {
            *dim = dim.saturating_mul(plan.mesh.data_groups());
        }
    }
    shape
}

/// One input set per data group (group `g` gets rows `[g·b, (g+1)·b)` of each input's batch
/// axis), or None on a 1-D mesh, where every rank reads the inputs as given. The inputs must
/// have passed [`super::validate::validate_inputs`].
pub fn split_inputs(plan: &Plan, inputs: &Inputs) -> Result<Option<Vec<Inputs>>, ExecError> {
    let Some(data) = &plan.data else {
        return Ok(None);
    };
    let d = plan.mesh.data_groups();
    let mut groups: Vec<Inputs> = vec![Inputs::new(); d];
    for (name, x) in inputs {
        let axis = data.inputs.get(name).copied().flatten();
        for (g, group) in groups.iter_mut().enumerate() {
            let part = match axis {
                Some(a) => {
                    let b = x.shape.get(a).copied().unwrap_or(0) / d;
                    slice_axis(x, a, g * b, (g + 1) * b).map_err(|msg| ExecError::Input {
                        name: name.clone(),
                        msg: format!("slicing data group {g}: {msg}"),
                    })?
                }
                None => x.clone(),
            };
            group.insert(name.clone(), part);
        }
    }
    Ok(Some(groups))
}

/// The plan's outputs from each data group's outputs (`per_group[g][i]`): group 0's on a
/// 1-D mesh, else their concatenation along each output's batch axis.
pub fn gather_outputs(plan: &Plan, per_group: Vec<Vec<Tensor>>) -> Result<Vec<Tensor>, ExecError> {
    let Some(data) = &plan.data else {
        return per_group
            .into_iter()
            .next()
            .ok_or_else(|| ExecError::InvalidPlan("the plan has no data group".into()));
    };
    let n = plan.outputs.len();
    (0..n)
        .map(|i| {
            let parts: Vec<&Tensor> = per_group.iter().filter_map(|o| o.get(i)).collect();
            let axis = data.outputs.get(i).copied().unwrap_or(0);
            concat_axis(&parts, axis).map_err(|msg| {
                ExecError::InvalidPlan(format!(
                    "gathering output {i} of the data groups along axis {axis}: {msg}"
                ))
            })
        })
        .collect()
}

/// The unpartitioned model's outputs on the reference executor
/// ([`crate::reference::run_graph`]) for `plan`'s whole batch: on a `[D, T]` mesh the
/// plan's graph is one group's, so it runs once per group's slice of the batch and the
/// results gather as the plan's do. This checks the partition of each group; that the
/// samples of a batch are independent (what a data axis assumes) is the model's property.
pub fn reference_outputs(
    plan: &Plan,
    store: &crate::weights::WeightStore,
    inputs: &Inputs,
) -> Result<Vec<Tensor>, crate::RuntimeError> {
    let groups = split_inputs(plan, inputs).map_err(super::into_runtime_error)?;
    let Some(groups) = groups else {
        return crate::reference::run_graph(&plan.graph, store, inputs);
    };
    let per_group = groups
        .iter()
        .map(|g| crate::reference::run_graph(&plan.graph, store, g))
        .collect::<Result<Vec<_>, _>>()?;
    gather_outputs(plan, per_group).map_err(super::into_runtime_error)
}
