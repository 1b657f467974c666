//! The device mesh of a plan and, on a 2-D `[D, T]` mesh, how the batch splits over its data
//! groups.
//!
//! Rank `r` of a `[D, T]` mesh is member `r % T` of data group `r / T`: the ranks of a group
//! are contiguous. Every group runs the tensor-parallel program of one `T`-device plan on
//! its slice of the batch, with collectives only among its own ranks; the data axis moves
//! nothing but the inputs' slices in and the outputs' slices out. [`Plan::check_mesh`]
//! checks that a plan read from a file keeps to this.
use super::{Plan, StepKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The device mesh. `shape` is `[N]` (axis `"tp"`) for 1-D tensor parallelism and `[D, T]`
/// (axes `"dp"`, `"tp"`) for D data groups of T tensor-parallel devices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mesh {
    /// Extent of each mesh axis.
    pub shape: Vec<usize>,
    /// Name of each mesh axis (`"tp"`, `"dp"`).
    pub axes: Vec<String>,
}

impl Mesh {
    /// A 1-D tensor-parallel mesh of `n` devices.
    pub fn tp(n: usize) -> Mesh {
        Mesh {
            shape: vec![n],
            axes: vec!["tp".into()],
        }
    }

    /// A 2-D mesh of `d` data groups of `t` tensor-parallel devices.
    pub fn dp_tp(d: usize, t: usize) -> Mesh {
        Mesh {
            shape: vec![d, t],
            axes: vec!["dp".into(), "tp".into()],
        }
    }

    /// Total number of devices; `usize::MAX` when the product overflows (a crafted plan), which
    /// no rank count or device cap matches.
    pub fn devices(&self) -> usize {
        self.shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .unwrap_or(usize::MAX)
    }

    /// Number of data groups: `D` of a `[D, T]` mesh, 1 on a 1-D mesh.
    pub fn data_groups(&self) -> usize {
        match self.shape.as_slice() {
            [d, _] => *d,
            _ => 1,
        }
    }

    /// Devices of one data group (the tensor-parallel extent `T`; all devices on a 1-D mesh).
    pub fn group_size(&self) -> usize {
        self.shape.last().copied().unwrap_or(0)
    }

    /// The data group of `rank`.
    pub fn group_of(&self, rank: usize) -> usize {
        rank / self.group_size().max(1)
    }

    /// The ranks of each data group, in group order.
    pub fn groups(&self) -> Vec<Vec<usize>> {
        let t = self.group_size();
        (0..self.data_groups())
            .map(|g| (g * t..(g + 1) * t).collect())
            .collect()
    }

    /// Checks the axes: `[N]` named `tp`, or `[D, T]` named `dp`, `tp`, no extent zero.
    pub fn check(&self) -> Result<(), String> {
        let names: Vec<&str> = self.axes.iter().map(String::as_str).collect();
        let ok = matches!(
            (self.shape.as_slice(), names.as_slice()),
            ([_], ["tp"]) | ([_, _], ["dp", "tp"])
        );
        if !ok {
            return Err(format!(
                "mesh {:?} with axes {:?}: expected [N] with axes [\"tp\"] or [D, T] with axes [\"dp\", \"tp\"]",
                self.shape, self.axes
            ));
        }
        if self.shape.contains(&0) {
            return Err(format!("mesh {:?} has an axis of extent 0", self.shape));
        }
        Ok(())
    }
}

/// How a plan over a `[D, T]` mesh splits its inputs over the D data groups and gathers its
/// outputs: group `g` gets rows `[g·b, (g+1)·b)` of each input's batch axis (`b` = batch / D)
/// and the groups' outputs are concatenated, in group order, along each output's batch axis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataSplit {
    /// The batch axis of each graph input, by input name; None: the input has no batch axis
    /// and every group gets all of it.
    pub inputs: BTreeMap<String, Option<usize>>,
    /// The batch axis of each graph output, in graph output order.
    pub outputs: Vec<usize>,
}

impl Plan {
    /// Checks the mesh against the rest of a plan read from a file (untrusted): the axes, one
    /// rank program per device, a [`DataSplit`] exactly when the mesh is 2-D that names every
    /// graph input and output with an axis in range, whole-batch input shapes that are the
    /// group's shapes times D along the batch axis, every collective inside one data group
    /// (the data axis has none), and every group running group 0's programs.
    pub fn check_mesh(&self) -> Result<(), String> {
        if self.ranks.len() != self.mesh.devices() {
            return Err(format!(
                "inconsistent: mesh has {} devices but {} rank programs",
                self.mesh.devices(),
                self.ranks.len()
            ));
        }
        self.mesh.check()?;
        let d = self.mesh.data_groups();
        let Some(data) = &self.data else {
            if self.mesh.shape.len() == 2 {
                return Err(format!(
                    "mesh {:?} has a data axis but the plan has no data split",
                    self.mesh.shape
                ));
            }
            return Ok(());
        };
        if self.mesh.shape.len() != 2 {
            return Err(format!(
                "the plan has a data split but mesh {:?} has no data axis",
                self.mesh.shape
            ));
        }
        let g = &self.graph;
        let input = |t: &crate::TensorId| g.tensors.get(t.index()).ok_or("?");
        let mut names = Vec::new();
        for t in &g.inputs {
            let info = input(t).map_err(|_| format!("graph input {} out of range", t.0))?;
            names.push(info.name.as_str());
            let Some(axis) = data.inputs.get(&info.name) else {
                return Err(format!(
                    "the data split has no entry for input '{}'",
                    info.name
                ));
            };
            let mut whole = info.shape.clone();
            if let Some(a) = *axis {
                let Some(dim) = whole.get_mut(a) else {
                    return Err(format!(
                        "input '{}' of shape {:?} has no batch axis {a}",
                        info.name, info.shape
                    ));
                };
                *dim = dim
                    .checked_mul(d)
                    .ok_or_else(|| format!("input '{}': batch overflows", info.name))?;
            }
            if self.input_shapes.get(&info.name) != Some(&whole) {
                return Err(format!(
                    "input '{}': whole-batch shape {:?} is not {d} groups of {:?} along axis {axis:?}",
                    info.name,
                    self.input_shapes.get(&info.name),
                    info.shape
                ));
            }
        }
        if let Some(extra) = data.inputs.keys().find(|k| !names.contains(&k.as_str())) {
            return Err(format!("the data split names '{extra}', not a graph input"));
        }
        if data.outputs.len() != g.outputs.len() {
            return Err(format!(
                "the data split has {} output axes for {} graph outputs",
                data.outputs.len(),
                g.outputs.len()
            ));
        }
        for (t, &axis) in g.outputs.iter().zip(&data.outputs) {
            let info = input(t).map_err(|_| format!("graph output {} out of range", t.0))?;
            if axis >= info.shape.len() {
                return Err(format!(
                    "output '{}' of shape {:?} has no batch axis {axis}",
                    info.name, info.shape
                ));
            }
        }
        for prog in &self.ranks {
            for step in &prog.steps {
                if let StepKind::Collective { group, .. } = &step.kind {
                    let home = self.mesh.group_of(prog.rank);
                    if let Some(m) = group.iter().find(|&&m| self.mesh.group_of(m) != home) {
                        return Err(format!(
                            "rank {}: a collective over {group:?} reaches rank {m} of another data group (the data axis has no collectives)",
                            prog.rank
                        ));
                    }
                }
            }
        }
        self.check_groups_alike()
    }

    /// Every data group runs group 0's programs on its own ranks: rank `g·T + t`'s steps are
    /// rank `t`'s, with collective groups shifted by `g·T` (the reports count one group's
    /// collectives, and NCCL ranks split their sub-communicators at the same steps).
    fn check_groups_alike(&self) -> Result<(), String> {
        let t = self.mesh.group_size();
        for (r, prog) in self.ranks.iter().enumerate().skip(t) {
            let (g, base) = (r / t, &self.ranks[r % t]);
            let alike = prog.steps.len() == base.steps.len()
                && prog.steps.iter().zip(&base.steps).all(|(a, b)| {
                    let mut b = b.clone();
                    if let StepKind::Collective { group, .. } = &mut b.kind {
                        group.iter_mut().for_each(|m| *m += g * t);
                    }
                    *a == b
                });
            if !alike {
                return Err(format!(
                    "rank {r} of data group {g} does not run rank {}'s program (every data group runs the same plan)",
                    r % t
                ));
            }
        }
        Ok(())
    }
}
