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

impl Program<'_> {
    /// Walks back from the softmax input `x` (read by step `reader`) through elementwise
    /// steps on the `[B, H, Sq, Sk]` scores: `+ t`, `Where(cond, z, fill)`,
    /// `Where(cond, fill, z)`, `· c`, `⊘ c`, `tanh`, each output read once. Stops at the
    /// first MatMul or at a `· c` / `⊘ c` of its output (the scale, matched by the caller).
    /// Returns that step and the terms in forward order with their steps and inputs.
    pub(super) fn score_terms(
        &self,
        mut x: ValueId,
        mut reader: usize,
        full: [usize; 4],
    ) -> Option<(usize, Vec<ScoreStep>)> {
        let mut chain = Vec::new();
        loop {
            if self.shape(x) != full || chain.len() > 8 {
                return None;
            }
            let p = self.internal(x, reader)?;
            let (term, next, ins) = match self.op(p)? {
                Op::MatMul(_) => break,
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
                            if !self.fits_scores(m, full) || !self.is_f32(m) {
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
                    if !is_bool || !self.fits_scores(cond, full) {
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
        let sc_step = self.internal(x, reader)?;
        Some((sc_step, chain))
    }

    /// Whether `z` (read by `by`) is the scores side: a full-shaped f32 intermediate made
    /// by a MatMul or by an elementwise step over one, within a few steps.
    fn reaches_scores(&self, mut z: ValueId, mut by: usize, full: [usize; 4]) -> bool {
        for _ in 0..10 {
            if self.shape(z) != full {
                return false;
            }
            let Some(p) = self.internal(z, by) else {
                return false;
            };
            let next = match self.op(p) {
                Some(Op::MatMul(_)) => return true,
                Some(Op::Binary(_) | Op::Unary(_) | Op::Where) => self
                    .ins(p)
                    .iter()
                    .copied()
                    .find(|&i| self.shape(i) == full && self.internal(i, p).is_some()),
                _ => None,
            };
            match next {
                Some(n) => (z, by) = (n, p),
                None => return false,
            }
        }
        false
    }
}
