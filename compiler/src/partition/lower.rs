//! Lowering a [`Selection`] to per-rank programs of a plan.
use super::egraph::{Conv, Key};
use super::form::{part_bytes, tensor_bytes, LocalForm, Lowering, Operand};
use super::segment::Selection;
use std::collections::{BTreeMap, BTreeSet};
use tessera_ir::op::{
    AttentionAttrs, BinaryAttrs, BinaryOp, ExpandAttrs, MatMulAttrs, ReshapeAttrs, SliceAttrs,
};
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
    sel: &'a Selection,
    node_layer: &'a [Option<u32>],
    producers: Vec<Option<tessera_ir::NodeId>>,
    out: Lowered,
    prod_val: BTreeMap<(TensorId, Layout), ValueId>,
    avail_val: BTreeMap<(TensorId, Layout), ValueId>,
    view_val: BTreeMap<Operand, ValueId>,
    shards: BTreeMap<(TensorId, usize), WeightShard>,
}

/// This rank's chunk of `extent` split N ways.
fn chunk(axis: usize, extent: usize, n: usize, r: usize) -> AxisSlice {
    let c = extent / n;
    AxisSlice {
        axis,
        start: r * c,
        end: (r + 1) * c,
    }
}

impl Lowerer<'_> {
    fn value(&mut self, t: TensorId, layout: Layout, shape: Vec<usize>) -> ValueId {
        let id = ValueId(self.out.values.len() as u32);
        self.out.values.push(PlanValue {
            tensor: t,
            layout,
            shape,
            dtype: self.g.tensor(t).dtype,
        });
        id
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

    fn local(&self, t: TensorId, l: Layout) -> Result<Vec<usize>, String> {
        l.local_shape(&self.g.tensor(t).shape, self.n)
            .ok_or_else(|| format!("tensor '{}' cannot be laid out {l}", self.g.tensor(t).name))
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
        let local = l
            .local_shape(&shape, self.n)
            .ok_or_else(|| format!("weight '{}' cannot be {l}", self.g.tensor(t).name))?;
        self.out.param_bytes += part_bytes(self.g, t, &local);
        let v = self.value(t, l, local);
        let n = self.n;
        let sec = section.clone();
        let full = shape.clone();
        let slice_of = move |r: usize| match (l, &sec) {
            (Layout::Split(a), None) => Some(chunk(a, full[a], n, r)),
            (Layout::Split(a), Some(s)) => {
                let c = chunk(a, s.end - s.start, n, r);
                Some(AxisSlice {
                    axis: a,
                    start: s.start + c.start,
                    end: s.start + c.end,
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
                let v = self.value(t, l, self.g.tensor(t).shape.clone());
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
                let v = self.value(t, l, self.local(t, l)?);
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
                let group: Vec<usize> = (0..self.n).collect();
                let gr = group.clone();
                self.emit(
                    move |_| StepKind::Collective {
                        collective: kind,
                        axis,
                        to_axis,
                        group: gr.clone(),
                        bytes,
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
                let v = self.value(t, l, self.local(t, l)?);
                let (Layout::Split(a), n) = (l, self.n) else {
                    return Err(format!("local slice of '{name}' to {l}"));
                };
                let extent = self.g.tensor(t).shape[a];
                self.emit(
                    |r| StepKind::LocalSlice {
                        slice: chunk(a, extent, n, r),
                    },
                    vec![src],
                    vec![v],
                    layer,
                );
                v
            }
            (Conv::Scale, _) => {
                let src = self.avail(t, Layout::Replicated)?;
                let v = self.value(t, l, self.local(t, l)?);
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

    fn compute(&mut self, f: &LocalForm) -> Result<(), String> {
        let ins = f
            .inputs
            .iter()
            .map(|o| self.operand(o))
            .collect::<Result<Vec<_>, _>>()?;
        let out_shape = self.local(f.tensor, f.out)?;
        let layer = self.node_layer.get(f.node.index()).copied().flatten();
        let nd = self.g.node(f.node);
        let v = self.value(f.tensor, f.out, out_shape.clone());
        self.out.flops += f.flops;
        self.out
            .work
            .push(super::form::form_work(self.g, self.n, f));
        match &f.lowering {
            Lowering::Op => {
                let op = match &nd.op {
                    Op::Reshape(_) => Op::Reshape(ReshapeAttrs { shape: out_shape }),
                    Op::Expand(_) => Op::Expand(ExpandAttrs { shape: out_shape }),
                    Op::Split(s) => {
                        let start: usize = s.sizes[..f.out_index].iter().sum();
                        Op::Slice(SliceAttrs {
                            axes: vec![s.axis],
                            starts: vec![start as i64],
                            ends: vec![(start + s.sizes[f.out_index]) as i64],
                            steps: vec![1],
                        })
                    }
                    // 3-D attention split by heads: each rank's head counts.
                    Op::Attention(a)
                        if a.q_num_heads.is_some()
                            && f.inputs.first().map(|o| o.layout()) == Some(Layout::Split(2)) =>
                    {
                        Op::Attention(AttentionAttrs {
                            q_num_heads: a.q_num_heads.map(|h| h / self.n),
                            kv_num_heads: a.kv_num_heads.map(|h| h / self.n),
                            ..a.clone()
                        })
                    }
                    other => other.clone(),
                };
                let node = f.node;
                self.emit(
                    |_| StepKind::Compute {
                        node,
                        op: op.clone(),
                    },
                    ins,
                    vec![v],
                    layer,
                );
            }
            Lowering::ShardedGather => {
                let rows = self.g.tensor(nd.inputs[0]).shape[0] / self.n;
                let node = f.node;
                self.emit(
                    |r| StepKind::ShardedGather {
                        node,
                        offset: r * rows,
                        rows,
                    },
                    ins,
                    vec![v],
                    layer,
                );
            }
            Lowering::FusedSection { matmul, add } => {
                let (mm, node_add) = (*matmul, *add);
                let target = match node_add {
                    Some(_) => {
                        self.value(f.tensor, f.out, self.out.values[v.index()].shape.clone())
                    }
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
