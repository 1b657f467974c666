//! Depthwise Conv planes read in place, row by row (AVX-512): for planes whose column
//! stride is 1 and whose rows are at least [`MIN_ROW`] wide. Each output row is up to four
//! 16-lane blocks held in registers; for every kernel row that reads inside the input and
//! every kernel column, each block takes one masked load straight from the input row (the
//! mask drops the lanes that read the left or right padding, or lie past the row) and one
//! fused multiply-add; the row is stored with a masked store into the output plane. No
//! padded copy of the input, no staging buffer and no copy-out, where the phase-plane path
//! (`conv_depthwise_flat.rs`) copies each input plane once and each output plane once
//! (a quarter to a half of its time on 56×56 planes).
//!
//! Same arithmetic as the phase-plane path: each output starts from its bias and takes the
//! taps in ascending order, one fused multiply-add each; a tap reading padding in the
//! column direction adds `w·0` (as the zero-padded phase plane does), and kernel rows that
//! fall in the top or bottom padding are skipped (they add `w·0` there: a non-zero sum is
//! unchanged either way).
use super::conv_depthwise_flat::FlatGeometry;
use std::mem::MaybeUninit;

/// Narrowest output row the row path takes: below it most lanes of a block would be idle.
pub(crate) const MIN_ROW: usize = 24;

/// Blocks of 16 outputs held in registers per pass over a row.
const GROUP: usize = 4;

/// The per-block lane masks of one geometry, shared by all its planes.
pub(crate) struct RowMasks {
    /// Blocks per output row.
    blocks: usize,
    /// Per kernel column and block (`j · blocks + block`): lanes whose input column is
    /// inside the row and whose output column exists.
    load: Vec<u16>,
    /// Per block: lanes whose output column exists.
    store: Vec<u16>,
}

impl RowMasks {
    /// The masks for `geo`, or None when the row path does not serve it (no AVX-512F, whose
    /// masked loads it takes; a column stride other than 1; rows narrower than [`MIN_ROW`]).
    pub fn new(geo: &FlatGeometry) -> Option<Self> {
        let [_, w] = geo.input;
        let [_, ow] = geo.output;
        let [_, kw] = geo.kernel;
        if !rows_serve(geo) {
            return None;
        }
        let blocks = ow.div_ceil(16);
        let (dw, pl) = (geo.dilations[1] as i64, geo.pads[1] as i64);
        let lane_ok = |b: usize, l: usize, j: usize| {
            let col = (b * 16 + l) as i64;
            let src = col + j as i64 * dw - pl;
            (col as usize) < ow && src >= 0 && src < w as i64
        };
        let load = (0..kw)
            .flat_map(|j| (0..blocks).map(move |b| (j, b)))
            .map(|(j, b)| {
                (0..16)
                    .filter(|&l| lane_ok(b, l, j))
                    .fold(0u16, |m, l| m | 1 << l)
            })
            .collect();
        let store = (0..blocks)
            .map(|b| super::simd::lane_mask(ow - b * 16))
            .collect();
        Some(RowMasks {
            blocks,
            load,
            store,
        })
    }
}

/// True where the row path serves `geo` on this CPU: AVX-512F (masked loads and stores), a
/// column stride of 1 and rows of at least [`MIN_ROW`] outputs.
pub(crate) fn rows_serve(geo: &FlatGeometry) -> bool {
    geo.strides[1] == 1
        && geo.output[1] >= MIN_ROW
        && super::lanes16::lanes_isa() == Some(super::lanes16::LanesIsa::Avx512)
}

/// One output plane (`dst`: `oh · ow`, every element written) of the depthwise Conv with
/// geometry `geo` over input plane `x` with kernel `w` (`kh · kw` taps) from `bias`.
/// `masks` must come from [`RowMasks::new`] for `geo` (which checked the CPU).
pub(crate) fn plane_rows<'a>(
    geo: &FlatGeometry,
    masks: &RowMasks,
    x: &[f32],
    w: &[f32],
    bias: f32,
    dst: &'a mut [MaybeUninit<f32>],
) -> &'a mut [f32] {
    let [h, wd] = geo.input;
    let [oh, ow] = geo.output;
    let [kh, kw] = geo.kernel;
    assert!(
        x.len() == h * wd && dst.len() == oh * ow && w.len() == kh * kw,
        "plane_rows: plane sizes"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `masks` exists only where the CPU runs AVX-512F (RowMasks::new); the sizes
    // the kernel relies on were checked just above.
    unsafe {
        plane_rows_avx512(geo, masks, x, w, bias, dst)
    };
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("RowMasks::new returns None off x86-64");
    // SAFETY: the kernel stored every block of every output row under its store mask,
    // whose lanes are exactly the row's `ow` columns; MaybeUninit<f32> has f32's layout.
    unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<f32>(), oh * ow) }
}

/// The AVX-512 body of [`plane_rows`]: each row in groups of [`GROUP`] blocks, then the
/// last one to three. (Pairs of rows sharing each tap's weight and masks measured 10–15 %
/// slower on 56×56 planes, and unmasked loads for whole blocks no faster.)
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn plane_rows_avx512(
    geo: &FlatGeometry,
    masks: &RowMasks,
    x: &[f32],
    w: &[f32],
    bias: f32,
    dst: &mut [MaybeUninit<f32>],
) {
    let [oh, ow] = geo.output;
    let out = dst.as_mut_ptr().cast::<f32>();
    let whole = masks.blocks / GROUP * GROUP;
    // Rows of two or three blocks are taken three or two rows at a time, so that six
    // accumulator chains are in flight (one row of two blocks is two chains of nine
    // dependent multiply-adds, bound by their latency): depthwise 3×3 over two images'
    // 28×28 maps of 96 channels 139 → 116 µs, 32×32 maps of 40 channels 65 → 55 (AVX-512,
    // Zen 4, min of 2000 runs).
    let stack = match masks.blocks {
        2 => 3,
        3 => 2,
        _ => 1,
    };
    let mut r = 0;
    while stack > 1 && r + stack <= oh {
        // SAFETY: rows r..r + stack < oh of a plane of oh·ow outputs; the caller checked
        // the plane sizes against `geo` and the CPU (through `masks`).
        let at = (geo, masks, x, w, bias, r, unsafe { out.add(r * ow) });
        match stack {
            3 => unsafe { row_blocks::<3, 2>(at, 0) },
            _ => unsafe { row_blocks::<2, 3>(at, 0) },
        }
        r += stack;
    }
    for r in r..oh {
        // SAFETY (all calls): row r < oh of a plane of oh·ow outputs; the caller checked
        // the plane sizes against `geo` and the CPU (through `masks`).
        let row = unsafe { out.add(r * ow) };
        let at = (geo, masks, x, w, bias, r, row);
        for b0 in (0..whole).step_by(GROUP) {
            unsafe { row_blocks::<1, GROUP>(at, b0) };
        }
        match masks.blocks - whole {
            1 => unsafe { row_blocks::<1, 1>(at, whole) },
            2 => unsafe { row_blocks::<1, 2>(at, whole) },
            3 => unsafe { row_blocks::<1, 3>(at, whole) },
            _ => {}
        }
    }
}

/// What [`row_blocks`] reads and where it writes: the geometry, masks, input plane, taps
/// and bias, the output row's index and its first element.
type Row<'a> = (
    &'a FlatGeometry,
    &'a RowMasks,
    &'a [f32],
    &'a [f32],
    f32,
    usize,
    *mut f32,
);

/// Blocks `b0 .. b0 + N` of output rows `r .. r + R` (`row` points at the first column of
/// row `r`; rows are `ow` apart): from the bias, every live kernel row and column in
/// ascending order, then a masked store each. Each output's arithmetic is the same
/// whatever `R` and `N`.
///
/// # Safety
/// AVX-512F; `x` is the `h·w` input plane of `geo`, `w` its `kh·kw` taps, `masks` from
/// [`RowMasks::new`] for `geo`, `b0 + N <= masks.blocks`, `r + R <= oh`, and `row` points
/// at `R · ow` writable floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn row_blocks<const R: usize, const N: usize>(
    (geo, masks, x, w, bias, r, row): Row<'_>,
    b0: usize,
) {
    use std::arch::x86_64::{
        __m512, _mm512_fmadd_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_set1_ps,
    };
    let [h, wd] = geo.input;
    let [kh, kw] = geo.kernel;
    let [sh, _] = geo.strides;
    let [dh, dw] = geo.dilations;
    let [pt, pl] = geo.pads;
    let ow = geo.output[1];
    let mut acc: [[__m512; N]; R] = [[_mm512_set1_ps(bias); N]; R];
    for i in 0..kh {
        let wrow = &w[i * kw..][..kw];
        for (q, acc) in acc.iter_mut().enumerate() {
            // Kernel rows in the top or bottom padding are skipped.
            let Some(ir) = ((r + q) * sh + i * dh).checked_sub(pt).filter(|&ir| ir < h) else {
                continue;
            };
            // Lane 0 of block b, kernel column j reads column b·16 + j·dw − pl of row ir
            // (may be negative or past the row: the load mask drops those lanes).
            let first = x.as_ptr().wrapping_add(ir * wd + b0 * 16);
            for (j, &wk) in wrow.iter().enumerate() {
                let wk = _mm512_set1_ps(wk);
                let ms: &[u16; N] = masks.load[j * masks.blocks + b0..][..N]
                    .try_into()
                    .expect("N masks");
                let p = first.wrapping_offset((j * dw) as isize - pl as isize);
                for k in 0..N {
                    // SAFETY: a lane is read only where its mask bit is set, which
                    // RowMasks::new sets only for columns inside row ir < h of the plane
                    // (x.len() == h·wd); masked-off lanes are not accessed.
                    let v = unsafe { _mm512_maskz_loadu_ps(ms[k], p.wrapping_add(k * 16)) };
                    acc[k] = _mm512_fmadd_ps(wk, v, acc[k]);
                }
            }
        }
    }
    for (q, acc) in acc.iter().enumerate() {
        for (k, a) in acc.iter().enumerate() {
            let b = b0 + k;
            // SAFETY: the store mask's lanes are output columns b·16 + l < ow of row r + q.
            unsafe { _mm512_mask_storeu_ps(row.add(q * ow + b * 16), masks.store[b], *a) };
        }
    }
}
