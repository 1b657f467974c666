//! Depthwise 2-D Conv with one output channel per input channel, sixteen channels at a time
//! interleaved (one AVX-512 register, or two AVX2 ones: `lanes16.rs`): the layout onnxruntime's NCHWc kernels keep between Convs, built
//! here inside the Conv. Per block of 16 planes, the input planes are transposed (16×16
//! blocks in registers) into one zero-padded buffer `[row, column, 16]`; every output
//! position is then the 16 biases plus, tap by tap, one full-width load and one fused
//! multiply-add, with the taps' weights held in registers and several positions in flight;
//! the result `[position, 16]` is transposed back into the 16 output planes, and the
//! epilogue runs on them while they are in cache.
//!
//! Against reading each plane on its own (`conv_depthwise_rows.rs`, the phase planes of
//! `conv_depthwise_flat.rs`), every lane does work whatever the plane's width (a 7-wide row
//! fills 7 of 16 lanes there), a column stride of 2 needs no de-interleaved copy, and there
//! is no per-plane set-up: on the 7×7 to 28×28 planes of mobile nets' late stages, and on
//! every stride-2 Conv, the transposes cost less than the lanes and copies they save.
//!
//! Same arithmetic as the plane paths: each output starts from its bias and takes the taps
//! in ascending order, one fused multiply-add each; a tap that reads padding adds `w·0`
//! (the padded buffer's zeros), so all paths give the same bits.
use super::conv_depthwise_flat::{fill_planes, FlatGeometry};
use super::conv_depthwise_rows::rows_serve;
use super::conv_epilogue::Epilogue;
use super::lanes16::{lanes_isa, LanesIsa};
#[cfg(target_arch = "x86_64")]
use super::lanes16::{Avx2, Avx512, Lanes16};
use std::mem::MaybeUninit;

/// Channels (planes) per block: one AVX-512 vector.
const L: usize = 16;

/// Positions past the padded buffer's last row that a partial block of the last input row
/// may write (zeros).
const SLACK: usize = L;

/// Input positions per plane up to which the planes are transposed whole (into a buffer of
/// at most 64 KB, then copied row by row into the padded one): fewer partial blocks than
/// row by row on narrow rows (28×28: 47 against 54 µs for 192 planes). Larger planes go
/// row by row (the whole-plane buffer, 200 KB on 56×56, faulted its pages on every call).
const WHOLE_PLANE: usize = 1024;

/// True when [`gather_input`] transposes whole planes through its staging buffer: not when
/// rows are a whole number of blocks wide, which row by row has no partial block to save
/// and no copy to pay (AVX2, 32×32 inputs at stride 2: 11 against 16 µs for 32 planes,
/// 54 against 71 for 128 under 5×5 taps; 16×16 at stride 1: 21 against 24).
fn through_tin(geo: &FlatGeometry) -> bool {
    geo.input[0] * geo.input[1] <= WHOLE_PLANE && !geo.input[1].is_multiple_of(L)
}

/// Output positions per row in flight at once (independent multiply-add chains).
const AHEAD: usize = 4;

/// The zero-padded buffer's extent for one geometry: rows and columns (begin padding,
/// the input, and whatever end padding the last output reads).
#[derive(Clone, Copy)]
struct Padded {
    rows: usize,
    cols: usize,
}

impl Padded {
    fn of(geo: &FlatGeometry) -> Padded {
        let reach = |i: usize| {
            let last = (geo.output[i].max(1) - 1) * geo.strides[i]
                + (geo.kernel[i].max(1) - 1) * geo.dilations[i]
                + 1;
            last.max(geo.pads[i] + geo.input[i])
        };
        Padded {
            rows: reach(0),
            cols: reach(1),
        }
    }
}

/// True where the blocked kernel serves a depthwise Conv of geometry `geo` (one output
/// channel per input channel) over `planes` planes of all images: AVX-512F or AVX2 with
/// FMA; on AVX-512, output planes of at least 16 positions (on smaller ones every block of
/// positions is a partial one: `[960, 2, 2]` of two images under 3×3 taps took 41 against
/// 19 µs on the channels-innermost path, `[256, 3, 3]` 16 against 12, `[576, 4, 4]` at
/// stride 2 25 against 16; `[384, 4, 4]` at stride 1 equal), on AVX2 [`avx2_suits`]; at
/// least one whole block of planes; at least a quarter of all (output,
/// tap) pairs reading the input, not padding (the channels-innermost path visits the live
/// ones only: MobileNet-V3's 5×5 Convs on 2×2 planes, 16 % live, took 77 against 56 µs
/// here, on 4×4 planes, 49 % live, 12 against 32); and not a Conv of at most 3×3 taps that
/// the row path reads in place, with no transposes (`[144, 56, 56]`, 3×3: 290 against 236
/// µs there; with 5×5 or 7×7 taps the blocked kernel is 7–25 % faster).
pub(crate) fn blocked_suits(geo: &FlatGeometry, planes: usize) -> bool {
    let kl = geo.kernel[0] * geo.kernel[1];
    let isa_suits = match lanes_isa() {
        Some(LanesIsa::Avx512) => geo.output[0] * geo.output[1] >= L,
        Some(LanesIsa::Avx2) => avx2_suits(geo),
        None => false,
    };
    planes >= L
        && isa_suits
        && 4 * live_pairs(geo) >= geo.output[0] * geo.output[1] * kl
        && !(kl <= 9 && rows_serve(geo))
}

/// Where the blocked kernel on AVX2 (two registers per block, no row path beside it) is
/// faster than the plane paths, measured on an AMD EPYC with AVX2, 2 images of 32 to 1152
/// channels, 3×3 and 5×5 taps: everywhere (0.28–0.9 of their time; 0.37 on stride 2)
/// except on planes of fewer than 16 inputs, where every block of positions is a partial
/// one (`[1152, 2, 2]` under 3×3: 95 against 60 µs, `[256, 3, 3]`: 1.17×; from 4×4 on
/// 0.72–0.78), and at stride 1 on output planes of a multiple of 1024 elements, whose
/// planes lie 4 KB apart (32×32: 66 against 47 µs, 64×64: 1.15×; 31×31 and 40×40: 0.7–0.9).
fn avx2_suits(geo: &FlatGeometry) -> bool {
    let p_out = geo.output[0] * geo.output[1];
    geo.input[0] * geo.input[1] >= L && !(geo.strides == [1, 1] && p_out.is_multiple_of(1024))
}

/// The (output, tap) pairs of `geo` that read the input (rows times columns: the two axes
/// are independent).
fn live_pairs(geo: &FlatGeometry) -> usize {
    let axis = |a: usize| {
        (0..geo.output[a])
            .map(|o| {
                (0..geo.kernel[a])
                    .filter(|&t| {
                        let at = o * geo.strides[a] + t * geo.dilations[a];
                        at >= geo.pads[a] && at - geo.pads[a] < geo.input[a]
                    })
                    .count()
            })
            .sum::<usize>()
    };
    axis(0) * axis(1)
}

/// The depthwise Conv of geometry `geo` over `planes` input planes (`x`: `[planes, h·w]`,
/// plane `p` of channel `p mod m`, `w`: `[m, kh·kw]`) from `bias`, then `epi`: a new
/// `[planes, oh·ow]` buffer. Only where [`blocked_suits`] holds.
pub(crate) fn depthwise_blocked(
    geo: &FlatGeometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    planes: usize,
    m: usize,
    epi: Epilogue<'_>,
) -> Vec<f32> {
    assert!(blocked_suits(geo, planes), "depthwise_blocked: not served");
    // Some: blocked_suits checked it (blocked_with checks the sizes).
    blocked_with(lanes_isa(), geo, x, w, bias, (planes, m), epi)
}

/// [`depthwise_blocked`] on the instruction set `isa` (which the CPU must support: the
/// tests run the AVX2 kernel on AVX-512 machines too).
fn blocked_with(
    isa: Option<LanesIsa>,
    geo: &FlatGeometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    (planes, m): (usize, usize),
    epi: Epilogue<'_>,
) -> Vec<f32> {
    let [h, wd] = geo.input;
    let [oh, ow] = geo.output;
    let kl = geo.kernel[0] * geo.kernel[1];
    let (p_in, p_out) = (h * wd, oh * ow);
    assert!(
        x.len() == planes * p_in && w.len() == m * kl && m > 0 && kl > 0 && planes >= L,
        "depthwise_blocked: sizes"
    );
    let pad = Padded::of(geo);
    let run = |first: usize, chunk: &mut [MaybeUninit<f32>]| {
        // Per thread: the padded input (its border stays zero across blocks: each block
        // overwrites the interior only), the transposed input and output (whole 16-position
        // blocks), the block's weights and biases, and one 16×16 staging tile.
        let mut padded = vec![0f32; (pad.rows * pad.cols + SLACK) * L];
        let tin_len = if through_tin(geo) {
            p_in.next_multiple_of(L) * L
        } else {
            0
        };
        let mut tin = vec![0f32; tin_len];
        let mut tout = vec![0f32; p_out.next_multiple_of(L) * L];
        let mut wt = vec![0f32; kl * L];
        let mut bv = [0f32; L];
        let mut tile = [0f32; L * L];
        for (j, dst) in chunk.chunks_mut(L * p_out).enumerate() {
            let p0 = first + j * L;
            let nb = dst.len() / p_out.max(1);
            for l in 0..L {
                let ch = (p0 + l.min(nb - 1)) % m;
                bv[l] = bias.map_or(0.0, |b| b[ch]);
                for t in 0..kl {
                    wt[t * L + l] = w[ch * kl + t];
                }
            }
            let xs = &x[p0 * p_in..(p0 + nb) * p_in];
            let mut one = Block {
                xs,
                nb,
                geo,
                pad,
                wt: &wt,
                bias: &bv,
                tin: &mut tin,
                padded: &mut padded,
                tout: &mut tout,
                tile: &mut tile,
            };
            #[cfg(target_arch = "x86_64")]
            // SAFETY: blocked_suits (asserted above) checked the instruction set; the
            // buffers have the sizes each kernel documents (allocated just above from the
            // same geometry).
            unsafe {
                match isa {
                    Some(LanesIsa::Avx512) => block_avx512(&mut one, dst),
                    Some(LanesIsa::Avx2) => block_avx2(&mut one, dst),
                    None => unreachable!("blocked_suits found an instruction set"),
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            unreachable!("blocked_suits is false off x86-64 ({isa:?}, {})", one.nb);
            // SAFETY: scatter_output wrote all nb·p_out elements of `dst`; MaybeUninit<f32>
            // has f32's layout.
            let dst = unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast(), dst.len()) };
            if !epi.is_empty() {
                epi.apply(dst, p0 * p_out);
            }
        }
    };
    // SAFETY: `run` writes every element of its chunk (its blocks cover the chunk, and
    // scatter_output writes every element of a block).
    unsafe { fill_planes(planes, p_out, kl, L, run) }
}

/// One block of up to 16 planes and the per-thread scratch it runs in (sizes as
/// [`depthwise_blocked`] allocates them).
struct Block<'a> {
    xs: &'a [f32],
    nb: usize,
    geo: &'a FlatGeometry,
    pad: Padded,
    wt: &'a [f32],
    bias: &'a [f32; L],
    tin: &'a mut [f32],
    padded: &'a mut [f32],
    tout: &'a mut [f32],
    tile: &'a mut [f32; L * L],
}

/// [`block`] on AVX-512.
///
/// # Safety
/// AVX-512F; as [`block`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn block_avx512(b: &mut Block<'_>, dst: &mut [MaybeUninit<f32>]) {
    block::<Avx512>(b, dst)
}

/// [`block`] on AVX2.
///
/// # Safety
/// AVX2 and FMA; as [`block`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2(b: &mut Block<'_>, dst: &mut [MaybeUninit<f32>]) {
    block::<Avx2>(b, dst)
}

/// The `b.nb` output planes `dst` of one block: its input gathered into the padded
/// buffer, every output position, and the transpose back.
///
/// # Safety
/// The CPU supports `V`'s instruction set; the scratch of `b` is sized for its geometry,
/// and `dst` holds `b.nb` output planes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn block<V: Lanes16>(b: &mut Block<'_>, dst: &mut [MaybeUninit<f32>]) {
    let (geo, pad) = (b.geo, b.pad);
    gather_input::<V>(b.xs, b.nb, geo, pad, b.tin, b.padded, b.tile);
    let (padded, wt, bias) = (&*b.padded, b.wt, b.bias);
    let tout = &mut *b.tout;
    match (geo.kernel, geo.strides) {
        ([3, 3], [1, 1]) => rows::<V, 9, 3, 1>(geo, pad, padded, wt, bias, tout),
        ([3, 3], [2, 2]) => rows::<V, 9, 3, 2>(geo, pad, padded, wt, bias, tout),
        ([5, 5], [1, 1]) => rows::<V, 25, 5, 1>(geo, pad, padded, wt, bias, tout),
        ([5, 5], [2, 2]) => rows::<V, 25, 5, 2>(geo, pad, padded, wt, bias, tout),
        _ => rows::<V, 0, 0, 0>(geo, pad, padded, wt, bias, tout),
    }
    let p_out = geo.output[0] * geo.output[1];
    scatter_output::<V>(tout, b.nb, p_out, dst, b.tile);
}

/// Transposes the `nb` input planes `xs` (`[nb, h·w]`) into `padded` (`[rows, cols, 16]`,
/// the input at row `pt`, column `pl`, then [`SLACK`] positions). Small planes
/// ([`through_tin`]) go through `tin` (`[h·w rounded up to 16, 16]`, whole blocks of
/// positions of several rows) and a copy per row; larger ones row by row, whole 16×16
/// blocks straight from the planes. A partial block (fewer planes or positions) goes through `tile`,
/// zero past its positions: in `padded` its 16 transposed rows run into the right padding
/// and the next row (zeros there, data written after) or the slack. Lanes past `nb` hold
/// whatever they held: their outputs are never written out.
///
/// # Safety
/// `V`'s instruction set; `xs.len() == nb·h·w`, `1 ≤ nb ≤ 16`, `tin` and `padded` sized as
/// above.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn gather_input<V: Lanes16>(
    xs: &[f32],
    nb: usize,
    geo: &FlatGeometry,
    pad: Padded,
    tin: &mut [f32],
    padded: &mut [f32],
    tile: &mut [f32; L * L],
) {
    let [h, wd] = geo.input;
    let [pt, pl] = geo.pads;
    let p_in = h * wd;
    if !through_tin(geo) {
        for r in 0..h {
            let at = ((r + pt) * pad.cols + pl) * L;
            // SAFETY: row r of each plane, into row r + pt of `padded` (with its slack).
            transpose_run::<V>(xs, r * wd, wd, p_in, nb, &mut padded[at..], tile);
        }
        return;
    }
    // SAFETY: all positions of each plane, into `tin`'s rounded-up rows.
    transpose_run::<V>(xs, 0, p_in, p_in, nb, tin, tile);
    for r in 0..h {
        padded[((r + pt) * pad.cols + pl) * L..][..wd * L]
            .copy_from_slice(&tin[r * wd * L..][..wd * L]);
    }
}

/// Positions `from .. from + n` of the `nb` planes `xs` (`p_in` apart) into `dst`
/// (`[position, 16]`, 16 positions per block, a last partial block through `tile` with
/// zeros past its positions).
///
/// # Safety
/// `V`'s instruction set; `from + n ≤ p_in`, `xs.len() == nb·p_in`, `1 ≤ nb ≤ 16`, and
/// `dst` holds `n` rounded up to 16 positions of 16.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn transpose_run<V: Lanes16>(
    xs: &[f32],
    from: usize,
    n: usize,
    p_in: usize,
    nb: usize,
    dst: &mut [f32],
    tile: &mut [f32; L * L],
) {
    assert!(
        dst.len() >= n.next_multiple_of(L) * L,
        "transpose_run: destination"
    );
    for c0 in (0..n).step_by(L) {
        let k = (n - c0).min(L);
        if nb == L && k == L {
            // SAFETY: positions from + c0 .. + 16 ≤ p_in of the 16 planes; 16 rows of
            // `dst` from c0 (checked above).
            V::transpose16(
                xs.as_ptr().add(from + c0),
                p_in,
                dst.as_mut_ptr().add(c0 * L),
                L,
            );
        } else {
            for l in 0..L {
                let row = &mut tile[l * L..][..L];
                if l < nb {
                    row[..k].copy_from_slice(&xs[l * p_in + from + c0..][..k]);
                    row[k..].fill(0.0);
                } else {
                    row.fill(0.0);
                }
            }
            // SAFETY: the tile holds 16 rows of 16; `dst` 16 rows from c0 (checked above).
            V::transpose16(tile.as_ptr(), L, dst.as_mut_ptr().add(c0 * L), L);
        }
    }
}

/// Every output position of one block: `tout[o, lane]` = `bias[lane]` plus, tap by tap in
/// ascending order, `w[tap, lane] · padded[row, col, lane]`. `K` taps (`KW` a row, stride
/// `S` both ways) are held in registers; `K = 0` reads the geometry's kernel and strides
/// and loads each tap's weights as it goes.
///
/// # Safety
/// `V`'s instruction set; `padded` is `[pad.rows, pad.cols, 16]` for `geo`, `wt`
/// `[kh·kw, 16]`, `tout` at least `[oh·ow, 16]`; `K`, `KW` and `S` are 0 or `geo`'s kernel
/// size, width and strides.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn rows<V: Lanes16, const K: usize, const KW: usize, const S: usize>(
    geo: &FlatGeometry,
    pad: Padded,
    padded: &[f32],
    wt: &[f32],
    bias: &[f32; L],
    tout: &mut [f32],
) {
    let [oh, ow] = geo.output;
    let (kh, kw) = if K > 0 {
        (K / KW, KW)
    } else {
        (geo.kernel[0], geo.kernel[1])
    };
    let (sh, sw) = if S > 0 {
        (S, S)
    } else {
        (geo.strides[0], geo.strides[1])
    };
    let [dh, dw] = geo.dilations;
    debug_assert!(padded.len() >= pad.rows * pad.cols * L && tout.len() >= oh * ow * L);
    let b = V::load(bias.as_ptr());
    // The taps' weights in registers when their number is known (AVX2 keeps some on the
    // stack: 25 taps are 50 registers there).
    let mut wk = [b; 25];
    if K > 0 {
        for (t, v) in wk.iter_mut().enumerate().take(K) {
            *v = V::load(wt.as_ptr().add(t * L));
        }
    }
    let at = Taps {
        kh,
        kw,
        sw,
        dw,
        pitch: dh * pad.cols * L,
        weights: &wk[..K],
        wt,
        bias: b,
    };
    for r in 0..oh {
        let top = padded.as_ptr().add(r * sh * pad.cols * L);
        let row = tout.as_mut_ptr().add(r * ow * L);
        let mut o = 0;
        while o + AHEAD <= ow {
            positions::<V, AHEAD>(&at, top, o, row);
            o += AHEAD;
        }
        while o < ow {
            positions::<V, 1>(&at, top, o, row);
            o += 1;
        }
    }
}

/// What [`positions`] needs of one block: kernel size, column stride and dilation, the
/// distance between kernel rows in the padded buffer, the taps' weights in registers
/// (`weights`, when the kernel size is known at compile time; else read from `wt`), and
/// the biases.
#[cfg(target_arch = "x86_64")]
struct Taps<'a, V> {
    kh: usize,
    kw: usize,
    sw: usize,
    dw: usize,
    pitch: usize,
    weights: &'a [V],
    wt: &'a [f32],
    bias: V,
}

/// Output positions `o .. o + N` of one output row: `top` is the padded buffer's row the
/// first kernel row reads, `row` the output row in `tout`.
///
/// # Safety
/// `V`'s instruction set; every position's window lies inside the padded buffer
/// (Padded::of covers the last output's reach) and `row` holds the row's `ow ≥ o + N`
/// positions of 16.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn positions<V: Lanes16, const N: usize>(
    at: &Taps<'_, V>,
    top: *const f32,
    o: usize,
    row: *mut f32,
) {
    let mut acc: [V; N] = [at.bias; N];
    for i in 0..at.kh {
        let krow = top.add(i * at.pitch);
        for j in 0..at.kw {
            let t = i * at.kw + j;
            let w = match at.weights.get(t) {
                Some(&w) => w,
                None => V::load(at.wt.as_ptr().add(t * L)),
            };
            for (u, a) in acc.iter_mut().enumerate() {
                // SAFETY: inside the window of position o + u (the caller's contract).
                let v = V::load(krow.add(((o + u) * at.sw + j * at.dw) * L));
                *a = V::fmadd(w, v, *a);
            }
        }
    }
    for (u, a) in acc.iter().enumerate() {
        a.store(row.add((o + u) * L));
    }
}

/// Transposes `tout` (`[p_out rounded up to 16, 16]`) into the `nb` output planes `dst`
/// (`[nb, p_out]`): whole 16×16 blocks straight into the planes, a partial one through
/// `tile`. Every element of `dst` is written.
///
/// # Safety
/// `V`'s instruction set; `dst.len() == nb·p_out`, `1 ≤ nb ≤ 16`, `tout` sized as above.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn scatter_output<V: Lanes16>(
    tout: &[f32],
    nb: usize,
    p_out: usize,
    dst: &mut [MaybeUninit<f32>],
    tile: &mut [f32; L * L],
) {
    let out = dst.as_mut_ptr().cast::<f32>();
    for r0 in (0..p_out).step_by(L) {
        let n = (p_out - r0).min(L);
        if nb == L && n == L {
            // SAFETY: rows r0..r0 + 16 of `tout`; columns r0..r0 + 16 < p_out of the 16
            // planes of `dst`.
            V::transpose16(tout.as_ptr().add(r0 * L), L, out.add(r0), p_out);
        } else {
            // SAFETY: `tout` holds 16 rows from r0 (rounded up); the tile 16 of 16.
            V::transpose16(tout.as_ptr().add(r0 * L), L, tile.as_mut_ptr(), L);
            for l in 0..nb {
                // SAFETY: positions r0..r0 + n of plane l < nb, inside `dst`.
                std::ptr::copy_nonoverlapping(tile.as_ptr().add(l * L), out.add(l * p_out + r0), n);
            }
        }
    }
}

#[cfg(test)]
#[path = "conv_depthwise_blocked_tests.rs"]
mod tests;
