//! Elementwise ops on the device: Binary (broadcasting), Unary, GELU, Clip, Where, Cast,
//! scaling. Functions return `Ok(None)` for type combinations without a kernel (the
//! dispatcher then falls back to the host).
use super::super::buffer::{Class, DeviceData, DeviceTensor};
use super::super::context::Lane;
use super::super::launch_cfg;
use super::super::meta::{broadcast_shape, BcastMeta};
use super::super::CudaError;
use super::{codes, launch};
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
    let shape = broadcast_shape(&a.shape, &b.shape)?;
    let meta = BcastMeta::new(&shape, &[&a.shape, &b.shape])?;
    let n = shape.iter().product::<usize>();
    let cfg = launch_cfg::elementwise(n);
    let (da, db) = (&*a.data, &*b.data);
    if let Some(code) = codes::comparison(op) {
        let mut o = lane
            .stream
            .alloc_zeros::<u8>(n.max(1))
            .map_err(CudaError::driver)?;
        match (da, db) {
            (DeviceData::F32(x), DeviceData::F32(y)) => {
                launch!(lane, "compare_f32", cfg, &code, &meta, x, y, &mut o)?
            }
            (DeviceData::I64(x), DeviceData::I64(y)) => {
                launch!(lane, "compare_i64", cfg, &code, &meta, x, y, &mut o)?
            }
            (DeviceData::Bool(x), DeviceData::Bool(y)) if op == BinaryOp::Equal => {
                let code = codes::logical(op).unwrap_or(3);
                launch!(lane, "logical_u8", cfg, &code, &meta, x, y, &mut o)?
            }
            _ => return Ok(None),
        }
        return Ok(Some(DeviceTensor::new(
            out_dtype.unwrap_or(DType::Bool),
            shape,
            DeviceData::Bool(o),
        )));
    }
    if let Some(code) = codes::logical(op) {
        let (DeviceData::Bool(x), DeviceData::Bool(y)) = (da, db) else {
            return Ok(None);
        };
        let mut o = lane
            .stream
            .alloc_zeros::<u8>(n.max(1))
            .map_err(CudaError::driver)?;
        launch!(lane, "logical_u8", cfg, &code, &meta, x, y, &mut o)?;
        return Ok(Some(DeviceTensor::new(
            DType::Bool,
            shape,
            DeviceData::Bool(o),
        )));
    }
    let Some(code) = codes::arithmetic(op) else {
        return Ok(None);
    };
    let out = match (da, db) {
        (DeviceData::F32(x), DeviceData::F32(y)) => {
            let mut o = lane
                .stream
                .alloc_zeros::<f32>(n.max(1))
                .map_err(CudaError::driver)?;
            launch!(lane, "binary_f32", cfg, &code, &meta, x, y, &mut o)?;
            DeviceData::F32(o)
        }
        (DeviceData::I64(x), DeviceData::I64(y)) => {
            let mut o = lane
                .stream
                .alloc_zeros::<i64>(n.max(1))
                .map_err(CudaError::driver)?;
            launch!(lane, "binary_i64", cfg, &code, &meta, x, y, &mut o)?;
            DeviceData::I64(o)
        }
        _ => return Ok(None),
    };
    Ok(Some(DeviceTensor::new(a.dtype, shape, out)))
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
    let cfg = launch_cfg::elementwise(n);
    let n64 = n as i64;
    let out = match (&*x.data, op) {
        (DeviceData::Bool(v), UnaryOp::Not) => {
            let mut o = lane
                .stream
                .alloc_zeros::<u8>(n.max(1))
                .map_err(CudaError::driver)?;
            launch!(lane, "not_u8", cfg, &n64, v, &mut o)?;
            return Ok(Some(DeviceTensor::new(
                x.dtype,
                x.shape.clone(),
                DeviceData::Bool(o),
            )));
        }
        (DeviceData::F32(v), UnaryOp::IsNaN) => {
            let mut o = lane
                .stream
                .alloc_zeros::<u8>(n.max(1))
                .map_err(CudaError::driver)?;
            launch!(lane, "isnan_f32", cfg, &n64, v, &mut o)?;
            return Ok(Some(DeviceTensor::new(
                DType::Bool,
                x.shape.clone(),
                DeviceData::Bool(o),
            )));
        }
        (DeviceData::F32(v), _) => {
            let Some(code) = codes::unary_float(op) else {
                return Ok(None);
            };
            let mut o = lane
                .stream
                .alloc_zeros::<f32>(n.max(1))
                .map_err(CudaError::driver)?;
            launch!(lane, "unary_f32", cfg, &code, &n64, v, &mut o)?;
            DeviceData::F32(o)
        }
        (DeviceData::I64(v), _) => {
            let Some(code) = codes::unary_int(op) else {
                return Ok(None);
            };
            let mut o = lane
                .stream
                .alloc_zeros::<i64>(n.max(1))
                .map_err(CudaError::driver)?;
            launch!(lane, "unary_i64", cfg, &code, &n64, v, &mut o)?;
            DeviceData::I64(o)
        }
        _ => return Ok(None),
    };
    Ok(Some(DeviceTensor::new(x.dtype, x.shape.clone(), out)))
}

/// GELU (exact erf form or tanh approximation).
pub fn gelu(
    lane: &Lane,
    tanh_approx: bool,
    x: &DeviceTensor,
) -> Result<Option<DeviceTensor>, CudaError> {
    let DeviceData::F32(v) = &*x.data else {
        return Ok(None);
    };
    let n = x.numel();
    let mut o = lane
        .stream
        .alloc_zeros::<f32>(n.max(1))
        .map_err(CudaError::driver)?;
    let (mode, n64) = (tanh_approx as i32, n as i64);
    launch!(
        lane,
        "gelu_f32",
        launch_cfg::elementwise(n),
        &mode,
        &n64,
        v,
        &mut o
    )?;
    Ok(Some(DeviceTensor::new(
        x.dtype,
        x.shape.clone(),
        DeviceData::F32(o),
    )))
}

/// Clip to `[min, max]` (absent bounds are infinite).
pub fn clip(
    lane: &Lane,
    min: Option<f32>,
    max: Option<f32>,
    x: &DeviceTensor,
) -> Result<Option<DeviceTensor>, CudaError> {
    let DeviceData::F32(v) = &*x.data else {
        return Ok(None);
    };
    let n = x.numel();
    let mut o = lane
        .stream
        .alloc_zeros::<f32>(n.max(1))
        .map_err(CudaError::driver)?;
    let (lo, hi, n64) = (
        min.unwrap_or(f32::NEG_INFINITY),
        max.unwrap_or(f32::INFINITY),
        n as i64,
    );
    launch!(
        lane,
        "clip_f32",
        launch_cfg::elementwise(n),
        &n64,
        &lo,
        &hi,
        v,
        &mut o
    )?;
    Ok(Some(DeviceTensor::new(
        x.dtype,
        x.shape.clone(),
        DeviceData::F32(o),
    )))
}

/// `x * s` for a float tensor.
pub fn scale(lane: &Lane, x: &DeviceTensor, s: f32) -> Result<DeviceTensor, CudaError> {
    let v = x.f32("ScaleToPartial")?;
    let n = x.numel();
    let mut o = lane
        .stream
        .alloc_zeros::<f32>(n.max(1))
        .map_err(CudaError::driver)?;
    let n64 = n as i64;
    launch!(
        lane,
        "scale_f32",
        launch_cfg::elementwise(n),
        &n64,
        &s,
        v,
        &mut o
    )?;
    Ok(DeviceTensor::new(
        x.dtype,
        x.shape.clone(),
        DeviceData::F32(o),
    ))
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
    let n = a.numel();
    let (cfg, n64) = (launch_cfg::elementwise(n), n as i64);
    let out = match (&*a.data, &*b.data) {
        (DeviceData::F32(x), DeviceData::F32(y)) => {
            let mut o = lane
                .stream
                .alloc_zeros::<f32>(n.max(1))
                .map_err(CudaError::driver)?;
            launch!(lane, "add_f32", cfg, &n64, x, y, &mut o)?;
            DeviceData::F32(o)
        }
        (DeviceData::I64(x), DeviceData::I64(y)) => {
            let mut o = lane
                .stream
                .alloc_zeros::<i64>(n.max(1))
                .map_err(CudaError::driver)?;
            launch!(lane, "add_i64", cfg, &n64, x, y, &mut o)?;
            DeviceData::I64(o)
        }
        _ => {
            return Err(CudaError::Unsupported(format!(
                "summing {} tensors across ranks",
                a.dtype
            )))
        }
    };
    Ok(DeviceTensor::new(a.dtype, a.shape.clone(), out))
}

/// Where(cond, x, y) with broadcasting.
pub fn select(
    lane: &Lane,
    c: &DeviceTensor,
    x: &DeviceTensor,
    y: &DeviceTensor,
) -> Result<Option<DeviceTensor>, CudaError> {
    let DeviceData::Bool(cb) = &*c.data else {
        return Ok(None);
    };
    let shape = broadcast_shape(&broadcast_shape(&c.shape, &x.shape)?, &y.shape)?;
    let meta = BcastMeta::new(&shape, &[&c.shape, &x.shape, &y.shape])?;
    let n = shape.iter().product::<usize>();
    let cfg = launch_cfg::elementwise(n);
    let mut out = DeviceData::zeros(lane, x.class(), n)?;
    match (&*x.data, &*y.data, &mut out) {
        (DeviceData::F32(a), DeviceData::F32(b), DeviceData::F32(o)) => {
            launch!(lane, "where_b4", cfg, &meta, cb, a, b, o)?
        }
        (DeviceData::I64(a), DeviceData::I64(b), DeviceData::I64(o)) => {
            launch!(lane, "where_b8", cfg, &meta, cb, a, b, o)?
        }
        (DeviceData::Bool(a), DeviceData::Bool(b), DeviceData::Bool(o)) => {
            launch!(lane, "where_b1", cfg, &meta, cb, a, b, o)?
        }
        _ => return Ok(None),
    }
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

/// Cast to `to`: class conversion kernels, then f16/bf16 rounding or integer wrapping.
pub fn cast(lane: &Lane, x: &DeviceTensor, to: DType) -> Result<Option<DeviceTensor>, CudaError> {
    let n = x.numel();
    let (cfg, n64) = (launch_cfg::elementwise(n), n as i64);
    let converted: DeviceData = match (&*x.data, Class::of(to)) {
        (DeviceData::F32(_), Class::F32)
        | (DeviceData::I64(_), Class::I64)
        | (DeviceData::Bool(_), Class::Bool) => {
            let same = DeviceTensor {
                dtype: to,
                shape: x.shape.clone(),
                data: x.data.clone(),
            };
            return finish_cast(lane, same, to).map(Some);
        }
        (DeviceData::F32(v), Class::I64) => {
            let mut o = lane
                .stream
                .alloc_zeros::<i64>(n.max(1))
                .map_err(CudaError::driver)?;
            launch!(lane, "cast_f32_i64", cfg, &n64, v, &mut o)?;
            DeviceData::I64(o)
        }
        (DeviceData::I64(v), Class::F32) => {
            let mut o = lane
                .stream
                .alloc_zeros::<f32>(n.max(1))
                .map_err(CudaError::driver)?;
            launch!(lane, "cast_i64_f32", cfg, &n64, v, &mut o)?;
            DeviceData::F32(o)
        }
        (DeviceData::F32(v), Class::Bool) => {
            let mut o = lane
                .stream
                .alloc_zeros::<u8>(n.max(1))
                .map_err(CudaError::driver)?;
            launch!(lane, "cast_f32_u8", cfg, &n64, v, &mut o)?;
            DeviceData::Bool(o)
        }
        (DeviceData::Bool(v), Class::F32) => {
            let mut o = lane
                .stream
                .alloc_zeros::<f32>(n.max(1))
                .map_err(CudaError::driver)?;
            launch!(lane, "cast_u8_f32", cfg, &n64, v, &mut o)?;
            DeviceData::F32(o)
        }
        (DeviceData::I64(v), Class::Bool) => {
            let mut o = lane
                .stream
                .alloc_zeros::<u8>(n.max(1))
                .map_err(CudaError::driver)?;
            launch!(lane, "cast_i64_u8", cfg, &n64, v, &mut o)?;
            DeviceData::Bool(o)
        }
        (DeviceData::Bool(v), Class::I64) => {
            let mut o = lane
                .stream
                .alloc_zeros::<i64>(n.max(1))
                .map_err(CudaError::driver)?;
            launch!(lane, "cast_u8_i64", cfg, &n64, v, &mut o)?;
            DeviceData::I64(o)
        }
    };
    finish_cast(lane, DeviceTensor::new(to, x.shape.clone(), converted), to).map(Some)
}

/// Rounds to f16/bf16 precision or wraps to a narrower integer type when `to` asks.
fn finish_cast(lane: &Lane, t: DeviceTensor, to: DType) -> Result<DeviceTensor, CudaError> {
    let n = t.numel();
    let (cfg, n64) = (launch_cfg::elementwise(n), n as i64);
    match (&*t.data, to) {
        (DeviceData::F32(v), DType::F16 | DType::BF16) => {
            let mode: i32 = if to == DType::F16 { 0 } else { 1 };
            let mut o = lane
                .stream
                .alloc_zeros::<f32>(n.max(1))
                .map_err(CudaError::driver)?;
            launch!(lane, "round_f32", cfg, &mode, &n64, v, &mut o)?;
            Ok(DeviceTensor::new(to, t.shape.clone(), DeviceData::F32(o)))
        }
        (DeviceData::I64(v), _) => match int_width(to) {
            Some((bits, unsigned)) => {
                let mut o = lane
                    .stream
                    .alloc_zeros::<i64>(n.max(1))
                    .map_err(CudaError::driver)?;
                launch!(lane, "wrap_i64", cfg, &bits, &unsigned, &n64, v, &mut o)?;
                Ok(DeviceTensor::new(to, t.shape.clone(), DeviceData::I64(o)))
            }
            None => Ok(t),
        },
        _ => Ok(t),
    }
}
