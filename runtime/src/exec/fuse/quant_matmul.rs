//! The integer GEMM pattern: `MatMul(Dequantize(Quantize(x, sq, zq), sd, zd), W)` (or
//! `MatMul(Dequantize(q, sd, zd), W)` of an integer `q` another rank quantised) where `W`
//! is a loaded int8/uint8 weight with one scale and zero point per column (per tensor or per
//! output channel), then the bias `Add` and GELU of the float epilogue
//! ([`FusedOp::QuantMatMul`]). onnxruntime's static (QDQ) and dynamic quantisation write
//! every Linear layer this way once canonicalisation has found the Quantize and Dequantize
//! ops and the quantised weight.
//!
//! The weight's stored integers are read from the weight store and packed when the program
//! is prepared; its float load step disappears, so the rank never holds the float copy. A
//! weight the plan all-gathers arrives as dequantised floats: its integers are recovered
//! and packed on every call ([`QuantWeight::Dequantised`]).
//! The kernel quantises `x` itself whenever the Quantize runs on the rank; the Quantize and
//! Dequantize steps vanish with the product when it is their only reader, or once every
//! reader has fused (the fusion pass drops steps nothing reads). An integer value that
//! arrives from another rank is read as it is.
//! Only where the CPU has an integer GEMM ([`tessera_kernels::int8_gemm_available`]).
use super::{Fused, Program};
use std::sync::Arc;
use tessera_ir::plan::{StepKind, ValueId};
use tessera_ir::{DType, Op};
use tessera_kernels::{FusedOp, PackedQWeight, QuantMatMulOp, QuantWeight};

impl Program<'_> {
    pub(super) fn quant_matmul(&self, mm: usize) -> Option<Fused> {
        if !(super::int8_enabled() && tessera_kernels::int8_gemm_available()) {
            return None;
        }
        let store = self.store?;
        if !matches!(self.op(mm)?, Op::MatMul(_)) {
            return None;
        }
        let [a, b] = self.ins(mm)[..] else {
            return None;
        };
        if !self.is_f32(self.out(mm)) || self.shape(b).len() != 2 {
            return None;
        }
        // The weight: a quantised weight of the graph, loaded on this rank for this product
        // alone (packed now), or the whole weight gathered as floats (packed per call).
        let w = self
            .plan
            .graph
            .weights
            .get(&self.plan.values[b.index()].tensor)?;
        if !matches!(w.dtype, DType::I8 | DType::U8) || w.quant.as_ref()?.dtype != DType::F32 {
            return None;
        }
        let producer = self.producer[b.index()]?;
        let load = match &self.steps[producer].kind {
            StepKind::LoadWeight { slice, .. }
                if !self.keep[b.index()]
                    && self.uses[b.index()].as_slice() == [mm]
                    && !self.claimed[producer] =>
            {
                Some((producer, slice))
            }
            _ => None,
        };
        if load.is_none() && (self.shape(b) != w.shape || !self.is_f32(b)) {
            return None;
        }
        // The activation: Dequantize(Quantize(x)), or Dequantize of an integer value.
        let d = self.producer[a.index()]?;
        let Op::Dequantize = self.op(d)? else {
            return None;
        };
        let [q, sd, zd] = self.ins(d)[..] else {
            return None;
        };
        let int8 = |v: ValueId| matches!(self.plan.values[v.index()].dtype, DType::U8 | DType::I8);
        if !int8(q) || ![sd, zd].iter().all(|&v| self.is_scalar(v)) {
            return None;
        }
        // The kernel quantises x itself when the Quantize runs on this rank (re-quantising
        // is cheaper than reading its integers; a Quantize all of whose readers fuse so
        // becomes dead and is dropped), else it reads the integer value (gathered from the
        // rank that quantised it).
        let own_d = self.sole_producer(a, mm) == Some(d);
        let quantize = self.producer[q.index()].and_then(|qs| match self.op(qs) {
            Some(Op::Quantize(attrs)) => Some((qs, attrs.to)),
            _ => None,
        });
        let own_q = quantize.is_some_and(|(qs, _)| own_d && self.sole_producer(q, d) == Some(qs));
        let mut inputs = vec![q, sd, zd];
        if let Some((qs, _)) = quantize {
            let [x, sq, zq] = self.ins(qs)[..] else {
                return None;
            };
            if !self.is_f32(x) || ![sq, zq].iter().all(|&v| self.is_scalar(v)) {
                return None;
            }
            inputs = vec![x, sq, zq, sd, zd];
        }
        let k = *self.shape(q).last()?;
        if self.shape(b)[0] != k {
            return None;
        }
        let epi = self.epilogue(self.out(mm))?;
        let (weight, weight_input) = match load {
            Some((_, slice)) => {
                let c = store.load_columns(w, slice.as_ref()).ok()??;
                let packed = PackedQWeight::pack(c.k, c.n, &c.values, c.dtype, &c.scale, &c.zero);
                let packed = packed.ok()?;
                if packed.shape() != [k, self.shape(b)[1]] {
                    return None;
                }
                (QuantWeight::Packed(Arc::new(packed)), None)
            }
            None => {
                let c = store.load_columns(w, None).ok()??;
                let weight = QuantWeight::Dequantised {
                    stored: c.dtype,
                    scale: c.scale.into(),
                    zero: c.zero.into(),
                };
                (weight, Some(b))
            }
        };
        let mut steps: Vec<usize> = load.map(|(l, _)| l).into_iter().chain([mm]).collect();
        // Quantize and Dequantize go with the product when it is their only reader.
        if own_d {
            steps.push(d);
        }
        if own_q {
            steps.extend(quantize.map(|(qs, _)| qs));
        }
        steps.extend(&epi.steps);
        steps.sort_unstable();
        inputs.extend(weight_input);
        inputs.extend(epi.bias);
        Some(Fused {
            op: FusedOp::QuantMatMul(QuantMatMulOp {
                to: quantize.map(|(_, to)| to),
                weight,
                bias: epi.bias.is_some(),
                gelu: epi.gelu,
            }),
            inputs,
            outputs: vec![epi.output],
            steps,
        })
    }
}
