//! Elementwise ops on the device: Binary (broadcasting), Unary, GELU, Clip, Where, Cast,
//! scaling. Functions return `Ok(None)` for type combinations without a kernel (the
//! dispatcher then falls back to the host).
use super::super::buffer::{Class, DeviceTensor};
use super::super::context::Lane;
use super::super::launch_cfg;
use super::super::meta::{broadcast_shape, BcastMeta};
use super::super::CudaError;
use super::{codes, launch, launch_new};
use tessera_ir::op::{BinaryOp, UnaryOp};
use tessera_ir::DType;

/// Broadcasting binary op. `out_dtype` (from the plan) names comparison outputs' dtype.
pub fn binary(
    lane: &Lane,
    op: BinaryOp,
    a: &DeviceTensor,
    b: &DeviceTensor,
    out_dtype: Option<DType>,
) -> Result<Option<DeviceTensor>, CudaError> {
    let class = a.class();
    if b.class() != class {
        return Ok(None);
    }
    let cmp_dtype = out_dtype.unwrap_or(DType::Bool);
    // (kernel, op code, output class, output dtype)
    let (name, code, out_class, dtype) = match (class, op) {
        (Class::Bool, BinaryOp::Equal) => (
            "logical_u8".to_string(),
            codes::logical(op).unwrap_or(3),
            Class::Bool,
            cmp_dtype,
        ),
        (Class::Bool, _) => match codes::logical(op) {
            Some(code) => ("logical_u8".into(), code, Class::Bool, DType::Bool),
            None => return Ok(None),
        },
        _ => match (codes::comparison(op), codes::arithmetic(op)) {
            (Some(code), _) => (class.kernel("compare"), code, Class::Bool, cmp_dtype),
            (None, Some(code)) => (class.kernel("binary"), code, class, a.dtype),
            (None, None) => return Ok(None),
        },
    };
    let shape = broadcast_shape(&a.shape, &b.shape)?;
    let meta = BcastMeta::new(&shape, &[&a.shape, &b.shape])?;
    let n = shape.iter().product::<usize>();
    let cfg = launch_cfg::elementwise(n);
    let out = launch_new!(
        lane,
        out_class,
        n,
        &name,
        cfg,
        &code,
        &meta,
        a.arg(),
        b.arg()
    );
    Ok(Some(DeviceTensor::new(dtype, shape, out)))
}

/// Unary op.
pub fn unary(
    lane: &Lane,
    op: UnaryOp,
    x: &DeviceTensor,
) -> Result<Option<DeviceTensor>, CudaError> {
    if op == UnaryOp::Identity {
        return Ok(Some(x.clone()));
    }
    let n = x.numel();
    let (cfg, n64) = (launch_cfg::elementwise(n), n as i64);
    let class = x.class();
    let (dtype, out) = match (class, op) {
        (Class::Bool, UnaryOp::Not) => (
            x.dtype,
            launch_new!(lane, class, n, "not_u8", cfg, &n64, x.arg()),
        ),
        (Class::F32, UnaryOp::IsNaN) => (
            DType::Bool,
            launch_new!(lane, Class::Bool, n, "isnan_f32", cfg, &n64, x.arg()),
        ),
        (Class::Bool, _) => return Ok(None),
        _ => {
            let code = match class {
                Class::F32 => codes::unary_float(op),
                _ => codes::unary_int(op),
            };
            let Some(code) = code else {
                return Ok(None);
            };
            let name = class.kernel("unary");
            (
                x.dtype,
                launch_new!(lane, class, n, &name, cfg, &code, &n64, x.arg()),
            )
        }
    };
    Ok(Some(x.same_shape(dtype, out)))
}

/// GELU (exact erf form or tanh approximation).
pub fn gelu(
    lane: &Lane,
    tanh_approx: bool,
    x: &DeviceTensor,
) -> Result<Option<DeviceTensor>, CudaError> {
    if x.class() != Class::F32 {
        return Ok(None);
    }
    let n = x.numel();
    let (cfg, mode, n64) = (launch_cfg::elementwise(n), tanh_approx as i32, n as i64);
    let out = launch_new!(lane, Class::F32, n, "gelu_f32", cfg, &mode, &n64, x.arg());
    Ok(Some(x.same_shape(x.dtype, out)))
}

/// Clip to `[min, max]` (absent bounds are infinite).
pub fn clip(
    lane: &Lane,
    min: Option<f32>,
    max: Option<f32>,
    x: &DeviceTensor,
) -> Result<Option<DeviceTensor>, CudaError> {
    if x.class() != Class::F32 {
        return Ok(None);
    }
    let (lo, hi) = (
        min.unwrap_or(f32::NEG_INFINITY),
        max.unwrap_or(f32::INFINITY),
    );
    let n = x.numel();
    let (cfg, n64) = (launch_cfg::elementwise(n), n as i64);
    let out = launch_new!(
        lane,
        Class::F32,
        n,
        "clip_f32",
        cfg,
        &n64,
        &lo,
        &hi,
        x.arg()
    );
    Ok(Some(x.same_shape(x.dtype, out)))
}

/// `x * s` for a float tensor.
pub fn scale(lane: &Lane, x: &DeviceTensor, s: f32) -> Result<DeviceTensor, CudaError> {
    x.f32("ScaleToPartial")?;
    let n = x.numel();
    let (cfg, n64) = (launch_cfg::elementwise(n), n as i64);
    let out = launch_new!(lane, Class::F32, n, "scale_f32", cfg, &n64, &s, x.arg());
    Ok(x.same_shape(x.dtype, out))
}

/// `a + b` for two tensors of the same shape and class (f32 or i64).
pub fn add_same_shape(
    lane: &Lane,
    a: &DeviceTensor,
    b: &DeviceTensor,
) -> Result<DeviceTensor, CudaError> {
    if a.shape != b.shape {
        return Err(CudaError::Plan(format!(
            "sum of shapes {:?} and {:?}",
            a.shape, b.shape
        )));
    }
    let class = a.class();
    if class == Class::Bool || b.class() != class {
        return Err(CudaError::Unsupported(format!(
            "summing {} tensors across ranks",
            a.dtype
        )));
    }
    let n = a.numel();
    let (cfg, name, n64) = (launch_cfg::elementwise(n), class.kernel("add"), n as i64);
    let out = launch_new!(lane, class, n, &name, cfg, &n64, a.arg(), b.arg());
    Ok(a.same_shape(a.dtype, out))
}

/// Where(cond, x, y) with broadcasting.
pub fn select(
    lane: &Lane,
    c: &DeviceTensor,
    x: &DeviceTensor,
    y: &DeviceTensor,
) -> Result<Option<DeviceTensor>, CudaError> {
    let class = x.class();
    if c.class() != Class::Bool || y.class() != class {
        return Ok(None);
    }
    let shape = broadcast_shape(&broadcast_shape(&c.shape, &x.shape)?, &y.shape)?;
    let meta = BcastMeta::new(&shape, &[&c.shape, &x.shape, &y.shape])?;
    let n = shape.iter().product::<usize>();
    let (cfg, name) = (
        launch_cfg::elementwise(n),
        format!("where_b{}", class.size()),
    );
    let out = launch_new!(lane, class, n, &name, cfg, &meta, c.arg(), x.arg(), y.arg());
    Ok(Some(DeviceTensor::new(x.dtype, shape, out)))
}

/// Integer width for wrapping casts: (bits, unsigned), or None for i64.
fn int_width(d: DType) -> Option<(i32, i32)> {
    match d {
        DType::I32 => Some((32, 0)),
        DType::I16 => Some((16, 0)),
        DType::I8 => Some((8, 0)),
        DType::U8 => Some((8, 1)),
        _ => None,
    }
}

/// Cast to `to`: one class conversion kernel (`cast_<from>_<to>`, none within a class),
/// then f16/bf16 rounding or integer wrapping.
pub fn cast(lane: &Lane, x: &DeviceTensor, to: DType) -> Result<Option<DeviceTensor>, CudaError> {
    let (from, class) = (x.class(), Class::of(to));
    let n = x.numel();
    let (cfg, n64) = (launch_cfg::elementwise(n), n as i64);
    let converted = if from == class {
        DeviceTensor {
            dtype: to,
            ..x.clone()
        }
    } else {
        let name = format!("cast_{}_{}", from.suffix(), class.suffix());
        x.same_shape(to, launch_new!(lane, class, n, &name, cfg, &n64, x.arg()))
    };
    let out = match (class, to, int_width(to)) {
        (Class::F32, DType::F16 | DType::BF16, _) => {
            let mode: i32 = if to == DType::F16 { 0 } else { 1 };
            let arg = converted.arg();
            launch_new!(lane, class, n, "round_f32", cfg, &mode, &n64, arg)
        }
        (Class::I64, _, Some((bits, unsigned))) => {
            let arg = converted.arg();
            launch_new!(lane, class, n, "wrap_i64", cfg, &bits, &unsigned, &n64, arg)
        }
        _ => return Ok(Some(converted)),
    };
    Ok(Some(x.same_shape(to, out)))
}
