//! The fixed vocabulary of rule guards and right-hand-side constructors.
//!
//! A guard is checked on a match before its rule fires; it reads the e-class analysis
//! (dtype, shape, constant value, parameter-ness, attributes). A constructor builds a leaf
//! (attributes or a constant) from matched classes on the right-hand side.
use super::analysis::CanonGraph;
use super::lang::{CNode, QWEIGHT};
use egg::{Id, Subst, Var};
use tessera_ir::op::{
    GeluAttrs, NormAttrs, QuantizeAttrs, ReduceKind, SoftmaxAttrs, TransposeAttrs,
};
use tessera_ir::spec::quant_range;
use tessera_ir::{DType, Op, Tensor, TensorData};

/// A guard of the vocabulary (the names are those of the rules file).
#[derive(Debug, Clone, PartialEq)]
pub enum Guard {
    /// `const(?c, v)`: every element of the constant ?c equals v (relative 1e-6).
    Const(Var, f64),
    /// `scalar(?c)`: ?c is a constant with one element.
    Scalar(Var),
    /// `param(?v)`: ?v is computed from weights and constants only.
    Param(Var),
    /// `some_param(?a, ?b)`: ?a or ?b is computed from weights and constants only (a
    /// regrouping of a product that brings a parameter to another factor; regrouping two
    /// activations is what makes the classes of a long product grow as its subsets).
    SomeParam(Var, Var),
    /// `float(?v)`: ?v has a float element type.
    Float(Var),
    /// `int_weight(?q)`: ?q is a weight of the source graph stored as int8 or uint8.
    IntWeight(Var),
    /// `cast_noop(?to, ?x)`: the Cast attribute ?to casts to ?x's own element type.
    CastNoop(Var, Var),
    /// `cast_float(?to)`: the Cast attribute ?to casts to a float type.
    CastFloat(Var),
    /// `trailing_mean(?axes, ?x)`: the reduction attribute ?axes is a mean over the last k
    /// axes of ?x, keeping dims.
    TrailingMean(Var, Var),
    /// `norm_shape(?w, ?axes, ?x)`: ?w's shape is exactly the dims of ?x that ?axes (a
    /// trailing reduction or a norm attribute) normalises.
    NormShape(Var, Var, Var),
    /// `broadcasts_to(?s, ?q)`: ?s has ?q's rank (or fewer) and broadcasts to ?q's shape.
    BroadcastsTo(Var, Var),
    /// `inverse_perms(?p, ?q)`: the Transpose attributes ?p and ?q undo each other.
    InversePerms(Var, Var),
    /// `zero_point(?z, ?q)`: ?z is a constant of integral values, or a Cast of a weight of
    /// ?q's stored type, and broadcasts to ?q.
    ZeroPoint(Var, Var),
    /// `plain_gemm(?g)`: the Gemm attribute ?g has alpha = beta = 1 and no transposes.
    PlainGemm(Var),
    /// `gemm_trans_b(?g)`: the Gemm attribute ?g has alpha = beta = 1 and transposes B only.
    GemmTransB(Var),
    /// `stored_weight(?w)`: ?w is a weight of the source graph (or a quantised weight leaf
    /// over one) that exactly one node input reads, so it can be stored another way.
    StoredWeight(Var),
    /// `contracts(?x, ?w)`: ?w is a matrix and ?x's last dim is ?w's first (x·w contracts
    /// x's last axis).
    Contracts(Var, Var),
    /// `same_last_dim(?a, ?b)`: ?a and ?b have rank ≥ 1 and the same last dim (a row-major
    /// reshape between them keeps the last axis).
    SameLastDim(Var, Var),
    /// `last_axis_vector(?b)`: every dim of ?b but the last is 1 (a bias over the last axis).
    LastAxisVector(Var),
    /// `same_one_axis(?a, ?b)`: the reductions ?a and ?b both reduce exactly one axis, the
    /// same one, keeping dims (a softmax's max and sum).
    SameOneAxis(Var, Var),
    /// `quant_range(?c, ?u)`: the Clip attribute ?c clamps to exactly the range of the
    /// integer type (uint8, int8, int16) that the Cast attribute ?u converts to, so that
    /// Cast holds every clipped integer.
    QuantRange(Var, Var),
    /// `integral(?z)`: every value of ?z is an integer: an integral constant, a Round, a Cast
    /// to an integer type, a quantised weight of scale 1, or a sum, difference, product,
    /// negation, clip to integral bounds, Cast to float or matrix product of such values.
    Integral(Var),
    /// `one_element(?v)`: ?v has exactly one element (a constant or computed, as a dynamic
    /// quantisation scale).
    OneElement(Var),
    /// `wide_int_cast(?i)`: the Cast attribute ?i converts to int32 or int64.
    WideIntCast(Var),
    /// `unit_qweight(?b)`: ?b is a source weight stored as int8/uint8 with scale 1
    /// (MatMulInteger's B: its stored integers minus its zero point).
    UnitQweight(Var),
    /// `int_activation(?q)`: ?q is a uint8, int8 or int16 value computed from the graph's
    /// inputs (a quantised weight is a `qweight` leaf instead).
    IntActivation(Var),
    /// `requantizes(?u, ?q)`: the Quantize attribute ?u converts to ?q's integer type, so
    /// that quantising ?q's dequantised values with the same scale and zero point gives ?q.
    Requantizes(Var, Var),
}

/// Names and arities of the guards, for the parser and `tessera rules`.
pub const GUARD_NAMES: &[(&str, usize)] = &[
    ("const", 2),
    ("scalar", 1),
    ("param", 1),
    ("some_param", 2),
    ("float", 1),
    ("int_weight", 1),
    ("cast_noop", 2),
    ("cast_float", 1),
    ("trailing_mean", 2),
    ("norm_shape", 3),
    ("broadcasts_to", 2),
    ("inverse_perms", 2),
    ("zero_point", 2),
    ("plain_gemm", 1),
    ("gemm_trans_b", 1),
    ("stored_weight", 1),
    ("contracts", 2),
    ("same_last_dim", 2),
    ("last_axis_vector", 1),
    ("same_one_axis", 2),
    ("quant_range", 2),
    ("integral", 1),
    ("one_element", 1),
    ("requantizes", 2),
    ("wide_int_cast", 1),
    ("unit_qweight", 1),
    ("int_activation", 1),
];

fn class(subst: &Subst, v: &Var) -> Option<Id> {
    subst.get(*v).copied()
}

fn ty(eg: &CanonGraph, subst: &Subst, v: &Var) -> Option<(DType, Vec<usize>)> {
    eg[class(subst, v)?].data.ty.clone()
}

fn konst<'a>(eg: &'a CanonGraph, subst: &Subst, v: &Var) -> Option<&'a Tensor> {
    let k = eg[class(subst, v)?].data.konst?;
    eg.analysis.interner.consts.get(k as usize)
}

/// The attribute op bound to `v`.
pub fn attr<'a>(eg: &'a CanonGraph, subst: &Subst, v: &Var) -> Option<&'a Op> {
    let a = eg[class(subst, v)?].data.attr?;
    eg.analysis.interner.ops.get(a as usize)
}

/// A source-graph leaf tensor in `c`'s class.
fn leaf_of(eg: &CanonGraph, c: Id) -> Option<u32> {
    eg[c].nodes.iter().find_map(|n| match n {
        CNode::Leaf(t) => Some(*t),
        _ => None,
    })
}

/// The first normalised axis of `x` under `a` (a trailing keepdims mean, or a norm).
pub fn norm_axis(a: &Op, rank: usize) -> Option<usize> {
    match a {
        Op::Reduce(r) if r.kind == ReduceKind::Mean && r.keepdims && !r.axes.is_empty() => {
            let first = rank.checked_sub(r.axes.len())?;
            (r.axes.iter().copied().eq(first..rank)).then_some(first)
        }
        Op::LayerNorm(n) | Op::RmsNorm(n) if n.axis < rank => Some(n.axis),
        _ => None,
    }
}

fn all_equal(t: &Tensor, v: f64) -> bool {
    let vals = t.to_f64_vec();
    !vals.is_empty()
        && vals
            .iter()
            .all(|x| (x - v).abs() <= 1e-6 * v.abs().max(1e-3))
}

fn is_float(d: DType) -> bool {
    d.is_float()
}

impl Guard {
    /// Whether the guard holds for a match.
    pub fn check(&self, eg: &CanonGraph, subst: &Subst) -> bool {
        self.holds(eg, subst).unwrap_or(false)
    }

    fn holds(&self, eg: &CanonGraph, s: &Subst) -> Option<bool> {
        Some(match self {
            Guard::Const(v, val) => all_equal(konst(eg, s, v)?, *val),
            Guard::Scalar(v) => konst(eg, s, v)?.numel() == 1,
            Guard::Param(v) => eg[class(s, v)?].data.param,
            Guard::SomeParam(a, b) => eg[class(s, a)?].data.param || eg[class(s, b)?].data.param,
            Guard::Float(v) => is_float(ty(eg, s, v)?.0),
            Guard::IntWeight(v) => {
                let t = leaf_of(eg, class(s, v)?)?;
                let info = eg.analysis.leaves.get(&t)?;
                info.weight && matches!(info.dtype, DType::I8 | DType::U8)
            }
            Guard::CastNoop(t, x) => match attr(eg, s, t)? {
                Op::Cast(c) => c.to == ty(eg, s, x)?.0,
                _ => false,
            },
            Guard::CastFloat(t) => matches!(attr(eg, s, t)?, Op::Cast(c) if is_float(c.to)),
            Guard::TrailingMean(a, x) => {
                matches!(attr(eg, s, a)?, Op::Reduce(_))
                    && norm_axis(attr(eg, s, a)?, ty(eg, s, x)?.1.len()).is_some()
            }
            Guard::NormShape(w, a, x) => {
                let xs = ty(eg, s, x)?.1;
                let axis = norm_axis(attr(eg, s, a)?, xs.len())?;
                ty(eg, s, w)?.1 == xs[axis..]
            }
            Guard::BroadcastsTo(a, b) => {
                let (sa, sb) = (ty(eg, s, a)?.1, ty(eg, s, b)?.1);
                sa.len() <= sb.len() && tessera_ir::infer::broadcasts_to(&sa, &sb)
            }
            Guard::InversePerms(p, q) => match (attr(eg, s, p)?, attr(eg, s, q)?) {
                (Op::Transpose(p), Op::Transpose(q)) => {
                    p.perm.len() == q.perm.len()
                        && p.perm
                            .iter()
                            .enumerate()
                            .all(|(i, &pi)| q.perm.get(pi) == Some(&i))
                }
                _ => false,
            },
            Guard::PlainGemm(g) => matches!(attr(eg, s, g)?,
                Op::Gemm(a) if a.alpha == 1.0 && a.beta == 1.0 && !a.trans_a && !a.trans_b),
            Guard::GemmTransB(g) => matches!(attr(eg, s, g)?,
                Op::Gemm(a) if a.alpha == 1.0 && a.beta == 1.0 && !a.trans_a && a.trans_b),
            Guard::StoredWeight(w) => {
                let c = eg.find(class(s, w)?);
                let q = eg[c].nodes.iter().find_map(|n| match n {
                    CNode::Op { sym, children, .. } if sym.as_str() == QWEIGHT => {
                        children.first().copied()
                    }
                    _ => None,
                });
                let t = leaf_of(eg, q.unwrap_or(c))?;
                let info = eg.analysis.leaves.get(&t)?;
                info.weight && info.readers == 1
            }
            Guard::Contracts(x, w) => {
                let (sx, sw) = (ty(eg, s, x)?.1, ty(eg, s, w)?.1);
                sw.len() == 2 && sx.last() == sw.first()
            }
            Guard::SameLastDim(a, b) => {
                let (sa, sb) = (ty(eg, s, a)?.1, ty(eg, s, b)?.1);
                sa.last().is_some() && sa.last() == sb.last()
            }
            Guard::LastAxisVector(b) => {
                let sb = ty(eg, s, b)?.1;
                sb.iter().rev().skip(1).all(|&d| d == 1)
            }
            Guard::SameOneAxis(a, b) => match (attr(eg, s, a)?, attr(eg, s, b)?) {
                (Op::Reduce(p), Op::Reduce(q)) => {
                    p.keepdims && q.keepdims && p.axes.len() == 1 && p.axes == q.axes
                }
                _ => false,
            },
            Guard::QuantRange(c, u) => match (attr(eg, s, c)?, attr(eg, s, u)?) {
                (Op::Clip(c), Op::Cast(u)) => {
                    let range = quant_range(u.to)?;
                    c.min == Some(range.0 as f32) && c.max == Some(range.1 as f32)
                }
                _ => false,
            },
            Guard::IntActivation(q) => {
                quant_range(ty(eg, s, q)?.0).is_some() && !eg[class(s, q)?].data.param
            }
            Guard::Integral(z) => integral(eg, class(s, z)?, INTEGRAL_DEPTH),
            Guard::OneElement(v) => tessera_ir::numel(&ty(eg, s, v)?.1) == 1,
            Guard::Requantizes(u, q) => {
                matches!(attr(eg, s, u)?, Op::Quantize(a) if a.to == ty(eg, s, q)?.0)
            }
            Guard::WideIntCast(i) => {
                matches!(attr(eg, s, i)?, Op::Cast(c) if matches!(c.to, DType::I32 | DType::I64))
            }
            Guard::UnitQweight(b) => {
                let t = leaf_of(eg, class(s, b)?)?;
                eg.analysis.leaves.get(&t)?.unit_scale
            }
            Guard::ZeroPoint(z, q) => {
                let (qd, qs) = {
                    let t = leaf_of(eg, class(s, q)?)?;
                    let i = eg.analysis.leaves.get(&t)?;
                    (i.dtype, i.shape.clone())
                };
                let zs = ty(eg, s, z)?.1;
                if zs.len() > qs.len() || !tessera_ir::infer::broadcasts_to(&zs, &qs) {
                    return Some(false);
                }
                zero_point_source(eg, class(s, z)?, qd).is_some()
            }
        })
    }
}

/// How deep [`integral`] looks through sums and products.
const INTEGRAL_DEPTH: usize = 6;

/// Whether every value of class `c` is an integer, by its constant or by what computes it
/// (see [`Guard::Integral`]); looks `depth` ops deep.
fn integral(eg: &CanonGraph, c: Id, depth: usize) -> bool {
    let c = eg.find(c);
    if let Some(k) = eg[c].data.konst {
        if let Some(t) = eg.analysis.interner.consts.get(k as usize) {
            return t.to_f64_vec().iter().all(|v| v.fract() == 0.0);
        }
    }
    let leaf = |t: &u32| {
        eg.analysis
            .leaves
            .get(t)
            .is_some_and(|i| i.unit_scale || !i.dtype.is_float())
    };
    eg[c].nodes.iter().any(|n| match n {
        CNode::Leaf(t) => leaf(t),
        CNode::Op { sym, children, .. } => {
            let all = |cs: &[Id]| depth > 0 && cs.iter().all(|&x| integral(eg, x, depth - 1));
            let attr_op = || {
                let a = eg[*children.first()?].data.attr?;
                eg.analysis.interner.ops.get(a as usize)
            };
            match sym.as_str() {
                "round" => true,
                "add" | "sub" | "mul" | "neg" | "matmul" => all(children),
                "cast" => match attr_op() {
                    Some(Op::Cast(k)) if !k.to.is_float() => true,
                    Some(Op::Cast(_)) => all(&children[1..]),
                    _ => false,
                },
                "clip" => {
                    let bounds = match attr_op() {
                        Some(Op::Clip(k)) => [k.min, k.max]
                            .iter()
                            .all(|b| b.is_none_or(|v| v.fract() == 0.0)),
                        _ => false,
                    };
                    bounds && all(&children[1..])
                }
                _ => false,
            }
        }
        _ => false,
    })
}

/// Where a zero point comes from: a weight of the stored type behind a Cast, or a constant.
pub enum ZeroPointSource {
    /// A source-graph weight (tensor id) of the stored type.
    Weight(u32),
    /// A constant of integral values (converted to the stored type).
    Const(Tensor),
}

/// The zero point held by class `z` for weights stored as `stored`.
pub fn zero_point_source(eg: &CanonGraph, z: Id, stored: DType) -> Option<ZeroPointSource> {
    if let Some(k) = eg[z].data.konst {
        let t = eg.analysis.interner.consts.get(k as usize)?;
        let vals = t.to_f64_vec();
        let (lo, hi) = if stored == DType::I8 {
            (-128.0, 127.0)
        } else {
            (0.0, 255.0)
        };
        if vals
            .iter()
            .all(|v| v.fract() == 0.0 && (lo..=hi).contains(v))
        {
            let data = TensorData::I64(vals.iter().map(|v| *v as i64).collect());
            return Tensor::new(stored, t.shape.clone(), data)
                .ok()
                .map(ZeroPointSource::Const);
        }
        return None;
    }
    eg[z].nodes.iter().find_map(|n| match n {
        CNode::Op { sym, children, .. } if sym.as_str() == "cast" && children.len() == 2 => {
            let t = leaf_of(eg, children[1])?;
            let info = eg.analysis.leaves.get(&t)?;
            (info.weight && info.dtype == stored).then_some(ZeroPointSource::Weight(t))
        }
        _ => None,
    })
}

/// Builds a constructor's leaf from its (already instantiated) argument classes.
pub fn construct(eg: &mut CanonGraph, name: &str, args: &[Id]) -> Option<CNode> {
    let attr_of = |eg: &CanonGraph, c: Id| -> Option<Op> {
        let a = eg[c].data.attr?;
        eg.analysis.interner.ops.get(a as usize).cloned()
    };
    match name {
        "transpose_2d" => {
            let op = Op::Transpose(TransposeAttrs { perm: vec![1, 0] });
            Some(CNode::Attr(eg.analysis.interner.op(&op)))
        }
        "gelu_erf" | "gelu_tanh" => {
            let op = Op::Gelu(GeluAttrs {
                tanh_approximation: name == "gelu_tanh",
            });
            Some(CNode::Attr(eg.analysis.interner.op(&op)))
        }
        "layer_norm_attr" | "rms_norm_attr" => {
            let a = attr_of(eg, *args.first()?)?;
            // No epsilon argument: epsilon 0 (an export whose tiny epsilon was dropped).
            let eps = match args.get(1) {
                Some(e) => eg.analysis.interner.consts[eg[*e].data.konst? as usize]
                    .to_f64_vec()
                    .first()
                    .copied()? as f32,
                None => 0.0,
            };
            let Op::Reduce(r) = &a else { return None };
            let axis = *r.axes.first()?;
            let attrs = NormAttrs { axis, epsilon: eps };
            let op = if name == "layer_norm_attr" {
                Op::LayerNorm(attrs)
            } else {
                Op::RmsNorm(attrs)
            };
            Some(CNode::Attr(eg.analysis.interner.op(&op)))
        }
        "softmax_attr" | "log_softmax_attr" => {
            let Op::Reduce(r) = attr_of(eg, *args.first()?)? else {
                return None;
            };
            let [axis] = r.axes[..] else { return None };
            let op = Op::Softmax(SoftmaxAttrs {
                axis,
                log: name == "log_softmax_attr",
            });
            Some(CNode::Attr(eg.analysis.interner.op(&op)))
        }
        "quantize_attr" => {
            let Op::Cast(c) = attr_of(eg, *args.first()?)? else {
                return None;
            };
            quant_range(c.to)?;
            let op = Op::Quantize(QuantizeAttrs { to: c.to });
            Some(CNode::Attr(eg.analysis.interner.op(&op)))
        }
        "zeros_like" => {
            let (dtype, shape) = eg[*args.first()?].data.ty.clone()?;
            let n = tessera_ir::numel(&shape);
            let t = Tensor::new(dtype, shape, TensorData::F32(vec![0.0; n])).ok()?;
            eg.analysis.interner.konst(&t).map(CNode::Const)
        }
        "ones" | "zeros" => {
            let a = attr_of(eg, *args.first()?)?;
            let (dtype, shape) = eg[*args.get(1)?].data.ty.clone()?;
            let axis = norm_axis(&a, shape.len())?;
            let dims = shape[axis..].to_vec();
            let n = tessera_ir::numel(&dims);
            let v = if name == "ones" { 1.0 } else { 0.0 };
            let t = Tensor::new(dtype, dims, TensorData::F32(vec![v; n])).ok()?;
            eg.analysis.interner.konst(&t).map(CNode::Const)
        }
        _ => None,
    }
}
