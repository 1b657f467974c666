//! Sin and Cos in f32, branch-free in the range where they are reduced accurately, so loops
//! over them vectorise. Decoders exported by torch dynamo compute their rotary tables as
//! `cos` / `sin` of positions × frequencies on every run; libm's `sinf` / `cosf` are a
//! call per element.
//!
//! `x` is reduced by the multiple `q` of π/2 nearest to it, with π/2 in three parts whose
//! products with `q` are exact in a fused multiply-add (Eigen's constants for FMA targets,
//! `psincos_float`), to `r` in [−π/4, π/4]; Cephes' `sinf` / `cosf` polynomials give sin r and
//! cos r, and the quadrant `q mod 4` picks one and its sign. Beyond [`REDUCED_MAX`] in
//! magnitude (and for infinities and NaN) the reduction loses bits: libm answers there.
use super::simd::fma;

/// The largest |x| the three-part reduction keeps within an ulp or two (Eigen: 71476 for
/// cos, 117436 for sin).
pub(crate) const REDUCED_MAX: f32 = 65_536.0;

const TWO_OVER_PI: f32 = std::f32::consts::FRAC_2_PI;
// π/2 = A + B + C: 1.57079601287841796875 + 3.1391647326e-7 + 5.3903025300e-15 (each the
// f32 value its shortest decimal names).
// A is π/2 with its last 3 bits cleared (its products with q are exact).
const PIO2_A: f32 = f32::from_bits(0x3fc9_0fd8);
const PIO2_B: f32 = 3.139_164_7e-7;
const PIO2_C: f32 = 5.390_302_5e-15;

/// (sin r, cos r, quadrant) for |x| ≤ [`REDUCED_MAX`].
#[inline(always)]
fn reduced(x: f32) -> (f32, f32, i32) {
    let q = (x * TWO_OVER_PI).round_ties_even();
    let r = fma(q, -PIO2_A, x);
    let r = fma(q, -PIO2_B, r);
    let r = fma(q, -PIO2_C, r);
    let z = r * r;
    let s = fma(
        fma(fma(-1.951_529_6e-4, z, 8.332_161e-3), z, -1.666_665_5e-1),
        z * r,
        r,
    );
    let c = fma(
        fma(fma(2.443_315_7e-5, z, -1.388_731_6e-3), z, 4.166_664_6e-2),
        z * z,
        fma(-0.5, z, 1.0),
    );
    // |q| ≤ 2^16 here, so the cast is exact.
    (s, c, q as i32)
}

/// The value for quadrant `k` of (sin r, cos r): sin r, cos r, −sin r, −cos r for k mod 4 =
/// 0, 1, 2, 3 (selects, not branches).
#[inline(always)]
fn quadrant(s: f32, c: f32, k: i32) -> f32 {
    let v = if k & 1 != 0 { c } else { s };
    if k & 2 != 0 {
        -v
    } else {
        v
    }
}

/// sin(x) for |x| ≤ [`REDUCED_MAX`] (anything for other x): the wide loops' form, followed
/// by [`fix_large`].
#[inline(always)]
pub(crate) fn sin_reduced(x: f32) -> f32 {
    let (s, c, q) = reduced(x);
    // The reduction turns −0 into +0; sin keeps the sign of zero.
    if x == 0.0 {
        x
    } else {
        quadrant(s, c, q)
    }
}

/// cos(x) for |x| ≤ [`REDUCED_MAX`] (anything for other x): cos x = sin(x + π/2), one
/// quadrant on.
#[inline(always)]
pub(crate) fn cos_reduced(x: f32) -> f32 {
    let (s, c, q) = reduced(x);
    quadrant(s, c, q.wrapping_add(1))
}

/// sin(x) for any x: [`sin_reduced`] where it holds, else libm (the scalar form, for
/// callers through `unary::float_fn`'s pointer; the same values as the wide loop and
/// [`fix_large`]).
pub(crate) fn sin(x: f32) -> f32 {
    if x.abs() <= REDUCED_MAX {
        sin_reduced(x)
    } else {
        x.sin()
    }
}

/// cos(x) for any x, as [`sin`].
pub(crate) fn cos(x: f32) -> f32 {
    if x.abs() <= REDUCED_MAX {
        cos_reduced(x)
    } else {
        x.cos()
    }
}

/// Recomputes with libm (`f`) the outputs of inputs beyond [`REDUCED_MAX`] in magnitude,
/// infinities and NaN included.
pub(crate) fn fix_large(x: &[f32], out: &mut [f32], f: fn(f32) -> f32) {
    for (o, &a) in out.iter_mut().zip(x) {
        if a.abs() > REDUCED_MAX || a.is_nan() {
            *o = f(a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every input's error against the f64 functions, through the wide loop and the scalar
    /// form: within 1.2e-7 absolute (an ulp of 1; measured 9.2e-8) from 0 to 65536 in magnitude.
    #[test]
    fn sin_and_cos_match_f64_within_an_ulp_of_one() {
        let mut xs: Vec<f32> = (-200_000..=200_000).map(|i| i as f32 * 1e-3).collect();
        // Every multiple of π/4 up to the range's end, and points just beside them.
        for k in -83_000..=83_000 {
            let a = k as f64 * std::f64::consts::FRAC_PI_4;
            for d in [-1e-3, 0.0, 1e-3] {
                xs.push((a + d) as f32);
            }
        }
        xs.extend([0.0, -0.0, 1e-30, -1e-30, 65_536.0, -65_536.0, 12_345.678]);
        let wide_sin = crate::simd::map(&xs, sin_reduced);
        let wide_cos = crate::simd::map(&xs, cos_reduced);
        let mut worst = (0.0f64, 0.0f32);
        for (i, &x) in xs.iter().enumerate() {
            let (ws, wc) = ((x as f64).sin(), (x as f64).cos());
            for (got, want) in [
                (wide_sin[i], ws),
                (wide_cos[i], wc),
                (sin(x), ws),
                (cos(x), wc),
            ] {
                let e = (got as f64 - want).abs();
                if e > worst.0 {
                    worst = (e, x);
                }
            }
            assert_eq!(
                wide_sin[i].to_bits(),
                sin(x).to_bits(),
                "sin({x}): wide vs scalar"
            );
            assert_eq!(
                wide_cos[i].to_bits(),
                cos(x).to_bits(),
                "cos({x}): wide vs scalar"
            );
        }
        assert!(
            worst.0 <= 1.2e-7,
            "max abs error {:e} at x = {}",
            worst.0,
            worst.1
        );
        assert_eq!(sin(-0.0).to_bits(), (-0.0f32).to_bits());
    }

    /// Beyond the range, infinities and NaN: libm's values, by the scalar form and by
    /// [`fix_large`] after the wide loop.
    #[test]
    fn large_and_special_inputs_are_libm_values() {
        let xs = [
            70_000.0f32,
            -1e6,
            3e38,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        let mut s = crate::simd::map(&xs, sin_reduced);
        let mut c = crate::simd::map(&xs, cos_reduced);
        fix_large(&xs, &mut s, f32::sin);
        fix_large(&xs, &mut c, f32::cos);
        for (i, &x) in xs.iter().enumerate() {
            for (got, want) in [
                (s[i], x.sin()),
                (c[i], x.cos()),
                (sin(x), x.sin()),
                (cos(x), x.cos()),
            ] {
                assert!(
                    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                    "x = {x}: {got} against {want}"
                );
            }
        }
    }
}
