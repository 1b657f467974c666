//! Depthwise 1-D and 2-D Conv (one input channel per group) with the accumulators in
//! registers: each input plane is copied once into zero-padded *phase planes*, one per
//! (row stride phase, column stride phase), so that every kernel tap reads one contiguous
//! run of a phase plane. With the output laid out at the phase planes' row pitch, output
//! position `o` (flat, pitch `wq`) reads `phase[o + tap offset]` for every tap, so a block
//! of outputs is the bias plus, tap by tap, `w[tap] · phase[block + offset]`:
//! a few vector registers that stay in place across all taps, one store per output. The
//! plane loop in `conv.rs` instead reads and writes the whole output plane once per tap
//! and walks a run per row and tap (4 GMAC/s on 16×16 planes, under 2 with stride 2).
//!
//! Columns of the pitch beyond the output's width are computed and dropped (a 3×3 Conv
//! with padding 1 on 16×16 planes computes 18 columns per row for 16).
//!
//! Each output element receives its bias and then the taps in ascending order, one fused
//! multiply-add `acc = w·x + acc` each ([`fma`]), as in the plane loop and the
//! channels-innermost path, so all three give the same bits (a tap that falls in the
//! padding adds `w·0`, which leaves any non-zero sum unchanged).
use super::conv_depthwise_rows::{plane_rows, RowMasks};
use super::conv_epilogue::Epilogue;
use super::conv_taps::{deinterleave, PARALLEL_MIN_TAPS};
use super::simd::{fma, vectorized};
use super::window::Window;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Outputs computed per block: four AVX-512 registers, whose four chains of dependent adds
/// keep the adder busy (two chains wait on the add latency).
const BLOCK: usize = 64;

/// Outputs per block after the last whole [`BLOCK`] (the flat outputs are a multiple).
const TAIL: usize = 16;

/// The geometry of a depthwise Conv over one or two spatial axes (a 1-D Conv is a 2-D one
/// of height 1).
#[derive(Clone, Debug)]
pub(crate) struct FlatGeometry {
    /// Input height and width.
    pub input: [usize; 2],
    /// Output height and width.
    pub output: [usize; 2],
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Strides (rows, columns).
    pub strides: [usize; 2],
    /// Dilations (rows, columns).
    pub dilations: [usize; 2],
    /// Begin pads (top, left).
    pub pads: [usize; 2],
}

/// Where the phase planes and each tap's run lie in the scratch buffer.
pub(crate) struct Layout {
    /// Row pitch of the phase planes and of the flat output.
    pub wq: usize,
    /// Rows of each phase plane.
    pub rq: usize,
    /// Flat outputs computed (`output height · wq`, rounded up to [`TAIL`]).
    pub flat: usize,
    /// Elements of one phase plane in the scratch buffer (with the over-read margin).
    pub size: usize,
    /// Per tap: offset of its first element in the scratch buffer.
    pub tap_offsets: Vec<usize>,
}

impl FlatGeometry {
    /// The geometry of a Conv with `spatial` axes, or None for three or more.
    pub fn new(
        input: &[usize],
        output: &[usize],
        kernel: &[usize],
        strides: &[usize],
        dilations: &[usize],
        pads: &[usize],
    ) -> Option<Self> {
        let two = |v: &[usize], one: usize| match v.len() {
            1 => Some([one, v[0]]),
            2 => Some([v[0], v[1]]),
            _ => None,
        };
        Some(FlatGeometry {
            input: two(input, 1)?,
            output: two(output, 1)?,
            kernel: two(kernel, 1)?,
            strides: two(strides, 1)?,
            dilations: two(dilations, 1)?,
            pads: two(&pads[..input.len().min(pads.len())], 0)?,
        })
    }

    /// The geometry of a window over one or two spatial axes, or None for three or more.
    pub fn of_window(win: &Window) -> Option<Self> {
        FlatGeometry::new(
            &win.other,
            &win.drive,
            &win.kernel,
            &win.strides,
            &win.dilations,
            &win.pads,
        )
    }

    /// A 1×1 Conv of unit stride without padding as one row of all its positions (the
    /// plane's rows are contiguous and every output reads the input at its own position):
    /// vector loops then run over the whole plane, not row by row with a partial vector at
    /// each row's end. Any other geometry is returned as it is.
    pub fn pointwise_as_one_row(&self) -> Self {
        let pointwise = self.kernel == [1, 1]
            && self.strides == [1, 1]
            && self.pads == [0, 0]
            && self.output == self.input;
        match pointwise {
            true => FlatGeometry {
                input: [1, self.input[0] * self.input[1]],
                output: [1, self.output[0] * self.output[1]],
                dilations: [1, 1],
                ..self.clone()
            },
            false => self.clone(),
        }
    }

    /// Where the phase planes and each tap's run lie in a scratch buffer.
    pub fn layout(&self) -> Layout {
        let [kh, kw] = self.kernel;
        let [sh, sw] = self.strides;
        let [dh, dw] = self.dilations;
        let [oh, ow] = self.output;
        let max_rh = (kh.saturating_sub(1) * dh) / sh;
        let max_rw = (kw.saturating_sub(1) * dw) / sw;
        let wq = ow + max_rw;
        let rq = oh + max_rh;
        let flat = (oh * wq).div_ceil(TAIL) * TAIL;
        // A block may read up to `flat − 1 + max_rh·wq + max_rw`.
        let size = (flat + max_rh * wq + max_rw).max(rq * wq);
        let mut tap_offsets = Vec::with_capacity(kh * kw);
        for i in 0..kh {
            for j in 0..kw {
                let (ph, rh) = ((i * dh) % sh, (i * dh) / sh);
                let (pw, rw) = ((j * dw) % sw, (j * dw) / sw);
                tap_offsets.push((ph * sw + pw) * size + rh * wq + rw);
            }
        }
        Layout {
            wq,
            rq,
            flat,
            size,
            tap_offsets,
        }
    }

    /// Copies one input plane into the phase planes of `scratch` (`phases · lay.size`
    /// elements). Only the places that read the input are written: the rest (the padding,
    /// and the over-read margin) keeps the value the caller allocated it with (zero for a
    /// Conv and for window sums), as every plane writes the same places.
    #[inline(always)]
    pub fn fill_phases(&self, lay: &Layout, x: &[f32], scratch: &mut [f32]) {
        let [h, w] = self.input;
        let [sh, sw] = self.strides;
        let [pt, pl] = self.pads;
        for ph in 0..sh {
            for pw in 0..sw {
                let plane = &mut scratch[(ph * sw + pw) * lay.size..][..lay.size];
                // Column t reads input column t·sw + pw − pl: valid for t in lo..hi.
                let lo = pl.saturating_sub(pw).div_ceil(sw);
                let hi = (w + pl).saturating_sub(pw).div_ceil(sw).min(lay.wq);
                if lo >= hi {
                    continue;
                }
                let c0 = lo * sw + pw - pl;
                for r in 0..lay.rq {
                    // Padded row r·sh + ph is input row r·sh + ph − pt.
                    let Some(ir) = (r * sh + ph).checked_sub(pt).filter(|&v| v < h) else {
                        continue;
                    };
                    let src = &x[ir * w + c0..(ir + 1) * w];
                    let dst = &mut plane[r * lay.wq + lo..r * lay.wq + hi];
                    if sw == 1 {
                        copy_short(&src[..dst.len()], dst);
                    } else if sw == 2 {
                        deinterleave(src, dst);
                    } else {
                        for (t, d) in dst.iter_mut().enumerate() {
                            *d = src[t * sw];
                        }
                    }
                }
            }
        }
    }
}

/// Depthwise Conv of `planes` output planes (`out`: `[planes, P_out]`); output plane `oc`
/// reads input plane `oc / mg` (`x`: `[planes / mg, P_in]`) and weight row `oc mod M`
/// (`w`: `[M, K]`), starts from `bias[oc mod M]` (or zero) and then gets `epi`.
pub(crate) fn depthwise_flat(
    geo: &FlatGeometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    planes: usize,
    mg: usize,
    epi: Epilogue<'_>,
) -> Vec<f32> {
    let [oh, ow] = geo.output;
    let p_out = oh * ow;
    let p_in = geo.input[0] * geo.input[1];
    let kl = geo.kernel[0] * geo.kernel[1];
    if p_out == 0 || kl == 0 || mg == 0 {
        // No taps: every output is its bias (no outputs when the plane is empty).
        let m = w.len().checked_div(kl).unwrap_or(0);
        return (0..planes * p_out)
            .map(|i| match (bias, m) {
                (Some(b), m) if m > 0 => b[(i / p_out) % m],
                _ => 0.0,
            })
            .collect();
    }
    let lay = geo.layout();
    let m = w.len() / kl;
    let phases = geo.strides[0] * geo.strides[1];
    // Planes read in place row by row where the CPU and the geometry allow.
    let rows = RowMasks::new(geo);
    let run = |first: usize, chunk: &mut [MaybeUninit<f32>]| {
        let (scratch_len, acc_len) = match rows {
            Some(_) => (0, 0),
            // 16 more than the blocks write: `copy_rows` may read a chunk past the last block.
            None => (phases * lay.size, lay.flat + 16),
        };
        let mut scratch = vec![0f32; scratch_len];
        let mut acc = vec![0f32; acc_len];
        vectorized(
            #[inline(always)]
            || {
                let mut filled = usize::MAX;
                for (j, dst) in chunk.chunks_exact_mut(p_out).enumerate() {
                    let oc = first + j;
                    let src = oc / mg;
                    let row = oc % m;
                    let b0 = bias.map_or(0.0, |b| b[row]);
                    let wrow = &w[row * kl..][..kl];
                    if let Some(masks) = &rows {
                        let xs = &x[src * p_in..][..p_in];
                        let dst = plane_rows(geo, masks, xs, wrow, b0, dst);
                        if !epi.is_empty() {
                            epi.apply(dst, oc * p_out);
                        }
                        continue;
                    }
                    if src != filled {
                        geo.fill_phases(&lay, &x[src * p_in..][..p_in], &mut scratch);
                        filled = src;
                    }
                    match kl {
                        9 => plane_of::<9>(&lay, &scratch, wrow, b0, &mut acc),
                        25 => plane_of::<25>(&lay, &scratch, wrow, b0, &mut acc),
                        _ => plane(&lay, &scratch, wrow, b0, &mut acc),
                    }
                    let dst = copy_rows(&acc, lay.wq, dst, ow);
                    // While the plane is in L1 (after the whole chunk it no longer is).
                    if !epi.is_empty() {
                        epi.apply(dst, oc * p_out);
                    }
                }
            },
        );
    };
    // SAFETY: `run` writes every element of its chunk (`copy_rows` a whole plane per plane
    // of the chunk).
    unsafe { fill_planes(planes, p_out, kl, 1, run) }
}

/// A new `[planes, p_out]` buffer, written by `run(first, chunk)` in chunks of whole planes
/// (`first`: the chunk's first plane; chunks of a multiple of `unit` planes but the last),
/// spread over the pool's threads when the Conv makes at least [`PARALLEL_MIN_TAPS`]
/// multiply-adds (`kl` per output). No element is initialised beforehand.
///
/// # Safety
/// `run` must write every element of the chunk it is given.
pub(crate) unsafe fn fill_planes(
    planes: usize,
    p_out: usize,
    kl: usize,
    unit: usize,
    run: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    let len = planes * p_out;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let spare = &mut out.spare_capacity_mut()[..len];
    let threads = crate::pool_threads();
    if p_out == 0 {
        // Nothing to write.
    } else if threads > 1 && len * kl >= crate::split_min(PARALLEL_MIN_TAPS) {
        let per = planes.div_ceil(threads * 4).next_multiple_of(unit.max(1));
        spare
            .par_chunks_mut(per * p_out)
            .enumerate()
            .for_each(|(ci, chunk)| run(ci * per, chunk));
    } else {
        run(0, spare);
    }
    // SAFETY: the chunks cover all `len` reserved elements, and `run` wrote each chunk
    // (the caller's contract).
    unsafe { out.set_len(len) };
    out
}

/// `dst.copy_from_slice(src)` for rows of a few dozen elements: whole chunks of 16 are
/// register moves, where `copy_from_slice` calls `memmove` (most of the copy's time at
/// these lengths).
#[inline(always)]
fn copy_short(src: &[f32], dst: &mut [f32]) {
    const CHUNK: usize = 16;
    let mut d = dst.chunks_exact_mut(CHUNK);
    let mut s = src.chunks_exact(CHUNK);
    for (dc, sc) in (&mut d).zip(&mut s) {
        let sc: &[f32; CHUNK] = sc.try_into().expect("a CHUNK-long slice");
        dc.copy_from_slice(sc);
    }
    for (dv, sv) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *dv = *sv;
    }
}

/// Copies the `dst.len() / ow` rows of `acc` (pitch `wq`) into `dst` (pitch `ow`, a whole
/// plane, uninitialised or not), 16 elements at a time: a chunk that runs past its row
/// writes into the next row, which is copied after it; only chunks that would run past the
/// plane are copied element-wise. Returns the plane, now initialised.
#[inline(always)]
pub(crate) fn copy_rows<'a>(
    acc: &[f32],
    wq: usize,
    dst: &'a mut [MaybeUninit<f32>],
    ow: usize,
) -> &'a mut [f32] {
    const CHUNK: usize = 16;
    let p_out = dst.len();
    let rows = p_out.checked_div(ow).unwrap_or(0);
    assert_eq!(rows * ow, p_out, "copy_rows: a plane of whole rows");
    for r in 0..rows {
        for cb in (0..ow).step_by(CHUNK) {
            let (at, from) = (r * ow + cb, r * wq + cb);
            // A copy of a known length is a vector move (element-wise writes compiled to
            // 16 scalar moves: a quarter of a 56×56 depthwise Conv's time).
            if at + CHUNK <= p_out {
                let s: &[f32; CHUNK] = acc[from..from + CHUNK]
                    .try_into()
                    .expect("a CHUNK-long slice");
                let d: &mut [MaybeUninit<f32>; CHUNK] = (&mut dst[at..at + CHUNK])
                    .try_into()
                    .expect("a CHUNK-long slice");
                d.write_copy_of_slice(s);
            } else {
                let n = (ow - cb).min(CHUNK);
                dst[at..at + n].write_copy_of_slice(&acc[from..from + n]);
            }
        }
    }
    // SAFETY: rows · ow == p_out, and the chunks of every row cover columns 0..ow (the last
    // chunk of a row either ends inside the plane, or is cut at the row's end), so every
    // element of `dst` was written above; MaybeUninit<f32> has f32's layout.
    unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<f32>(), p_out) }
}

/// One output plane at pitch `wq` into `acc` (`lay.flat` elements): blocks of [`BLOCK`]
/// outputs, then the rest in blocks of [`TAIL`].
#[inline(always)]
fn plane(lay: &Layout, scratch: &[f32], wrow: &[f32], bias: f32, acc: &mut [f32]) {
    let main = lay.flat / BLOCK * BLOCK;
    for (bi, blk) in acc[..main].chunks_exact_mut(BLOCK).enumerate() {
        // Four separate arrays, not one of 64: LLVM keeps each in a register across the
        // taps (one array of 64 is kept on the stack, a store and a load per tap).
        let base = bi * BLOCK;
        let (mut a0, mut a1, mut a2, mut a3) =
            ([bias; TAIL], [bias; TAIL], [bias; TAIL], [bias; TAIL]);
        for (&off, &wk) in lay.tap_offsets.iter().zip(wrow) {
            let s = &scratch[off + base..][..BLOCK];
            axpy(&mut a0, wk, &s[..TAIL]);
            axpy(&mut a1, wk, &s[TAIL..2 * TAIL]);
            axpy(&mut a2, wk, &s[2 * TAIL..3 * TAIL]);
            axpy(&mut a3, wk, &s[3 * TAIL..]);
        }
        for (d, a) in blk.chunks_exact_mut(TAIL).zip([a0, a1, a2, a3]) {
            d.copy_from_slice(&a);
        }
    }
    for (bi, blk) in acc[main..lay.flat].chunks_exact_mut(TAIL).enumerate() {
        let base = main + bi * TAIL;
        let mut a = [bias; TAIL];
        for (&off, &wk) in lay.tap_offsets.iter().zip(wrow) {
            axpy(&mut a, wk, &scratch[off + base..][..TAIL]);
        }
        blk.copy_from_slice(&a);
    }
}

/// [`plane`] for `K` taps (3×3 and 5×5 kernels): the taps' weights and offsets are
/// loop-invariant registers across the plane's blocks, where the generic walk loads and
/// broadcasts each tap's weight per block (about twice the instructions per FMA).
#[inline(always)]
fn plane_of<const K: usize>(
    lay: &Layout,
    scratch: &[f32],
    wrow: &[f32],
    bias: f32,
    acc: &mut [f32],
) {
    let (Ok(wk), Ok(offs)) = (
        <[f32; K]>::try_from(wrow),
        <[usize; K]>::try_from(&lay.tap_offsets[..]),
    ) else {
        return plane(lay, scratch, wrow, bias, acc);
    };
    let main = lay.flat / BLOCK * BLOCK;
    for (bi, blk) in acc[..main].chunks_exact_mut(BLOCK).enumerate() {
        let base = bi * BLOCK;
        let (mut a0, mut a1, mut a2, mut a3) =
            ([bias; TAIL], [bias; TAIL], [bias; TAIL], [bias; TAIL]);
        for t in 0..K {
            let s = &scratch[offs[t] + base..][..BLOCK];
            axpy(&mut a0, wk[t], &s[..TAIL]);
            axpy(&mut a1, wk[t], &s[TAIL..2 * TAIL]);
            axpy(&mut a2, wk[t], &s[2 * TAIL..3 * TAIL]);
            axpy(&mut a3, wk[t], &s[3 * TAIL..]);
        }
        for (d, a) in blk.chunks_exact_mut(TAIL).zip([a0, a1, a2, a3]) {
            d.copy_from_slice(&a);
        }
    }
    for (bi, blk) in acc[main..lay.flat].chunks_exact_mut(TAIL).enumerate() {
        let base = main + bi * TAIL;
        let mut a = [bias; TAIL];
        for t in 0..K {
            axpy(&mut a, wk[t], &scratch[offs[t] + base..][..TAIL]);
        }
        blk.copy_from_slice(&a);
    }
}

/// `a += wk · s`, lane by lane.
#[inline(always)]
fn axpy(a: &mut [f32; TAIL], wk: f32, s: &[f32]) {
    let s: &[f32; TAIL] = s.try_into().expect("a TAIL-long slice");
    for l in 0..TAIL {
        a[l] = fma(wk, s[l], a[l]);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::{depthwise_flat, FlatGeometry};
    use crate::conv_depthwise::tests::values;
    use crate::conv_epilogue::Epilogue;

    /// Direct evaluation of the definition, taps in ascending order from the bias.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn reference(
        geo: &FlatGeometry,
        x: &[f32],
        w: &[f32],
        b: &[f32],
        oc: usize,
        mg: usize,
    ) -> Vec<f32> {
        let ([h, wd], [oh, ow], [kh, kw]) = (geo.input, geo.output, geo.kernel);
        let xs = &x[(oc / mg) * h * wd..][..h * wd];
        let ws = &w[oc * kh * kw..][..kh * kw];
        let mut out = vec![b[oc]; oh * ow];
        for r in 0..oh {
            for c in 0..ow {
                let o = &mut out[r * ow + c];
                for i in 0..kh {
                    for j in 0..kw {
                        let ir =
                            (r * geo.strides[0] + i * geo.dilations[0]) as i64 - geo.pads[0] as i64;
                        let ic =
                            (c * geo.strides[1] + j * geo.dilations[1]) as i64 - geo.pads[1] as i64;
                        if ir >= 0 && ic >= 0 && (ir as usize) < h && (ic as usize) < wd {
                            *o = ws[i * kw + j].mul_add(xs[ir as usize * wd + ic as usize], *o);
                        }
                    }
                }
            }
        }
        out
    }

    /// The geometry of a Conv over `input` with `kernel`, `strides`, `dilations`, begin pads
    /// `pb` and end pads `pe`.
    pub(crate) fn geometry(
        input: [usize; 2],
        kernel: [usize; 2],
        strides: [usize; 2],
        dilations: [usize; 2],
        pb: [usize; 2],
        pe: [usize; 2],
    ) -> FlatGeometry {
        let out_ext = |a: usize| {
            (input[a] + pb[a] + pe[a] - (kernel[a] - 1) * dilations[a] - 1) / strides[a] + 1
        };
        FlatGeometry {
            input,
            output: [out_ext(0), out_ext(1)],
            kernel,
            strides,
            dilations,
            pads: pb,
        }
    }

    #[test]
    fn every_stride_dilation_and_padding_matches_the_definition_bitwise() {
        // (input, kernel, strides, dilations, begin pads, end pads, multiplier)
        type Case = (
            [usize; 2],
            [usize; 2],
            [usize; 2],
            [usize; 2],
            [usize; 2],
            [usize; 2],
            usize,
        );
        let cases: [Case; 17] = [
            // Rows of at least 24 outputs at column stride 1: read in place row by row
            // (`conv_depthwise_rows.rs`) where the CPU has AVX-512: groups of four blocks
            // and a tail, masked edges, row strides and dilations, column dilation.
            ([30, 40], [3, 3], [1, 1], [1, 1], [1, 1], [1, 1], 1),
            ([12, 56], [5, 5], [2, 1], [1, 2], [2, 2], [2, 2], 2),
            ([7, 70], [3, 3], [1, 1], [1, 1], [0, 0], [0, 0], 1),
            ([1, 100], [1, 7], [1, 1], [1, 1], [0, 3], [0, 3], 1),
            ([6, 20], [3, 3], [1, 1], [1, 1], [1, 3], [1, 3], 1),
            // Rows of two and three blocks, taken three and two rows at a time, with rows
            // left over, padding rows inside a stack, a row stride and a row dilation.
            ([28, 28], [3, 3], [1, 1], [1, 1], [1, 1], [1, 1], 1),
            ([9, 40], [3, 3], [1, 1], [1, 1], [1, 1], [1, 1], 1),
            ([15, 30], [3, 3], [2, 1], [2, 1], [2, 1], [2, 1], 1),
            // Stride-2 rows long enough for whole 16-wide de-interleaved chunks.
            ([5, 64], [3, 3], [2, 2], [1, 1], [1, 1], [1, 1], 1),
            ([4, 71], [3, 3], [2, 2], [1, 1], [0, 0], [0, 2], 1),
            ([16, 16], [3, 3], [1, 1], [1, 1], [1, 1], [1, 1], 1),
            ([17, 13], [3, 3], [2, 2], [1, 1], [1, 1], [1, 1], 1),
            ([9, 11], [5, 5], [1, 2], [1, 1], [2, 2], [2, 2], 1),
            ([12, 12], [7, 7], [1, 1], [2, 1], [3, 0], [6, 3], 2),
            ([1, 40], [1, 5], [1, 3], [1, 2], [0, 4], [0, 1], 1),
            ([4, 4], [5, 5], [1, 1], [1, 1], [2, 2], [2, 2], 1),
            ([10, 10], [3, 3], [3, 3], [1, 1], [0, 0], [0, 0], 3),
        ];
        for (input, kernel, strides, dilations, pb, pe, mg) in cases {
            let geo = geometry(input, kernel, strides, dilations, pb, pe);
            let output = geo.output;
            let (c, n) = (3, 2);
            let p_in = input[0] * input[1];
            let p_out = output[0] * output[1];
            let kl = kernel[0] * kernel[1];
            let x = values(n * c * p_in, 1);
            let w = values(c * mg * kl, 2);
            let b = values(c * mg, 3);
            let out = depthwise_flat(&geo, &x, &w, Some(&b), n * c * mg, mg, Epilogue::default());
            for plane in 0..n * c * mg {
                // Plane `plane` is channel `plane mod c·mg` of image `plane / c·mg`.
                let img = plane / (c * mg);
                let want = reference(&geo, &x[img * c * p_in..], &w, &b, plane % (c * mg), mg);
                let got = &out[plane * p_out..][..p_out];
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(got), bits(&want), "{geo:?} plane {plane}");
            }
        }
    }
}
