//! Fused CPU kernels: op chains of transformer blocks that a CPU device runs as one kernel
//! (the patterns are found in a rank's program by `crate::exec::fuse`).
//!
//! Each kernel does the arithmetic of the chain it replaces, in the same order and with the
//! same helpers (`erf`, `softmax_row`, `layer_norm_row`, the same GEMM). The epilogue and
//! Add+LayerNorm kernels match the unfused ops bit for bit (tested); the attention's two
//! GEMMs read strided views of q, k and v, whose blocking may round differently in the last
//! bit (tested within 1e-6; identical on MiniLM). What changes is that the intermediates are
//! never materialised: attention scores live in one `Sq × Sk` scratch
//! per head instead of a `[B, H, Sq, Sk]` tensor, the heads are read from and written to
//! the projections through strides instead of Reshape + Transpose copies, and bias, GELU and
//! residual adds run in the pass that produces or consumes their operand.
use super::matmul::{gemm_into, matmul, MatView};
use super::norm::{layer_norm_row, rows_and_param};
use super::simd::vectorized;
use super::softmax::softmax_row;
use super::unary::erf;
use super::{describe, make, KResult, KernelError};
use tessera_ir::op::NormAttrs;
use tessera_ir::{DType, Tensor, TensorData};

/// A fused op chain (inputs in the order listed per variant).
#[derive(Debug, Clone, PartialEq)]
pub enum FusedOp {
    /// `MatMul(A, B)`, then `+ bias` over the last axis when `bias` (inputs A, B, bias),
    /// then the erf GELU chain `y = (x · (erf(x / c1) + c2)) · c3` when `gelu` (three more
    /// inputs c1, c2, c3, one element each).
    MatMulEpilogue {
        /// A bias vector is added.
        bias: bool,
        /// The GELU chain follows.
        gelu: bool,
    },
    /// `LayerNorm(a + b)` over the last axis (inputs a, b, scale, bias when `has_bias`), or
    /// with `pre_bias` `LayerNorm((a + c) + b)` with c a vector over the last axis (inputs a,
    /// c, b, scale, bias): the bias of a row-parallel layer added after its all-reduce, then
    /// the residual.
    AddLayerNorm {
        /// The LayerNorm's attributes.
        attrs: NormAttrs,
        /// The LayerNorm has a bias input.
        has_bias: bool,
        /// A bias vector is added to `a` first.
        pre_bias: bool,
    },
    /// Multi-head scaled dot-product attention (inputs q, k, v, c, then the mask's inputs,
    /// see [`AttentionMask`]), as `Softmax(mask(Q·Kᵀ ⊘ c)) · V` with `⊘` division (or
    /// multiplication when `scale_mul`), where Q = `q` viewed as `[B, Sq, H, D]` with the head axis moved in front
    /// of the sequence axis, K and V likewise from `k`, `v` (`[B, Sk, H, D]`).
    Attention(AttentionAttrs),
}

/// Shape of a fused attention.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionAttrs {
    /// Batch B.
    pub batch: usize,
    /// Query length Sq.
    pub q_len: usize,
    /// Key/value length Sk.
    pub kv_len: usize,
    /// Heads H.
    pub heads: usize,
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

impl FusedOp {
    /// Short name (profiles, error messages).
    pub fn name(&self) -> &'static str {
        match self {
            FusedOp::MatMulEpilogue { gelu: true, .. } => "fused MatMul+Bias+Gelu",
            FusedOp::MatMulEpilogue { .. } => "fused MatMul+Bias",
            FusedOp::AddLayerNorm { .. } => "fused Add+LayerNorm",
            FusedOp::Attention(_) => "fused Attention",
        }
    }
}

/// Evaluates a fused op on host tensors.
pub fn eval_fused(op: &FusedOp, inputs: &[&Tensor]) -> Result<Tensor, KernelError> {
    let r = match op {
        FusedOp::MatMulEpilogue { bias, gelu } => matmul_epilogue(*bias, *gelu, inputs),
        FusedOp::AddLayerNorm {
            attrs,
            has_bias,
            pre_bias,
        } => add_layer_norm(attrs, *has_bias, *pre_bias, inputs),
        FusedOp::Attention(a) => attention(a, inputs),
    };
    r.map_err(|msg| KernelError {
        op: op.name().into(),
        msg,
    })
}

/// The f32 elements of a tensor whose dtype is exactly f32 (half types round on every op,
/// which the fused kernels do not model).
fn f32s<'a>(t: &'a Tensor, what: &str) -> KResult<&'a [f32]> {
    match (&t.data, t.dtype) {
        (TensorData::F32(v), DType::F32) => Ok(v),
        _ => Err(format!("{what} must be f32, got {}", describe(t))),
    }
}

/// The single element of a one-element f32 tensor.
fn scalar(t: &Tensor, what: &str) -> KResult<f32> {
    match f32s(t, what)? {
        [c] => Ok(*c),
        _ => Err(format!("{what} must have one element, got {}", describe(t))),
    }
}

fn expect_inputs(inputs: &[&Tensor], n: usize) -> KResult<()> {
    if inputs.len() != n {
        return Err(format!("expected {n} inputs, got {}", inputs.len()));
    }
    Ok(())
}

fn matmul_epilogue(bias: bool, gelu: bool, inputs: &[&Tensor]) -> KResult<Tensor> {
    expect_inputs(inputs, 2 + bias as usize + 3 * gelu as usize)?;
    f32s(inputs[0], "A")?;
    f32s(inputs[1], "B")?;
    let mut y = matmul(inputs[0], inputs[1])?;
    let n = y.shape.last().copied().unwrap_or(1);
    let b = if bias {
        let b = f32s(inputs[2], "bias")?;
        if b.len() != n || inputs[2].shape.len() != 1 {
            return Err(format!(
                "bias {} is not a vector of the {n} output columns",
                describe(inputs[2])
            ));
        }
        Some(b)
    } else {
        None
    };
    let g = if gelu {
        let at = 2 + bias as usize;
        Some((
            scalar(inputs[at], "c1")?,
            scalar(inputs[at + 1], "c2")?,
            scalar(inputs[at + 2], "c3")?,
        ))
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
                    if let Some((c1, c2, c3)) = g {
                        row.iter_mut()
                            .for_each(|x| *x = (*x * (erf(*x / c1) + c2)) * c3);
                    }
                }
            },
        );
    }
    Ok(y)
}

fn add_layer_norm(
    attrs: &NormAttrs,
    has_bias: bool,
    pre_bias: bool,
    inputs: &[&Tensor],
) -> KResult<Tensor> {
    expect_inputs(inputs, 3 + has_bias as usize + pre_bias as usize)?;
    let (c, inputs) = match pre_bias {
        true => (Some(inputs[1]), [&inputs[..1], &inputs[2..]].concat()),
        false => (None, inputs.to_vec()),
    };
    let (a, b) = (inputs[0], inputs[1]);
    let (x, y) = (f32s(a, "a")?, f32s(b, "b")?);
    let n = a.shape.last().copied().unwrap_or(1);
    let c = match c {
        Some(c) if c.shape != [n] => {
            return Err(format!(
                "bias {} is not a vector of {n} columns",
                describe(c)
            ))
        }
        Some(c) => Some(f32s(c, "bias")?),
        None => None,
    };
    if a.shape != b.shape {
        return Err(format!("cannot add {} and {}", describe(a), describe(b)));
    }
    if attrs.axis + 1 != a.shape.len() {
        return Err(format!(
            "normalises from axis {} of {}, not the last axis",
            attrs.axis,
            describe(a)
        ));
    }
    let (_, inner, s) = rows_and_param(attrs.axis, a, inputs[2], "scale")?;
    let bias = match has_bias {
        true => Some(rows_and_param(attrs.axis, a, inputs[3], "bias")?.2),
        false => None,
    };
    let mut out = vec![0f32; x.len()];
    if inner > 0 {
        let mut sum = vec![0f32; inner];
        vectorized(
            #[inline(always)]
            || {
                for ((dst, xr), yr) in out
                    .chunks_exact_mut(inner)
                    .zip(x.chunks_exact(inner))
                    .zip(y.chunks_exact(inner))
                {
                    match c {
                        // (a + c) + b: the unfused Adds' order (each commutative).
                        Some(c) => sum
                            .iter_mut()
                            .zip(xr.iter().zip(c))
                            .zip(yr)
                            .for_each(|((s, (p, e)), q)| *s = (p + e) + q),
                        None => sum
                            .iter_mut()
                            .zip(xr.iter().zip(yr))
                            .for_each(|(s, (p, q))| *s = p + q),
                    }
                    layer_norm_row(&sum, dst, &s, bias.as_deref(), attrs.epsilon);
                }
            },
        );
    }
    make(a.dtype, a.shape.clone(), TensorData::F32(out))
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
    let bad = || format!("mask {} does not broadcast to {full:?}", describe(mask));
    if mask.shape.len() > 4 {
        return Err(bad());
    }
    let lead = 4 - mask.shape.len();
    let mut strides = [0usize; 4];
    let mut step = 1usize;
    for (i, &d) in mask.shape.iter().enumerate().rev() {
        let o = full[lead + i];
        if d == o && d != 1 {
            strides[lead + i] = step;
        } else if d != 1 {
            return Err(bad());
        }
        step *= d;
    }
    Ok(strides)
}

fn attention(a: &AttentionAttrs, inputs: &[&Tensor]) -> KResult<Tensor> {
    let extra = match a.mask {
        AttentionMask::None => 0,
        AttentionMask::Add => 1,
        AttentionMask::Select => 2,
    };
    expect_inputs(inputs, 4 + extra)?;
    let (bsz, sq, sk, h, d) = (a.batch, a.q_len, a.kv_len, a.heads, a.head_dim);
    let hd = h * d;
    let (q, k, v) = (
        f32s(inputs[0], "q")?,
        f32s(inputs[1], "k")?,
        f32s(inputs[2], "v")?,
    );
    if q.len() != bsz * sq * hd || k.len() != bsz * sk * hd || v.len() != bsz * sk * hd {
        return Err(format!(
            "q {}, k {}, v {} do not hold [B={bsz}, S, H={h}, D={d}] with Sq={sq}, Sk={sk}",
            describe(inputs[0]),
            describe(inputs[1]),
            describe(inputs[2])
        ));
    }
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
    let mut scores = vec![0f32; sq * sk];
    let mut ctx = vec![0f32; sq * d];
    for b in 0..bsz {
        for hh in 0..h {
            let base_q = b * sq * hd + hh * d;
            let base_kv = b * sk * hd + hh * d;
            // scores = Q_bh · K_bhᵀ: Q rows are tokens (stride H·D); Kᵀ element (e, j) is
            // k[b, j, hh, e].
            let qv = MatView {
                data: q,
                off: base_q,
                rs: hd,
                cs: 1,
            };
            let ktv = MatView {
                data: k,
                off: base_kv,
                rs: 1,
                cs: hd,
            };
            gemm_into(sq, sk, d, &mut scores, 0, qv, ktv, 1.0, false)?;
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
            let pv = MatView {
                data: &scores,
                off: 0,
                rs: sk,
                cs: 1,
            };
            let vv = MatView {
                data: v,
                off: base_kv,
                rs: hd,
                cs: 1,
            };
            if merged {
                gemm_into(sq, d, sk, &mut ctx, 0, pv, vv, 1.0, false)?;
                for (i, r) in ctx.chunks_exact(d).enumerate() {
                    let o = b * sq * hd + i * hd + hh * d;
                    out[o..o + d].copy_from_slice(r);
                }
            } else {
                let o = (b * h + hh) * sq * d;
                gemm_into(sq, d, sk, &mut out, o, pv, vv, 1.0, false)?;
            }
        }
    }
    make(DType::F32, a.out_shape.clone(), TensorData::F32(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::eval;
    use tessera_ir::op::*;
    use tessera_ir::Op;

    /// Deterministic pseudo-random f32 tensor.
    fn rand(shape: Vec<usize>, seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let v = (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        Tensor::f32(shape, v)
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        let (a, b) = (a.as_f32().unwrap(), b.as_f32().unwrap());
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    }

    fn run(op: Op, ins: &[&Tensor]) -> Tensor {
        eval(&op, ins).unwrap().remove(0)
    }

    fn bin(kind: BinaryOp, a: &Tensor, b: &Tensor) -> Tensor {
        run(Op::Binary(BinaryAttrs { kind }), &[a, b])
    }

    #[test]
    fn matmul_bias_gelu_equals_the_unfused_chain_bitwise() {
        let a = rand(vec![2, 5, 8], 1);
        let w = rand(vec![8, 12], 2);
        let bias = rand(vec![12], 3);
        let (c1, c2, c3) = (
            Tensor::f32(vec![], vec![std::f32::consts::SQRT_2]),
            Tensor::f32(vec![], vec![1.0]),
            Tensor::f32(vec![], vec![0.5]),
        );
        let mm = run(Op::MatMul(MatMulAttrs {}), &[&a, &w]);
        let x = bin(BinaryOp::Add, &bias, &mm);
        let e = run(
            Op::Unary(UnaryAttrs { kind: UnaryOp::Erf }),
            &[&bin(BinaryOp::Div, &x, &c1)],
        );
        let want = bin(
            BinaryOp::Mul,
            &bin(BinaryOp::Mul, &x, &bin(BinaryOp::Add, &e, &c2)),
            &c3,
        );
        let op = FusedOp::MatMulEpilogue {
            bias: true,
            gelu: true,
        };
        let got = eval_fused(&op, &[&a, &w, &bias, &c1, &c2, &c3]).unwrap();
        assert_eq!(got.shape, vec![2, 5, 12]);
        assert_eq!(got.as_f32().unwrap(), want.as_f32().unwrap());
        let only_bias = FusedOp::MatMulEpilogue {
            bias: true,
            gelu: false,
        };
        let got = eval_fused(&only_bias, &[&a, &w, &bias]).unwrap();
        assert_eq!(got.as_f32().unwrap(), x.as_f32().unwrap());
        // A bias that is not one value per output column is refused, not broadcast wrongly.
        let err = eval_fused(&only_bias, &[&a, &w, &rand(vec![5, 12], 4)]).unwrap_err();
        assert!(err.to_string().contains("bias"), "{err}");
    }

    #[test]
    fn add_layer_norm_equals_the_unfused_pair_bitwise() {
        let a = rand(vec![3, 4, 16], 5);
        let b = rand(vec![3, 4, 16], 6);
        let s = rand(vec![16], 7);
        let bias = rand(vec![16], 8);
        let attrs = NormAttrs {
            axis: 2,
            epsilon: 1e-12,
        };
        let want = run(
            Op::LayerNorm(attrs.clone()),
            &[&bin(BinaryOp::Add, &a, &b), &s, &bias],
        );
        let op = FusedOp::AddLayerNorm {
            attrs: attrs.clone(),
            has_bias: true,
            pre_bias: false,
        };
        let got = eval_fused(&op, &[&a, &b, &s, &bias]).unwrap();
        assert_eq!(got.as_f32().unwrap(), want.as_f32().unwrap());
        // LayerNorm((y + c) + r): a row-parallel layer's bias after its all-reduce.
        let c = rand(vec![16], 9);
        let want = run(
            Op::LayerNorm(attrs.clone()),
            &[
                &bin(BinaryOp::Add, &bin(BinaryOp::Add, &c, &a), &b),
                &s,
                &bias,
            ],
        );
        let op = FusedOp::AddLayerNorm {
            attrs,
            has_bias: true,
            pre_bias: true,
        };
        let got = eval_fused(&op, &[&a, &c, &b, &s, &bias]).unwrap();
        assert_eq!(got.as_f32().unwrap(), want.as_f32().unwrap());
    }

    /// The unfused attention chain, as exported from PyTorch (BERT-style).
    /// `mask` maps the scaled scores to the masked ones.
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

    #[test]
    fn attention_equals_the_unfused_chain() {
        let (b, s, h, d) = (2, 7, 3, 4);
        let q = rand(vec![b, s, h * d], 11);
        let k = rand(vec![b, s, h * d], 12);
        let v = rand(vec![b, s, h * d], 13);
        let c = Tensor::f32(vec![], vec![2.0]);
        // A padding mask [B, 1, 1, S]: large negative on the masked keys.
        let mut mv = vec![0f32; b * s];
        mv[s - 1] = -10000.0;
        mv[s + 2] = -10000.0;
        let m = Tensor::f32(vec![b, 1, 1, s], mv);
        let add_mask = |z: &Tensor| bin(BinaryOp::Add, z, &m);
        let (want_heads, want_merged) = attention_chain(&q, &k, &v, &c, add_mask, h);
        let attention = |out_shape: Vec<usize>| {
            FusedOp::Attention(AttentionAttrs {
                batch: b,
                q_len: s,
                kv_len: s,
                heads: h,
                head_dim: d,
                scale_mul: false,
                mask: AttentionMask::Add,
                out_shape,
            })
        };
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
        }
        // A mask that does not broadcast to the scores is an error naming the mask.
        let op = attention(vec![b, h, s, d]);
        let bad = rand(vec![b, 1, 1, s + 1], 14);
        let err = eval_fused(&op, &[&q, &k, &v, &c, &bad]).unwrap_err();
        assert!(err.to_string().contains("mask"), "{err}");
    }

    #[test]
    fn causal_where_mask_attention_equals_the_unfused_chain() {
        let (b, s, h, d) = (1, 6, 2, 4);
        let q = rand(vec![b, s, h * d], 21);
        let k = rand(vec![b, s, h * d], 22);
        let v = rand(vec![b, s, h * d], 23);
        let c = Tensor::f32(vec![], vec![2.0]);
        // GPT-2: Where(tril [1, 1, S, S], scores, f32::MIN).
        let tril: Vec<bool> = (0..s * s).map(|e| e % s <= e / s).collect();
        let cond = Tensor::new(DType::Bool, vec![1, 1, s, s], TensorData::Bool(tril)).unwrap();
        let fill = Tensor::f32(vec![], vec![f32::MIN]);
        let select = |z: &Tensor| run(Op::Where, &[&cond, z, &fill]);
        let (want, _) = attention_chain(&q, &k, &v, &c, select, h);
        let op = FusedOp::Attention(AttentionAttrs {
            batch: b,
            q_len: s,
            kv_len: s,
            heads: h,
            head_dim: d,
            scale_mul: false,
            mask: AttentionMask::Select,
            out_shape: vec![b, h, s, d],
        });
        let got = eval_fused(&op, &[&q, &k, &v, &c, &cond, &fill]).unwrap();
        let worst = max_abs_diff(&got, &want);
        assert!(worst < 1e-6, "max abs difference {worst}");
        // The first query sees only the first key: its output row is v's first row.
        assert_eq!(&got.as_f32().unwrap()[..d], &v.as_f32().unwrap()[..d]);
        // A non-bool condition is refused by name.
        let err = eval_fused(&op, &[&q, &k, &v, &c, &fill, &fill]).unwrap_err();
        assert!(err.to_string().contains("condition"), "{err}");
    }
}
