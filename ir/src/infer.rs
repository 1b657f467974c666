//! Shape and dtype inference for every [`Op`].
//!
//! Used by the importer (every imported node), the partitioner (local shapes) and the
//! runtime (input checks). Errors name the node and the op and give the offending shapes.
//!
//! The rules follow ONNX (numpy broadcasting for elementwise ops and `Where`, numpy matmul
//! for `MatMul`, ...) applied to the post-fold attributes of [`crate::op`].
#[cfg(test)]
mod tests;

use crate::{check_tensor_size, DType, IrError, Op};

pub use crate::spec::normalize_slice;

/// One inferred output: its dtype and static shape.
pub type TypedShape = (DType, Vec<usize>);

/// Infers output dtypes and shapes of `op` from its inputs' dtypes and shapes.
///
/// Returns every output the op can produce, optional ones included: [`Op::LayerNorm`] gives
/// Y, Mean and InvStdDev (a node may bind only Y; see [`infer_node`]). `node` names the node
/// in errors. The rules of each op live in its family's spec ([`crate::spec`]). An output
/// whose size overflows or exceeds [`crate::MAX_TENSOR_BYTES`] is an error.
pub fn infer(
    node: &str,
    op: &Op,
    inputs: &[(DType, &[usize])],
) -> Result<Vec<TypedShape>, IrError> {
    let cx = InferCx { node, op, inputs };
    let spec = op.spec();
    spec.arity().check(inputs.len()).map_err(|m| cx.err(m))?;
    let outs = spec.infer(&cx)?;
    // No output may overflow its element count or exceed the per-tensor cap: callers
    // allocate (fold, run) what inference returns.
    for (k, (dtype, shape)) in outs.iter().enumerate() {
        check_tensor_size(shape, *dtype).map_err(|e| cx.err(format!("output {k}: {e}")))?;
    }
    Ok(outs)
}

/// How many outputs a node of `op` must bind when `produced` is the number [`infer`] gives:
/// all of them, except [`Op::LayerNorm`] whose Mean and InvStdDev are optional (a node binds
/// 1 or 3 outputs).
pub fn required_outputs(op: &Op, produced: usize) -> usize {
    op.spec().required_outputs(produced)
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

/// Inference context handed to [`crate::spec::OpSpec::infer`]: the node being checked and
/// its inputs, with the checks every family shares. Errors name the node and the op.
pub struct InferCx<'a> {
    pub(crate) node: &'a str,
    pub(crate) op: &'a Op,
    pub(crate) inputs: &'a [(DType, &'a [usize])],
}

impl InferCx<'_> {
    /// A shape error for this node.
    pub(crate) fn err(&self, msg: impl Into<String>) -> IrError {
        IrError::Shape {
            node: self.node.into(),
            op: self.op.name(),
            msg: msg.into(),
        }
    }

    /// Input `i` as an owned (dtype, shape).
    pub(crate) fn input(&self, i: usize) -> TypedShape {
        (self.inputs[i].0, self.inputs[i].1.to_vec())
    }

    /// `axis` must be an axis of a rank-`rank` tensor.
    pub(crate) fn axis_in_range(&self, axis: usize, rank: usize) -> Result<(), IrError> {
        if axis >= rank {
            return Err(self.err(format!("axis {axis} out of range for rank {rank}")));
        }
        Ok(())
    }

    /// Input `i` must be a float tensor.
    pub(crate) fn float_input(&self, i: usize) -> Result<(), IrError> {
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
}
