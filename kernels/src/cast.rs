//! Cast between dtypes (numpy semantics: float→int truncates toward zero, integers wrap to
//! the target width, f16/bf16 round through the `half` crate).
use super::wrap_int;
use half::{bf16, f16};
use tessera_ir::{DType, Tensor, TensorData};

/// Rounds an f32 to the precision of a float dtype (f16/bf16 through `half`; f32/f64 kept).
pub fn round_float(to: DType, x: f32) -> f32 {
    match to {
        DType::F16 => f16::from_f32(x).to_f32(),
        DType::BF16 => bf16::from_f32(x).to_f32(),
        _ => x,
    }
}

/// Float to integer dtype: truncation toward zero, then wrap to the target width.
fn float_to_int(to: DType, x: f32) -> i64 {
    if x.is_nan() {
        // numpy gives INT_MIN for NaN on x86; wrap keeps that faithful per width.
        return wrap_int(to, i64::MIN);
    }
    if to == DType::U8 || to == DType::I8 || to == DType::I16 || to == DType::I32 {
        wrap_int(to, x as i64)
    } else {
        x as i64
    }
}

/// Converts a tensor to dtype `to`. Never fails: every pair of supported dtypes converts.
pub fn cast_tensor(x: &Tensor, to: DType) -> Tensor {
    let data = match (&x.data, to) {
        (TensorData::F32(v), t) if t.is_float() => {
            TensorData::F32(if matches!(t, DType::F16 | DType::BF16) {
                v.iter().map(|&a| round_float(t, a)).collect()
            } else {
                v.clone()
            })
        }
        (TensorData::F32(v), DType::Bool) => {
            TensorData::Bool(v.iter().map(|&a| a != 0.0).collect())
        }
        (TensorData::F32(v), t) => TensorData::I64(v.iter().map(|&a| float_to_int(t, a)).collect()),
        (TensorData::I64(v), t) if t.is_float() => {
            TensorData::F32(v.iter().map(|&a| round_float(t, a as f32)).collect())
        }
        (TensorData::I64(v), DType::Bool) => TensorData::Bool(v.iter().map(|&a| a != 0).collect()),
        (TensorData::I64(v), t) => TensorData::I64(v.iter().map(|&a| wrap_int(t, a)).collect()),
        (TensorData::Bool(v), t) if t.is_float() => {
            TensorData::F32(v.iter().map(|&a| a as u8 as f32).collect())
        }
        (TensorData::Bool(v), DType::Bool) => TensorData::Bool(v.clone()),
        (TensorData::Bool(v), _) => TensorData::I64(v.iter().map(|&a| a as i64).collect()),
    };
    Tensor {
        dtype: to,
        shape: x.shape.clone(),
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_to_int_truncates_and_wraps() {
        let x = Tensor::f32(vec![4], vec![1.9, -1.9, 300.0, -1.0]);
        let y = cast_tensor(&x, DType::U8);
        assert_eq!(y.as_i64().unwrap(), &[1, 255, 44, 255]);
        let z = cast_tensor(&x, DType::I64);
        assert_eq!(z.as_i64().unwrap(), &[1, -1, 300, -1]);
    }

    #[test]
    fn int_to_narrow_int_wraps() {
        let x = Tensor::i64(vec![3], vec![128, 1 << 31, -129]);
        assert_eq!(
            cast_tensor(&x, DType::I8).as_i64().unwrap(),
            &[-128, 0, 127]
        );
        assert_eq!(
            cast_tensor(&x, DType::I32).as_i64().unwrap(),
            &[128, i32::MIN as i64, -129]
        );
    }

    #[test]
    fn f16_and_bf16_round() {
        let x = Tensor::f32(vec![2], vec![1.0 + 1.0 / 4096.0, 65520.0]);
        let h = cast_tensor(&x, DType::F16);
        assert_eq!(h.as_f32().unwrap()[0], 1.0);
        assert!(h.as_f32().unwrap()[1].is_infinite());
        let b = cast_tensor(&Tensor::f32(vec![1], vec![1.0 + 1.0 / 256.0]), DType::BF16);
        // 1 + 2^-8 is a tie between 1 and 1 + 2^-7 in bf16; round-to-even gives 1.
        assert_eq!(b.as_f32().unwrap(), &[1.0]);
        assert_eq!(b.dtype, DType::BF16);
    }

    #[test]
    fn bool_conversions() {
        let x = Tensor::f32(vec![3], vec![0.0, 2.5, f32::NAN]);
        assert_eq!(
            cast_tensor(&x, DType::Bool).as_bool().unwrap(),
            &[false, true, true]
        );
        let b = Tensor::bool(vec![2], vec![true, false]);
        assert_eq!(cast_tensor(&b, DType::F32).as_f32().unwrap(), &[1.0, 0.0]);
        assert_eq!(cast_tensor(&b, DType::I32).as_i64().unwrap(), &[1, 0]);
    }
}
