//! Generic elementwise fusion: a tree of elementwise ops whose intermediates are read once
//! becomes one [`FusedOp::Elementwise`] program, whatever the ops are (keyed on the op
//! kinds, not on an export's idiom: a GELU or SiLU spelled out, a rotary's multiply-adds,
//! a mask built with Cast and Where, a residual chain).
//!
//! Fusable ops (each f32 in and out, exactly: half types round on every op, which the program
//! does not model): float unary ops, GELU, Clip, HardSigmoid/HardSwish, Dequantize, arithmetic
//! binary ops (Add, Sub, Mul, Div, Pow, Max, Min, Mod) with numpy broadcasting, Where (its
//! condition read as a bool input), Cast to f32 (of an f32 value: nothing to do; of a bool or
//! integer value: the value is read as an input and converted as Cast converts it; of a Cast of
//! an f32 value to int8/uint8/int16/int32 read by nothing else: both in one instruction, the
//! integer never stored; likewise a Dequantize of a Quantize with the same scale and zero
//! point, as one instruction). A tree may end in a Quantize of an f32 value: the program's
//! result is then the integer tensor.
use super::{Fused, Program};
use std::collections::HashMap;
use tessera_ir::op::{BinaryOp, UnaryOp};
use tessera_ir::plan::ValueId;
use tessera_ir::{DType, Op};
use tessera_kernels::{ElementwiseProgram, EwInstr, FusedOp};

/// An instruction of the tree with its operands still to be emitted.
enum Node {
    /// A one-operand op (operand: input 0).
    Unary(fn(usize) -> EwInstr),
    Binary(BinaryOp),
    Where,
    /// Cast of an f32 value to f32: its operand's register.
    Alias,
    /// Cast of a bool or integer value to f32.
    CastLeaf,
    /// Clip to the bounds.
    Clip(Option<f32>, Option<f32>),
    /// HardSigmoid (alpha, beta), times x when HardSwish.
    HardSigmoid(f32, f32, bool),
    /// Dequantize (operands: Q, an integer read as a cast input, Scale, ZeroPoint).
    Dequantize,
    /// Dequantize of step `.2`'s Quantize to the range `[.0, .1]`, read by nothing else:
    /// the integer is never stored (one instruction when the scales and zero points are
    /// equal, else the quantisation and then the dequantisation).
    Requantize(i32, i32, usize),
    /// Cast to f32 of step `.1`'s Cast of an f32 value to the integer dtype `.0`, read by
    /// nothing else: the integer is never stored (a QuantizeLinear / DequantizeLinear pair,
    /// MatMulInteger's int32 result cast back).
    CastThrough(DType, usize),
}

/// The tree being built.
struct Tree {
    instrs: Vec<EwInstr>,
    inputs: Vec<ValueId>,
    /// Input index of each leaf value, per way of reading it (0 f32, 1 cast, 2 condition).
    leaf: HashMap<(ValueId, u8), usize>,
    steps: Vec<usize>,
}

impl Tree {
    fn input(&mut self, v: ValueId, how: u8) -> usize {
        let n = self.inputs.len();
        *self.leaf.entry((v, how)).or_insert_with(|| {
            self.inputs.push(v);
            n
        })
    }

    fn push(&mut self, i: EwInstr) -> usize {
        self.instrs.push(i);
        self.instrs.len() - 1
    }
}

impl Program<'_> {
    fn is_exact_f32(&self, v: ValueId) -> bool {
        self.plan.values[v.index()].dtype == DType::F32
    }

    fn dtype(&self, v: ValueId) -> DType {
        self.plan.values[v.index()].dtype
    }

    /// How step `s` joins an elementwise tree, if it can.
    fn ew_node(&self, s: usize) -> Option<Node> {
        let op = self.op(s)?;
        if !self.is_exact_f32(self.out(s)) {
            return None;
        }
        let ins = self.ins(s);
        let f32_in = |i: usize| ins.get(i).is_some_and(|&v| self.is_exact_f32(v));
        let node = match op {
            Op::Unary(a) => {
                if matches!(a.kind, UnaryOp::Not | UnaryOp::IsNaN) || !f32_in(0) {
                    return None;
                }
                // A non-capturing closure per kind (fn pointers cannot capture).
                macro_rules! un {
                    ($($k:ident),*) => {
                        match a.kind {
                            $(UnaryOp::$k => Node::Unary(|x| EwInstr::Unary(UnaryOp::$k, x)),)*
                            _ => return None,
                        }
                    };
                }
                un!(
                    Identity, Neg, Abs, Sqrt, Reciprocal, Exp, Log, Erf, Tanh, Sigmoid, Relu,
                    Floor, Ceil, Round, Sin, Cos, Sign, Softplus, Silu, Tan, Asin, Acos, Atan,
                    Sinh, Cosh, Asinh, Acosh, Atanh
                )
            }
            Op::Gelu(a) if f32_in(0) => match a.tanh_approximation {
                true => Node::Unary(|x| EwInstr::Gelu { tanh: true, x }),
                false => Node::Unary(|x| EwInstr::Gelu { tanh: false, x }),
            },
            Op::Binary(a) => {
                let arith = matches!(
                    a.kind,
                    BinaryOp::Add
                        | BinaryOp::Sub
                        | BinaryOp::Mul
                        | BinaryOp::Div
                        | BinaryOp::Pow
                        | BinaryOp::Max
                        | BinaryOp::Min
                        | BinaryOp::Mod { .. }
                );
                let exponent_ok = f32_in(1) || a.kind == BinaryOp::Pow && self.int_like(ins[1]);
                if !arith || !f32_in(0) || !exponent_ok || ins.len() != 2 {
                    return None;
                }
                Node::Binary(a.kind)
            }
            Op::Where if ins.len() == 3 && self.dtype(ins[0]) == DType::Bool => {
                if !f32_in(1) || !f32_in(2) {
                    return None;
                }
                Node::Where
            }
            Op::Clip(c) if f32_in(0) && ins.len() == 1 => Node::Clip(c.min, c.max),
            Op::HardSigmoid(h) if f32_in(0) => Node::HardSigmoid(h.alpha, h.beta, h.swish),
            Op::Dequantize if ins.len() == 3 && f32_in(1) && f32_in(2) => {
                let pair = self.sole_producer(ins[0], s).and_then(|p| {
                    let (_, (lo, hi)) = self.f32_quantize(p)?;
                    Some(Node::Requantize(lo, hi, p))
                });
                match pair {
                    Some(node) => node,
                    None if self.int_like(ins[0]) => Node::Dequantize,
                    None => return None,
                }
            }
            Op::Cast(a) if a.to == DType::F32 && ins.len() == 1 => {
                let narrowing = self
                    .sole_producer(ins[0], s)
                    .and_then(|p| match self.op(p)? {
                        Op::Cast(c)
                            if tessera_kernels::cast_through_supported(c.to)
                                && self.ins(p).len() == 1
                                && self.is_exact_f32(self.ins(p)[0]) =>
                        {
                            Some((c.to, p))
                        }
                        _ => None,
                    });
                if f32_in(0) {
                    Node::Alias
                } else if let Some((to, p)) = narrowing {
                    Node::CastThrough(to, p)
                } else if self.int_like(ins[0]) {
                    Node::CastLeaf
                } else {
                    return None;
                }
            }
            _ => return None,
        };
        Some(node)
    }

    /// Bool or integer (stored as bool or i64).
    fn int_like(&self, v: ValueId) -> bool {
        let d = self.dtype(v);
        d == DType::Bool || d.is_int()
    }

    /// Emits value `v`, read by step `by`: the tree of its producer when that step fuses and
    /// `v` is read by nothing else, else an f32 input. None when `v` cannot be read.
    fn ew_value(&self, t: &mut Tree, v: ValueId, by: usize) -> Option<usize> {
        if let Some(p) = self.internal(v, by) {
            if self.is_exact_f32(v) {
                if let Some(node) = self.ew_node(p) {
                    return self.ew_step(t, p, node);
                }
            }
        }
        if !self.is_exact_f32(v) {
            return None;
        }
        let i = t.input(v, 0);
        Some(t.push(EwInstr::Load(i)))
    }

    /// Emits step `s` (whose node is `node`) and its operands; returns its register.
    fn ew_step(&self, t: &mut Tree, s: usize, node: Node) -> Option<usize> {
        t.steps.push(s);
        let ins = self.ins(s);
        let reg = match node {
            Node::Unary(make) => {
                let x = self.ew_value(t, ins[0], s)?;
                t.push(make(x))
            }
            Node::Binary(kind) => {
                let a = self.ew_value(t, ins[0], s)?;
                let b = if self.is_exact_f32(ins[1]) {
                    self.ew_value(t, ins[1], s)?
                } else {
                    // Pow's integer exponent.
                    let i = t.input(ins[1], 1);
                    t.push(EwInstr::LoadCast(i))
                };
                t.push(EwInstr::Binary(kind, a, b))
            }
            Node::Where => {
                let cond = t.input(ins[0], 2);
                let a = self.ew_value(t, ins[1], s)?;
                let b = self.ew_value(t, ins[2], s)?;
                t.push(EwInstr::Where { cond, a, b })
            }
            Node::Alias => self.ew_value(t, ins[0], s)?,
            Node::CastLeaf => {
                let i = t.input(ins[0], 1);
                t.push(EwInstr::LoadCast(i))
            }
            Node::Clip(min, max) => {
                let x = self.ew_value(t, ins[0], s)?;
                t.push(EwInstr::Clip { min, max, x })
            }
            Node::HardSigmoid(alpha, beta, swish) => {
                let x = self.ew_value(t, ins[0], s)?;
                t.push(EwInstr::HardSigmoid {
                    alpha,
                    beta,
                    swish,
                    x,
                })
            }
            Node::Dequantize => {
                let i = t.input(ins[0], 1);
                let q = t.push(EwInstr::LoadCast(i));
                self.dequantized(t, q, s)?
            }
            Node::Requantize(qmin, qmax, p) => {
                let (lo, hi) = (qmin as f32, qmax as f32);
                let qins = self.ins(p);
                let (x, qs, qz) = self.quantize_operands(t, p)?;
                if self.same_value(qins[1], ins[1]) && self.same_value(qins[2], ins[2]) {
                    t.push(EwInstr::FakeQuant {
                        lo,
                        hi,
                        x,
                        s: qs,
                        z: qz,
                    })
                } else {
                    let q = t.push(EwInstr::Quantize {
                        lo,
                        hi,
                        x,
                        s: qs,
                        z: qz,
                    });
                    self.dequantized(t, q, s)?
                }
            }
            Node::CastThrough(to, p) => {
                t.steps.push(p);
                let x = self.ew_value(t, self.ins(p)[0], p)?;
                t.push(EwInstr::CastThrough { to, x })
            }
        };
        Some(reg)
    }

    /// When step `p` is a Quantize of f32 operands (X, Scale, ZeroPoint) to an integer type
    /// the programs hold: that type and its range.
    fn f32_quantize(&self, p: usize) -> Option<(DType, (i32, i32))> {
        match self.op(p)? {
            Op::Quantize(q)
                if self.ins(p).len() == 3 && self.ins(p).iter().all(|&v| self.is_exact_f32(v)) =>
            {
                Some((q.to, tessera_ir::spec::quant_range(q.to)?))
            }
            _ => None,
        }
    }

    /// Joins Quantize step `p` to the tree and emits its X, Scale and ZeroPoint registers.
    fn quantize_operands(&self, t: &mut Tree, p: usize) -> Option<(usize, usize, usize)> {
        t.steps.push(p);
        let ins = self.ins(p);
        Some((
            self.ew_value(t, ins[0], p)?,
            self.ew_value(t, ins[1], p)?,
            self.ew_value(t, ins[2], p)?,
        ))
    }

    /// `(q − zero point) · scale` of Dequantize step `s`, `q` the register of its integers.
    fn dequantized(&self, t: &mut Tree, q: usize, s: usize) -> Option<usize> {
        let ins = self.ins(s);
        let scale = self.ew_value(t, ins[1], s)?;
        let z = self.ew_value(t, ins[2], s)?;
        let d = t.push(EwInstr::Binary(BinaryOp::Sub, q, z));
        Some(t.push(EwInstr::Binary(BinaryOp::Mul, d, scale)))
    }

    /// The elementwise tree rooted at step `root`, when it has at least two steps.
    pub(super) fn elementwise(&self, root: usize) -> Option<Fused> {
        let mut t = Tree {
            instrs: Vec::new(),
            inputs: Vec::new(),
            leaf: HashMap::new(),
            steps: Vec::new(),
        };
        // A Quantize of an f32 tree ends the program with the integer result (a QDQ model's
        // activation quantised before a data movement).
        let (reg, out_dtype) = match self.f32_quantize(root) {
            Some((to, (lo, hi))) => {
                let (x, s, z) = self.quantize_operands(&mut t, root)?;
                let (lo, hi) = (lo as f32, hi as f32);
                (t.push(EwInstr::Quantize { lo, hi, x, s, z }), to)
            }
            None => {
                let node = self.ew_node(root)?;
                (self.ew_step(&mut t, root, node)?, DType::F32)
            }
        };
        if t.steps.len() < 2 {
            return None;
        }
        if reg + 1 != t.instrs.len() {
            // The root aliased an earlier register (a Cast to f32 at the root).
            let x = reg;
            t.instrs.push(EwInstr::Unary(UnaryOp::Identity, x));
        }
        t.steps.sort_unstable();
        Some(Fused {
            op: FusedOp::Elementwise(ElementwiseProgram {
                out_shape: self.shape(self.out(root)).to_vec(),
                instrs: t.instrs,
                out_dtype,
            }),
            inputs: t.inputs,
            outputs: vec![self.out(root)],
            steps: t.steps,
        })
    }
}
