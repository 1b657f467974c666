//! Constants, shape queries, casts and identities.
//!
//! * Constant: <https://onnx.ai/onnx/operators/onnx__Constant.html> (13..=23; value,
//!   value_float(s), value_int(s))
//! * ConstantOfShape: <https://onnx.ai/onnx/operators/onnx__ConstantOfShape.html> (13..=23;
//!   the shape must be constant; results over [`FOLD_MAX_OUTPUT_ELEMS`] become an Expand)
//! * Range: <https://onnx.ai/onnx/operators/onnx__Range.html> (13..=23; inputs must be
//!   constant; the length is checked against [`tessera_ir::MAX_TENSOR_BYTES`])
//! * Shape: <https://onnx.ai/onnx/operators/onnx__Shape.html> (13..=23, start/end from 15) and
//!   Size: <https://onnx.ai/onnx/operators/onnx__Size.html> — constants from static shapes
//! * Identity
//! * Cast: <https://onnx.ai/onnx/operators/onnx__Cast.html>, CastLike (15..=23)
use super::elementwise::unary;
use super::{entry, Lowered, NodeCx, OpEntry, Ref, Step};
use crate::onnx::tensor_proto::decode;
use crate::onnx::{ImportError, FOLD_MAX_OUTPUT_ELEMS};
use tessera_ir::op::{CastAttrs, ExpandAttrs, UnaryOp};
use tessera_ir::{checked_numel, DType, Op, Tensor, TensorData};

pub(super) const OPS: &[OpEntry] = &[
    entry("Constant", 13, constant),
    entry("ConstantOfShape", 9, constant_of_shape),
    entry("Range", 11, range),
    entry("Shape", 1, shape),
    entry("Size", 1, size),
    entry("Identity", 1, |_| unary(UnaryOp::Identity)),
    entry("Cast", 1, cast),
    entry("CastLike", 15, cast_like),
];

fn constant(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let t = if let Some(t) = cx.attr_tensor("value") {
        decode(t, cx.name)?
    } else if let Some(a) = cx.attr("value_float") {
        Tensor::f32(vec![], vec![a.f])
    } else if let Some(a) = cx.attr("value_floats") {
        Tensor::f32(vec![a.floats.len()], a.floats.clone())
    } else if let Some(a) = cx.attr("value_int") {
        Tensor::i64(vec![], vec![a.i])
    } else if let Some(a) = cx.attr("value_ints") {
        Tensor::i64(vec![a.ints.len()], a.ints.clone())
    } else {
        return Err(
            cx.err("unsupported Constant form (needs value, value_float(s) or value_int(s))")
        );
    };
    Ok(Lowered::Consts(vec![t]))
}

fn dims(cx: &NodeCx, v: &[i64]) -> Result<Vec<usize>, ImportError> {
    v.iter()
        .map(|&d| usize::try_from(d).map_err(|_| cx.err(format!("negative dim in {v:?}"))))
        .collect()
}

fn constant_of_shape(cx: &NodeCx) -> Result<Lowered, ImportError> {
    // The output shape is the value of input 0: it must be known at import time.
    let shape = dims(cx, &cx.const_input(0)?.to_i64_vec())?;
    let value = match cx.attr_tensor("value") {
        Some(t) => decode(t, cx.name)?,
        None => Tensor::f32(vec![1], vec![0.0]),
    };
    if value.numel() != 1 {
        return Err(cx.err(format!(
            "value must have one element, got shape {:?}",
            value.shape
        )));
    }
    // Small results are folded here; larger ones (or overflowing counts) become an Expand of
    // the scalar value, which shape inference checks against the per-tensor cap and which
    // runs at run time, so import never allocates them.
    let n = match checked_numel(&shape) {
        Some(n) if n <= FOLD_MAX_OUTPUT_ELEMS => n,
        _ => {
            let scalar = Tensor {
                shape: vec![],
                ..value
            };
            return Ok(Lowered::Steps(vec![Step {
                op: Op::Expand(ExpandAttrs { shape }),
                inputs: vec![Ref::Const(scalar)],
            }]));
        }
    };
    let data = match &value.data {
        TensorData::F32(v) => TensorData::F32(vec![v[0]; n]),
        TensorData::I64(v) => TensorData::I64(vec![v[0]; n]),
        TensorData::Bool(v) => TensorData::Bool(vec![v[0]; n]),
    };
    Ok(Lowered::Consts(vec![Tensor {
        dtype: value.dtype,
        shape,
        data,
    }]))
}

fn range(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let mut vals = Vec::new();
    for i in 0..3 {
        // The output length depends on all three inputs: they must be known at import time.
        match cx.const_input(i)? {
            t if t.numel() == 1 => vals.push(t),
            t => {
                return Err(cx.err(format!(
                    "input {i} must be a scalar, got shape {:?}",
                    t.shape
                )))
            }
        }
    }
    let dtype = vals[0].dtype;
    // Range-27 `stash_type` = 0 accumulates half-precision ranges in their own type; Tessera
    // computes them in f32 (stash_type = 1, the default).
    if matches!(dtype, DType::F16 | DType::BF16) && cx.attr_int("stash_type", 1) == 0 {
        return Err(ImportError::UnsupportedFeature {
            node: cx.name.into(),
            op: cx.node.op_type.clone(),
            msg: format!(
                "{dtype} Range with stash_type=0 (half-precision accumulation) is not supported"
            ),
        });
    }
    // The count and its limits (overflow, zero delta, non-finite values) are the kernel's.
    let r = tessera_kernels::range(vals[0], vals[1], vals[2]).map_err(|e| cx.err(e.msg))?;
    Ok(Lowered::Consts(vec![r]))
}

fn shape(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let x = cx.input(0)?.shape;
    let r = x.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let start = clamp(cx.attr_int("start", 0));
    let end = clamp(cx.attr_int("end", r)).max(start);
    let v: Vec<i64> = x[start..end].iter().map(|&d| d as i64).collect();
    Ok(Lowered::Consts(vec![Tensor::i64(vec![v.len()], v)]))
}

fn size(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let n = cx.input(0)?.shape.iter().product::<usize>();
    Ok(Lowered::Consts(vec![Tensor::i64(vec![], vec![n as i64])]))
}

fn cast_to(to: DType) -> Result<Lowered, ImportError> {
    Ok(Lowered::op(Op::Cast(CastAttrs { to }), &[0]))
}

fn cast(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let code = cx.attr_int("to", 0);
    let to = DType::from_onnx_code(code as i32).ok_or_else(|| {
        let name = DType::onnx_code_name(code as i32);
        cx.err(format!("unsupported target type {name} (ONNX type {code})"))
    })?;
    cast_to(to)
}

fn cast_like(cx: &NodeCx) -> Result<Lowered, ImportError> {
    cast_to(cx.input(1)?.dtype)
}
