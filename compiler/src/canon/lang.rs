//! The canonicalisation language: the IR's ops as e-graph terms.
//!
//! An op is `(sym child...)`: `sym` is the op's snake-case name (`matmul`, `add`,
//! `reciprocal`, `reduce_mean`, `layer_norm`, ...), with `.k` appended for output k of a
//! multi-output op (`split.1`). Ops whose attributes the name does not fix (every op except
//! `matmul`, `where` and the attribute-free elementwise kinds) take an *attribute leaf* as
//! their first child, so patterns name it like any operand: `(transpose ?perm ?x)`,
//! `(reduce_mean ?axes ?x)`. Leaves: attributes, constants (values known to the compiler)
//! and graph tensors (inputs and weights). `qweight` is the canonical quantised-weight
//! leaf: `(qweight ?q ?scale)` or `(qweight ?q ?scale ?zero_point)`; `tweight` the
//! transposed-weight leaf `(tweight ?perm ?w)`.
use egg::{FromOp, Id, Language, Symbol};
use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;
use tessera_ir::op::{BinaryAttrs, BinaryOp, MatMulAttrs, UnaryAttrs, UnaryOp};
use tessera_ir::Op;

/// The symbol of the canonical quantised-weight leaf.
pub const QWEIGHT: &str = "qweight";

/// The symbol of the canonical transposed-weight leaf: `(tweight ?perm ?w)` is weight ?w
/// (a stored weight or a `qweight`) read through Transpose ?perm when its slices load
/// ([`tessera_ir::Weight::perm`]); no Transpose runs in the plan.
pub const TWEIGHT: &str = "tweight";

/// An e-node of the canonicalisation language.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CNode {
    /// An op (or `qweight`): name, output index, arity, children (attribute leaf first when
    /// the op has one). `arity` precedes `children` so that nodes of one discriminant are
    /// contiguous in egg's sorted class node lists.
    Op {
        /// Op name.
        sym: Symbol,
        /// Output index.
        out: u8,
        /// Number of children.
        arity: u8,
        /// Children.
        children: Vec<Id>,
    },
    /// Attribute leaf: index into [`super::analysis::Interner::ops`].
    Attr(u32),
    /// Constant leaf: index into [`super::analysis::Interner::consts`].
    Const(u32),
    /// A graph input or weight of the source graph (its tensor id).
    Leaf(u32),
}

/// Discriminant: what must be equal for a pattern node to match an e-node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CDisc {
    /// An op of this name, output and arity.
    Op(Symbol, u8, u8),
    /// A leaf (compared whole).
    Leaf(CNode),
}

impl CNode {
    /// An op node.
    pub fn op(sym: &str, out: u8, children: Vec<Id>) -> CNode {
        CNode::Op {
            sym: Symbol::from(sym),
            out,
            arity: children.len() as u8,
            children,
        }
    }
}

impl Language for CNode {
    type Discriminant = CDisc;
    fn discriminant(&self) -> CDisc {
        match self {
            CNode::Op {
                sym, out, arity, ..
            } => CDisc::Op(*sym, *out, *arity),
            leaf => CDisc::Leaf(leaf.clone()),
        }
    }
    fn matches(&self, other: &Self) -> bool {
        self.discriminant() == other.discriminant()
    }
    fn children(&self) -> &[Id] {
        match self {
            CNode::Op { children, .. } => children,
            _ => &[],
        }
    }
    fn children_mut(&mut self) -> &mut [Id] {
        match self {
            CNode::Op { children, .. } => children,
            _ => &mut [],
        }
    }
}

impl fmt::Display for CNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CNode::Op { sym, out: 0, .. } => write!(f, "{sym}"),
            CNode::Op { sym, out, .. } => write!(f, "{sym}.{out}"),
            CNode::Attr(i) => write!(f, "attr{i}"),
            CNode::Const(i) => write!(f, "const{i}"),
            CNode::Leaf(t) => write!(f, "tensor{t}"),
        }
    }
}

/// Error of parsing a pattern's op name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown op '{0}' in a pattern (see `tessera rules` for the op names)")]
pub struct UnknownOp(pub String);

impl FromOp for CNode {
    type Error = UnknownOp;
    fn from_op(op: &str, children: Vec<Id>) -> Result<Self, UnknownOp> {
        let (base, out) = match op.rsplit_once('.') {
            Some((b, k)) if k.parse::<u8>().is_ok() => (b, k.parse::<u8>().unwrap_or(0)),
            _ => (op, 0),
        };
        if !known_sym(base) {
            return Err(UnknownOp(op.to_string()));
        }
        Ok(CNode::op(base, out, children))
    }
}

/// Snake case of a CamelCase op name; runs of capitals stay one word (`GatherND` →
/// `gather_nd`).
fn snake(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut s = String::new();
    for (i, c) in chars.iter().enumerate() {
        if c.is_uppercase() && i > 0 {
            let prev_lower = chars[i - 1].is_lowercase();
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if prev_lower || (next_lower && chars[i - 1].is_uppercase()) {
                s.push('_');
            }
        }
        s.extend(c.to_lowercase());
    }
    s
}

/// The ops whose name fixes them completely (no attribute leaf).
fn attr_free_ops() -> &'static HashMap<String, Op> {
    static TABLE: OnceLock<HashMap<String, Op>> = OnceLock::new();
    TABLE.get_or_init(|| {
        use BinaryOp::*;
        use UnaryOp::*;
        let mut m = HashMap::new();
        m.insert("matmul".to_string(), Op::MatMul(MatMulAttrs {}));
        m.insert("where".to_string(), Op::Where);
        m.insert("dequantize".to_string(), Op::Dequantize);
        for kind in [
            Add,
            Sub,
            Mul,
            Div,
            Pow,
            Max,
            Min,
            Equal,
            Less,
            LessOrEqual,
            Greater,
            GreaterOrEqual,
            And,
            Or,
            Xor,
        ] {
            let op = Op::Binary(BinaryAttrs { kind });
            m.insert(sym_name(&op), op);
        }
        for kind in [
            Identity, Neg, Abs, Sqrt, Reciprocal, Exp, Log, Erf, Tanh, Sigmoid, Relu, Not, IsNaN,
            Floor, Ceil, Round, Sin, Cos, Sign, Softplus, Silu, Tan, Asin, Acos, Atan, Sinh, Cosh,
            Asinh, Acosh, Atanh,
        ] {
            let op = Op::Unary(UnaryAttrs { kind });
            m.insert(sym_name(&op), op);
        }
        m
    })
}

/// The op names that take an attribute leaf, as patterns may spell them.
const ATTR_OPS: &[&str] = &[
    "gemm",
    "einsum",
    "gelu",
    "clip",
    "softmax",
    "log_softmax",
    "layer_norm",
    "rms_norm",
    "reduce_sum",
    "reduce_mean",
    "reduce_max",
    "reduce_min",
    "reduce_prod",
    "reduce_sum_square",
    "reduce_l2",
    "reshape",
    "transpose",
    "concat",
    "split",
    "slice",
    "gather",
    "gather_nd",
    "expand",
    "cast",
    "trilu",
    "cum_sum",
    "attention",
    "mod",
    "bit_shift",
    "arg_max",
    "arg_min",
    "top_k",
    "quantize",
];

/// Names a rule's right-hand side may use to *build* a leaf from matched classes (they never
/// appear in the e-graph): `gelu_erf`, `gelu_tanh` (GELU attributes), `layer_norm_attr ?axes
/// ?eps` and `rms_norm_attr ?axes ?eps` (norm attributes from a reduction's axes and an
/// epsilon constant; without `?eps`, epsilon 0), `ones ?axes ?x` and `zeros ?axes ?x` (constants of the normalised
/// shape), `transpose_2d` (the Transpose attribute that swaps the two axes of a matrix),
/// `softmax_attr ?axes` and `log_softmax_attr ?axes` (the (Log)Softmax attribute over a
/// one-axis reduction's axis), `quantize_attr ?cast` (the Quantize attribute of a Cast
/// to a quantised type), `zeros_like ?c` (a zero constant of ?c's type and shape).
pub const CONSTRUCTORS: &[&str] = &[
    "transpose_2d",
    "gelu_erf",
    "gelu_tanh",
    "layer_norm_attr",
    "rms_norm_attr",
    "softmax_attr",
    "log_softmax_attr",
    "ones",
    "zeros",
    "quantize_attr",
    "zeros_like",
];

/// Whether `sym` names an op of the language, `qweight`, `tweight` or a constructor.
pub fn known_sym(sym: &str) -> bool {
    sym == QWEIGHT
        || sym == TWEIGHT
        || attr_free_ops().contains_key(sym)
        || ATTR_OPS.contains(&sym)
        || CONSTRUCTORS.contains(&sym)
}

/// The name of `op` in the language.
pub fn sym_name(op: &Op) -> String {
    match op {
        Op::MatMul(_) => "matmul".into(),
        _ => snake(&op.name()),
    }
}

/// Whether `op` takes an attribute leaf.
pub fn has_attr(op: &Op) -> bool {
    !attr_free_ops().contains_key(&sym_name(op))
}

/// The op an attribute-free name stands for.
pub fn attr_free_op(sym: &str) -> Option<&'static Op> {
    attr_free_ops().get(sym)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ir::op::{NormAttrs, ReduceAttrs, ReduceKind};

    #[test]
    fn names_are_snake_case_and_known() {
        let ln = Op::LayerNorm(NormAttrs {
            axis: 2,
            epsilon: 1e-5,
        });
        assert_eq!(sym_name(&ln), "layer_norm");
        let rm = Op::Reduce(ReduceAttrs {
            kind: ReduceKind::Mean,
            axes: vec![2],
            keepdims: true,
        });
        assert_eq!(sym_name(&rm), "reduce_mean");
        assert!(has_attr(&ln) && has_attr(&rm));
        assert_eq!(snake("GatherND"), "gather_nd");
        for s in ["add", "reciprocal", "silu", "matmul", "where", "qweight"] {
            assert!(known_sym(s), "{s}");
        }
        assert!(!has_attr(&Op::MatMul(MatMulAttrs {})));
        assert_eq!(
            CNode::from_op("split.1", vec![Id::from(0usize), Id::from(1usize)]),
            Ok(CNode::op(
                "split",
                1,
                vec![Id::from(0usize), Id::from(1usize)]
            ))
        );
        assert!(CNode::from_op("frobnicate", vec![]).is_err());
    }
}
