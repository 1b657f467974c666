//! Row-wise ops: Softmax / LogSoftmax, LayerNorm, RMSNorm, reductions, CumSum (f32;
//! `None` for other types → host fallback).
use super::super::buffer::{DeviceData, DeviceTensor};
use super::super::context::Lane;
use super::super::launch_cfg;
use super::super::meta::StridedMeta;
use super::super::CudaError;
use super::{codes, copy_to_new, launch};
use tessera_ir::op::{CumSumAttrs, ReduceAttrs};

/// `(outer, len, inner)` of `shape` around `axis`.
pub fn split_at_axis(shape: &[usize], axis: usize) -> Result<(usize, usize, usize), CudaError> {
    if axis >= shape.len() {
        return Err(CudaError::Plan(format!(
            "axis {axis} out of range for shape {shape:?}"
        )));
    }
    Ok((
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    ))
}

/// Softmax (or LogSoftmax) over `axis`.
pub fn softmax(
    lane: &Lane,
    x: &DeviceTensor,
    axis: usize,
    log: bool,
) -> Result<Option<DeviceTensor>, CudaError> {
    let DeviceData::F32(v) = &*x.data else {
        return Ok(None);
    };
    let (outer, len, inner) = split_at_axis(&x.shape, axis)?;
    let mut o = lane
        .stream
        .alloc_zeros::<f32>(x.numel().max(1))
        .map_err(CudaError::driver)?;
    let (mode, ou, le, inn) = (log as i32, outer as i64, len as i64, inner as i64);
    launch!(
        lane,
        "softmax_f32",
        launch_cfg::rows(outer * inner, len),
        &mode,
        &ou,
        &le,
        &inn,
        v,
        &mut o
    )?;
    Ok(Some(DeviceTensor::new(
        x.dtype,
        x.shape.clone(),
        DeviceData::F32(o),
    )))
}

/// Rows and row length of a normalisation over `axis..rank`, checking the scale (and
/// bias) cover one row.
fn norm_rows(
    x: &DeviceTensor,
    axis: usize,
    params: &[&DeviceTensor],
    op: &str,
) -> Result<(usize, usize), CudaError> {
    if axis > x.shape.len() {
        return Err(CudaError::Plan(format!(
            "{op}: axis {axis} out of range for shape {:?}",
            x.shape
        )));
    }
    let rows: usize = x.shape[..axis].iter().product();
    let len: usize = x.shape[axis..].iter().product();
    for p in params {
        if p.numel() != len {
            return Err(CudaError::Unsupported(format!(
                "{op}: parameter of shape {:?} does not cover the normalised shape {:?} exactly",
                p.shape,
                &x.shape[axis..]
            )));
        }
    }
    Ok((rows, len))
}

/// LayerNorm over `axis..rank`.
pub fn layer_norm(
    lane: &Lane,
    x: &DeviceTensor,
    scale: &DeviceTensor,
    bias: Option<&DeviceTensor>,
    axis: usize,
    eps: f32,
) -> Result<Option<DeviceTensor>, CudaError> {
    let (DeviceData::F32(v), DeviceData::F32(s)) = (&*x.data, &*scale.data) else {
        return Ok(None);
    };
    let mut params = vec![scale];
    params.extend(bias);
    let (rows, len) = norm_rows(x, axis, &params, "LayerNorm")?;
    let b = match bias.map(|b| &*b.data) {
        None => s,
        Some(DeviceData::F32(b)) => b,
        Some(_) => return Ok(None),
    };
    let mut o = lane
        .stream
        .alloc_zeros::<f32>(x.numel().max(1))
        .map_err(CudaError::driver)?;
    let (r, l, has_bias) = (rows as i64, len as i64, bias.is_some() as i32);
    launch!(
        lane,
        "layernorm_f32",
        launch_cfg::rows(rows, len),
        &r,
        &l,
        &eps,
        v,
        s,
        b,
        &has_bias,
        &mut o
    )?;
    Ok(Some(DeviceTensor::new(
        x.dtype,
        x.shape.clone(),
        DeviceData::F32(o),
    )))
}

/// RMSNorm over `axis..rank`.
pub fn rms_norm(
    lane: &Lane,
    x: &DeviceTensor,
    scale: &DeviceTensor,
    axis: usize,
    eps: f32,
) -> Result<Option<DeviceTensor>, CudaError> {
    let (DeviceData::F32(v), DeviceData::F32(s)) = (&*x.data, &*scale.data) else {
        return Ok(None);
    };
    let (rows, len) = norm_rows(x, axis, &[scale], "RMSNorm")?;
    let mut o = lane
        .stream
        .alloc_zeros::<f32>(x.numel().max(1))
        .map_err(CudaError::driver)?;
    let (r, l) = (rows as i64, len as i64);
    launch!(
        lane,
        "rmsnorm_f32",
        launch_cfg::rows(rows, len),
        &r,
        &l,
        &eps,
        v,
        s,
        &mut o
    )?;
    Ok(Some(DeviceTensor::new(
        x.dtype,
        x.shape.clone(),
        DeviceData::F32(o),
    )))
}

/// The permutation putting kept axes first and reduced axes last, the row count, row
/// length and output shape of a reduction.
pub fn reduce_plan(
    shape: &[usize],
    axes: &[usize],
    keepdims: bool,
) -> Result<(Vec<usize>, usize, usize, Vec<usize>), CudaError> {
    if let Some(a) = axes.iter().find(|a| **a >= shape.len()) {
        return Err(CudaError::Plan(format!(
            "reduce axis {a} out of range for shape {shape:?}"
        )));
    }
    let reduced = |d: usize| axes.contains(&d);
    let mut perm: Vec<usize> = (0..shape.len()).filter(|d| !reduced(*d)).collect();
    perm.extend((0..shape.len()).filter(|d| reduced(*d)));
    let rows: usize = (0..shape.len())
        .filter(|d| !reduced(*d))
        .map(|d| shape[d])
        .product();
    let len: usize = (0..shape.len())
        .filter(|d| reduced(*d))
        .map(|d| shape[d])
        .product();
    let out: Vec<usize> = (0..shape.len())
        .filter_map(|d| {
            if reduced(d) {
                keepdims.then_some(1)
            } else {
                Some(shape[d])
            }
        })
        .collect();
    Ok((perm, rows, len, out))
}

/// Reduction over `attrs.axes`.
pub fn reduce(
    lane: &Lane,
    x: &DeviceTensor,
    attrs: &ReduceAttrs,
) -> Result<Option<DeviceTensor>, CudaError> {
    if !matches!(&*x.data, DeviceData::F32(_)) {
        return Ok(None);
    }
    let (perm, rows, len, out_shape) = reduce_plan(&x.shape, &attrs.axes, attrs.keepdims)?;
    let moved = if perm.iter().enumerate().all(|(i, p)| i == *p) {
        x.clone()
    } else {
        let meta = StridedMeta::permute(&x.shape, &perm)?;
        let shape = perm.iter().map(|&p| x.shape[p]).collect();
        copy_to_new(lane, x, &meta, shape)?
    };
    let v = moved.f32("Reduce")?;
    let mut o = lane
        .stream
        .alloc_zeros::<f32>(rows.max(1))
        .map_err(CudaError::driver)?;
    let (kind, r, l) = (codes::reduce(attrs.kind), rows as i64, len as i64);
    launch!(
        lane,
        "reduce_rows_f32",
        launch_cfg::rows(rows, len),
        &kind,
        &r,
        &l,
        v,
        &mut o
    )?;
    Ok(Some(DeviceTensor::new(
        x.dtype,
        out_shape,
        DeviceData::F32(o),
    )))
}

/// Cumulative sum along `attrs.axis`.
pub fn cumsum(
    lane: &Lane,
    x: &DeviceTensor,
    attrs: &CumSumAttrs,
) -> Result<Option<DeviceTensor>, CudaError> {
    let DeviceData::F32(v) = &*x.data else {
        return Ok(None);
    };
    let (outer, len, inner) = split_at_axis(&x.shape, attrs.axis)?;
    let mut o = lane
        .stream
        .alloc_zeros::<f32>(x.numel().max(1))
        .map_err(CudaError::driver)?;
    let (ou, le, inn, ex, rev) = (
        outer as i64,
        len as i64,
        inner as i64,
        attrs.exclusive as i32,
        attrs.reverse as i32,
    );
    launch!(
        lane,
        "cumsum_f32",
        launch_cfg::elementwise(outer * inner),
        &ou,
        &le,
        &inn,
        &ex,
        &rev,
        v,
        &mut o
    )?;
    Ok(Some(DeviceTensor::new(
        x.dtype,
        x.shape.clone(),
        DeviceData::F32(o),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduce_plans() {
        let (perm, rows, len, out) = reduce_plan(&[2, 3, 4, 5], &[1, 3], false).unwrap();
        assert_eq!(
            (perm, rows, len, out),
            (vec![0, 2, 1, 3], 8, 15, vec![2, 4])
        );
        let (perm, rows, len, out) = reduce_plan(&[2, 3, 4], &[2], true).unwrap();
        assert_eq!((perm, rows, len, out), (vec![0, 1, 2], 6, 4, vec![2, 3, 1]));
        let (_, rows, len, out) = reduce_plan(&[2, 3], &[0, 1], false).unwrap();
        assert_eq!((rows, len, out), (1, 6, vec![]));
        assert!(reduce_plan(&[2], &[1], false).is_err());
    }

    #[test]
    fn axis_split() {
        assert_eq!(split_at_axis(&[2, 3, 4], 1).unwrap(), (2, 3, 4));
        assert_eq!(split_at_axis(&[2, 3, 4], 2).unwrap(), (6, 4, 1));
        assert!(split_at_axis(&[2], 1).is_err());
    }
}
