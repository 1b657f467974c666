//! MatMul epilogues and packed weights: a `MatMul` followed by an `Add` of a bias vector
//! over its last axis and/or a `Gelu` (either form) becomes one
//! [`FusedOp::MatMulEpilogue`]. A MatMul of few rows ([`tessera_kernels::PACKED_MAX_ROWS`])
//! whose `[k, n]` weight (of at least [`tessera_kernels::PACKED_MIN_WEIGHTS`] values) is
//! loaded on the rank for it alone is fused too, epilogue or not:
//! its weight is read from the weight store now and packed in the order the product reads
//! it ([`PackedMatMulWeight`]), and the load step disappears (the rank holds the packed copy
//! only). A `Gemm` of such a shape (alpha 1, A not transposed, B a weight, transposed or
//! not, C absent or a bias vector added once) holds its weight packed the same way
//! (a classifier's `Linear` over a batch of images). Set `TESSERA_PACKED_MATMUL=0` to keep
//! every MatMul and Gemm on its unpacked kernels.
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
            outputs: vec![epi.output],
            steps,
        })
    }

    /// The Gemm at step `s` on a weight packed now, as a [`FusedOp::MatMulEpilogue`] (C its
    /// bias): where alpha is 1, A is `[rows, k]` and not transposed, C is absent or a
    /// vector of the `n` output columns with beta 1, and B is packed as for a MatMul
    /// ([`Program::held_matmul_weight`]; a transposed B straight from its transpose).
    pub(super) fn gemm_held(&self, s: usize) -> Option<Fused> {
        let Op::Gemm(attrs) = self.op(s)? else {
            return None;
        };
        let ins = self.ins(s);
        let out = self.out(s);
        let (x, w, c) = (*ins.first()?, *ins.get(1)?, ins.get(2).copied());
        if attrs.trans_a
            || attrs.alpha != 1.0
            || (c.is_some() && attrs.beta != 1.0)
            || !packed_matmul_enabled()
            || !ins.iter().chain([&out]).all(|&v| self.is_f32(v))
        {
            return None;
        }
        let (xs, ws) = (self.shape(x), self.shape(w));
        let &[rows, k] = xs else {
            return None;
        };
        let &[w0, w1] = ws else {
            return None;
        };
        let (wk, n) = if attrs.trans_b { (w1, w0) } else { (w0, w1) };
        if wk != k || c.is_some_and(|c| self.shape(c) != [n]) {
            return None;
        }
        if !packed_matmul_suits(rows, k, n) {
            return None;
        }
        let trans_b = attrs.trans_b;
        let (load, packed) = self.hold_weight(s, w, |t| {
            let data = t.as_f32()?;
            let packed = if trans_b {
                PackedMatMulWeight::pack_transposed(k, n, data)
            } else {
                PackedMatMulWeight::pack(k, n, data)
            };
            Some(Arc::new(packed.ok()?))
        })?;
        let mut steps = vec![s, load];
        steps.sort_unstable();
        Some(Fused {
            op: FusedOp::MatMulEpilogue {
                bias: c.is_some(),
                gelu: None,
                held: Some(packed),
            },
            inputs: std::iter::once(x).chain(c).collect(),
            outputs: vec![out],
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
