//! `MatMul` with its epilogue: `+ bias` over the last axis, then a GELU; B either an input
//! or packed when the plan was loaded (`matmul_packed.rs`).
use super::{describe, expect_inputs, f32s, make, KResult};
use crate::matmul::matmul;
use crate::simd::vectorized;
use crate::unary::{gelu_erf, gelu_tanh};
use tessera_ir::{DType, Tensor, TensorData};

/// `gelu`: `Some(tanh_approximation)` when a GELU follows; `held`: B packed (not an input).
pub(super) fn matmul_epilogue(
    bias: bool,
    gelu: Option<bool>,
    held: Option<&crate::PackedMatMulWeight>,
    inputs: &[&Tensor],
) -> KResult<Tensor> {
    let b_in = held.is_none() as usize;
    expect_inputs(inputs, 1 + b_in + bias as usize)?;
    let x = f32s(inputs[0], "A")?;
    let mut y = match held {
        Some(w) => {
            let [k, n] = w.shape();
            let xs = &inputs[0].shape;
            if xs.len() < 2 || xs[xs.len() - 1] != k {
                return Err(format!(
                    "cannot multiply {} by [{k}, {n}]",
                    describe(inputs[0])
                ));
            }
            let rows = x.len() / k.max(1);
            let v = crate::matmul_packed::matmul_packed(x, rows, w)?;
            let mut shape = xs[..xs.len() - 1].to_vec();
            shape.push(n);
            make(DType::F32, shape, TensorData::F32(v))?
        }
        None => {
            f32s(inputs[1], "B")?;
            matmul(inputs[0], inputs[1])?
        }
    };
    let n = y.shape.last().copied().unwrap_or(1);
    let b = if bias {
        let bt = inputs[1 + b_in];
        let b = f32s(bt, "bias")?;
        if b.len() != n || bt.shape.len() != 1 {
            return Err(format!(
                "bias {} is not a vector of the {n} output columns",
                describe(bt)
            ));
        }
        Some(b)
    } else {
        None
    };
    let TensorData::F32(v) = &mut y.data else {
        // matmul of two f32 tensors returns f32 data.
        return Err("matmul returned non-float data".into());
    };
    if n > 0 {
        vectorized(
            #[inline(always)]
            || {
                for row in v.chunks_exact_mut(n) {
                    if let Some(b) = b {
                        // Add(bias, x): the same single rounding as the unfused Add.
                        row.iter_mut().zip(b).for_each(|(x, &c)| *x += c);
                    }
                    // The Gelu kernel's arithmetic (kernels/src/unary.rs), bit for bit.
                    match gelu {
                        Some(true) => row.iter_mut().for_each(|x| *x = gelu_tanh(*x)),
                        Some(false) => row.iter_mut().for_each(|x| *x = gelu_erf(*x)),
                        None => {}
                    }
                }
            },
        );
    }
    Ok(y)
}
