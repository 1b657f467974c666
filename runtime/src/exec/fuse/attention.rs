//! The attention matcher of [`super::fuse`]: `MatMul(Q, Kᵀ)`, scale, optional mask,
//! `Softmax`, `MatMul(·, V)` and the head merge, with q, k and v either split into heads by
//! the chain's own `Reshape` + `Transpose` (BERT, GPT-2) or already `[B, H, S, D]` (after a
//! rotary embedding, Llama), k and v possibly repeated over query-head groups by
//! `Reshape [B, Hk, 1, S, D]` + `Expand` + `Reshape [B, H, S, D]` (grouped-query attention).
use super::{Fused, Program};
use tessera_ir::op::BinaryOp;
use tessera_ir::plan::ValueId;
use tessera_ir::{DType, Op};
use tessera_kernels::{AttentionMask, AttentionShape, FusedOp, HeadLayout};

/// One of q, k, v as the fused kernel reads it.
struct Operand {
    /// The value read.
    src: ValueId,
    /// Its layout.
    layout: HeadLayout,
    /// Its heads (Hk for k and v under grouped-query attention).
    kv_heads: usize,
    /// Head size D.
    d: usize,
    /// The chain steps it replaces.
    steps: Vec<usize>,
}

impl Program<'_> {
    /// Q, `[B, H, Sq, D]` at the first MatMul's input `x`.
    fn query(&self, x: ValueId, mm: usize, [b, h, s]: [usize; 3]) -> Option<Operand> {
        if let Some((src, [b2, s2, h2, d], steps)) = self.heads(x, mm, &[0, 2, 1, 3]) {
            return ([b2, s2, h2] == [b, s, h]).then_some(Operand {
                src,
                layout: HeadLayout::TokenMajor,
                kv_heads: h,
                d,
                steps,
            });
        }
        match *self.shape(x) {
            [b2, h2, s2, d] if [b2, h2, s2] == [b, h, s] && self.is_f32(x) => Some(Operand {
                src: x,
                layout: HeadLayout::HeadMajor,
                kv_heads: h,
                d,
                steps: vec![],
            }),
            _ => None,
        }
    }

    /// Kᵀ, `[B, H, D, Sk]` at the first MatMul's input `x`: split by the chain itself, or
    /// `Transpose [0, 1, 3, 2]` of a head-major (maybe group-repeated) K.
    fn key(&self, x: ValueId, mm: usize, [b, h, s, d]: [usize; 4]) -> Option<Operand> {
        if let Some((src, shape, steps)) = self.heads(x, mm, &[0, 2, 3, 1]) {
            return (shape == [b, s, h, d]).then_some(Operand {
                src,
                layout: HeadLayout::TokenMajor,
                kv_heads: h,
                d,
                steps,
            });
        }
        let t = self.internal(x, mm)?;
        match self.op(t)? {
            Op::Transpose(a) if a.perm == [0, 1, 3, 2] => {}
            _ => return None,
        }
        let mut k = self.value(self.input(t, 0)?, t, [b, h, s, d])?;
        if k.layout != HeadLayout::HeadMajor {
            // [B, S, H, D] → Transpose [0, 2, 1, 3] → [0, 1, 3, 2] is `heads` above.
            return None;
        }
        k.steps.push(t);
        Some(k)
    }

    /// V (or K before its transpose), `[B, H, Sk, D]` at input `x` of step `by`: split by
    /// the chain itself, head-major, or a head-major `[B, Hk, Sk, D]` repeated over groups.
    fn value(&self, x: ValueId, by: usize, [b, h, s, d]: [usize; 4]) -> Option<Operand> {
        if let Some((src, shape, steps)) = self.heads(x, by, &[0, 2, 1, 3]) {
            return (shape == [b, s, h, d]).then_some(Operand {
                src,
                layout: HeadLayout::TokenMajor,
                kv_heads: h,
                d,
                steps,
            });
        }
        if self.shape(x) != [b, h, s, d] || !self.is_f32(x) {
            return None;
        }
        let head_major = |src, kv_heads, steps| Operand {
            src,
            layout: HeadLayout::HeadMajor,
            kv_heads,
            d,
            steps,
        };
        Some(self.repeated_kv(x, by, [b, h, s, d]).map_or_else(
            || head_major(x, h, vec![]),
            |(src, hk, st)| head_major(src, hk, st),
        ))
    }

    /// `Reshape [B, H, S, D]` of `Expand [B, Hk, G, S, D]` of `Reshape [B, Hk, 1, S, D]` of
    /// `src` `[B, Hk, S, D]` (H = Hk·G), read only along the chain to step `by`: (src, Hk,
    /// the three steps).
    fn repeated_kv(
        &self,
        x: ValueId,
        by: usize,
        [b, h, s, d]: [usize; 4],
    ) -> Option<(ValueId, usize, Vec<usize>)> {
        let r2 = self.internal(x, by)?;
        let Op::Reshape(_) = self.op(r2)? else {
            return None;
        };
        let e = self.internal(self.input(r2, 0)?, r2)?;
        let Op::Expand(ea) = self.op(e)? else {
            return None;
        };
        let &[b2, hk, g, s2, d2] = &ea.shape[..] else {
            return None;
        };
        let r1 = self.internal(self.input(e, 0)?, e)?;
        let Op::Reshape(_) = self.op(r1)? else {
            return None;
        };
        let src = self.input(r1, 0)?;
        let ok = [b2, s2, d2] == [b, s, d]
            && hk * g == h
            && self.shape(self.out(r1)) == [b, hk, 1, s, d]
            && self.shape(src) == [b, hk, s, d]
            && self.is_f32(src);
        ok.then_some((src, hk, vec![r1, e, r2]))
    }

    /// `Transpose(perm)` of `Reshape(src → [b, s, h, d])`, the intermediates read only along
    /// the chain ending at step `by`: returns (src, [b, s, h, d], the chain's steps). For
    /// `perm = [0, 2, 3, 1]` (Kᵀ) the transpose may also come as `[0, 2, 1, 3]` followed by
    /// `[0, 1, 3, 2]`, as GPT-2 exports it.
    fn heads(
        &self,
        v: ValueId,
        by: usize,
        perm: &[usize],
    ) -> Option<(ValueId, [usize; 4], Vec<usize>)> {
        let t = self.internal(v, by)?;
        let Op::Transpose(a) = self.op(t)? else {
            return None;
        };
        let mut steps = vec![t];
        let mut t = t;
        if perm == [0, 2, 3, 1] && a.perm == [0, 1, 3, 2] {
            let t0 = self.internal(self.input(t, 0)?, t)?;
            match self.op(t0)? {
                Op::Transpose(a0) if a0.perm == [0, 2, 1, 3] => {}
                _ => return None,
            }
            steps.push(t0);
            t = t0;
        } else if a.perm != perm {
            return None;
        }
        let r = self.internal(self.input(t, 0)?, t)?;
        let Op::Reshape(a) = self.op(r)? else {
            return None;
        };
        let [b, s, h, d] = a.shape[..] else {
            return None;
        };
        let src = self.input(r, 0)?;
        steps.push(r);
        self.is_f32(src).then_some((src, [b, s, h, d], steps))
    }

    pub(super) fn attention(&self, sm: usize) -> Option<Fused> {
        let Op::Softmax(a) = self.op(sm)? else {
            return None;
        };
        let x = self.input(sm, 0)?;
        let &[bsz, h, sq, sk] = self.shape(x) else {
            return None;
        };
        if a.log || a.axis != 3 {
            return None;
        }
        let mut steps = vec![sm];
        // x = scaled + mask, Where(cond, scaled, fill), or scaled.
        let px = self.internal(x, sm)?;
        let scaled = |z: ValueId| {
            self.internal(z, px)
                .filter(|&p| matches!(self.binary(p), Some(BinaryOp::Div | BinaryOp::Mul)))
        };
        let full = [bsz, h, sq, sk];
        let fits = |m: ValueId| {
            let ms = self.shape(m);
            ms.len() <= 4
                && ms
                    .iter()
                    .rev()
                    .zip(full.iter().rev())
                    .all(|(&d, &o)| d == 1 || d == o)
        };
        let (scale_step, mask, mask_inputs) = match self.op(px)? {
            Op::Binary(b) if b.kind == BinaryOp::Add => {
                let [u, w] = self.ins(px)[..] else {
                    return None;
                };
                let (ss, m) = match (scaled(u), scaled(w)) {
                    (Some(p), _) => (p, w),
                    (None, Some(p)) => (p, u),
                    _ => return None,
                };
                if !fits(m) || !self.is_f32(m) {
                    return None;
                }
                steps.push(px);
                (ss, AttentionMask::Add, vec![m])
            }
            Op::Where => {
                let [cond, z, fill] = self.ins(px)[..] else {
                    return None;
                };
                let ss = scaled(z)?;
                let is_bool = self.plan.values[cond.index()].dtype == DType::Bool;
                if !is_bool || !fits(cond) || !self.is_scalar(fill) {
                    return None;
                }
                steps.push(px);
                (ss, AttentionMask::Select, vec![cond, fill])
            }
            _ => (px, AttentionMask::None, vec![]),
        };
        // scaled = scores ⊘ c  (Div: scores first; Mul: either order).
        let scale_mul = match self.binary(scale_step)? {
            BinaryOp::Div => false,
            BinaryOp::Mul => true,
            _ => return None,
        };
        let [p, q] = self.ins(scale_step)[..] else {
            return None;
        };
        let (scores, c) = if !scale_mul || self.is_scalar(q) {
            (p, q)
        } else {
            (q, p)
        };
        if !self.is_scalar(c) || self.shape(scores) != [bsz, h, sq, sk] {
            return None;
        }
        steps.push(scale_step);
        let mm1 = self.internal(scores, scale_step)?;
        if !matches!(self.op(mm1)?, Op::MatMul(_)) {
            return None;
        }
        let q = self.query(self.input(mm1, 0)?, mm1, [bsz, h, sq])?;
        let d = q.d;
        let k = self.key(self.input(mm1, 1)?, mm1, [bsz, h, sk, d])?;
        steps.push(mm1);
        steps.extend(q.steps.iter().chain(&k.steps));
        // out = P · V
        let pv = self.out(sm);
        let mm2 = self.only_reader(pv)?;
        if !matches!(self.op(mm2)?, Op::MatMul(_)) || self.input(mm2, 0)? != pv {
            return None;
        }
        let v = self.value(self.input(mm2, 1)?, mm2, [bsz, h, sk, d])?;
        if v.kv_heads != k.kv_heads {
            return None;
        }
        steps.push(mm2);
        steps.extend(&v.steps);
        let mut output = self.out(mm2);
        let mut out_shape = vec![bsz, h, sq, d];
        // Merge the heads back when the chain continues with Transpose + Reshape.
        if let Some(t) = self.only_reader(output) {
            if let (Op::Transpose(ta), Some(r)) = (self.op(t)?, self.only_reader(self.out(t))) {
                if let Op::Reshape(ra) = self.op(r)? {
                    if ta.perm == [0, 2, 1, 3] && ra.shape == [bsz, sq, h * d] {
                        steps.extend([t, r]);
                        output = self.out(r);
                        out_shape = ra.shape.clone();
                    }
                }
            }
        }
        steps.sort_unstable();
        let mut inputs = vec![q.src, k.src, v.src, c];
        inputs.extend(mask_inputs);
        Some(Fused {
            op: FusedOp::Attention(AttentionShape {
                batch: bsz,
                q_len: sq,
                kv_len: sk,
                heads: h,
                kv_heads: k.kv_heads,
                layouts: [q.layout, k.layout, v.layout],
                head_dim: d,
                scale_mul,
                mask,
                out_shape,
            }),
            inputs,
            output,
            steps,
        })
    }
}
