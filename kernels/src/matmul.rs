//! MatMul (numpy semantics, batched with broadcasting) and Gemm, through the `gemm` crate.
//!
//! Floats multiply in f32; integers in f64 (exact below 2^53) and round back.
use super::index::{broadcast_offsets, broadcast_shapes};
use super::matmul_narrow::{a_bt, NARROW_ROWS};
use super::{describe, make, wrap_int, KResult};
use std::mem::MaybeUninit;
use tessera_ir::op::GemmAttrs;
use tessera_ir::{DType, Tensor, TensorData};

/// A row/column-strided matrix view: element (i, j) is at `data[off + i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub(crate) struct MatView<'a, T> {
    pub data: &'a [T],
    pub off: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> MatView<'a, T> {
    /// A view with element (i, j) at `data[off + i·rs + j·cs]`.
    pub fn new(data: &'a [T], off: usize, rs: usize, cs: usize) -> Self {
        Self { data, off, rs, cs }
    }

    /// A row-major matrix at `off`: rows `rs` apart, columns adjacent.
    pub fn row_major(data: &'a [T], off: usize, rs: usize) -> Self {
        Self::new(data, off, rs, 1)
    }

    /// A column-major matrix at `off` (the transpose of a row-major one): columns `cs`
    /// apart, rows adjacent.
    pub fn col_major(data: &'a [T], off: usize, cs: usize) -> Self {
        Self::new(data, off, 1, cs)
    }

    /// True when every element of a `rows × cols` matrix lies inside `data`.
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0
            || cols == 0
            || self.off + (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// Element types the products run in (f32 for floats, f64 for integers).
pub(crate) trait Scalar: 'static + Copy + From<f32> {}

impl Scalar for f64 {}

impl Scalar for f32 {}

/// Multiply-adds below which one thread does the whole product while the pool's other
/// threads sleep ([`crate::split_min`]).
const PARALLEL_MIN_MACS: usize = 1 << 21;

/// The `gemm` crate's parallelism: every thread of the rayon pool this call runs in (a CPU
/// device with several threads runs its large products inside its pool), else one thread.
/// The crate splits the output into blocks, never the inner dimension, so the result does
/// not depend on the thread count.
fn parallelism(macs: usize) -> gemm::Parallelism {
    match crate::pool_threads() {
        t if t > 1 && macs >= crate::split_min(PARALLEL_MIN_MACS) => gemm::Parallelism::Rayon(t),
        _ => gemm::Parallelism::None,
    }
}

/// `dst[m×n] (row-major, row stride n, at dst_off) = scale·A·B + (accumulate ? dst : 0)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_into<T: Scalar>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    dst_off: usize,
    a: MatView<'_, T>,
    b: MatView<'_, T>,
    scale: T,
    accumulate: bool,
) -> KResult<()> {
    gemm_into_strided(m, n, k, dst, (dst_off, n, 1), a, b, scale, accumulate)
}

/// [`gemm_into`] with element (i, j) of the product at `dst[off + i·rs + j·cs]`, for a
/// row-major (`cs == 1`, `rs >= n`) or column-major (`rs == 1`, `cs >= m`) placement, so
/// that no two elements share a place.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_into_strided<T: Scalar>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    (off, rs, cs): (usize, usize, usize),
    a: MatView<'_, T>,
    b: MatView<'_, T>,
    scale: T,
    accumulate: bool,
) -> KResult<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    let distinct = (cs == 1 && rs >= n) || (rs == 1 && cs >= m);
    let last = off + (m - 1) * rs + (n - 1) * cs;
    if !a.fits(m, k) || !b.fits(k, n) || !distinct || last >= dst.len() {
        return Err(format!("gemm operands out of bounds for {m}x{k}·{k}x{n}"));
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst[off + i * rs + j * cs] = T::from(0.0);
                }
            }
        }
        return Ok(());
    }
    // SAFETY: `fits` checked above that every element (i, l) of A (i < m, l < k) and (l, j) of
    // B (l < k, j < n) lies within its slice; every dst element (i, j) is at
    // off + i·rs + j·cs <= `last` < dst.len(), distinct (i, j) at distinct places (`distinct`),
    // and dst is exclusively borrowed; all strides are non-negative.
    unsafe {
        raw_gemm(
            (m, n, k),
            dst.as_mut_ptr().add(off),
            (rs, cs),
            accumulate,
            a,
            b,
            scale,
        )
    };
    Ok(())
}

/// `dst[m×n] (row-major, row stride n) = A·B` written into memory that need not be
/// initialised: every element is written, none is read (a Conv output allocated for its
/// product, whose bias comes after in the epilogue instead of being stored first and read
/// back by the product).
pub(crate) fn gemm_write_uninit<T: Scalar>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [MaybeUninit<T>],
    a: MatView<'_, T>,
    b: MatView<'_, T>,
) -> KResult<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    if !a.fits(m, k) || !b.fits(k, n) || dst.len() < m * n {
        return Err(format!("gemm operands out of bounds for {m}x{k}·{k}x{n}"));
    }
    if k == 0 {
        dst[..m * n].fill(MaybeUninit::new(T::from(0.0)));
        return Ok(());
    }
    // SAFETY: `fits` checked that every element (i, l) of A and (l, j) of B lies within its
    // slice, and dst holds the m·n row-major elements, exclusively borrowed. With
    // `accumulate` false the `gemm` crate stores every element of dst without reading it, so
    // uninitialised memory is never read; MaybeUninit<T> has T's layout.
    unsafe {
        raw_gemm(
            (m, n, k),
            dst.as_mut_ptr().cast::<T>(),
            (n, 1),
            false,
            a,
            b,
            T::from(1.0),
        )
    };
    Ok(())
}

/// `dst = scale·A·B (+ dst when accumulate)` through the `gemm` crate, element (i, j) of dst
/// at `dst + i·rs + j·cs`.
///
/// # Safety
/// A's and B's views must fit `m×k` and `k×n`; every (i, j) < (m, n) must address a distinct
/// element of one allocation that the caller may write (and read when `accumulate`); T is
/// f32 or f64 (both supported by `gemm::gemm`); k > 0.
unsafe fn raw_gemm<T: Scalar>(
    (m, n, k): (usize, usize, usize),
    dst: *mut T,
    (rs, cs): (usize, usize),
    accumulate: bool,
    a: MatView<'_, T>,
    b: MatView<'_, T>,
    scale: T,
) {
    // SAFETY: the caller's contract above: every pointer the gemm crate forms lies in the
    // views and dst checked by the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            cs as isize,
            rs as isize,
            accumulate,
            a.data.as_ptr().add(a.off),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr().add(b.off),
            b.cs as isize,
            b.rs as isize,
            T::from(1.0),
            scale,
            false,
            false,
            false,
            parallelism(m * n * k),
        )
    }
}

/// Batched row-major matmul of `a [.., m, k]` and `b [.., k, n]` with broadcast batch shapes
/// (already validated). Returns the output elements.
#[allow(clippy::too_many_arguments)]
fn batched<T: Scalar>(
    a: &[T],
    a_batch: &[usize],
    b: &[T],
    b_batch: &[usize],
    out_batch: &[usize],
    m: usize,
    k: usize,
    n: usize,
) -> KResult<Vec<T>> {
    let nb: usize = out_batch.iter().product();
    let len = nb * m * n;
    // The products write every element without reading it: no zero-fill first.
    let mut out: Vec<T> = Vec::with_capacity(len);
    if len == 0 {
        return Ok(out);
    }
    let dst = &mut out.spare_capacity_mut()[..len];
    let b_count: usize = b_batch.iter().product();
    let a_count: usize = a_batch.iter().product();
    if b_count == 1 && a_count == nb {
        // B shared by every batch: one (nb·m) × k by k × n product.
        let av = MatView::row_major(a, 0, k);
        let bv = MatView::row_major(b, 0, n);
        gemm_write_uninit(nb * m, n, k, dst, av, bv)?;
    } else {
        let ia = broadcast_offsets(a_batch, out_batch).ok_or("batch shapes do not broadcast")?;
        let ib = broadcast_offsets(b_batch, out_batch).ok_or("batch shapes do not broadcast")?;
        // One block of m·n per output batch, in order: together they cover all of `dst`.
        for ((&oa, &ob), block) in ia.iter().zip(&ib).zip(dst.chunks_exact_mut(m * n)) {
            let av = MatView::row_major(a, oa * m * k, k);
            let bv = MatView::row_major(b, ob * k * n, n);
            gemm_write_uninit(m, n, k, block, av, bv)?;
        }
    }
    // SAFETY: the products above wrote all `len` elements (every batch's block, whole).
    unsafe { out.set_len(len) };
    Ok(out)
}

/// numpy `matmul`: 1-D operands are promoted (and the added axis removed), batch axes
/// broadcast.
pub(crate) fn matmul(a: &Tensor, b: &Tensor) -> KResult<Tensor> {
    let bad = || format!("cannot multiply {} by {}", describe(a), describe(b));
    if a.shape.is_empty() || b.shape.is_empty() {
        return Err(bad());
    }
    let a2: Vec<usize> = if a.shape.len() == 1 {
        vec![1, a.shape[0]]
    } else {
        a.shape.clone()
    };
    let b2: Vec<usize> = if b.shape.len() == 1 {
        vec![b.shape[0], 1]
    } else {
        b.shape.clone()
    };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != k2 {
        return Err(bad());
    }
    let (ab, bb) = (&a2[..a2.len() - 2], &b2[..b2.len() - 2]);
    let out_batch = broadcast_shapes(ab, bb).ok_or_else(bad)?;
    let mut out_shape = out_batch.clone();
    if a.shape.len() > 1 {
        out_shape.push(m);
    }
    if b.shape.len() > 1 {
        out_shape.push(n);
    }
    match (&a.data, &b.data) {
        (TensorData::F32(x), TensorData::F32(y)) => {
            let v = batched(x, ab, y, bb, &out_batch, m, k, n)?;
            make(a.dtype, out_shape, TensorData::F32(v))
        }
        (TensorData::I64(x), TensorData::I64(y)) => {
            let v = batched_i64(x, ab, y, bb, &out_batch, m, k, n)?;
            let dt = a.dtype;
            make(
                dt,
                out_shape,
                TensorData::I64(v.into_iter().map(|e| wrap_int(dt, e)).collect()),
            )
        }
        _ => Err(bad()),
    }
}

/// Batched integer matmul (shapes as [`batched`]) with wrapping i64 products and sums:
/// exact modulo 2^64, as numpy's integer matmul (an f64 product is inexact above 2^53).
#[allow(clippy::too_many_arguments)]
fn batched_i64(
    a: &[i64],
    a_batch: &[usize],
    b: &[i64],
    b_batch: &[usize],
    out_batch: &[usize],
    m: usize,
    k: usize,
    n: usize,
) -> KResult<Vec<i64>> {
    let ia = broadcast_offsets(a_batch, out_batch).ok_or("batch shapes do not broadcast")?;
    let ib = broadcast_offsets(b_batch, out_batch).ok_or("batch shapes do not broadcast")?;
    let mut out = vec![0i64; ia.len() * m * n];
    if m * n == 0 {
        return Ok(out);
    }
    for ((&oa, &ob), o) in ia.iter().zip(&ib).zip(out.chunks_exact_mut(m * n)) {
        let (a, b) = (
            &a[oa * m * k..(oa + 1) * m * k],
            &b[ob * k * n..(ob + 1) * k * n],
        );
        for (i, row) in o.chunks_exact_mut(n).enumerate() {
            for (l, brow) in b.chunks_exact(n).enumerate() {
                let x = a[i * k + l];
                row.iter_mut()
                    .zip(brow)
                    .for_each(|(r, &e)| *r = r.wrapping_add(x.wrapping_mul(e)));
            }
        }
    }
    Ok(out)
}

/// True when a tensor of `shape` is one row of `n` values (`[n]`, `[1, n]`), broadcast over
/// every row of an `[M, n]` output.
fn is_row_vector(shape: &[usize], n: usize) -> bool {
    matches!(shape, [k] | [1, k] if *k == n)
}

/// Gemm: `alpha·op(A)·op(B) + beta·C`, C broadcast to `[M, N]`.
pub(crate) fn gemm(
    attrs: &GemmAttrs,
    a: &Tensor,
    b: &Tensor,
    c: Option<&Tensor>,
) -> KResult<Tensor> {
    let bad = || format!("cannot apply Gemm to {} and {}", describe(a), describe(b));
    if a.shape.len() != 2 || b.shape.len() != 2 {
        return Err(bad());
    }
    let (m, k) = if attrs.trans_a {
        (a.shape[1], a.shape[0])
    } else {
        (a.shape[0], a.shape[1])
    };
    let (k2, n) = if attrs.trans_b {
        (b.shape[1], b.shape[0])
    } else {
        (b.shape[0], b.shape[1])
    };
    if k != k2 {
        return Err(bad());
    }
    // Start from beta·C broadcast to [M, N] (or zeros); an f32 bias row is broadcast below
    // without the offset table.
    let fast_f32 =
        matches!((&a.data, c), (TensorData::F32(_), Some(c)) if is_row_vector(&c.shape, n));
    let c_full: Option<Vec<f64>> = match c {
        Some(c) if attrs.beta != 0.0 && !fast_f32 => {
            let idx = broadcast_offsets(&c.shape, &[m, n])
                .ok_or_else(|| format!("C {} does not broadcast to [{m}, {n}]", describe(c)))?;
            let cv = c.to_f64_vec();
            Some(idx.iter().map(|&i| cv[i] * attrs.beta as f64).collect())
        }
        _ => None,
    };
    let (a_rs, a_cs) = if attrs.trans_a { (1, m) } else { (k, 1) };
    let (b_rs, b_cs) = if attrs.trans_b { (1, k) } else { (n, 1) };
    let acc = c.is_some() && attrs.beta != 0.0;
    match (&a.data, &b.data) {
        (TensorData::F32(x), TensorData::F32(y)) => {
            let mut out: Vec<f32> = match (c, c_full) {
                (Some(c), _) if acc && is_row_vector(&c.shape, n) => {
                    // A bias over the columns: beta·C once, then one row copy per output
                    // row (the general path's arithmetic, without its offset table).
                    let beta = attrs.beta as f64;
                    let row: Vec<f32> = c
                        .to_f64_vec()
                        .into_iter()
                        .map(|e| (e * beta) as f32)
                        .collect();
                    let mut out = Vec::with_capacity(m * n);
                    (0..m).for_each(|_| out.extend_from_slice(&row));
                    out
                }
                (_, Some(v)) => v.into_iter().map(|e| e as f32).collect(),
                (_, None) => vec![0.0; m * n],
            };
            if !attrs.trans_a && attrs.trans_b && m <= NARROW_ROWS {
                a_bt((m, n, k), x, y, attrs.alpha, acc, &mut out)?;
            } else {
                let av = MatView::new(x, 0, a_rs, a_cs);
                let bv = MatView::new(y, 0, b_rs, b_cs);
                gemm_into(m, n, k, &mut out, 0, av, bv, attrs.alpha, acc)?;
            }
            make(a.dtype, vec![m, n], TensorData::F32(out))
        }
        (TensorData::I64(x), TensorData::I64(y)) => {
            let dt = if a.dtype.is_int() {
                a.dtype
            } else {
                DType::I64
            };
            // alpha 1 and beta 0 or 1 (the integer Gemms exporters write): exact wrapping
            // i64 arithmetic, as numpy. Other scales multiply in f64 and round.
            let c_int = match c {
                Some(c) if attrs.beta == 1.0 => c.as_i64().map(|cv| (c, cv)),
                _ => None,
            };
            let exact = attrs.alpha == 1.0 && (c_full.is_none() || c_int.is_some());
            let out: Vec<i64> = if exact {
                let mut out = vec![0i64; m * n];
                if let Some((c, cv)) = c_int {
                    // C broadcasts to [M, N]: checked when c_full was built.
                    let idx = broadcast_offsets(&c.shape, &[m, n]).unwrap_or_default();
                    out.iter_mut().zip(&idx).for_each(|(o, &i)| *o = cv[i]);
                }
                for (i, row) in out.chunks_exact_mut(n.max(1)).enumerate().take(m) {
                    for l in 0..k {
                        let e = x[i * a_rs + l * a_cs];
                        for (j, o) in row.iter_mut().enumerate() {
                            *o = o.wrapping_add(e.wrapping_mul(y[l * b_rs + j * b_cs]));
                        }
                    }
                }
                out
            } else {
                let (xf, yf) = (a.to_f64_vec(), b.to_f64_vec());
                let mut out = c_full.unwrap_or_else(|| vec![0.0; m * n]);
                let av = MatView::new(&xf, 0, a_rs, a_cs);
                let bv = MatView::new(&yf, 0, b_rs, b_cs);
                gemm_into(m, n, k, &mut out, 0, av, bv, attrs.alpha as f64, acc)?;
                out.into_iter().map(|e| e.round() as i64).collect()
            };
            make(
                dt,
                vec![m, n],
                TensorData::I64(out.into_iter().map(|e| wrap_int(dt, e)).collect()),
            )
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gemm attributes: `alpha·op(A)·op(B) + beta·C`, `op` transposing where asked.
    fn gemm_attrs(alpha: f32, beta: f32, trans_a: bool, trans_b: bool) -> GemmAttrs {
        GemmAttrs {
            alpha,
            beta,
            trans_a,
            trans_b,
        }
    }

    #[test]
    fn matmul_2d_and_vector_forms() {
        let a = Tensor::f32(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let b = Tensor::f32(vec![3, 2], vec![7.0, 8.0, 9.0, 10.0, 11.0, 12.0]);
        let c = matmul(&a, &b).unwrap();
        assert_eq!(c.shape, vec![2, 2]);
        assert_eq!(c.as_f32().unwrap(), &[58.0, 64.0, 139.0, 154.0]);
        let v = Tensor::f32(vec![3], vec![1.0, 0.0, -1.0]);
        let av = matmul(&a, &v).unwrap();
        assert_eq!(
            (av.shape.clone(), av.as_f32().unwrap().to_vec()),
            (vec![2], vec![-2.0, -2.0])
        );
        let va = matmul(&Tensor::f32(vec![2], vec![1.0, 1.0]), &a).unwrap();
        assert_eq!(
            (va.shape.clone(), va.as_f32().unwrap().to_vec()),
            (vec![3], vec![5.0, 7.0, 9.0])
        );
        assert!(matmul(&a, &a).is_err());
    }

    #[test]
    fn matmul_broadcast_batches() {
        // A [2,1,2,2] (two batches), B [3,2,2] (three batches) → [2,3,2,2].
        let a = Tensor::f32(
            vec![2, 1, 2, 2],
            vec![1.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 2.0],
        );
        let b = Tensor::f32(vec![3, 2, 2], (0..12).map(|x| x as f32).collect());
        let c = matmul(&a, &b).unwrap();
        assert_eq!(c.shape, vec![2, 3, 2, 2]);
        let v = c.as_f32().unwrap();
        assert_eq!(&v[..12], b.as_f32().unwrap());
        let doubled: Vec<f32> = b.as_f32().unwrap().iter().map(|x| 2.0 * x).collect();
        assert_eq!(&v[12..], &doubled[..]);
    }

    /// Products over an empty inner axis are zeros (written, not left uninitialised), in
    /// both the shared-matrix and the per-batch form; empty outputs are empty.
    #[test]
    fn empty_inner_and_outer_axes() {
        let zeros = |t: Tensor| t.as_f32().unwrap().iter().all(|&x| x == 0.0);
        let shared = matmul(
            &Tensor::f32(vec![2, 3, 0], vec![]),
            &Tensor::f32(vec![0, 4], vec![]),
        );
        let shared = shared.unwrap();
        assert_eq!(shared.shape, vec![2, 3, 4]);
        assert!(zeros(shared));
        let a = Tensor::f32(vec![2, 3, 0], vec![]);
        let per_batch = matmul(&a, &Tensor::f32(vec![2, 0, 5], vec![])).unwrap();
        assert_eq!(per_batch.shape, vec![2, 3, 5]);
        assert!(zeros(per_batch));
        let empty = matmul(
            &Tensor::f32(vec![2, 0, 3], vec![]),
            &Tensor::f32(vec![2, 3, 4], vec![0.5; 24]),
        );
        assert_eq!(empty.unwrap().shape, vec![2, 0, 4]);
    }

    #[test]
    fn matmul_batched_by_shared_matrix_and_ints() {
        let a = Tensor::i64(vec![2, 1, 2], vec![1, 2, 3, 4]);
        let b = Tensor::i64(vec![2, 2], vec![1, 1, 0, 1]);
        let c = matmul(&a, &b).unwrap();
        assert_eq!(c.shape, vec![2, 1, 2]);
        assert_eq!(c.as_i64().unwrap(), &[1, 3, 3, 7]);
    }

    /// Integer Gemm with alpha 1 and beta 1 is exact and wraps like MatMul (plus C).
    #[test]
    fn integer_gemm_is_exact_and_wraps() {
        let big = (1i64 << 53) + 1;
        let a = Tensor::i64(vec![2, 2], vec![big, i64::MAX, 1, 1]);
        let b = Tensor::i64(vec![2, 1], vec![1, 2]);
        let c = Tensor::i64(vec![1], vec![3]);
        // A stored transposed: op(A) = [[big, 1], [i64::MAX, 1]].
        let attrs = gemm_attrs(1.0, 1.0, true, false);
        let y = gemm(&attrs, &a, &b, Some(&c)).unwrap();
        assert_eq!(y.as_i64().unwrap(), &[big + 5, i64::MIN + 4]);
        let scaled = GemmAttrs {
            alpha: 2.0,
            ..attrs
        };
        let y = gemm(
            &scaled,
            &Tensor::i64(vec![1, 1], vec![3]),
            &Tensor::i64(vec![1, 1], vec![4]),
            None,
        );
        assert_eq!(y.unwrap().as_i64().unwrap(), &[24]);
    }

    /// Integer products are exact and wrap modulo 2^64 (then to the dtype), as numpy: the
    /// f64 product gave 2^53 for 2^53 + 1 and saturated instead of wrapping.
    #[test]
    fn integer_matmul_is_exact_and_wraps() {
        let big = (1i64 << 53) + 1;
        let a = Tensor::i64(vec![2, 2], vec![big, 1, i64::MAX, 1]);
        let b = Tensor::i64(vec![2, 1], vec![1, 2]);
        let c = matmul(&a, &b).unwrap();
        // [2^53 + 3, i64::MAX + 2 wrapped]
        assert_eq!(c.as_i64().unwrap(), &[big + 2, i64::MIN + 1]);
        let mut a32 = Tensor::i64(vec![1, 2], vec![65536, 1]);
        a32.dtype = DType::I32;
        let mut b32 = Tensor::i64(vec![2], vec![65536, 5]);
        b32.dtype = DType::I32;
        // 2^32 + 5 wraps to 5 in int32.
        assert_eq!(matmul(&a32, &b32).unwrap().as_i64().unwrap(), &[5]);
        // Batched with broadcasting and empty inner dimension.
        let e = matmul(
            &Tensor::i64(vec![3, 2, 0], vec![]),
            &Tensor::i64(vec![0, 4], vec![]),
        )
        .unwrap();
        assert_eq!(
            (e.shape.clone(), e.as_i64().unwrap()),
            (vec![3, 2, 4], &[0i64; 24][..])
        );
    }

    #[test]
    fn gemm_transposes_alpha_beta_and_broadcast_c() {
        // A^T where A is stored [3,2]; B^T where B is stored [2,3].
        let a = Tensor::f32(vec![3, 2], vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        let b = Tensor::f32(vec![2, 3], vec![7.0, 9.0, 11.0, 8.0, 10.0, 12.0]);
        let c = Tensor::f32(vec![2], vec![1.0, -1.0]);
        let attrs = gemm_attrs(0.5, 2.0, true, true);
        let y = gemm(&attrs, &a, &b, Some(&c)).unwrap();
        // 0.5·[[58,64],[139,154]] + 2·[1,-1]
        assert_eq!(y.as_f32().unwrap(), &[31.0, 30.0, 71.5, 75.0]);
        // The same C as a [1, N] row, a full [M, N] matrix and an [M, 1] column.
        let row = Tensor::f32(vec![1, 2], vec![1.0, -1.0]);
        let full = Tensor::f32(vec![2, 2], vec![1.0, -1.0, 1.0, -1.0]);
        for c in [&row, &full] {
            let y = gemm(&attrs, &a, &b, Some(c)).unwrap();
            assert_eq!(y.as_f32().unwrap(), &[31.0, 30.0, 71.5, 75.0]);
        }
        let col = Tensor::f32(vec![2, 1], vec![1.0, -1.0]);
        let y = gemm(&attrs, &a, &b, Some(&col)).unwrap();
        assert_eq!(y.as_f32().unwrap(), &[31.0, 34.0, 67.5, 75.0]);
        let plain = gemm_attrs(1.0, 1.0, false, false);
        assert!(gemm(&plain, &a, &b, None).is_ok());
        assert!(gemm(&plain, &a, &a, None).is_err());
    }
}
