//! MatMul and Gemm through cuBLAS sgemm (strided batched for batched matmuls).
//!
//! cuBLAS is column-major; a row-major `C[M,N] = A[M,K]·B[K,N]` is computed as the
//! column-major `Cᵀ[N,M] = Bᵀ[N,K]·Aᵀ[K,M]`, which reads the row-major buffers as they
//! are. Batch broadcasting: an operand whose batch dims are all 1 gets batch stride 0;
//! one that is partially broadcast is first expanded to the full batch with a copy.
use super::super::buffer::{DeviceData, DeviceTensor};
use super::super::context::Lane;
use super::super::meta::{broadcast_shape, StridedMeta};
use super::super::CudaError;
use super::copy_to_new;
use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{Gemm, GemmConfig, StridedBatchedConfig};
use std::os::raw::c_int;
use tessera_ir::op::GemmAttrs;

/// Checked conversion of a dimension to cuBLAS's `int`.
fn dim(v: usize, what: &str) -> Result<c_int, CudaError> {
    c_int::try_from(v)
        .map_err(|_| CudaError::Unsupported(format!("{what} = {v} exceeds cuBLAS's int range")))
}

/// Column-major parameters of one row-major product (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowMajorGemm {
    /// cuBLAS `transa` (applies to the row-major B).
    pub trans_first: bool,
    /// cuBLAS `transb` (applies to the row-major A).
    pub trans_second: bool,
    /// cuBLAS m = N.
    pub m: usize,
    /// cuBLAS n = M.
    pub n: usize,
    /// cuBLAS k = K.
    pub k: usize,
    /// Leading dimension of the row-major B.
    pub ld_first: usize,
    /// Leading dimension of the row-major A.
    pub ld_second: usize,
    /// Leading dimension of C (= N).
    pub ldc: usize,
}

/// The cuBLAS call computing row-major `op(A)[M,K]·op(B)[K,N]`, where A is stored
/// `[K,M]` when `trans_a` and B is stored `[N,K]` when `trans_b`.
pub fn row_major_gemm(m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) -> RowMajorGemm {
    RowMajorGemm {
        trans_first: trans_b,
        trans_second: trans_a,
        m: n,
        n: m,
        k,
        ld_first: if trans_b { k } else { n },
        ld_second: if trans_a { m } else { k },
        ldc: n,
    }
}

fn op(t: bool) -> cublasOperation_t {
    if t {
        cublasOperation_t::CUBLAS_OP_T
    } else {
        cublasOperation_t::CUBLAS_OP_N
    }
}

fn config(p: RowMajorGemm, alpha: f32, beta: f32) -> Result<GemmConfig<f32>, CudaError> {
    Ok(GemmConfig {
        transa: op(p.trans_first),
        transb: op(p.trans_second),
        m: dim(p.m, "N")?,
        n: dim(p.n, "M")?,
        k: dim(p.k, "K")?,
        alpha,
        lda: dim(p.ld_first, "ld")?,
        ldb: dim(p.ld_second, "ld")?,
        beta,
        ldc: dim(p.ldc, "ldc")?,
    })
}

/// numpy matmul with batch broadcasting (f32; `None` for other types → host fallback).
pub fn matmul(
    lane: &Lane,
    a: &DeviceTensor,
    b: &DeviceTensor,
) -> Result<Option<DeviceTensor>, CudaError> {
    if !matches!(
        (&*a.data, &*b.data),
        (DeviceData::F32(_), DeviceData::F32(_))
    ) {
        return Ok(None);
    }
    if a.shape.is_empty() || b.shape.is_empty() {
        return Err(CudaError::Plan("MatMul of a scalar".into()));
    }
    let a_shape = if a.shape.len() == 1 {
        vec![1, a.shape[0]]
    } else {
        a.shape.clone()
    };
    let b_shape = if b.shape.len() == 1 {
        vec![b.shape[0], 1]
    } else {
        b.shape.clone()
    };
    let (ra, rb) = (a_shape.len(), b_shape.len());
    let (m, k, k2, n) = (
        a_shape[ra - 2],
        a_shape[ra - 1],
        b_shape[rb - 2],
        b_shape[rb - 1],
    );
    if k != k2 {
        return Err(CudaError::Plan(format!(
            "MatMul of {:?} and {:?}: inner dims {k} and {k2} differ",
            a.shape, b.shape
        )));
    }
    let batch = broadcast_shape(&a_shape[..ra - 2], &b_shape[..rb - 2])?;
    let nb: usize = batch.iter().product();
    let mut out_shape = batch.clone();
    if a.shape.len() > 1 {
        out_shape.push(m);
    }
    if b.shape.len() > 1 {
        out_shape.push(n);
    }
    let mut out = lane
        .stream
        .alloc_zeros::<f32>((nb * m * n).max(1))
        .map_err(CudaError::driver)?;
    if nb * m * n * k > 0 {
        let (a_full, sa) = batch_operand(lane, a, &a_shape, &batch)?;
        let (b_full, sb) = batch_operand(lane, b, &b_shape, &batch)?;
        let (av, bv) = (a_full.f32("MatMul A")?, b_full.f32("MatMul B")?);
        let gemm = config(row_major_gemm(m, n, k, false, false), 1.0, 0.0)?;
        if nb == 1 {
            // SAFETY: A holds m·k, B k·n and C m·n f32 elements, exactly what the
            // column-major parameters computed by row_major_gemm address.
            unsafe { lane.blas.gemm(gemm, bv, av, &mut out) }.map_err(CudaError::blas)?;
        } else {
            let cfg = StridedBatchedConfig {
                gemm,
                batch_size: dim(nb, "batch")?,
                stride_a: sb as i64,
                stride_b: sa as i64,
                stride_c: (m * n) as i64,
            };
            // SAFETY: each operand holds either one matrix (stride 0) or nb matrices at
            // its stride, and C holds nb·m·n elements, so every batch entry is in bounds.
            unsafe { lane.blas.gemm_strided_batched(cfg, bv, av, &mut out) }
                .map_err(CudaError::blas)?;
        }
    }
    Ok(Some(DeviceTensor::new(
        a.dtype,
        out_shape,
        DeviceData::F32(out),
    )))
}

/// The operand as a buffer of `batch` matrices and its batch stride (0 when shared).
fn batch_operand(
    lane: &Lane,
    t: &DeviceTensor,
    shape: &[usize],
    batch: &[usize],
) -> Result<(DeviceTensor, usize), CudaError> {
    let r = shape.len();
    let mat = shape[r - 2] * shape[r - 1];
    let own: usize = shape[..r - 2].iter().product();
    let nb: usize = batch.iter().product();
    if own == 1 {
        return Ok((t.clone(), 0));
    }
    if own == nb {
        return Ok((t.clone(), mat));
    }
    let mut full = batch.to_vec();
    full.extend_from_slice(&shape[r - 2..]);
    let meta = StridedMeta::expand(shape, &full)?;
    Ok((copy_to_new(lane, t, &meta, full)?, mat))
}

/// ONNX Gemm: alpha·op(A)·op(B) + beta·C, C broadcast to [M, N].
pub fn gemm(
    lane: &Lane,
    attrs: &GemmAttrs,
    a: &DeviceTensor,
    b: &DeviceTensor,
    c: Option<&DeviceTensor>,
) -> Result<Option<DeviceTensor>, CudaError> {
    let (DeviceData::F32(av), DeviceData::F32(bv)) = (&*a.data, &*b.data) else {
        return Ok(None);
    };
    if a.shape.len() != 2 || b.shape.len() != 2 {
        return Err(CudaError::Plan(format!(
            "Gemm needs 2-D operands, got {:?} and {:?}",
            a.shape, b.shape
        )));
    }
    // (rows, cols) of op(X) for a 2-D X.
    let op_dims = |s: &[usize], t: bool| if t { (s[1], s[0]) } else { (s[0], s[1]) };
    let ((m, k), (k2, n)) = (
        op_dims(&a.shape, attrs.trans_a),
        op_dims(&b.shape, attrs.trans_b),
    );
    if k != k2 {
        return Err(CudaError::Plan(format!(
            "Gemm of {:?} and {:?}: inner dims {k} and {k2} differ",
            a.shape, b.shape
        )));
    }
    let shape = vec![m, n];
    let (mut out, beta) = match c {
        Some(c) if attrs.beta != 0.0 => {
            if !matches!(&*c.data, DeviceData::F32(_)) {
                return Ok(None);
            }
            let filled = copy_to_new(
                lane,
                c,
                &StridedMeta::expand(&c.shape, &shape)?,
                shape.clone(),
            )?;
            match std::sync::Arc::try_unwrap(filled.data) {
                Ok(DeviceData::F32(buf)) => (buf, attrs.beta),
                _ => {
                    return Err(CudaError::Plan(
                        "Gemm: C could not be materialised as f32".into(),
                    ))
                }
            }
        }
        _ => (
            lane.stream
                .alloc_zeros::<f32>((m * n).max(1))
                .map_err(CudaError::driver)?,
            0.0,
        ),
    };
    match gemm_work(m, n, k, beta) {
        GemmWork::Done => {}
        GemmWork::ScaleC(beta) => {
            let c = DeviceTensor::new(a.dtype, shape, DeviceData::F32(out));
            return super::elementwise::scale(lane, &c, beta).map(Some);
        }
        GemmWork::Blas => {
            let cfg = config(
                row_major_gemm(m, n, k, attrs.trans_a, attrs.trans_b),
                attrs.alpha,
                beta,
            )?;
            // SAFETY: A, B and C hold m·k, k·n and m·n f32 elements, matching the leading
            // dimensions computed by row_major_gemm for these transposition flags.
            unsafe { lane.blas.gemm(cfg, bv, av, &mut out) }.map_err(CudaError::blas)?;
        }
    }
    Ok(Some(DeviceTensor::new(
        a.dtype,
        shape,
        DeviceData::F32(out),
    )))
}

/// What remains of a Gemm once the output holds C broadcast to `[m, n]` (or zeros, with
/// `beta` 0).
#[derive(Debug, Clone, Copy, PartialEq)]
enum GemmWork {
    /// Nothing: an empty output, or K = 0 with beta 1 or without C.
    Done,
    /// K = 0: alpha·A·B is zero, the result is beta·C (as on the CPU).
    ScaleC(f32),
    /// A cuBLAS sgemm with this beta.
    Blas,
}

fn gemm_work(m: usize, n: usize, k: usize, beta: f32) -> GemmWork {
    if m * n == 0 {
        GemmWork::Done
    } else if k == 0 {
        if beta == 0.0 || beta == 1.0 {
            GemmWork::Done
        } else {
            GemmWork::ScaleC(beta)
        }
    } else {
        GemmWork::Blas
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_with_k_0_still_applies_beta_to_c() {
        assert_eq!(gemm_work(2, 3, 0, 0.5), GemmWork::ScaleC(0.5));
        assert_eq!(gemm_work(2, 3, 0, 1.0), GemmWork::Done);
        // beta 0: the output was allocated as zeros (C is not read).
        assert_eq!(gemm_work(2, 3, 0, 0.0), GemmWork::Done);
        assert_eq!(gemm_work(0, 3, 4, 2.0), GemmWork::Done);
        assert_eq!(gemm_work(2, 3, 4, 2.0), GemmWork::Blas);
        // The CPU reference gives beta·C for K = 0.
        use tessera_ir::op::GemmAttrs;
        use tessera_ir::{DType, Op, Tensor, TensorData};
        let t = |shape: Vec<usize>, v: Vec<f32>| {
            Tensor::new(DType::F32, shape, TensorData::F32(v)).expect("tensor")
        };
        let (a, b, c) = (
            t(vec![2, 0], vec![]),
            t(vec![0, 3], vec![]),
            t(vec![3], vec![1.0, 2.0, 3.0]),
        );
        let op = Op::Gemm(GemmAttrs {
            alpha: 1.0,
            beta: 0.5,
            trans_a: false,
            trans_b: false,
        });
        let cpu = tessera_kernels::eval(&op, &[&a, &b, &c])
            .expect("cpu")
            .remove(0);
        assert_eq!(
            cpu.data,
            TensorData::F32(vec![0.5, 1.0, 1.5, 0.5, 1.0, 1.5])
        );
    }

    /// Column-major reference sgemm on host slices, to check the row-major mapping.
    #[allow(clippy::too_many_arguments)]
    fn sgemm_cm(
        ta: bool,
        tb: bool,
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        lda: usize,
        b: &[f32],
        ldb: usize,
        c: &mut [f32],
        ldc: usize,
    ) {
        for j in 0..n {
            for i in 0..m {
                let mut s = 0.0;
                for p in 0..k {
                    let x = if ta { a[p + i * lda] } else { a[i + p * lda] };
                    let y = if tb { b[j + p * ldb] } else { b[p + j * ldb] };
                    s += x * y;
                }
                c[i + j * ldc] = s;
            }
        }
    }

    #[test]
    fn row_major_mapping_matches_the_cpu_kernels_product() {
        let (m, n, k) = (2usize, 3usize, 4usize);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 - 3.0).collect(); // row-major [M,K]
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32) * 0.5).collect(); // row-major [K,N]
                                                                          // The CPU kernels' product (exact here: small integers and halves).
        let (ta_, tb_) = (
            tessera_ir::Tensor::f32(vec![m, k], a.clone()),
            tessera_ir::Tensor::f32(vec![k, n], b.clone()),
        );
        let op = tessera_ir::Op::MatMul(tessera_ir::op::MatMulAttrs {});
        let want = tessera_kernels::eval(&op, &[&ta_, &tb_]).unwrap()[0]
            .as_f32()
            .unwrap()
            .to_vec();
        // Transposed storage variants of the same operands.
        let at: Vec<f32> = (0..k * m).map(|idx| a[(idx % m) * k + idx / m]).collect(); // [K,M]
        let bt: Vec<f32> = (0..n * k).map(|idx| b[(idx % k) * n + idx / k]).collect(); // [N,K]
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let p = row_major_gemm(m, n, k, ta, tb);
            let (sa, sb) = (if ta { &at } else { &a }, if tb { &bt } else { &b });
            let mut c = vec![0f32; m * n];
            sgemm_cm(
                p.trans_first,
                p.trans_second,
                p.m,
                p.n,
                p.k,
                sb,
                p.ld_first,
                sa,
                p.ld_second,
                &mut c,
                p.ldc,
            );
            assert_eq!(c, want, "trans_a={ta} trans_b={tb}");
        }
    }
}
