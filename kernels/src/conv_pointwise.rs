//! 1×1 Convs (unit stride, no padding) of one image and group as `Y [mg, P] = W [mg, cg] ·
//! X [cg, P]`, with the epilogue on each band of output rows while it is in the L1 cache.
//!
//! Mobile networks' pointwise Convs have few input channels (8 to 96) over maps of 64 to
//! 1024 positions: a short product per output, so what costs is writing the output and
//! passing over it again. Through the `gemm` crate the product was written, then read and
//! written again by the epilogue's pass (bias, activation), and the crate packed both
//! operands on every call. Here X and W are read where they lie, each output is its chain of
//! fused multiply-adds over the input channels in order, plus the bias, through the
//! activation where it is a ReLU, and stored once; other epilogues run on the band of six
//! rows just written.
//!
//! The tile is six output channels by 16 positions (12 accumulators): per input channel,
//! two loads of X's row and six broadcasts of W's column (four channels by 24 positions,
//! the same count, left LLVM one register short and it kept an accumulator on the stack).
//! AVX2 with FMA ([`pointwise_available`]); elsewhere the `gemm` crate serves.
use super::conv_epilogue::{ConvActivation, Epilogue};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Output channels per band (one tile's rows).
const BAND: usize = 6;

/// Positions per tile (two 8-lane vectors).
const TILE: usize = 16;

/// Multiply-adds below which one thread does the whole product.
const PARALLEL_MIN_MACS: usize = 1 << 20;

/// True where the kernel runs (x86-64 with AVX2 and FMA).
pub(crate) fn pointwise_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Input channels up to which the kernel serves a 1×1 Conv on any map.
const FEW_CHANNELS: usize = 64;

/// Input elements per image (`cg · P`) up to which it serves one with more channels: X
/// stays in the L2 cache while every band of rows reads it again.
const CACHED_INPUT: usize = 32 << 10;

/// Weights (`mg · cg`) up to which it serves a 1×1 Conv.
const MAX_WEIGHTS: usize = 1 << 19;

/// True where the kernel serves a 1×1 Conv of `cg` input and `mg` output channels per
/// group over `p` positions per image: AVX2 with FMA, at least a tile's width of positions,
/// and few input channels or an input that stays in cache, and not too many weights. One
/// Conv with ReLU, two images, one thread, against the `gemm` crate and the epilogue's pass
/// (min of 3 × 200 runs, the same rounds; `cg → mg, map`), µs: 8 → 24, 32×32 25 → 17;
/// 16 → 96, 112×112 1408 → 1096; 24 → 144, 16×16 56 → 44; 144 → 24, 16×16 64 → 53;
/// 16 → 64, 15×15 37 → 19; 64 → 384, 8×8 115 → 79; 512 → 128, 8×8 201 → 174;
/// 96 → 576, 4×4 62 → 45; 960 → 160, 4×4 118 → 101. Where X no longer stays in cache the
/// crate's packed blocks win: 1024 → 256, 14×14 2291 → 3244; 256 → 64, 56×56 2358 → 2496;
/// with many weights too: 512 → 2048, 7×7 2519 → 3110; 64 → 256 on 56×56 is even.
pub(crate) fn pointwise_suits(cg: usize, mg: usize, p: usize) -> bool {
    pointwise_available()
        && p >= TILE
        && (cg <= FEW_CHANNELS || cg * p <= CACHED_INPUT)
        && mg * cg <= MAX_WEIGHTS
}

/// `out[i·p + j] = epi(Σ_c w[i·cg + c] · x[c·p + j])` for `i < mg`, `j < p`, where `epi`
/// (its bias included) places element `(i, j)` at flat offset `at + i·p + j` of the Conv's
/// output. Writes every element of `out[..mg·p]`; splits bands of rows over the device's
/// rayon threads when the product is large.
pub(crate) fn conv_pointwise(
    (mg, cg, p): (usize, usize, usize),
    x: &[f32],
    w: &[f32],
    out: &mut [MaybeUninit<f32>],
    epi: Epilogue<'_>,
    at: usize,
) -> Result<(), String> {
    let bias_short = epi.bias.is_some_and(|b| b.len() < mg);
    if x.len() < cg * p || w.len() < mg * cg || out.len() < mg * p || bias_short {
        return Err(format!(
            "pointwise Conv operands out of bounds for {mg}x{cg}·{cg}x{p}"
        ));
    }
    if !pointwise_available() {
        return Err("the pointwise Conv kernel needs AVX2 and FMA".to_string());
    }
    if mg == 0 || p == 0 {
        return Ok(());
    }
    // A ReLU in registers only where it is the epilogue's last step after the bias.
    let relu = matches!(epi.act, Some(ConvActivation::Relu))
        && epi.scale.is_none()
        && epi.shift.is_none()
        && epi.residual.is_none();
    // What the tile does not do in registers, run over each band once it is stored.
    let rest = Epilogue {
        bias: None,
        act: if relu { None } else { epi.act },
        ..epi
    };
    let band = |bi: usize, rows_out: &mut [MaybeUninit<f32>]| {
        let m0 = bi * BAND;
        let rows = (mg - m0).min(BAND);
        // SAFETY: AVX2 and FMA are present (checked above); X holds cg rows of p, W the
        // band's rows of cg, and `rows_out` the band's rows of p (bounds checked above).
        unsafe {
            band_avx2(
                (cg, p),
                x,
                &w[m0 * cg..],
                rows,
                epi.bias.map(|b| &b[m0..]),
                relu,
                rows_out,
            )
        };
        if !rest.is_empty() {
            // SAFETY: band_avx2 wrote all `rows · p` elements; MaybeUninit<f32> has f32's
            // layout.
            let written = unsafe {
                std::slice::from_raw_parts_mut(rows_out.as_mut_ptr().cast::<f32>(), rows * p)
            };
            for (r, row) in written.chunks_exact_mut(p).enumerate() {
                rest.apply(row, at + (m0 + r) * p);
            }
        }
    };
    let out = &mut out[..mg * p];
    if crate::pool_threads() > 1 && mg * cg * p >= crate::split_min(PARALLEL_MIN_MACS) {
        out.par_chunks_mut(BAND * p)
            .enumerate()
            .for_each(|(bi, rows_out)| band(bi, rows_out));
    } else {
        for (bi, rows_out) in out.chunks_mut(BAND * p).enumerate() {
            band(bi, rows_out);
        }
    }
    Ok(())
}

/// One band of up to [`BAND`] output rows (`rows` of them), tile by tile along the
/// positions; the last tile's columns past `p` are read through masks and not stored.
///
/// # Safety
/// AVX2 and FMA; `x` holds `cg` rows of `p`, `w` `rows` rows of `cg`, `bias` (when given)
/// `rows` values, `out` `rows` rows of `p`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn band_avx2(
    (cg, p): (usize, usize),
    x: &[f32],
    w: &[f32],
    rows: usize,
    bias: Option<&[f32]>,
    relu: bool,
    out: &mut [MaybeUninit<f32>],
) {
    // Rows past `rows` repeat the last one (computed, not stored).
    let wrow: [*const f32; BAND] = std::array::from_fn(|r| w.as_ptr().add(r.min(rows - 1) * cg));
    let t = Tile {
        x: x.as_ptr(),
        cg,
        p,
        rows,
        wrow,
        bias,
        relu,
        out: out.as_mut_ptr().cast::<f32>(),
    };
    let mut j = 0;
    while j + TILE <= p {
        tile_avx2::<2, true>(&t, j);
        j += TILE;
    }
    // The last columns: one vector's tile where they fit one (less work thrown away on
    // 7×7 maps: 49 positions computed as 56, not 64).
    match p - j {
        0 => {}
        1..=8 => tile_avx2::<1, false>(&t, j),
        _ => tile_avx2::<2, false>(&t, j),
    }
}

/// What every tile of a band shares.
#[cfg(target_arch = "x86_64")]
struct Tile<'a> {
    x: *const f32,
    cg: usize,
    p: usize,
    rows: usize,
    wrow: [*const f32; BAND],
    bias: Option<&'a [f32]>,
    relu: bool,
    out: *mut f32,
}

/// One tile: `BAND` rows of W by the `8·NV` columns of X from column `j` (those below `p`
/// unless `FULL`), each output a chain of fused multiply-adds over the input channels in
/// order from zero, then the bias (the epilogue's order), then the ReLU, stored once.
///
/// # Safety
/// AVX2 and FMA; `t` as [`band_avx2`] fills it from its contract, `j < p` (`j + 8·NV <= p`
/// when `FULL`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tile_avx2<const NV: usize, const FULL: bool>(t: &Tile, j: usize) {
    use std::arch::x86_64::*;
    let n = (t.p - j).min(8 * NV);
    // Lanes below `n − 8v` of vector v (formed in the last tile only: the twelve
    // accumulators, three X vectors and a broadcast take all sixteen registers).
    let mask = |v: usize| {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32 - 8 * v as i32), lanes)
    };
    let masks: [__m256i; NV] = std::array::from_fn(mask);
    let wrow = t.wrow;
    let mut acc = [[_mm256_setzero_ps(); NV]; BAND];
    let mut row = t.x.add(j);
    for c in 0..t.cg {
        // SAFETY: columns j..j + n of X's row c; masked-off lanes are not read.
        let xv: [__m256; NV] = std::array::from_fn(|v| match FULL {
            true => _mm256_loadu_ps(row.add(8 * v)),
            false => _mm256_maskload_ps(row.add(8 * v), masks[v]),
        });
        for (r, acc_r) in acc.iter_mut().enumerate() {
            // SAFETY: weight c of row r.
            let wv = _mm256_set1_ps(*wrow[r].add(c));
            for (v, a) in acc_r.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(wv, xv[v], *a);
            }
        }
        row = row.add(t.p);
    }
    for (r, acc_r) in acc.iter().enumerate().take(t.rows) {
        let dst = t.out.add(r * t.p + j);
        let b = _mm256_set1_ps(t.bias.map_or(0.0, |b| b[r]));
        let mut tail = [0f32; TILE];
        for (v, &a) in acc_r.iter().enumerate() {
            // A ReLU: x where x > 0 or NaN, +0 elsewhere.
            let mut y = _mm256_add_ps(a, b);
            if t.relu {
                y = _mm256_and_ps(y, _mm256_cmp_ps::<_CMP_NLE_UQ>(y, _mm256_setzero_ps()));
            }
            // Whole tiles store unmasked (a masked store is microcoded on AMD's cores);
            // the last tile goes through `tail`.
            match FULL {
                true => _mm256_storeu_ps(dst.add(8 * v), y),
                false => _mm256_storeu_ps(tail.as_mut_ptr().add(8 * v), y),
            }
        }
        if !FULL {
            std::ptr::copy_nonoverlapping(tail.as_ptr(), dst, n);
        }
    }
}

/// Elsewhere [`pointwise_available`] is false and [`conv_pointwise`] returns before this.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn band_avx2(
    _: (usize, usize),
    _: &[f32],
    _: &[f32],
    _: usize,
    _: Option<&[f32]>,
    _: bool,
    _: &mut [MaybeUninit<f32>],
) {
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 500.0 - 2.0
            })
            .collect()
    }

    /// Each output its chain of fused multiply-adds over the input channels in order, the
    /// bias, then the rest of the epilogue through the epilogue's own pass.
    fn reference(
        (mg, cg, p): (usize, usize, usize),
        x: &[f32],
        w: &[f32],
        epi: Epilogue<'_>,
        at: usize,
    ) -> Vec<f32> {
        let mut out = vec![0f32; mg * p];
        for i in 0..mg {
            for j in 0..p {
                let mut acc = 0f32;
                for c in 0..cg {
                    acc = w[i * cg + c].mul_add(x[c * p + j], acc);
                }
                out[i * p + j] = acc + epi.bias.map_or(0.0, |b| b[i]);
            }
        }
        let rest = Epilogue { bias: None, ..epi };
        for (i, row) in out.chunks_exact_mut(p).enumerate() {
            rest.apply(row, at + i * p);
        }
        out
    }

    /// Bit for bit the reference, over tails of 1 to 15 columns, bands cut short, one and
    /// several input channels, and every way the epilogue splits between the registers and
    /// the pass over a band (ReLU alone, ReLU after a residual, HardSwish, Clip, none).
    #[test]
    fn pointwise_products_equal_the_ordered_chain() {
        if !pointwise_available() {
            eprintln!("skipped: no AVX2 and FMA");
            return;
        }
        let hard_swish = ConvActivation::HardSigmoid {
            alpha: 1.0 / 6.0,
            beta: 0.5,
            swish: true,
        };
        let clip = ConvActivation::Clip {
            min: Some(0.0),
            max: Some(6.0),
        };
        for (mg, cg, p) in [
            (6, 16, 16),
            (7, 3, 17),
            (13, 1, 24),
            (5, 20, 31),
            (1, 8, 49),
        ] {
            let x = values(cg * p, 1);
            let w = values(mg * cg, 2);
            let bias = values(mg, 3);
            // The group's rows start at channel 2 of a wider output (`at`).
            let (channels, at) = (mg + 2, 2 * p);
            let residual = values(channels * p, 4);
            for (with_bias, act, res) in [
                (false, None, false),
                (true, None, false),
                (true, Some(ConvActivation::Relu), false),
                (true, Some(ConvActivation::Relu), true),
                (false, Some(hard_swish), false),
                (true, Some(clip), true),
            ] {
                let epi = Epilogue {
                    bias: with_bias.then_some(&bias[..]),
                    residual: res.then_some(&residual[..]),
                    act,
                    plane: p,
                    channels,
                    ..Epilogue::default()
                };
                let mut out = vec![MaybeUninit::new(f32::NAN); mg * p];
                conv_pointwise((mg, cg, p), &x, &w, &mut out, epi, at).unwrap();
                // SAFETY: conv_pointwise wrote every element (and they were initialised).
                let got: Vec<u32> = out
                    .iter()
                    .map(|v| unsafe { v.assume_init() }.to_bits())
                    .collect();
                let want: Vec<u32> = reference((mg, cg, p), &x, &w, epi, at)
                    .iter()
                    .map(|v| v.to_bits())
                    .collect();
                assert_eq!(
                    got, want,
                    "{mg}x{cg}·{cg}x{p} bias {with_bias} {act:?} residual {res}"
                );
            }
        }
    }

    #[test]
    fn operands_out_of_bounds_are_an_error() {
        let mut out = vec![MaybeUninit::new(0f32); 16];
        let e = conv_pointwise(
            (1, 2, 16),
            &[0.0; 16],
            &[0.0; 2],
            &mut out,
            Epilogue::default(),
            0,
        );
        assert!(e.unwrap_err().contains("out of bounds"));
    }
}
