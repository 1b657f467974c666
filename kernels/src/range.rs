//! ONNX Range (<https://onnx.ai/onnx/operators/onnx__Range.html>): `start, start + delta, …`
//! while short of `limit`, `max(ceil((limit - start) / delta), 0)` elements.
//!
//! The count is computed without overflow (i128 for integers, f64 for floats) and refused
//! with a clear error when it is not finite or does not fit a tensor, as are a zero delta and
//! non-finite float inputs (numpy's `arange`, the reference, refuses those too).
use super::{describe, make, KResult, KernelError};
use tessera_ir::{check_tensor_size, DType, Tensor, TensorData};

/// The most elements a Range output may have: `Vec` refuses more than `isize::MAX` bytes,
/// and the widest storage (i64) takes 8 bytes an element.
const MAX_ELEMENTS: u128 = (isize::MAX as u128) / 8;

/// Evaluates Range on three one-element tensors of the same storage class (the output has
/// `start`'s dtype). Errors name Range and the three values.
pub fn range(start: &Tensor, limit: &Tensor, delta: &Tensor) -> Result<Tensor, KernelError> {
    range_inner(start, limit, delta).map_err(|msg| KernelError {
        op: "Range".into(),
        msg,
    })
}

fn range_inner(start: &Tensor, limit: &Tensor, delta: &Tensor) -> KResult<Tensor> {
    for (what, t) in [("start", start), ("limit", limit), ("delta", delta)] {
        if t.numel() != 1 {
            return Err(format!("{what} must be a scalar, got {}", describe(t)));
        }
    }
    let data = match (&start.data, &limit.data, &delta.data) {
        (TensorData::I64(s), TensorData::I64(l), TensorData::I64(d)) => {
            TensorData::I64(int_range(s[0], l[0], d[0], start.dtype)?)
        }
        (TensorData::F32(s), TensorData::F32(l), TensorData::F32(d)) => {
            TensorData::F32(float_range(s[0], l[0], d[0], start.dtype)?)
        }
        _ => {
            return Err(format!(
                "start, limit and delta must share a numeric dtype, got {}, {} and {}",
                describe(start),
                describe(limit),
                describe(delta)
            ))
        }
    };
    let n = match &data {
        TensorData::I64(v) => v.len(),
        TensorData::F32(v) => v.len(),
        TensorData::Bool(v) => v.len(),
    };
    make(start.dtype, vec![n], data)
}

/// A vector with room for `n` elements of `dtype`, or an error naming the count: beyond what
/// a `Vec` can hold, or over the per-tensor cap ([`tessera_ir::MAX_TENSOR_BYTES`]), checked
/// before anything is allocated.
fn alloc<T>(n: u128, dtype: DType, values: &str) -> KResult<Vec<T>> {
    let too_many = || format!("{values} gives {n} elements, more than a tensor can hold");
    if n > MAX_ELEMENTS {
        return Err(too_many());
    }
    // n ≤ isize::MAX / 8 fits usize.
    check_tensor_size(&[n as usize], dtype).map_err(|e| format!("{values}: {e}"))?;
    let mut v = Vec::new();
    // n ≤ isize::MAX / 8 fits usize.
    v.try_reserve_exact(n as usize).map_err(|_| too_many())?;
    Ok(v)
}

/// Integer Range: the count `ceil((l - s) / d)` in i128, exact for every i64 input.
fn int_range(s: i64, l: i64, d: i64, dtype: DType) -> KResult<Vec<i64>> {
    let values = format!("start {s}, limit {l}, delta {d}");
    if d == 0 {
        return Err(format!("delta is 0 ({values})"));
    }
    let (span, step) = (i128::from(l) - i128::from(s), i128::from(d));
    let n = if (span > 0) == (step > 0) && span != 0 {
        // Both non-zero with the same sign: ceil of a positive quotient. ≤ 2^64 - 1.
        span.unsigned_abs().div_ceil(step.unsigned_abs())
    } else {
        0
    };
    let mut v = alloc(n, dtype, &values)?;
    // Every element lies in [s, l) (or (l, s]), so it fits i64; the add after the last
    // element may overflow, and is never used.
    let mut x = s;
    for _ in 0..n {
        v.push(x);
        x = x.wrapping_add(d);
    }
    Ok(v)
}

/// Float Range: the count `ceil((l - s) / d)` in f64 (as numpy's `arange`), the elements
/// `s + i·d` in f32.
fn float_range(s: f32, l: f32, d: f32, dtype: DType) -> KResult<Vec<f32>> {
    let values = format!("start {s}, limit {l}, delta {d}");
    if !(s.is_finite() && l.is_finite() && d.is_finite()) {
        return Err(format!("start, limit and delta must be finite ({values})"));
    }
    if d == 0.0 {
        return Err(format!("delta is 0 ({values})"));
    }
    // Finite: |l - s| ≤ 2·f32::MAX and |d| ≥ the smallest subnormal keep q below 1e84.
    let q = ((l as f64 - s as f64) / d as f64).ceil().max(0.0);
    if q > MAX_ELEMENTS as f64 {
        return Err(format!(
            "{values} gives {q:e} elements, more than a tensor can hold"
        ));
    }
    let n = q as usize;
    let mut v = alloc(n as u128, dtype, &values)?;
    v.extend((0..n).map(|i| s + i as f32 * d));
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ir::DType;

    fn ints(s: i64, l: i64, d: i64) -> Result<Vec<i64>, String> {
        let t = |v| Tensor::i64(vec![], vec![v]);
        range(&t(s), &t(l), &t(d))
            .map(|r| r.as_i64().unwrap().to_vec())
            .map_err(|e| e.to_string())
    }

    fn floats(s: f32, l: f32, d: f32) -> Result<Vec<f32>, String> {
        let t = |v| Tensor::f32(vec![], vec![v]);
        range(&t(s), &t(l), &t(d))
            .map(|r| r.as_f32().unwrap().to_vec())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn onnx_examples() {
        assert_eq!(floats(3.0, 9.0, 3.0).unwrap(), vec![3.0, 6.0]);
        assert_eq!(ints(10, 4, -3).unwrap(), vec![10, 7]);
        assert_eq!(ints(0, 5, 1).unwrap(), vec![0, 1, 2, 3, 4]);
        assert_eq!(ints(5, 0, 1).unwrap(), Vec::<i64>::new());
        assert_eq!(floats(1.0, 5.0, 2.0).unwrap(), vec![1.0, 3.0]);
        assert_eq!(floats(0.0, -1.0, 0.25).unwrap(), Vec::<f32>::new());
        // The dtype is start's (an i32 Range stays i32).
        let t = |v| Tensor::new(DType::I32, vec![], TensorData::I64(vec![v])).unwrap();
        let r = range(&t(-2), &t(2), &t(2)).unwrap();
        assert_eq!(
            (r.dtype, r.as_i64().unwrap()),
            (DType::I32, &[-2i64, 0][..])
        );
    }

    /// Counts near the i64 limits are exact (the f64 count and `s + i·d` used to overflow or
    /// return an empty tensor).
    #[test]
    fn integer_counts_at_the_i64_limits() {
        assert_eq!(
            ints(i64::MAX - 2, i64::MAX, 1).unwrap(),
            vec![i64::MAX - 2, i64::MAX - 1]
        );
        assert_eq!(
            ints(i64::MAX - 5, i64::MAX, 3).unwrap(),
            vec![i64::MAX - 5, i64::MAX - 2]
        );
        assert_eq!(
            ints(i64::MIN, i64::MAX, i64::MAX).unwrap(),
            vec![i64::MIN, -1, i64::MAX - 1]
        );
        assert_eq!(
            ints(i64::MAX, i64::MIN, i64::MIN).unwrap(),
            vec![i64::MAX, -1]
        );
        assert_eq!(
            ints(i64::MIN + 1, i64::MIN, -1).unwrap(),
            vec![i64::MIN + 1]
        );
        assert_eq!(ints(i64::MAX, 0, 1).unwrap(), Vec::<i64>::new());
    }

    #[test]
    fn refused_ranges_name_range_and_the_values() {
        assert_eq!(
            ints(0, 10, 0).unwrap_err(),
            "Range: delta is 0 (start 0, limit 10, delta 0)"
        );
        assert_eq!(
            ints(i64::MIN, i64::MAX, 1).unwrap_err(),
            "Range: start -9223372036854775808, limit 9223372036854775807, delta 1 gives \
             18446744073709551615 elements, more than a tensor can hold"
        );
        assert_eq!(
            floats(0.0, 1.0, 0.0).unwrap_err(),
            "Range: delta is 0 (start 0, limit 1, delta 0)"
        );
        for (s, l, d) in [
            (f32::NAN, 1.0, 1.0),
            (0.0, f32::INFINITY, 1.0),
            (f32::NEG_INFINITY, 0.0, 1.0),
            (0.0, 1.0, f32::NAN),
        ] {
            let e = floats(s, l, d).unwrap_err();
            assert!(
                e.starts_with("Range: start, limit and delta must be finite"),
                "{e}"
            );
        }
        // Counts far beyond any tensor, from a tiny delta and from a huge span.
        assert_eq!(
            floats(-f32::MAX, f32::MAX, 1e-45).unwrap_err(),
            "Range: start -340282350000000000000000000000000000000, limit \
             340282350000000000000000000000000000000, delta 0.000000000000000000000000000000\
             000000000000001 gives 4.8566719410840996e83 elements, more than a tensor can hold"
        );
        assert_eq!(
            floats(0.0, 3e38, 1.0).unwrap_err(),
            "Range: start 0, limit 300000000000000000000000000000000000000, delta 1 gives \
             3.0000000054977558e38 elements, more than a tensor can hold"
        );
        let b = Tensor::bool(vec![], vec![true]);
        let e = range(&b, &b, &b).unwrap_err().to_string();
        assert!(
            e.starts_with("Range: start, limit and delta must share"),
            "{e}"
        );
        let v = Tensor::i64(vec![2], vec![0, 1]);
        let one = Tensor::i64(vec![], vec![1]);
        let e = range(&one, &v, &one).unwrap_err().to_string();
        assert_eq!(e, "Range: limit must be a scalar, got i64[2]");
    }
}
