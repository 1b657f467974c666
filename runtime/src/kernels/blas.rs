//! f32 matrix products through the system OpenBLAS (feature `openblas`).
//!
//! OpenBLAS has AVX-512 kernels that the `gemm` crate only enables on nightly Rust; with this
//! feature every f32 product whose operands have a unit stride in one dimension goes to
//! `cblas_sgemm`. OpenBLAS runs single-threaded: each CPU device is one thread.
use super::matmul::MatView;
use cblas_sys::{cblas_sgemm, CBLAS_LAYOUT, CBLAS_TRANSPOSE};
use std::sync::Once;

extern "C" {
    fn openblas_set_num_threads(num_threads: std::ffi::c_int);
}

/// Leading dimension and transpose flag of a row-major view, if BLAS can take it.
fn layout(v: &MatView<'_, f32>, rows: usize, cols: usize) -> Option<(CBLAS_TRANSPOSE, i32)> {
    if v.cs == 1 && v.rs >= cols.max(1) {
        Some((CBLAS_TRANSPOSE::CblasNoTrans, v.rs as i32))
    } else if v.rs == 1 && v.cs >= rows.max(1) {
        Some((CBLAS_TRANSPOSE::CblasTrans, v.cs as i32))
    } else {
        None
    }
}

/// `dst[m×n] = scale·A·B + (accumulate ? dst : 0)`; false when the strides do not suit BLAS
/// (the caller then uses the `gemm` crate). Bounds were checked by the caller.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_off: usize,
    a: &MatView<'_, f32>,
    b: &MatView<'_, f32>,
    scale: f32,
    accumulate: bool,
) -> bool {
    let (Some((ta, lda)), Some((tb, ldb))) = (layout(a, m, k), layout(b, k, n)) else {
        return false;
    };
    if [m, n, k, lda as usize, ldb as usize]
        .iter()
        .any(|&d| d > i32::MAX as usize)
    {
        return false;
    }
    static SINGLE_THREAD: Once = Once::new();
    SINGLE_THREAD.call_once(|| {
        // SAFETY: plain setter of OpenBLAS's global thread count, called once before any
        // product of this process.
        unsafe { openblas_set_num_threads(1) }
    });
    // SAFETY: the caller checked that every element (i, l) of A, (l, j) of B and
    // dst[dst_off .. dst_off + m·n] is in bounds; `layout` gave leading dimensions that
    // match those strides (≥ the row length), and dst is exclusively borrowed.
    unsafe {
        cblas_sgemm(
            CBLAS_LAYOUT::CblasRowMajor,
            ta,
            tb,
            m as i32,
            n as i32,
            k as i32,
            scale,
            a.data.as_ptr().add(a.off),
            lda,
            b.data.as_ptr().add(b.off),
            ldb,
            if accumulate { 1.0 } else { 0.0 },
            dst.as_mut_ptr().add(dst_off),
            n as i32,
        );
    }
    true
}
