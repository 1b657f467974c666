//! Depthwise 2-D Conv with one output channel per input channel, sixteen channels at a time
//! interleaved (AVX-512): the layout onnxruntime's NCHWc kernels keep between Convs, built
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

/// True when [`gather_input`] transposes whole planes through its staging buffer.
fn through_tin(geo: &FlatGeometry) -> bool {
    geo.input[0] * geo.input[1] <= WHOLE_PLANE
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
/// channel per input channel) over `planes` planes of all images: AVX-512F, as for the
/// direct Conv; at least one whole block of planes; at least a quarter of all (output,
/// tap) pairs reading the input, not padding (the channels-innermost path visits the live
/// ones only: MobileNet-V3's 5×5 Convs on 2×2 planes, 16 % live, took 77 against 56 µs
/// here, on 4×4 planes, 49 % live, 12 against 32); and not a Conv of at most 3×3 taps that
/// the row path reads in place, with no transposes (`[144, 56, 56]`, 3×3: 290 against 236
/// µs there; with 5×5 or 7×7 taps the blocked kernel is 7–25 % faster).
pub(crate) fn blocked_suits(geo: &FlatGeometry, planes: usize) -> bool {
    let kl = geo.kernel[0] * geo.kernel[1];
    planes >= L
        && super::conv_direct::direct_available()
        && 4 * live_pairs(geo) >= geo.output[0] * geo.output[1] * kl
        && !(kl <= 9 && rows_serve(geo))
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
    let [h, wd] = geo.input;
    let [oh, ow] = geo.output;
    let kl = geo.kernel[0] * geo.kernel[1];
    let (p_in, p_out) = (h * wd, oh * ow);
    assert!(
        x.len() == planes * p_in && w.len() == m * kl && m > 0 && kl > 0,
        "depthwise_blocked: sizes"
    );
    assert!(blocked_suits(geo, planes), "depthwise_blocked: not served");
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
            #[cfg(target_arch = "x86_64")]
            // SAFETY: blocked_suits (asserted above) checked AVX-512F; the buffers have the
            // sizes each kernel documents (allocated just above from the same geometry).
            unsafe {
                gather_input(xs, nb, geo, pad, &mut tin, &mut padded, &mut tile);
                match (geo.kernel, geo.strides) {
                    ([3, 3], [1, 1]) => rows::<9, 3, 1>(geo, pad, &padded, &wt, &bv, &mut tout),
                    ([3, 3], [2, 2]) => rows::<9, 3, 2>(geo, pad, &padded, &wt, &bv, &mut tout),
                    ([5, 5], [1, 1]) => rows::<25, 5, 1>(geo, pad, &padded, &wt, &bv, &mut tout),
                    ([5, 5], [2, 2]) => rows::<25, 5, 2>(geo, pad, &padded, &wt, &bv, &mut tout),
                    _ => rows::<0, 0, 0>(geo, pad, &padded, &wt, &bv, &mut tout),
                }
                scatter_output(&tout, nb, p_out, dst, &mut tile);
            }
            #[cfg(not(target_arch = "x86_64"))]
            unreachable!("blocked_suits is false off x86-64");
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
/// AVX-512F; `xs.len() == nb·h·w`, `1 ≤ nb ≤ 16`, `tin` and `padded` sized as above.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gather_input(
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
            transpose_run(xs, r * wd, wd, p_in, nb, &mut padded[at..], tile);
        }
        return;
    }
    // SAFETY: all positions of each plane, into `tin`'s rounded-up rows.
    transpose_run(xs, 0, p_in, p_in, nb, tin, tile);
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
/// AVX-512F; `from + n ≤ p_in`, `xs.len() == nb·p_in`, `1 ≤ nb ≤ 16`, and `dst` holds
/// `n` rounded up to 16 positions of 16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_run(
    xs: &[f32],
    from: usize,
    n: usize,
    p_in: usize,
    nb: usize,
    dst: &mut [f32],
    tile: &mut [f32; L * L],
) {
    use super::transpose2d::block16;
    assert!(
        dst.len() >= n.next_multiple_of(L) * L,
        "transpose_run: destination"
    );
    for c0 in (0..n).step_by(L) {
        let k = (n - c0).min(L);
        if nb == L && k == L {
            // SAFETY: positions from + c0 .. + 16 ≤ p_in of the 16 planes; 16 rows of
            // `dst` from c0 (checked above).
            block16(
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
            block16(tile.as_ptr(), L, dst.as_mut_ptr().add(c0 * L), L);
        }
    }
}

/// Every output position of one block: `tout[o, lane]` = `bias[lane]` plus, tap by tap in
/// ascending order, `w[tap, lane] · padded[row, col, lane]`. `K` taps (`KW` a row, stride
/// `S` both ways) are held in registers; `K = 0` reads the geometry's kernel and strides
/// and loads each tap's weights as it goes.
///
/// # Safety
/// AVX-512F; `padded` is `[pad.rows, pad.cols, 16]` for `geo`, `wt` `[kh·kw, 16]`, `tout`
/// at least `[oh·ow, 16]`; `K`, `KW` and `S` are 0 or `geo`'s kernel size, width and
/// strides.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn rows<const K: usize, const KW: usize, const S: usize>(
    geo: &FlatGeometry,
    pad: Padded,
    padded: &[f32],
    wt: &[f32],
    bias: &[f32; L],
    tout: &mut [f32],
) {
    use std::arch::x86_64::_mm512_loadu_ps;
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
    let b = _mm512_loadu_ps(bias.as_ptr());
    // The taps' weights in registers when their number is known.
    let mut wk = [b; 25];
    if K > 0 {
        for (t, v) in wk.iter_mut().enumerate().take(K) {
            *v = _mm512_loadu_ps(wt.as_ptr().add(t * L));
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
            positions::<AHEAD>(&at, top, o, row);
            o += AHEAD;
        }
        while o < ow {
            positions::<1>(&at, top, o, row);
            o += 1;
        }
    }
}

/// What [`positions`] needs of one block: kernel size, column stride and dilation, the
/// distance between kernel rows in the padded buffer, the taps' weights in registers
/// (`weights`, when the kernel size is known at compile time; else read from `wt`), and
/// the biases.
#[cfg(target_arch = "x86_64")]
struct Taps<'a> {
    kh: usize,
    kw: usize,
    sw: usize,
    dw: usize,
    pitch: usize,
    weights: &'a [std::arch::x86_64::__m512],
    wt: &'a [f32],
    bias: std::arch::x86_64::__m512,
}

/// Output positions `o .. o + N` of one output row: `top` is the padded buffer's row the
/// first kernel row reads, `row` the output row in `tout`.
///
/// # Safety
/// AVX-512F; every position's window lies inside the padded buffer (Padded::of covers the
/// last output's reach) and `row` holds the row's `ow ≥ o + N` positions of 16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn positions<const N: usize>(at: &Taps<'_>, top: *const f32, o: usize, row: *mut f32) {
    use std::arch::x86_64::{__m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_storeu_ps};
    let mut acc: [__m512; N] = [at.bias; N];
    for i in 0..at.kh {
        let krow = top.add(i * at.pitch);
        for j in 0..at.kw {
            let t = i * at.kw + j;
            let w = match at.weights.get(t) {
                Some(&w) => w,
                None => _mm512_loadu_ps(at.wt.as_ptr().add(t * L)),
            };
            for (u, a) in acc.iter_mut().enumerate() {
                // SAFETY: inside the window of position o + u (the caller's contract).
                let v = _mm512_loadu_ps(krow.add(((o + u) * at.sw + j * at.dw) * L));
                *a = _mm512_fmadd_ps(w, v, *a);
            }
        }
    }
    for (u, a) in acc.iter().enumerate() {
        _mm512_storeu_ps(row.add((o + u) * L), *a);
    }
}

/// Transposes `tout` (`[p_out rounded up to 16, 16]`) into the `nb` output planes `dst`
/// (`[nb, p_out]`): whole 16×16 blocks straight into the planes, a partial one through
/// `tile`. Every element of `dst` is written.
///
/// # Safety
/// AVX-512F; `dst.len() == nb·p_out`, `1 ≤ nb ≤ 16`, `tout` sized as above.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn scatter_output(
    tout: &[f32],
    nb: usize,
    p_out: usize,
    dst: &mut [MaybeUninit<f32>],
    tile: &mut [f32; L * L],
) {
    use super::transpose2d::block16;
    let out = dst.as_mut_ptr().cast::<f32>();
    for r0 in (0..p_out).step_by(L) {
        let n = (p_out - r0).min(L);
        if nb == L && n == L {
            // SAFETY: rows r0..r0 + 16 of `tout`; columns r0..r0 + 16 < p_out of the 16
            // planes of `dst`.
            block16(tout.as_ptr().add(r0 * L), L, out.add(r0), p_out);
        } else {
            // SAFETY: `tout` holds 16 rows from r0 (rounded up); the tile 16 of 16.
            block16(tout.as_ptr().add(r0 * L), L, tile.as_mut_ptr(), L);
            for l in 0..nb {
                // SAFETY: positions r0..r0 + n of plane l < nb, inside `dst`.
                std::ptr::copy_nonoverlapping(tile.as_ptr().add(l * L), out.add(l * p_out + r0), n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{blocked_suits, depthwise_blocked};
    use crate::conv_depthwise::tests::values;
    use crate::conv_depthwise_flat::tests::reference;
    use crate::conv_depthwise_flat::FlatGeometry;
    use crate::conv_epilogue::Epilogue;

    #[test]
    fn blocks_of_sixteen_planes_match_the_definition_bitwise() {
        if !crate::conv_direct::direct_available() {
            eprintln!("skipped: the blocked depthwise kernel needs AVX-512F");
            return;
        }
        // (input, kernel, strides, dilations, begin pads, end pads)
        type Case = (
            [usize; 2],
            [usize; 2],
            [usize; 2],
            [usize; 2],
            [usize; 2],
            [usize; 2],
        );
        let cases: [Case; 9] = [
            // Small planes through the whole-plane staging buffer: 3×3 (registers), a
            // partial last block of positions, stride 2 on both axes.
            ([14, 14], [3, 3], [1, 1], [1, 1], [1, 1], [1, 1]),
            ([7, 7], [3, 3], [1, 1], [1, 1], [1, 1], [1, 1]),
            ([28, 28], [3, 3], [2, 2], [1, 1], [1, 1], [1, 1]),
            ([9, 11], [5, 5], [2, 2], [1, 1], [2, 2], [2, 2]),
            // Larger planes row by row: whole 16-column blocks and a partial one.
            ([40, 44], [3, 3], [2, 2], [1, 1], [0, 1], [1, 1]),
            ([33, 35], [5, 5], [1, 1], [1, 1], [2, 2], [2, 2]),
            // Any other kernel (taps loaded as they go), dilation, uneven strides and pads.
            ([12, 12], [7, 7], [1, 1], [2, 1], [3, 0], [6, 3]),
            ([10, 13], [3, 2], [2, 3], [1, 2], [0, 1], [2, 0]),
            ([1, 50], [1, 5], [1, 2], [1, 1], [0, 2], [0, 2]),
        ];
        for (input, kernel, strides, dilations, pb, pe) in cases {
            let out_ext = |a: usize| {
                (input[a] + pb[a] + pe[a] - (kernel[a] - 1) * dilations[a] - 1) / strides[a] + 1
            };
            let output = [out_ext(0), out_ext(1)];
            let geo = FlatGeometry {
                input,
                output,
                kernel,
                strides,
                dilations,
                pads: pb,
            };
            // Two images of 21 channels: blocks that cross the images' boundary and a last
            // block of 10 planes.
            let (c, n) = (21, 2);
            let planes = n * c;
            assert!(blocked_suits(&geo, planes), "{geo:?} is served");
            let (p_in, p_out) = (input[0] * input[1], output[0] * output[1]);
            let kl = kernel[0] * kernel[1];
            let x = values(planes * p_in, 1);
            let w = values(c * kl, 2);
            let b = values(c, 3);
            // A residual epilogue: each plane must receive its own part.
            let res = values(planes * p_out, 4);
            let epi = Epilogue {
                residual: Some(&res),
                plane: p_out,
                channels: c,
                ..Epilogue::default()
            };
            let out = depthwise_blocked(&geo, &x, &w, Some(&b), planes, c, epi);
            assert_eq!(out.len(), planes * p_out);
            for plane in 0..planes {
                let img = plane / c;
                let mut want = reference(&geo, &x[img * c * p_in..], &w, &b, plane % c, 1);
                want.iter_mut()
                    .zip(&res[plane * p_out..])
                    .for_each(|(v, r)| *v += r);
                let got = &out[plane * p_out..][..p_out];
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(got), bits(&want), "{geo:?} plane {plane}");
            }
        }
    }

    #[test]
    fn the_row_path_and_mostly_padded_planes_are_left_to_the_other_kernels() {
        let geo =
            |input: [usize; 2], output: [usize; 2], k: usize, s: usize, p: usize| FlatGeometry {
                input,
                output,
                kernel: [k, k],
                strides: [s, s],
                dilations: [1, 1],
                pads: [p, p],
            };
        let served = crate::conv_direct::direct_available();
        // 3×3 on 56-wide rows: the row path.
        assert!(!blocked_suits(&geo([56, 56], [56, 56], 3, 1, 1), 144));
        // 5×5 on 2×2 planes: 4 of 25 taps live.
        assert!(!blocked_suits(&geo([2, 2], [2, 2], 5, 1, 2), 4608));
        // Fewer planes than a block.
        assert!(!blocked_suits(&geo([14, 14], [14, 14], 3, 1, 1), 15));
        // Served where the CPU has AVX-512: 4×4 planes under 5×5 taps, stride 2.
        assert_eq!(blocked_suits(&geo([4, 4], [4, 4], 5, 1, 2), 576), served);
        assert_eq!(
            blocked_suits(&geo([56, 56], [28, 28], 3, 2, 1), 144),
            served
        );
    }
}
