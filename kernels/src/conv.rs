//! Conv and ConvTranspose in f32: im2col (one column matrix per image and group) and one
//! GEMM through the `gemm` crate per image and group; a 1×1 convolution without stride or
//! padding multiplies the input directly; a dense Conv with few input channels (a stem) is
//! vectorised over output columns (`conv_few_channels.rs`). A depthwise convolution (one
//! input channel per group) accumulates kernel taps straight into the output: 16 channels
//! at a time interleaved, with AVX-512, wherever the row path does not read 3×3 planes in
//! place (`conv_depthwise_blocked.rs`); over all channels at once on planes of at most 64
//! outputs (`conv_depthwise.rs`); plane by plane from padded stride-phase copies of the
//! input on 1-D and 2-D planes (`conv_depthwise_flat.rs`); and run by run from the tap table
//! in three or more dimensions. ConvTranspose is one GEMM (Wᵀ·X) and a col2im scatter-add.
//! A fused Conv ([`conv_fused`]) runs its epilogue (residual add, activation) on each block
//! of output as soon as it is final; given weights packed when the plan was loaded
//! ([`ConvWeight::Packed`]) it runs on the direct kernel (`conv_direct.rs`).
use super::conv_depthwise::{depthwise_channels_last, MIN_CHANNELS, SMALL_PLANE};
use super::conv_depthwise_blocked::{blocked_suits, depthwise_blocked};
use super::conv_depthwise_flat::{depthwise_flat, FlatGeometry};
use super::conv_direct::{conv_direct, DirectGeometry, PackedConvWeight};
use super::conv_epilogue::Epilogue;
use super::conv_few_channels::{conv_few_channels, few_channels_suits};
use super::conv_taps::{axpy_runs, copy_runs, TapTable, PARALLEL_MIN_TAPS};
use super::gemm_unpacked::gemm_unpacked;
use super::matmul::{gemm_into, gemm_into_strided, MatView};
use super::matmul_narrow::{a_bt, NARROW_ROWS};
use super::simd::vectorized;
use super::transpose2d::transpose_pitched;
use super::window::Window;
use super::{describe, make, KResult};
use rayon::prelude::*;
use tessera_ir::op::{ConvAttrs, ConvTransposeAttrs};
use tessera_ir::spec::{transpose_out_extent, window_out_extent};
use tessera_ir::{Tensor, TensorData};

/// The f32 elements of a float operand.
fn floats<'a>(t: &'a Tensor, what: &str) -> KResult<&'a [f32]> {
    t.as_f32()
        .ok_or_else(|| format!("{what} must be float, got {}", describe(t)))
}

/// Checks X and W ranks and the attribute lengths; returns the spatial axis count.
fn spatial_of(a: &ConvAttrs, x: &Tensor, ws: &[usize]) -> KResult<usize> {
    let r = x.shape.len();
    if r < 3 || ws.len() != r {
        return Err(format!(
            "X {} and W {ws:?} must share a rank >= 3",
            describe(x)
        ));
    }
    let s = r - 2;
    if a.strides.len() != s || a.dilations.len() != s || a.pads.len() != 2 * s || a.group == 0 {
        return Err(format!("attributes do not fit {s} spatial axes: {a:?}"));
    }
    Ok(s)
}

/// `len` outputs (whole images of `m` planes of `plane`), each plane holding its channel's
/// bias (zeros without one), written once (a zeroed buffer then filled wrote them twice).
fn output_planes(len: usize, bias: Option<&[f32]>, m: usize, plane: usize) -> Vec<f32> {
    match bias {
        Some(b) if plane > 0 && m > 0 => {
            let mut out = Vec::with_capacity(len);
            for _ in 0..len / (m * plane) {
                for &v in &b[..m] {
                    out.resize(out.len() + plane, v);
                }
            }
            out
        }
        _ => vec![0f32; len],
    }
}

/// Writes the bias (or zeros) into every output plane.
fn init_planes(out: &mut [f32], bias: Option<&[f32]>, m: usize, plane: usize) {
    if let (Some(b), true) = (bias, plane > 0 && m > 0) {
        for image in out.chunks_exact_mut(m * plane) {
            match plane {
                // 1×1 planes (a squeeze-excitation block): the image is the bias vector.
                1 => image.copy_from_slice(&b[..m]),
                _ => {
                    for (chunk, &v) in image.chunks_exact_mut(plane).zip(b) {
                        chunk.fill(v);
                    }
                }
            }
        }
    }
}

/// A Conv's weights: the W tensor, or W packed once for the direct kernel.
#[derive(Clone, Copy)]
pub(crate) enum ConvWeight<'a> {
    /// W as a tensor.
    Tensor(&'a Tensor),
    /// W packed when the plan was loaded.
    Packed(&'a PackedConvWeight),
}

/// Convolution.
pub(crate) fn conv(a: &ConvAttrs, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> KResult<Tensor> {
    conv_fused(a, x, ConvWeight::Tensor(w), b, Epilogue::default())
}

/// Convolution followed by `epi` (its residual, when present, must have the output's
/// shape).
pub(crate) fn conv_fused(
    a: &ConvAttrs,
    x: &Tensor,
    w: ConvWeight<'_>,
    b: Option<&Tensor>,
    epi: Epilogue<'_>,
) -> KResult<Tensor> {
    let ws = match w {
        ConvWeight::Tensor(t) => &t.shape,
        ConvWeight::Packed(p) => p.shape(),
    };
    let s = spatial_of(a, x, ws)?;
    let xs = &x.shape;
    let (n, c, m, g) = (xs[0], xs[1], ws[0], a.groups(xs[1]));
    if c % g != 0 || m % g != 0 || ws[1] * g != c {
        return Err(format!("X {xs:?} and W {ws:?} do not fit group {g}"));
    }
    let (cg, mg) = (c / g, m / g);
    let mut out_sp = Vec::with_capacity(s);
    for i in 0..s {
        let pads = (a.pads[i], a.pads[s + i]);
        out_sp.push(
            window_out_extent(
                xs[2 + i],
                ws[2 + i],
                a.strides[i],
                a.dilations[i],
                pads,
                false,
            )
            .ok_or_else(|| format!("kernel {ws:?} does not fit input {xs:?}"))?,
        );
    }
    let win = Window {
        drive: out_sp.clone(),
        other: xs[2..].to_vec(),
        kernel: ws[2..].to_vec(),
        strides: a.strides.clone(),
        dilations: a.dilations.clone(),
        pads: a.pads[..s].to_vec(),
    };
    let xv = floats(x, "X")?;
    let bias = match b {
        Some(b) if b.shape != [m] => return Err(format!("bias {} must be [{m}]", describe(b))),
        Some(b) => Some(floats(b, "B")?),
        None => None,
    };
    let (p_out, p_in) = (win.drive_plane(), win.other_plane());
    let len = n * m * p_out;
    if epi.residual.is_some_and(|r| r.len() != len) {
        return Err(format!(
            "the residual does not have the {len} elements of the output"
        ));
    }
    if [epi.scale, epi.shift]
        .iter()
        .flatten()
        .any(|v| v.len() != m)
    {
        return Err(format!(
            "a per-channel scale or shift does not have {m} values"
        ));
    }
    let mut epi = epi;
    (epi.plane, epi.channels) = (p_out, m);
    let mut shape = vec![n, m];
    shape.extend(&out_sp);
    let wv = match w {
        ConvWeight::Tensor(t) => floats(t, "W")?,
        ConvWeight::Packed(p) => {
            if p.group() != g {
                return Err(format!("W was packed for group {}, not {g}", p.group()));
            }
            let win = FlatGeometry::of_window(&win)
                .ok_or_else(|| format!("the direct Conv does not serve X {xs:?}"))?;
            let geo = DirectGeometry { n, c, win };
            let mut out = vec![0f32; len];
            conv_direct(&geo, xv, p, bias, &mut out, epi)?;
            return make(x.dtype, shape, TensorData::F32(out));
        }
    };
    let flat = FlatGeometry::of_window(&win);
    if let Some(geo) = flat
        .as_ref()
        .filter(|g| cg == 1 && mg == 1 && blocked_suits(g, n * m))
    {
        let out = depthwise_blocked(geo, xv, wv, bias, n * m, m, epi);
        return make(x.dtype, shape, TensorData::F32(out));
    }
    if let (Some(geo), true) = (
        &flat,
        cg == 1 && (mg > 1 || p_out > SMALL_PLANE || c < MIN_CHANNELS),
    ) {
        // Writes every output from its own bias into memory it allocates: no planes to
        // initialise or zero first.
        let out = depthwise_flat(geo, xv, wv, bias, n * m, mg, epi);
        return make(x.dtype, shape, TensorData::F32(out));
    }
    if let Some(geo) = flat
        .as_ref()
        .filter(|geo| few_channels_suits(c, m, g, geo.output[1]))
    {
        let out = conv_few_channels(geo, (n, c, m), xv, wv, bias, epi);
        return make(x.dtype, shape, TensorData::F32(out));
    }
    let mut out = output_planes(len, bias, m, p_out);
    let taps = TapTable::new(&win);
    if cg == 1 && mg == 1 && p_out <= SMALL_PLANE && c >= MIN_CHANNELS {
        depthwise_channels_last(&taps, xv, wv, &mut out, (n, c, p_in), epi);
    } else if cg == 1 {
        depthwise(&taps, xv, wv, &mut out, (n * c, mg, p_in), epi);
    } else {
        gemm_conv(
            &win,
            &taps,
            xv,
            wv,
            &mut out,
            (n, c, m, g),
            bias.is_some(),
            epi,
        )?;
    }
    make(x.dtype, shape, TensorData::F32(out))
}

/// Output columns one GEMM covers at least: images are batched into one GEMM until their
/// output planes reach this many columns, so that the weights (packed by every GEMM call)
/// are read once per batch rather than once per image when planes are small (late ResNet
/// stages: 2×2 planes, 4.7 MB of weights). Larger planes take one image per GEMM: a
/// column matrix of 4096 columns (9 MB for 576 rows) ran 3–25 % slower than one of 256, as
/// it no longer stays in cache between im2col and the GEMM.
const GEMM_COLUMNS: usize = 256;

/// Conv as GEMMs (groups with more than one input channel): per group and batch of images,
/// `Y_g [mg, imgs·P_out] = W_g [mg, cg·K] · col [cg·K, imgs·P_out]` (a 1×1 unit-stride
/// unpadded Conv of one image reads X directly), added to the bias already in `out`; `epi`
/// runs on each group's rows (one image) or each image's planes (a batch) once written.
#[allow(clippy::too_many_arguments)]
fn gemm_conv(
    win: &Window,
    taps: &TapTable,
    xv: &[f32],
    wv: &[f32],
    out: &mut [f32],
    (n, c, m, g): (usize, usize, usize, usize),
    bias: bool,
    epi: Epilogue<'_>,
) -> KResult<()> {
    let (p_out, p_in, kl) = (win.drive_plane(), win.other_plane(), taps.taps());
    let (cg, mg) = (c / g, m / g);
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
        a_bt((n, m, c * kl), xcol, wv, 1.0, bias, out)?;
        if !epi.is_empty() {
            for (j, row) in out.chunks_exact_mut(m).enumerate() {
                epi.apply(row, j * m);
            }
        }
        return Ok(());
    }
    if pointwise && p_out == 1 {
        // 1×1 planes (a squeeze-excitation block): X is [n, c] and the output [n, m], so
        // per group one GEMM over all images reads X and writes the output in place
        // through strides, with no column matrix and no copy-out.
        for gi in 0..g {
            let xm = MatView::new(xv, gi * cg, 1, c);
            let wm = MatView::row_major(wv, gi * mg * cg, cg);
            gemm_into_strided(mg, n, cg, out, (gi * mg, 1, m), wm, xm, 1.0, bias)?;
            if !epi.is_empty() {
                for j in 0..n {
                    let at = j * m + gi * mg;
                    epi.apply(&mut out[at..at + mg], at);
                }
            }
        }
        return Ok(());
    }
    // Taps that read only padding (a dilated Conv on a plane no larger than its dilation:
    // DeepLabV3's ASPP, dilation 12–36 on 4×4 maps, where 8 of 9 taps fall outside) add
    // nothing: the column matrix and the weights keep the live taps only (one live tap: a
    // strided view of W; several: a compacted copy).
    let live: Vec<usize> = (0..kl).filter(|&kp| !taps.runs(kp).is_empty()).collect();
    let kll = live.len();
    if kll == 0 {
        // Every output is its bias (already in `out`).
        if !epi.is_empty() {
            for (j, image) in out.chunks_exact_mut(m * p_out).enumerate() {
                epi.apply(image, j * m * p_out);
            }
        }
        return Ok(());
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
    Ok(())
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

/// Depthwise-style convolution (one input channel per group): every output plane adds
/// each kernel tap times the shifted input plane, run by run from the tap table (one table
/// for all planes, so 2×2 and 4×4 planes cost a few short loops each). `planes` is N·C;
/// output planes are split over the device's rayon threads when it has several. `epi` runs
/// on each plane once its taps are in.
fn depthwise(
    taps: &TapTable,
    x: &[f32],
    w: &[f32],
    out: &mut [f32],
    (planes, mg, p_in): (usize, usize, usize),
    epi: Epilogue<'_>,
) {
    let (p_out, kl) = (taps.plane, taps.taps());
    if p_out == 0 || kl == 0 {
        return;
    }
    // W has M = C·mg rows of K taps; output channel oc's row is oc mod M.
    let m = w.len() / kl;
    // One output plane. A function with `inline(always)`, not a closure: LLVM did not
    // inline the closure into the wide loops below, so it ran in the baseline build with a
    // library call per FMA of a SiLU epilogue.
    #[inline(always)]
    fn one(
        (taps, x, w, m, mg, p_in, epi): (
            &TapTable,
            &[f32],
            &[f32],
            usize,
            usize,
            usize,
            &Epilogue<'_>,
        ),
        oc: usize,
        dst: &mut [f32],
    ) {
        let kl = taps.taps();
        let src_plane = &x[(oc / mg) * p_in..][..p_in];
        let wrow = &w[(oc % m) * kl..][..kl];
        for (kp, &wk) in wrow.iter().enumerate() {
            axpy_runs(taps.runs(kp), taps.stride, wk, src_plane, dst);
        }
        if !epi.is_empty() {
            epi.apply(dst, oc * taps.plane);
        }
    }
    let ctx = (taps, x, w, m, mg, p_in, &epi);
    let total = planes * mg;
    let threads = crate::pool_threads();
    let work = total * p_out * kl;
    if threads > 1 && work >= PARALLEL_MIN_TAPS {
        let per = total.div_ceil(threads * 4).max(1);
        out.par_chunks_mut(per * p_out)
            .enumerate()
            .for_each(|(ci, chunk)| {
                vectorized(
                    #[inline(always)]
                    || {
                        for (j, dst) in chunk.chunks_exact_mut(p_out).enumerate() {
                            one(ctx, ci * per + j, dst);
                        }
                    },
                )
            });
    } else {
        vectorized(
            #[inline(always)]
            || {
                for (oc, dst) in out.chunks_exact_mut(p_out).enumerate() {
                    one(ctx, oc, dst);
                }
            },
        );
    }
}

/// Transposed convolution.
pub(crate) fn conv_transpose(
    a: &ConvTransposeAttrs,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
) -> KResult<Tensor> {
    let cv = &a.conv;
    let s = spatial_of(cv, x, &w.shape)?;
    let (xs, ws) = (&x.shape, &w.shape);
    let (n, c, g) = (xs[0], xs[1], cv.group);
    if c % g != 0 || ws[0] != c || a.output_padding.len() != s {
        return Err(format!("X {xs:?} and W {ws:?} do not fit group {g}"));
    }
    let (cg, mg) = (c / g, ws[1]);
    let m = mg * g;
    let mut out_sp = Vec::with_capacity(s);
    for i in 0..s {
        let pads = (cv.pads[i], cv.pads[s + i]);
        let (k, st, d, op) = (
            ws[2 + i],
            cv.strides[i],
            cv.dilations[i],
            a.output_padding[i],
        );
        out_sp.push(
            transpose_out_extent(xs[2 + i], k, st, d, pads, op)
                .ok_or_else(|| format!("pads {:?} leave no output of {xs:?}", cv.pads))?,
        );
    }
    // Driven by the input: output position a = i·stride + k·dilation − pad.
    let win = Window {
        drive: xs[2..].to_vec(),
        other: out_sp.clone(),
        kernel: ws[2..].to_vec(),
        strides: cv.strides.clone(),
        dilations: cv.dilations.clone(),
        pads: cv.pads[..s].to_vec(),
    };
    let (xv, wv) = (floats(x, "X")?, floats(w, "W")?);
    let bias = match b {
        Some(b) if b.shape != [m] => return Err(format!("bias {} must be [{m}]", describe(b))),
        Some(b) => Some(floats(b, "B")?),
        None => None,
    };
    let (p_in, p_out, kl) = (win.drive_plane(), win.other_plane(), win.kernel_len());
    let mut out = vec![0f32; n * m * p_out];
    init_planes(&mut out, bias, m, p_out);
    let kidx: Vec<Vec<usize>> = (0..kl).map(|kp| win.kernel_index(kp)).collect();
    let l = s - 1;
    let stride = cv.strides[l];
    let mut col = vec![0f32; mg * kl * p_in];
    for img in 0..n {
        for gi in 0..g {
            // col [mg·K, P_in] = W_gᵀ [mg·K, cg] · X_g [cg, P_in].
            let wt = MatView::new(wv, gi * cg * mg * kl, 1, mg * kl);
            let xm = MatView::row_major(xv, (img * c + gi * cg) * p_in, p_in);
            gemm_into(mg * kl, p_in, cg, &mut col, 0, wt, xm, 1.0, false)?;
            for j in 0..mg {
                let oc = img * m + gi * mg + j;
                let dst = &mut out[oc * p_out..(oc + 1) * p_out];
                for (kp, ki) in kidx.iter().enumerate() {
                    let src = &col[(j * kl + kp) * p_in..(j * kl + kp + 1) * p_in];
                    let (lo, hi, a0) = win.inner_range(ki[l]);
                    if lo >= hi {
                        continue;
                    }
                    win.rows(ki, |row, other| {
                        if let Some(o) = other {
                            let d = &mut dst[o + a0..];
                            for (i, sv) in src[row + lo..row + hi].iter().enumerate() {
                                d[i * stride] += sv;
                            }
                        }
                    });
                }
            }
        }
    }
    let mut shape = vec![n, m];
    shape.extend(out_sp);
    make(x.dtype, shape, TensorData::F32(out))
}
