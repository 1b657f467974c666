//! Index-to-mask ops, lowered at import to comparisons against a constant range (which
//! partition and run as any elementwise op), or folded:
//!
//! * OneHot: <https://onnx.ai/onnx/operators/onnx__OneHot.html> (11..=28; 28 only adds
//!   element types): `depth` must be a constant. Indices (float indices truncated to
//!   integers, as ONNX casts them) are normalised (`i + depth` where `i < 0`), reshaped with
//!   a unit axis at `axis`, compared with `range(depth)` laid along that axis, and the result
//!   selects `values[1]` (on) or `values[0]` (off): `Where(Equal(i, r), on, off)`. An index
//!   outside `[-depth, depth − 1]` matches nothing, so its row is all off, as the spec says.
//! * Hardmax: <https://onnx.ai/onnx/operators/onnx__Hardmax.html> (13..=28): 1 at the first
//!   largest element along `axis`, 0 elsewhere: `Cast(Equal(ArgMax(x, axis, keepdims),
//!   range(n)))`. NaN counts as the largest (ArgMax's numpy rule, as the ONNX reference).
//! * EyeLike: <https://onnx.ai/onnx/operators/onnx__EyeLike.html> (9..=28; 22 only adds
//!   element types): depends on the input's static shape only, so it is a constant: ones on
//!   diagonal `k` of a 2-D tensor of dtype `dtype` (default the input's).
use super::activation_extra::Chain;
use super::elementwise::{bin, unary as unary_node};
use super::{entry, Lowered, NodeCx, OpEntry, Ref};
use crate::onnx::ImportError;
use tessera_ir::op::{ArgReduceAttrs, AxisAttrs, BinaryOp, CastAttrs, ReshapeAttrs, UnaryOp};
use tessera_ir::{DType, Op, Tensor, TensorData};

pub(super) const OPS: &[OpEntry] = &[
    entry("OneHot", 11, one_hot),
    entry("Hardmax", 13, hardmax),
    entry("EyeLike", 9, eye_like),
];

/// `range(n)` as `dtype` (i64 storage) of shape `[n, 1, …, 1]` with `trailing` unit axes,
/// so that it lies along the axis `trailing` places before the last.
fn range_along(n: usize, trailing: usize, dtype: DType) -> Tensor {
    let mut shape = vec![n];
    shape.resize(trailing + 1, 1);
    Tensor {
        dtype,
        ..Tensor::i64(shape, (0..n as i64).collect())
    }
}

fn one_hot(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let idx = cx.input(0)?;
    if idx.dtype == DType::Bool {
        return Err(cx.err("indices must be numeric, got bool"));
    }
    let depth_t = cx.const_input(1)?;
    let depth = match depth_t.to_f64_vec()[..] {
        [d] => d.trunc(),
        _ => {
            return Err(cx.err(format!(
                "depth must hold one value, got shape {:?}",
                depth_t.shape
            )))
        }
    };
    if !(depth >= 1.0 && depth <= (1u64 << 31) as f64) {
        return Err(cx.err(format!("depth must be a positive integer, got {depth}")));
    }
    let depth = depth as usize;
    let values = cx.input(2)?;
    if values.shape != [2] {
        return Err(cx.err(format!(
            "values must be [off_value, on_value], got shape {:?}",
            values.shape
        )));
    }
    let rank = idx.shape.len();
    let axis = cx.axis(cx.attr_int("axis", -1), rank + 1)?;
    let mut c = Chain::default();
    // Integer indices of the indices' own integer dtype; floats truncated to i64.
    let (mut i, d) = if idx.dtype.is_float() {
        let to = DType::I64;
        (c.push(Op::Cast(CastAttrs { to }), vec![Ref::In(0)]), to)
    } else {
        (Ref::In(0), idx.dtype)
    };
    let int = |v: i64| {
        Ref::Const(Tensor {
            dtype: d,
            ..Tensor::i64(vec![], vec![v])
        })
    };
    let negative = c.push(bin(BinaryOp::Less), vec![i.clone(), int(0)]);
    let wrapped = c.push(bin(BinaryOp::Add), vec![i.clone(), int(depth as i64)]);
    i = c.push(Op::Where, vec![negative, wrapped, i]);
    let mut unit = idx.shape.to_vec();
    unit.insert(axis, 1);
    let i = c.push(Op::Reshape(ReshapeAttrs { shape: unit }), vec![i]);
    let range = Ref::Const(range_along(depth, rank - axis, d));
    let hit = c.push(bin(BinaryOp::Equal), vec![i, range]);
    // values[1] and values[0] as scalars (folded when values is a constant).
    let mut gather = |k: i64| {
        let at = Ref::Const(Tensor::i64(vec![], vec![k]));
        c.push(Op::Gather(AxisAttrs { axis: 0 }), vec![Ref::In(2), at])
    };
    let on = gather(1);
    let off = gather(0);
    c.push(Op::Where, vec![hit, on, off]);
    Ok(c.done())
}

fn hardmax(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let x = cx.input(0)?;
    if !x.dtype.is_float() {
        return Err(cx.err(format!("expects a float input, got {}", x.dtype)));
    }
    let rank = x.shape.len();
    let axis = cx.axis(cx.attr_int("axis", -1), rank)?;
    let n = x.shape[axis];
    if n == 0 {
        // No element to select: the (empty) output is x itself.
        return unary_node(UnaryOp::Identity);
    }
    let mut c = Chain::default();
    let arg = c.push(
        Op::ArgReduce(ArgReduceAttrs {
            max: true,
            axis,
            keepdims: true,
            select_last_index: false,
        }),
        vec![Ref::In(0)],
    );
    let range = Ref::Const(range_along(n, rank - 1 - axis, DType::I64));
    let hit = c.push(bin(BinaryOp::Equal), vec![arg, range]);
    c.push(Op::Cast(CastAttrs { to: x.dtype }), vec![hit]);
    Ok(c.done())
}

fn eye_like(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let x = cx.input(0)?;
    let [rows, cols] = x.shape[..] else {
        return Err(cx.err(format!("expects a 2-D input, got shape {:?}", x.shape)));
    };
    let dtype = match cx.attr("dtype") {
        None => x.dtype,
        Some(a) => DType::from_onnx_code(a.i as i32)
            .ok_or_else(|| cx.err(format!("dtype {} is not supported", a.i)))?,
    };
    let k = cx.attr_int("k", 0);
    let on = |r: usize, c: usize| c as i64 - r as i64 == k;
    let cells = (0..rows).flat_map(|r| (0..cols).map(move |c| (r, c)));
    let data = if dtype.is_float() {
        TensorData::F32(cells.map(|(r, c)| f32::from(u8::from(on(r, c)))).collect())
    } else if dtype == DType::Bool {
        TensorData::Bool(cells.map(|(r, c)| on(r, c)).collect())
    } else {
        TensorData::I64(cells.map(|(r, c)| i64::from(on(r, c))).collect())
    };
    let t = Tensor::new(dtype, vec![rows, cols], data).map_err(|e| cx.err(e.to_string()))?;
    Ok(Lowered::Consts(vec![t]))
}
