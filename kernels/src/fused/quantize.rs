//! Quantisation of activations: [`tessera_ir::Op::Quantize`] and
//! [`tessera_ir::Op::Dequantize`] on their own, and the per-element formulas the fused
//! elementwise programs use for them (`EwInstr::Quantize`, `EwInstr::FakeQuant`). Each equals
//! the primitive ops the importer writes for QuantizeLinear / DequantizeLinear (Div, Round,
//! Add, Clip, Cast; Cast, Sub, Mul) bit for bit.
use super::elementwise::elementwise;
use super::KResult;
use super::{ElementwiseProgram, EwInstr};
use crate::unary::hi_then;
use tessera_ir::op::BinaryOp;
use tessera_ir::{DType, Tensor};

/// `clamp(round(x / s) + z, lo, hi)`, ties to even, as the unfused ops compute it (Div,
/// Round, Add, Clip, the Cast to the integer type and back): a NaN quantises to 0, as the
/// Cast converts it.
#[inline(always)]
pub(crate) fn quantize(x: f32, s: f32, z: f32, lo: f32, hi: f32) -> f32 {
    let q = (x / s).round_ties_even() + z;
    let q = hi_then(if q < lo { lo } else { q }, hi);
    if q.is_nan() {
        0.0
    } else {
        q
    }
}

/// `(quantize(x) − z) · s`: a QuantizeLinear and the DequantizeLinear after it.
#[inline(always)]
pub(super) fn fake_quant(x: f32, s: f32, z: f32, lo: f32, hi: f32) -> f32 {
    (quantize(x, s, z, lo, hi) - z) * s
}

/// [`tessera_ir::Op::Quantize`]: the quantised values as a tensor of type `to` (uint8,
/// int8 or int16).
pub(crate) fn quantize_op(to: DType, inputs: &[&Tensor]) -> KResult<Tensor> {
    let [x, _, _] = inputs else {
        return Err("Quantize takes X, Scale and ZeroPoint".into());
    };
    let (lo, hi) = tessera_ir::spec::quant_range(to)
        .ok_or_else(|| format!("Quantize to {to}: only uint8, int8 and int16"))?;
    // The program's result is the integer tensor (`out_dtype`).
    elementwise(&quant_program(&x.shape, lo, hi, Some(to)), inputs)
}

/// The program of inputs X, Scale, ZeroPoint to `[lo, hi]`: `Quantize` with the integer
/// result of type `to` when given, else `FakeQuant` (the dequantised floats).
fn quant_program(shape: &[usize], lo: i32, hi: i32, to: Option<DType>) -> ElementwiseProgram {
    let (lo, hi) = (lo as f32, hi as f32);
    let (x, s, z) = (0, 1, 2);
    let last = match to {
        None => EwInstr::FakeQuant { lo, hi, x, s, z },
        Some(_) => EwInstr::Quantize { lo, hi, x, s, z },
    };
    ElementwiseProgram {
        out_shape: shape.to_vec(),
        instrs: vec![EwInstr::Load(0), EwInstr::Load(1), EwInstr::Load(2), last],
        out_dtype: to.unwrap_or(DType::F32),
    }
}

/// [`tessera_ir::Op::Dequantize`]: `(q − z) · s` (the Cast, Sub and Mul it replaces).
pub(crate) fn dequantize_op(inputs: &[&Tensor]) -> KResult<Tensor> {
    let [q, _, _] = inputs else {
        return Err("Dequantize takes Q, Scale and ZeroPoint".into());
    };
    let p = ElementwiseProgram {
        out_shape: q.shape.clone(),
        instrs: vec![
            EwInstr::LoadCast(0),
            EwInstr::Load(1),
            EwInstr::Load(2),
            EwInstr::Binary(BinaryOp::Sub, 0, 2),
            EwInstr::Binary(BinaryOp::Mul, 3, 1),
        ],
        out_dtype: DType::F32,
    };
    elementwise(&p, inputs)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{bin, rand, run};
    use super::*;
    use crate::eval;
    use tessera_ir::op::{CastAttrs, ClipAttrs, QuantizeAttrs, UnaryAttrs, UnaryOp};
    use tessera_ir::{Op, TensorData};

    /// The primitive ops the importer writes for QuantizeLinear (the integer tensor).
    fn quantize_ref(x: &Tensor, s: &Tensor, z: &Tensor, to: DType) -> Tensor {
        let (lo, hi) = tessera_ir::spec::quant_range(to).unwrap();
        let q = bin(BinaryOp::Div, x, s);
        let q = run(
            Op::Unary(UnaryAttrs {
                kind: UnaryOp::Round,
            }),
            &[&q],
        );
        let q = bin(BinaryOp::Add, &q, z);
        let q = run(
            Op::Clip(ClipAttrs {
                min: Some(lo as f32),
                max: Some(hi as f32),
            }),
            &[&q],
        );
        run(Op::Cast(CastAttrs { to }), &[&q])
    }

    /// ... and for DequantizeLinear.
    fn dequantize_ref(q: &Tensor, s: &Tensor, z: &Tensor) -> Tensor {
        let v = run(Op::Cast(CastAttrs { to: DType::F32 }), &[q]);
        bin(BinaryOp::Mul, &bin(BinaryOp::Sub, &v, z), s)
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        t.as_f32().unwrap().iter().map(|v| v.to_bits()).collect()
    }

    /// Activations with exact ties (k + 0.5 steps), saturating values, NaN and infinities.
    fn activations(scale: f32) -> Tensor {
        let mut x = rand(vec![2, 5, 8], 7);
        if let TensorData::F32(v) = &mut x.data {
            for (i, e) in v.iter_mut().enumerate() {
                *e *= 40.0 * scale;
                if i % 7 == 0 {
                    *e = ((i as f32) - 40.0 + 0.5) * scale;
                }
            }
            v[1] = f32::NAN;
            v[2] = f32::INFINITY;
            v[3] = f32::NEG_INFINITY;
            v[4] = 1e9;
            v[5] = -0.3 * scale;
        }
        x
    }

    #[test]
    fn quantize_and_dequantize_equal_the_primitive_ops() {
        let per_axis = Tensor::f32(
            vec![1, 1, 8],
            vec![0.25, 0.5, 0.125, 1.0, 0.75, 0.0625, 2.0, 0.3],
        );
        let cases = [
            (
                DType::U8,
                Tensor::f32(vec![], vec![0.25]),
                Tensor::f32(vec![], vec![128.0]),
            ),
            (
                DType::I8,
                Tensor::f32(vec![], vec![0.5]),
                Tensor::f32(vec![], vec![0.0]),
            ),
            (
                DType::I8,
                per_axis.clone(),
                Tensor::f32(vec![1, 1, 8], vec![-3.0; 8]),
            ),
            (
                DType::I16,
                Tensor::f32(vec![1], vec![0.01]),
                Tensor::f32(vec![], vec![7.0]),
            ),
            (DType::U8, per_axis, Tensor::f32(vec![], vec![0.0])),
        ];
        for (to, s, z) in &cases {
            let x = activations(0.25);
            let want_q = quantize_ref(&x, s, z, *to);
            let q = eval(&Op::Quantize(QuantizeAttrs { to: *to }), &[&x, s, z])
                .unwrap()
                .remove(0);
            assert_eq!(q.dtype, *to);
            assert_eq!(q.data, want_q.data, "Quantize to {to}");
            let want = dequantize_ref(&want_q, s, z);
            let y = eval(&Op::Dequantize, &[&q, s, z]).unwrap().remove(0);
            assert_eq!(bits(&y), bits(&want), "Dequantize of {to}");
            // The fused pair: one instruction, the integer never stored.
            let (lo, hi) = tessera_ir::spec::quant_range(*to).unwrap();
            let p = quant_program(&x.shape, lo, hi, None);
            let fused = elementwise(&p, &[&x, s, z]).unwrap();
            assert_eq!(bits(&fused), bits(&want), "FakeQuant to {to}");
        }
    }

    #[test]
    fn quantize_rounds_ties_to_even_and_saturates() {
        let x = Tensor::f32(vec![6], vec![0.5, 1.5, 2.5, -0.5, 300.0, -5.0]);
        let (s, z) = (
            Tensor::f32(vec![], vec![1.0]),
            Tensor::f32(vec![], vec![0.0]),
        );
        let q = eval(
            &Op::Quantize(QuantizeAttrs { to: DType::U8 }),
            &[&x, &s, &z],
        )
        .unwrap()
        .remove(0);
        assert_eq!(q.data, TensorData::I64(vec![0, 2, 2, 0, 255, 0]));
    }

    #[test]
    fn quantize_refuses_a_float_target() {
        let x = Tensor::f32(vec![2], vec![0.5, 1.5]);
        let s = Tensor::f32(vec![], vec![1.0]);
        let err = eval(
            &Op::Quantize(QuantizeAttrs { to: DType::F32 }),
            &[&x, &s, &s],
        );
        assert!(err.is_err());
    }
}
