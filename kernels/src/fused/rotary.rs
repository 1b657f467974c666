//! The fused rotary position embedding (see [`super::FusedOp::Rotary`]): `x·cos +
//! rotate_half(x)·sin` in one pass over `x`, where the unfused chain slices `x` in two
//! halves, negates one (or not, when the export folded the sign into `sin`), concatenates
//! them back and runs three broadcasting binary ops.
use super::{expect_inputs, f32s};
use crate::index::{broadcast_strides, strided_offsets};
use crate::simd::vectorized;
use crate::{describe, make, KResult};
use tessera_ir::{DType, Tensor, TensorData};

/// `y = x·cos + r·sin` with `r = concat(-x[.., h..], x[.., ..h])` (without the minus when
/// not `negate`) over the last axis of `x` (h half its length), `cos` and `sin` broadcast
/// to `x` (inputs x, cos, sin). The same products and sum as the unfused Mul, Neg, Mul and
/// Add, so bit for bit equal.
pub(super) fn rotary(negate: bool, inputs: &[&Tensor]) -> KResult<Tensor> {
    expect_inputs(inputs, 3)?;
    let x = f32s(inputs[0], "x")?;
    let shape = &inputs[0].shape;
    let d = *shape
        .last()
        .ok_or_else(|| format!("x {} has no last axis to rotate", describe(inputs[0])))?;
    if d % 2 != 0 {
        return Err(format!("x {} has an odd last axis", describe(inputs[0])));
    }
    let h = d / 2;
    let rank = shape.len();
    // One offset per row of x into cos and sin, whose rows must be whole (last axis d).
    let rows_of = |t: &Tensor, what: &str| -> KResult<Vec<usize>> {
        let s = broadcast_strides(&t.shape, shape)
            .filter(|s| d == 0 || s[rank - 1] == 1)
            .ok_or_else(|| {
                format!(
                    "{what} {} does not broadcast to x {shape:?} by rows",
                    describe(t)
                )
            })?;
        Ok(strided_offsets(&shape[..rank - 1], &s[..rank - 1], 0))
    };
    let (cos, sin) = (f32s(inputs[1], "cos")?, f32s(inputs[2], "sin")?);
    let (c_rows, s_rows) = (rows_of(inputs[1], "cos")?, rows_of(inputs[2], "sin")?);
    let mut out = vec![0f32; x.len()];
    // −x₂ exactly (a sign flip), or x₂ itself.
    let sign = if negate { -1.0f32 } else { 1.0 };
    if d > 0 {
        crate::par_rows(&mut out, d, |r0, ys| {
            let rows = ys.len() / d;
            let (x, c_rows, s_rows) = (&x[r0 * d..], &c_rows[r0..r0 + rows], &s_rows[r0..]);
            vectorized(
                #[inline(always)]
                || {
                    for (((y, xr), &co), &so) in ys
                        .chunks_exact_mut(d)
                        .zip(x.chunks_exact(d))
                        .zip(c_rows)
                        .zip(s_rows)
                    {
                        let (c, s) = (&cos[co..co + d], &sin[so..so + d]);
                        let (x1, x2) = xr.split_at(h);
                        let (y1, y2) = y.split_at_mut(h);
                        for j in 0..h {
                            y1[j] = x1[j] * c[j] + (sign * x2[j]) * s[j];
                            y2[j] = x2[j] * c[h + j] + x1[j] * s[h + j];
                        }
                    }
                },
            )
        });
    }
    make(DType::F32, shape.clone(), TensorData::F32(out))
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::{eval_fused, FusedOp};
    use tessera_ir::op::*;
    use tessera_ir::{Op, Tensor};

    /// The unfused chain as Llama exports it: Slice, Slice, Neg, Concat, Mul, Mul, Add
    /// (without the Neg unless `negate`: the opset-23 exports fold the sign into `sin`).
    fn rotary_chain(x: &Tensor, cos: &Tensor, sin: &Tensor, negate: bool) -> Tensor {
        let d = *x.shape.last().unwrap() as i64;
        let axis = x.shape.len() - 1;
        let half = |start, end| {
            run(
                Op::Slice(SliceAttrs {
                    axes: vec![axis],
                    starts: vec![start],
                    ends: vec![end],
                    steps: vec![1],
                }),
                &[x],
            )
        };
        let (x1, x2) = (half(0, d / 2), half(d / 2, d));
        let neg = if negate {
            run(Op::Unary(UnaryAttrs { kind: UnaryOp::Neg }), &[&x2])
        } else {
            x2
        };
        let rot = run(Op::Concat(AxisAttrs { axis }), &[&neg, &x1]);
        bin(
            BinaryOp::Add,
            &bin(BinaryOp::Mul, x, cos),
            &bin(BinaryOp::Mul, &rot, sin),
        )
    }

    #[test]
    fn rotary_equals_the_unfused_chain_bitwise() {
        let (b, h, s, d) = (2, 3, 5, 8);
        let x = rand(vec![b, h, s, d], 51);
        for trig in [vec![1, 1, s, d], vec![s, d], vec![b, 1, s, d]] {
            let (cos, sin) = (rand(trig.clone(), 52), rand(trig.clone(), 53));
            for negate in [true, false] {
                let want = rotary_chain(&x, &cos, &sin, negate);
                let got = eval_fused(&FusedOp::Rotary { negate }, &[&x, &cos, &sin]).unwrap();
                assert_eq!(got, want, "cos/sin {trig:?}, negate {negate}");
            }
        }
        // cos broadcast along the rotated axis, or an odd axis, is refused by name.
        let bad = rand(vec![1, 1, s, 1], 54);
        let err = eval_fused(&FusedOp::Rotary { negate: true }, &[&x, &bad, &bad]).unwrap_err();
        assert!(err.to_string().contains("cos"), "{err}");
        let odd = rand(vec![1, 3], 55);
        let err = eval_fused(&FusedOp::Rotary { negate: true }, &[&odd, &odd, &odd]).unwrap_err();
        assert!(err.to_string().contains("odd"), "{err}");
    }
}
