//! Graph builders for the partitioner tests, in the shapes PyTorch exports produce.
#![allow(dead_code)]
use tessera_compiler::partition::{partition, PartitionOptions, Partitioned};
use tessera_ir::op::*;
use tessera_ir::plan::{CollectiveKind, Plan};
use tessera_ir::{DType, Graph, Op, TensorId, TensorKind, Weight, WeightData};

pub struct B {
    pub g: Graph,
    offset: u64,
    k: usize,
}

impl B {
    pub fn new() -> Self {
        B {
            g: Graph::new(),
            offset: 0,
            k: 0,
        }
    }
    pub fn input(&mut self, name: &str, dt: DType, shape: &[usize]) -> TensorId {
        self.g.add_input(name, dt, shape.to_vec())
    }
    pub fn weight(&mut self, name: &str, shape: &[usize]) -> TensorId {
        let length = (shape.iter().product::<usize>() * 4) as u64;
        let w = Weight {
            perm: None,
            packed_bits: None,
            name: name.into(),
            dtype: DType::F32,
            shape: shape.to_vec(),
            data: WeightData::File {
                path: "w.bin".into(),
                offset: self.offset,
                length,
            },
            quant: None,
        };
        self.offset += length;
        self.g.add_weight(w)
    }
    pub fn ops(&mut self, op: Op, inputs: &[TensorId]) -> Vec<TensorId> {
        let ins: Vec<(DType, &[usize])> = inputs
            .iter()
            .map(|t| (self.g.tensor(*t).dtype, self.g.tensor(*t).shape.as_slice()))
            .collect();
        self.k += 1;
        let name = format!("{}_{}", op.name(), self.k);
        let outs = tessera_ir::infer::infer(&name, &op, &ins).unwrap_or_else(|e| panic!("{e}"));
        let ids: Vec<TensorId> = outs
            .into_iter()
            .enumerate()
            .map(|(i, (dt, s))| {
                self.g
                    .add_tensor(format!("{name}:{i}"), dt, s, TensorKind::Activation)
            })
            .collect();
        self.g.add_node(name, op, inputs.to_vec(), ids.clone());
        ids
    }
    pub fn op(&mut self, op: Op, inputs: &[TensorId]) -> TensorId {
        self.ops(op, inputs)[0]
    }
    pub fn bin(&mut self, kind: BinaryOp, a: TensorId, b: TensorId) -> TensorId {
        self.op(Op::Binary(BinaryAttrs { kind }), &[a, b])
    }
    pub fn un(&mut self, kind: UnaryOp, a: TensorId) -> TensorId {
        self.op(Op::Unary(UnaryAttrs { kind }), &[a])
    }
    /// An inline f32 scalar constant 0.5.
    pub fn scalar(&mut self, name: &str) -> TensorId {
        self.konst(name, 0.5)
    }
    /// An inline f32 scalar constant of value `v`.
    pub fn konst(&mut self, name: &str, v: f32) -> TensorId {
        let w = Weight {
            perm: None,
            packed_bits: None,
            name: name.into(),
            dtype: DType::F32,
            shape: vec![],
            data: WeightData::Inline {
                tensor: tessera_ir::Tensor::f32(vec![], vec![v]),
            },
            quant: None,
        };
        self.g.add_weight(w)
    }
    pub fn matmul(&mut self, a: TensorId, b: TensorId) -> TensorId {
        self.op(Op::MatMul(MatMulAttrs {}), &[a, b])
    }
    /// x·W + b with W [in, out].
    pub fn linear(
        &mut self,
        name: &str,
        x: TensorId,
        din: usize,
        dout: usize,
        bias: bool,
    ) -> TensorId {
        let w = self.weight(&format!("{name}.weight"), &[din, dout]);
        let y = self.matmul(x, w);
        if bias {
            let b = self.weight(&format!("{name}.bias"), &[dout]);
            self.bin(BinaryOp::Add, y, b)
        } else {
            y
        }
    }
    pub fn layernorm(&mut self, name: &str, x: TensorId, h: usize) -> TensorId {
        self.norm(name, x, h, true)
    }
    pub fn rmsnorm(&mut self, name: &str, x: TensorId, h: usize) -> TensorId {
        self.norm(name, x, h, false)
    }
    /// Normalisation over the last axis with the scale `{name}.weight`: LayerNorm with the
    /// bias `{name}.bias` when `with_bias`, RmsNorm otherwise.
    fn norm(&mut self, name: &str, x: TensorId, h: usize, with_bias: bool) -> TensorId {
        let mut inputs = vec![x, self.weight(&format!("{name}.weight"), &[h])];
        if with_bias {
            inputs.push(self.weight(&format!("{name}.bias"), &[h]));
        }
        let attrs = NormAttrs {
            axis: self.g.tensor(x).shape.len() - 1,
            epsilon: 1e-5,
        };
        let op = if with_bias {
            Op::LayerNorm(attrs)
        } else {
            Op::RmsNorm(attrs)
        };
        self.op(op, &inputs)
    }
    /// Erf-based GELU: x·0.5·(1+erf(x/√2)).
    pub fn erf_gelu(&mut self, x: TensorId) -> TensorId {
        let c = self.scalar("sqrt2");
        let d = self.bin(BinaryOp::Div, x, c);
        let e = self.un(UnaryOp::Erf, d);
        let one = self.scalar("one");
        let a = self.bin(BinaryOp::Add, e, one);
        let m = self.bin(BinaryOp::Mul, x, a);
        let half = self.scalar("half");
        self.bin(BinaryOp::Mul, m, half)
    }
    pub fn reshape(&mut self, x: TensorId, shape: &[usize]) -> TensorId {
        self.op(
            Op::Reshape(ReshapeAttrs {
                shape: shape.to_vec(),
            }),
            &[x],
        )
    }
    pub fn transpose(&mut self, x: TensorId, perm: &[usize]) -> TensorId {
        self.op(
            Op::Transpose(TransposeAttrs {
                perm: perm.to_vec(),
            }),
            &[x],
        )
    }
    pub fn softmax(&mut self, x: TensorId) -> TensorId {
        let axis = self.g.tensor(x).shape.len() - 1;
        self.op(Op::Softmax(SoftmaxAttrs { axis, log: false }), &[x])
    }
    pub fn output(&mut self, t: TensorId) {
        self.g.outputs.push(t);
    }
}

/// MLP: Linear(H→4H) → GELU → Linear(4H→H).
pub fn mlp(bsz: usize, s: usize, h: usize, erf: bool) -> Graph {
    let mut b = B::new();
    let x = b.input("x", DType::F32, &[bsz, s, h]);
    let y = b.linear("fc1", x, h, 4 * h, true);
    let a = if erf {
        b.erf_gelu(y)
    } else {
        b.op(
            Op::Gelu(GeluAttrs {
                tanh_approximation: false,
            }),
            &[y],
        )
    };
    let z = b.linear("fc2", a, 4 * h, h, true);
    b.output(z);
    b.g
}

/// GPT-2 style blocks: pre-LN, fused QKV [H,3H]+bias+Split, causal Where mask, GELU MLP.
pub fn gpt(layers: usize, bsz: usize, s: usize, h: usize, heads: usize) -> Graph {
    gpt_masks(layers, bsz, s, h, heads, 1)
}

/// [`gpt`] whose layer `l` reads mask input `l % masks` (Gemma-2's alternating sliding and
/// full attention masks when `masks` is 2).
pub fn gpt_masks(
    layers: usize,
    bsz: usize,
    s: usize,
    h: usize,
    heads: usize,
    masks: usize,
) -> Graph {
    gpt_mlps(bsz, s, h, heads, masks, &vec![4 * h; layers])
}

/// [`gpt_masks`] with one layer per entry of `mlp`, its MLP that wide: layers of different
/// widths do not repeat.
pub fn gpt_mlps(
    bsz: usize,
    s: usize,
    h: usize,
    heads: usize,
    masks: usize,
    mlp: &[usize],
) -> Graph {
    let layers = mlp.len();
    let mut b = B::new();
    let d = h / heads;
    let x0 = b.input("x", DType::F32, &[bsz, s, h]);
    let mask_inputs: Vec<TensorId> = (0..masks)
        .map(|i| {
            let name = if i == 0 {
                "causal_mask".to_string()
            } else {
                format!("causal_mask_{i}")
            };
            b.input(&name, DType::Bool, &[1, 1, s, s])
        })
        .collect();
    let neg = b.scalar("neg_inf");
    let scale = b.scalar("inv_sqrt_d");
    let mut x = x0;
    for l in 0..layers {
        let p = format!("h.{l}");
        let n1 = b.layernorm(&format!("{p}.ln_1"), x, h);
        let qkv = b.linear(&format!("{p}.attn.c_attn"), n1, h, 3 * h, true);
        let parts = b.ops(
            Op::Split(SplitAttrs {
                axis: 2,
                sizes: vec![h, h, h],
            }),
            &[qkv],
        );
        let heads_of = |b: &mut B, t: TensorId, perm: &[usize]| {
            let r = b.reshape(t, &[bsz, s, heads, d]);
            b.transpose(r, perm)
        };
        let q = heads_of(&mut b, parts[0], &[0, 2, 1, 3]);
        let k = heads_of(&mut b, parts[1], &[0, 2, 3, 1]);
        let v = heads_of(&mut b, parts[2], &[0, 2, 1, 3]);
        let sc = b.matmul(q, k);
        let sc = b.bin(BinaryOp::Mul, sc, scale);
        let sc = b.op(Op::Where, &[mask_inputs[l % masks], sc, neg]);
        let pr = b.softmax(sc);
        let o = b.matmul(pr, v);
        let o = b.transpose(o, &[0, 2, 1, 3]);
        let o = b.reshape(o, &[bsz, s, h]);
        let o = b.linear(&format!("{p}.attn.c_proj"), o, h, h, true);
        let x1 = b.bin(BinaryOp::Add, x, o);
        let n2 = b.layernorm(&format!("{p}.ln_2"), x1, h);
        let f = b.linear(&format!("{p}.mlp.c_fc"), n2, h, mlp[l], true);
        let f = b.op(
            Op::Gelu(GeluAttrs {
                tanh_approximation: true,
            }),
            &[f],
        );
        let f = b.linear(&format!("{p}.mlp.c_proj"), f, mlp[l], h, true);
        x = b.bin(BinaryOp::Add, x1, f);
    }
    let y = b.layernorm("ln_f", x, h);
    b.output(y);
    b.g
}

/// Ops of `b`'s graph after canonicalisation with the built-in rules (inline weights given
/// as the constants they are), by name.
pub fn canon_ops(b: &B) -> std::collections::BTreeMap<String, usize> {
    canon_ops_with(b, &tessera_compiler::canon::builtin())
}

/// [`canon_ops`] with `rules` instead of the built-in ones.
pub fn canon_ops_with(
    b: &B,
    rules: &[tessera_compiler::canon::CanonRule],
) -> std::collections::BTreeMap<String, usize> {
    canon_with(b, rules).1.ops_after
}

/// `b`'s graph canonicalised with `rules`, the inline weights given as the constants they
/// are (as the importer hands its folded constants to the guards), and the report.
pub fn canon_with(
    b: &B,
    rules: &[tessera_compiler::canon::CanonRule],
) -> (Graph, tessera_compiler::canon::CanonReport) {
    tessera_compiler::canon::canonicalize(
        &b.g,
        &tessera_compiler::canon::inline_constants(&b.g),
        rules,
        &tessera_compiler::canon::CanonLimits::default(),
    )
}

pub fn count(plan: &Plan, kind: CollectiveKind) -> usize {
    plan.collectives.iter().filter(|c| c.kind == kind).count()
}

pub fn run(g: &Graph, n: usize) -> Partitioned {
    partition(g, &PartitionOptions::new(n)).unwrap_or_else(|e| panic!("partition failed: {e}"))
}

pub fn weight_bytes_of(g: &Graph) -> u64 {
    g.weight_bytes() as u64
}
