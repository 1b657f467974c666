//! Shape inference of ONNX Attention (<https://onnx.ai/onnx/operators/onnx__Attention.html>).
use super::{Cx, TypedShape};
use crate::op::AttentionAttrs;
use crate::{DType, IrError};

/// Q, K, V as `[B, heads, S, head_size]`: (B, Hq, Sq, Dq), (Hkv, Sk, Dk), Dv.
struct Heads {
    batch: usize,
    hq: usize,
    sq: usize,
    hkv: usize,
    sk: usize,
    dk: usize,
    dv: usize,
}

impl Cx<'_> {
    /// The output: Y, or `qk_matmul_output` `[B, q heads, Sq, past + Sk]` when `qk_output`.
    pub(crate) fn attention(&self, a: &AttentionAttrs) -> Result<Vec<TypedShape>, IrError> {
        let n = 3 + a.has_mask as usize + 2 * a.has_past as usize + a.has_nonpad as usize;
        self.arity(n, n)?;
        for i in 0..3 {
            self.float_input(i)?;
        }
        let h = self.attention_heads(a)?;
        let mut next = 3;
        if a.has_mask {
            let (dt, ms) = self.inputs[next];
            if !(dt.is_float() || dt == DType::Bool) || ms.is_empty() || ms.len() > 4 {
                return Err(self.err(format!(
                    "attn_mask must be a float or bool tensor of rank 1 to 4, got {dt} {ms:?}"
                )));
            }
            next += 1;
        }
        let mut past = 0;
        if a.has_past {
            let (pk, pv) = (self.inputs[next].1, self.inputs[next + 1].1);
            if pk.len() != 4
                || pv.len() != 4
                || pk[0] != h.batch
                || pk[1] != h.hkv
                || pk[3] != h.dk
                || pv[..3] != [h.batch, h.hkv, pk[2]]
                || pv[3] != h.dv
            {
                return Err(self.err(format!(
                    "past_key {pk:?} / past_value {pv:?} do not match [B={}, kv heads={}, P, {}] / [.., {}]",
                    h.batch, h.hkv, h.dk, h.dv
                )));
            }
            past = pk[2];
            next += 2;
        }
        if a.has_nonpad && !matches!(self.inputs[next].0, DType::I64 | DType::I32) {
            return Err(self.err("nonpad_kv_seqlen must be an integer tensor"));
        }
        let total = past + h.sk;
        let dt = self.inputs[0].0;
        let y = if self.inputs[0].1.len() == 3 {
            vec![h.batch, h.sq, h.hq * h.dv]
        } else {
            vec![h.batch, h.hq, h.sq, h.dv]
        };
        Ok(vec![if a.qk_output {
            (dt, vec![h.batch, h.hq, h.sq, total])
        } else {
            (dt, y)
        }])
    }

    fn attention_heads(&self, a: &AttentionAttrs) -> Result<Heads, IrError> {
        let (q, k, v) = (self.inputs[0].1, self.inputs[1].1, self.inputs[2].1);
        let bad = || {
            self.err(format!("Q {q:?}, K {k:?}, V {v:?} are not 3-D [B, S, hidden] or 4-D [B, heads, S, head_size] alike"))
        };
        let h = match (q.len(), k.len(), v.len()) {
            (3, 3, 3) => {
                let (Some(hq), Some(hkv)) = (a.q_num_heads, a.kv_num_heads) else {
                    return Err(
                        self.err("3-D inputs need the q_num_heads and kv_num_heads attributes")
                    );
                };
                if hq == 0 || hkv == 0 || q[2] % hq != 0 || k[2] % hkv != 0 || v[2] % hkv != 0 {
                    return Err(self.err(format!("hidden sizes of Q {q:?} / K {k:?} / V {v:?} do not divide by {hq} / {hkv} heads")));
                }
                Heads {
                    batch: q[0],
                    hq,
                    sq: q[1],
                    hkv,
                    sk: k[1],
                    dk: k[2] / hkv,
                    dv: v[2] / hkv,
                }
            }
            (4, 4, 4) => Heads {
                batch: q[0],
                hq: q[1],
                sq: q[2],
                hkv: k[1],
                sk: k[2],
                dk: k[3],
                dv: v[3],
            },
            _ => return Err(bad()),
        };
        let dq = if q.len() == 3 { q[2] / h.hq } else { q[3] };
        if k[0] != h.batch
            || v[0] != h.batch
            || dq != h.dk
            || (v.len() == 4 && (v[1] != h.hkv || v[2] != h.sk))
            || (v.len() == 3 && v[1] != h.sk)
            || h.hkv == 0
            || h.hq % h.hkv != 0
        {
            return Err(bad());
        }
        Ok(h)
    }
}
