//! Pad (<https://onnx.ai/onnx/operators/onnx__Pad.html>): constant, reflect, edge and wrap
//! padding of every axis, with static pads (negative ones crop).
//!
//! Cost: no arithmetic; bytes are the input and output once. Partitioning: replicated only.
use super::{Arity, OpSpec, Partitioning};
use crate::infer::{InferCx, TypedShape};
use crate::op::{PadAttrs, PadMode};
use crate::IrError;

impl OpSpec for PadAttrs {
    fn name(&self) -> String {
        "Pad".into()
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn infer(&self, cx: &InferCx) -> Result<Vec<TypedShape>, IrError> {
        let (dtype, x) = cx.input(0);
        let r = x.len();
        if self.pads.len() != 2 * r {
            return Err(cx.err(format!(
                "pads {:?} need {} entries for rank {r}",
                self.pads,
                2 * r
            )));
        }
        let mut out = Vec::with_capacity(r);
        for (i, &d) in x.iter().enumerate() {
            let (b, e) = (self.pads[i], self.pads[r + i]);
            let n = (d as i64)
                .checked_add(b)
                .and_then(|v| v.checked_add(e))
                .filter(|&n| n >= 0)
                .ok_or_else(|| {
                    cx.err(format!(
                        "pads {:?} crop axis {i} of {x:?} below 0",
                        self.pads
                    ))
                })?;
            let grows = b > 0 || e > 0;
            let cropped = d as i64 + b.min(0) + e.min(0);
            if grows && self.mode != PadMode::Constant && cropped <= 0 {
                return Err(cx.err(format!(
                    "{:?} padding of axis {i} of {x:?} needs input elements",
                    self.mode
                )));
            }
            out.push(n as usize);
        }
        Ok(vec![(dtype, out)])
    }
    fn flops(&self, _inputs: &[&[usize]], _outputs: &[&[usize]]) -> u64 {
        0
    }
    fn partitioning(&self) -> Partitioning {
        Partitioning::ReplicatedOnly
    }
}
