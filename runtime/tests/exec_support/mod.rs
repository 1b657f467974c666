//! Hand-built plans for the executor tests.
#![allow(dead_code)]
use std::collections::BTreeMap;
use tessera_ir::op::{
    AxisAttrs, BinaryAttrs, BinaryOp, GeluAttrs, MatMulAttrs, UnaryAttrs, UnaryOp,
};
use tessera_ir::plan::*;
use tessera_ir::{
    DType, Graph, Layout, NodeId, Op, Tensor, TensorId, TensorKind, Weight, WeightData,
};
use tessera_runtime::reference::run_graph;
use tessera_runtime::weights::WeightStore;

/// Deterministic pseudo-random floats in [-1, 1).
pub fn rand_f32(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed ^ 0x9E37_79B9_7F4A_7C15;
    let v = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 23) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::f32(shape.to_vec(), v)
}

/// Asserts that the message `msg` mentions every one of `parts`.
pub fn assert_mentions(msg: &str, parts: &[&str]) {
    for part in parts {
        assert!(msg.contains(part), "{part:?} not in: {msg}");
    }
}

pub fn inline_weight(g: &mut Graph, name: &str, t: Tensor) -> TensorId {
    g.add_weight(Weight {
        perm: None,
        packed_bits: None,
        name: name.into(),
        dtype: t.dtype,
        shape: t.shape.clone(),
        data: WeightData::Inline { tensor: t },
        quant: None,
    })
}

pub fn node(
    g: &mut Graph,
    name: &str,
    op: Op,
    inputs: Vec<TensorId>,
    shape: Vec<usize>,
    dtype: DType,
) -> (NodeId, TensorId) {
    let out = g.add_tensor(format!("{name}_out"), dtype, shape, TensorKind::Activation);
    (g.add_node(name, op, inputs, vec![out]), out)
}

/// Adds an f32 node and returns its output tensor.
pub fn f32_node(
    g: &mut Graph,
    name: &str,
    op: Op,
    inputs: Vec<TensorId>,
    shape: Vec<usize>,
) -> TensorId {
    node(g, name, op, inputs, shape, DType::F32).1
}

/// Adds the f32 binary op `kind` of `a` and `b` and returns its output tensor.
pub fn binary_node(
    g: &mut Graph,
    name: &str,
    kind: BinaryOp,
    [a, b]: [TensorId; 2],
    shape: Vec<usize>,
) -> TensorId {
    f32_node(g, name, Op::Binary(BinaryAttrs { kind }), vec![a, b], shape)
}

/// A plan skeleton around `graph` for `n` ranks; values and steps are added with the methods.
pub struct PlanBuilder {
    pub plan: Plan,
}

impl PlanBuilder {
    pub fn new(graph: Graph, n: usize) -> PlanBuilder {
        let plan = Plan {
            format_version: FORMAT_VERSION,
            source: SourceModel {
                path: "inline".into(),
                sha256: String::new(),
                weight_files: Default::default(),
            },
            input_shapes: BTreeMap::new(),
            mesh: Mesh::tp(n),
            data: None,
            cost_model: CostModel {
                name: "cpu".into(),
                alpha_s: 1e-6,
                beta_bytes_per_s: 1e10,
                flops_per_s: 1e10,
                calibration: Default::default(),
                inter_group: None,
            },
            objective: Objective {
                kind: ObjectiveKind::Memory,
                memory_per_device: None,
                pins: BTreeMap::new(),
            },
            layouts: vec![None; graph.tensors.len()],
            graph,
            values: vec![],
            outputs: vec![],
            ranks: (0..n)
                .map(|rank| RankProgram {
                    rank,
                    steps: vec![],
                })
                .collect(),
            collectives: vec![],
            weight_shards: vec![],
            estimates: vec![],
            layers: None,
            search: SearchStats::default(),
            summary: PlanSummary::default(),
        };
        PlanBuilder { plan }
    }

    pub fn n(&self) -> usize {
        self.plan.ranks.len()
    }

    /// A value of logical tensor `t` in `layout` (local shape derived from the layout).
    pub fn value(&mut self, t: TensorId, layout: Layout) -> ValueId {
        let info = self.plan.graph.tensor(t).clone();
        let shape = layout
            .local_shape(&info.shape, self.n())
            .expect("divisible split");
        self.plan.values.push(PlanValue {
            tensor: t,
            layout,
            shape,
            dtype: info.dtype,
            rank_shapes: vec![],
        });
        self.plan.layouts[t.index()] = Some(layout);
        ValueId(self.plan.values.len() as u32 - 1)
    }

    /// Appends a step to every rank, built from the rank index.
    pub fn step(&mut self, f: impl Fn(usize) -> StepKind, inputs: &[ValueId], outputs: &[ValueId]) {
        for r in 0..self.n() {
            self.plan.ranks[r].steps.push(Step {
                kind: f(r),
                inputs: inputs.to_vec(),
                outputs: outputs.to_vec(),
                layer: None,
            });
        }
    }

    /// Reads graph input `tensor` into `out`: whole, or on each rank its chunk of axis `axis`
    /// of extent `dim` for `split = Some((axis, dim))`.
    pub fn input(&mut self, tensor: TensorId, split: Option<(usize, usize)>, out: ValueId) {
        self.source_step(split, out, |slice| StepKind::Input { tensor, slice });
    }

    /// Loads weight `tensor` into `out`: whole, or on each rank its chunk of axis `axis` of
    /// extent `dim` for `split = Some((axis, dim))`.
    pub fn load_weight(&mut self, tensor: TensorId, split: Option<(usize, usize)>, out: ValueId) {
        self.source_step(split, out, |slice| StepKind::LoadWeight { tensor, slice });
    }

    /// Appends a step without inputs that writes `out`, built from each rank's chunk of
    /// `split` (axis, extent), or from `None` when it is whole.
    fn source_step(
        &mut self,
        split: Option<(usize, usize)>,
        out: ValueId,
        kind: impl Fn(Option<AxisSlice>) -> StepKind,
    ) {
        let n = self.n();
        let slice = |r| split.map(|(axis, dim)| PlanBuilder::chunk(axis, dim, n, r));
        self.step(|r| kind(slice(r)), &[], &[out]);
    }

    pub fn compute(&mut self, node: NodeId, inputs: &[ValueId], out: ValueId) {
        let op = self.plan.graph.node(node).op.clone();
        self.step(
            |_| StepKind::Compute {
                node,
                op: op.clone(),
            },
            inputs,
            &[out],
        );
    }

    pub fn collective(
        &mut self,
        kind: CollectiveKind,
        axis: Option<usize>,
        to_axis: Option<usize>,
        x: ValueId,
        out: ValueId,
    ) {
        let n = self.n();
        let t = self.plan.values[x.index()].tensor;
        let bytes = (self.plan.graph.tensor(t).shape.iter().product::<usize>() * 4) as u64;
        self.step(
            |_| StepKind::Collective {
                collective: kind,
                axis,
                to_axis,
                group: (0..n).collect(),
                bytes,
                counts: vec![],
            },
            &[x],
            &[out],
        );
        self.plan.collectives.push(CollectiveInfo {
            kind,
            tensor: t,
            tensor_name: self.plan.graph.tensor(t).name.clone(),
            bytes,
            group: (0..n).collect(),
            layer: None,
        });
    }

    /// Chunk `r` of `d` split `n` ways, as an AxisSlice.
    pub fn chunk(axis: usize, d: usize, n: usize, r: usize) -> AxisSlice {
        AxisSlice {
            axis,
            start: r * d / n,
            end: (r + 1) * d / n,
        }
    }
}

/// The MLP: x[R] → MatMul W1 S(1) → Gelu → MatMul W2 S(0) → P → all-reduce → R.
/// Returns the plan and its inputs.
pub fn mlp_plan(n: usize) -> (Plan, BTreeMap<String, Tensor>) {
    let (d, h) = (8, 24);
    let mut g = Graph::new();
    let x = g.add_input("x", DType::F32, vec![2, 4, d]);
    let w1 = inline_weight(&mut g, "w1", rand_f32(&[d, h], 1));
    let w2 = inline_weight(&mut g, "w2", rand_f32(&[h, d], 2));
    let mm = Op::MatMul(MatMulAttrs {});
    let gelu = Op::Gelu(GeluAttrs {
        tanh_approximation: false,
    });
    let (n1, t_h) = node(
        &mut g,
        "fc1",
        mm.clone(),
        vec![x, w1],
        vec![2, 4, h],
        DType::F32,
    );
    let (n2, t_g) = node(&mut g, "gelu", gelu, vec![t_h], vec![2, 4, h], DType::F32);
    let (n3, t_y) = node(&mut g, "fc2", mm, vec![t_g, w2], vec![2, 4, d], DType::F32);
    g.outputs.push(t_y);
    let mut b = PlanBuilder::new(g, n);
    let vx = b.value(x, Layout::Replicated);
    let vw1 = b.value(w1, Layout::Split(1));
    let vh = b.value(t_h, Layout::Split(2));
    let vg = b.value(t_g, Layout::Split(2));
    let vw2 = b.value(w2, Layout::Split(0));
    let vyp = b.value(t_y, Layout::Partial);
    let vy = b.value(t_y, Layout::Replicated);
    b.input(x, None, vx);
    b.load_weight(w1, Some((1, h)), vw1);
    b.compute(n1, &[vx, vw1], vh);
    b.compute(n2, &[vh], vg);
    b.load_weight(w2, Some((0, h)), vw2);
    b.compute(n3, &[vg, vw2], vyp);
    b.collective(CollectiveKind::AllReduce, None, None, vyp, vy);
    b.plan.outputs.push(vy);
    let mut inputs = BTreeMap::new();
    inputs.insert("x".to_string(), rand_f32(&[2, 4, d], 3));
    (b.plan, inputs)
}

/// A chain exercising Input slices, all-to-all, all-gather, LocalSlice, ScaleToPartial and
/// reduce-scatter: s = MatMul(tanh(relu(x)), W) + x.
pub fn layouts_plan(n: usize) -> (Plan, BTreeMap<String, Tensor>) {
    let e = 12;
    let mut g = Graph::new();
    let x = g.add_input("x", DType::F32, vec![2, e, e]);
    let w = inline_weight(&mut g, "w", rand_f32(&[e, e], 5));
    let unary = |kind| Op::Unary(UnaryAttrs { kind });
    // Every value of the chain is a [2, e, e] f32 tensor.
    let mut chain_node = |name: &str, op: Op, inputs: Vec<TensorId>| {
        node(&mut g, name, op, inputs, vec![2, e, e], DType::F32)
    };
    let (n_relu, r1) = chain_node("relu", unary(UnaryOp::Relu), vec![x]);
    let (n_tanh, t) = chain_node("tanh", unary(UnaryOp::Tanh), vec![r1]);
    let (n_mm, m) = chain_node("mm", Op::MatMul(MatMulAttrs {}), vec![t, w]);
    let add = Op::Binary(BinaryAttrs {
        kind: BinaryOp::Add,
    });
    let (n_add, s) = chain_node("add", add, vec![m, x]);
    g.outputs.push(s);
    let mut b = PlanBuilder::new(g, n);
    let vx1 = b.value(x, Layout::Split(1));
    let vr1 = b.value(r1, Layout::Split(1));
    let vr2 = b.value(r1, Layout::Split(2));
    let vt2 = b.value(t, Layout::Split(2));
    let vtr = b.value(t, Layout::Replicated);
    let vt2b = b.value(t, Layout::Split(2));
    let vw = b.value(w, Layout::Split(0));
    let vmp = b.value(m, Layout::Partial);
    let vxr = b.value(x, Layout::Replicated);
    let vxp = b.value(x, Layout::Partial);
    let vsp = b.value(s, Layout::Partial);
    let vs1 = b.value(s, Layout::Split(1));
    let vsr = b.value(s, Layout::Replicated);
    b.input(x, Some((1, e)), vx1);
    b.compute(n_relu, &[vx1], vr1);
    b.collective(CollectiveKind::AllToAll, Some(1), Some(2), vr1, vr2);
    b.compute(n_tanh, &[vr2], vt2);
    b.collective(CollectiveKind::AllGather, Some(2), None, vt2, vtr);
    b.step(
        |r| StepKind::LocalSlice {
            slice: PlanBuilder::chunk(2, e, n, r),
        },
        &[vtr],
        &[vt2b],
    );
    b.load_weight(w, Some((0, e)), vw);
    b.compute(n_mm, &[vt2b, vw], vmp);
    b.input(x, None, vxr);
    b.step(|_| StepKind::ScaleToPartial { n }, &[vxr], &[vxp]);
    b.compute(n_add, &[vmp, vxp], vsp);
    b.collective(CollectiveKind::ReduceScatter, Some(1), None, vsp, vs1);
    b.collective(CollectiveKind::AllGather, Some(1), None, vs1, vsr);
    b.plan.outputs.push(vsr);
    let mut inputs = BTreeMap::new();
    inputs.insert("x".to_string(), rand_f32(&[2, e, e], 6));
    (b.plan, inputs)
}

/// Vocab-parallel embedding: e = Gather(table, ids) with the table split by rows, then
/// all-reduce and a broadcast.
pub fn embedding_plan(n: usize) -> (Plan, BTreeMap<String, Tensor>) {
    let (vocab, dim) = (12, 6);
    let mut g = Graph::new();
    let ids = g.add_input("ids", DType::I64, vec![2, 5]);
    let table = inline_weight(&mut g, "table", rand_f32(&[vocab, dim], 9));
    let (n_g, e) = node(
        &mut g,
        "embed",
        Op::Gather(AxisAttrs { axis: 0 }),
        vec![table, ids],
        vec![2, 5, dim],
        DType::F32,
    );
    g.outputs.push(e);
    let mut b = PlanBuilder::new(g, n);
    let vt = b.value(table, Layout::Split(0));
    let vi = b.value(ids, Layout::Replicated);
    let vep = b.value(e, Layout::Partial);
    let ver = b.value(e, Layout::Replicated);
    let veb = b.value(e, Layout::Replicated);
    b.load_weight(table, Some((0, vocab)), vt);
    b.input(ids, None, vi);
    let rows = vocab / n;
    b.step(
        |r| StepKind::ShardedGather {
            node: n_g,
            offset: r * rows,
            rows,
        },
        &[vt, vi],
        &[vep],
    );
    b.collective(CollectiveKind::AllReduce, None, None, vep, ver);
    b.collective(CollectiveKind::Broadcast, None, None, ver, veb);
    b.plan.outputs.push(veb);
    let mut inputs = BTreeMap::new();
    inputs.insert(
        "ids".to_string(),
        Tensor::i64(vec![2, 5], vec![0, 11, 5, -1, 3, 6, 7, -12, 2, 9]),
    );
    (b.plan, inputs)
}

/// Runs the plan's logical graph on the reference executor.
pub fn reference(plan: &Plan, inputs: &BTreeMap<String, Tensor>) -> Vec<Tensor> {
    let store = WeightStore::with_dir(".");
    run_graph(&plan.graph, &store, inputs).expect("reference run")
}

/// Runs the plan with default options over the current folder's weights: (its outputs,
/// the run's statistics, the reference executor's outputs).
pub fn run_beside_reference(
    plan: &Plan,
    inputs: &BTreeMap<String, Tensor>,
) -> (Vec<Tensor>, tessera_runtime::exec::RunStats, Vec<Tensor>) {
    let want = reference(plan, inputs);
    let opts = tessera_runtime::exec::RunOptions::default();
    let (got, stats) =
        tessera_runtime::exec::run_plan(plan, &WeightStore::with_dir("."), inputs, &opts)
            .unwrap_or_else(|e| panic!("run_plan: {e}"));
    (got, stats, want)
}

/// Normwise relative error of `got` against `want`.
pub fn rel_err(got: &Tensor, want: &Tensor) -> f64 {
    assert_eq!(got.shape, want.shape);
    let (a, b) = (got.to_f64_vec(), want.to_f64_vec());
    let max_abs = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    let scale = b.iter().map(|y| y.abs()).fold(0.0, f64::max);
    max_abs / scale.max(1e-6)
}

/// The whole graph on one device, every tensor replicated: inputs, weights loaded where
/// first used, nodes in graph order, the graph outputs as plan outputs.
pub fn single_rank_plan(graph: Graph) -> Plan {
    let mut b = PlanBuilder::new(graph, 1);
    let g = b.plan.graph.clone();
    let mut value: BTreeMap<TensorId, ValueId> = BTreeMap::new();
    for &t in &g.inputs {
        let v = b.value(t, Layout::Replicated);
        b.input(t, None, v);
        value.insert(t, v);
    }
    for (i, nd) in g.nodes.iter().enumerate() {
        for &t in &nd.inputs {
            if g.weights.contains_key(&t) && !value.contains_key(&t) {
                let v = b.value(t, Layout::Replicated);
                b.load_weight(t, None, v);
                value.insert(t, v);
            }
        }
        let ins: Vec<ValueId> = nd.inputs.iter().map(|t| value[t]).collect();
        let out = b.value(nd.outputs[0], Layout::Replicated);
        value.insert(nd.outputs[0], out);
        b.compute(NodeId(i as u32), &ins, out);
    }
    b.plan.outputs = g.outputs.iter().map(|t| value[t]).collect();
    b.plan
}
