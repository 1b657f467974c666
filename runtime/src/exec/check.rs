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
//!
//! A plan that quantises activations ([`tessera_ir::Op::Quantize`]) rounds to a grid: where
//! a value lands within a rounding error of the midpoint between two grid points, any
//! reordering of the sums before it (an integer GEMM, a row-parallel split) moves it to the
//! neighbouring point, and everything downstream of it by a quantum. onnxruntime differs
//! from its own float path the same way. For such plans ([`compare_outputs_quantised`]) an
//! output also passes when at most [`QUANTISED_OFF_SHARE`] of its elements are outside the
//! tolerance.
use tessera_ir::Tensor;

/// Default relative tolerance of `--check`.
pub const DEFAULT_TOLERANCE: f64 = 1e-5;

/// Denominator floor of the relative error.
pub const ABS_FLOOR: f64 = 1e-6;

/// Largest share of elements outside the tolerance in an output of a plan that quantises
/// activations.
pub const QUANTISED_OFF_SHARE: f64 = 0.01;

/// Comparison of one output with the reference.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputDiff {
    /// Output name.
    pub name: String,
    /// Largest absolute difference (infinite on a shape mismatch).
    pub max_abs: f64,
    /// `max_abs / max(‖reference‖∞, ABS_FLOOR)` (infinite on a shape mismatch).
    pub max_rel: f64,
    /// Share of elements whose difference exceeds the tolerance times the reference's
    /// largest magnitude (1 on a shape mismatch).
    pub off_share: f64,
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
    compare(names, got, want, tolerance, None)
}

/// [`compare_outputs`] for a plan that quantises activations: an output also passes with
/// at most [`QUANTISED_OFF_SHARE`] of its elements outside the tolerance.
pub fn compare_outputs_quantised(
    names: &[String],
    got: &[Tensor],
    want: &[Tensor],
    tolerance: f64,
) -> Vec<OutputDiff> {
    compare(names, got, want, tolerance, Some(QUANTISED_OFF_SHARE))
}

fn compare(
    names: &[String],
    got: &[Tensor],
    want: &[Tensor],
    tolerance: f64,
    off_share: Option<f64>,
) -> Vec<OutputDiff> {
    names
        .iter()
        .zip(got.iter().zip(want))
        .map(|(name, (a, b))| {
            let d = diff(a, b, tolerance);
            let exact = !b.dtype.is_float();
            let ok = if exact {
                d.max_abs == 0.0
            } else {
                d.max_rel <= tolerance || off_share.is_some_and(|s| d.off_share <= s)
            };
            OutputDiff {
                name: name.clone(),
                max_abs: d.max_abs,
                max_rel: d.max_rel,
                off_share: d.off_share,
                ok,
            }
        })
        .collect()
}

struct Diff {
    max_abs: f64,
    max_rel: f64,
    off_share: f64,
}

fn diff(a: &Tensor, b: &Tensor, tolerance: f64) -> Diff {
    if a.shape != b.shape || a.dtype.is_float() != b.dtype.is_float() {
        return Diff {
            max_abs: f64::INFINITY,
            max_rel: f64::INFINITY,
            off_share: 1.0,
        };
    }
    let (av, bv) = (a.to_f64_vec(), b.to_f64_vec());
    let mut scale = 0.0f64;
    let diffs: Vec<f64> = av
        .iter()
        .zip(&bv)
        .map(|(x, y)| {
            scale = scale.max(y.abs());
            // NaN in either side counts as an infinite error.
            let d = (x - y).abs();
            if d.is_nan() {
                f64::INFINITY
            } else {
                d
            }
        })
        .collect();
    let max_abs = diffs.iter().fold(0.0f64, |m, &d| m.max(d));
    let scale = scale.max(ABS_FLOOR);
    let off = diffs.iter().filter(|&&d| d > tolerance * scale).count();
    Diff {
        max_abs,
        max_rel: max_abs / scale,
        off_share: off as f64 / diffs.len().max(1) as f64,
    }
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
        // One element of 200 off: fails plainly, passes for a quantised plan.
        let mut v = vec![1.0f32; 200];
        let want = Tensor::f32(vec![200], v.clone());
        v[7] = 1.5;
        let got = Tensor::f32(vec![200], v);
        let names = ["q".to_string()];
        let plain = compare_outputs(
            &names,
            std::slice::from_ref(&got),
            std::slice::from_ref(&want),
            1e-5,
        );
        assert!(!plain[0].ok);
        assert_eq!(plain[0].off_share, 0.005);
        let q = compare_outputs_quantised(&names, &[got], std::slice::from_ref(&want), 1e-5);
        assert!(q[0].ok);
        let mut v = vec![1.0f32; 200];
        v[..3].fill(2.0);
        let three = Tensor::f32(vec![200], v);
        assert!(!compare_outputs_quantised(&names, &[three], &[want], 1e-5)[0].ok);
        let i = Tensor::i64(vec![1], vec![3]);
        let j = Tensor::i64(vec![1], vec![4]);
        assert!(!compare_outputs(&["k".into()], &[i], &[j], 1.0)[0].ok);
    }
}
