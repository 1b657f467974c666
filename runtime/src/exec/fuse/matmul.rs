//! MatMul epilogues and packed weights: a `MatMul` followed by an `Add` of a bias vector
//! over its last axis and/or a `Gelu` (either form) becomes one
//! [`FusedOp::MatMulEpilogue`]. A MatMul of few rows ([`tessera_kernels::PACKED_MAX_ROWS`])
//! whose `[k, n]` weight (of at least [`tessera_kernels::PACKED_MIN_WEIGHTS`] values) is
//! loaded on the rank for it alone is fused too, epilogue or not:
//! its weight is read from the weight store now and packed in the order the product reads
//! it ([`PackedMatMulWeight`]), and the load step disappears (the rank holds the packed copy
//! only). Set `TESSERA_PACKED_MATMUL=0` to keep every MatMul on the `gemm` crate.
use super::{Fused, Program};
use std::sync::Arc;
use tessera_ir::Op;
use tessera_kernels::{packed_matmul_suits, FusedOp, PackedMatMulWeight};

/// True unless the environment variable `TESSERA_PACKED_MATMUL` is `0`.
fn packed_matmul_enabled() -> bool {
    std::env::var("TESSERA_PACKED_MATMUL").map_or(true, |v| v != "0")
}

impl Program<'_> {
    pub(super) fn matmul_epilogue(&self, mm: usize) -> Option<Fused> {
        if !matches!(self.op(mm)?, Op::MatMul(_)) {
            return None;
        }
        let ab = self.ins(mm);
        let m = self.out(mm);
        if !ab.iter().chain([&m]).all(|&v| self.is_f32(v)) {
            return None;
        }
        let epi = self.epilogue(m)?;
        let held = self.held_matmul_weight(mm);
        if epi.bias.is_none() && epi.gelu.is_none() && held.is_none() {
            return None;
        }
        let mut steps = vec![mm];
        steps.extend(&epi.steps);
        let mut inputs = ab.to_vec();
        if let Some((load, _)) = &held {
            steps.push(*load);
            inputs.remove(1);
        }
        steps.sort_unstable();
        inputs.extend(epi.bias);
        Some(Fused {
            op: FusedOp::MatMulEpilogue {
                bias: epi.bias.is_some(),
                gelu: epi.gelu,
                held: held.map(|(_, w)| w),
            },
            inputs,
            output: epi.output,
            steps,
        })
    }

    /// The weight of the MatMul at step `mm` packed now, and the step loading it: when the
    /// product has few rows on this rank, its B is a `[k, n]` weight loaded for it alone,
    /// and the packed kernel runs on this CPU.
    fn held_matmul_weight(&self, mm: usize) -> Option<(usize, Arc<PackedMatMulWeight>)> {
        let (a, b) = (self.input(mm, 0)?, self.input(mm, 1)?);
        let (xs, ws) = (self.shape(a), self.shape(b));
        let (&k, lead) = xs.split_last()?;
        let rows: usize = lead.iter().product();
        if !packed_matmul_enabled() || xs.len() < 2 || ws.len() != 2 || ws[0] != k {
            return None;
        }
        if !packed_matmul_suits(rows, ws[0], ws[1]) {
            return None;
        }
        self.hold_weight(mm, b, |t| {
            let packed = PackedMatMulWeight::pack(ws[0], ws[1], t.as_f32()?).ok()?;
            Some(Arc::new(packed))
        })
    }
}
