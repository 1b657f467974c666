//! Conv as GEMMs (groups with more than one input channel): im2col (one column matrix per
//! image and group, or a batch of images on small planes; a 1×1 convolution without stride
//! or padding reads the input directly) and one product per group, by the `gemm` crate, the
//! unpacked kernel (mapped columns: live taps of a dilated Conv) or the narrow kernel (a few
//! columns). Products of one image are stored into fresh memory and the bias is added in
//! the epilogue's pass.
use super::conv::output_planes;
use super::conv_epilogue::Epilogue;
use super::conv_pointwise::{conv_pointwise, pointwise_suits};
use super::conv_taps::{copy_runs, TapTable};
use super::gemm_unpacked::gemm_unpacked;
use super::matmul::{gemm_into, gemm_into_strided, gemm_write_uninit, MatView};
use super::matmul_few_cols::{ab_few_cols, few_cols_available, FEW_COLS};
use super::matmul_narrow::{a_bt, NARROW_ROWS};
use super::simd::vectorized;
use super::transpose2d::transpose_pitched;
use super::window::Window;
use super::KResult;

/// Output columns one GEMM covers at least: images are batched into one GEMM until their
/// output planes reach this many columns, so that the weights (packed by every GEMM call)
/// are read once per batch rather than once per image when planes are small (late ResNet
/// stages: 2×2 planes, 4.7 MB of weights). Larger planes take one image per GEMM: a
/// column matrix of 4096 columns (9 MB for 576 rows) ran 3–25 % slower than one of 256, as
/// it no longer stays in cache between im2col and the GEMM.
const GEMM_COLUMNS: usize = 256;

/// Conv as GEMMs (groups with more than one input channel): per group and batch of images,
/// `Y_g [mg, imgs·P_out] = W_g [mg, cg·K] · col [cg·K, imgs·P_out]` (a 1×1 unit-stride
/// unpadded Conv of one image reads X directly), plus the bias; `epi` runs on each group's
/// rows (one image) or each image's planes (a batch) once written. Returns the output.
///
/// Products of one image by the `gemm` crate are stored into fresh memory and the bias is
/// added by the epilogue's pass (the output is written once and read once while in cache);
/// the other products add to an output that already holds the bias.
pub(super) fn gemm_conv(
    win: &Window,
    taps: &TapTable,
    xv: &[f32],
    wv: &[f32],
    bias_v: Option<&[f32]>,
    (n, c, m, g): (usize, usize, usize, usize),
    epi: Epilogue<'_>,
) -> KResult<Vec<f32>> {
    let (p_out, p_in, kl) = (win.drive_plane(), win.other_plane(), taps.taps());
    let (cg, mg) = (c / g, m / g);
    let len = n * m * p_out;
    let bias = bias_v.is_some();
    let pointwise = kl == 1
        && p_in == p_out
        && win.strides.iter().all(|&v| v == 1)
        && win.pads.iter().all(|&v| v == 0);
    if p_out == 1 && g == 1 && n <= NARROW_ROWS {
        // One output position (a squeeze-excitation block, or Inception's 1×3 and 3×1
        // Convs on 1×1 maps) of a few images: the output [n, m] = X'·Wᵀ (+ the bias
        // already there) with X' [n, c·K] the images' column (X itself for a 1×1 Conv;
        // else each tap's input element, zero where the tap reads padding), the narrow
        // kernel's product, which reads each weight row once, contiguously, without packing
        // (a strided view of one live tap's weights read the same cache lines slower).
        let cols: Vec<f32>;
        let xcol = if pointwise {
            xv
        } else {
            cols = single_position_columns(taps, xv, (n, c, p_in));
            &cols
        };
        let mut out = output_planes(len, bias_v, m, p_out);
        a_bt((n, m, c * kl), xcol, wv, 1.0, bias, &mut out)?;
        if !epi.is_empty() {
            for (j, row) in out.chunks_exact_mut(m).enumerate() {
                epi.apply(row, j * m);
            }
        }
        return Ok(out);
    }
    if pointwise && p_out == 1 {
        // 1×1 planes (a squeeze-excitation block): X is [n, c] and the output [n, m], so
        // per group one GEMM over all images reads X and writes the output in place
        // through strides, with no column matrix and no copy-out.
        let mut out = output_planes(len, bias_v, m, p_out);
        for gi in 0..g {
            let xm = MatView::new(xv, gi * cg, 1, c);
            let wm = MatView::row_major(wv, gi * mg * cg, cg);
            gemm_into_strided(mg, n, cg, &mut out, (gi * mg, 1, m), wm, xm, 1.0, bias)?;
            if !epi.is_empty() {
                for j in 0..n {
                    let at = j * m + gi * mg;
                    epi.apply(&mut out[at..at + mg], at);
                }
            }
        }
        return Ok(out);
    }
    if pointwise && pointwise_suits(cg, mg, p_out) {
        // Each image and group's product written once, its epilogue on each band of rows
        // while in cache (`conv_pointwise.rs`).
        let mut out = Vec::with_capacity(len);
        let spare = &mut out.spare_capacity_mut()[..len];
        for (j, image) in spare.chunks_exact_mut(m * p_out).enumerate() {
            for (gi, rows) in image.chunks_exact_mut(mg * p_out).enumerate() {
                let at = (j * m + gi * mg) * p_out;
                let xg = &xv[(j * c + gi * cg) * p_in..][..cg * p_in];
                let wg = &wv[gi * mg * cg..][..mg * cg];
                let epi_g = Epilogue {
                    bias: bias_v.map(|b| &b[gi * mg..]),
                    ..epi
                };
                conv_pointwise((mg, cg, p_out), xg, wg, rows, epi_g, at)?;
            }
        }
        // SAFETY: conv_pointwise wrote every element of each image's and group's rows, which
        // tile all `len` elements.
        unsafe { out.set_len(len) };
        return Ok(out);
    }
    // Taps that read only padding (a dilated Conv on a plane no larger than its dilation:
    // DeepLabV3's ASPP, dilation 12–36 on 4×4 maps, where 8 of 9 taps fall outside) add
    // nothing: the column matrix and the weights keep the live taps only (one live tap: a
    // strided view of W; several: a compacted copy).
    let live: Vec<usize> = (0..kl).filter(|&kp| !taps.runs(kp).is_empty()).collect();
    let kll = live.len();
    if kll == 0 {
        // Every output is its bias.
        let mut out = output_planes(len, bias_v, m, p_out);
        if !epi.is_empty() {
            for (j, image) in out.chunks_exact_mut(m * p_out).enumerate() {
                epi.apply(image, j * m * p_out);
            }
        }
        return Ok(out);
    }
    // Several live taps: the column matrix holds those taps only and the product reads
    // each weight row's live columns in place.
    let live_cols: Option<Vec<u32>> = (kll < kl && kll > 1).then(|| {
        (0..cg)
            .flat_map(|ci| live.iter().map(move |&kp| (ci * kl + kp) as u32))
            .collect()
    });
    let per = (GEMM_COLUMNS / p_out.max(1)).clamp(1, n.max(1));
    // A patch embedding (kernel = stride, no padding or dilation, 2-D): every input element
    // lands in one column entry, copied row by row without the tap table's runs.
    let patch = (win.kernel.len() == 2
        && win.kernel == win.strides
        && win.pads.iter().all(|&p| p == 0)
        && win.dilations.iter().all(|&d| d == 1))
    .then(|| PatchGeometry {
        input: [win.other[0], win.other[1]],
        output: [win.drive[0], win.drive[1]],
        kernel: [win.kernel[0], win.kernel[1]],
    });
    // One image per product by the `gemm` crate (not the narrow product, not mapped
    // columns): stored into `fresh`'s spare capacity, the bias added by the epilogue.
    let store = per == 1 && p_out > NARROW_ROWS && live_cols.is_none();
    let (mut out, mut fresh) = match store {
        true => (Vec::new(), Vec::with_capacity(len)),
        false => (output_planes(len, bias_v, m, p_out), Vec::new()),
    };
    let epi_b = Epilogue {
        bias: bias_v,
        ..epi
    };
    let mut col = Vec::new();
    let mut tmp = Vec::new();
    for first in (0..n).step_by(per) {
        let imgs = per.min(n - first);
        let ld = imgs * p_out;
        if !(pointwise && imgs == 1) {
            col.resize(cg * kll * ld, 0f32);
        }
        if imgs > 1 {
            tmp.resize(mg * ld, 0f32);
        }
        for gi in 0..g {
            let bmat = if pointwise && imgs == 1 {
                MatView::row_major(xv, (first * c + gi * cg) * p_in, p_out)
            } else {
                for j in 0..imgs {
                    let x_off = ((first + j) * c + gi * cg) * p_in;
                    let plane = &xv[x_off..x_off + cg * p_in];
                    if pointwise {
                        for ci in 0..cg {
                            col[ci * ld + j * p_out..][..p_out]
                                .copy_from_slice(&plane[ci * p_in..][..p_in]);
                        }
                    } else {
                        match &patch {
                            Some(geo) => patch_im2col(geo, plane, &mut col, cg, ld, j * p_out),
                            None => {
                                let sel = (kll < kl).then_some(live.as_slice());
                                im2col(taps, sel, plane, &mut col, (cg, p_in), ld, j * p_out)
                            }
                        }
                    }
                }
                MatView::row_major(&col, 0, ld)
            };
            let amat = match &live_cols {
                // One live tap: W_g's column of that tap, kl apart.
                None if kll < kl => MatView::new(wv, gi * mg * cg * kl + live[0], cg * kl, kl),
                _ => MatView::row_major(wv, gi * mg * cg * kl, cg * kl),
            };
            let cols = live_cols.as_deref();
            if store {
                let dst = (first * m + gi * mg) * p_out;
                let rows = &mut fresh.spare_capacity_mut()[dst..dst + mg * p_out];
                gemm_write_uninit(mg, p_out, cg * kll, rows, amat, bmat)?;
                // SAFETY: gemm_write_uninit wrote all mg·p_out elements of `rows`;
                // MaybeUninit<f32> has f32's layout.
                let rows = unsafe {
                    std::slice::from_raw_parts_mut(rows.as_mut_ptr().cast::<f32>(), rows.len())
                };
                if !epi_b.is_empty() {
                    epi_b.apply(rows, dst);
                }
                continue;
            }
            if imgs == 1 {
                let dst = (first * m + gi * mg) * p_out;
                conv_product(
                    (mg, p_out, cg * kll),
                    amat,
                    cols,
                    bmat,
                    &mut out[dst..],
                    bias,
                )?;
                if !epi.is_empty() {
                    epi.apply(&mut out[dst..dst + mg * p_out], dst);
                }
                continue;
            }
            conv_product((mg, ld, cg * kll), amat, cols, bmat, &mut tmp, false)?;
            for j in 0..imgs {
                let at = ((first + j) * m + gi * mg) * p_out;
                for i in 0..mg {
                    let dst = &mut out[at + i * p_out..][..p_out];
                    let src = &tmp[i * ld + j * p_out..][..p_out];
                    if bias {
                        dst.iter_mut().zip(src).for_each(|(d, v)| *d += v);
                    } else {
                        dst.copy_from_slice(src);
                    }
                }
                if !epi.is_empty() {
                    epi.apply(&mut out[at..at + mg * p_out], at);
                }
            }
        }
    }
    if store {
        // SAFETY: every image and group wrote its mg·p_out rows above (`per` is 1, so the
        // loops covered all n images and g groups): all len elements are initialised.
        unsafe { fresh.set_len(len) };
        return Ok(fresh);
    }
    Ok(out)
}

/// `out (+)= A·B` for an `[m, k]` weight view (its columns `a_cols` when given) and a
/// `[k, n]` column view, `out` row-major with rows `n` apart. Mapped columns (a Conv's live
/// taps) take the unpacked kernel, which reads them in place; every other product the
/// `gemm` crate, 3–5 % faster than the unpacked kernel on whole-tap Convs (its packed
/// weights stream better).
fn conv_product(
    (m, n, k): (usize, usize, usize),
    a: MatView<'_, f32>,
    a_cols: Option<&[u32]>,
    b: MatView<'_, f32>,
    out: &mut [f32],
    accumulate: bool,
) -> KResult<()> {
    match a_cols {
        Some(_) if a.cs != 1 || b.cs != 1 => {
            Err("mapped weight columns need row-major operands".to_string())
        }
        Some(cols) => {
            let (av, bv) = (
                &a.data[a.off.min(a.data.len())..],
                &b.data[b.off.min(b.data.len())..],
            );
            gemm_unpacked((m, n, k), av, a.rs, cols, bv, b.rs, out, n, accumulate)
        }
        // A few columns (1×1 Convs on 2×2 maps of two images: 8): the narrow product
        // against the transposed columns reads each weight row once, contiguously, where
        // the `gemm` crate packed all the weights for a handful of columns (MNASNet's
        // `[576, 96]` expansion over 8 columns: 25 → 23 µs, its `[96, 576]` projection
        // 24 → 18.5 µs; the unpacked kernel, broadcasting each weight, took 28).
        None if n <= FEW_COLS && a.cs == 1 && a.rs == k && b.cs == 1 && few_cols_available() => {
            let (av, bv) = (
                &a.data[a.off.min(a.data.len())..],
                &b.data[b.off.min(b.data.len())..],
            );
            ab_few_cols((m, n, k), av, bv, b.rs, out, accumulate)
        }
        None if n <= NARROW_ROWS && a.cs == 1 && a.rs == k && b.cs == 1 && k > 0 => {
            let bv = &b.data[b.off.min(b.data.len())..];
            if bv.len() < (k - 1) * b.rs + n {
                return Err(format!("columns out of bounds for {k}x{n}"));
            }
            let mut bt = vec![0f32; n * k];
            transpose_pitched(bv, b.rs, &mut bt, k, k, n);
            let av = &a.data[a.off.min(a.data.len())..];
            a_bt((m, n, k), av, &bt, 1.0, accumulate, out)
        }
        None => gemm_into(m, n, k, out, 0, a, b, 1.0, accumulate),
    }
}

/// The column of each of `n` images (`x`: `[n, c, p_in]`) for a Conv with one output
/// position: `[n, c·K]`, element `(ci, tap)` the input that tap reads, zero where it reads
/// padding.
fn single_position_columns(
    taps: &TapTable,
    x: &[f32],
    (n, c, p_in): (usize, usize, usize),
) -> Vec<f32> {
    let kl = taps.taps();
    let mut cols = vec![0f32; n * c * kl];
    for (kp, run) in (0..kl).filter_map(|kp| taps.runs(kp).first().map(|r| (kp, r.src))) {
        for (img, col) in cols.chunks_exact_mut(c * kl).enumerate() {
            for ci in 0..c {
                col[ci * kl + kp] = x[(img * c + ci) * p_in + run];
            }
        }
    }
    cols
}

/// The geometry of a patch-embedding Conv (kernel = stride, no padding, no dilation).
struct PatchGeometry {
    input: [usize; 2],
    output: [usize; 2],
    kernel: [usize; 2],
}

/// im2col for a patch embedding: column row `(ci, kh, kw)`, column `(oh, ow)` is input
/// `(ci, oh·kh_ext + kh, ow·kw_ext + kw)`, so each input row `oh·kh_ext + kh` scatters its
/// elements over the `kw_ext` column rows of `(ci, kh)` (rows and columns past the last whole
/// patch are not read). The tap table's path walks one run of `OW` elements, `kw_ext` apart,
/// per tap and output row: a few elements per run on ViT- and ConvNeXt-style stems.
fn patch_im2col(geo: &PatchGeometry, x: &[f32], col: &mut [f32], cg: usize, ld: usize, off: usize) {
    let ([h, w], [oh, ow], [kh, kw]) = (geo.input, geo.output, geo.kernel);
    for ci in 0..cg {
        for r in 0..oh * kh {
            let (orow, dy) = (r / kh, r % kh);
            let src = &x[(ci * h + r) * w..][..ow * kw];
            let first = (ci * kh + dy) * kw;
            for (ocol, patch) in src.chunks_exact(kw).enumerate() {
                let at = off + orow * ow + ocol;
                for (dx, &v) in patch.iter().enumerate() {
                    col[(first + dx) * ld + at] = v;
                }
            }
        }
    }
}

/// Fills columns `off..off + P_out` of `col` (`[cg·K', ld]`, row-major; K' the taps of
/// `sel` in its order, or every tap when None) from `cg` input planes of `p_in` elements,
/// walking the tap table's runs (positions no run covers are zero).
fn im2col(
    taps: &TapTable,
    sel: Option<&[usize]>,
    x: &[f32],
    col: &mut [f32],
    (cg, p_in): (usize, usize),
    ld: usize,
    off: usize,
) {
    let kl = sel.map_or(taps.taps(), <[usize]>::len);
    let (stride, p_out) = (taps.stride, taps.plane);
    vectorized(
        #[inline(always)]
        || {
            for ci in 0..cg {
                let plane = &x[ci * p_in..(ci + 1) * p_in];
                for j in 0..kl {
                    let kp = sel.map_or(j, |s| s[j]);
                    let dst = &mut col[(ci * kl + j) * ld + off..][..p_out];
                    if !taps.full(kp) {
                        dst.fill(0.0);
                    }
                    copy_runs(taps.runs(kp), stride, plane, dst);
                }
            }
        },
    );
}
