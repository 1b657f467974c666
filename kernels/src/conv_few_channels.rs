//! Dense Convs with few input channels (stems: 3 channels under 3×3 taps at stride 2 in
//! mobile nets, 7×7 in ResNets; early Convs of 8 or 16 channels), vectorised over output
//! columns (AVX-512): each
//! input channel is copied once into the depthwise path's zero-padded stride-phase planes
//! (`conv_depthwise_flat.rs`), where every tap reads one contiguous run; an output row is
//! then computed for 8 output channels at a time, two 16-column vectors per pass, each tap
//! one load per vector and one fused multiply-add per (channel, vector) with the tap's
//! weight broadcast from memory, and stored straight into the NCHW output planes (masked
//! at the row's end); the epilogue runs on each plane's band of rows while it is in cache.
//!
//! im2col and the `gemm` crate spend most of such a Conv on the column matrix (27 rows of
//! every output position, 1.35 MB for a 112×112 output) and on a product only 27 deep; the
//! direct kernel (`conv_direct.rs`) transposes its `[position, channel]` result into the
//! planes, which costs as much as few input channels' multiply-adds per output.
//!
//! Each output sums the taps in ascending (channel, row, column) order from zero, one fused
//! multiply-add each (a tap reading padding adds `w·0`), then adds its bias.
use super::conv_depthwise_flat::{fill_planes, FlatGeometry, Layout};
use super::conv_epilogue::{ConvActivation, Epilogue};
#[cfg(target_arch = "x86_64")]
use super::conv_epilogue_avx512::VecAct;

/// Output rows computed for every channel before their epilogue runs.
const BAND: usize = 8;

/// Output channels per pass (accumulators: 8 channels × [`VECS`] vectors).
const OC: usize = 8;

/// 16-column vectors per pass.
const VECS: usize = 2;

/// Input channels up to which the kernel serves a dense Conv, whatever its kernel: against
/// the direct kernel (`conv_direct.rs`), which transposes its `[position, channel]` result
/// into the planes, ResNet's `[64, 3, 7, 7]` stride-2 stem over 224² ran 1488 against 2146
/// µs, `[16, 16, 3, 3]` over 112² 761 against 1060, `[32, 8, 3, 3]` over 64² 136 against
/// 214; from 32 channels the direct kernel is as fast or faster (`[64, 64, 3, 3]` over 56²:
/// 2058 against 2247). Against im2col and the `gemm` crate: `[32, 3, 3, 3]` stride 2 over
/// 224² 227 against 348 µs, `[96, 16, 1, 1]` over 112² 525 against 607 (with 24 to 40
/// channels the crate is 12–60 % faster on 1×1 Convs).
const MAX_CHANNELS: usize = 16;

/// True where the kernel serves a Conv of `c` input channels, `m` output channels and
/// `groups` groups whose output rows are `ow` wide: AVX-512F (as for the direct Conv), one
/// group, at most [`MAX_CHANNELS`] input channels, at least 8 output channels and rows of at
/// least 16 columns (one whole vector).
pub(crate) fn few_channels_suits(c: usize, m: usize, groups: usize, ow: usize) -> bool {
    groups == 1
        && c <= MAX_CHANNELS
        && m >= OC
        && ow >= 16
        && super::conv_direct::direct_available()
}

/// The Conv of geometry `geo` of `n` images (`x`: `[n, c, h·w]`, `w`: `[m, c, kh·kw]`) from
/// `bias`, then `epi`: a new `[n, m, oh·ow]` buffer. Only where [`few_channels_suits`] holds.
pub(crate) fn conv_few_channels(
    geo: &FlatGeometry,
    (n, c, m): (usize, usize, usize),
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    epi: Epilogue<'_>,
) -> Vec<f32> {
    let [h, wd] = geo.input;
    let [oh, ow] = geo.output;
    let kl = geo.kernel[0] * geo.kernel[1];
    let (p_in, p_out) = (h * wd, oh * ow);
    assert!(
        x.len() == n * c * p_in && w.len() == m * c * kl && few_channels_suits(c, m, 1, ow),
        "conv_few_channels: sizes"
    );
    let lay = geo.layout();
    let phases = geo.strides[0] * geo.strides[1];
    // Weights as [channel · tap, m + OC] (zeros past m: a block of OC channels starting at
    // any channel below m stays inside), read by broadcasts.
    let mp = m + OC;
    let mut wt = vec![0f32; c * kl * mp];
    for oc in 0..m {
        for l in 0..c * kl {
            wt[l * mp + oc] = w[oc * c * kl + l];
        }
    }
    let bv: Vec<f32> = (0..mp)
        .map(|oc| match bias {
            Some(b) if oc < m => b[oc],
            _ => 0.0,
        })
        .collect();
    // Every image's and channel's phase planes (one more vector at the end: a row's last
    // vector reads up to 15 columns past the row, whose lanes are never stored).
    let plane = phases * lay.size;
    let mut scratch = vec![0f32; n * c * plane + 16];
    for (i, dst) in scratch.chunks_exact_mut(plane).take(n * c).enumerate() {
        geo.fill_phases(&lay, &x[i * p_in..][..p_in], dst);
    }
    // A ReLU or Clip alone runs on the accumulators before they are stored; any other
    // epilogue runs on each band once stored.
    let (act, epi) = match epi.act {
        Some(a @ (ConvActivation::Relu | ConvActivation::Clip { .. }))
            if epi.scale.is_none() && epi.shift.is_none() && epi.residual.is_none() =>
        {
            (Some(a), Epilogue { act: None, ..epi })
        }
        _ => (None, epi),
    };
    let at = Rows {
        geo,
        lay: &lay,
        c,
        m,
        plane,
        scratch: &scratch,
        wt: &wt,
        mp,
        bias: &bv,
        act,
    };
    // SAFETY: `band` writes every element of each chunk of whole planes it is given.
    unsafe {
        fill_planes(n * m, p_out, c * kl, OC, |first, chunk| {
            band(&at, first, chunk, &epi)
        })
    }
}

/// What [`band`] reads: the geometry and phase layout, the input and output channels, the
/// size of each input plane's phase planes in `scratch`, the weights `[channel · tap, mp]`
/// and biases.
struct Rows<'a> {
    geo: &'a FlatGeometry,
    lay: &'a Layout,
    c: usize,
    m: usize,
    plane: usize,
    scratch: &'a [f32],
    wt: &'a [f32],
    mp: usize,
    bias: &'a [f32],
    /// A ReLU or Clip applied in registers before the store.
    act: Option<ConvActivation>,
}

/// Output planes `first ..` (of all images: plane `p` is channel `p mod m` of image
/// `p / m`; `chunk`: whole planes, uninitialised), in bands of [`BAND`] rows and blocks of at
/// most [`OC`] channels of one image, then the epilogue on each plane's band.
fn band(at: &Rows<'_>, first: usize, chunk: &mut [std::mem::MaybeUninit<f32>], epi: &Epilogue<'_>) {
    let [oh, ow] = at.geo.output;
    let p_out = oh * ow;
    let planes = chunk.len() / p_out;
    let out = chunk.as_mut_ptr().cast::<f32>();
    // Bands of rows: every block of channels computes the band's rows (its input rows stay
    // in cache), then the epilogue runs once per plane's band (a call per row cost more
    // than the activation itself on 112-column rows).
    for r0 in (0..oh).step_by(BAND) {
        let rows = (oh - r0).min(BAND);
        let mut b0 = 0;
        while b0 < planes {
            let (img, oc0) = ((first + b0) / at.m, (first + b0) % at.m);
            let nb = (planes - b0).min(OC).min(at.m - oc0);
            for r in r0..r0 + rows {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: few_channels_suits checked AVX-512F; rows r < oh of planes
                // b0 .. b0 + nb of the chunk, which holds `planes` planes of p_out.
                unsafe {
                    row(at, img, oc0, nb, r, out.add(b0 * p_out + r * ow))
                };
                #[cfg(not(target_arch = "x86_64"))]
                unreachable!("few_channels_suits is false off x86-64");
            }
            b0 += nb;
        }
        if !epi.is_empty() {
            for k in 0..planes {
                let off = k * p_out + r0 * ow;
                // SAFETY: the loop above wrote rows r0 .. r0 + rows of every plane.
                let dst = unsafe { std::slice::from_raw_parts_mut(out.add(off), rows * ow) };
                epi.apply(dst, (first + k) * p_out + r0 * ow);
            }
        }
    }
}

/// Output row `r` of output channels `oc0 .. oc0 + nb` of image `img` (`dst`: the first
/// channel's row, planes `oh·ow` apart).
///
/// # Safety
/// AVX-512F; `dst + k·p_out + col` is writable for k < nb, col < ow; `nb ≤ OC`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn row(at: &Rows<'_>, img: usize, oc0: usize, nb: usize, r: usize, dst: *mut f32) {
    let [oh, ow] = at.geo.output;
    let p_out = oh * ow;
    let vectors = ow.div_ceil(16);
    let mut v = 0;
    while v + VECS <= vectors {
        let acc = vectors_at::<VECS>(at, img, oc0, r, v);
        store(&acc, v, nb, ow, dst, p_out);
        v += VECS;
    }
    while v < vectors {
        let acc = vectors_at::<1>(at, img, oc0, r, v);
        store(&acc, v, nb, ow, dst, p_out);
        v += 1;
    }
}

/// Stores vectors `v0 ..` of `acc` (per vector, `nb` channels' accumulators) into the rows
/// of `nb` output planes (`dst`: the first one's row, planes `p_out` apart, rows `ow` long;
/// a vector past the row's end is masked).
///
/// # Safety
/// AVX-512F; `dst + k·p_out + col` is writable for k < nb, col < ow.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn store(
    acc: &[[std::arch::x86_64::__m512; OC]],
    v0: usize,
    nb: usize,
    ow: usize,
    dst: *mut f32,
    p_out: usize,
) {
    use std::arch::x86_64::{_mm512_mask_storeu_ps, _mm512_storeu_ps};
    for (u, a) in acc.iter().enumerate() {
        let col = (v0 + u) * 16;
        let lanes = (ow - col).min(16);
        for (k, ak) in a.iter().enumerate().take(nb) {
            let p = dst.add(k * p_out + col);
            if lanes == 16 {
                _mm512_storeu_ps(p, *ak);
            } else {
                _mm512_mask_storeu_ps(p, super::simd::lane_mask(lanes), *ak);
            }
        }
    }
}

/// Columns `v·16 .. (v + N)·16` of output row `r` of image `img` for output channels
/// `oc0 .. oc0 + OC` (the weights hold zeros past `m`).
///
/// # Safety
/// AVX-512F; `v + N ≤ ⌈ow / 16⌉` (reads past the row's end fall inside the scratch buffer's
/// last vector of slack or the next row).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn vectors_at<const N: usize>(
    at: &Rows<'_>,
    img: usize,
    oc0: usize,
    r: usize,
    v: usize,
) -> [[std::arch::x86_64::__m512; OC]; N] {
    use std::arch::x86_64::{_mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps};
    let mut acc = [[_mm512_set1_ps(0.0); OC]; N];
    let o = r * at.lay.wq + v * 16;
    let kl = at.lay.tap_offsets.len();
    for ci in 0..at.c {
        let src = at.scratch.as_ptr().add((img * at.c + ci) * at.plane + o);
        for (t, &off) in at.lay.tap_offsets.iter().enumerate() {
            let w = at.wt.as_ptr().add((ci * kl + t) * at.mp + oc0);
            for (u, a) in acc.iter_mut().enumerate() {
                // SAFETY: the phase planes hold every column a row's vectors read (the
                // layout's margin and the scratch buffer's slack).
                let x = _mm512_loadu_ps(src.add(off + u * 16));
                for (k, ak) in a.iter_mut().enumerate() {
                    *ak = _mm512_fmadd_ps(_mm512_set1_ps(*w.add(k)), x, *ak);
                }
            }
        }
    }
    // The bias last, as the GEMM paths add the product to it: started from the bias, every
    // partial sum carried its magnitude and its rounding (a MobileNet-V3 stem's outputs
    // moved 2.5× further from a float64 reference than onnxruntime's).
    let act = VecAct::new(at.act);
    for a in acc.iter_mut() {
        for (k, ak) in a.iter_mut().enumerate() {
            *ak = act.apply(_mm512_add_ps(_mm512_set1_ps(at.bias[oc0 + k]), *ak));
        }
    }
    acc
}
