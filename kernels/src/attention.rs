//! ONNX Attention (opsets 23–25), following the operator's reference implementation
//! (`onnx/reference/ops/op_attention.py`): 3-D inputs split into heads, the past cache
//! prepended to K and V, an additive bias built from the mask (bool: false → −∞; shorter
//! than the keys: padded with −∞), the bottom-right causal frontier, the sliding window and
//! `nonpad_kv_seqlen`; Q and K each scaled by √scale, softcap, softmax with fully masked
//! rows giving 0, grouped-query heads sharing K/V heads. f32 arithmetic.
use super::index::broadcast_strides4;
use super::matmul::{gemm_into, MatView};
use super::simd;
use super::softmax::softmax_row_guarded;
use super::{describe, make, KResult};
use tessera_ir::op::AttentionAttrs;
use tessera_ir::{Tensor, TensorData};

/// A `[B, H, S, D]` f32 array.
struct Heads {
    v: Vec<f32>,
    h: usize,
    s: usize,
    d: usize,
}

impl Heads {
    fn at(&self, b: usize, h: usize) -> &[f32] {
        let n = self.s * self.d;
        &self.v[(b * self.h + h) * n..(b * self.h + h + 1) * n]
    }
}

fn floats<'a>(t: &'a Tensor, what: &str) -> KResult<&'a [f32]> {
    t.as_f32()
        .ok_or_else(|| format!("{what} must be float, got {}", describe(t)))
}

/// `t` as `[B, H, S, D]`: 4-D as is, 3-D `[B, S, H·D]` split into `heads` heads.
fn heads(t: &Tensor, heads: Option<usize>, what: &str) -> KResult<Heads> {
    let v = floats(t, what)?;
    match t.shape[..] {
        [_, h, s, d] => Ok(Heads {
            v: v.to_vec(),
            h,
            s,
            d,
        }),
        [b, s, hid] => {
            let h = heads.filter(|&h| h > 0 && hid % h == 0).ok_or_else(|| {
                format!("{what} {} does not split into {heads:?} heads", describe(t))
            })?;
            let d = hid / h;
            let mut out = vec![0f32; v.len()];
            for bi in 0..b {
                for si in 0..s {
                    for hi in 0..h {
                        let src = (bi * s + si) * hid + hi * d;
                        let dst = ((bi * h + hi) * s + si) * d;
                        out[dst..dst + d].copy_from_slice(&v[src..src + d]);
                    }
                }
            }
            Ok(Heads { v: out, h, s, d })
        }
        _ => Err(format!("{what} must be 3-D or 4-D, got {}", describe(t))),
    }
}

/// `past` then `cur` along the sequence axis.
fn concat_seq(past: &Heads, cur: &Heads, batch: usize) -> Heads {
    let s = past.s + cur.s;
    let mut v = Vec::with_capacity(batch * cur.h * s * cur.d);
    for b in 0..batch {
        for h in 0..cur.h {
            v.extend_from_slice(past.at(b, h));
            v.extend_from_slice(cur.at(b, h));
        }
    }
    Heads {
        v,
        h: cur.h,
        s,
        d: cur.d,
    }
}

/// The mask as additive f32 values, right-aligned to `[B, H, Sq, T]` (strides; 0 on
/// broadcast axes) with its last axis padded to T by −∞.
struct Bias {
    v: Vec<f32>,
    strides: [usize; 4],
    width: usize,
}

impl Bias {
    fn get(&self, b: usize, h: usize, i: usize, j: usize) -> f32 {
        if j >= self.width {
            return f32::NEG_INFINITY;
        }
        let s = self.strides;
        self.v[b * s[0] + h * s[1] + i * s[2] + j * s[3]]
    }
}

fn mask_bias(m: &Tensor, full: [usize; 4]) -> KResult<Bias> {
    let v: Vec<f32> = match &m.data {
        TensorData::Bool(b) => b
            .iter()
            .map(|&x| if x { 0.0 } else { f32::NEG_INFINITY })
            .collect(),
        TensorData::F32(f) => f.clone(),
        TensorData::I64(_) => {
            return Err(format!(
                "attn_mask must be float or bool, got {}",
                describe(m)
            ))
        }
    };
    let r = m.shape.len();
    let bad = || format!("attn_mask {} does not broadcast to {full:?}", describe(m));
    if r == 0 || m.shape[r - 1] > full[3] {
        return Err(bad());
    }
    // Its last axis may be shorter than the keys (padded by −∞ in `get`).
    let strides = broadcast_strides4(&m.shape, [full[0], full[1], full[2], m.shape[r - 1]])
        .ok_or_else(bad)?;
    Ok(Bias {
        v,
        strides,
        width: m.shape[r - 1],
    })
}

/// The factor Q and K are each multiplied by: √scale (default scale 1/√`head_dim`), computed
/// in f64 and rounded once, as the reference.
pub fn attention_qk_factor(a: &AttentionAttrs, head_dim: usize) -> f32 {
    let scale = a.scale.map_or(1.0 / (head_dim as f64).sqrt(), |s| s as f64);
    scale.sqrt() as f32
}

/// Evaluates Attention; returns Y, or `qk_matmul_output` when `a.qk_output`.
pub(crate) fn attention(a: &AttentionAttrs, inputs: &[&Tensor]) -> KResult<Tensor> {
    let (q_in, k_in, v_in) = (inputs[0], inputs[1], inputs[2]);
    let three_d = q_in.shape.len() == 3;
    let q = heads(q_in, a.q_num_heads, "Q")?;
    let mut k = heads(k_in, a.kv_num_heads, "K")?;
    let mut v = heads(v_in, a.kv_num_heads, "V")?;
    let batch = q_in.shape[0];
    let mut next = 3;
    let mask = a.has_mask.then(|| inputs[next]);
    next += a.has_mask as usize;
    let mut past_len = 0;
    if a.has_past {
        let pk = heads(inputs[next], None, "past_key")?;
        let pv = heads(inputs[next + 1], None, "past_value")?;
        past_len = pk.s;
        k = concat_seq(&pk, &k, batch);
        v = concat_seq(&pv, &v, batch);
        next += 2;
    }
    let nonpad: Option<Vec<i64>> = a.has_nonpad.then(|| inputs[next].to_i64_vec());
    let (hq, sq, dq) = (q.h, q.s, q.d);
    let (hkv, t) = (k.h, k.s);
    if hkv == 0 || hq % hkv != 0 || k.d != dq || v.h != hkv || v.s != t {
        return Err(format!(
            "Q [{hq} heads, {dq}], K [{hkv} heads, {} keys, {}], V [{} heads, {} keys] do not fit",
            t, k.d, v.h, v.s
        ));
    }
    let reps = hq / hkv;
    let dv = v.d;
    let full = [batch, hq, sq, t];
    let bias_mask = mask.map(|m| mask_bias(m, full)).transpose()?;
    if let Some(np) = &nonpad {
        if np.len() != batch {
            return Err(format!(
                "nonpad_kv_seqlen has {} entries for batch {batch}",
                np.len()
            ));
        }
    }
    let s = attention_qk_factor(a, dq);
    let qs: Vec<f32> = q.v.iter().map(|x| x * s).collect();
    let ks: Vec<f32> = k.v.iter().map(|x| x * s).collect();
    let mut y = vec![0f32; batch * hq * sq * dv];
    // The optional second output is only materialised when it is asked for.
    let mut qk_out = if a.qk_output {
        vec![0f32; batch * hq * sq * t]
    } else {
        Vec::new()
    };
    let mut scores = vec![0f32; sq * t];
    let mut probs = vec![0f32; sq * t];
    for b in 0..batch {
        // Offset of the causal frontier / window: past length, or nonpad − Sq per batch.
        let offset = match (&nonpad, a.has_past) {
            (Some(np), false) => np[b] - sq as i64,
            _ => past_len as i64,
        };
        for h in 0..hq {
            let kv = h / reps;
            let qv = MatView::row_major(&qs, (b * hq + h) * sq * dq, dq);
            let kt = MatView::col_major(&ks, (b * hkv + kv) * t * dq, dq);
            gemm_into(sq, t, dq, &mut scores, 0, qv, kt, 1.0, false)?;
            if a.softcap > 0.0 {
                scores
                    .iter_mut()
                    .for_each(|x| *x = (*x / a.softcap).tanh() * a.softcap);
            }
            // Rows in a loop compiled for the widest vector extension (the softmax's exp,
            // max and sum vectorise).
            simd::vectorized(
                #[inline(always)]
                || {
                    for i in 0..sq {
                        let row = &scores[i * t..(i + 1) * t];
                        let prow = &mut probs[i * t..(i + 1) * t];
                        let mut all_masked = true;
                        for (j, (p, &x)) in prow.iter_mut().zip(row).enumerate() {
                            let mut bias = bias_mask.as_ref().map_or(0.0, |m| m.get(b, h, i, j));
                            if a.is_causal && j as i64 > i as i64 + offset {
                                bias += f32::NEG_INFINITY;
                            }
                            let diff = i as i64 + offset - j as i64;
                            if (a.left_window >= 0 && diff > a.left_window)
                                || (a.right_window >= 0 && -diff > a.right_window)
                            {
                                bias += f32::NEG_INFINITY;
                            }
                            if nonpad.as_ref().is_some_and(|np| j as i64 >= np[b]) {
                                bias += f32::NEG_INFINITY;
                            }
                            all_masked &= bias == f32::NEG_INFINITY;
                            *p = x + bias;
                        }
                        let o = ((b * hq + h) * sq + i) * t;
                        if a.qk_output && a.qk_matmul_output_mode == 2 {
                            qk_out[o..o + t].copy_from_slice(prow);
                        } else if a.qk_output && a.qk_matmul_output_mode != 3 {
                            qk_out[o..o + t].copy_from_slice(row);
                        }
                        if all_masked {
                            prow.fill(0.0);
                        } else {
                            softmax_row_guarded(prow);
                        }
                        if a.qk_output && a.qk_matmul_output_mode == 3 {
                            qk_out[o..o + t].copy_from_slice(prow);
                        }
                    }
                },
            );
            let pv = MatView::row_major(&probs, 0, t);
            let vv = MatView::row_major(&v.v, (b * hkv + kv) * t * dv, dv);
            gemm_into(
                sq,
                dv,
                t,
                &mut y,
                (b * hq + h) * sq * dv,
                pv,
                vv,
                1.0,
                false,
            )?;
        }
    }
    if a.qk_output {
        return make(q_in.dtype, vec![batch, hq, sq, t], TensorData::F32(qk_out));
    }
    if three_d {
        let mut m = vec![0f32; y.len()];
        for b in 0..batch {
            for h in 0..hq {
                for i in 0..sq {
                    let src = ((b * hq + h) * sq + i) * dv;
                    let dst = (b * sq + i) * hq * dv + h * dv;
                    m[dst..dst + dv].copy_from_slice(&y[src..src + dv]);
                }
            }
        }
        make(q_in.dtype, vec![batch, sq, hq * dv], TensorData::F32(m))
    } else {
        make(q_in.dtype, vec![batch, hq, sq, dv], TensorData::F32(y))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iota(shape: Vec<usize>) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor::f32(shape, (0..n).map(|x| x as f32 * 0.1).collect())
    }

    /// Sq = 0 gives an empty output; T = 0 (no keys) gives zeros, as a fully masked row does
    /// (the softmax is over nothing); neither panics, with or without the causal mask.
    #[test]
    fn empty_sequences_give_empty_or_zero_outputs() {
        for is_causal in [false, true] {
            let a = AttentionAttrs {
                q_num_heads: Some(2),
                kv_num_heads: Some(2),
                is_causal,
                ..Default::default()
            };
            let kv = iota(vec![1, 3, 4]);
            let y = attention(&a, &[&iota(vec![1, 0, 4]), &kv, &kv]).unwrap();
            assert_eq!(y.shape, vec![1, 0, 4]);
            assert!(y.as_f32().unwrap().is_empty());
            let none = iota(vec![1, 0, 4]);
            let y = attention(&a, &[&iota(vec![1, 2, 4]), &none, &none]).unwrap();
            assert_eq!(y.shape, vec![1, 2, 4]);
            assert_eq!(y.as_f32().unwrap(), &[0.0; 8]);
            // 4-D [B, H, S, D], both lengths 0, and the scores output [B, H, Sq, T].
            let e4 = iota(vec![1, 2, 0, 3]);
            let y = attention(&a, &[&e4, &e4, &e4]).unwrap();
            assert_eq!(y.shape, vec![1, 2, 0, 3]);
            let qk = AttentionAttrs {
                qk_output: true,
                ..a.clone()
            };
            let s = attention(&qk, &[&iota(vec![1, 2, 2, 3]), &e4, &e4]).unwrap();
            assert_eq!(s.shape, vec![1, 2, 2, 0]);
        }
    }
}
