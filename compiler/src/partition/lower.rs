//! Lowering a [`Selection`] to per-rank programs of a plan.
use super::egraph::{Conv, Key};
use super::form::{part_bytes, tensor_bytes, LocalForm, Lowering, Operand};
use super::ragged::{local_op, Grains};
use super::rules::attention::{gqa_dims, kv_head_of_ranks};
use super::segment::Selection;
use std::collections::{BTreeMap, BTreeSet};
use tessera_ir::op::{BinaryAttrs, BinaryOp, MatMulAttrs, SliceAttrs};
use tessera_ir::plan::{
    AxisSlice, CollectiveInfo, CollectiveKind, PlanValue, RankProgram, Step, StepKind, ValueId,
    WeightShard,
};
use tessera_ir::{Graph, Layout, Op, TensorId, TensorKind};

/// The lowered program.
#[derive(Debug, Clone, Default)]
pub struct Lowered {
    /// Values.
    pub values: Vec<PlanValue>,
    /// Output values.
    pub outputs: Vec<ValueId>,
    /// Programs.
    pub ranks: Vec<RankProgram>,
    /// Collectives.
    pub collectives: Vec<CollectiveInfo>,
    /// Split weights.
    pub weight_shards: Vec<WeightShard>,
    /// FLOPs per rank.
    pub flops: u64,
    /// What each compute step and scale conversion does, for the modelled time.
    pub work: Vec<crate::cost::OpWork>,
    /// Per-rank parameter bytes.
    pub param_bytes: u64,
    /// Layout per tensor.
    pub layouts: Vec<Option<Layout>>,
}

struct Lowerer<'a> {
    g: &'a Graph,
    n: usize,
    grains: Grains,
    sel: &'a Selection,
    node_layer: &'a [Option<u32>],
    producers: Vec<Option<tessera_ir::NodeId>>,
    out: Lowered,
    prod_val: BTreeMap<(TensorId, Layout), ValueId>,
    avail_val: BTreeMap<(TensorId, Layout), ValueId>,
    view_val: BTreeMap<Operand, ValueId>,
    shards: BTreeMap<(TensorId, usize), WeightShard>,
}

impl Lowerer<'_> {
    /// The chunks of `extent` over the ranks (ragged where it does not divide).
    fn bounds(&self, extent: usize) -> Result<Vec<(usize, usize)>, String> {
        self.grains
            .bounds(extent, self.n)
            .ok_or_else(|| format!("an axis of {extent} does not split over {} ranks", self.n))
    }

    /// Each rank's key/value block of an axis of `extent` ([`Layout::Block`]).
    fn block_ranges(&self, extent: usize) -> Result<Vec<(usize, usize)>, String> {
        (0..self.n)
            .map(|r| self.grains.block_range(extent, self.n, r))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                format!(
                    "an axis of {extent} has no key/value blocks on {} ranks",
                    self.n
                )
            })
    }

    /// Rank `r`'s chunk of `extent` along `axis`.
    fn chunk(&self, axis: usize, extent: usize, r: usize) -> Result<AxisSlice, String> {
        let (start, end) = self.bounds(extent)?[r];
        Ok(AxisSlice { axis, start, end })
    }

    /// A new value of `t` in `layout`, `full` its logical shape (a section's for a view).
    fn value(&mut self, t: TensorId, layout: Layout, full: &[usize]) -> Result<ValueId, String> {
        let ranks = (0..self.n)
            .map(|r| self.grains.rank_local(layout, full, self.n, r))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                format!(
                    "tensor '{}' cannot be laid out {layout}",
                    self.g.tensor(t).name
                )
            })?;
        let shape = ranks.first().cloned().unwrap_or_else(|| full.to_vec());
        let rank_shapes = if ranks.iter().all(|s| *s == shape) {
            vec![]
        } else {
            ranks
        };
        let id = ValueId(self.out.values.len() as u32);
        self.out.values.push(PlanValue {
            tensor: t,
            layout,
            shape,
            dtype: self.g.tensor(t).dtype,
            rank_shapes,
        });
        Ok(id)
    }

    /// A new value of `t` in `layout` (its logical shape).
    fn tensor_value(&mut self, t: TensorId, layout: Layout) -> Result<ValueId, String> {
        let full = self.g.tensor(t).shape.clone();
        self.value(t, layout, &full)
    }

    fn layer(&self, t: TensorId) -> Option<u32> {
        self.producers[t.index()].and_then(|p| self.node_layer.get(p.index()).copied().flatten())
    }

    fn emit(
        &mut self,
        kind: impl Fn(usize) -> StepKind,
        inputs: Vec<ValueId>,
        outputs: Vec<ValueId>,
        layer: Option<u32>,
    ) {
        for r in 0..self.n {
            self.out.ranks[r].steps.push(Step {
                kind: kind(r),
                inputs: inputs.clone(),
                outputs: outputs.clone(),
                layer,
            });
        }
    }

    fn load(
        &mut self,
        t: TensorId,
        l: Layout,
        section: Option<AxisSlice>,
    ) -> Result<ValueId, String> {
        let mut shape = self.g.tensor(t).shape.clone();
        if let Some(s) = &section {
            shape[s.axis] = s.end - s.start;
        }
        let local = self
            .grains
            .local(l, &shape, self.n)
            .ok_or_else(|| format!("weight '{}' cannot be {l}", self.g.tensor(t).name))?;
        self.out.param_bytes += part_bytes(self.g, t, &local);
        let v = self.value(t, l, &shape)?;
        let n = self.n;
        let sec = section.clone();
        let bounds = match l {
            Layout::Split(a) => self.bounds(shape[a])?,
            Layout::Block(a) => self.block_ranges(shape[a])?,
            _ => vec![],
        };
        let slice_of = move |r: usize| match (l, &sec) {
            (Layout::Split(a) | Layout::Block(a), s) => {
                let base = s.as_ref().map_or(0, |s| s.start);
                Some(AxisSlice {
                    axis: a,
                    start: base + bounds[r].0,
                    end: base + bounds[r].1,
                })
            }
            (_, s) => s.clone(),
        };
        if let Layout::Split(a) = l {
            let ranges = (0..n)
                .map(|r| slice_of(r).map(|s| (s.start, s.end)).unwrap_or((0, 0)))
                .collect::<Vec<_>>();
            let e = self.shards.entry((t, a)).or_insert_with(|| WeightShard {
                tensor: t,
                name: self.g.tensor(t).name.clone(),
                axis: a,
                ranges: vec![],
            });
            if section.is_none() || e.ranges.is_empty() {
                e.ranges = ranges;
            }
        }
        self.emit(
            |r| StepKind::LoadWeight {
                tensor: t,
                slice: slice_of(r),
            },
            vec![],
            vec![v],
            None,
        );
        Ok(v)
    }

    fn prod(&mut self, t: TensorId, l: Layout) -> Result<ValueId, String> {
        if let Some(v) = self.prod_val.get(&(t, l)) {
            return Ok(*v);
        }
        let v = match self.g.tensor(t).kind {
            TensorKind::Weight => self.load(t, l, None)?,
            TensorKind::Input if l == Layout::Replicated => {
                let v = self.tensor_value(t, l)?;
                self.emit(
                    |_| StepKind::Input {
                        tensor: t,
                        slice: None,
                    },
                    vec![],
                    vec![v],
                    None,
                );
                v
            }
            _ => {
                return Err(format!(
                    "tensor '{}' used before it is produced in {l}",
                    self.g.tensor(t).name
                ))
            }
        };
        self.prod_val.insert((t, l), v);
        Ok(v)
    }

    fn avail(&mut self, t: TensorId, l: Layout) -> Result<ValueId, String> {
        if let Some(v) = self.avail_val.get(&(t, l)) {
            return Ok(*v);
        }
        let name = self.g.tensor(t).name.clone();
        let (conv, from) = *self
            .sel
            .avail
            .get(&(t, l))
            .ok_or_else(|| format!("no conversion of '{name}' to {l} chosen"))?;
        let layer = self.layer(t);
        let v = match (conv, from) {
            (Conv::Use, _) => self.prod(t, l)?,
            (Conv::Collective(kind), Key::Prod(_, fl)) => {
                let src = self.prod(t, fl)?;
                let v = self.tensor_value(t, l)?;
                let bytes = tensor_bytes(self.g, t);
                let axis_of = |x: Layout| {
                    if let Layout::Split(a) = x {
                        Some(a)
                    } else {
                        None
                    }
                };
                let (axis, to_axis) = match kind {
                    CollectiveKind::AllToAll => (axis_of(fl), axis_of(l)),
                    CollectiveKind::ReduceScatter => (axis_of(l), None),
                    _ => (axis_of(fl), None),
                };
                // Each member's extent of a ragged split: the output's (reduce-scatter,
                // all-to-all) or the input's (all-gather).
                let ragged_split = match kind {
                    CollectiveKind::AllGather => fl,
                    _ => l,
                };
                let counts = match (kind, ragged_split) {
                    (
                        CollectiveKind::AllGather
                        | CollectiveKind::ReduceScatter
                        | CollectiveKind::AllToAll,
                        Layout::Split(a),
                    ) if self
                        .grains
                        .is_ragged(ragged_split, &self.g.tensor(t).shape, self.n) =>
                    {
                        let b = self.bounds(self.g.tensor(t).shape[a])?;
                        b.iter().map(|(s, e)| e - s).collect()
                    }
                    _ => vec![],
                };
                let group: Vec<usize> = (0..self.n).collect();
                let gr = group.clone();
                self.emit(
                    move |_| StepKind::Collective {
                        collective: kind,
                        axis,
                        to_axis,
                        group: gr.clone(),
                        bytes,
                        counts: counts.clone(),
                    },
                    vec![src],
                    vec![v],
                    layer,
                );
                self.out.collectives.push(CollectiveInfo {
                    kind,
                    tensor: t,
                    tensor_name: name,
                    bytes,
                    group,
                    layer,
                });
                v
            }
            (Conv::LocalSlice, _) => {
                let src = self.avail(t, Layout::Replicated)?;
                let v = self.tensor_value(t, l)?;
                let slices = match l {
                    Layout::Split(a) => {
                        let extent = self.g.tensor(t).shape[a];
                        (0..self.n)
                            .map(|r| self.chunk(a, extent, r))
                            .collect::<Result<Vec<_>, _>>()?
                    }
                    Layout::Block(a) => self
                        .block_ranges(self.g.tensor(t).shape[a])?
                        .into_iter()
                        .map(|(start, end)| AxisSlice {
                            axis: a,
                            start,
                            end,
                        })
                        .collect(),
                    _ => return Err(format!("local slice of '{name}' to {l}")),
                };
                self.emit(
                    |r| StepKind::LocalSlice {
                        slice: slices[r].clone(),
                    },
                    vec![src],
                    vec![v],
                    layer,
                );
                v
            }
            (Conv::BlockSlice, Key::Prod(_, fl)) => {
                // Each rank's split chunk lies inside its key/value block.
                let (Layout::Block(a), Layout::Split(b)) = (fl, l) else {
                    return Err(format!("block slice of '{name}' from {fl} to {l}"));
                };
                if a != b {
                    return Err(format!("block slice of '{name}' from {fl} to {l}"));
                }
                let src = self.prod(t, fl)?;
                let v = self.tensor_value(t, l)?;
                let extent = self.g.tensor(t).shape[a];
                let blocks = self.block_ranges(extent)?;
                let slices = (0..self.n)
                    .map(|r| {
                        let c = self.chunk(a, extent, r)?;
                        let base = blocks[r].0;
                        (c.start >= base && c.end <= blocks[r].1)
                            .then(|| AxisSlice {
                                axis: a,
                                start: c.start - base,
                                end: c.end - base,
                            })
                            .ok_or_else(|| {
                                format!(
                                    "'{name}': rank {r}'s chunk lies outside its key/value block"
                                )
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                self.emit(
                    |r| StepKind::LocalSlice {
                        slice: slices[r].clone(),
                    },
                    vec![src],
                    vec![v],
                    layer,
                );
                v
            }
            (Conv::Scale, _) => {
                let src = self.avail(t, Layout::Replicated)?;
                let v = self.tensor_value(t, l)?;
                self.out.flops += tessera_ir::numel(&self.g.tensor(t).shape) as u64;
                self.out.work.push(super::form::scale_work(self.g, t));
                let n = self.n;
                self.emit(
                    |_| StepKind::ScaleToPartial { n },
                    vec![src],
                    vec![v],
                    layer,
                );
                v
            }
            (c, k) => return Err(format!("conversion {c:?} of '{name}' from {k:?}")),
        };
        self.avail_val.insert((t, l), v);
        Ok(v)
    }

    fn operand(&mut self, o: &Operand) -> Result<ValueId, String> {
        match o {
            Operand::Tensor { t, layout } => self.avail(*t, *layout),
            Operand::View { t, layout, .. } => {
                if let Some(v) = self.view_val.get(o) {
                    return Ok(*v);
                }
                let v = self.load(*t, *layout, o.section())?;
                self.view_val.insert(o.clone(), v);
                Ok(v)
            }
        }
    }

    /// Attention with Q split by heads over replicated K and V ([`Lowering::KvHeadSlice`]):
    /// each rank slices the key/value head its query heads read from K and V, then runs the
    /// op with its local head counts.
    fn kv_head_slice(
        &mut self,
        f: &LocalForm,
        ins: &[ValueId],
        v: ValueId,
        layer: Option<u32>,
    ) -> Result<(), String> {
        let nd = self.g.node(f.node);
        let node = f.node;
        let q_full = self.g.tensor(nd.inputs[0]).shape.clone();
        let dims = match &nd.op {
            Op::Attention(a) => gqa_dims(a, &q_full, &self.g.tensor(nd.inputs[1]).shape),
            _ => None,
        };
        let Some((axis, hq, hkv)) = dims else {
            return Err(format!(
                "node '{}' is not a grouped-query Attention",
                nd.name
            ));
        };
        let kv = kv_head_of_ranks(&self.bounds(q_full[axis])?, q_full[axis], hq, hkv).ok_or_else(
            || {
                format!(
                    "node '{}': a rank's query heads read two key/value heads",
                    nd.name
                )
            },
        )?;
        let mut local_ins = ins.to_vec();
        for k in [1, 2] {
            let src = ins[k];
            let (t, dtype) = (
                self.out.values[src.index()].tensor,
                self.g.tensor(nd.inputs[k]).dtype,
            );
            let mut shape = self.g.tensor(t).shape.clone();
            let per = shape[axis] / hkv;
            shape[axis] = per;
            let id = ValueId(self.out.values.len() as u32);
            self.out.values.push(PlanValue {
                tensor: t,
                layout: Layout::Replicated,
                shape,
                dtype,
                rank_shapes: vec![],
            });
            let kv = kv.clone();
            self.emit(
                |r| StepKind::Compute {
                    node,
                    op: Op::Slice(SliceAttrs {
                        axes: vec![axis],
                        starts: vec![(kv[r] * per) as i64],
                        ends: vec![((kv[r] + 1) * per) as i64],
                        steps: vec![1],
                    }),
                },
                vec![src],
                vec![id],
                layer,
            );
            local_ins[k] = id;
        }
        self.emit_local_op(f, ins, local_ins, v, layer);
        Ok(())
    }

    /// Emits each rank's op of `f` (local Reshape/Expand targets and head counts) over
    /// `local_ins`, the values the ranks read, whose logical tensors are those of `ins`.
    fn emit_local_op(
        &mut self,
        f: &LocalForm,
        ins: &[ValueId],
        local_ins: Vec<ValueId>,
        v: ValueId,
        layer: Option<u32>,
    ) {
        let nd = self.g.node(f.node);
        let in_full: Vec<&[usize]> = ins
            .iter()
            .map(|i| {
                self.g
                    .tensor(self.out.values[i.index()].tensor)
                    .shape
                    .as_slice()
            })
            .collect();
        let ops = (0..self.n)
            .map(|r| {
                let out = self.out.values[v.index()].shape_on(r);
                let locals: Vec<Vec<usize>> = local_ins
                    .iter()
                    .map(|i| self.out.values[i.index()].shape_on(r).to_vec())
                    .collect();
                local_op(nd, f.out_index, out, &in_full, &locals)
            })
            .collect::<Vec<_>>();
        let node = f.node;
        let outputs = self.bound_outputs(f, v);
        self.emit(
            |r| StepKind::Compute {
                node,
                op: ops[r].clone(),
            },
            local_ins,
            outputs,
            layer,
        );
    }

    /// The values a compute step of form `f` (whose output is `v`) binds: `v` alone, or for
    /// a TopK every output of the node in the form's layout (its kernel computes Values and
    /// Indices together, of one shape; a step binds the op's outputs in order). Siblings not
    /// yet produced in that layout are registered, so the other output's form in the same
    /// layout reuses this step instead of running the op again.
    fn bound_outputs(&mut self, f: &LocalForm, v: ValueId) -> Vec<ValueId> {
        let nd = self.g.node(f.node);
        if !matches!(nd.op, Op::TopK(_)) {
            return vec![v];
        }
        let mut outs = Vec::with_capacity(nd.outputs.len());
        for (k, &t) in nd.outputs.iter().enumerate() {
            if k == f.out_index {
                outs.push(v);
                continue;
            }
            // Same shape as `v`'s tensor, so the layout divides it as it divides `v`'s.
            let Ok(sib) = self.tensor_value(t, f.out) else {
                return vec![v];
            };
            self.prod_val.entry((t, f.out)).or_insert(sib);
            outs.push(sib);
        }
        outs
    }

    fn compute(&mut self, f: &LocalForm) -> Result<(), String> {
        if self.prod_val.contains_key(&(f.tensor, f.out)) {
            // Bound by the step of a sibling output (see `bound_outputs`).
            return Ok(());
        }
        let ins = f
            .inputs
            .iter()
            .map(|o| self.operand(o))
            .collect::<Result<Vec<_>, _>>()?;
        let layer = self.node_layer.get(f.node.index()).copied().flatten();
        let nd = self.g.node(f.node);
        let v = self.tensor_value(f.tensor, f.out)?;
        self.out.flops += f.flops;
        self.out
            .work
            .push(super::form::form_work(self.g, &self.grains, self.n, f));
        match &f.lowering {
            Lowering::Op => self.emit_local_op(f, &ins, ins.clone(), v, layer),
            Lowering::KvHeadSlice => self.kv_head_slice(f, &ins, v, layer)?,
            Lowering::ShardedGather => {
                let b = self.bounds(self.g.tensor(nd.inputs[0]).shape[0])?;
                let node = f.node;
                self.emit(
                    |r| StepKind::ShardedGather {
                        node,
                        offset: b[r].0,
                        rows: b[r].1 - b[r].0,
                    },
                    ins,
                    vec![v],
                    layer,
                );
            }
            Lowering::FusedSection { matmul, add } => {
                let (mm, node_add) = (*matmul, *add);
                let target = match node_add {
                    Some(_) => self.tensor_value(f.tensor, f.out)?,
                    None => v,
                };
                self.emit(
                    |_| StepKind::Compute {
                        node: mm,
                        op: Op::MatMul(MatMulAttrs {}),
                    },
                    ins[..2].to_vec(),
                    vec![target],
                    layer,
                );
                if let Some(a) = node_add {
                    let op = Op::Binary(BinaryAttrs {
                        kind: BinaryOp::Add,
                    });
                    self.emit(
                        |_| StepKind::Compute {
                            node: a,
                            op: op.clone(),
                        },
                        vec![target, ins[2]],
                        vec![v],
                        layer,
                    );
                }
            }
        }
        self.prod_val.insert((f.tensor, f.out), v);
        Ok(())
    }
}

/// Tensors whose produced form is actually needed by the graph outputs.
fn needed(g: &Graph, sel: &Selection) -> BTreeSet<TensorId> {
    let mut need = BTreeSet::new();
    let mut seen_avail = BTreeSet::new();
    let mut stack: Vec<(TensorId, Layout)> =
        g.outputs.iter().map(|t| (*t, Layout::Replicated)).collect();
    while let Some((t, l)) = stack.pop() {
        if !seen_avail.insert((t, l)) {
            continue;
        }
        let prod_layout = match sel.avail.get(&(t, l)) {
            Some((Conv::Use, _)) | None => Some(l),
            Some((_, Key::Prod(_, fl))) => Some(*fl),
            Some((_, Key::Avail(_, rl))) => {
                stack.push((t, *rl));
                None
            }
            Some(_) => None,
        };
        if let (Some(_), Some(f)) = (prod_layout, sel.prod.get(&t)) {
            if need.insert(t) {
                for o in &f.inputs {
                    if let Operand::Tensor { t, layout } = o {
                        stack.push((*t, *layout));
                    }
                }
            }
        }
    }
    need
}

/// Lowers a whole-graph selection.
pub fn lower(
    g: &Graph,
    n: usize,
    sel: &Selection,
    node_layer: &[Option<u32>],
) -> Result<Lowered, String> {
    let mut lw = Lowerer {
        g,
        n,
        grains: Grains::of(g),
        sel,
        node_layer,
        producers: g.producers(),
        out: Lowered {
            ranks: (0..n)
                .map(|rank| RankProgram {
                    rank,
                    steps: vec![],
                })
                .collect(),
            ..Default::default()
        },
        prod_val: BTreeMap::new(),
        avail_val: BTreeMap::new(),
        view_val: BTreeMap::new(),
        shards: BTreeMap::new(),
    };
    let need = needed(g, sel);
    for nd in &g.nodes {
        for o in &nd.outputs {
            if let (true, Some(f)) = (need.contains(o), sel.prod.get(o)) {
                lw.compute(f)?;
            }
        }
    }
    for &t in &g.outputs {
        let v = lw.avail(t, Layout::Replicated)?;
        lw.out.outputs.push(v);
    }
    let mut layouts = vec![None; g.tensors.len()];
    let mut chosen: Vec<(TensorId, Layout)> = lw.prod_val.keys().copied().collect();
    chosen.extend(lw.view_val.keys().filter_map(|o| match o {
        Operand::View { t, layout, .. } => Some((*t, *layout)),
        Operand::Tensor { .. } => None,
    }));
    for (t, l) in chosen {
        let slot: &mut Option<Layout> = &mut layouts[t.index()];
        if slot.is_none() || *slot == Some(Layout::Replicated) {
            *slot = Some(l);
        }
    }
    lw.out.layouts = layouts;
    lw.out.weight_shards = lw.shards.into_values().collect();
    Ok(lw.out)
}
