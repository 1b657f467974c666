//! Elementwise unary ops, GELU, Clip and HardSigmoid / HardSwish.
use super::simd;
use super::{describe, make, KResult};
use tessera_ir::op::UnaryOp;
use tessera_ir::{DType, Tensor, TensorData};

/// ReLU of a float: a NaN stays NaN.
#[inline(always)]
pub(crate) fn relu(x: f32) -> f32 {
    if x > 0.0 || x.is_nan() {
        x
    } else {
        0.0
    }
}

/// Sign of a float: ±1, and ±0 and NaN as they are.
#[inline(always)]
pub(crate) fn sign(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        x
    }
}

pub(crate) fn float_fn(kind: UnaryOp) -> KResult<fn(f32) -> f32> {
    Ok(match kind {
        UnaryOp::Identity => |x| x,
        UnaryOp::Neg => |x| -x,
        UnaryOp::Abs => f32::abs,
        UnaryOp::Sqrt => f32::sqrt,
        UnaryOp::Reciprocal => |x| 1.0 / x,
        UnaryOp::Exp => simd::exp,
        UnaryOp::Log => simd::ln,
        UnaryOp::Erf => erf,
        UnaryOp::Tanh => simd::tanh,
        UnaryOp::Sigmoid => simd::sigmoid,
        UnaryOp::Relu => relu,
        UnaryOp::Floor => f32::floor,
        UnaryOp::Ceil => f32::ceil,
        UnaryOp::Round => f32::round_ties_even,
        UnaryOp::Sin => super::trig::sin,
        UnaryOp::Cos => super::trig::cos,
        UnaryOp::Sign => sign,
        UnaryOp::Softplus => simd::softplus,
        UnaryOp::Silu => |x| x * simd::sigmoid(x),
        UnaryOp::Tan
        | UnaryOp::Asin
        | UnaryOp::Acos
        | UnaryOp::Atan
        | UnaryOp::Sinh
        | UnaryOp::Cosh
        | UnaryOp::Asinh
        | UnaryOp::Acosh
        | UnaryOp::Atanh => {
            return super::unary_math::float_fn(kind).ok_or_else(|| format!("{kind:?}: no form"))
        }
        UnaryOp::Not | UnaryOp::IsNaN => {
            return Err(format!("{kind:?} has no float-to-float form"))
        }
    })
}

/// The smallest f32 whose correctly rounded erf is 1.0 (erfc(x) ≤ 2⁻²⁵ from here on):
/// 3.919205904006958 = 0x1.f5a88ap+1.
const ERF_IS_ONE: f32 = 3.919_206;

/// erf(x) as a rational function of x² on x clamped to [-4, 4] (the f32 approximation of
/// Eigen/XLA; max abs error about 4e-7 against libm's erff, which it replaces because it is
/// branch-free and vectorises), exactly ±1 from [`ERF_IS_ONE`] on, where the correctly rounded
/// f32 erf is ±1 (the rational function alone saturates at ±0.9999999, which left
/// GELU(x) = x·0.5·(1 + erf(x/√2)) at about x·5e-8 instead of 0 for large negative x).
/// Both polynomials by fused multiply-adds ([`simd::fma`]), as `tanh`'s: inside
/// `simd::vectorized` half the operations (GELU in the epilogue of a `[128, 64]·[64, 256]`
/// MatMul: 32 → 23 µs), but a library call per step outside it, so callers keep it inside.
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    const ALPHA: [f32; 7] = [
        -2.726_142_3e-10,
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.954_6e-3,
        -1.609_603_3e-2,
    ];
    const BETA: [f32; 5] = [
        -1.456_607_2e-5,
        -2.133_740_6e-4,
        -1.682_827e-3,
        -7.373_329e-3,
        -1.426_474e-2,
    ];
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    // Horner from the first coefficient (as `simd::tanh`; x2 is finite or NaN).
    let p = ALPHA[1..]
        .iter()
        .fold(ALPHA[0], |acc, &c| simd::fma(acc, x2, c));
    let q = BETA[1..]
        .iter()
        .fold(BETA[0], |acc, &c| simd::fma(acc, x2, c));
    let y = x * p / q;
    // A select, not a branch: the loop still vectorises. NaN compares false and stays NaN.
    if x.abs() >= ERF_IS_ONE {
        1f32.copysign(x)
    } else {
        y
    }
}

fn int_fn(kind: UnaryOp) -> KResult<fn(i64) -> i64> {
    Ok(match kind {
        UnaryOp::Identity | UnaryOp::Floor | UnaryOp::Ceil | UnaryOp::Round => |x| x,
        UnaryOp::Neg => i64::wrapping_neg,
        UnaryOp::Abs => i64::wrapping_abs,
        UnaryOp::Relu => |x| x.max(0),
        UnaryOp::Sign => i64::signum,
        UnaryOp::Not => |x| !x,
        other => return Err(format!("{other:?} is not defined on integers")),
    })
}

/// `f` over `v` in the widest vector extension, as tensor data ([`simd::map`]).
#[inline(always)]
fn map_wide(v: &[f32], f: impl Fn(f32) -> f32) -> TensorData {
    TensorData::F32(simd::map(v, f))
}

/// Evaluates an elementwise unary op.
pub(crate) fn unary(kind: UnaryOp, x: &Tensor) -> KResult<Tensor> {
    let shape = x.shape.clone();
    match (&x.data, kind) {
        (TensorData::F32(v), UnaryOp::IsNaN) => make(
            DType::Bool,
            shape,
            TensorData::Bool(v.iter().map(|a| a.is_nan()).collect()),
        ),
        (TensorData::F32(v), UnaryOp::Erf) => make(x.dtype, shape, map_wide(v, erf)),
        // The cheap arithmetic kinds and the branch-free transcendental functions,
        // monomorphised so their loops vectorise (the generic arm calls a function pointer
        // per element: 1.3 ns per element for Neg).
        (TensorData::F32(v), UnaryOp::Neg) => make(
            x.dtype,
            shape,
            map_wide(
                v,
                #[inline(always)]
                |a| -a,
            ),
        ),
        (TensorData::F32(v), UnaryOp::Sqrt) => make(x.dtype, shape, map_wide(v, f32::sqrt)),
        (TensorData::F32(v), UnaryOp::Abs) => make(x.dtype, shape, map_wide(v, f32::abs)),
        (TensorData::F32(v), UnaryOp::Relu) => make(x.dtype, shape, map_wide(v, relu)),
        (TensorData::F32(v), UnaryOp::Reciprocal) => make(
            x.dtype,
            shape,
            map_wide(
                v,
                #[inline(always)]
                |a| 1.0 / a,
            ),
        ),
        // Rounding instructions exist from SSE4.1 on: in the baseline build these are
        // library calls (20-40x slower than in the wide loop).
        (TensorData::F32(v), UnaryOp::Floor) => make(x.dtype, shape, map_wide(v, f32::floor)),
        (TensorData::F32(v), UnaryOp::Ceil) => make(x.dtype, shape, map_wide(v, f32::ceil)),
        (TensorData::F32(v), UnaryOp::Round) => {
            make(x.dtype, shape, map_wide(v, f32::round_ties_even))
        }
        (TensorData::F32(v), UnaryOp::Sign) => make(
            x.dtype,
            shape,
            map_wide(
                v,
                #[inline(always)]
                |a| {
                    if a > 0.0 {
                        1.0
                    } else if a < 0.0 {
                        -1.0
                    } else {
                        a
                    }
                },
            ),
        ),
        // Branch-free where the reduction holds, then libm beyond it (`trig.rs`).
        (TensorData::F32(v), UnaryOp::Sin) => {
            let mut out = simd::map(v, super::trig::sin_reduced);
            super::trig::fix_large(v, &mut out, f32::sin);
            make(x.dtype, shape, TensorData::F32(out))
        }
        (TensorData::F32(v), UnaryOp::Cos) => {
            let mut out = simd::map(v, super::trig::cos_reduced);
            super::trig::fix_large(v, &mut out, f32::cos);
            make(x.dtype, shape, TensorData::F32(out))
        }
        (TensorData::F32(v), UnaryOp::Exp) => make(x.dtype, shape, map_wide(v, simd::exp)),
        (TensorData::F32(v), UnaryOp::Log) => make(x.dtype, shape, map_wide(v, simd::ln)),
        // A closure, not the function item: `<fn as Fn>::call` of a function this large is
        // not inlined into the wide loop (scripts/check_wide_loops.py found it).
        #[allow(clippy::redundant_closure)]
        (TensorData::F32(v), UnaryOp::Softplus) => make(
            x.dtype,
            shape,
            map_wide(
                v,
                #[inline(always)]
                |a| simd::softplus(a),
            ),
        ),
        (TensorData::F32(v), UnaryOp::Tanh) => make(x.dtype, shape, map_wide(v, simd::tanh)),
        (TensorData::F32(v), UnaryOp::Sigmoid) => make(x.dtype, shape, map_wide(v, simd::sigmoid)),
        (TensorData::F32(v), UnaryOp::Silu) => make(
            x.dtype,
            shape,
            map_wide(
                v,
                #[inline(always)]
                |a| a * simd::sigmoid(a),
            ),
        ),
        (TensorData::F32(v), k) => {
            if let Some(out) = super::unary_math::map(k, v) {
                return make(x.dtype, shape, TensorData::F32(out));
            }
            let f = float_fn(k)?;
            make(
                x.dtype,
                shape,
                TensorData::F32(v.iter().map(|&a| f(a)).collect()),
            )
        }
        (TensorData::I64(v), UnaryOp::IsNaN) => {
            make(DType::Bool, shape, TensorData::Bool(vec![false; v.len()]))
        }
        (TensorData::I64(v), k) => {
            let f = int_fn(k)?;
            let dt = x.dtype;
            make(
                dt,
                shape,
                TensorData::I64(v.iter().map(|&a| super::wrap_int(dt, f(a))).collect()),
            )
        }
        (TensorData::Bool(v), UnaryOp::Not) => make(
            DType::Bool,
            shape,
            TensorData::Bool(v.iter().map(|a| !a).collect()),
        ),
        (TensorData::Bool(v), UnaryOp::Identity) => {
            make(DType::Bool, shape, TensorData::Bool(v.clone()))
        }
        (TensorData::Bool(_), k) => Err(format!(
            "{k:?} is not defined on booleans ({})",
            describe(x)
        )),
    }
}

/// GELU: exact `0.5·x·(1 + erf(x/√2))`, or the tanh approximation
/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
pub(crate) fn gelu(tanh_approximation: bool, x: &Tensor) -> KResult<Tensor> {
    let v = x
        .as_f32()
        .ok_or_else(|| format!("expects a float input, got {}", describe(x)))?;
    let out = if tanh_approximation {
        simd::map(v, gelu_tanh)
    } else {
        simd::map(v, gelu_erf)
    };
    make(x.dtype, x.shape.clone(), TensorData::F32(out))
}

/// GELU, erf form: `0.5·x·(1 + erf(x/√2))` (the one arithmetic of the `Gelu` kernel, the
/// MatMul epilogue and the elementwise program).
#[inline(always)]
pub(crate) fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// GELU, tanh form: `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` (shared as [`gelu_erf`]).
#[inline(always)]
pub(crate) fn gelu_tanh(x: f32) -> f32 {
    let c = (2.0f32 / std::f32::consts::PI).sqrt();
    0.5 * x * (1.0 + simd::tanh(c * (x + 0.044715 * x * x * x)))
}

/// HardSigmoid `max(0, min(1, alpha·x + beta))`, times x when `swish` (HardSwish).
pub(crate) fn hard_sigmoid(alpha: f32, beta: f32, swish: bool, x: &Tensor) -> KResult<Tensor> {
    let v = x
        .as_f32()
        .ok_or_else(|| format!("expects a float input, got {}", describe(x)))?;
    #[inline(always)]
    fn hs(alpha: f32, beta: f32, a: f32) -> f32 {
        (alpha * a + beta).clamp(0.0, 1.0)
    }
    let out = if swish {
        simd::map(
            v,
            #[inline(always)]
            move |a| a * hs(alpha, beta, a),
        )
    } else {
        simd::map(
            v,
            #[inline(always)]
            move |a| hs(alpha, beta, a),
        )
    };
    make(x.dtype, x.shape.clone(), TensorData::F32(out))
}

/// `min(x, hi)` that lets NaN through.
pub(crate) fn hi_then<T: PartialOrd>(x: T, hi: T) -> T {
    if x > hi {
        hi
    } else {
        x
    }
}

/// Clamps to `[min, max]` (absent bound = unbounded); NaN passes through.
pub(crate) fn clip(min: Option<f32>, max: Option<f32>, x: &Tensor) -> KResult<Tensor> {
    let data = match &x.data {
        TensorData::F32(v) => {
            let lo = min.unwrap_or(f32::NEG_INFINITY);
            let hi = max.unwrap_or(f32::INFINITY);
            // numpy order: raise to lo first, then cap at hi (so min > max gives max).
            TensorData::F32(
                v.iter()
                    .map(|&a| hi_then(if a < lo { lo } else { a }, hi))
                    .collect(),
            )
        }
        TensorData::I64(v) => {
            let lo = min.map_or(i64::MIN, |m| m as i64);
            let hi = max.map_or(i64::MAX, |m| m as i64);
            TensorData::I64(v.iter().map(|&a| hi_then(a.max(lo), hi)).collect())
        }
        TensorData::Bool(_) => return Err(format!("expects a numeric input, got {}", describe(x))),
    };
    make(x.dtype, x.shape.clone(), data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_libm() {
        let mut worst = 0f32;
        for i in -80_000..=80_000 {
            let x = i as f32 * 1e-4;
            worst = worst.max((erf(x) - libm::erff(x)).abs());
        }
        assert!(worst < 1e-6, "max abs error {worst}");
        assert_eq!(erf(0.0), 0.0);
        assert!((erf(30.0) - 1.0).abs() < 1e-6 && (erf(-30.0) + 1.0).abs() < 1e-6);
    }

    /// erf is exactly ±1 where the correctly rounded f32 erf is (f64 erf rounded to f32), and
    /// below 1 just before; NaN stays NaN.
    #[test]
    fn erf_is_exactly_one_at_the_edges() {
        assert_eq!(ERF_IS_ONE.to_bits(), 0x407a_d445);
        for x in [
            ERF_IS_ONE,
            4.0,
            7.071_068,
            30.0,
            1e4,
            f32::MAX,
            f32::INFINITY,
        ] {
            assert_eq!(erf(x), 1.0, "erf({x})");
            assert_eq!(erf(-x), -1.0, "erf(-{x})");
            assert_eq!(libm::erf(x as f64) as f32, 1.0, "f64 erf({x})");
        }
        let below = f32::from_bits(ERF_IS_ONE.to_bits() - 1);
        assert_eq!(libm::erf(below as f64) as f32, 0.999_999_94);
        assert!(erf(below) < 1.0 && erf(-below) > -1.0);
        assert!(erf(f32::NAN).is_nan());
    }

    fn run(kind: UnaryOp, v: Vec<f32>) -> Vec<f32> {
        let n = v.len();
        unary(kind, &Tensor::f32(vec![n], v))
            .unwrap()
            .as_f32()
            .unwrap()
            .to_vec()
    }

    #[test]
    fn float_unaries() {
        assert_eq!(
            run(UnaryOp::Round, vec![0.5, 1.5, 2.5, -0.5, -1.6]),
            vec![0.0, 2.0, 2.0, -0.0, -2.0]
        );
        assert_eq!(
            run(UnaryOp::Relu, vec![-1.0, 0.0, 3.0]),
            vec![0.0, 0.0, 3.0]
        );
        assert_eq!(
            run(UnaryOp::Sign, vec![-2.0, 0.0, 7.0]),
            vec![-1.0, 0.0, 1.0]
        );
        let s = run(UnaryOp::Sigmoid, vec![0.0, -100.0, 100.0]);
        assert!(
            s[0] == 0.5 && s[1] >= 0.0 && s[1] < 1e-40 && s[2] == 1.0,
            "{s:?}"
        );
        // erf(1) = 0.8427007929497149
        assert!((run(UnaryOp::Erf, vec![1.0])[0] - 0.842_700_8).abs() < 1e-6);
        // softplus(100) must not overflow.
        assert!((run(UnaryOp::Softplus, vec![100.0, 0.0])[0] - 100.0).abs() < 1e-4);
        assert!((run(UnaryOp::Softplus, vec![0.0])[0] - std::f32::consts::LN_2).abs() < 1e-7);
    }

    #[test]
    fn int_and_bool_unaries() {
        let x = Tensor::i64(vec![3], vec![-3, 0, 4]);
        assert_eq!(
            unary(UnaryOp::Abs, &x).unwrap().as_i64().unwrap(),
            &[3, 0, 4]
        );
        assert_eq!(
            unary(UnaryOp::Neg, &x).unwrap().as_i64().unwrap(),
            &[3, 0, -4]
        );
        assert!(unary(UnaryOp::Exp, &x).is_err());
        let b = Tensor::bool(vec![2], vec![true, false]);
        assert_eq!(
            unary(UnaryOp::Not, &b).unwrap().as_bool().unwrap(),
            &[false, true]
        );
        let n = Tensor::f32(vec![2], vec![f32::NAN, 1.0]);
        assert_eq!(
            unary(UnaryOp::IsNaN, &n).unwrap().as_bool().unwrap(),
            &[true, false]
        );
    }

    #[test]
    fn gelu_exact_and_tanh() {
        let x = Tensor::f32(vec![3], vec![-1.0, 0.0, 1.0]);
        let e = gelu(false, &x).unwrap();
        // 0.5 * 1 * (1 + erf(1/sqrt 2)) = 0.8413447460685429
        let v = e.as_f32().unwrap();
        assert!(
            (v[2] - 0.841_344_7).abs() < 1e-6 && (v[0] + 0.158_655_3).abs() < 1e-6 && v[1] == 0.0
        );
        // Large |x|: erf(x/√2) is exactly ±1, so GELU is exactly 0 (-0.0) for large negative
        // x and x for large positive x, as the same formula in f64 rounded to f32 (numpy's
        // reference gives the same -0.0: 1 + erf(x/√2) cannot resolve the true -7.6e-23 at -10).
        let xs = [-10.0f32, -30.0, -1e4, 10.0, 30.0, 1e4];
        let g = gelu(false, &Tensor::f32(vec![6], xs.to_vec())).unwrap();
        assert_eq!(g.as_f32().unwrap(), &[0.0, 0.0, 0.0, 10.0, 30.0, 1e4]);
        for (&x, &y) in xs.iter().zip(g.as_f32().unwrap()) {
            let x64 = x as f64;
            let want =
                (0.5 * x64 * (1.0 + libm::erf(x64 * std::f64::consts::FRAC_1_SQRT_2))) as f32;
            assert_eq!(y.to_bits(), want.to_bits(), "GELU({x})");
        }
        let t = gelu(true, &x).unwrap();
        // tanh form at 1: 0.5 * (1 + tanh(0.7978845608 * 1.044715)) = 0.8411919906
        assert!((t.as_f32().unwrap()[2] - 0.841_192).abs() < 1e-6);
    }

    #[test]
    fn clip_bounds() {
        let x = Tensor::f32(vec![4], vec![-5.0, 0.5, 5.0, f32::NAN]);
        let c = clip(Some(-1.0), Some(1.0), &x).unwrap();
        let v = c.as_f32().unwrap();
        assert_eq!(&v[..3], &[-1.0, 0.5, 1.0]);
        assert!(v[3].is_nan());
        // min > max: every element becomes max (numpy / ONNX).
        let inv = clip(Some(2.0), Some(1.0), &Tensor::f32(vec![2], vec![0.0, 5.0])).unwrap();
        assert_eq!(inv.as_f32().unwrap(), &[1.0, 1.0]);
        let y = clip(None, Some(2.0), &Tensor::i64(vec![2], vec![1, 9])).unwrap();
        assert_eq!(y.as_i64().unwrap(), &[1, 2]);
    }
}
