//! Row-wise ops: Softmax / LogSoftmax, LayerNorm, RMSNorm, reductions, CumSum (f32;
//! `None` for other types → host fallback).
use super::super::buffer::{Class, DeviceTensor};
use super::super::context::Lane;
use super::super::launch_cfg;
use super::super::meta::StridedMeta;
use super::super::CudaError;
use super::{codes, copy_to_new, launch, launch_new};
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
    if x.class() != Class::F32 {
        return Ok(None);
    }
    let (outer, len, inner) = split_at_axis(&x.shape, axis)?;
    let cfg = launch_cfg::rows(outer * inner, len);
    let (mode, ou, le, inn) = (log as i32, outer as i64, len as i64, inner as i64);
    let out = launch_new!(
        lane,
        Class::F32,
        x.numel(),
        "softmax_f32",
        cfg,
        &mode,
        &ou,
        &le,
        &inn,
        x.arg()
    );
    Ok(Some(x.same_shape(x.dtype, out)))
}

/// Rows and row length of a normalisation over `axis..rank`, checking the scale (and
/// bias) cover one row; `None` unless `x` and the parameters are float tensors.
fn norm_rows(
    x: &DeviceTensor,
    axis: usize,
    params: &[&DeviceTensor],
    op: &str,
) -> Result<Option<(usize, usize)>, CudaError> {
    if std::iter::once(x)
        .chain(params.iter().copied())
        .any(|t| t.class() != Class::F32)
    {
        return Ok(None);
    }
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
    Ok(Some((rows, len)))
}

/// Launches row-normalisation kernel `$name`, whose C signature is `(rows, len, eps, x,
/// scale, extra.., out)`, over `$x` seen as `$shape = (rows, len)`.
macro_rules! row_norm {
    ($lane:expr, $name:expr, $x:expr, $scale:expr, $shape:expr, $eps:expr $(, $extra:expr)*) => {{
        let (rows, len): (usize, usize) = $shape;
        let (r, l, eps): (i64, i64, f32) = (rows as i64, len as i64, $eps);
        let cfg = launch_cfg::rows(rows, len);
        let (v, s) = ($x.arg(), $scale.arg());
        let n = $x.numel();
        let out = launch_new!($lane, Class::F32, n, $name, cfg, &r, &l, &eps, v, s $(, $extra)*);
        Ok(Some($x.same_shape($x.dtype, out)))
    }};
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
    let mut params = vec![scale];
    params.extend(bias);
    let Some(rows) = norm_rows(x, axis, &params, "LayerNorm")? else {
        return Ok(None);
    };
    // Without a bias the kernel is told so and reads the scale in its place.
    let (b, has_bias) = (bias.unwrap_or(scale).arg(), bias.is_some() as i32);
    row_norm!(lane, "layernorm_f32", x, scale, rows, eps, b, &has_bias)
}

/// RMSNorm over `axis..rank`.
pub fn rms_norm(
    lane: &Lane,
    x: &DeviceTensor,
    scale: &DeviceTensor,
    axis: usize,
    eps: f32,
) -> Result<Option<DeviceTensor>, CudaError> {
    let Some(rows) = norm_rows(x, axis, &[scale], "RMSNorm")? else {
        return Ok(None);
    };
    row_norm!(lane, "rmsnorm_f32", x, scale, rows, eps)
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
    if x.class() != Class::F32 {
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
    let (kind, r, l) = (codes::reduce(attrs.kind), rows as i64, len as i64);
    let cfg = launch_cfg::rows(rows, len);
    let out = launch_new!(
        lane,
        Class::F32,
        rows,
        "reduce_rows_f32",
        cfg,
        &kind,
        &r,
        &l,
        moved.arg()
    );
    Ok(Some(DeviceTensor::new(x.dtype, out_shape, out)))
}

/// Cumulative sum along `attrs.axis`.
pub fn cumsum(
    lane: &Lane,
    x: &DeviceTensor,
    attrs: &CumSumAttrs,
) -> Result<Option<DeviceTensor>, CudaError> {
    if x.class() != Class::F32 {
        return Ok(None);
    }
    let (outer, len, inner) = split_at_axis(&x.shape, attrs.axis)?;
    let (ou, le, inn) = (outer as i64, len as i64, inner as i64);
    let (ex, rev) = (attrs.exclusive as i32, attrs.reverse as i32);
    let cfg = launch_cfg::elementwise(outer * inner);
    let out = launch_new!(
        lane,
        Class::F32,
        x.numel(),
        "cumsum_f32",
        cfg,
        &ou,
        &le,
        &inn,
        &ex,
        &rev,
        x.arg()
    );
    Ok(Some(x.same_shape(x.dtype, out)))
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
