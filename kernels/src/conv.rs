//! Conv and ConvTranspose in f32, routed by shape. Dense and grouped Convs run as GEMMs
//! (`conv_gemm.rs`: im2col and one product per image and group; a 1×1 convolution without
//! stride or padding multiplies the input directly); a dense Conv with few input channels
//! (a stem) is vectorised over output columns (`conv_few_channels.rs`). A depthwise
//! convolution (one input channel per group) accumulates kernel taps straight into the
//! output: 16 channels at a time interleaved, with AVX-512 or AVX2 (`lanes16.rs`),
//! wherever the row path does not read 3×3 planes in place (`conv_depthwise_blocked.rs`);
//! over all channels at once on planes of at most 64 outputs (`conv_depthwise.rs`); plane
//! by plane from padded stride-phase copies of the input on 1-D and 2-D planes
//! (`conv_depthwise_flat.rs`); and run by run from the tap table in three or more
//! dimensions. ConvTranspose is one GEMM (Wᵀ·X) and a col2im scatter-add. A fused Conv
//! ([`conv_fused`]) runs its epilogue (residual add, activation) on each block of output as
//! soon as it is final; given weights packed when the plan was loaded
//! ([`ConvWeight::Packed`]) it runs on the direct kernel (`conv_direct.rs`).
use super::conv_depthwise::{depthwise_channels_last, MIN_CHANNELS, SMALL_PLANE};
use super::conv_depthwise_blocked::{blocked_suits, depthwise_blocked};
use super::conv_depthwise_flat::{depthwise_flat, FlatGeometry};
use super::conv_direct::{conv_direct, DirectGeometry, PackedConvWeight};
use super::conv_epilogue::Epilogue;
use super::conv_few_channels::{conv_few_channels, few_channels_suits};
use super::conv_gemm::gemm_conv;
use super::conv_grouped::{
    grouped_channels_last, grouped_suits, GroupedWeights, PackedGroupedWeight,
};
use super::conv_taps::{axpy_runs, TapTable, PARALLEL_MIN_TAPS};
use super::matmul::{gemm_into, MatView};
use super::simd::vectorized;
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
pub(super) fn output_planes(len: usize, bias: Option<&[f32]>, m: usize, plane: usize) -> Vec<f32> {
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
    /// W blocked for the grouped kernel when the plan was loaded.
    Grouped(&'a PackedGroupedWeight),
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
        ConvWeight::Grouped(p) => p.shape(),
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
        ConvWeight::Grouped(p) => {
            if p.group() != g || !grouped_suits(c, m, g, p_out) {
                return Err(format!(
                    "W was blocked for group {} of the grouped kernel, which does not serve \
                     X {xs:?} in {g} groups",
                    p.group()
                ));
            }
            let taps = TapTable::new(&win);
            // Every element is written from its bias.
            let mut out = vec![0f32; len];
            let w = GroupedWeights::Blocked(p.blocked());
            grouped_channels_last(&taps, xv, w, bias, &mut out, (n, c, m, g, p_in), epi);
            return make(x.dtype, shape, TensorData::F32(out));
        }
        ConvWeight::Packed(p) => {
            if p.group() != g {
                return Err(format!("W was packed for group {}, not {g}", p.group()));
            }
            let win = FlatGeometry::of_window(&win)
                .ok_or_else(|| format!("the direct Conv does not serve X {xs:?}"))?;
            let geo = DirectGeometry { n, c, win };
            // Every element is written by the kernel: no zeroing first.
            let mut out = Vec::with_capacity(len);
            conv_direct(&geo, xv, p, bias, &mut out.spare_capacity_mut()[..len], epi)?;
            // SAFETY: conv_direct returned Ok, so it wrote all `len` elements (its contract).
            unsafe { out.set_len(len) };
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
        .filter(|geo| few_channels_suits(c, m, g, geo.output[1], win.kernel_len()))
    {
        let out = conv_few_channels(&geo.pointwise_as_one_row(), (n, c, m), xv, wv, bias, epi);
        return make(x.dtype, shape, TensorData::F32(out));
    }
    let taps = TapTable::new(&win);
    if grouped_suits(c, m, g, p_out) {
        // Every element is written from its bias.
        let mut out = vec![0f32; len];
        let w = GroupedWeights::Plain(wv);
        grouped_channels_last(&taps, xv, w, bias, &mut out, (n, c, m, g, p_in), epi);
        return make(x.dtype, shape, TensorData::F32(out));
    }
    if cg > 1 {
        let out = gemm_conv(&win, &taps, xv, wv, bias, (n, c, m, g), epi)?;
        return make(x.dtype, shape, TensorData::F32(out));
    }
    if mg == 1 && p_out <= SMALL_PLANE && c >= MIN_CHANNELS {
        // Every output is written from its bias: no planes of biases first.
        let mut out = vec![0f32; len];
        depthwise_channels_last(&taps, xv, wv, bias, &mut out, (n, c, p_in), epi);
        return make(x.dtype, shape, TensorData::F32(out));
    }
    let mut out = output_planes(len, bias, m, p_out);
    depthwise(&taps, xv, wv, &mut out, (n * c, mg, p_in), epi);
    make(x.dtype, shape, TensorData::F32(out))
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
    if threads > 1 && work >= crate::split_min(PARALLEL_MIN_TAPS) {
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
