//! Dense Convs with few input channels (stems: 3 channels under 3×3 taps at stride 2 in
//! mobile nets, 7×7 in ResNets; early Convs of 8 or 16 channels), vectorised over output
//! columns (16 columns: one AVX-512 register or two AVX2 ones, `lanes16.rs`): each
//! input channel is copied once into the depthwise path's zero-padded stride-phase planes
//! (`conv_depthwise_flat.rs`), where every tap reads one contiguous run; an output row is
//! then computed for 8 output channels at a time, two 16-column vectors per pass (AVX2:
//! 4 channels, one vector; its 16 registers hold no more accumulators), each tap
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
use super::lanes16::{lanes_isa, LanesIsa};
#[cfg(target_arch = "x86_64")]
use super::lanes16::{Avx2, Avx512, Lanes16};

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

/// True where the kernel serves a Conv of `c` input channels, `m` output channels,
/// `groups` groups and `taps` kernel taps whose output rows are `ow` wide: AVX-512F, or
/// AVX2 with FMA for more than one tap (a 1×1 Conv of 16 channels over 32×32 planes took
/// 223 µs here against 109 in the `gemm` crate, with 4 channels a pass; stems 0.5–0.8 of
/// the crate's time: `[16, 3, 3, 3]` stride 2 over 64², 51 against 102 µs), one group, at most [`MAX_CHANNELS`] input channels, at least 8 output channels and rows of at
/// least 16 columns (one whole vector).
pub(crate) fn few_channels_suits(
    c: usize,
    m: usize,
    groups: usize,
    ow: usize,
    taps: usize,
) -> bool {
    let isa_suits = match lanes_isa() {
        Some(LanesIsa::Avx512) => true,
        Some(LanesIsa::Avx2) => taps > 1,
        None => false,
    };
    groups == 1 && c <= MAX_CHANNELS && m >= OC && ow >= 16 && isa_suits
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
    let kl = geo.kernel[0] * geo.kernel[1];
    assert!(
        few_channels_suits(c, m, 1, geo.output[1], kl),
        "conv_few_channels: not served"
    );
    // few_channels_with checks the sizes.
    few_channels_with(lanes_isa(), geo, (n, c, m), (x, w, bias), epi)
}

/// [`conv_few_channels`] on the instruction set `isa` (which the CPU must support: the
/// tests run the AVX2 kernel on AVX-512 machines too).
fn few_channels_with(
    isa: Option<LanesIsa>,
    geo: &FlatGeometry,
    (n, c, m): (usize, usize, usize),
    (x, w, bias): (&[f32], &[f32], Option<&[f32]>),
    epi: Epilogue<'_>,
) -> Vec<f32> {
    let [h, wd] = geo.input;
    let [oh, ow] = geo.output;
    let kl = geo.kernel[0] * geo.kernel[1];
    let (p_in, p_out) = (h * wd, oh * ow);
    assert!(
        x.len() == n * c * p_in && w.len() == m * c * kl && m >= OC && ow >= 16,
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
        isa,
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
    /// The instruction set the rows run on.
    isa: Option<LanesIsa>,
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
            let ocb = match at.isa {
                Some(LanesIsa::Avx2) => OC_AVX2,
                _ => OC,
            };
            let nb = (planes - b0).min(ocb).min(at.m - oc0);
            for r in r0..r0 + rows {
                let dst = out.wrapping_add(b0 * p_out + r * ow);
                #[cfg(target_arch = "x86_64")]
                // SAFETY: few_channels_suits checked the instruction set; rows r < oh of
                // planes b0 .. b0 + nb of the chunk, which holds `planes` planes of p_out.
                unsafe {
                    match at.isa {
                        Some(LanesIsa::Avx512) => row_avx512(at, img, oc0, nb, r, dst),
                        Some(LanesIsa::Avx2) => row_avx2(at, img, oc0, nb, r, dst),
                        None => unreachable!("few_channels_suits found an instruction set"),
                    }
                };
                #[cfg(not(target_arch = "x86_64"))]
                unreachable!("few_channels_suits is false off x86-64 ({dst:?})");
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

/// Output channels per pass on AVX2 (accumulators: 4 channels × one 16-column vector, 8 of
/// its 16 registers).
const OC_AVX2: usize = 4;

/// [`row`] on AVX-512: [`OC`] channels, [`VECS`] vectors a pass.
///
/// # Safety
/// AVX-512F; as [`row`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn row_avx512(at: &Rows<'_>, img: usize, oc0: usize, nb: usize, r: usize, dst: *mut f32) {
    row::<Avx512, OC, VECS>(at, img, oc0, nb, r, dst)
}

/// [`row`] on AVX2: [`OC_AVX2`] channels, one vector a pass.
///
/// # Safety
/// AVX2 and FMA; as [`row`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_avx2(at: &Rows<'_>, img: usize, oc0: usize, nb: usize, r: usize, dst: *mut f32) {
    row::<Avx2, OC_AVX2, 1>(at, img, oc0, nb, r, dst)
}

/// Output row `r` of output channels `oc0 .. oc0 + nb` of image `img` (`dst`: the first
/// channel's row, planes `oh·ow` apart), `B` channels and `N` vectors a pass.
///
/// # Safety
/// `V`'s instruction set; `dst + k·p_out + col` is writable for k < nb, col < ow; `nb ≤ B`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn row<V: Lanes16, const B: usize, const N: usize>(
    at: &Rows<'_>,
    img: usize,
    oc0: usize,
    nb: usize,
    r: usize,
    dst: *mut f32,
) {
    let [oh, ow] = at.geo.output;
    let p_out = oh * ow;
    let vectors = ow.div_ceil(16);
    let mut v = 0;
    while v + N <= vectors {
        let acc = vectors_at::<V, B, N>(at, img, oc0, r, v);
        store(&acc, v, nb, ow, dst, p_out);
        v += N;
    }
    while v < vectors {
        let acc = vectors_at::<V, B, 1>(at, img, oc0, r, v);
        store(&acc, v, nb, ow, dst, p_out);
        v += 1;
    }
}

/// Stores vectors `v0 ..` of `acc` (per vector, `nb` channels' accumulators) into the rows
/// of `nb` output planes (`dst`: the first one's row, planes `p_out` apart, rows `ow` long;
/// a vector past the row's end stores its lanes inside the row only).
///
/// # Safety
/// `V`'s instruction set; `dst + k·p_out + col` is writable for k < nb, col < ow.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store<V: Lanes16, const B: usize>(
    acc: &[[V; B]],
    v0: usize,
    nb: usize,
    ow: usize,
    dst: *mut f32,
    p_out: usize,
) {
    for (u, a) in acc.iter().enumerate() {
        let col = (v0 + u) * 16;
        let lanes = ow - col;
        for (k, ak) in a.iter().enumerate().take(nb) {
            ak.store_first(dst.add(k * p_out + col), lanes);
        }
    }
}

/// Columns `v·16 .. (v + N)·16` of output row `r` of image `img` for output channels
/// `oc0 .. oc0 + B` (the weights hold zeros past `m`).
///
/// # Safety
/// `V`'s instruction set; `v + N ≤ ⌈ow / 16⌉` (reads past the row's end fall inside the
/// scratch buffer's last vector of slack or the next row); `B ≤ OC`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn vectors_at<V: Lanes16, const B: usize, const N: usize>(
    at: &Rows<'_>,
    img: usize,
    oc0: usize,
    r: usize,
    v: usize,
) -> [[V; B]; N] {
    let mut acc = [[V::splat(0.0); B]; N];
    let o = r * at.lay.wq + v * 16;
    let kl = at.lay.tap_offsets.len();
    for ci in 0..at.c {
        let src = at.scratch.as_ptr().add((img * at.c + ci) * at.plane + o);
        for (t, &off) in at.lay.tap_offsets.iter().enumerate() {
            let w = at.wt.as_ptr().add((ci * kl + t) * at.mp + oc0);
            for (u, a) in acc.iter_mut().enumerate() {
                // SAFETY: the phase planes hold every column a row's vectors read (the
                // layout's margin and the scratch buffer's slack).
                let x = V::load(src.add(off + u * 16));
                for (k, ak) in a.iter_mut().enumerate() {
                    *ak = V::fmadd(V::splat(*w.add(k)), x, *ak);
                }
            }
        }
    }
    // The bias last, as the GEMM paths add the product to it: started from the bias, every
    // partial sum carried its magnitude and its rounding (a MobileNet-V3 stem's outputs
    // moved 2.5× further from a float64 reference than onnxruntime's).
    let bounds = match at.act {
        Some(ConvActivation::Clip { min, max }) => Some((
            V::splat(min.unwrap_or(f32::NEG_INFINITY)),
            V::splat(max.unwrap_or(f32::INFINITY)),
        )),
        _ => None,
    };
    let relu = matches!(at.act, Some(ConvActivation::Relu));
    for a in acc.iter_mut() {
        for (k, ak) in a.iter_mut().enumerate() {
            let y = V::add(V::splat(at.bias[oc0 + k]), *ak);
            *ak = match bounds {
                Some((lo, hi)) => y.clip(lo, hi),
                None if relu => y.relu(),
                None => y,
            };
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::{few_channels_with, ConvActivation, FlatGeometry, LanesIsa};
    use crate::conv_depthwise::tests::values;
    use crate::conv_epilogue::Epilogue;

    /// The AVX2 rows (4 channels, one vector a pass) give the AVX-512 rows' bits (8
    /// channels, two vectors), with each activation applied in registers and rows that end
    /// mid-vector; on an AVX2-only machine the AVX2 rows are checked against the reference
    /// by `conv_tests.rs`.
    #[test]
    fn avx2_rows_give_the_avx512_bits() {
        if crate::lanes16::lanes_isa() != Some(LanesIsa::Avx512) {
            eprintln!("skipped: needs AVX-512F (and AVX2) to compare the two");
            return;
        }
        let geo = FlatGeometry {
            input: [21, 37],
            output: [11, 19],
            kernel: [3, 3],
            strides: [2, 2],
            dilations: [1, 1],
            pads: [1, 1],
        };
        let (n, c, m) = (2, 3, 13);
        let x = values(n * c * 21 * 37, 5);
        let w = values(m * c * 9, 6);
        let b = values(m, 7);
        let acts = [
            None,
            Some(ConvActivation::Relu),
            Some(ConvActivation::Clip {
                min: Some(-0.25),
                max: Some(0.5),
            }),
        ];
        for act in acts {
            let epi = Epilogue {
                act,
                ..Epilogue::default()
            };
            let run = |isa| few_channels_with(Some(isa), &geo, (n, c, m), (&x, &w, Some(&b)), epi);
            let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
            assert_eq!(
                bits(run(LanesIsa::Avx2)),
                bits(run(LanesIsa::Avx512)),
                "{act:?}"
            );
        }
    }
}
