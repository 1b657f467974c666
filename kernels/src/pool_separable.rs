//! 1-D and 2-D f32 max pools as two one-axis passes: the maximum over a window is the
//! maximum, over the window's columns, of each column's maximum over the window's rows.
//! Per output row, the rows it covers are reduced into one padded row (contiguous vector
//! maxima), whose column windows then give the output row. A 3×3 stride-2 pool reads each
//! input element about 1.5 times and takes 3 + 3/2 maxima per output, where the taps one by
//! one over stride-phase copies (the previous path) wrote four phase planes and took 9
//! maxima per output: ResNet's 3×3/2 MaxPool on `[2, 64, 112, 112]` and SqueezeNet's on
//! `[2, 64, 31, 31]` ran at 2.1× and 2.6× onnxruntime's time there.
//!
//! The running maximum is a select (`v > m`), so a NaN input never replaces it and a window
//! of padding alone is −∞, as on every other max-pool path; the maximum of a set does not
//! depend on the order it is taken in, so the result is the taps-one-by-one result (up to
//! the sign of a zero tied with a zero).
use super::window::Window;

/// The geometry of one spatial axis.
#[derive(Clone, Copy)]
struct Axis {
    input: usize,
    output: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
}

impl Axis {
    fn of(win: &Window, a: usize) -> Axis {
        Axis {
            input: win.other[a],
            output: win.drive[a],
            kernel: win.kernel[a],
            stride: win.strides[a],
            dilation: win.dilations[a],
            pad: win.pads[a],
        }
    }

    /// An axis of extent one that the pool does not slide along (the rows of a 1-D pool).
    fn unit() -> Axis {
        Axis {
            input: 1,
            output: 1,
            kernel: 1,
            stride: 1,
            dilation: 1,
            pad: 0,
        }
    }

    /// The input indices output `o`'s window covers, in tap order.
    fn covered(&self, o: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.kernel).filter_map(move |t| {
            let at = (o * self.stride + t * self.dilation).checked_sub(self.pad)?;
            (at < self.input).then_some(at)
        })
    }

    /// Length of the padded row the column windows read: up to the last tap of the last
    /// output.
    fn padded_len(&self) -> usize {
        (self.output - 1) * self.stride + (self.kernel - 1) * self.dilation + 1
    }
}

/// The running maximum: `m` is never NaN (it starts at −∞), so `f32::max` returns `v`
/// where `v > m` and `m` otherwise — the select of the other max-pool paths, a NaN input
/// never taken.
#[inline(always)]
fn keep_max(m: &mut f32, v: f32) {
    *m = m.max(v);
}

/// Max pool of `planes` planes of `x` (`[planes, D1..]`, one or two spatial axes); `None`
/// for other ranks or an empty window.
pub(crate) fn max_pool_separable(win: &Window, x: &[f32], planes: usize) -> Option<Vec<f32>> {
    #[cfg(target_arch = "x86_64")]
    let avx2 = std::arch::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    let avx2 = false;
    max_pool_passes(win, x, planes, avx2)
}

/// [`max_pool_separable`] with the AVX2 passes where `avx2` (the CPU must have it), else
/// the portable ones.
fn max_pool_passes(win: &Window, x: &[f32], planes: usize, avx2: bool) -> Option<Vec<f32>> {
    let (rows, cols) = match win.drive.len() {
        1 => (Axis::unit(), Axis::of(win, 0)),
        2 => (Axis::of(win, 0), Axis::of(win, 1)),
        _ => return None,
    };
    if rows.kernel == 0 || cols.kernel == 0 {
        return None;
    }
    let (p_in, p_out) = (rows.input * cols.input, rows.output * cols.output);
    let mut out = vec![f32::NEG_INFINITY; planes * p_out];
    if p_out == 0 {
        return Some(out);
    }
    // The padded row: `cols.pad` −∞ before the row maxima, −∞ after them up to the last
    // tap (the input may also run past the last window, in floor mode); the AVX2 passes
    // write and read whole vectors past both, so it has room for them (−∞ there too).
    let len = cols.padded_len();
    let live = cols.input.min(len.saturating_sub(cols.pad));
    let room = cols.pad + live.next_multiple_of(8) + 8;
    let reach = cols.output.next_multiple_of(8) * cols.stride + (cols.kernel - 1) * cols.dilation;
    let mut padded = vec![f32::NEG_INFINITY; len.max(room).max(reach + 16)];
    // Per output row, the offsets of the input rows it covers (computed once).
    let covered: Vec<Vec<usize>> = (0..rows.output)
        .map(|o| rows.covered(o).map(|r| r * cols.input).collect())
        .collect();
    for (plane, dst) in x.chunks_exact(p_in).zip(out.chunks_exact_mut(p_out)) {
        let padded = &mut padded[..];
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: the CPU has AVX2 (the caller's contract); `padded` has the room the passes
            // read and write (sized just above); the offsets are rows of the plane.
            unsafe {
                match cols.stride {
                    1 => plane_avx2::<1>(&covered, &cols, live, plane, padded, dst),
                    2 => plane_avx2::<2>(&covered, &cols, live, plane, padded, dst),
                    _ => plane_avx2::<0>(&covered, &cols, live, plane, padded, dst),
                }
            }
            continue;
        }
        plane_portable(&covered, &cols, live, plane, padded, dst);
    }
    Some(out)
}

/// One plane without SIMD: the passes of [`plane_avx2`], one element at a time.
fn plane_portable(
    covered: &[Vec<usize>],
    cols: &Axis,
    live: usize,
    plane: &[f32],
    padded: &mut [f32],
    dst: &mut [f32],
) {
    for (rows_at, dst_row) in covered.iter().zip(dst.chunks_exact_mut(cols.output)) {
        let maxima = &mut padded[cols.pad..cols.pad + live];
        maxima.fill(f32::NEG_INFINITY);
        for &r in rows_at {
            let row = &plane[r..][..live];
            maxima
                .iter_mut()
                .zip(row)
                .for_each(|(m, &v)| keep_max(m, v));
        }
        for (j, m) in dst_row.iter_mut().enumerate() {
            *m = f32::NEG_INFINITY;
            for t in 0..cols.kernel {
                keep_max(m, padded[j * cols.stride + t * cols.dilation]);
            }
        }
    }
}

/// One plane with AVX2: per output row, the covered rows' maxima into `padded` eight
/// columns at a time (a masked load for the last few, its other lanes −∞), then the column
/// windows eight outputs at a time (stride 2: the even lanes of two loads).
/// `_mm256_max_ps(v, m)` is `v > m ? v : m`, the select of the module docs. `STRIDE` is
/// the column stride where it is 1 or 2, 0 for `cols.stride` (any).
///
/// # Safety
/// AVX2; `padded` as sized by [`max_pool_separable`]; `plane` one input plane, `dst` one
/// output plane, `covered[o]` the offsets in `plane` of the rows output row `o` covers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn plane_avx2<const STRIDE: usize>(
    covered: &[Vec<usize>],
    cols: &Axis,
    live: usize,
    plane: &[f32],
    padded: &mut [f32],
    dst: &mut [f32],
) {
    use std::arch::x86_64::*;
    let lowest = _mm256_set1_ps(f32::NEG_INFINITY);
    let tail = live % 8;
    let tail_mask = _mm256_cmpgt_epi32(
        _mm256_set1_epi32(tail as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    );
    let ow = cols.output;
    let step = if STRIDE == 0 { cols.stride } else { STRIDE };
    let pad = padded.as_mut_ptr();
    for (rows_at, dst_row) in covered.iter().zip(dst.chunks_exact_mut(ow)) {
        let mut c = 0;
        while c < live {
            let whole = c + 8 <= live;
            let mut m = lowest;
            for &r in rows_at {
                let at = plane.as_ptr().add(r + c);
                // SAFETY: columns c..c + 8 of row r, all inside the row when `whole`;
                // otherwise the lanes below `tail` are, and the others are not read.
                let v = match whole {
                    true => _mm256_loadu_ps(at),
                    false => _mm256_maskload_ps(at, tail_mask),
                };
                m = _mm256_max_ps(v, m);
            }
            if !whole {
                m = _mm256_blendv_ps(lowest, m, _mm256_castsi256_ps(tail_mask));
            }
            // SAFETY: `cols.pad + c + 8 <= room <= padded.len()`.
            _mm256_storeu_ps(pad.add(cols.pad + c), m);
            c += 8;
        }
        let mut j = 0;
        while j < ow {
            let mut m = lowest;
            for t in 0..cols.kernel {
                let at = pad.add(j * step + t * cols.dilation);
                // SAFETY: every read lies below `reach + 16 <= padded.len()`: the last
                // output block starts below `ow` rounded up to 8, and a stride-2 block
                // reads 16 elements from its first tap.
                let v = match STRIDE {
                    1 => _mm256_loadu_ps(at),
                    2 => {
                        let (lo, hi) = (_mm256_loadu_ps(at), _mm256_loadu_ps(at.add(8)));
                        let even = _mm256_shuffle_ps::<0b10_00_10_00>(lo, hi);
                        _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(
                            even,
                        )))
                    }
                    _ => {
                        let lane = |l: usize| *at.add(l * cols.stride);
                        _mm256_setr_ps(
                            lane(0),
                            lane(1),
                            lane(2),
                            lane(3),
                            lane(4),
                            lane(5),
                            lane(6),
                            lane(7),
                        )
                    }
                };
                m = _mm256_max_ps(v, m);
            }
            let n = (ow - j).min(8);
            if n == 8 {
                _mm256_storeu_ps(dst_row.as_mut_ptr().add(j), m);
            } else {
                let mut lanes = [0f32; 8];
                _mm256_storeu_ps(lanes.as_mut_ptr(), m);
                dst_row[j..].copy_from_slice(&lanes[..n]);
            }
            j += 8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::pool::max_pool;
    use super::*;

    /// The separable pool against the taps-one-by-one pool, bit for bit, with NaNs in the
    /// input: 1-D and 2-D, strides 1 to 3, dilation 2, uneven pads, outputs cut short
    /// (floor mode) and windows running into the end padding (as in ceil mode), rows shorter and
    /// longer than a vector.
    #[test]
    fn separable_max_pool_equals_the_taps_one_by_one() {
        type Geometry<'a> = (
            &'a [usize],
            &'a [usize],
            &'a [usize],
            &'a [usize],
            &'a [usize],
        );
        let cases: [Geometry; 7] = [
            // (input, kernel, strides, dilations, pads: begins then ends)
            (&[31, 31], &[3, 3], &[2, 2], &[1, 1], &[0, 0, 1, 1]),
            (&[9, 20], &[3, 2], &[1, 2], &[1, 1], &[1, 0, 1, 1]),
            (&[12, 11], &[3, 3], &[3, 3], &[2, 2], &[2, 1, 0, 2]),
            (&[5, 37], &[2, 5], &[2, 1], &[1, 1], &[0, 2, 1, 2]),
            (&[17, 17], &[3, 3], &[2, 2], &[1, 1], &[1, 1, 1, 1]),
            (&[40], &[3], &[2], &[1], &[1, 1]),
            (&[13], &[4], &[3], &[2], &[0, 3]),
        ];
        for (input, kernel, strides, dilations, pads) in cases {
            let s = input.len();
            let drive: Vec<usize> = (0..s)
                .map(|a| {
                    let span = (kernel[a] - 1) * dilations[a] + 1;
                    (input[a] + pads[a] + pads[s + a] - span) / strides[a] + 1
                })
                .collect();
            let win = Window {
                drive,
                other: input.to_vec(),
                kernel: kernel.to_vec(),
                strides: strides.to_vec(),
                dilations: dilations.to_vec(),
                pads: pads[..s].to_vec(),
            };
            let planes = 3;
            let x: Vec<f32> = (0..planes * win.other_plane())
                .map(|i| match i % 13 {
                    4 => f32::NAN,
                    _ => ((i * 7919) % 97) as f32 - 48.0,
                })
                .collect();
            let got = max_pool_separable(&win, &x, planes).expect("1-D or 2-D");
            let want = max_pool(&win, &x, planes, f32::NEG_INFINITY);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "input {input:?} kernel {kernel:?}");
            // The portable passes, which the AVX2 ones replace on x86-64.
            let portable = max_pool_passes(&win, &x, planes, false).expect("1-D or 2-D");
            assert_eq!(bits(&portable), bits(&want), "portable: input {input:?}");
        }
    }
}
