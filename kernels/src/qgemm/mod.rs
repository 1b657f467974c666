//! Integer GEMM of a quantised activation and a quantised weight: the canonical
//! `MatMul(Dequantize(Quantize(x, sq, zq), sd, zd), W)` with `W` an int8/uint8 weight with a
//! scale and zero point per output column, as onnxruntime's static (QDQ) and dynamic
//! quantisation write every Linear layer.
//!
//! The activation is quantised row by row into bytes (the [`Op::Quantize`] formula, bit for
//! bit), the products of bytes are summed exactly in 32-bit integers (AVX-512 VNNI
//! `vpdpbusd`: unsigned activation bytes times signed weight bytes, four per lane), and the
//! zero points and scales are applied once per output:
//!
//! ```text
//! a = q − zd = a_u − α      (a_u = q + 128 for int8 activations, q for uint8; α = zd + that)
//! w = q_w − wz = w_s − β    (w_s = q_w − 128 for uint8 weights, q_w for int8; β = wz − that)
//! Σ a·w = Σ a_u·w_s − β·Σ a_u − α·Σ w_s + K·α·β
//! y = sd · ws · Σ a·w (+ bias, then GELU)
//! ```
//!
//! The weight is packed once ([`PackedQWeight::pack`]): 16 columns by 4 rows of K per
//! 64-byte block, the layout `vpdpbusd` reads, with each column's sum of `w_s`.
//!
//! [`Op::Quantize`]: tessera_ir::Op::Quantize
use super::simd::vectorized;
use super::unary::{gelu_erf, gelu_tanh};
use super::KResult;
use tessera_ir::{DType, Tensor, TensorData};

/// Columns per panel (one 512-bit register of 32-bit sums).
const LANES: usize = 16;

/// A weight `[K, N]` of int8/uint8 values with one scale and zero point per column, packed
/// for the integer GEMM.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedQWeight {
    k: usize,
    n: usize,
    /// Groups of 4 rows (K rounded up to 4, zero-padded).
    groups: usize,
    /// Panels of [`LANES`] columns (N rounded up, zero-padded).
    panels: usize,
    /// `w_s` bytes: panel p, group g, column j, row i at `((p·groups + g)·16 + j)·4 + i`.
    data: Vec<i8>,
    /// Per column (padded): `Σ_k w_s`.
    colsum: Vec<i32>,
    /// Per column (padded with 0): the scale.
    scale: Vec<f32>,
    /// Per column (padded with 0): `β = wz − (128 for uint8, 0 for int8)`.
    beta: Vec<f32>,
}

impl PackedQWeight {
    /// Packs `values` (`[k, n]` row-major, integers of `stored`, int8 or uint8) with per-column
    /// `scale` and `zero` points (`n` each).
    pub fn pack(
        k: usize,
        n: usize,
        values: &[i64],
        stored: DType,
        scale: &[f32],
        zero: &[i64],
    ) -> KResult<PackedQWeight> {
        let (shift, lo, hi) = stored_range(stored)?;
        check_sizes(k, n, values.len(), scale.len(), zero.len())?;
        if let Some(v) = values.iter().chain(zero).find(|v| !(lo..=hi).contains(*v)) {
            return Err(format!("value {v} is outside {stored}"));
        }
        let groups = k.div_ceil(4);
        let panels = n.div_ceil(LANES);
        let mut data = vec![0i8; panels * groups * LANES * 4];
        let mut colsum = vec![0i32; panels * LANES];
        for kk in 0..k {
            let (g, i) = (kk / 4, kk % 4);
            for c in 0..n {
                let (p, j) = (c / LANES, c % LANES);
                // In range: checked above, shifted into -128..=127.
                let w = (values[kk * n + c] - shift) as i8;
                data[((p * groups + g) * LANES + j) * 4 + i] = w;
                colsum[c] += w as i32;
            }
        }
        Ok(PackedQWeight::assemble(
            k, n, data, colsum, scale, zero, shift,
        ))
    }

    /// Packs a dequantised weight `w` (`[k, n]` f32, each element `(q − z) · s` of an
    /// integer `q` of `stored` with the per-column `scale` and `zero`) by recovering `q`:
    /// `round(w · (1/s)) + z` is exact, since `w` is `(q − z) · s` rounded once, the
    /// reciprocal and the product add two more roundings, and `|q − z| ≤ 255` keeps the
    /// error far below one half. For weights a plan gathers as dequantised floats, packed
    /// on every call: straight into the packed layout, four rows of K at a time.
    pub fn from_dequantised(
        k: usize,
        n: usize,
        w: &[f32],
        stored: DType,
        scale: &[f32],
        zero: &[i64],
    ) -> KResult<PackedQWeight> {
        check_sizes(k, n, w.len(), scale.len(), zero.len())?;
        let (shift, lo, hi) = stored_range(stored)?;
        let groups = k.div_ceil(4);
        let panels = n.div_ceil(LANES);
        let mut inv = vec![0f32; panels * LANES];
        let mut offset = vec![0f32; panels * LANES];
        for c in 0..n {
            inv[c] = 1.0 / scale[c];
            // The stored value's shift into int8, with the zero point: w_s = q − shift.
            offset[c] = (zero[c] - shift) as f32;
        }
        let mut data = vec![0i8; panels * groups * LANES * 4];
        let mut colsum = vec![0i32; panels * LANES];
        let bad = vectorized(
            #[inline(always)]
            || {
                // Locals, not the closure's captures: a flag behind a reference keeps the
                // loop scalar.
                let mut bad = false;
                for g in 0..groups {
                    for p in 0..panels {
                        let block = &mut data[(p * groups + g) * LANES * 4..][..LANES * 4];
                        let cols = LANES.min(n - p * LANES);
                        let inv: &[f32; LANES] =
                            (&inv[p * LANES..][..LANES]).try_into().expect("16");
                        let off: &[f32; LANES] =
                            (&offset[p * LANES..][..LANES]).try_into().expect("16");
                        let sums: &mut [i32; LANES] =
                            (&mut colsum[p * LANES..][..LANES]).try_into().expect("16");
                        let (vlo, vhi) = ((lo - shift) as f32, (hi - shift) as f32);
                        // Four rows of 16 columns: row i of column j is byte i of word j.
                        let mut words = [0u32; LANES];
                        for i in 0..4.min(k - g * 4) {
                            let mut row = [0f32; LANES];
                            row[..cols].copy_from_slice(&w[(g * 4 + i) * n + p * LANES..][..cols]);
                            for j in 0..LANES {
                                let v = (row[j] * inv[j]).round_ties_even() + off[j];
                                bad |= !(v >= vlo && v <= vhi);
                                // In -128..=127 unless `bad` (checked below); padded
                                // columns give 0 (their row values are 0).
                                let c = if v.is_nan() { 0.0 } else { v.max(vlo).min(vhi) };
                                // SAFETY: c is a whole number in [vlo, vhi] (NaN replaced).
                                let q = unsafe { c.to_int_unchecked::<i32>() };
                                sums[j] += q;
                                words[j] |= ((q as u32) & 0xff) << (8 * i);
                            }
                        }
                        for (d, word) in block.chunks_exact_mut(4).zip(words) {
                            for (b, byte) in d.iter_mut().zip(word.to_le_bytes()) {
                                *b = byte as i8;
                            }
                        }
                    }
                }
                bad
            },
        );
        if bad {
            return Err(format!(
                "the weight is not its {stored} values times the scales given"
            ));
        }
        Ok(PackedQWeight::assemble(
            k, n, data, colsum, scale, zero, shift,
        ))
    }

    /// The packed weight from its packed bytes and column sums, with the per-column terms
    /// padded to whole panels (zero columns).
    fn assemble(
        k: usize,
        n: usize,
        data: Vec<i8>,
        colsum: Vec<i32>,
        scale: &[f32],
        zero: &[i64],
        shift: i64,
    ) -> PackedQWeight {
        let panels = n.div_ceil(LANES);
        let mut beta: Vec<f32> = zero.iter().map(|&z| (z - shift) as f32).collect();
        beta.resize(panels * LANES, 0.0);
        let mut scale = scale.to_vec();
        scale.resize(panels * LANES, 0.0);
        PackedQWeight {
            k,
            n,
            groups: k.div_ceil(4),
            panels,
            data,
            colsum,
            scale,
            beta,
        }
    }

    /// `[K, N]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.k, self.n]
    }

    /// Bytes held (the packed weight and its per-column terms).
    pub fn bytes(&self) -> usize {
        self.data.len() + 4 * (self.colsum.len() + self.scale.len() + self.beta.len())
    }
}

/// A stored weight type's shift into int8 (`w_s = q − shift`) and its range.
fn stored_range(stored: DType) -> KResult<(i64, i64, i64)> {
    match stored {
        DType::I8 => Ok((0, -128, 127)),
        DType::U8 => Ok((128, 0, 255)),
        d => Err(format!("integer GEMM weights are int8 or uint8, got {d}")),
    }
}

/// `[k, n]` values with `n` scales and zero points.
fn check_sizes(k: usize, n: usize, values: usize, scales: usize, zeros: usize) -> KResult<()> {
    if values != k * n || scales != n || zeros != n {
        return Err(format!(
            "weight of {values} values, {scales} scales and {zeros} zero points for [{k}, {n}]"
        ));
    }
    Ok(())
}

/// True when this CPU runs the integer GEMM in hardware (AVX-512 VNNI); elsewhere it runs a
/// portable loop that is slower than the float GEMM, so callers keep the float path.
pub fn int8_gemm_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The activation side: `Quantize(x, sq, zq)` to `to`, then `Dequantize(·, sd, zd)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActQuant {
    /// The quantised type (uint8 or int8).
    pub to: DType,
    /// Quantize's scale and zero point.
    pub sq: f32,
    /// Quantize's zero point (an integer value).
    pub zq: f32,
    /// Dequantize's scale.
    pub sd: f32,
    /// Dequantize's zero point.
    pub zd: f32,
}

/// `y = Dequantize(Quantize(x)) · W (+ bias) (then GELU: `Some(tanh form)`)`, x `[..., K]`
/// f32, y `[..., N]`.
pub fn quant_matmul(
    x: &Tensor,
    act: ActQuant,
    w: &PackedQWeight,
    bias: Option<&[f32]>,
    gelu: Option<bool>,
) -> KResult<Tensor> {
    let xs = match (&x.data, x.dtype) {
        (TensorData::F32(v), DType::F32) => v,
        _ => return Err(format!("X must be f32, got {}", x.dtype)),
    };
    if x.shape.last() != Some(&w.k) {
        return Err(format!("X {:?} does not end in K = {}", x.shape, w.k));
    }
    if bias.is_some_and(|b| b.len() != w.n) {
        return Err(format!(
            "bias is not a vector of the {} output columns",
            w.n
        ));
    }
    let (lo, hi, offset) = match act.to {
        DType::U8 => (0.0, 255.0, 0.0),
        DType::I8 => (-128.0, 127.0, 128.0),
        d => return Err(format!("activations quantised to {d}: only uint8 and int8")),
    };
    let m = xs.len().checked_div(w.k).unwrap_or(0);
    let mut out = vec![0f32; m * w.n];
    let cfg = Epi {
        sd: act.sd,
        alpha: act.zd + offset,
        bias,
        gelu,
    };
    let rows_per = row_block(m, w);
    let run = |r0: usize, dst: &mut [f32]| {
        let rows = dst.len() / w.n.max(1);
        let mut a = vec![0u8; rows * w.groups * 4];
        let mut rowsum = vec![0i32; rows];
        vectorized(
            #[inline(always)]
            || {
                // Plain values (read through the closure's references, the loads of the
                // clamp bounds were vectorised as gathers).
                let (lo, hi, offset, sq, zq) = (lo, hi, offset, act.sq, act.zq);
                for r in 0..rows {
                    let src = &xs[(r0 + r) * w.k..(r0 + r + 1) * w.k];
                    let row = &mut a[r * w.groups * 4..][..w.k];
                    for (q, &v) in row.iter_mut().zip(src) {
                        // `quantize` spelled so that it vectorises (NaN becomes 0); in
                        // 0..=255 once the offset shifts int8 up.
                        let t = (v / sq).round_ties_even() + zq;
                        let c = if t.is_nan() { 0.0 } else { t.max(lo).min(hi) } + offset;
                        // SAFETY: c is an integer in 0..=255 (clamped, NaN replaced).
                        *q = unsafe { c.to_int_unchecked::<i32>() } as u8;
                    }
                    rowsum[r] = row.iter().map(|&u| u as i32).sum();
                }
            },
        );
        gemm_rows(&a, &rowsum, rows, w, &cfg, dst);
    };
    if w.n > 0 && m > 0 {
        if rows_per < m {
            use rayon::prelude::*;
            out.par_chunks_mut(rows_per * w.n)
                .enumerate()
                .for_each(|(i, dst)| run(i * rows_per, dst));
        } else {
            run(0, &mut out);
        }
    }
    let mut shape = x.shape.clone();
    if let Some(l) = shape.last_mut() {
        *l = w.n;
    }
    Tensor::new(DType::F32, shape, TensorData::F32(out)).map_err(|e| e.to_string())
}

/// `y = Dequantize(q, sd, zd) · W` for an integer activation `q` (`[..., K]`, uint8 or
/// int8 values): the product [`quant_matmul`] computes after its quantisation, with the
/// same arithmetic (the reference executor's exact quantised product).
pub fn dequant_matmul(q: &Tensor, sd: f32, zd: f32, w: &PackedQWeight) -> KResult<Tensor> {
    dequant_matmul_epilogue(q, sd, zd, w, None, None)
}

/// [`dequant_matmul`], then `+ bias` and a GELU (`Some(tanh form)`) as [`quant_matmul`].
pub fn dequant_matmul_epilogue(
    q: &Tensor,
    sd: f32,
    zd: f32,
    w: &PackedQWeight,
    bias: Option<&[f32]>,
    gelu: Option<bool>,
) -> KResult<Tensor> {
    if bias.is_some_and(|b| b.len() != w.n) {
        return Err(format!(
            "bias is not a vector of the {} output columns",
            w.n
        ));
    }
    let (TensorData::I64(qs), DType::U8 | DType::I8) = (&q.data, q.dtype) else {
        return Err(format!("Q must be uint8 or int8, got {}", q.dtype));
    };
    if q.shape.last() != Some(&w.k) {
        return Err(format!("Q {:?} does not end in K = {}", q.shape, w.k));
    }
    let offset = if q.dtype == DType::I8 { 128 } else { 0 };
    let m = qs.len().checked_div(w.k).unwrap_or(0);
    let stride = w.groups * 4;
    let mut a = vec![0u8; m * stride];
    let mut rowsum = vec![0i32; m];
    let k = w.k;
    let bad = vectorized(
        #[inline(always)]
        || {
            // A local flag (one behind a reference keeps the loop scalar).
            let mut bad = false;
            for r in 0..m {
                let row = &mut a[r * stride..][..k];
                for (d, &v) in row.iter_mut().zip(&qs[r * k..(r + 1) * k]) {
                    let u = v + offset;
                    bad |= !(0..=255).contains(&u);
                    *d = u.clamp(0, 255) as u8;
                }
                rowsum[r] = row.iter().map(|&u| u as i32).sum();
            }
            bad
        },
    );
    if bad {
        return Err(format!("Q holds values outside {}", q.dtype));
    }
    let e = Epi {
        sd,
        alpha: zd + offset as f32,
        bias,
        gelu,
    };
    let mut out = vec![0f32; m * w.n];
    if m > 0 && w.n > 0 {
        gemm_rows(&a, &rowsum, m, w, &e, &mut out);
    }
    let mut shape = q.shape.clone();
    if let Some(l) = shape.last_mut() {
        *l = w.n;
    }
    Tensor::new(DType::F32, shape, TensorData::F32(out)).map_err(|e| e.to_string())
}

/// Rows per parallel task: all of them on one thread or for small products.
fn row_block(m: usize, w: &PackedQWeight) -> usize {
    let threads = crate::pool_threads();
    if threads <= 1 || m * w.k * w.n < crate::split_min(1 << 21) {
        return m.max(1);
    }
    m.div_ceil(threads).div_ceil(4).max(1) * 4
}

/// The per-output arithmetic after the integer sums.
struct Epi<'a> {
    sd: f32,
    alpha: f32,
    bias: Option<&'a [f32]>,
    gelu: Option<bool>,
}

/// `dst[rows × n] = epilogue(a_u · w_s)` for quantised rows `a` (stride `groups·4`).
fn gemm_rows(a: &[u8], rowsum: &[i32], rows: usize, w: &PackedQWeight, e: &Epi, dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    let done = int8_gemm_available() && {
        // SAFETY: the CPU has AVX-512F and VNNI (checked just above); `a` holds `rows` rows
        // of `groups·4` bytes and `dst` `rows·n` floats (sized by the caller).
        unsafe { vnni::gemm_rows(a, rowsum, rows, w, e, dst) };
        true
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = false;
    if !done {
        gemm_rows_portable(a, rowsum, rows, w, e, dst);
    }
    // The Gelu kernel's arithmetic (kernels/src/unary.rs), in one vectorised pass.
    match e.gelu {
        Some(true) => vectorized(
            #[inline(always)]
            || dst.iter_mut().for_each(|x| *x = gelu_tanh(*x)),
        ),
        Some(false) => vectorized(
            #[inline(always)]
            || dst.iter_mut().for_each(|x| *x = gelu_erf(*x)),
        ),
        None => {}
    }
}

/// [`gemm_rows`] without SIMD (the same integer sums, so the same results).
fn gemm_rows_portable(
    a: &[u8],
    rowsum: &[i32],
    rows: usize,
    w: &PackedQWeight,
    e: &Epi,
    dst: &mut [f32],
) {
    let stride = w.groups * 4;
    let mut sums = [0i32; LANES];
    for r in 0..rows {
        for p in 0..w.panels {
            sums.fill(0);
            for g in 0..w.groups {
                let block = &w.data[(p * w.groups + g) * LANES * 4..][..LANES * 4];
                let av = &a[r * stride + g * 4..][..4];
                for (j, s) in sums.iter_mut().enumerate() {
                    for i in 0..4 {
                        *s += av[i] as i32 * block[j * 4 + i] as i32;
                    }
                }
            }
            finish(&sums, r, rowsum[r], p, w, e, dst);
        }
    }
}

/// Writes one row's 16 sums of panel `p` through the epilogue.
#[inline(always)]
fn finish(
    sums: &[i32; LANES],
    r: usize,
    rowsum: i32,
    p: usize,
    w: &PackedQWeight,
    e: &Epi,
    dst: &mut [f32],
) {
    let c0 = p * LANES;
    let cols = LANES.min(w.n - c0);
    let (kf, rs) = (w.k as f32, rowsum as f32);
    // Whole panels of per-column terms (padded), so this loop is 16 lanes wide.
    let beta: &[f32; LANES] = w.beta[c0..c0 + LANES].try_into().expect("padded to panels");
    let scale: &[f32; LANES] = w.scale[c0..c0 + LANES]
        .try_into()
        .expect("padded to panels");
    let colsum: &[i32; LANES] = w.colsum[c0..c0 + LANES]
        .try_into()
        .expect("padded to panels");
    let mut v = [0f32; LANES];
    let (ars, kab) = (e.alpha, kf * e.alpha);
    for j in 0..LANES {
        let dot = (sums[j] as f32 - beta[j] * rs) + (kab * beta[j] - ars * colsum[j] as f32);
        v[j] = (e.sd * scale[j]) * dot;
    }
    if let Some(b) = e.bias {
        v.iter_mut().zip(&b[c0..]).for_each(|(x, &c)| *x += c);
    }
    dst[r * w.n + c0..][..cols].copy_from_slice(&v[..cols]);
}

#[cfg(target_arch = "x86_64")]
mod vnni;

#[cfg(test)]
mod tests;
