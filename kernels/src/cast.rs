//! Cast between dtypes (numpy semantics: float→int truncates toward zero, integers wrap to
//! the target width, f16/bf16 round through the `half` crate).
use super::{simd, wrap_int};
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

/// `x` rounded to bfloat16 (to nearest, ties to even; NaN stays NaN): the arithmetic of
/// `half::bf16::from_f32`, written on the bits so that [`simd::map`] vectorises it.
#[inline(always)]
fn round_bf16(x: f32) -> f32 {
    let b = x.to_bits();
    let r = (b.wrapping_add(0x7FFF + ((b >> 16) & 1))) & 0xFFFF_0000;
    if x.is_nan() {
        x
    } else {
        f32::from_bits(r)
    }
}

/// Every element of `v` rounded to float16 precision (to nearest, ties to even; overflow to
/// ±∞): the F16C conversion instructions 8 at a time where the CPU has them (35× faster
/// than one `half` call per element), `half` elsewhere and for the tail.
fn round_f16_slice(v: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0f32; v.len()];
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU supports F16C and AVX (checked just above).
        done = unsafe { round_f16_f16c(v, &mut out) };
    }
    for (o, &a) in out[done..].iter_mut().zip(&v[done..]) {
        *o = f16::from_f32(a).to_f32();
    }
    out
}

/// Rounds the whole 8-element chunks of `v` into `out` with F16C; returns how many it did.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn round_f16_f16c(v: &[f32], out: &mut [f32]) -> usize {
    use std::arch::x86_64::{
        _mm256_cvtph_ps, _mm256_cvtps_ph, _mm256_loadu_ps, _mm256_storeu_ps,
        _MM_FROUND_TO_NEAREST_INT,
    };
    let n = v.len() / 8 * 8;
    for (src, dst) in v[..n].chunks_exact(8).zip(out[..n].chunks_exact_mut(8)) {
        // SAFETY: `src` and `dst` hold 8 f32 each (chunks_exact); unaligned loads/stores.
        unsafe {
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(src.as_ptr()));
            _mm256_storeu_ps(dst.as_mut_ptr(), _mm256_cvtph_ps(h));
        }
    }
    n
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

/// Whether [`cast_through`] handles integer dtype `to`.
pub fn cast_through_supported(to: DType) -> bool {
    matches!(to, DType::U8 | DType::I8 | DType::I16 | DType::I32)
}

/// `Cast(Cast(x, to), f32)` of an f32 `x` for an integer `to` ([`cast_through_supported`]):
/// truncation toward zero, wrapped to the width, exactly as [`cast_tensor`] converts, with
/// a branch-free fast path for values the width holds (every element of a clipped
/// quantised activation).
#[inline(always)]
pub fn cast_through(to: DType, lo: f32, hi: f32, x: f32) -> f32 {
    // `+ 0.0` turns the −0 of a truncated (−1, 0) into the +0 the integer comes back as.
    let t = x.trunc() + 0.0;
    if t >= lo && t <= hi {
        t
    } else {
        float_to_int(to, x) as f32
    }
}

/// The range `[lo, hi]` of integer dtype `to` as f32 (exact for widths up to 24 bits; for
/// int32 the f32 values inside ±2^31, whose truncations int32 holds).
pub fn int_range_f32(to: DType) -> (f32, f32) {
    match to {
        DType::U8 => (0.0, 255.0),
        DType::I8 => (-128.0, 127.0),
        DType::I16 => (-32768.0, 32767.0),
        // -2^31 is exact; the largest f32 below 2^31 is 2^31 - 128.
        _ => (-2_147_483_648.0, 2_147_483_520.0),
    }
}

/// Converts a tensor to dtype `to`. Never fails: every pair of supported dtypes converts.
pub fn cast_tensor(x: &Tensor, to: DType) -> Tensor {
    let data = match (&x.data, to) {
        (TensorData::F32(v), DType::F16) => TensorData::F32(round_f16_slice(v)),
        (TensorData::F32(v), DType::BF16) => TensorData::F32(simd::map(v, round_bf16)),
        (TensorData::F32(v), t) if t.is_float() => TensorData::F32(v.clone()),
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
    fn cast_through_matches_the_two_casts() {
        let xs = [
            0.0,
            0.4,
            -0.4,
            1.9,
            -1.9,
            127.5,
            128.0,
            -128.7,
            255.0,
            255.9,
            256.0,
            300.0,
            -1.0,
            65535.0,
            40000.5,
            -40000.5,
            2.2e9,
            -2.2e9,
            3e12,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e30,
        ];
        for to in [DType::U8, DType::I8, DType::I16, DType::I32] {
            assert!(cast_through_supported(to));
            let (lo, hi) = int_range_f32(to);
            let x = Tensor::f32(vec![xs.len()], xs.to_vec());
            let two = cast_tensor(&cast_tensor(&x, to), DType::F32);
            for (&v, &want) in xs.iter().zip(two.as_f32().unwrap()) {
                let got = cast_through(to, lo, hi, v);
                assert_eq!(got.to_bits(), want.to_bits(), "{to} {v}: {got} vs {want}");
            }
        }
        assert!(!cast_through_supported(DType::I64));
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

    /// The vectorised f16 and bf16 roundings give `half`'s bits on values across the
    /// ranges: normals, subnormals, ties, overflow, infinities, zeros and NaN.
    #[test]
    fn slice_roundings_match_half() {
        let mut v: Vec<f32> = (0..4099)
            .map(|i| {
                let t = i as f32;
                (t * 0.731).sin() * 10f32.powf((i % 23) as f32 - 11.0)
            })
            .collect();
        v.extend([
            0.0,
            -0.0,
            65504.0,
            65520.0,
            -65520.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1.0 + 1.0 / 2048.0,
            1.0 + 3.0 / 2048.0,
            1.0 + 1.0 / 256.0,
            5.96e-8,
            2.98e-8,
            1e-10,
            f32::MAX,
            f32::MIN_POSITIVE,
        ]);
        let h = cast_tensor(&Tensor::f32(vec![v.len()], v.clone()), DType::F16);
        let b = cast_tensor(&Tensor::f32(vec![v.len()], v.clone()), DType::BF16);
        for (i, &a) in v.iter().enumerate() {
            let want_h = f16::from_f32(a).to_f32();
            let want_b = bf16::from_f32(a).to_f32();
            assert_eq!(
                h.as_f32().unwrap()[i].to_bits(),
                want_h.to_bits(),
                "f16 of {a}"
            );
            assert_eq!(
                b.as_f32().unwrap()[i].to_bits(),
                want_b.to_bits(),
                "bf16 of {a}"
            );
        }
        let nan = cast_tensor(&Tensor::f32(vec![9], vec![f32::NAN; 9]), DType::F16);
        assert!(nan.as_f32().unwrap().iter().all(|x| x.is_nan()));
        let nan = cast_tensor(&Tensor::f32(vec![9], vec![f32::NAN; 9]), DType::BF16);
        assert!(nan.as_f32().unwrap().iter().all(|x| x.is_nan()));
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
