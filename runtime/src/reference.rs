//! The single-device reference executor: runs a [`Graph`] node by node with the CPU kernels.
//!
//! It is the ground truth the partitioned plans are compared against. Every buffer is freed
//! right after its last reader, so peak memory stays close to the true working set.
use crate::weights::WeightStore;
use crate::RuntimeError;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tessera_ir::Op;
use tessera_ir::{DType, Graph, Tensor, TensorData, TensorId};
use tessera_kernels::eval;
use tessera_kernels::PackedQWeight;

/// Statistics of one reference run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReferenceStats {
    /// Largest total size (logical dtype bytes) of live tensors at any point.
    pub peak_bytes: usize,
    /// Number of nodes executed.
    pub nodes_run: usize,
}

/// Runs `graph` on `inputs` (by input name) and returns the outputs in `graph.outputs` order.
pub fn run_graph(
    graph: &Graph,
    store: &WeightStore,
    inputs: &BTreeMap<String, Tensor>,
) -> Result<Vec<Tensor>, RuntimeError> {
    run_graph_with_stats(graph, store, inputs).map(|(out, _)| out)
}

/// Same storage class (float / int / bool) for two dtypes.
fn same_class(a: DType, b: DType) -> bool {
    (a.is_float() && b.is_float())
        || (a.is_int() && b.is_int())
        || (a == DType::Bool && b == DType::Bool)
}

/// Checks the fed inputs against the graph and returns them by tensor id.
fn bind_inputs(
    graph: &Graph,
    inputs: &BTreeMap<String, Tensor>,
) -> Result<Vec<(TensorId, Tensor)>, RuntimeError> {
    let names: Vec<&str> = graph
        .inputs
        .iter()
        .map(|t| graph.tensor(*t).name.as_str())
        .collect();
    if let Some(extra) = inputs.keys().find(|k| !names.contains(&k.as_str())) {
        return Err(RuntimeError::Input {
            name: extra.clone(),
            msg: format!("not a graph input (inputs: {})", names.join(", ")),
        });
    }
    let mut bound = Vec::with_capacity(graph.inputs.len());
    for &id in &graph.inputs {
        let info = graph.tensor(id);
        let bad = |msg: String| RuntimeError::Input {
            name: info.name.clone(),
            msg,
        };
        let t = inputs
            .get(&info.name)
            .ok_or_else(|| bad("missing".into()))?;
        if !same_class(t.dtype, info.dtype) {
            return Err(bad(format!(
                "dtype {} given, graph expects {}",
                t.dtype, info.dtype
            )));
        }
        if t.shape != info.shape {
            return Err(bad(format!(
                "shape {:?} given, graph expects {:?}",
                t.shape, info.shape
            )));
        }
        let mut t = t.clone();
        t.dtype = info.dtype;
        bound.push((id, t));
    }
    Ok(bound)
}

/// Index of the last node reading each tensor (`usize::MAX` for graph outputs: never freed).
/// The integer operand and parameters of a quantised product count as read by it.
fn last_uses(graph: &Graph, products: &HashMap<usize, QuantProduct>) -> Vec<usize> {
    let mut last = vec![0usize; graph.tensors.len()];
    for (i, n) in graph.nodes.iter().enumerate() {
        let extra = products.get(&i).map(|p| p.q.to_vec()).unwrap_or_default();
        for t in n.inputs.iter().chain(&extra) {
            last[t.index()] = last[t.index()].max(i);
        }
    }
    for t in &graph.outputs {
        last[t.index()] = usize::MAX;
    }
    last
}

/// Live-tensor bookkeeping: values by tensor id plus the running byte count.
struct Values {
    slots: Vec<Option<Tensor>>,
    live: usize,
    peak: usize,
}

impl Values {
    fn put(&mut self, id: TensorId, t: Tensor) {
        self.live += t.size_bytes();
        self.peak = self.peak.max(self.live);
        if let Some(old) = self.slots[id.index()].replace(t) {
            self.live -= old.size_bytes();
        }
    }

    fn free(&mut self, id: TensorId) {
        if let Some(old) = self.slots[id.index()].take() {
            self.live -= old.size_bytes();
        }
    }
}

/// A product of two quantised integer operands: `MatMul(Dequantize(q, sd, zd), W)` with `q`
/// a uint8/int8 activation and `W` a quantised weight with a scale and zero point per
/// column. Its value is the integer products summed exactly, then scaled (what onnxruntime
/// computes for a QDQ or MatMulInteger model, and the runtime's integer GEMM), not a float
/// product of the rounded dequantised operands.
struct QuantProduct {
    /// q, sd, zd.
    q: [TensorId; 3],
    weight: Arc<PackedQWeight>,
}

impl QuantProduct {
    fn eval(&self, slots: &[Option<Tensor>]) -> Result<Tensor, String> {
        let get = |t: TensorId| {
            slots[t.index()]
                .as_ref()
                .ok_or_else(|| format!("tensor id {} is not live", t.0))
        };
        let one = |t: TensorId| -> Result<f32, String> {
            match get(t)?.as_f32() {
                Some([v]) => Ok(*v),
                _ => Err(format!("tensor id {} is not one f32", t.0)),
            }
        };
        let [q, sd, zd] = self.q;
        tessera_kernels::dequant_matmul(get(q)?, one(sd)?, one(zd)?, &self.weight)
    }
}

/// The graph's quantised products ([`QuantProduct`]), by MatMul node index.
fn quant_products(
    graph: &Graph,
    store: &WeightStore,
) -> Result<HashMap<usize, QuantProduct>, RuntimeError> {
    let mut producer = HashMap::new();
    for (i, n) in graph.nodes.iter().enumerate() {
        for t in &n.outputs {
            producer.insert(*t, i);
        }
    }
    let mut found = HashMap::new();
    for (i, n) in graph.nodes.iter().enumerate() {
        let (Op::MatMul(_), [a, b]) = (&n.op, &n.inputs[..]) else {
            continue;
        };
        let Some(d) = producer.get(a).map(|&d| &graph.nodes[d]) else {
            continue;
        };
        let (Op::Dequantize, &[q, sd, zd]) = (&d.op, &d.inputs[..]) else {
            continue;
        };
        let one_f32 = |t: TensorId| {
            let info = graph.tensor(t);
            info.dtype == DType::F32 && info.shape.iter().product::<usize>() == 1
        };
        let int8 = matches!(graph.tensor(q).dtype, DType::U8 | DType::I8);
        let Some(w) = graph.weights.get(b) else {
            continue;
        };
        if !int8 || !one_f32(sd) || !one_f32(zd) || !matches!(w.dtype, DType::U8 | DType::I8) {
            continue;
        }
        if w.quant.as_ref().is_none_or(|q| q.dtype != DType::F32) {
            continue;
        }
        let Some(c) = store.load_columns(w, None)? else {
            continue;
        };
        let Ok(weight) = PackedQWeight::pack(c.k, c.n, &c.values, c.dtype, &c.scale, &c.zero)
        else {
            continue;
        };
        found.insert(
            i,
            QuantProduct {
                q: [q, sd, zd],
                weight: Arc::new(weight),
            },
        );
    }
    Ok(found)
}

/// [`run_graph`] that also reports [`ReferenceStats`].
pub fn run_graph_with_stats(
    graph: &Graph,
    store: &WeightStore,
    inputs: &BTreeMap<String, Tensor>,
) -> Result<(Vec<Tensor>, ReferenceStats), RuntimeError> {
    let products = quant_products(graph, store)?;
    let last = last_uses(graph, &products);
    let mut vals = Values {
        slots: vec![None; graph.tensors.len()],
        live: 0,
        peak: 0,
    };
    for (id, t) in bind_inputs(graph, inputs)? {
        vals.put(id, t);
    }
    // Weights only read by graph outputs (never by a node) are loaded up front; the rest on
    // first use, so the mapped bytes are touched in execution order.
    for (&id, w) in &graph.weights {
        if graph.outputs.contains(&id) {
            vals.put(id, store.load(w, None)?);
        }
    }
    for (i, node) in graph.nodes.iter().enumerate() {
        for &t in &node.inputs {
            if vals.slots.get(t.index()).is_none() {
                return Err(RuntimeError::Graph(format!(
                    "node '{}' reads tensor id {} out of range",
                    node.name, t.0
                )));
            }
            if vals.slots[t.index()].is_none() {
                let w = graph.weights.get(&t).ok_or_else(|| {
                    RuntimeError::Graph(format!(
                        "node '{}' reads '{}' before it is produced",
                        node.name,
                        graph.tensor(t).name
                    ))
                })?;
                vals.put(t, store.load(w, None)?);
            }
        }
        let args: Vec<&Tensor> = node
            .inputs
            .iter()
            .filter_map(|t| vals.slots[t.index()].as_ref())
            .collect();
        let kernel_err = |source| RuntimeError::Kernel {
            node: node.name.clone(),
            source,
        };
        let outs = match products.get(&i) {
            Some(p) => vec![p.eval(&vals.slots).map_err(|msg| {
                kernel_err(tessera_kernels::KernelError {
                    op: "MatMul".into(),
                    msg,
                })
            })?],
            None => eval(&node.op, &args).map_err(kernel_err)?,
        };
        if outs.len() < node.outputs.len() {
            return Err(RuntimeError::Graph(format!(
                "node '{}' ({}) produced {} outputs, graph expects {}",
                node.name,
                node.op.name(),
                outs.len(),
                node.outputs.len()
            )));
        }
        for (&id, mut t) in node.outputs.iter().zip(outs) {
            let info = graph.tensor(id);
            if t.shape != info.shape || !same_class(t.dtype, info.dtype) {
                return Err(RuntimeError::Graph(format!(
                    "node '{}' ({}) produced {}{:?} for '{}', graph says {}{:?}",
                    node.name,
                    node.op.name(),
                    t.dtype,
                    t.shape,
                    info.name,
                    info.dtype,
                    info.shape
                )));
            }
            t.dtype = info.dtype;
            vals.put(id, t);
        }
        for &t in node.inputs.iter().chain(&node.outputs) {
            if last[t.index()] <= i {
                vals.free(t);
            }
        }
    }
    let mut outs = Vec::with_capacity(graph.outputs.len());
    for &id in &graph.outputs {
        // Outputs are never freed (last use usize::MAX), so a missing one was never produced.
        let t = vals.slots[id.index()].clone().ok_or_else(|| {
            RuntimeError::Graph(format!(
                "output '{}' is never produced",
                graph.tensor(id).name
            ))
        })?;
        outs.push(t);
    }
    let stats = ReferenceStats {
        peak_bytes: vals.peak,
        nodes_run: graph.nodes.len(),
    };
    Ok((outs, stats))
}

/// A zero-filled tensor of a dtype and shape (handy for feeding shape-only runs).
pub fn zeros(dtype: DType, shape: Vec<usize>) -> Tensor {
    let n = shape.iter().product();
    let data = if dtype.is_float() {
        TensorData::F32(vec![0.0; n])
    } else if dtype == DType::Bool {
        TensorData::Bool(vec![false; n])
    } else {
        TensorData::I64(vec![0; n])
    };
    Tensor { dtype, shape, data }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ir::op::{BinaryAttrs, BinaryOp, MatMulAttrs, UnaryAttrs, UnaryOp};
    use tessera_ir::{Op, TensorKind, Weight, WeightData};

    /// relu(x · W + b) with W in a file and b inline.
    fn mlp(dir: &std::path::Path) -> Graph {
        let w: Vec<f32> = vec![1.0, -1.0, 2.0, 0.0, 0.0, 1.0];
        let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(dir.join("w.bin"), bytes).unwrap();
        let mut g = Graph::new();
        let x = g.add_input("x", DType::F32, vec![2, 3]);
        let wt = g.add_weight(Weight {
            perm: None,
            packed_bits: None,
            name: "W".into(),
            dtype: DType::F32,
            shape: vec![3, 2],
            data: WeightData::File {
                path: "w.bin".into(),
                offset: 0,
                length: 24,
            },
            quant: None,
        });
        let b = g.add_weight(Weight {
            perm: None,
            packed_bits: None,
            name: "b".into(),
            dtype: DType::F32,
            shape: vec![2],
            data: WeightData::Inline {
                tensor: Tensor::f32(vec![2], vec![0.5, -10.0]),
            },
            quant: None,
        });
        let h = g.add_tensor("h", DType::F32, vec![2, 2], TensorKind::Activation);
        let z = g.add_tensor("z", DType::F32, vec![2, 2], TensorKind::Activation);
        let y = g.add_tensor("y", DType::F32, vec![2, 2], TensorKind::Activation);
        g.add_node("mm", Op::MatMul(MatMulAttrs {}), vec![x, wt], vec![h]);
        g.add_node(
            "add",
            Op::Binary(BinaryAttrs {
                kind: BinaryOp::Add,
            }),
            vec![h, b],
            vec![z],
        );
        g.add_node(
            "relu",
            Op::Unary(UnaryAttrs {
                kind: UnaryOp::Relu,
            }),
            vec![z],
            vec![y],
        );
        g.outputs = vec![y, h];
        g
    }

    /// The MLP with its weights in a temporary folder (kept alive by the returned guard)
    /// and a store reading from it.
    fn mlp_with_store() -> (tempfile::TempDir, Graph, WeightStore) {
        let dir = tempfile::tempdir().unwrap();
        let g = mlp(dir.path());
        let store = WeightStore::with_dir(dir.path());
        (dir, g, store)
    }

    #[test]
    fn runs_a_small_mlp_and_reports_peak() {
        let (_dir, g, store) = mlp_with_store();
        let mut inputs = BTreeMap::new();
        inputs.insert(
            "x".to_string(),
            Tensor::f32(vec![2, 3], vec![1.0, 2.0, 3.0, -1.0, 0.0, 1.0]),
        );
        let (outs, stats) = run_graph_with_stats(&g, &store, &inputs).unwrap();
        // h = x·W = [[1+4+0, -1+0+3], [-1+0+0, 1+0+1]] = [[5, 2], [-1, 2]]
        assert_eq!(outs[1].as_f32().unwrap(), &[5.0, 2.0, -1.0, 2.0]);
        // y = relu(h + [0.5, -10]) = [[5.5, 0], [0, 0]]
        assert_eq!(outs[0].as_f32().unwrap(), &[5.5, 0.0, 0.0, 0.0]);
        // Peak is right after "mm": x (24 B) + W (24 B) + h (16 B) = 64; x and W are then
        // freed, and "add" peaks at h 16 + b 8 + z 16 = 40.
        assert_eq!(stats.peak_bytes, 64);
        assert_eq!(stats.nodes_run, 3);
    }

    #[test]
    fn input_errors_name_the_input() {
        let (_dir, g, store) = mlp_with_store();
        let mut inputs = BTreeMap::new();
        let e = run_graph(&g, &store, &inputs).unwrap_err().to_string();
        assert_eq!(e, "input 'x': missing");
        inputs.insert("x".to_string(), Tensor::f32(vec![3, 2], vec![0.0; 6]));
        let e = run_graph(&g, &store, &inputs).unwrap_err().to_string();
        assert!(
            e.contains("'x'") && e.contains("[3, 2]") && e.contains("[2, 3]"),
            "{e}"
        );
        inputs.insert("x".to_string(), Tensor::i64(vec![2, 3], vec![0; 6]));
        let e = run_graph(&g, &store, &inputs).unwrap_err().to_string();
        assert!(e.contains("dtype i64"), "{e}");
        inputs.insert("x".to_string(), Tensor::f32(vec![2, 3], vec![0.0; 6]));
        inputs.insert("q".to_string(), Tensor::f32(vec![1], vec![0.0]));
        let e = run_graph(&g, &store, &inputs).unwrap_err().to_string();
        assert!(e.contains("'q'") && e.contains("not a graph input"), "{e}");
    }

    #[test]
    fn kernel_errors_name_the_node() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = mlp(dir.path());
        // Corrupt the weight's declared shape so the matmul no longer fits.
        if let Some(w) = g.weights.values_mut().find(|w| w.name == "W") {
            w.shape = vec![2, 3];
        }
        let store = WeightStore::with_dir(dir.path());
        let mut inputs = BTreeMap::new();
        inputs.insert("x".to_string(), Tensor::f32(vec![2, 3], vec![0.0; 6]));
        let e = run_graph(&g, &store, &inputs).unwrap_err().to_string();
        assert!(e.starts_with("node 'mm': MatMul: cannot multiply"), "{e}");
    }
}
