//! The score steps of a fused attention (see [`super::attention`]): the elementwise ops
//! between `Q·Kᵀ` (or its scale) and the Softmax, each becoming a [`ScoreTerm`] of the
//! kernel: masks, T5's position bias, Gemma-2's soft-capping, `Where` in either branch.
use super::Program;
use tessera_ir::op::{BinaryOp, UnaryOp};
use tessera_ir::plan::ValueId;
use tessera_ir::{DType, Op};
use tessera_kernels::ScoreTerm;

/// One score step: the plan step, the term it becomes and the inputs the term reads.
pub(super) type ScoreStep = (usize, ScoreTerm, Vec<ValueId>);

/// What [`Program::score_terms`] found below the Softmax.
pub(super) struct ScoreChain {
    /// The first MatMul, or the `· c` / `⊘ c` of its output.
    pub scores_step: usize,
    /// The terms in forward order.
    pub terms: Vec<ScoreStep>,
    /// The `Reshape [B·H, Sq, Sk] → [B, H, Sq, Sk]` crossed, when the scores (and the terms
    /// below it) are computed as `[B·H, Sq, Sk]` (BLOOM, DeBERTa).
    pub unflatten: Option<usize>,
}

impl Program<'_> {
    /// Walks back from the softmax input `x` (read by step `reader`) through elementwise
    /// steps on the `[B, H, Sq, Sk]` scores: `+ t`, `Where(cond, z, fill)`,
    /// `Where(cond, fill, z)`, `· c`, `⊘ c`, `tanh`, each output read once. Stops at the
    /// first MatMul or at a `· c` / `⊘ c` of its output (the scale, matched by the caller).
    /// One `Reshape` from `[B·H, Sq, Sk]` may come on the way; the steps below it are then
    /// on that shape.
    pub(super) fn score_terms(
        &self,
        mut x: ValueId,
        mut reader: usize,
        full: [usize; 4],
    ) -> Option<ScoreChain> {
        let mut chain = Vec::new();
        let mut unflatten = None;
        let flat = [full[0] * full[1], full[2], full[3]];
        loop {
            let domain: &[usize] = if unflatten.is_some() { &flat } else { &full };
            // What a term's input must broadcast to (right-aligned).
            let fits = if unflatten.is_some() {
                [1, flat[0], flat[1], flat[2]]
            } else {
                full
            };
            if self.shape(x) != domain || chain.len() > 8 {
                return None;
            }
            // A term's input broadcasts to the scores; below the Reshape, as a 3-D
            // `[1 or B·H, a, b]` the kernel reads as `[B, H, a, b]`.
            let fits_term = |m: ValueId| {
                self.fits_scores(m, fits) && (unflatten.is_none() || self.shape(m).len() <= 3)
            };
            let p = self.internal(x, reader)?;
            let (term, next, ins) = match self.op(p)? {
                Op::MatMul(_) => break,
                Op::Reshape(_) if unflatten.is_none() => {
                    let src = self.input(p, 0)?;
                    if self.shape(src) != flat {
                        return None;
                    }
                    unflatten = Some(p);
                    (x, reader) = (src, p);
                    continue;
                }
                Op::Binary(b) => {
                    let [u, w] = self.ins(p)[..] else {
                        return None;
                    };
                    match b.kind {
                        BinaryOp::Add => {
                            let (z, m) = if self.reaches_scores(u, p, full) {
                                (u, w)
                            } else {
                                (w, u)
                            };
                            if !fits_term(m) || !self.is_f32(m) {
                                return None;
                            }
                            (ScoreTerm::Add, z, vec![m])
                        }
                        BinaryOp::Mul | BinaryOp::Div => {
                            let (z, c) = if b.kind == BinaryOp::Div || self.is_scalar(w) {
                                (u, w)
                            } else {
                                (w, u)
                            };
                            if !self.is_scalar(c) {
                                return None;
                            }
                            let by_mm = self.internal(z, p).map(|q| self.op(q));
                            if matches!(by_mm, Some(Some(Op::MatMul(_)))) {
                                break; // the scale
                            }
                            let t = if b.kind == BinaryOp::Div {
                                ScoreTerm::Div
                            } else {
                                ScoreTerm::Mul
                            };
                            (t, z, vec![c])
                        }
                        _ => return None,
                    }
                }
                Op::Where => {
                    let [cond, a, b] = self.ins(p)[..] else {
                        return None;
                    };
                    let is_bool = self.plan.values[cond.index()].dtype == DType::Bool;
                    if !is_bool || !fits_term(cond) {
                        return None;
                    }
                    if self.is_scalar(b) && self.reaches_scores(a, p, full) {
                        (ScoreTerm::Select, a, vec![cond, b])
                    } else if self.is_scalar(a) && self.reaches_scores(b, p, full) {
                        (ScoreTerm::SelectElse, b, vec![cond, a])
                    } else {
                        return None;
                    }
                }
                Op::Unary(u) if u.kind == UnaryOp::Tanh => {
                    (ScoreTerm::Tanh, self.input(p, 0)?, vec![])
                }
                _ => return None,
            };
            chain.push((p, term, ins));
            (x, reader) = (next, p);
        }
        chain.reverse();
        Some(ScoreChain {
            scores_step: self.internal(x, reader)?,
            terms: chain,
            unflatten,
        })
    }

    /// Whether `z` (read by `by`) is the scores side: a full-shaped f32 intermediate made
    /// by a MatMul or by an elementwise step over one (or a Reshape from `[B·H, Sq, Sk]`),
    /// within a few steps.
    fn reaches_scores(&self, mut z: ValueId, mut by: usize, full: [usize; 4]) -> bool {
        let flat = [full[0] * full[1], full[2], full[3]];
        let scores_shaped = |v: ValueId| self.shape(v) == full || self.shape(v) == flat;
        for _ in 0..10 {
            if !scores_shaped(z) {
                return false;
            }
            let Some(p) = self.internal(z, by) else {
                return false;
            };
            let next = match self.op(p) {
                Some(Op::MatMul(_)) => return true,
                Some(Op::Binary(_) | Op::Unary(_) | Op::Where | Op::Reshape(_)) => self
                    .ins(p)
                    .iter()
                    .copied()
                    .find(|&i| scores_shaped(i) && self.internal(i, p).is_some()),
                _ => None,
            };
            match next {
                Some(n) => (z, by) = (n, p),
                None => return false,
            }
        }
        false
    }

    /// `Reshape [B·H, S, D]` of a `[B, H, S, D]` f32 value, read only by step `by` (the
    /// flattened q, k or v of scores computed as `[B·H, Sq, Sk]`): (that value, the Reshape).
    pub(super) fn unflatten_operand(
        &self,
        x: ValueId,
        by: usize,
        [b, h]: [usize; 2],
    ) -> Option<(ValueId, usize)> {
        let r = self.internal(x, by)?;
        let Op::Reshape(_) = self.op(r)? else {
            return None;
        };
        let src = self.input(r, 0)?;
        let &[b4, h4, s, d] = self.shape(src) else {
            return None;
        };
        let ok = [b4, h4] == [b, h] && self.shape(x) == [b * h, s, d] && self.is_f32(src);
        ok.then_some((src, r))
    }
}
