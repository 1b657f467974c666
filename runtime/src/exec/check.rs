//! Comparing a partitioned run's outputs with the reference executor's.
//!
//! Error measure, per output: `max_abs = max_i |a_i − b_i|` and
//! `max_rel = max_abs / max(‖b‖∞, ABS_FLOOR)` with `ABS_FLOOR = 1e-6` — the error relative to
//! the output's largest reference magnitude (the abs floor keeps all-zero outputs from
//! dividing by zero). This normwise measure is used rather than a per-element ratio because a
//! partitioned run sums the same products in a different order: an element that cancels to
//! nearly zero has an absolute error at the scale of its addends, not of itself. An output
//! passes when `max_rel <= tolerance` (default [`DEFAULT_TOLERANCE`]); integer and boolean
//! outputs must match exactly; a shape or dtype mismatch always fails.
use tessera_ir::Tensor;

/// Default relative tolerance of `--check`.
pub const DEFAULT_TOLERANCE: f64 = 1e-5;

/// Denominator floor of the relative error.
pub const ABS_FLOOR: f64 = 1e-6;

/// Comparison of one output with the reference.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputDiff {
    /// Output name.
    pub name: String,
    /// Largest absolute difference (infinite on a shape mismatch).
    pub max_abs: f64,
    /// `max_abs / max(‖reference‖∞, ABS_FLOOR)` (infinite on a shape mismatch).
    pub max_rel: f64,
    /// Whether it is within tolerance.
    pub ok: bool,
}

/// Compares `got` with `want` (same order), naming them with `names`.
pub fn compare_outputs(
    names: &[String],
    got: &[Tensor],
    want: &[Tensor],
    tolerance: f64,
) -> Vec<OutputDiff> {
    names
        .iter()
        .zip(got.iter().zip(want))
        .map(|(name, (a, b))| {
            let (max_abs, max_rel) = diff(a, b);
            let exact = !b.dtype.is_float();
            let ok = if exact {
                max_abs == 0.0
            } else {
                max_rel <= tolerance
            };
            OutputDiff {
                name: name.clone(),
                max_abs,
                max_rel,
                ok,
            }
        })
        .collect()
}

fn diff(a: &Tensor, b: &Tensor) -> (f64, f64) {
    if a.shape != b.shape || a.dtype.is_float() != b.dtype.is_float() {
        return (f64::INFINITY, f64::INFINITY);
    }
    let (av, bv) = (a.to_f64_vec(), b.to_f64_vec());
    let mut max_abs = 0.0f64;
    let mut scale = 0.0f64;
    for (x, y) in av.iter().zip(&bv) {
        let d = (x - y).abs();
        // NaN in either side counts as an infinite error.
        max_abs = if d.is_nan() {
            f64::INFINITY
        } else {
            max_abs.max(d)
        };
        scale = scale.max(y.abs());
    }
    (max_abs, max_abs / scale.max(ABS_FLOOR))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_normwise_relative_error() {
        let want = Tensor::f32(vec![3], vec![2.0, -4.0, 0.0]);
        let got = Tensor::f32(vec![3], vec![2.0, -4.0, 4e-5]);
        let d = compare_outputs(
            &["y".into()],
            std::slice::from_ref(&got),
            std::slice::from_ref(&want),
            1e-5,
        );
        assert!((d[0].max_abs - 4e-5).abs() < 1e-9);
        assert!((d[0].max_rel - 1e-5).abs() < 1e-9);
        let d = compare_outputs(&["y".into()], &[got], std::slice::from_ref(&want), 5e-6);
        assert!(!d[0].ok);
        let nan = Tensor::f32(vec![3], vec![f32::NAN, 0.0, 0.0]);
        assert!(!compare_outputs(&["y".into()], &[nan], std::slice::from_ref(&want), 1.0)[0].ok);
        let short = Tensor::f32(vec![2], vec![2.0, -4.0]);
        assert!(!compare_outputs(&["y".into()], &[short], &[want], 1.0)[0].ok);
        let i = Tensor::i64(vec![1], vec![3]);
        let j = Tensor::i64(vec![1], vec![4]);
        assert!(!compare_outputs(&["k".into()], &[i], &[j], 1.0)[0].ok);
    }
}
