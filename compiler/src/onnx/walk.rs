//! Phase 2, `fold` + `infer`: one topological walk over the ONNX nodes. For each node the
//! registered converter produces IR ops (or constants); a step whose inputs are all constants
//! is evaluated with [`tessera_kernels::eval`] and becomes a constant, any other step
//! becomes a graph node whose output types come from [`tessera_ir::infer::infer`].
use super::ops::{self, InputView, Lowered, NodeCx, Ref, Step};
use super::{ImportError, FOLD_MAX_OUTPUT_ELEMS};
use onnx_protobuf::NodeProto;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use tessera_ir::infer::{infer, required_outputs};
use tessera_ir::{numel, DType, Graph, IrError, Tensor, TensorId, TensorKind, Weight, WeightData};

/// A value (ONNX tensor name) as known during the walk.
#[derive(Clone)]
struct Value {
    /// Tensor name for the graph.
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    /// The value when known at import time.
    konst: Option<Rc<Tensor>>,
    /// The initializer it came from (materialised as this weight rather than inline).
    source: Option<Weight>,
    /// Its graph tensor, once materialised.
    id: Option<TensorId>,
    /// Why the value cannot be used (an unsupported optional output).
    missing: Option<String>,
}

impl Value {
    fn constant(name: String, t: Tensor) -> Value {
        Value {
            name,
            dtype: t.dtype,
            shape: t.shape.clone(),
            konst: Some(Rc::new(t)),
            source: None,
            id: None,
            missing: None,
        }
    }
}

/// Gives `v` a graph tensor: constants become weights (file-backed for initializers,
/// inline for folded values) the first time a graph node reads them.
fn materialize(
    graph: &mut Graph,
    consts: &mut BTreeMap<TensorId, Tensor>,
    v: &mut Value,
) -> Result<TensorId, ImportError> {
    if let Some(id) = v.id {
        return Ok(id);
    }
    let weight = match (&v.source, &v.konst) {
        (Some(w), _) => w.clone(),
        (None, Some(t)) => Weight {
            name: v.name.clone(),
            dtype: v.dtype,
            shape: v.shape.clone(),
            data: WeightData::Inline {
                tensor: (**t).clone(),
            },
            quant: None,
            perm: None,
            packed_bits: None,
        },
        (None, None) => {
            return Err(ImportError::tensor(
                &v.name,
                "has neither a producer nor a value",
            ))
        }
    };
    let id = graph.add_weight(weight);
    v.id = Some(id);
    if let Some(k) = &v.konst {
        consts.insert(id, (**k).clone());
    }
    Ok(id)
}

/// Where a step input lives.
enum Slot {
    Named(String),
    Local(usize),
}

/// The walk state.
pub(crate) struct Walker {
    /// Opset version of each imported domain (`""`: the default domain).
    opsets: BTreeMap<String, i64>,
    /// The graph being built.
    pub graph: Graph,
    values: HashMap<String, Value>,
    /// Value names read by some node or listed as graph outputs.
    used: HashSet<String>,
    /// ONNX nodes whose outputs all became constants.
    pub folded: usize,
    /// Known values of the weights read by graph nodes (small initializers, folded values).
    pub consts: BTreeMap<TensorId, Tensor>,
}

impl Walker {
    /// A walker for a model that imports `opsets` (domain → version, `""` the default
    /// domain); `used` holds the value names that some node reads or that are graph outputs
    /// (optional node outputs outside it are not bound).
    pub fn new(opsets: BTreeMap<String, i64>, used: HashSet<String>) -> Walker {
        Walker {
            opsets,
            graph: Graph::new(),
            values: HashMap::new(),
            used,
            folded: 0,
            consts: BTreeMap::new(),
        }
    }

    /// Declares a graph input.
    pub fn add_input(&mut self, name: &str, dtype: DType, shape: Vec<usize>) {
        let id = self.graph.add_input(name, dtype, shape.clone());
        let v = Value {
            name: name.into(),
            dtype,
            shape,
            konst: None,
            source: None,
            id: Some(id),
            missing: None,
        };
        self.values.insert(name.into(), v);
    }

    /// Declares an initializer; `konst` is its decoded value when small enough to fold.
    pub fn add_initializer(&mut self, weight: Weight, konst: Option<Tensor>) {
        let v = Value {
            name: weight.name.clone(),
            dtype: weight.dtype,
            shape: weight.shape.clone(),
            konst: konst.map(Rc::new),
            source: Some(weight),
            id: None,
            missing: None,
        };
        self.values.insert(v.name.clone(), v);
    }

    /// Converts, folds and infers one node.
    pub fn run_node(&mut self, index: usize, node: &NodeProto) -> Result<(), ImportError> {
        let name = if node.name.is_empty() {
            format!("{}_{index}", node.op_type)
        } else {
            node.name.clone()
        };
        let op_type = node.op_type.as_str();
        let domain = super::parse::canonical_domain(&node.domain);
        let opset = self.opsets.get(domain).copied().unwrap_or(0);
        let convert = ops::lookup(domain, op_type, opset)
            .ok_or_else(|| ImportError::node(&name, op_type, "unsupported op"))?;
        if domain.is_empty() {
            // The schema table holds the default domain's ops; a contrib op checks its own.
            ops::check_attributes(node, &name, opset)?;
        }
        let mut views = Vec::with_capacity(node.input.len());
        for input in &node.input {
            if input.is_empty() {
                views.push(None);
                continue;
            }
            let v = self.value(&name, op_type, input)?;
            views.push(Some(InputView {
                name: input,
                dtype: v.dtype,
                shape: &v.shape,
                konst: v.konst.as_deref(),
                source: v.source.as_ref(),
            }));
        }
        let cx = NodeCx {
            node,
            name: &name,
            opset,
            inputs: views,
            used: &self.used,
        };
        let lowered = convert(&cx)?;
        let outputs: Vec<Value> = match lowered {
            Lowered::Consts(ts) => {
                self.folded += 1;
                ts.into_iter()
                    .enumerate()
                    .map(|(k, t)| Value::constant(output_name(node, &name, k), t))
                    .collect()
            }
            Lowered::Steps(steps) => self.emit_steps(&name, node, steps, None)?,
            Lowered::Picked { steps, outputs } => {
                self.emit_steps(&name, node, steps, Some(&outputs))?
            }
            Lowered::Weight(mut w) => {
                w.name = output_name(node, &name, 0);
                vec![Value {
                    name: w.name.clone(),
                    dtype: w.logical_dtype(),
                    shape: w.shape.clone(),
                    konst: None,
                    source: Some(w),
                    id: None,
                    missing: None,
                }]
            }
        };
        for (k, out) in node.output.iter().enumerate() {
            if out.is_empty() {
                continue;
            }
            if self.values.contains_key(out) {
                return Err(ImportError::node(
                    &name,
                    op_type,
                    format!(
                        "output '{out}' is already defined (by a graph input, an initializer \
                         or an earlier output); ONNX names each value once"
                    ),
                ));
            }
            let v = match outputs.get(k) {
                Some(v) => v.clone(),
                None => Value {
                    name: out.clone(),
                    dtype: DType::F32,
                    shape: vec![],
                    konst: None,
                    source: None,
                    id: None,
                    missing: Some(format!(
                        "output {k} of node '{name}' ({op_type}), which is not supported"
                    )),
                },
            };
            self.values.insert(out.clone(), v);
        }
        Ok(())
    }

    fn value(&self, node: &str, op: &str, input: &str) -> Result<&Value, ImportError> {
        let v = self.values.get(input).ok_or_else(|| {
            ImportError::node(
                node,
                op,
                format!("input '{input}' is not produced before this node"),
            )
        })?;
        if let Some(why) = &v.missing {
            return Err(ImportError::node(
                node,
                op,
                format!("reads '{input}', {why}"),
            ));
        }
        Ok(v)
    }

    /// Number of leading outputs of `node` that must be bound: up to its last output that is
    /// read or is a graph output.
    fn outputs_needed(&self, node: &NodeProto) -> usize {
        node.output
            .iter()
            .rposition(|o| !o.is_empty() && self.used.contains(o))
            .map_or(0, |k| k + 1)
    }

    /// Emits (or folds) `steps`. The node's outputs are those of the last step, or, with
    /// `picked`, output `k` of step `j` for each `(j, k)`.
    fn emit_steps(
        &mut self,
        name: &str,
        node: &NodeProto,
        steps: Vec<Step>,
        picked: Option<&[(usize, usize)]>,
    ) -> Result<Vec<Value>, ImportError> {
        let op_type = node.op_type.as_str();
        let err = |msg: String| ImportError::node(name, op_type, msg);
        let mut locals: Vec<Value> = Vec::new();
        let mut step_outs: Vec<Vec<usize>> = Vec::new();
        let mut all_folded = true;
        let n_steps = steps.len();
        for (j, step) in steps.into_iter().enumerate() {
            let step_name = if n_steps == 1 {
                name.to_string()
            } else {
                format!("{name}/{j}")
            };
            let mut slots = Vec::with_capacity(step.inputs.len());
            for (n, r) in step.inputs.into_iter().enumerate() {
                slots.push(match r {
                    Ref::In(i) => match node.input.get(i).filter(|s| !s.is_empty()) {
                        Some(s) => {
                            self.value(name, op_type, s)?;
                            Slot::Named(s.clone())
                        }
                        None => return Err(err(format!("missing required input {i}"))),
                    },
                    Ref::Prev(a, k) => Slot::Local(
                        *step_outs
                            .get(a)
                            .and_then(|o| o.get(k))
                            .ok_or_else(|| err("bad lowering".into()))?,
                    ),
                    Ref::Const(t) => {
                        locals.push(Value::constant(format!("{step_name}/const{n}"), t));
                        Slot::Local(locals.len() - 1)
                    }
                    Ref::Weight(w) => {
                        locals.push(Value {
                            name: w.name.clone(),
                            dtype: w.logical_dtype(),
                            shape: w.shape.clone(),
                            konst: None,
                            source: Some(*w),
                            id: None,
                            missing: None,
                        });
                        Slot::Local(locals.len() - 1)
                    }
                });
            }
            let get = |s: &Slot| -> &Value {
                match s {
                    Slot::Named(n) => &self.values[n],
                    Slot::Local(i) => &locals[*i],
                }
            };
            let typed: Vec<(DType, &[usize])> = slots
                .iter()
                .map(|s| (get(s).dtype, get(s).shape.as_slice()))
                .collect();
            let ir_err = |e: IrError| match e {
                IrError::Shape { op, msg, .. } => err(if op == op_type {
                    msg
                } else {
                    format!("{op}: {msg}")
                }),
                other => err(other.to_string()),
            };
            let mut inferred = infer(&step_name, &step.op, &typed).map_err(ir_err)?;
            let last = j + 1 == n_steps && picked.is_none();
            if last {
                // Optional outputs nobody reads (LayerNorm's Mean / InvStdDev) are not bound.
                let required = required_outputs(&step.op, inferred.len());
                if self.outputs_needed(node) <= required {
                    inferred.truncate(required);
                }
            }
            let out_names: Vec<String> = (0..inferred.len())
                .map(|k| {
                    // A step output that is output `o` of the node takes the node output's name.
                    let node_out = match picked {
                        None if last => Some(k),
                        None => None,
                        Some(p) => p.iter().position(|&(a, b)| (a, b) == (j, k)),
                    };
                    match node_out {
                        Some(o) => output_name(node, name, o),
                        None => format!("{step_name}:{k}"),
                    }
                })
                .collect();
            let konsts: Option<Vec<&Tensor>> =
                slots.iter().map(|s| get(s).konst.as_deref()).collect();
            let mut indices = Vec::new();
            // Large results of constant inputs (an embedding row gathered for constant ids,
            // an expanded constant) stay nodes, so plans do not carry big inline tensors.
            let out_elems = inferred
                .iter()
                .map(|(_, s)| numel(s))
                .fold(0, usize::saturating_add);
            // A Cast of an 8-bit initializer to a float type is the start of a weight-only
            // dequantisation: it stays a node so canonicalisation makes the weight a
            // quantised leaf (stored at 1 byte per element) instead of an f32 constant.
            let dequant = matches!(&step.op, tessera_ir::Op::Cast(c) if c.to.is_float())
                && slots.iter().any(|s| {
                    let v = get(s);
                    v.source.is_some() && matches!(v.dtype, DType::I8 | DType::U8)
                });
            let konsts = konsts.filter(|_| out_elems <= FOLD_MAX_OUTPUT_ELEMS && !dequant);
            if let Some(konsts) = konsts {
                let mut results = tessera_kernels::eval(&step.op, &konsts)
                    .map_err(|e| err(format!("constant folding failed: {e}")))?;
                // Optional outputs that are not bound are dropped.
                if results.len() > inferred.len()
                    && required_outputs(&step.op, results.len()) <= inferred.len()
                {
                    results.truncate(inferred.len());
                }
                if results.len() != inferred.len() {
                    return Err(err(format!(
                        "folding gave {} outputs, expected {}",
                        results.len(),
                        inferred.len()
                    )));
                }
                for ((t, (d, s)), n) in results.into_iter().zip(&inferred).zip(out_names) {
                    if t.dtype != *d || t.shape != *s {
                        return Err(err(format!(
                            "folding gave {} {:?}, shape inference expects {d} {s:?}",
                            t.dtype, t.shape
                        )));
                    }
                    locals.push(Value::constant(n, t));
                    indices.push(locals.len() - 1);
                }
            } else {
                all_folded = false;
                let mut in_ids = Vec::with_capacity(slots.len());
                for s in &slots {
                    let v = match s {
                        Slot::Named(n) => self
                            .values
                            .get_mut(n)
                            .ok_or_else(|| err(format!("unknown input '{n}'")))?,
                        Slot::Local(i) => &mut locals[*i],
                    };
                    in_ids.push(materialize(&mut self.graph, &mut self.consts, v)?);
                }
                let mut out_ids = Vec::new();
                for ((d, s), n) in inferred.into_iter().zip(out_names) {
                    let id = self
                        .graph
                        .add_tensor(n.clone(), d, s.clone(), TensorKind::Activation);
                    out_ids.push(id);
                    locals.push(Value {
                        name: n,
                        dtype: d,
                        shape: s,
                        konst: None,
                        source: None,
                        id: Some(id),
                        missing: None,
                    });
                    indices.push(locals.len() - 1);
                }
                self.graph.add_node(step_name, step.op, in_ids, out_ids);
            }
            step_outs.push(indices);
        }
        if all_folded {
            self.folded += 1;
        }
        let outs: Vec<usize> = match picked {
            None => step_outs.pop().unwrap_or_default(),
            Some(p) => p
                .iter()
                .map(|&(a, k)| {
                    step_outs
                        .get(a)
                        .and_then(|o| o.get(k))
                        .copied()
                        .ok_or_else(|| err(format!("bad lowering: no output {k} of step {a}")))
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(outs.into_iter().map(|i| locals[i].clone()).collect())
    }

    /// Marks the graph outputs (materialising constant outputs as weights).
    pub fn set_outputs(&mut self, names: &[String]) -> Result<(), ImportError> {
        for n in names {
            let v = self
                .values
                .get_mut(n)
                .ok_or_else(|| ImportError::tensor(n, "graph output is never produced"))?;
            if let Some(why) = &v.missing {
                return Err(ImportError::tensor(n, format!("graph output is {why}")));
            }
            let id = materialize(&mut self.graph, &mut self.consts, v)?;
            self.graph.outputs.push(id);
        }
        Ok(())
    }
}

fn output_name(node: &NodeProto, name: &str, k: usize) -> String {
    match node.output.get(k) {
        Some(s) if !s.is_empty() => s.clone(),
        _ => format!("{name}:{k}"),
    }
}
