//! Shape and dtype inference for every [`Op`].
//!
//! Used by the importer (every imported node), the partitioner (local shapes) and the
//! runtime (input checks). Errors name the node and the op and give the offending shapes.
//!
//! The rules follow ONNX (numpy broadcasting for elementwise ops and `Where`, numpy matmul
//! for `MatMul`, ...) applied to the post-fold attributes of [`crate::op`].
mod attention;
mod shape_ops;
#[cfg(test)]
mod tests;

use crate::op::{BinaryOp, UnaryOp};
use crate::{DType, IrError, Op};

pub use shape_ops::normalize_slice;

/// One inferred output: its dtype and static shape.
pub type TypedShape = (DType, Vec<usize>);

/// Infers output dtypes and shapes of `op` from its inputs' dtypes and shapes.
///
/// Returns every output the op can produce, optional ones included: [`Op::LayerNorm`] gives
/// Y, Mean and InvStdDev (a node may bind only Y; see [`infer_node`]). `node` names the node
/// in errors.
pub fn infer(
    node: &str,
    op: &Op,
    inputs: &[(DType, &[usize])],
) -> Result<Vec<TypedShape>, IrError> {
    let cx = Cx { node, op, inputs };
    match op {
        Op::MatMul(_) => cx.matmul().map(|o| vec![o]),
        Op::Gemm(a) => cx.gemm(a.trans_a, a.trans_b).map(|o| vec![o]),
        Op::Einsum(a) => cx.einsum(&a.equation).map(|o| vec![o]),
        Op::Binary(a) => cx.binary(a.kind).map(|o| vec![o]),
        Op::Unary(a) => cx.unary(a.kind).map(|o| vec![o]),
        Op::Gelu(_) => {
            cx.arity(1, 1)?;
            cx.float_input(0)?;
            Ok(vec![cx.input(0)])
        }
        Op::Clip(_) => {
            cx.arity(1, 1)?;
            if cx.inputs[0].0 == DType::Bool {
                return Err(cx.err("input 0 must be numeric, got bool"));
            }
            Ok(vec![cx.input(0)])
        }
        Op::Softmax(a) => {
            cx.arity(1, 1)?;
            cx.float_input(0)?;
            cx.axis_in_range(a.axis, cx.inputs[0].1.len())?;
            Ok(vec![cx.input(0)])
        }
        Op::LayerNorm(a) => {
            let y = cx.norm(a.axis, 3)?;
            // Mean and InvStdDev: X's shape with the normalised axes set to 1, in the
            // stash type (f32).
            let mut stat = y.1.clone();
            stat[a.axis..].fill(1);
            Ok(vec![y, (DType::F32, stat.clone()), (DType::F32, stat)])
        }
        Op::RmsNorm(a) => cx.norm(a.axis, 2).map(|o| vec![o]),
        Op::Reduce(a) => cx.reduce(&a.axes, a.keepdims).map(|o| vec![o]),
        Op::Reshape(a) => cx.reshape(&a.shape).map(|o| vec![o]),
        Op::Transpose(a) => cx.transpose(&a.perm).map(|o| vec![o]),
        Op::Concat(a) => cx.concat(a.axis).map(|o| vec![o]),
        Op::Split(a) => cx.split(a.axis, &a.sizes),
        Op::Slice(a) => cx.slice(a).map(|o| vec![o]),
        Op::Gather(a) => cx.gather(a.axis).map(|o| vec![o]),
        Op::GatherNd(a) => cx.gather_nd(a.batch_dims).map(|o| vec![o]),
        Op::Expand(a) => cx.expand(&a.shape).map(|o| vec![o]),
        Op::Where => cx.where_().map(|o| vec![o]),
        Op::Cast(a) => {
            cx.arity(1, 1)?;
            Ok(vec![(a.to, cx.inputs[0].1.to_vec())])
        }
        Op::Trilu(_) => {
            cx.arity(1, 1)?;
            if cx.inputs[0].1.len() < 2 {
                return Err(cx.err(format!(
                    "input must have rank >= 2, got shape {:?}",
                    cx.inputs[0].1
                )));
            }
            Ok(vec![cx.input(0)])
        }
        Op::Attention(a) => cx.attention(a),
        Op::CumSum(a) => {
            cx.arity(1, 1)?;
            cx.axis_in_range(a.axis, cx.inputs[0].1.len())?;
            Ok(vec![cx.input(0)])
        }
    }
}

/// How many outputs a node of `op` must bind when `produced` is the number [`infer`] gives:
/// all of them, except [`Op::LayerNorm`] whose Mean and InvStdDev are optional (a node binds
/// 1 or 3 outputs).
pub fn required_outputs(op: &Op, produced: usize) -> usize {
    match op {
        Op::LayerNorm(_) => 1,
        _ => produced,
    }
}

/// Infers the outputs of a node of `op` that binds `n_outputs` outputs: the first
/// `n_outputs` of [`infer`], after checking that a node may bind that many (see
/// [`required_outputs`]).
pub fn infer_node(
    node: &str,
    op: &Op,
    inputs: &[(DType, &[usize])],
    n_outputs: usize,
) -> Result<Vec<TypedShape>, IrError> {
    let mut all = infer(node, op, inputs)?;
    let required = required_outputs(op, all.len());
    if n_outputs != all.len() && n_outputs != required {
        let allowed = if required == all.len() {
            format!("{required}")
        } else {
            format!("{required} or {}", all.len())
        };
        return Err(IrError::Shape {
            node: node.into(),
            op: op.name(),
            msg: format!("binds {n_outputs} outputs, expected {allowed}"),
        });
    }
    all.truncate(n_outputs);
    Ok(all)
}

/// numpy broadcasting of two shapes; `None` when they are incompatible.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for (i, o) in out.iter_mut().enumerate() {
        // Right-align: axis i of the output is axis i - (rank - len) of each operand.
        let da = (i + a.len()).checked_sub(rank).map_or(1, |j| a[j]);
        let db = (i + b.len()).checked_sub(rank).map_or(1, |j| b[j]);
        *o = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// True when `from` broadcasts (numpy rules) to exactly `to`.
pub fn broadcasts_to(from: &[usize], to: &[usize]) -> bool {
    broadcast_shapes(from, to).is_some_and(|s| s == to)
}

/// Inference context: the node being checked and its inputs.
pub(crate) struct Cx<'a> {
    pub(crate) node: &'a str,
    pub(crate) op: &'a Op,
    pub(crate) inputs: &'a [(DType, &'a [usize])],
}

impl Cx<'_> {
    /// A shape error for this node.
    pub(crate) fn err(&self, msg: impl Into<String>) -> IrError {
        IrError::Shape {
            node: self.node.into(),
            op: self.op.name(),
            msg: msg.into(),
        }
    }

    /// Checks the number of inputs.
    pub(crate) fn arity(&self, min: usize, max: usize) -> Result<(), IrError> {
        let n = self.inputs.len();
        if n < min || n > max {
            let want = if min == max {
                format!("{min}")
            } else {
                format!("{min}..={max}")
            };
            return Err(self.err(format!("expects {want} inputs, got {n}")));
        }
        Ok(())
    }

    /// Input `i` as an owned (dtype, shape).
    pub(crate) fn input(&self, i: usize) -> TypedShape {
        (self.inputs[i].0, self.inputs[i].1.to_vec())
    }

    pub(crate) fn axis_in_range(&self, axis: usize, rank: usize) -> Result<(), IrError> {
        if axis >= rank {
            return Err(self.err(format!("axis {axis} out of range for rank {rank}")));
        }
        Ok(())
    }

    fn float_input(&self, i: usize) -> Result<(), IrError> {
        if !self.inputs[i].0.is_float() {
            return Err(self.err(format!(
                "input {i} must be a float tensor, got {}",
                self.inputs[i].0
            )));
        }
        Ok(())
    }

    /// All inputs in `idx` share one dtype.
    pub(crate) fn same_dtype(&self, idx: &[usize]) -> Result<DType, IrError> {
        let d = self.inputs[idx[0]].0;
        for &i in &idx[1..] {
            if self.inputs[i].0 != d {
                return Err(self.err(format!(
                    "input dtypes differ: {} vs {}",
                    d, self.inputs[i].0
                )));
            }
        }
        Ok(d)
    }

    fn binary(&self, kind: BinaryOp) -> Result<TypedShape, IrError> {
        self.arity(2, 2)?;
        let d = self.same_dtype(&[0, 1])?;
        let (a, b) = (self.inputs[0].1, self.inputs[1].1);
        let shape = broadcast_shapes(a, b)
            .ok_or_else(|| self.err(format!("shapes {a:?} and {b:?} do not broadcast")))?;
        use BinaryOp::*;
        let out = match kind {
            And | Or | Xor => {
                if d != DType::Bool {
                    return Err(self.err(format!("logical op needs bool inputs, got {d}")));
                }
                DType::Bool
            }
            Equal | Less | LessOrEqual | Greater | GreaterOrEqual => DType::Bool,
            Add | Sub | Mul | Div | Pow | Max | Min | Mod { .. } => {
                if d == DType::Bool {
                    return Err(self.err("arithmetic on bool inputs"));
                }
                d
            }
        };
        Ok((out, shape))
    }

    fn unary(&self, kind: UnaryOp) -> Result<TypedShape, IrError> {
        self.arity(1, 1)?;
        let (d, s) = self.input(0);
        use UnaryOp::*;
        match kind {
            Not => {
                if d != DType::Bool {
                    return Err(self.err(format!("Not needs a bool input, got {d}")));
                }
                Ok((d, s))
            }
            IsNaN => {
                self.float_input(0)?;
                Ok((DType::Bool, s))
            }
            Identity => Ok((d, s)),
            Neg | Abs | Sign => {
                if d == DType::Bool {
                    return Err(self.err("numeric op on a bool input"));
                }
                Ok((d, s))
            }
            Sqrt | Reciprocal | Exp | Log | Erf | Tanh | Sigmoid | Relu | Floor | Ceil | Round
            | Sin | Cos | Softplus | Silu => {
                if kind == Relu && d.is_int() {
                    return Ok((d, s));
                }
                self.float_input(0)?;
                Ok((d, s))
            }
        }
    }

    fn matmul(&self) -> Result<TypedShape, IrError> {
        self.arity(2, 2)?;
        let d = self.same_dtype(&[0, 1])?;
        let (a, b) = (self.inputs[0].1, self.inputs[1].1);
        if a.is_empty() || b.is_empty() {
            return Err(self.err(format!("operands must have rank >= 1, got {a:?} · {b:?}")));
        }
        // numpy: a 1-D A is a row vector (prepend 1), a 1-D B a column vector (append 1);
        // the added axis is removed from the result.
        let a2: Vec<usize> = if a.len() == 1 {
            vec![1, a[0]]
        } else {
            a.to_vec()
        };
        let b2: Vec<usize> = if b.len() == 1 {
            vec![b[0], 1]
        } else {
            b.to_vec()
        };
        let (m, ka) = (a2[a2.len() - 2], a2[a2.len() - 1]);
        let (kb, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
        if ka != kb {
            return Err(self.err(format!(
                "inner dimensions differ: {a:?} · {b:?} ({ka} vs {kb})"
            )));
        }
        let batch = broadcast_shapes(&a2[..a2.len() - 2], &b2[..b2.len() - 2])
            .ok_or_else(|| self.err(format!("batch dimensions do not broadcast: {a:?} · {b:?}")))?;
        let mut out = batch;
        if a.len() > 1 {
            out.push(m);
        }
        if b.len() > 1 {
            out.push(n);
        }
        Ok((d, out))
    }

    fn gemm(&self, trans_a: bool, trans_b: bool) -> Result<TypedShape, IrError> {
        self.arity(2, 3)?;
        let d = self.same_dtype(&[0, 1])?;
        let (a, b) = (self.inputs[0].1, self.inputs[1].1);
        if a.len() != 2 || b.len() != 2 {
            return Err(self.err(format!("A and B must be 2-D, got {a:?} and {b:?}")));
        }
        let (m, ka) = if trans_a { (a[1], a[0]) } else { (a[0], a[1]) };
        let (kb, n) = if trans_b { (b[1], b[0]) } else { (b[0], b[1]) };
        if ka != kb {
            return Err(self.err(format!(
                "inner dimensions differ: {a:?} (trans_a={trans_a}) · {b:?} (trans_b={trans_b})"
            )));
        }
        if let Some((dc, c)) = self.inputs.get(2) {
            if *dc != d {
                return Err(self.err(format!("C dtype {dc} differs from A dtype {d}")));
            }
            if !broadcasts_to(c, &[m, n]) {
                return Err(self.err(format!("C shape {c:?} does not broadcast to [{m}, {n}]")));
            }
        }
        Ok((d, vec![m, n]))
    }

    fn norm(&self, axis: usize, max_inputs: usize) -> Result<TypedShape, IrError> {
        self.arity(2, max_inputs)?;
        self.float_input(0)?;
        let x = self.inputs[0].1;
        self.axis_in_range(axis, x.len())?;
        let normalized = &x[axis..];
        for i in 1..self.inputs.len() {
            let p = self.inputs[i].1;
            if !broadcasts_to(p, normalized) {
                return Err(self.err(format!(
                    "input {i} shape {p:?} does not broadcast to the normalised shape {normalized:?} of {x:?}"
                )));
            }
        }
        Ok(self.input(0))
    }

    fn reduce(&self, axes: &[usize], keepdims: bool) -> Result<TypedShape, IrError> {
        self.arity(1, 1)?;
        let (d, x) = self.input(0);
        let mut seen = vec![false; x.len()];
        for &a in axes {
            self.axis_in_range(a, x.len())?;
            if std::mem::replace(&mut seen[a], true) {
                return Err(self.err(format!("axis {a} repeated in {axes:?}")));
            }
        }
        let out = x
            .iter()
            .enumerate()
            .filter_map(|(i, &e)| match (seen[i], keepdims) {
                (false, _) => Some(e),
                (true, true) => Some(1),
                (true, false) => None,
            })
            .collect();
        Ok((d, out))
    }

    fn where_(&self) -> Result<TypedShape, IrError> {
        self.arity(3, 3)?;
        if self.inputs[0].0 != DType::Bool {
            return Err(self.err(format!("condition must be bool, got {}", self.inputs[0].0)));
        }
        let d = self.same_dtype(&[1, 2])?;
        let (c, x, y) = (self.inputs[0].1, self.inputs[1].1, self.inputs[2].1);
        let s = broadcast_shapes(c, x)
            .and_then(|s| broadcast_shapes(&s, y))
            .ok_or_else(|| self.err(format!("shapes {c:?}, {x:?}, {y:?} do not broadcast")))?;
        Ok((d, s))
    }

    fn einsum(&self, equation: &str) -> Result<TypedShape, IrError> {
        self.arity(1, usize::MAX)?;
        let d = self.same_dtype(&(0..self.inputs.len()).collect::<Vec<_>>())?;
        let (lhs, rhs) = equation.split_once("->").ok_or_else(|| {
            self.err(format!("equation '{equation}' has no explicit '->' output"))
        })?;
        if equation.contains("...") {
            return Err(self.err(format!(
                "equation '{equation}': ellipsis must be expanded on import"
            )));
        }
        let terms: Vec<&str> = lhs.split(',').collect();
        if terms.len() != self.inputs.len() {
            return Err(self.err(format!(
                "equation '{equation}' has {} operands, got {} inputs",
                terms.len(),
                self.inputs.len()
            )));
        }
        let mut sizes: std::collections::BTreeMap<char, usize> = Default::default();
        for (t, (_, shape)) in terms.iter().zip(self.inputs) {
            if t.chars().count() != shape.len() {
                return Err(self.err(format!("term '{t}' does not match operand shape {shape:?}")));
            }
            for (c, &e) in t.chars().zip(shape.iter()) {
                if !c.is_ascii_alphabetic() {
                    return Err(self.err(format!("equation '{equation}': bad label '{c}'")));
                }
                match sizes.get(&c) {
                    Some(&prev) if prev != e && prev != 1 && e != 1 => {
                        return Err(self.err(format!(
                            "label '{c}' has sizes {prev} and {e} in '{equation}'"
                        )))
                    }
                    Some(&prev) if prev >= e => {}
                    _ => {
                        sizes.insert(c, e);
                    }
                }
            }
        }
        let out = rhs
            .chars()
            .map(|c| {
                sizes.get(&c).copied().ok_or_else(|| {
                    self.err(format!("output label '{c}' not in inputs of '{equation}'"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((d, out))
    }
}
