//! The trigonometric and hyperbolic unary ops beyond Sin / Cos: Tan, Asin, Acos, Atan,
//! Sinh, Cosh, Asinh, Acosh, Atanh (ONNX: <https://onnx.ai/onnx/operators/onnx__Tan.html>
//! etc.), on floats only.
//!
//! Each is a C library f32 function (within 2 ulp of the correctly rounded result, as
//! onnxruntime's `std::` calls): the standard library's for the circular functions and sinh /
//! cosh, the `libm` crate's for asinh / acosh / atanh (the standard library spells those as
//! logarithm formulas that lose a few ulp near 1: acosh(1.02) was 3 ulp off). Each is mapped
//! over the slice by [`simd::map`] so that the loop runs in the wide build; the functions
//! themselves are library calls per element.
use super::simd;
use tessera_ir::op::UnaryOp;

/// The scalar function of one of this file's kinds, or `None` for any other kind.
pub(crate) fn float_fn(kind: UnaryOp) -> Option<fn(f32) -> f32> {
    Some(match kind {
        UnaryOp::Tan => f32::tan,
        UnaryOp::Asin => f32::asin,
        UnaryOp::Acos => f32::acos,
        UnaryOp::Atan => f32::atan,
        UnaryOp::Sinh => f32::sinh,
        UnaryOp::Cosh => f32::cosh,
        UnaryOp::Asinh => libm::asinhf,
        UnaryOp::Acosh => libm::acoshf,
        UnaryOp::Atanh => libm::atanhf,
        _ => return None,
    })
}

/// `kind` over every element of `v`, or `None` when `kind` is not one of this file's.
///
/// One monomorphised [`simd::map`] per kind (not a function pointer per element).
pub(crate) fn map(kind: UnaryOp, v: &[f32]) -> Option<Vec<f32>> {
    Some(match kind {
        UnaryOp::Tan => simd::map(v, f32::tan),
        UnaryOp::Asin => simd::map(v, f32::asin),
        UnaryOp::Acos => simd::map(v, f32::acos),
        UnaryOp::Atan => simd::map(v, f32::atan),
        UnaryOp::Sinh => simd::map(v, f32::sinh),
        UnaryOp::Cosh => simd::map(v, f32::cosh),
        UnaryOp::Asinh => simd::map(v, libm::asinhf),
        UnaryOp::Acosh => simd::map(v, libm::acoshf),
        UnaryOp::Atanh => simd::map(v, libm::atanhf),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ir::op::UnaryAttrs;
    use tessera_ir::{Op, Tensor};

    const KINDS: [UnaryOp; 9] = [
        UnaryOp::Tan,
        UnaryOp::Asin,
        UnaryOp::Acos,
        UnaryOp::Atan,
        UnaryOp::Sinh,
        UnaryOp::Cosh,
        UnaryOp::Asinh,
        UnaryOp::Acosh,
        UnaryOp::Atanh,
    ];

    /// f64 libm, rounded to f32: the reference each kind must match to within 2 ulp.
    fn reference(kind: UnaryOp, x: f32) -> f32 {
        let x = f64::from(x);
        (match kind {
            UnaryOp::Tan => libm::tan(x),
            UnaryOp::Asin => libm::asin(x),
            UnaryOp::Acos => libm::acos(x),
            UnaryOp::Atan => libm::atan(x),
            UnaryOp::Sinh => libm::sinh(x),
            UnaryOp::Cosh => libm::cosh(x),
            UnaryOp::Asinh => libm::asinh(x),
            UnaryOp::Acosh => libm::acosh(x),
            UnaryOp::Atanh => libm::atanh(x),
            other => unreachable!("{other:?} is not a kind of this file"),
        }) as f32
    }

    fn ulps(a: f32, b: f32) -> u32 {
        if a.is_nan() && b.is_nan() || a == b {
            return 0;
        }
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    /// Through the op's kernel (`eval`), on inputs inside and at the edges of each domain:
    /// within 2 ulp of f64 libm, NaN outside the domain (asin(2), acosh(0.5), atanh(2)),
    /// ±inf at atanh(±1).
    #[test]
    fn matches_f64_libm_over_the_domains() {
        let xs: Vec<f32> = (-200..=200)
            .map(|i| i as f32 * 0.01)
            .chain([-9.5, -3.0, 2.5, 3.0, 9.5, 40.0, -40.0, 1e-6, -1e-6, 0.0])
            .collect();
        for kind in KINDS {
            let t = Tensor::f32(vec![xs.len()], xs.clone());
            let out = crate::eval(&Op::Unary(UnaryAttrs { kind }), &[&t]).unwrap();
            let got = out[0].as_f32().unwrap();
            for (&x, &y) in xs.iter().zip(got) {
                let want = reference(kind, x);
                assert!(ulps(y, want) <= 2, "{kind:?}({x}) = {y}, f64 libm {want}");
            }
        }
        let edge = |kind, x: f32| {
            let t = Tensor::f32(vec![1], vec![x]);
            crate::eval(&Op::Unary(UnaryAttrs { kind }), &[&t]).unwrap()[0]
                .as_f32()
                .unwrap()[0]
        };
        assert!(edge(UnaryOp::Asin, 2.0).is_nan());
        assert!(edge(UnaryOp::Acosh, 0.5).is_nan());
        assert!(edge(UnaryOp::Atanh, 2.0).is_nan());
        assert_eq!(edge(UnaryOp::Atanh, 1.0), f32::INFINITY);
        assert_eq!(edge(UnaryOp::Atanh, -1.0), f32::NEG_INFINITY);
        assert_eq!(edge(UnaryOp::Cosh, 0.0), 1.0);
    }

    /// The scalar functions the fused elementwise program uses are the same as the maps.
    #[test]
    fn scalar_functions_agree_with_the_maps() {
        let xs = [-0.9f32, -0.3, 0.0, 0.4, 0.99, 1.5, 3.0];
        for kind in KINDS {
            let f = float_fn(kind).unwrap();
            let m = map(kind, &xs).unwrap();
            for (&x, &y) in xs.iter().zip(&m) {
                assert_eq!(f(x).to_bits(), y.to_bits(), "{kind:?}({x})");
            }
        }
        assert!(float_fn(UnaryOp::Exp).is_none() && map(UnaryOp::Exp, &xs).is_none());
    }

    /// Integer and boolean inputs are errors, not panics.
    #[test]
    fn integers_are_refused() {
        let t = Tensor::i64(vec![2], vec![0, 1]);
        let e = crate::eval(
            &Op::Unary(UnaryAttrs {
                kind: UnaryOp::Atan,
            }),
            &[&t],
        );
        assert!(e.unwrap_err().to_string().contains("Atan"));
    }
}
