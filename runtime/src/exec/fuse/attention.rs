//! The attention matcher of [`super::fuse`]: `MatMul(Q, Kᵀ)`, scale, optional mask,
//! `Softmax`, `MatMul(·, V)` and the head merge, with q, k and v either split into heads by
//! the chain's own `Reshape` + `Transpose` (BERT, GPT-2) or already `[B, H, S, D]` (after a
//! rotary embedding, Llama), k and v possibly repeated over query-head groups by
//! `Reshape [B, Hk, 1, S, D]` + `Expand` + `Reshape [B, H, S, D]` (grouped-query attention).
use super::{Fused, Program};
use tessera_ir::op::{BinaryOp, UnaryOp};
use tessera_ir::plan::ValueId;
use tessera_ir::{DType, Op};
use tessera_kernels::{
    attention_qk_factor, AttentionMask, AttentionScale, AttentionShape, FusedOp, HeadLayout,
    ScoreTerm, SoftmaxRows,
};

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
    /// the transpose (`Transpose [0, 1, 3, 2]`, or dynamo's Reshape + `Transpose [0, 2, 1]`
    /// + Reshape) of a K that [`Program::value`] reads.
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
        let (src, by, mut steps) = match self.op(t)? {
            Op::Transpose(a) if a.perm == [0, 1, 3, 2] => (self.input(t, 0)?, t, vec![t]),
            // torch's `transpose(-2, -1)` of a 4-D K as dynamo exports it: Reshape to
            // [B·H, S, D], Transpose [0, 2, 1], Reshape to [B, H, D, S].
            Op::Reshape(_) if self.shape(self.out(t)) == [b, h, d, s] => {
                let t2 = self.internal(self.input(t, 0)?, t)?;
                match self.op(t2)? {
                    Op::Transpose(a) if a.perm == [0, 2, 1] => {}
                    _ => return None,
                }
                let r1 = self.internal(self.input(t2, 0)?, t2)?;
                let src = self.input(r1, 0)?;
                let ok = matches!(self.op(r1)?, Op::Reshape(_))
                    && self.shape(self.out(r1)) == [b * h, s, d]
                    && self.shape(src) == [b, h, s, d];
                if !ok {
                    return None;
                }
                (src, r1, vec![t, t2, r1])
            }
            _ => return None,
        };
        // K itself: split by its own Reshape + Transpose, head-major, or group-repeated.
        let mut k = self.value(src, by, [b, h, s, d])?;
        steps.append(&mut k.steps);
        k.steps = steps;
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

    /// Q or Kᵀ at input `x` of the first MatMul `mm`, maybe multiplied by a one-element
    /// scale first (torch's SDPA decomposition: both; some exports: Q only, DeBERTa: Kᵀ
    /// only): (the unscaled value, the step reading it, the scale and its `Mul` step).
    fn prescaled(&self, x: ValueId, mm: usize) -> (ValueId, usize, Option<(ValueId, usize)>) {
        let found = self.internal(x, mm).and_then(|p| {
            if self.binary(p)? != BinaryOp::Mul {
                return None;
            }
            let [u, w] = self.ins(p)[..] else {
                return None;
            };
            let (y, c) = if self.is_scalar(w) { (u, w) } else { (w, u) };
            (self.is_scalar(c) && self.shape(y) == self.shape(x)).then_some((y, p, c))
        });
        match found {
            Some((y, p, c)) => (y, p, Some((c, p))),
            None => (x, mm, None),
        }
    }

    /// `Where(IsNaN(p), fill, p)` reading the softmax output `p` (its two readers), with a
    /// one-element f32 fill: (the Where step, the IsNaN step, fill).
    fn nan_cleanup(&self, p: ValueId) -> Option<(usize, usize, ValueId)> {
        let &[r1, r2] = self.uses[p.index()].as_slice() else {
            return None;
        };
        if self.keep[p.index()] {
            return None;
        }
        let is_nan = |s: usize| {
            matches!(self.op(s), Some(Op::Unary(u)) if u.kind == UnaryOp::IsNaN)
                && self.ins(s) == [p]
        };
        let (nan, w) = if is_nan(r1) { (r1, r2) } else { (r2, r1) };
        if !is_nan(nan) || !matches!(self.op(w)?, Op::Where) {
            return None;
        }
        let nb = self.out(nan);
        if self.keep[nb.index()] || self.uses[nb.index()].as_slice() != [w] {
            return None;
        }
        let [cond, fill, x] = self.ins(w)[..] else {
            return None;
        };
        (cond == nb && x == p && self.is_scalar(fill) && self.is_f32(self.out(w)))
            .then_some((w, nan, fill))
    }

    /// After the attention's `[B, H, Sq, D]` output `o`: an optional no-op Reshape, then
    /// `Transpose [0, 2, 1, 3]` + a Reshape that merge the heads back (to `[B, Sq, H·D]`,
    /// `[B·Sq, H·D]`, …). Appends the steps taken; returns (output, its shape, merged).
    fn merge_heads(
        &self,
        o: ValueId,
        full: [usize; 4],
        steps: &mut Vec<usize>,
    ) -> Option<(ValueId, Vec<usize>, bool)> {
        let mut output = o;
        let reshape = |s: usize| matches!(self.op(s), Some(Op::Reshape(_)));
        if let Some(r) = self.only_reader(output).filter(|&r| reshape(r)) {
            if self.shape(self.out(r)) == full {
                steps.push(r);
                output = self.out(r);
            }
        }
        if let Some(t) = self.only_reader(output) {
            if let (Op::Transpose(ta), Some(r)) = (self.op(t)?, self.only_reader(self.out(t))) {
                let n: usize = full.iter().product();
                let r_shape = self.shape(self.out(r));
                if ta.perm == [0, 2, 1, 3] && reshape(r) && r_shape.iter().product::<usize>() == n {
                    steps.extend([t, r]);
                    return Some((self.out(r), r_shape.to_vec(), true));
                }
            }
        }
        Some((output, full.to_vec(), false))
    }

    /// A mask operand `m` of the scores `[B, H, Sq, Sk]`: broadcasts to them.
    pub(super) fn fits_scores(&self, m: ValueId, full: [usize; 4]) -> bool {
        let ms = self.shape(m);
        ms.len() <= 4
            && ms
                .iter()
                .rev()
                .zip(full.iter().rev())
                .all(|(&d, &o)| d == 1 || d == o)
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
        let full = [bsz, h, sq, sk];
        let mut steps = vec![sm];
        // x = terms(scores): the mask and any further elementwise steps (see
        // `score_terms`); the scores come from the first MatMul, maybe scaled after it.
        let chain = self.score_terms(x, sm, full)?;
        let sc_step = chain.scores_step;
        // Scores computed as [B·H, Sq, Sk] from flattened q, k and v (BLOOM, DeBERTa).
        let flat = chain.unflatten.is_some();
        steps.extend(chain.unflatten);
        let scores_shape = if flat {
            vec![bsz * h, sq, sk]
        } else {
            full.to_vec()
        };
        let mut mask = AttentionMask::None;
        let mut terms = Vec::new();
        let mut extra = Vec::new();
        for (i, (step, term, ins)) in chain.terms.into_iter().enumerate() {
            steps.push(step);
            extra.extend(ins);
            match term {
                ScoreTerm::Add if i == 0 => mask = AttentionMask::Add,
                ScoreTerm::Select if i == 0 => mask = AttentionMask::Select,
                t => terms.push(t),
            }
        }
        // scaled = scores ⊘ c  (Div: scores first; Mul: either order), or the scores.
        let (mut scale, mut scale_inputs, mm1) = match self.op(sc_step)? {
            Op::MatMul(_) => (AttentionScale::None, vec![], sc_step),
            Op::Binary(bin) => {
                let scale = match bin.kind {
                    BinaryOp::Div => AttentionScale::Div,
                    BinaryOp::Mul => AttentionScale::Mul,
                    _ => return None,
                };
                let [p, q] = self.ins(sc_step)[..] else {
                    return None;
                };
                let (scores, c) = if scale == AttentionScale::Div || self.is_scalar(q) {
                    (p, q)
                } else {
                    (q, p)
                };
                if !self.is_scalar(c) || self.shape(scores) != scores_shape {
                    return None;
                }
                steps.push(sc_step);
                let mm1 = self.internal(scores, sc_step)?;
                if !matches!(self.op(mm1)?, Op::MatMul(_)) {
                    return None;
                }
                (scale, vec![c], mm1)
            }
            _ => return None,
        };
        // Q and Kᵀ each multiplied by a scale before the product (torch's SDPA).
        let (qx, q_by, q_scale) = self.prescaled(self.input(mm1, 0)?, mm1);
        let (kx, k_by, k_scale) = self.prescaled(self.input(mm1, 1)?, mm1);
        match (q_scale, k_scale, scale) {
            (None, None, _) => {}
            (Some((cq, sq_step)), Some((ck, sk_step)), AttentionScale::None) => {
                scale = AttentionScale::Operands;
                scale_inputs = vec![cq, ck];
                steps.extend([sq_step, sk_step]);
            }
            (Some((cq, sq_step)), None, AttentionScale::None) => {
                scale = AttentionScale::Query;
                scale_inputs = vec![cq];
                steps.push(sq_step);
            }
            (None, Some((ck, sk_step)), AttentionScale::None) => {
                scale = AttentionScale::Key;
                scale_inputs = vec![ck];
                steps.push(sk_step);
            }
            _ => return None,
        }
        let (q, k) = if flat {
            // q [B·H, Sq, D] and Kᵀ = Transpose [0, 2, 1] of k [B·H, Sk, D].
            let (q4, qr) = self.unflatten_operand(qx, q_by, [bsz, h])?;
            let mut q = self.query(q4, qr, [bsz, h, sq])?;
            q.steps.push(qr);
            let t = self.internal(kx, k_by)?;
            if !matches!(self.op(t)?, Op::Transpose(a) if a.perm == [0, 2, 1]) {
                return None;
            }
            let (k4, kr) = self.unflatten_operand(self.input(t, 0)?, t, [bsz, h])?;
            let mut k = self.value(k4, kr, [bsz, h, sk, q.d])?;
            k.steps.extend([t, kr]);
            (q, k)
        } else {
            let q = self.query(qx, q_by, [bsz, h, sq])?;
            let k = self.key(kx, k_by, [bsz, h, sk, q.d])?;
            (q, k)
        };
        let d = q.d;
        steps.push(mm1);
        steps.extend(q.steps.iter().chain(&k.steps));
        // P, or Where(IsNaN(P), fill, P) (torch's SDPA), then · V.
        let p = self.out(sm);
        let (pv, rows) = match self.nan_cleanup(p) {
            Some((w, nan, fill)) => {
                steps.extend([nan, w]);
                extra.push(fill);
                (self.out(w), SoftmaxRows::NanToFill)
            }
            None => (p, SoftmaxRows::Plain),
        };
        let pv = if flat {
            // P flattened back to [B·H, Sq, Sk] for the product.
            let r = self.only_reader(pv)?;
            if !matches!(self.op(r)?, Op::Reshape(_)) || self.shape(self.out(r)) != scores_shape {
                return None;
            }
            steps.push(r);
            self.out(r)
        } else {
            pv
        };
        let mm2 = self.only_reader(pv)?;
        if !matches!(self.op(mm2)?, Op::MatMul(_)) || self.input(mm2, 0)? != pv {
            return None;
        }
        let v = if flat {
            let (v4, vr) = self.unflatten_operand(self.input(mm2, 1)?, mm2, [bsz, h])?;
            let mut v = self.value(v4, vr, [bsz, h, sk, d])?;
            v.steps.push(vr);
            v
        } else {
            self.value(self.input(mm2, 1)?, mm2, [bsz, h, sk, d])?
        };
        if v.kv_heads != k.kv_heads {
            return None;
        }
        steps.push(mm2);
        steps.extend(&v.steps);
        let (output, mut out_shape, merged) =
            self.merge_heads(self.out(mm2), [bsz, h, sq, d], &mut steps)?;
        if !merged {
            // [B, H, Sq, D], or [B·H, Sq, D] (flattened, not reshaped back): one layout.
            out_shape = self.shape(output).to_vec();
        }
        steps.sort_unstable();
        let mut inputs = vec![q.src, k.src, v.src];
        inputs.extend(scale_inputs);
        inputs.extend(extra);
        Some(Fused {
            op: FusedOp::Attention(AttentionShape {
                batch: bsz,
                q_len: sq,
                kv_len: sk,
                heads: h,
                kv_heads: k.kv_heads,
                layouts: [q.layout, k.layout, v.layout],
                head_dim: d,
                scale,
                mask,
                terms,
                rows,
                causal: false,
                merged,
                out_shape,
            }),
            inputs,
            outputs: vec![output],
            steps,
        })
    }

    /// The ONNX `Attention` op (opset 23) with 4-D q, k, v, no KV cache, window, softcap or
    /// extra output, a mask (if any) whose last axis covers the keys, causal or not (without
    /// a past, key j is then hidden from query i when j > i):
    /// the fused kernel with q and k each times √scale and the reference's masked rows
    /// (k and v read through a grouped-query repeat; the heads merged when a Transpose +
    /// Reshape follows).
    pub(super) fn attention_op(&self, s: usize) -> Option<Fused> {
        let Op::Attention(a) = self.op(s)? else {
            return None;
        };
        let plain = !a.has_past
            && !a.has_nonpad
            && !a.qk_output
            && a.softcap == 0.0
            && a.left_window < 0
            && a.right_window < 0;
        if !plain || self.ins(s).len() != 3 + a.has_mask as usize {
            return None;
        }
        let (qx, kx, vx) = (self.input(s, 0)?, self.input(s, 1)?, self.input(s, 2)?);
        let (&[bsz, h, sq, d], &[b2, hk, sk, d2], &[b3, hv, sv, dv]) =
            (self.shape(qx), self.shape(kx), self.shape(vx))
        else {
            return None;
        };
        if [b2, d2, b3, hv, sv, dv] != [bsz, d, bsz, hk, sk, d] || hk == 0 || h % hk != 0 {
            return None;
        }
        let full = [bsz, h, sq, sk];
        let (mask, mut extra) = if a.has_mask {
            let m = self.input(s, 3)?;
            let kind = match self.plan.values[m.index()].dtype {
                DType::Bool => AttentionMask::Bias,
                DType::F32 => AttentionMask::Add,
                _ => return None,
            };
            // The reference pads a shorter last axis with −∞: require it whole.
            if self.shape(m).last() != Some(&sk) || !self.fits_scores(m, full) {
                return None;
            }
            (kind, vec![m])
        } else {
            (AttentionMask::None, vec![])
        };
        let q = self.query(qx, s, [bsz, h, sq])?;
        let k = self.value(kx, s, [bsz, hk, sk, d])?;
        let v = self.value(vx, s, [bsz, hk, sk, d])?;
        // k, v with Hk heads natively, or repeated to H' = Hk' · G' by Reshape + Expand.
        let kv_heads = k.kv_heads;
        if v.kv_heads != kv_heads || h % kv_heads != 0 || q.d != d {
            return None;
        }
        let mut steps = vec![s];
        steps.extend(q.steps.iter().chain(&k.steps).chain(&v.steps));
        let (output, out_shape, merged) =
            self.merge_heads(self.out(s), [bsz, h, sq, d], &mut steps)?;
        steps.sort_unstable();
        let mut inputs = vec![q.src, k.src, v.src];
        inputs.append(&mut extra);
        Some(Fused {
            op: FusedOp::Attention(AttentionShape {
                batch: bsz,
                q_len: sq,
                kv_len: sk,
                heads: h,
                kv_heads,
                layouts: [q.layout, k.layout, v.layout],
                head_dim: d,
                scale: AttentionScale::Fixed(attention_qk_factor(a, d)),
                mask,
                terms: vec![],
                rows: SoftmaxRows::Guarded,
                causal: a.is_causal,
                merged,
                out_shape,
            }),
            inputs,
            outputs: vec![output],
            steps,
        })
    }
}
