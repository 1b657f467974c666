//! The rotary-embedding matcher of [`super::fuse`]: `Add(Mul(x, cos), Mul(Concat(Neg(Slice
//! x[.., h..]), Slice x[.., ..h]), sin))` over the last axis (`rotate_half`, as Llama-family
//! exports spell it; the opset-23 exports without the `Neg`, its sign folded into `sin`)
//! becomes one [`FusedOp::Rotary`].
use super::{Fused, Program};
use tessera_ir::op::{BinaryOp, UnaryOp};
use tessera_ir::plan::ValueId;
use tessera_ir::Op;
use tessera_kernels::FusedOp;

impl Program<'_> {
    pub(super) fn rotary(&self, add: usize) -> Option<Fused> {
        if self.binary(add)? != BinaryOp::Add {
            return None;
        }
        let [u, w] = self.ins(add)[..] else {
            return None;
        };
        [(u, w), (w, u)].into_iter().find_map(|(a, b)| {
            let p1 = self.internal(a, add)?;
            let p2 = self.internal(b, add)?;
            if self.binary(p1)? != BinaryOp::Mul || self.binary(p2)? != BinaryOp::Mul {
                return None;
            }
            let [c0, c1] = self.ins(p2)[..] else {
                return None;
            };
            let (sin, (x, negate, mut steps)) = [(c0, c1), (c1, c0)]
                .into_iter()
                .find_map(|(r, s)| Some((s, self.rotate_half(r, p2)?)))?;
            let cos = self.other_operand(p1, x)?;
            let shape = self.shape(x);
            let trig_ok = |t: ValueId| {
                let ts = self.shape(t);
                self.is_f32(t)
                    && ts.len() <= shape.len()
                    && ts.last() == shape.last()
                    && ts
                        .iter()
                        .rev()
                        .zip(shape.iter().rev())
                        .all(|(&e, &o)| e == 1 || e == o)
            };
            if self.shape(self.out(add)) != shape || !trig_ok(cos) || !trig_ok(sin) {
                return None;
            }
            steps.extend([add, p1, p2]);
            steps.sort_unstable();
            Some(Fused {
                op: FusedOp::Rotary { negate },
                inputs: vec![x, cos, sin],
                outputs: vec![self.out(add)],
                steps,
            })
        })
    }

    /// `Concat(Neg(Slice x[.., h..]), Slice x[.., ..h])`, or the same without the `Neg`, over
    /// the last axis at `r`, read only by step `by`: (x, whether negated, the steps).
    fn rotate_half(&self, r: ValueId, by: usize) -> Option<(ValueId, bool, Vec<usize>)> {
        let pc = self.internal(r, by)?;
        let Op::Concat(ca) = self.op(pc)? else {
            return None;
        };
        let [hv, s1v] = self.ins(pc)[..] else {
            return None;
        };
        let ph = self.internal(hv, pc)?;
        let (ps2, neg) = match self.op(ph)? {
            Op::Unary(a) if a.kind == UnaryOp::Neg => {
                (self.internal(self.input(ph, 0)?, ph)?, Some(ph))
            }
            Op::Slice(_) => (ph, None),
            _ => return None,
        };
        let ps1 = self.internal(s1v, pc)?;
        let x = self.input(ps1, 0)?;
        let shape = self.shape(x);
        let rank = shape.len();
        let d = *shape.last()? as i64;
        if self.input(ps2, 0)? != x || !self.is_f32(x) || ca.axis + 1 != rank || d % 2 != 0 {
            return None;
        }
        let half = |s: usize, start: i64, end: i64| match self.op(s)? {
            Op::Slice(a) => {
                let ok = a.axes == [rank - 1]
                    && a.steps == [1]
                    && a.starts == [start]
                    && a.ends == [end];
                ok.then_some(())
            }
            _ => None,
        };
        half(ps1, 0, d / 2)?;
        half(ps2, d / 2, d)?;
        let mut steps = vec![pc, ps1, ps2];
        steps.extend(neg);
        Some((x, neg.is_some(), steps))
    }
}
