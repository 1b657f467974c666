//! A data × tensor plan over a `[D, T]` mesh: the batch splits over D data groups and each
//! group runs, unchanged, the plan the search finds for T devices at batch B / D.
//!
//! The compile is three steps (`tessera compile --mesh DxT` does them): [`group_shapes`]
//! splits the whole batch's input shapes along each input's batch axis; the model is
//! imported at those shapes (and at the whole batch, so that [`output_batch_axes`] can tell
//! along which axis each output gathers) and partitioned for T devices; [`over_data_axis`]
//! repeats that plan over the D groups. Rank `g·T + t` runs group `g`'s copy of rank `t`'s
//! program, whose collectives are over the ranks of group `g` only: the data axis adds no
//! collective, and moves no byte beyond the inputs' slices in and the outputs' slices out.
use super::PartitionError;
use crate::onnx::{import_model, ImportOptions, ImportedModel};
use std::collections::BTreeMap;
use std::path::Path;
use tessera_ir::plan::{DataSplit, Mesh, Plan, StepKind};
use tessera_ir::Graph;

/// Errors of a data split.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// An input's batch does not divide over the data groups.
    #[error("--mesh {d}x{t}: input '{input}' has batch {batch} on axis {axis} (shape {shape:?}), which does not divide over {d} data groups (use --batch-axis {input}=AXIS, or {input}=none for an input without a batch)")]
    Indivisible {
        /// Data groups.
        d: usize,
        /// Devices per group.
        t: usize,
        /// Input name.
        input: String,
        /// Its whole shape.
        shape: Vec<usize>,
        /// Batch axis.
        axis: usize,
        /// Its extent.
        batch: usize,
    },
    /// A batch axis names no input or no axis of it.
    #[error("--batch-axis {input}={axis}: {why}")]
    BadAxis {
        /// Input name.
        input: String,
        /// Axis given.
        axis: usize,
        /// Why it is refused.
        why: String,
    },
    /// The model could not be imported (at the whole batch or at one group's).
    #[error(transparent)]
    Import(#[from] crate::onnx::ImportError),
    /// A batch axis was given without a data axis.
    #[error("--batch-axis needs a data axis: --mesh DxT with D > 1")]
    BatchAxisWithoutData,
    /// An output has no axis the groups' outputs could be concatenated along.
    #[error("output '{output}' has shape {whole:?} for the whole batch and {group:?} for one of {d} data groups: no single batch axis to gather the groups' outputs along, so the model does not split over a data axis")]
    NoOutputBatch {
        /// Output name.
        output: String,
        /// Shape at the whole batch.
        whole: Vec<usize>,
        /// Shape at one group's batch.
        group: Vec<usize>,
        /// Data groups.
        d: usize,
    },
}

/// The batch axis of each input (by name; None: no batch axis) and each input's shape at one
/// group's batch, as [`group_shapes`] finds them.
pub type GroupShapes = (
    BTreeMap<String, Option<usize>>,
    BTreeMap<String, Vec<usize>>,
);

/// The batch axis of each input (by name; None: no batch axis) and each input's shape at one
/// group's batch. `whole` holds every graph input's shape at the whole batch; `axes` the
/// user's choices (`--batch-axis NAME=AXIS|none`); the default is axis 0 (none for scalars).
pub fn group_shapes(
    whole: &BTreeMap<String, Vec<usize>>,
    axes: &BTreeMap<String, Option<usize>>,
    d: usize,
    t: usize,
) -> Result<GroupShapes, MeshError> {
    if let Some((name, axis)) = axes.iter().find(|(n, _)| !whole.contains_key(*n)) {
        let inputs: Vec<&str> = whole.keys().map(String::as_str).collect();
        return Err(MeshError::BadAxis {
            input: name.clone(),
            axis: axis.unwrap_or(0),
            why: format!("no such input (the inputs are: {})", inputs.join(", ")),
        });
    }
    let mut batch_axes = BTreeMap::new();
    let mut shapes = BTreeMap::new();
    for (name, shape) in whole {
        let axis = match axes.get(name) {
            Some(a) => *a,
            None => (!shape.is_empty()).then_some(0),
        };
        let mut local = shape.clone();
        if let Some(a) = axis {
            let Some(batch) = shape.get(a).copied() else {
                return Err(MeshError::BadAxis {
                    input: name.clone(),
                    axis: a,
                    why: format!("input '{name}' of shape {shape:?} has no axis {a}"),
                });
            };
            if batch % d != 0 {
                return Err(MeshError::Indivisible {
                    d,
                    t,
                    input: name.clone(),
                    shape: shape.clone(),
                    axis: a,
                    batch,
                });
            }
            local[a] = batch / d;
        }
        batch_axes.insert(name.clone(), axis);
        shapes.insert(name.clone(), local);
    }
    Ok((batch_axes, shapes))
}

/// The axis along which each output of `group` (the graph at one group's batch) gathers
/// into the output of `whole` (the same model at the whole batch): the one axis whose extent
/// is D times larger, all others equal.
pub fn output_batch_axes(whole: &Graph, group: &Graph, d: usize) -> Result<Vec<usize>, MeshError> {
    let mut axes = Vec::with_capacity(group.outputs.len());
    for (i, t) in group.outputs.iter().enumerate() {
        let g = group.tensor(*t);
        let w = whole
            .outputs
            .get(i)
            .map(|w| whole.tensor(*w).shape.clone())
            .unwrap_or_default();
        let differ: Vec<usize> = (0..g.shape.len().max(w.len()))
            .filter(|&a| g.shape.get(a) != w.get(a))
            .collect();
        match differ.as_slice() {
            [a] if w.len() == g.shape.len() && g.shape[*a].checked_mul(d) == Some(w[*a]) => {
                axes.push(*a)
            }
            _ => {
                return Err(MeshError::NoOutputBatch {
                    output: g.name.clone(),
                    whole: w,
                    group: g.shape.clone(),
                    d,
                })
            }
        }
    }
    Ok(axes)
}

/// A model imported for a `[d, t]` mesh: the graph of one data group, and for D > 1 how
/// inputs split and outputs gather with the whole batch's input shapes.
pub struct MeshImport {
    /// The model at one group's batch (as given when D is 1).
    pub model: ImportedModel,
    /// The data split and the whole batch's input shapes, for D > 1.
    pub data: Option<(DataSplit, BTreeMap<String, Vec<usize>>)>,
}

/// Imports `path` for `d` data groups of `t` devices: as `opts` gives it when `d` is 1;
/// otherwise at the whole batch (`opts`' shapes: the input shapes and the outputs' batch
/// axes) and again at one group's batch ([`group_shapes`] with `batch_axes`).
pub fn import_for_mesh(
    path: &Path,
    opts: &ImportOptions,
    d: usize,
    t: usize,
    batch_axes: &BTreeMap<String, Option<usize>>,
) -> Result<MeshImport, MeshError> {
    if d <= 1 {
        if !batch_axes.is_empty() {
            return Err(MeshError::BatchAxisWithoutData);
        }
        return Ok(MeshImport {
            model: import_model(path, opts)?,
            data: None,
        });
    }
    let whole = import_model(path, opts)?;
    let g = &whole.graph;
    let whole_shapes: BTreeMap<String, Vec<usize>> = g
        .inputs
        .iter()
        .map(|t| (g.tensor(*t).name.clone(), g.tensor(*t).shape.clone()))
        .collect();
    let (inputs, shapes) = group_shapes(&whole_shapes, batch_axes, d, t)?;
    let mut group_opts = opts.clone();
    group_opts.input_shapes = shapes;
    let model = import_model(path, &group_opts)?;
    let outputs = output_batch_axes(&whole.graph, &model.graph, d)?;
    Ok(MeshImport {
        model,
        data: Some((DataSplit { inputs, outputs }, whole_shapes)),
    })
}

/// Repeats the T-device `plan` (of one group's graph) over `d` data groups: rank programs,
/// collectives (each group's over its own ranks), weight shards and estimates, renumbered;
/// the mesh becomes `[d, T]`, the input shapes the whole batch's (`whole_shapes`) and the
/// plan records `split`. The search statistics and the summary stay those of one group.
pub fn over_data_axis(
    mut plan: Plan,
    d: usize,
    split: DataSplit,
    whole_shapes: BTreeMap<String, Vec<usize>>,
) -> Result<Plan, PartitionError> {
    let t = plan.ranks.len();
    if d == 0 || t == 0 {
        return Err(PartitionError::Devices(d * t));
    }
    let shift = |group: &[usize], g: usize| group.iter().map(|m| m + g * t).collect::<Vec<_>>();
    let mut ranks = Vec::with_capacity(d * t);
    let mut collectives = Vec::with_capacity(d * plan.collectives.len());
    let mut estimates = Vec::with_capacity(d * t);
    for g in 0..d {
        for prog in &plan.ranks {
            let mut p = prog.clone();
            p.rank += g * t;
            for s in &mut p.steps {
                if let StepKind::Collective { group, .. } = &mut s.kind {
                    *group = shift(group, g);
                }
            }
            ranks.push(p);
        }
        for c in &plan.collectives {
            let mut c = c.clone();
            c.group = shift(&c.group, g);
            collectives.push(c);
        }
        for e in &plan.estimates {
            let mut e = e.clone();
            e.rank += g * t;
            estimates.push(e);
        }
    }
    for w in &mut plan.weight_shards {
        w.ranges = w.ranges.repeat(d);
    }
    plan.ranks = ranks;
    plan.collectives = collectives;
    plan.estimates = estimates;
    plan.mesh = Mesh::dp_tp(d, t);
    plan.data = Some(split);
    plan.input_shapes = whole_shapes;
    plan.summary.notes.push(format!(
        "data × tensor mesh {d}x{t}: each of the {d} data groups runs this {t}-device plan on its slice of the batch; the search statistics and the collective totals are per group, the data axis has no collective"
    ));
    plan.check_mesh().map_err(PartitionError::Internal)?;
    Ok(plan)
}
