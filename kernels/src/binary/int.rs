//! Integer binary arithmetic, defined for every operand as ONNX (numpy) defines it:
//! Add, Sub, Mul and Pow wrap to the dtype's width (two's complement; i64::MIN / -1 wraps to
//! i64::MIN and i64::MIN % -1 is 0, as numpy); Div truncates; division or modulo by zero
//! and 0 raised to a negative power are errors naming the operands, never a panic.
use super::{describe, wrap_int, zip_broadcast, KResult};
use std::cell::Cell;
use tessera_ir::op::BinaryOp;
use tessera_ir::{DType, Tensor};

/// Python-style modulo (the result takes the divisor's sign); `y` is not 0.
fn py_mod_i64(x: i64, y: i64) -> i64 {
    let r = x.wrapping_rem(y);
    // r and y have opposite signs, so |r + y| < |y|: no overflow.
    if r != 0 && ((r < 0) != (y < 0)) {
        r + y
    } else {
        r
    }
}

/// `x^e` modulo 2^64 (square and multiply with wrapping products: exact in the ring, for
/// every u64 exponent).
fn wrapping_pow_u64(mut x: i64, mut e: u64) -> i64 {
    let mut acc = 1i64;
    while e > 0 {
        if e & 1 == 1 {
            acc = acc.wrapping_mul(x);
        }
        x = x.wrapping_mul(x);
        e >>= 1;
    }
    acc
}

/// `x^y` wrapped to i64; a negative `y` truncates `1 / x^|y|` toward zero (1, ±1 for -1,
/// else 0). `None` for 0 raised to a negative power (a division by zero).
fn int_pow(x: i64, y: i64) -> Option<i64> {
    if y >= 0 {
        return Some(wrapping_pow_u64(x, y.unsigned_abs()));
    }
    match x {
        0 => None,
        1 => Some(1),
        -1 => Some(if y % 2 == 0 { 1 } else { -1 }),
        _ => Some(0),
    }
}

fn int_op(kind: BinaryOp) -> KResult<fn(i64, i64) -> i64> {
    Ok(match kind {
        BinaryOp::Add => i64::wrapping_add,
        BinaryOp::Sub => i64::wrapping_sub,
        BinaryOp::Mul => i64::wrapping_mul,
        BinaryOp::Div => i64::wrapping_div,
        BinaryOp::Max => |x, y| x.max(y),
        BinaryOp::Min => |x, y| x.min(y),
        BinaryOp::Mod { fmod: true } => i64::wrapping_rem,
        BinaryOp::Mod { fmod: false } => py_mod_i64,
        BinaryOp::And => |x, y| x & y,
        BinaryOp::Or => |x, y| x | y,
        BinaryOp::Xor => |x, y| x ^ y,
        other => return Err(format!("{other:?} is not defined on integers")),
    })
}

/// ONNX BitShift on values of `dt` (held sign-extended, or zero-extended for u8): a left
/// shift wraps to the width (bits past the top, or the sign bit, are dropped); a right shift
/// is arithmetic (logical for u8, whose values are non-negative); a shift by a negative
/// amount or by the width or more gives 0, or -1 for a right shift of a negative value.
fn shift(dt: DType, left: bool) -> impl Fn(i64, i64) -> i64 {
    let width = 8 * dt.size_bytes() as i64;
    move |x, y| match (left, (0..width).contains(&y)) {
        (true, true) => wrap_int(dt, x.wrapping_shl(y as u32)),
        (false, true) => x >> y,
        (false, false) if x < 0 => -1,
        _ => 0,
    }
}

/// `a ∘ b` on integer operands broadcast to `so` (shapes `sa`, `sb`), wrapped to `dt`.
#[allow(clippy::too_many_arguments)]
pub(super) fn int_binary(
    kind: BinaryOp,
    dt: DType,
    (a, x, sa): (&Tensor, &[i64], &[usize]),
    (b, y, sb): (&Tensor, &[i64], &[usize]),
    so: &[usize],
) -> KResult<Vec<i64>> {
    let empty = so.contains(&0);
    if matches!(kind, BinaryOp::Div | BinaryOp::Mod { .. }) && !empty && y.contains(&0) {
        // Every divisor element is used when the output is not empty.
        let what = if kind == BinaryOp::Div {
            "division"
        } else {
            "modulo"
        };
        return Err(format!(
            "integer {what} by zero: the divisor {} holds 0 (dividend {})",
            describe(b),
            describe(a)
        ));
    }
    if kind == BinaryOp::Pow {
        let bad = Cell::new(None);
        let v = zip_broadcast(x, sa, y, sb, so, |p, q| {
            int_pow(p, q).map_or_else(
                || {
                    bad.set(Some(q));
                    0
                },
                |r| wrap_int(dt, r),
            )
        });
        if let Some(q) = bad.get() {
            return Err(format!(
                "0 raised to the negative power {q} (integer division by zero) in {} ^ {}",
                describe(a),
                describe(b)
            ));
        }
        return Ok(v);
    }
    if let BinaryOp::BitShift { left } = kind {
        let f = shift(dt, left);
        return Ok(zip_broadcast(x, sa, y, sb, so, f));
    }
    let f = int_op(kind)?;
    Ok(zip_broadcast(x, sa, y, sb, so, |p, q| {
        wrap_int(dt, f(p, q))
    }))
}

#[cfg(test)]
mod tests {
    use crate::eval;
    use tessera_ir::op::*;
    use tessera_ir::{DType, Op, Tensor, TensorData};

    fn t(dt: DType, v: Vec<i64>) -> Tensor {
        Tensor::new(dt, vec![v.len()], TensorData::I64(v)).unwrap()
    }

    fn bin(kind: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Vec<i64>, String> {
        eval(&Op::Binary(BinaryAttrs { kind }), &[a, b])
            .map(|r| r[0].as_i64().unwrap().to_vec())
            .map_err(|e| e.to_string())
    }

    const I64: DType = DType::I64;
    const I32: DType = DType::I32;

    #[test]
    fn add_sub_mul_wrap_to_the_dtype() {
        let (max, min) = (i64::MAX, i64::MIN);
        let a = t(I64, vec![max, min, max, min]);
        let b = t(I64, vec![1, -1, 2, min]);
        assert_eq!(bin(BinaryOp::Add, &a, &b).unwrap(), [min, max, min + 1, 0]);
        assert_eq!(
            bin(BinaryOp::Sub, &a, &b).unwrap(),
            [max - 1, min + 1, max - 2, 0]
        );
        assert_eq!(bin(BinaryOp::Mul, &a, &b).unwrap(), [max, min, -2, 0]);
        let a32 = t(I32, vec![i32::MAX as i64, i32::MIN as i64, 65536]);
        let b32 = t(I32, vec![1, -1, 65536]);
        assert_eq!(
            bin(BinaryOp::Add, &a32, &b32).unwrap(),
            [i32::MIN as i64, i32::MAX as i64, 131072]
        );
        // 65536² = 2^32 wraps to 0 in int32.
        assert_eq!(
            bin(BinaryOp::Mul, &a32, &b32).unwrap(),
            [i32::MAX as i64, i32::MIN as i64, 0]
        );
        let u = t(DType::U8, vec![200, 3]);
        assert_eq!(
            bin(BinaryOp::Add, &u, &t(DType::U8, vec![100, 255])).unwrap(),
            [44, 2]
        );
        assert_eq!(
            bin(
                BinaryOp::Sub,
                &t(DType::U8, vec![0]),
                &t(DType::U8, vec![1])
            )
            .unwrap(),
            [255]
        );
    }

    #[test]
    fn min_divided_by_minus_one_wraps_and_mod_is_zero() {
        let a = t(I64, vec![i64::MIN, 7]);
        let m1 = t(I64, vec![-1, -1]);
        assert_eq!(bin(BinaryOp::Div, &a, &m1).unwrap(), [i64::MIN, -7]);
        assert_eq!(bin(BinaryOp::Mod { fmod: true }, &a, &m1).unwrap(), [0, 0]);
        assert_eq!(bin(BinaryOp::Mod { fmod: false }, &a, &m1).unwrap(), [0, 0]);
        let a32 = t(I32, vec![i32::MIN as i64]);
        let m32 = t(I32, vec![-1]);
        assert_eq!(bin(BinaryOp::Div, &a32, &m32).unwrap(), [i32::MIN as i64]);
        // Python mod near the limits: the divisor's sign, no overflow in r + y.
        let p = bin(
            BinaryOp::Mod { fmod: false },
            &t(I64, vec![i64::MIN, i64::MAX, -1]),
            &t(I64, vec![i64::MAX, i64::MIN, i64::MIN]),
        );
        assert_eq!(p.unwrap(), [i64::MAX - 1, -1, -1]);
    }

    #[test]
    fn division_and_modulo_by_zero_are_errors() {
        let a = t(I64, vec![1, 2]);
        let z = t(I64, vec![3, 0]);
        assert_eq!(
            bin(BinaryOp::Div, &a, &z).unwrap_err(),
            "Div: integer division by zero: the divisor i64[2] holds 0 (dividend i64[2])"
        );
        for fmod in [false, true] {
            assert_eq!(
                bin(BinaryOp::Mod { fmod }, &a, &z).unwrap_err(),
                "Mod: integer modulo by zero: the divisor i64[2] holds 0 (dividend i64[2])"
            );
        }
        // An empty output uses no divisor: no error, as numpy.
        let none = Tensor::i64(vec![0, 2], vec![]);
        assert_eq!(bin(BinaryOp::Div, &none, &z).unwrap(), Vec::<i64>::new());
    }

    #[test]
    fn pow_wraps_for_every_exponent_and_refuses_zero_to_a_negative_power() {
        let x = t(I64, vec![2, 2, 3, -1, 3, 2, -2, 1, -1, 0]);
        let y = t(
            I64,
            vec![63, 64, 1 << 32, (1 << 40) + 1, 40, -1, -3, -7, -4, 0],
        );
        // 3^(2^32) mod 2^64 (was computed as 3^(2^32 - 1)), 3^40 mod 2^64.
        let want = [
            i64::MIN,
            0,
            2_491_309_678_558_969_857,
            -1,
            -6_289_078_614_652_622_815,
            0,
            0,
            1,
            1,
            1,
        ];
        assert_eq!(bin(BinaryOp::Pow, &x, &y).unwrap(), want);
        // int32: 3^40 wraps to the low 32 bits.
        let p = bin(BinaryOp::Pow, &t(I32, vec![3]), &t(I32, vec![40])).unwrap();
        assert_eq!(p, [689_956_897]);
        assert_eq!(
            bin(BinaryOp::Pow, &t(I64, vec![4, 0]), &t(I64, vec![-2])).unwrap_err(),
            "Pow: 0 raised to the negative power -2 (integer division by zero) in i64[2] ^ i64[1]"
        );
    }

    /// Unary and reduction integer ops wrap too (numpy: abs(i64::MIN) is i64::MIN).
    #[test]
    fn neg_abs_cumsum_and_reductions_wrap() {
        let un = |kind, x: &Tensor| {
            eval(&Op::Unary(UnaryAttrs { kind }), &[x]).unwrap()[0]
                .as_i64()
                .unwrap()
                .to_vec()
        };
        let m = t(I64, vec![i64::MIN, 5]);
        assert_eq!(un(UnaryOp::Abs, &m), [i64::MIN, 5]);
        assert_eq!(un(UnaryOp::Neg, &m), [i64::MIN, -5]);
        assert_eq!(
            un(UnaryOp::Neg, &t(I32, vec![i32::MIN as i64])),
            [i32::MIN as i64]
        );
        let cs = |x: &Tensor| {
            let a = CumSumAttrs {
                axis: 0,
                exclusive: false,
                reverse: false,
            };
            eval(&Op::CumSum(a), &[x]).unwrap()[0]
                .as_i64()
                .unwrap()
                .to_vec()
        };
        assert_eq!(
            cs(&t(I64, vec![i64::MAX, 1, 1])),
            [i64::MAX, i64::MIN, i64::MIN + 1]
        );
        assert_eq!(
            cs(&t(I32, vec![i32::MAX as i64, 1])),
            [i32::MAX as i64, i32::MIN as i64]
        );
        let red = |kind, x: &Tensor| {
            let a = ReduceAttrs {
                kind,
                axes: vec![0],
                keepdims: false,
            };
            eval(&Op::Reduce(a), &[x]).unwrap()[0]
                .as_i64()
                .unwrap()
                .to_vec()
        };
        let big = t(I64, vec![i64::MAX, 2]);
        assert_eq!(red(ReduceKind::Sum, &big), [i64::MIN + 1]);
        assert_eq!(red(ReduceKind::Prod, &big), [-2]);
        assert_eq!(
            red(ReduceKind::Sum, &t(I32, vec![i32::MAX as i64, 1])),
            [i32::MIN as i64]
        );
    }

    /// BitShift on every integer dtype against the native type's checked shifts (`None`
    /// past the width: 0, or the sign fill for a right shift), over values with the sign bit
    /// set and clear and shifts from -1 to the width + 1; bitwise And / Or / Xor / Not
    /// against the native operators.
    #[test]
    fn shifts_and_bitwise_ops_match_native_integers() {
        macro_rules! check {
            ($dt:expr, $t:ty) => {{
                let width = <$t>::BITS as i64;
                let vals: Vec<i64> = [<$t>::MIN, <$t>::MAX, 0, 1, 5, <$t>::MAX / 3]
                    .iter()
                    .map(|&v| v as i64)
                    .collect();
                for y in -1..=width + 1 {
                    let a = t($dt, vals.clone());
                    let b = t($dt, vec![y; vals.len()]);
                    let left = bin(BinaryOp::BitShift { left: true }, &a, &b).unwrap();
                    let right = bin(BinaryOp::BitShift { left: false }, &a, &b).unwrap();
                    for (k, &x) in vals.iter().enumerate() {
                        let n = x as $t;
                        let shl = u32::try_from(y).ok().and_then(|s| n.checked_shl(s));
                        let shr = u32::try_from(y).ok().and_then(|s| n.checked_shr(s));
                        let fill = if n < (0 as $t) { -1 } else { 0 };
                        assert_eq!(left[k], shl.map_or(0, |v| v as i64), "{x} << {y}");
                        assert_eq!(right[k], shr.map_or(fill, |v| v as i64), "{x} >> {y}");
                    }
                }
                let (a, b) = (
                    t($dt, vals.clone()),
                    t($dt, vals.iter().rev().copied().collect()),
                );
                let and = bin(BinaryOp::And, &a, &b).unwrap();
                let or = bin(BinaryOp::Or, &a, &b).unwrap();
                let xor = bin(BinaryOp::Xor, &a, &b).unwrap();
                let not = eval(&Op::Unary(UnaryAttrs { kind: UnaryOp::Not }), &[&a]).unwrap();
                let not = not[0].as_i64().unwrap();
                for k in 0..vals.len() {
                    let (p, q) = (vals[k] as $t, vals[vals.len() - 1 - k] as $t);
                    assert_eq!(and[k], (p & q) as i64);
                    assert_eq!(or[k], (p | q) as i64);
                    assert_eq!(xor[k], (p ^ q) as i64);
                    assert_eq!(not[k], (!p) as i64);
                }
            }};
        }
        check!(DType::I8, i8);
        check!(DType::I16, i16);
        check!(DType::I32, i32);
        check!(DType::I64, i64);
        check!(DType::U8, u8);
        // Floats have no bitwise form.
        let f = Tensor::f32(vec![1], vec![1.0]);
        assert!(bin(BinaryOp::BitShift { left: true }, &f, &f).is_err());
    }
}
