//! Hand-built plans for the report unit tests: a stack of residual MLP blocks
//! (column-split MatMul → GELU → row-split MatMul → all-reduce → residual add) on N ranks.
use std::collections::BTreeMap;
use tessera_ir::op::{BinaryAttrs, BinaryOp, GeluAttrs, MatMulAttrs};
use tessera_ir::plan::*;
use tessera_ir::{DType, Graph, Layout, Op, TensorId, Weight, WeightData};

/// Asserts that `text` contains every one of `needles`, showing `text` when one is missing.
pub fn assert_contains_all(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

const BATCH: usize = 4;
const MODEL: usize = 64;
const HIDDEN: usize = 256;

/// Builds plan values and the per-rank steps alongside the logical graph.
struct Builder {
    graph: Graph,
    layouts: Vec<Option<Layout>>,
    values: Vec<PlanValue>,
    steps: Vec<Vec<Step>>,
    collectives: Vec<CollectiveInfo>,
    shards: Vec<WeightShard>,
    node_layer: Vec<Option<u32>>,
    n: usize,
}

impl Builder {
    fn value(&mut self, tensor: TensorId, layout: Layout) -> ValueId {
        let info = self.graph.tensor(tensor);
        let shape = layout
            .local_shape(&info.shape, self.n)
            .expect("fixture splits are even");
        let dtype = info.dtype;
        if self.layouts.len() <= tensor.index() {
            self.layouts.resize(tensor.index() + 1, None);
        }
        self.layouts[tensor.index()] = Some(layout);
        self.values.push(PlanValue {
            tensor,
            layout,
            shape,
            dtype,
            rank_shapes: vec![],
        });
        ValueId(self.values.len() as u32 - 1)
    }

    fn push(
        &mut self,
        layer: Option<u32>,
        inputs: Vec<ValueId>,
        outputs: Vec<ValueId>,
        kind: impl Fn(usize) -> StepKind,
    ) {
        for (rank, steps) in self.steps.iter_mut().enumerate() {
            steps.push(Step {
                kind: kind(rank),
                inputs: inputs.clone(),
                outputs: outputs.clone(),
                layer,
            });
        }
    }

    fn weight(
        &mut self,
        name: &str,
        shape: Vec<usize>,
        split: Option<usize>,
        layer: Option<u32>,
    ) -> ValueId {
        let length = (tessera_ir::numel(&shape) * 4) as u64;
        let t = self.graph.add_weight(Weight {
            perm: None,
            packed_bits: None,
            name: name.into(),
            dtype: DType::F32,
            shape: shape.clone(),
            data: WeightData::File {
                path: "model.onnx".into(),
                offset: 0,
                length,
            },
            quant: None,
        });
        let layout = split.map_or(Layout::Replicated, Layout::Split);
        let v = self.value(t, layout);
        let n = self.n;
        if let Some(axis) = split {
            let chunk = shape[axis] / n;
            let ranges = (0..n).map(|r| (r * chunk, (r + 1) * chunk)).collect();
            self.shards.push(WeightShard {
                tensor: t,
                name: name.into(),
                axis,
                ranges,
            });
        }
        self.push(layer, vec![], vec![v], |rank| StepKind::LoadWeight {
            tensor: t,
            slice: split.map(|axis| {
                let chunk = shape[axis] / n;
                AxisSlice {
                    axis,
                    start: rank * chunk,
                    end: (rank + 1) * chunk,
                }
            }),
        });
        v
    }

    fn compute(
        &mut self,
        name: &str,
        op: Op,
        inputs: Vec<ValueId>,
        shape: Vec<usize>,
        layout: Layout,
        layer: Option<u32>,
    ) -> ValueId {
        let out = self.graph.add_tensor(
            format!("{name}_out"),
            DType::F32,
            shape,
            tessera_ir::TensorKind::Activation,
        );
        let ins = inputs
            .iter()
            .map(|v| self.values[v.index()].tensor)
            .collect();
        let node = self.graph.add_node(name, op.clone(), ins, vec![out]);
        self.node_layer.push(layer);
        let v = self.value(out, layout);
        self.push(layer, inputs, vec![v], |_| StepKind::Compute {
            node,
            op: op.clone(),
        });
        v
    }

    /// `x · W` with the weight `{name}.weight` of shape `w_shape` split on axis `w_split`:
    /// a `[BATCH, w_shape[1]]` output laid out as `out`.
    fn matmul(
        &mut self,
        name: &str,
        x: ValueId,
        w_shape: [usize; 2],
        w_split: usize,
        out: Layout,
        layer: Option<u32>,
    ) -> ValueId {
        let w = self.weight(
            &format!("{name}.weight"),
            w_shape.to_vec(),
            Some(w_split),
            layer,
        );
        let mm = Op::MatMul(MatMulAttrs {});
        self.compute(name, mm, vec![x, w], vec![BATCH, w_shape[1]], out, layer)
    }

    fn all_reduce(&mut self, input: ValueId, layer: Option<u32>) -> ValueId {
        let tensor = self.values[input.index()].tensor;
        // The logical tensor keeps the layout its producer chose (P); the reduced copy is a
        // second value of the same tensor.
        let chosen = self.layouts[tensor.index()];
        let v = self.value(tensor, Layout::Replicated);
        self.layouts[tensor.index()] = chosen;
        let bytes = (tessera_ir::numel(&self.graph.tensor(tensor).shape) * 4) as u64;
        let group: Vec<usize> = (0..self.n).collect();
        self.collectives.push(CollectiveInfo {
            kind: CollectiveKind::AllReduce,
            tensor,
            tensor_name: self.graph.tensor(tensor).name.clone(),
            bytes,
            group: group.clone(),
            layer,
        });
        self.push(layer, vec![input], vec![v], |_| StepKind::Collective {
            collective: CollectiveKind::AllReduce,
            axis: None,
            to_axis: None,
            group: group.clone(),
            bytes,
            counts: vec![],
        });
        v
    }
}

/// A plan of `blocks` residual MLP blocks on `n` ranks, with one all-reduce per block.
/// Layer info is filled when `blocks > 1`.
pub fn mlp_stack_plan(blocks: usize, n: usize) -> Plan {
    let mut b = Builder {
        graph: Graph::new(),
        layouts: Vec::new(),
        values: Vec::new(),
        steps: vec![Vec::new(); n],
        collectives: Vec::new(),
        shards: Vec::new(),
        node_layer: Vec::new(),
        n,
    };
    let x = b.graph.add_input("x", DType::F32, vec![BATCH, MODEL]);
    let mut h = b.value(x, Layout::Replicated);
    b.push(None, vec![], vec![h], |_| StepKind::Input {
        tensor: x,
        slice: None,
    });
    for l in 0..blocks {
        let layer = (blocks > 1).then_some(l as u32);
        let fc1 = format!("blocks.{l}.fc1");
        let a = b.matmul(&fc1, h, [MODEL, HIDDEN], 1, Layout::Split(1), layer);
        let g = b.compute(
            &format!("blocks.{l}.act"),
            Op::Gelu(GeluAttrs {
                tanh_approximation: false,
            }),
            vec![a],
            vec![BATCH, HIDDEN],
            Layout::Split(1),
            layer,
        );
        let fc2 = format!("blocks.{l}.fc2");
        let p = b.matmul(&fc2, g, [HIDDEN, MODEL], 0, Layout::Partial, layer);
        let r = b.all_reduce(p, layer);
        let add = Op::Binary(BinaryAttrs {
            kind: BinaryOp::Add,
        });
        h = b.compute(
            &format!("blocks.{l}.residual"),
            add,
            vec![h, r],
            vec![BATCH, MODEL],
            Layout::Replicated,
            layer,
        );
    }
    let y = b.values[h.index()].tensor;
    b.graph.outputs.push(y);
    let per_block_params = ((MODEL * HIDDEN * 2 * 4) / n) as u64;
    let per_block_flops = (2 * BATCH * MODEL * HIDDEN * 2 / n) as u64;
    let estimates = (0..n)
        .map(|rank| RankEstimate {
            rank,
            param_bytes: per_block_params * blocks as u64,
            peak_activation_bytes: (BATCH * (MODEL + HIDDEN / n) * 4) as u64 + rank as u64,
            flops: per_block_flops * blocks as u64,
            comm_bytes: 0,
            model_s: 0.0,
        })
        .collect();
    let total_bytes: u64 = b.collectives.iter().map(|c| c.bytes).sum();
    let mut collectives = BTreeMap::new();
    collectives.insert("all_reduce".to_string(), (blocks as u64, total_bytes));
    let mut matmul_choices = BTreeMap::new();
    matmul_choices.insert("column_split".to_string(), blocks as u64);
    matmul_choices.insert("row_split".to_string(), blocks as u64);
    let nodes_per_layer = b.graph.nodes.len() / blocks.max(1);
    Plan {
        format_version: FORMAT_VERSION,
        source: SourceModel {
            path: "model.onnx".into(),
            sha256: "00".repeat(32),
            weight_files: BTreeMap::from([("model.onnx".to_string(), "00".repeat(32))]),
        },
        input_shapes: BTreeMap::from([("x".to_string(), vec![BATCH, MODEL])]),
        mesh: Mesh::tp(n),
        data: None,
        cost_model: CostModel {
            name: "nvlink".into(),
            alpha_s: 1e-5,
            beta_bytes_per_s: 1e11,
            flops_per_s: 1e14,
            calibration: Default::default(),
            inter_group: None,
        },
        objective: Objective {
            kind: ObjectiveKind::Memory,
            memory_per_device: None,
            pins: BTreeMap::new(),
        },
        layers: (blocks > 1).then(|| LayerInfo {
            count: blocks,
            nodes_per_layer,
            blocks_differ: false,
            node_layer: b.node_layer.clone(),
            stacks: Vec::new(),
        }),
        outputs: vec![h],
        ranks: b
            .steps
            .into_iter()
            .enumerate()
            .map(|(rank, steps)| RankProgram { rank, steps })
            .collect(),
        layouts: b.layouts,
        values: b.values,
        collectives: b.collectives,
        weight_shards: b.shards,
        estimates,
        search: SearchStats {
            eclasses: 40,
            enodes: 120,
            iterations: 5,
            stop_reason: StopReason::Saturated,
            limits: SearchLimits {
                iterations: 30,
                nodes: 500_000,
                time_s: 20,
            },
            extractor: Extractor::FrontierDp,
            cost: 2.0e-5,
            lower_bound: 2.0e-5,
            gap: 0.0,
        },
        summary: PlanSummary {
            collectives,
            lower_bound_bytes: total_bytes,
            matmul_choices,
            notes: vec![],
        },
        graph: b.graph,
    }
}
