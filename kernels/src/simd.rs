//! Runtime CPU-feature dispatch for the elementwise kernels, and a vectorisable `exp`.
//!
//! The workspace builds for baseline x86-64 (SSE2). [`vectorized`] runs a closure inside a
//! function compiled with AVX-512F (or AVX2 + FMA) when the CPU has it, so the tight loops the
//! closure inlines are auto-vectorised 16 (or 8) lanes wide; elsewhere it just calls it.
//! The arithmetic is the same on every path, so results do not depend on the path taken:
//! the compiler introduces no fused multiply-adds, and kernels that want one call [`fma`]
//! (`f32::mul_add`, a single rounding everywhere: one instruction on the AVX-512 and
//! AVX2 + FMA paths, a correctly rounded library call elsewhere).

/// Runs `f`, compiled with the widest vector extension this CPU supports.
///
/// Pass the closure with `#[inline(always)]` (`vectorized(#[inline(always)] || ...)`): a
/// closure that LLVM does not inline into the target-feature wrapper is compiled for the
/// baseline (SSE2) instead, which silently loses the wide vectors (measured: a 4-lane
/// softmax inside the fused attention ran at 1.8 ns per element).
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { with_avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { with_avx2(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// `f` over every element of `v`, in a loop compiled for the widest vector extension
/// ([`vectorized`]); pass `f` with `#[inline(always)]` when it is a closure.
///
/// The loop writes into a buffer allocated outside the wide function. A `collect()` inside
/// [`vectorized`] goes through a chain of generic `from_iter`/`fold` functions that LLVM
/// stops inlining once `f` is large (the FMA forms of sigmoid and tanh): the loop then runs
/// in the baseline build with a library call per [`fma`] (measured: 1.5 ms instead of
/// 0.023 ms for a Sigmoid over 65 536 values).
#[inline(always)]
pub(crate) fn map(v: &[f32], f: impl Fn(f32) -> f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(v.len());
    let dst = &mut out.spare_capacity_mut()[..v.len()];
    vectorized(
        #[inline(always)]
        || {
            for (o, &a) in dst.iter_mut().zip(v) {
                o.write(f(a));
            }
        },
    );
    // SAFETY: the loop above initialised all `v.len()` elements of the reserved capacity.
    unsafe { out.set_len(v.len()) };
    out
}

/// The mask of AVX-512 lanes `0..n` (all 16 from `n = 16` on), for masked loads and stores
/// of a partial vector.
#[inline(always)]
pub(crate) fn lane_mask(n: usize) -> u16 {
    if n >= 16 {
        u16::MAX
    } else {
        ((1u32 << n) - 1) as u16
    }
}

/// `a · b + c` with one rounding (`f32::mul_add`): a fused multiply-add instruction inside
/// [`vectorized`] on x86-64 CPUs with AVX-512 or AVX2 + FMA, the same bits elsewhere.
#[inline(always)]
pub(crate) fn fma(a: f32, b: f32, c: f32) -> f32 {
    a.mul_add(b, c)
}

/// log2(e), and ln 2 in two parts (the high part exact in a product with any `n` in range).
const EXP_LOG2E: f32 = std::f32::consts::LOG2_E;
const EXP_LN2_HI: f32 = 0.693_359_4;
const EXP_LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5·2^23: adding it rounds to an integer held in the low mantissa bits.
const EXP_SHIFTER: f32 = 12_582_912.0;
/// Cephes `expf` coefficients of `e^r` on |r| ≤ ln2/2 (Horner order).
const EXP_P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    5e-1,
];

/// e^[`EXP_LN2_HI`] in f32 (2·e^(HI − ln2), HI − ln2 = 2.1219e-4): the factor that keeps
/// `2^n` normal in [`exp`] above x = 88.
const EXP_OF_LN2_HI: f32 = 2.000_424_4;

/// `e^x` in f32, branch-free so loops over it vectorise: [`exp_in_range`] (range reduction
/// `x = n·ln2 + r` with ln2 in two parts, a degree-6 polynomial for `e^r`, Cephes `expf`
/// coefficients, by fused multiply-adds), on x − [`EXP_LN2_HI`] (an exact subtraction there)
/// times e^HI above 88 so that `2^n` stays one normal factor. Relative error below 3e-7 on
/// [-87.3, 88.7]; below -87.3 (next to the subnormal range, whose arithmetic is very slow on
/// x86) returns 0, above 88.7 returns +inf, NaN stays NaN. About 20 vector operations per
/// 16 lanes (it was 35 with a two-factor scale, 3.6x onnxruntime's Exp).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    // Selected operands, not selected results: one polynomial chain (with `if big` around
    // the subtraction LLVM computed the chain twice).
    let big = x > 88.0;
    let (shift, factor) = if big {
        (EXP_LN2_HI, EXP_OF_LN2_HI)
    } else {
        (0.0, 1.0)
    };
    // n = round(t·log2e) ≤ 127 up to t = 88.37; t ≤ 88.03 here.
    let y = exp_in_range((x - shift).clamp(-87.3, 88.3)) * factor;
    if x.is_nan() {
        x
    } else if x > 88.722_83 {
        f32::INFINITY
    } else if x < -87.3 {
        0.0
    } else {
        y
    }
}

/// `tanh(x)` in f32, branch-free so loops over it vectorise: the rational approximation of
/// Eigen (odd degree-13 numerator, even degree-6 denominator on x clamped to ±7.905, where
/// the f32 tanh is ±1 to within an ulp); `x` itself below 4e-4 in magnitude (where tanh(x)
/// rounds to x). Max abs error about 4e-7 against the f64 tanh; NaN stays NaN. Replaces
/// libm's `tanhf`, a call per element (measured 60 ns per element inside GELU's tanh form).
/// Both polynomials by fused multiply-adds ([`fma`]): half their operations inside
/// [`vectorized`] (GELU's tanh form in a MatMul epilogue), but a library call per step
/// outside it, so callers keep it inside.
#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    const ALPHA: [f32; 7] = [
        -2.760_768_5e-16,
        2.000_188e-13,
        -8.604_672e-11,
        5.122_297e-8,
        1.485_722_4e-5,
        6.372_619_3e-4,
        4.893_524_6e-3,
    ];
    const BETA: [f32; 4] = [1.198_258_4e-6, 1.185_347_1e-4, 2.268_434_6e-3, 4.893_525e-3];
    let xc = x.clamp(-7.905_311, 7.905_311);
    let x2 = xc * xc;
    // Horner from the first coefficient: `fma(0, x2, c)` is `c` for the finite x2 of the
    // clamp (one vector instruction less per polynomial; a NaN still gives NaN).
    let p = ALPHA[1..].iter().fold(ALPHA[0], |acc, &c| fma(acc, x2, c)) * xc;
    let q = BETA[1..].iter().fold(BETA[0], |acc, &c| fma(acc, x2, c));
    if x.abs() < 4e-4 || x.is_nan() {
        x
    } else if x.abs() > 9.0 {
        // Where the f32 tanh is ±1 (the fused quotient at the clamp is 2 ulp short of it).
        1f32.copysign(x)
    } else {
        p / q
    }
}

/// `e^t` for `t` in [-87.3, 88] (the caller clamps; NaN passes through): [`exp`]'s range
/// reduction and polynomial with fused multiply-adds ([`fma`]), and `2^n` as one normal
/// factor, which this range allows. About 16 vector operations per 16 lanes, against about 35
/// for [`exp`] with its special cases and two-factor scale.
#[inline(always)]
fn exp_in_range(t: f32) -> f32 {
    let u = fma(t, EXP_LOG2E, EXP_SHIFTER);
    let n = u - EXP_SHIFTER;
    let r = fma(n, -EXP_LN2_LO, fma(n, -EXP_LN2_HI, t));
    // From the first coefficient, as in [`tanh`].
    let p = EXP_P[1..].iter().fold(EXP_P[0], |acc, &c| fma(acc, r, c));
    let er = fma(p, r * r, r) + 1.0;
    // n ∈ [-126, 127]: 2^n is one normal factor.
    let ni = u.to_bits() as i32 - EXP_SHIFTER.to_bits() as i32;
    er * f32::from_bits(((ni + 127) << 23) as u32)
}

/// `e^x` for `x ≤ 0` (a softmax's shifted scores) by [`exp_in_range`], exactly 0 below −87.3
/// (so −∞, a masked score, gives 0), NaN stays NaN; relative error below 3e-7. Positive
/// arguments are clamped to 0.
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
    let y = exp_in_range(x.clamp(-87.3, 0.0));
    if x < -87.3 {
        0.0
    } else {
        y
    }
}

/// Cephes `logf` coefficients of `ln(1 + t) − t + t²/2 = t³·P(t)` on t ∈ [√½ − 1, √2 − 1]
/// (Horner order).
const LN_P: [f32; 9] = [
    7.037_683_6e-2,
    -1.151_461e-1,
    1.167_699_9e-1,
    -1.242_014_1e-1,
    1.424_932_3e-1,
    -1.666_805_8e-1,
    2.000_071_4e-1,
    -2.499_999_4e-1,
    3.333_333e-1,
];

/// `ln(x)` in f32, branch-free so loops over it vectorise (libm's `logf` is a call per
/// element): `x = m·2^e` with m ∈ [√½, √2) from the bits, Cephes `logf`'s degree-8
/// polynomial in `m − 1`, and `e·ln2` in two parts. Subnormals are scaled by 2^23 first;
/// ln(0) = −∞, ln(+∞) = +∞, negative and NaN give NaN. Relative error below 3e-7 (plain
/// multiplies and adds, so the baseline build computes the same bits).
#[inline(always)]
pub(crate) fn ln(x: f32) -> f32 {
    let sub = x < f32::MIN_POSITIVE;
    let xs = if sub { x * 8_388_608.0 } else { x };
    let bits = xs.to_bits();
    let e = ((bits >> 23) & 0xff) as i32 - 126 - if sub { 23 } else { 0 };
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000); // [0.5, 1)
    let small = m < std::f32::consts::FRAC_1_SQRT_2;
    let (e, t) = if small {
        (e - 1, m + m - 1.0)
    } else {
        (e, m - 1.0)
    };
    let z = t * t;
    // From the first coefficient, as in [`tanh`] (t is finite: `0 · t + c` is `c`).
    let p = LN_P[1..].iter().fold(LN_P[0], |acc, &c| acc * t + c);
    let ef = e as f32;
    let y = p * t * z + ef * EXP_LN2_LO - 0.5 * z;
    let r = t + y + ef * EXP_LN2_HI;
    if x.is_nan() || x < 0.0 {
        f32::NAN
    } else if x == 0.0 {
        f32::NEG_INFINITY
    } else if x == f32::INFINITY {
        x
    } else {
        r
    }
}

/// `softplus(x) = ln(1 + e^x)` = `max(x, 0) + ln(1 + e^-|x|)`, branch-free so loops over it
/// vectorise (libm's `exp` and `log1p` are two calls per element: 19 ns): `e^-|x|` by
/// [`exp`], and `ln(1 + u)` for u ∈ [0, 1] as `ln(w)·u / (w − 1)` with `w = 1 + u`
/// (exact to a few ulp where `1 + u` rounds; `u` itself where it rounds to 1). Relative error
/// below 1e-6 from x = −87 on; below, where e^x < 2e-38, 0 or e^x (as [`exp`] flushes);
/// NaN stays NaN, +∞ gives +∞.
#[inline(always)]
pub(crate) fn softplus(x: f32) -> f32 {
    let u = exp(-x.abs());
    let w = 1.0 + u;
    let l = if w == 1.0 { u } else { ln(w) * u / (w - 1.0) };
    let y = x.max(0.0) + l;
    if x.is_nan() {
        x
    } else {
        y
    }
}

/// The logistic function `1 / (1 + e^-x)` (relative error below 4e-7; exactly 0 below
/// x = -88 and 1 above 87), branch-free so loops over it vectorise: `e^-x` by
/// [`exp_in_range`] on `-x` clamped to [-87, 88] (SiLU after every Conv of an EfficientNet
/// spent as long in the activation as in the Conv with [`exp`]).
#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    let y = 1.0 / (1.0 + exp_in_range((-x).clamp(-87.0, 88.0)));
    if x < -88.0 {
        0.0
    } else {
        y
    }
}

/// Lanes of the split accumulators in [`sum`] and [`max`] (one AVX-512 register).
pub(crate) const LANES: usize = 16;

pub(crate) use crate::simd_reduce::{max, sum, sum_by, sum_map};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std() {
        let (mut worst, mut at) = (0f64, 0f32);
        for i in -87_290..=88_700 {
            let x = i as f32 * 1e-3;
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            let e = (got - want).abs() / want;
            if e > worst {
                (worst, at) = (e, x);
            }
        }
        assert!(worst < 3e-7, "max relative error {worst} at {at}");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(-87.5), 0.0);
        // Above 88 (the e^HI factor): against f64 too.
        for x in [88.0f32, 88.3, 88.5, 88.7, 88.72] {
            let e = (exp(x) as f64 - (x as f64).exp()).abs() / (x as f64).exp();
            assert!(e < 3e-7, "exp({x}): relative error {e}");
        }
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn softplus_matches_f64() {
        let mut worst = 0f64;
        for i in -100_000..=100_000 {
            let x = i as f32 * 1e-3;
            let xd = x as f64;
            let want = xd.max(0.0) + (-xd.abs()).exp().ln_1p();
            let got = softplus(x) as f64;
            if x < -87.0 {
                // e^x is flushed to 0 below −87.3 (as `exp`): the true value is < 2e-38.
                assert!((got - want).abs() < 2e-38, "softplus({x}) = {got}");
                continue;
            }
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 1e-6, "max relative error {worst}");
        assert_eq!(softplus(f32::INFINITY), f32::INFINITY);
        assert_eq!(softplus(f32::NEG_INFINITY), 0.0);
        assert!(softplus(f32::NAN).is_nan());
        assert!((softplus(-90.0) as f64) < 1e-38 && softplus(-20.0) > 0.0);
        assert_eq!(softplus(100.0), 100.0);
    }

    #[test]
    fn ln_matches_f64() {
        let mut worst = 0f64;
        let mut x = 1e-44f32;
        while x < 3e38 {
            let want = (x as f64).ln();
            let e = (ln(x) as f64 - want).abs() / want.abs().max(1e-30);
            // Near x = 1 the result is tiny: compare with an absolute bound there.
            let e = if want.abs() < 1e-3 {
                (ln(x) as f64 - want).abs() / 1e-3
            } else {
                e
            };
            assert!(e < 1e-6, "ln({x}) = {} vs {want}", ln(x));
            worst = worst.max(e);
            // At least the next float (a product rounds back to x among subnormals).
            x = (x * 1.000_37).max(f32::from_bits(x.to_bits() + 1));
        }
        assert!(worst < 3e-7, "max relative error {worst}");
        for x in [0.999_99f32, 1.0, 1.000_01, 0.5, 2.0, std::f32::consts::E] {
            assert!((ln(x) as f64 - (x as f64).ln()).abs() < 1e-7, "ln({x})");
        }
        assert_eq!(ln(0.0), f32::NEG_INFINITY);
        assert_eq!(ln(f32::INFINITY), f32::INFINITY);
        assert!(ln(-1.0).is_nan() && ln(f32::NAN).is_nan());
    }

    #[test]
    fn tanh_and_sigmoid_match_std() {
        let (mut worst_t, mut worst_s) = (0f64, 0f64);
        for i in -120_000..=120_000 {
            let x = i as f32 * 1e-4;
            let xd = x as f64;
            worst_t = worst_t.max((tanh(x) as f64 - xd.tanh()).abs());
            let s = 1.0 / (1.0 + (-xd).exp());
            worst_s = worst_s.max((sigmoid(x) as f64 - s).abs() / s);
        }
        assert!(worst_t < 5e-7, "tanh: max abs error {worst_t}");
        assert!(worst_s < 5e-7, "sigmoid: max relative error {worst_s}");
        for x in [1e-5f32, -3e-4, 0.0] {
            assert_eq!(tanh(x), x);
        }
        assert_eq!((tanh(20.0), tanh(-1e30)), (1.0, -1.0));
        assert!(tanh(f32::NAN).is_nan() && sigmoid(f32::NAN).is_nan());
        assert_eq!((sigmoid(-100.0), sigmoid(100.0)), (0.0, 1.0));
        // Far tails, down to where sigmoid nears the subnormals.
        for i in -800..=800 {
            let x = i as f32 * 0.1;
            let s = 1.0 / (1.0 + (-(x as f64)).exp());
            let e = (sigmoid(x) as f64 - s).abs() / s;
            assert!(e < 5e-7, "sigmoid({x}): relative error {e}");
        }
        assert_eq!(sigmoid(f32::NEG_INFINITY), 0.0);
        // The softmax exponential, over its whole range.
        for i in -87_300..=0 {
            let x = i as f32 * 1e-3;
            let want = (x as f64).exp();
            let e = (exp_nonpositive(x) as f64 - want).abs() / want;
            assert!(e < 3e-7, "exp_nonpositive({x}): relative error {e}");
        }
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpositive(-100.0), 0.0);
        assert!(exp_nonpositive(f32::NAN).is_nan());
        assert_eq!(sigmoid(f32::INFINITY), 1.0);
    }

    #[test]
    fn split_sum_and_max() {
        let v: Vec<f32> = (0..37).map(|i| (i as f32 - 20.0) * 0.5).collect();
        // Halves of small integers: every order of the sum is exact.
        assert_eq!(sum(&v), v.iter().sum::<f32>());
        assert_eq!(max(&v), 8.0);
        assert_eq!(max(&[f32::NAN, -3.0]), -3.0);
        assert_eq!(max(&[]), f32::NEG_INFINITY);
        assert_eq!(sum(&[]), 0.0);
    }

    #[test]
    fn vectorized_runs_the_closure() {
        let v: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        let s = vectorized(
            #[inline(always)]
            || v.iter().map(|x| x * 2.0).collect::<Vec<_>>(),
        );
        assert_eq!(s[999], 1998.0);
    }
}
