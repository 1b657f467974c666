//! ONNX Attention (opsets 23–25, <https://onnx.ai/onnx/operators/onnx__Attention.html>).
//!
//! Cost: Q·Kᵀ and P·V, 2·B·H·Sq·T·(Dk + Dv) FLOPs (4·B·H·Sq·T·D for equal head sizes), plus
//! 5 per score for the softmax, with T = past + Sk. Partitioning: split by heads
//! (`attention-heads`) or by batch (`attention-batch`).
use super::{Arity, OpSpec, Partitioning};
use crate::infer::{InferCx, TypedShape};
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

impl OpSpec for AttentionAttrs {
    fn name(&self) -> String {
        "Attention".into()
    }
    /// Q, K, V, then attn_mask, past_key + past_value, nonpad_kv_seqlen when present.
    fn arity(&self) -> Arity {
        Arity::exactly(
            3 + self.has_mask as usize + 2 * self.has_past as usize + self.has_nonpad as usize,
        )
    }
    /// The output: Y, or `qk_matmul_output` `[B, q heads, Sq, past + Sk]` when `qk_output`.
    fn infer(&self, cx: &InferCx) -> Result<Vec<TypedShape>, IrError> {
        attention(cx, self)
    }
    /// From the shapes of Q, K, V and past_key. With 3-D inputs the heads cancel out of
    /// the products (H·Dk is Q's hidden size); the softmax term takes the head count from
    /// the attribute, i.e. the logical one (on a head-split rank it is N times too large,
    /// under 2% of the total for head sizes ≥ 64).
    fn flops(&self, inputs: &[&[usize]], _outputs: &[&[usize]]) -> u64 {
        let get = |i: usize| inputs.get(i).copied().unwrap_or(&[]);
        let (q, k, v) = (get(0), get(1), get(2));
        let dim = |s: &[usize], i: usize| s.get(i).copied().unwrap_or(1) as u64;
        let past = if self.has_past {
            dim(get(3 + self.has_mask as usize), 2)
        } else {
            0
        };
        // (B·Sq·T, H·Dk, H·Dv, H)
        let (rows, hdk, hdv, heads) = if q.len() == 3 {
            let hq = self.q_num_heads.unwrap_or(1).max(1) as u64;
            let group = hq / self.kv_num_heads.unwrap_or(1).max(1) as u64;
            let t = past + dim(k, 1);
            (dim(q, 0) * dim(q, 1) * t, dim(q, 2), dim(v, 2) * group, hq)
        } else {
            let t = past + dim(k, 2);
            let h = dim(q, 1);
            (dim(q, 0) * dim(q, 2) * t, h * dim(q, 3), h * dim(v, 3), h)
        };
        2 * rows * (hdk + hdv) + 5 * rows * heads
    }
    fn partitioning(&self) -> Partitioning {
        Partitioning::Rules(&[
            "attention-heads",
            "attention-batch",
            "attention-kv-replicated",
        ])
    }
}

fn attention(cx: &InferCx, a: &AttentionAttrs) -> Result<Vec<TypedShape>, IrError> {
    for i in 0..3 {
        cx.float_input(i)?;
    }
    let h = attention_heads(cx, a)?;
    let mut next = 3;
    if a.has_mask {
        let (dt, ms) = cx.inputs[next];
        if !(dt.is_float() || dt == DType::Bool) || ms.is_empty() || ms.len() > 4 {
            return Err(cx.err(format!(
                "attn_mask must be a float or bool tensor of rank 1 to 4, got {dt} {ms:?}"
            )));
        }
        next += 1;
    }
    let mut past = 0;
    if a.has_past {
        let (pk, pv) = (cx.inputs[next].1, cx.inputs[next + 1].1);
        if pk.len() != 4
            || pv.len() != 4
            || pk[0] != h.batch
            || pk[1] != h.hkv
            || pk[3] != h.dk
            || pv[..3] != [h.batch, h.hkv, pk[2]]
            || pv[3] != h.dv
        {
            return Err(cx.err(format!(
                "past_key {pk:?} / past_value {pv:?} do not match [B={}, kv heads={}, P, {}] / [.., {}]",
                h.batch, h.hkv, h.dk, h.dv
            )));
        }
        past = pk[2];
        next += 2;
    }
    if a.has_nonpad && !matches!(cx.inputs[next].0, DType::I64 | DType::I32) {
        return Err(cx.err("nonpad_kv_seqlen must be an integer tensor"));
    }
    let total = past + h.sk;
    let dt = cx.inputs[0].0;
    let y = if cx.inputs[0].1.len() == 3 {
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

fn attention_heads(cx: &InferCx, a: &AttentionAttrs) -> Result<Heads, IrError> {
    let (q, k, v) = (cx.inputs[0].1, cx.inputs[1].1, cx.inputs[2].1);
    let bad = || {
        cx.err(format!("Q {q:?}, K {k:?}, V {v:?} are not 3-D [B, S, hidden] or 4-D [B, heads, S, head_size] alike"))
    };
    let h = match (q.len(), k.len(), v.len()) {
        (3, 3, 3) => {
            let (Some(hq), Some(hkv)) = (a.q_num_heads, a.kv_num_heads) else {
                return Err(cx.err("3-D inputs need the q_num_heads and kv_num_heads attributes"));
            };
            if hq == 0 || hkv == 0 || q[2] % hq != 0 || k[2] % hkv != 0 || v[2] % hkv != 0 {
                return Err(cx.err(format!("hidden sizes of Q {q:?} / K {k:?} / V {v:?} do not divide by {hq} / {hkv} heads")));
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
