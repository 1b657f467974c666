//! The fused multi-head attention kernel (see [`super::FusedOp::Attention`]): per batch and
//! head, `Q·Kᵀ` into one `Sq × Sk` scratch through strided views of q and k, scale and mask
//! in one pass, the plain softmax, then `·V` written straight into the output layout.
use super::{expect_inputs, f32s, scalar};
use crate::index::broadcast_strides4;
use crate::matmul::{gemm_into, MatView};
use crate::simd::vectorized;
use crate::softmax::softmax_row;
use crate::{describe, make, KResult};
use tessera_ir::{DType, Tensor, TensorData};

/// Shape of a fused attention.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionShape {
    /// Batch B.
    pub batch: usize,
    /// Query length Sq.
    pub q_len: usize,
    /// Key/value length Sk.
    pub kv_len: usize,
    /// Heads H (of q and of the output).
    pub heads: usize,
    /// Key/value heads Hk (H is a multiple; query head `hh` reads kv head `hh / (H / Hk)`:
    /// grouped-query attention's repeat of each kv head, `Expand` of `[B, Hk, 1, Sk, D]`).
    pub kv_heads: usize,
    /// Layouts of q, k and v.
    pub layouts: [HeadLayout; 3],
    /// Head size D.
    pub head_dim: usize,
    /// The scores are multiplied by `c` instead of divided.
    pub scale_mul: bool,
    /// How the scaled scores are masked.
    pub mask: AttentionMask,
    /// Output shape: `[B, H, Sq, D]`, or `[B, Sq, H·D]` (heads merged back) when the chain
    /// ended in Transpose + Reshape.
    pub out_shape: Vec<usize>,
}

/// Where a fused attention's q, k or v comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadLayout {
    /// `[B, S, heads·D]`, tokens first (split into heads by the fused Reshape + Transpose).
    TokenMajor,
    /// `[B, heads, S, D]`, heads already split (e.g. after a rotary embedding).
    HeadMajor,
}

impl HeadLayout {
    /// Offset of head `hh`'s first row in batch `b` and the row stride, for a tensor of
    /// `heads` heads of `s` rows of `d`.
    fn head(self, b: usize, hh: usize, heads: usize, s: usize, d: usize) -> (usize, usize) {
        match self {
            HeadLayout::TokenMajor => (b * s * heads * d + hh * d, heads * d),
            HeadLayout::HeadMajor => ((b * heads + hh) * s * d, d),
        }
    }
}

/// The mask of a fused attention; its tensors broadcast to `[B, H, Sq, Sk]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionMask {
    /// No mask.
    None,
    /// `z + mask` (one more input: the f32 mask; BERT's padding mask).
    Add,
    /// `Where(cond, z, fill)` (two more inputs: the bool condition and a one-element f32
    /// fill; GPT-2's causal mask).
    Select,
}

/// A resolved attention mask: data and strides over `[B, H, Sq, Sk]`.
#[derive(Clone, Copy)]
enum Mask<'a> {
    None,
    Add(&'a [f32], [usize; 4]),
    Select(&'a [bool], [usize; 4], f32),
}

/// Strides of `mask` broadcast to `[B, H, Sq, Sk]` (right-aligned, numpy rules).
fn mask_strides(mask: &Tensor, full: [usize; 4]) -> KResult<[usize; 4]> {
    broadcast_strides4(&mask.shape, full)
        .ok_or_else(|| format!("mask {} does not broadcast to {full:?}", describe(mask)))
}

pub(super) fn attention(a: &AttentionShape, inputs: &[&Tensor]) -> KResult<Tensor> {
    let extra = match a.mask {
        AttentionMask::None => 0,
        AttentionMask::Add => 1,
        AttentionMask::Select => 2,
    };
    expect_inputs(inputs, 4 + extra)?;
    let (bsz, sq, sk, h, d) = (a.batch, a.q_len, a.kv_len, a.heads, a.head_dim);
    let hd = h * d;
    let hk = a.kv_heads;
    if hk == 0 || h % hk != 0 {
        return Err(format!(
            "{h} query heads are not a multiple of {hk} kv heads"
        ));
    }
    let group = h / hk;
    let (q, k, v) = (
        f32s(inputs[0], "q")?,
        f32s(inputs[1], "k")?,
        f32s(inputs[2], "v")?,
    );
    if q.len() != bsz * sq * hd || k.len() != bsz * sk * hk * d || v.len() != bsz * sk * hk * d {
        return Err(format!(
            "q {}, k {}, v {} do not hold B={bsz}, H={h} (kv {hk}), D={d} with Sq={sq}, Sk={sk}",
            describe(inputs[0]),
            describe(inputs[1]),
            describe(inputs[2])
        ));
    }
    let [q_lay, k_lay, v_lay] = a.layouts;
    let c = scalar(inputs[3], "scale")?;
    let full = [bsz, h, sq, sk];
    let mask = match a.mask {
        AttentionMask::None => Mask::None,
        AttentionMask::Add => Mask::Add(f32s(inputs[4], "mask")?, mask_strides(inputs[4], full)?),
        AttentionMask::Select => {
            let cond = inputs[4].as_bool().ok_or_else(|| {
                format!("mask condition must be bool, got {}", describe(inputs[4]))
            })?;
            let fill = scalar(inputs[5], "mask fill")?;
            Mask::Select(cond, mask_strides(inputs[4], full)?, fill)
        }
    };
    let merged = a.out_shape.len() == 3;
    let mut out = vec![0f32; bsz * h * sq * d];
    if out.is_empty() || sk == 0 {
        // No queries: an empty output. No keys: the softmax is over nothing and the
        // product with an empty V sums nothing, so zeros, as the unfused Softmax + MatMul.
        return make(DType::F32, a.out_shape.clone(), TensorData::F32(out));
    }
    // One head: the scaled, masked softmax of Q·Kᵀ into `scores`, then P·V into `ctx`
    // ([Sq, D] rows) or, for the unmerged layout, straight into `out` at `direct`.
    let head = |b: usize,
                hh: usize,
                scores: &mut [f32],
                ctx: &mut [f32],
                direct: Option<&mut [f32]>|
     -> KResult<()> {
        let (base_q, q_rs) = q_lay.head(b, hh, h, sq, d);
        let (base_k, k_rs) = k_lay.head(b, hh / group, hk, sk, d);
        let (base_v, v_rs) = v_lay.head(b, hh / group, hk, sk, d);
        // scores = Q_bh · K_bhᵀ: Q rows are tokens; Kᵀ element (e, j) is key j's e.
        let qv = MatView::row_major(q, base_q, q_rs);
        let ktv = MatView::col_major(k, base_k, k_rs);
        gemm_into(sq, sk, d, scores, 0, qv, ktv, 1.0, false)?;
        vectorized(
            #[inline(always)]
            || {
                for (i, row) in scores.chunks_exact_mut(sk).enumerate() {
                    // z = s ⊘ c, masked, in one pass, as the unfused Div/Mul and
                    // Add/Where compute it; then the plain softmax.
                    let scale = |s: f32| if a.scale_mul { s * c } else { s / c };
                    match mask {
                        Mask::None => row.iter_mut().for_each(|s| *s = scale(*s)),
                        Mask::Add(m, ms) => {
                            let mo = b * ms[0] + hh * ms[1] + i * ms[2];
                            if ms[3] == 1 {
                                row.iter_mut()
                                    .zip(&m[mo..mo + sk])
                                    .for_each(|(s, &e)| *s = scale(*s) + e);
                            } else {
                                for (j, s) in row.iter_mut().enumerate() {
                                    *s = scale(*s) + m[mo + j * ms[3]];
                                }
                            }
                        }
                        Mask::Select(cond, ms, fill) if ms[3] == 1 => {
                            let mo = b * ms[0] + hh * ms[1] + i * ms[2];
                            // Contiguous condition row: a branch-free select that vectorises.
                            row.iter_mut()
                                .zip(&cond[mo..mo + sk])
                                .for_each(|(s, &keep)| {
                                    let z = scale(*s);
                                    *s = if keep { z } else { fill };
                                });
                        }
                        Mask::Select(cond, ms, fill) => {
                            let mo = b * ms[0] + hh * ms[1] + i * ms[2];
                            for (j, s) in row.iter_mut().enumerate() {
                                *s = if cond[mo + j * ms[3]] {
                                    scale(*s)
                                } else {
                                    fill
                                };
                            }
                        }
                    }
                    softmax_row(row, false);
                }
            },
        );
        let pv = MatView::row_major(scores, 0, sk);
        let vv = MatView::row_major(v, base_v, v_rs);
        match direct {
            Some(dst) => gemm_into(sq, d, sk, dst, 0, pv, vv, 1.0, false),
            None => gemm_into(sq, d, sk, ctx, 0, pv, vv, 1.0, false),
        }
    };
    let threads = match rayon::current_thread_index() {
        Some(_) => rayon::current_num_threads(),
        None => 1,
    };
    if threads > 1 && bsz * h > 1 {
        // Inside a device's pool: heads in parallel, each into its own [Sq, D] block
        // (the same arithmetic per head), then placed in the output layout.
        use rayon::prelude::*;
        let ctxs: Vec<Vec<f32>> = (0..bsz * h)
            .into_par_iter()
            .map_init(
                || vec![0f32; sq * sk],
                |scores, i| {
                    let mut ctx = vec![0f32; sq * d];
                    head(i / h, i % h, scores, &mut ctx, None).map(|_| ctx)
                },
            )
            .collect::<KResult<_>>()?;
        for (i, ctx) in ctxs.iter().enumerate() {
            let (b, hh) = (i / h, i % h);
            if merged {
                for (r, row) in ctx.chunks_exact(d).enumerate() {
                    let o = b * sq * hd + r * hd + hh * d;
                    out[o..o + d].copy_from_slice(row);
                }
            } else {
                let o = (b * h + hh) * sq * d;
                out[o..o + sq * d].copy_from_slice(ctx);
            }
        }
        return make(DType::F32, a.out_shape.clone(), TensorData::F32(out));
    }
    let mut scores = vec![0f32; sq * sk];
    let mut ctx = vec![0f32; sq * d];
    for b in 0..bsz {
        for hh in 0..h {
            if merged {
                head(b, hh, &mut scores, &mut ctx, None)?;
                for (i, r) in ctx.chunks_exact(d).enumerate() {
                    let o = b * sq * hd + i * hd + hh * d;
                    out[o..o + d].copy_from_slice(r);
                }
            } else {
                let o = (b * h + hh) * sq * d;
                head(b, hh, &mut scores, &mut ctx, Some(&mut out[o..o + sq * d]))?;
            }
        }
    }
    make(DType::F32, a.out_shape.clone(), TensorData::F32(out))
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::{eval_fused, FusedOp};
    use super::*;
    use tessera_ir::op::*;
    use tessera_ir::Op;

    /// The unfused attention chain, as exported from PyTorch (BERT-style); `mask` maps the
    /// scaled scores to the masked ones.
    fn attention_chain(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        c: &Tensor,
        mask: impl Fn(&Tensor) -> Tensor,
        h: usize,
    ) -> (Tensor, Tensor) {
        let (b, s, hd) = (q.shape[0], q.shape[1], q.shape[2]);
        let heads = |t: &Tensor, perm: Vec<usize>| {
            let r = run(
                Op::Reshape(ReshapeAttrs {
                    shape: vec![b, s, h, hd / h],
                }),
                &[t],
            );
            run(Op::Transpose(TransposeAttrs { perm }), &[&r])
        };
        let q4 = heads(q, vec![0, 2, 1, 3]);
        let kt = heads(k, vec![0, 2, 3, 1]);
        let v4 = heads(v, vec![0, 2, 1, 3]);
        let sc = run(Op::MatMul(MatMulAttrs {}), &[&q4, &kt]);
        let z = mask(&bin(BinaryOp::Div, &sc, c));
        let p = run(
            Op::Softmax(SoftmaxAttrs {
                axis: 3,
                log: false,
            }),
            &[&z],
        );
        let o = run(Op::MatMul(MatMulAttrs {}), &[&p, &v4]);
        let o2 = run(
            Op::Transpose(TransposeAttrs {
                perm: vec![0, 2, 1, 3],
            }),
            &[&o],
        );
        let merged = run(
            Op::Reshape(ReshapeAttrs {
                shape: vec![b, s, hd],
            }),
            &[&o2],
        );
        (o, merged)
    }

    /// Random q, k, v of shape `[b, s, h·d]` (seeds `seed`, `seed + 1`, `seed + 2`) and the
    /// scale divisor 2 for `[b, s, h, d]`.
    fn qkv_and_scale([b, s, h, d]: [usize; 4], seed: u64) -> [Tensor; 4] {
        [
            rand(vec![b, s, h * d], seed),
            rand(vec![b, s, h * d], seed + 1),
            rand(vec![b, s, h * d], seed + 2),
            Tensor::f32(vec![], vec![2.0]),
        ]
    }

    /// Self-attention over `[b, s, h, d]` that divides the scores by the scale.
    fn attention_op(
        [b, s, h, d]: [usize; 4],
        mask: AttentionMask,
        out_shape: Vec<usize>,
    ) -> FusedOp {
        FusedOp::Attention(AttentionShape {
            batch: b,
            q_len: s,
            kv_len: s,
            heads: h,
            kv_heads: h,
            layouts: [HeadLayout::TokenMajor; 3],
            head_dim: d,
            scale_mul: false,
            mask,
            out_shape,
        })
    }

    #[test]
    fn attention_equals_the_unfused_chain() {
        let (b, s, h, d) = (2, 7, 3, 4);
        let [q, k, v, c] = qkv_and_scale([b, s, h, d], 11);
        // A padding mask [B, 1, 1, S]: large negative on the masked keys.
        let mut mv = vec![0f32; b * s];
        mv[s - 1] = -10000.0;
        mv[s + 2] = -10000.0;
        let m = Tensor::f32(vec![b, 1, 1, s], mv);
        let add_mask = |z: &Tensor| bin(BinaryOp::Add, z, &m);
        let (want_heads, want_merged) = attention_chain(&q, &k, &v, &c, add_mask, h);
        let attention = |out_shape| attention_op([b, s, h, d], AttentionMask::Add, out_shape);
        for (shape, want) in [
            (vec![b, h, s, d], &want_heads),
            (vec![b, s, h * d], &want_merged),
        ] {
            let op = attention(shape.clone());
            let got = eval_fused(&op, &[&q, &k, &v, &c, &m]).unwrap();
            assert_eq!(got.shape, shape);
            let worst = max_abs_diff(&got, want);
            // Same arithmetic; only the GEMM's operand strides differ.
            assert!(worst < 1e-6, "max abs difference {worst}");
            // Inside a device's pool the heads run in parallel: the same bits.
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(3)
                .build()
                .unwrap();
            let par = pool.install(|| eval_fused(&op, &[&q, &k, &v, &c, &m]).unwrap());
            assert_eq!(par, got);
        }
        // A mask that does not broadcast to the scores is an error naming the mask.
        let op = attention(vec![b, h, s, d]);
        let bad = rand(vec![b, 1, 1, s + 1], 14);
        let err = eval_fused(&op, &[&q, &k, &v, &c, &bad]).unwrap_err();
        assert!(err.to_string().contains("mask"), "{err}");
    }

    /// Sq = 0 gives an empty output and Sk = 0 zeros, as the unfused chain (Softmax over
    /// an empty axis, then a MatMul with an empty inner dimension); neither panics.
    #[test]
    fn empty_sequences_give_empty_or_zero_outputs() {
        let (b, h, d) = (2, 3, 4);
        let c = Tensor::f32(vec![], vec![2.0]);
        for (sq, sk) in [(0, 5), (5, 0), (0, 0)] {
            let op = |out_shape| {
                FusedOp::Attention(AttentionShape {
                    batch: b,
                    q_len: sq,
                    kv_len: sk,
                    heads: h,
                    kv_heads: h,
                    layouts: [HeadLayout::TokenMajor; 3],
                    head_dim: d,
                    scale_mul: false,
                    mask: AttentionMask::None,
                    out_shape,
                })
            };
            let (q, kv) = (rand(vec![b, sq, h * d], 41), rand(vec![b, sk, h * d], 42));
            // The unfused tail: softmax over the (possibly empty) key axis, then · V.
            let p = run(
                Op::Softmax(SoftmaxAttrs {
                    axis: 3,
                    log: false,
                }),
                &[&Tensor::f32(vec![b, h, sq, sk], vec![0.5; b * h * sq * sk])],
            );
            let v4 = Tensor::f32(vec![b, h, sk, d], vec![1.0; b * h * sk * d]);
            let want = run(Op::MatMul(MatMulAttrs {}), &[&p, &v4]);
            assert_eq!(want.as_f32().unwrap(), vec![0.0; b * h * sq * d]);
            for shape in [vec![b, h, sq, d], vec![b, sq, h * d]] {
                let got = eval_fused(&op(shape.clone()), &[&q, &kv, &kv, &c]).unwrap();
                assert_eq!(got.shape, shape);
                assert_eq!(
                    got.as_f32().unwrap(),
                    want.as_f32().unwrap(),
                    "Sq={sq} Sk={sk}"
                );
            }
        }
    }

    #[test]
    fn causal_where_mask_attention_equals_the_unfused_chain() {
        let (b, s, h, d) = (1, 6, 2, 4);
        let [q, k, v, c] = qkv_and_scale([b, s, h, d], 21);
        // GPT-2: Where(tril [1, 1, S, S], scores, f32::MIN).
        let tril: Vec<bool> = (0..s * s).map(|e| e % s <= e / s).collect();
        let cond = Tensor::new(DType::Bool, vec![1, 1, s, s], TensorData::Bool(tril)).unwrap();
        let fill = Tensor::f32(vec![], vec![f32::MIN]);
        let select = |z: &Tensor| run(Op::Where, &[&cond, z, &fill]);
        let (want, _) = attention_chain(&q, &k, &v, &c, select, h);
        let op = attention_op([b, s, h, d], AttentionMask::Select, vec![b, h, s, d]);
        let got = eval_fused(&op, &[&q, &k, &v, &c, &cond, &fill]).unwrap();
        let worst = max_abs_diff(&got, &want);
        assert!(worst < 1e-6, "max abs difference {worst}");
        // The first query sees only the first key: its output row is v's first row.
        assert_eq!(&got.as_f32().unwrap()[..d], &v.as_f32().unwrap()[..d]);
        // A non-bool condition is refused by name.
        let err = eval_fused(&op, &[&q, &k, &v, &c, &fill, &fill]).unwrap_err();
        assert!(err.to_string().contains("condition"), "{err}");
    }

    /// Llama-style: q `[B, H, S, D]` and k, v `[B, Hk, S, D]` already split into heads (after
    /// the rotary embedding), the kv heads repeated by Reshape + Expand + Reshape (GQA), the
    /// scores multiplied by the scale and a causal additive mask.
    #[test]
    fn head_major_grouped_query_attention_equals_the_unfused_chain() {
        let (b, s, h, hk, d) = (2, 6, 4, 2, 3);
        let q = rand(vec![b, h, s, d], 31);
        let k = rand(vec![b, hk, s, d], 32);
        let v = rand(vec![b, hk, s, d], 33);
        let c = Tensor::f32(vec![], vec![0.5]);
        let causal: Vec<f32> = (0..s * s)
            .map(|e| if e % s > e / s { f32::MIN } else { 0.0 })
            .collect();
        let m = Tensor::f32(vec![1, 1, s, s], causal);
        let repeat = |t: &Tensor| {
            let r = |t: &Tensor, shape: Vec<usize>| run(Op::Reshape(ReshapeAttrs { shape }), &[t]);
            let e = run(
                Op::Expand(ExpandAttrs {
                    shape: vec![b, hk, h / hk, s, d],
                }),
                &[&r(t, vec![b, hk, 1, s, d])],
            );
            r(&e, vec![b, h, s, d])
        };
        let kt = run(
            Op::Transpose(TransposeAttrs {
                perm: vec![0, 1, 3, 2],
            }),
            &[&repeat(&k)],
        );
        let sc = run(Op::MatMul(MatMulAttrs {}), &[&q, &kt]);
        let z = bin(BinaryOp::Add, &bin(BinaryOp::Mul, &sc, &c), &m);
        let p = run(
            Op::Softmax(SoftmaxAttrs {
                axis: 3,
                log: false,
            }),
            &[&z],
        );
        let want = run(Op::MatMul(MatMulAttrs {}), &[&p, &repeat(&v)]);
        let merged = run(
            Op::Reshape(ReshapeAttrs {
                shape: vec![b, s, h * d],
            }),
            &[&run(
                Op::Transpose(TransposeAttrs {
                    perm: vec![0, 2, 1, 3],
                }),
                &[&want],
            )],
        );
        for (out_shape, want) in [(vec![b, h, s, d], &want), (vec![b, s, h * d], &merged)] {
            let op = FusedOp::Attention(AttentionShape {
                batch: b,
                q_len: s,
                kv_len: s,
                heads: h,
                kv_heads: hk,
                layouts: [HeadLayout::HeadMajor; 3],
                head_dim: d,
                scale_mul: true,
                mask: AttentionMask::Add,
                out_shape: out_shape.clone(),
            });
            let got = eval_fused(&op, &[&q, &k, &v, &c, &m]).unwrap();
            assert_eq!(got.shape, out_shape);
            let worst = max_abs_diff(&got, want);
            assert!(worst < 1e-6, "max abs difference {worst}");
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(3)
                .build()
                .unwrap();
            let par = pool.install(|| eval_fused(&op, &[&q, &k, &v, &c, &m]).unwrap());
            assert_eq!(par, got);
        }
        // kv heads that do not divide the query heads are refused by name.
        let op = FusedOp::Attention(AttentionShape {
            batch: b,
            q_len: s,
            kv_len: s,
            heads: h,
            kv_heads: 3,
            layouts: [HeadLayout::HeadMajor; 3],
            head_dim: d,
            scale_mul: true,
            mask: AttentionMask::None,
            out_shape: vec![b, h, s, d],
        });
        let err = eval_fused(&op, &[&q, &k, &v, &c]).unwrap_err();
        assert!(err.to_string().contains("kv heads"), "{err}");
    }
}
