//! Conv epilogue fusion: a `Conv` followed, each step the only reader of the one before,
//! by a `Mul` and/or `Add` of per-channel values (an inference BatchNormalization the
//! exporter left unfolded, as the importer lowers it), an `Add` of a same-shape tensor (a
//! residual) and/or an activation becomes one [`FusedOp::ConvEpilogue`], which applies
//! them to each block of Conv output while it is in cache.
//!
//! Keyed on op semantics: the activation is any op computing one of
//! [`ConvActivation`]'s functions elementwise (`Relu`, `Sigmoid`, `Silu`, `Clip`,
//! `HardSigmoid` / `HardSwish`), and SiLU spelled out as `Mul(y, Sigmoid(y))`; the
//! per-channel and residual operands are either operand of their `Mul` / `Add`, recognised
//! by shape (`[1, C, 1, ..]` aligned to the output, or the output's own shape).
//!
//! A Conv the direct kernel serves ([`tessera_kernels::direct_suits`]) whose weight is
//! loaded on the rank for it alone is fused too, epilogue or not: its weight is read from
//! the weight store and packed now ([`PackedConvWeight`]), and the load step disappears
//! (the rank holds the packed copy only). Set `TESSERA_DIRECT_CONV=0` to keep every Conv on
//! im2col and the GEMM.
use super::{Fused, Program};
use std::sync::Arc;
use tessera_ir::op::{BinaryOp, ConvAttrs, UnaryOp};
use tessera_ir::plan::{StepKind, ValueId};
use tessera_ir::Op;
use tessera_kernels::{ConvActivation, FusedOp, PackedConvWeight};

impl Program<'_> {
    /// The Conv at step `conv` with its residual add and/or activation.
    pub(super) fn conv_epilogue(&self, conv: usize) -> Option<Fused> {
        let Op::Conv(attrs) = self.op(conv)? else {
            return None;
        };
        let ins = self.ins(conv);
        let y = self.out(conv);
        if !ins.iter().chain([&y]).all(|&v| self.is_f32(v)) || !(2..=3).contains(&ins.len()) {
            return None;
        }
        let shape = self.shape(y);
        let mut steps = vec![conv];
        let mut inputs = ins.to_vec();
        let mut x = y;
        let channels = *shape.get(1)?;
        // A per-channel operand: its shape, aligned to the output's from the right, is
        // [1, C, 1, ..] (an inference BatchNormalization as imported: [C, 1, 1]).
        let per_channel = |v: ValueId| {
            let s = self.shape(v);
            let r = shape.len();
            let ok_rank = s.len() + 1 >= r && s.len() <= r;
            ok_rank
                && (0..r).all(|d| {
                    let e = if d + s.len() >= r {
                        s[d + s.len() - r]
                    } else {
                        1
                    };
                    e == if d == 1 { channels } else { 1 }
                })
        };
        let same_shape = |v: ValueId| self.shape(v) == shape;
        let mut part = |kind: BinaryOp, fits: &dyn Fn(ValueId) -> bool, x: &mut ValueId| {
            let (st, v) = self.binary_reader(*x, kind, fits)?;
            steps.push(st);
            inputs.push(v);
            *x = self.out(st);
            Some(())
        };
        let scale = part(BinaryOp::Mul, &per_channel, &mut x).is_some();
        let shift = part(BinaryOp::Add, &per_channel, &mut x).is_some();
        let residual = part(BinaryOp::Add, &same_shape, &mut x).is_some();
        let act = self.activation_of(x);
        if let Some((act_steps, out, _)) = &act {
            steps.extend_from_slice(act_steps);
            x = *out;
        }
        let packed = self.packed_conv_weight(conv, attrs);
        if !(scale || shift || residual) && act.is_none() && packed.is_none() {
            return None;
        }
        if let Some((load, _)) = &packed {
            steps.push(*load);
            inputs.remove(1);
        }
        steps.sort_unstable();
        Some(Fused {
            op: FusedOp::ConvEpilogue {
                attrs: attrs.clone(),
                packed: packed.map(|(_, w)| w),
                bias: ins.len() == 3,
                scale,
                shift,
                residual,
                act: act.map(|a| a.2),
            },
            inputs,
            output: x,
            steps,
        })
    }

    /// The weight of the Conv at step `conv`, packed for the direct kernel, and the step
    /// loading it: when the kernel serves the Conv and the weight is loaded on this rank
    /// for this Conv alone.
    fn packed_conv_weight(
        &self,
        conv: usize,
        attrs: &ConvAttrs,
    ) -> Option<(usize, Arc<PackedConvWeight>)> {
        let store = self.store?;
        let (x, w) = (self.input(conv, 0)?, self.input(conv, 1)?);
        let (xs, ws) = (self.shape(x), self.shape(w));
        if !super::direct_conv_enabled() || !tessera_kernels::direct_suits(xs, ws, attrs) {
            return None;
        }
        let load = self.producer[w.index()]?;

        let StepKind::LoadWeight { tensor, slice } = &self.steps[load].kind else {
            return None;
        };
        if self.keep[w.index()] || self.uses[w.index()].as_slice() != [conv] || self.claimed[load] {
            return None;
        }
        let weight = self.plan.graph.weights.get(tensor)?;
        // The decoded copy the session preloaded (no second decode), released once packed:
        // the rank holds the packed weights only.
        let t = store.load_resident(weight, slice.as_ref()).ok()?;
        if t.shape != ws {
            return None;
        }
        let group = attrs.groups(*xs.get(1)?);
        let packed = PackedConvWeight::pack(&t.shape, t.as_f32()?, group).ok()?;
        // A poisoned cache only keeps the float copy resident too.
        let _ = store.release_resident(weight, slice.as_ref());
        Some((load, Arc::new(packed)))
    }

    /// The binary `kind` step that is the only reader of `x` (an intermediate), with an f32
    /// other operand that `fits` and an f32 output of `x`'s shape: (step, other operand).
    fn binary_reader(
        &self,
        x: ValueId,
        kind: BinaryOp,
        fits: &dyn Fn(ValueId) -> bool,
    ) -> Option<(usize, ValueId)> {
        let st = self.only_reader(x)?;
        let v = self.other_operand(st, x)?;
        let out = self.out(st);
        let ok = self.binary(st) == Some(kind)
            && self.is_f32(v)
            && fits(v)
            && self.shape(out) == self.shape(x)
            && self.is_f32(out);
        ok.then_some((st, v))
    }

    /// The activation applied to `x` (an intermediate read only by it): its steps, output
    /// and function.
    fn activation_of(&self, x: ValueId) -> Option<(Vec<usize>, ValueId, ConvActivation)> {
        if self.keep[x.index()] {
            return None;
        }
        if let Some((mul, sig)) = self.silu_pair(x) {
            let y = self.out(mul);
            let ok = self.shape(y) == self.shape(x) && self.is_f32(y);
            return ok.then(|| (vec![sig, mul], y, ConvActivation::Silu));
        }
        let a = self.only_reader(x)?;
        let y = self.out(a);
        if self.shape(y) != self.shape(x) || !self.is_f32(y) {
            return None;
        }
        let act = match self.op(a)? {
            Op::Unary(u) => match u.kind {
                UnaryOp::Relu => ConvActivation::Relu,
                UnaryOp::Sigmoid => ConvActivation::Sigmoid,
                UnaryOp::Silu => ConvActivation::Silu,
                _ => return None,
            },
            Op::Clip(c) => ConvActivation::Clip {
                min: c.min,
                max: c.max,
            },
            Op::HardSigmoid(h) => ConvActivation::HardSigmoid {
                alpha: h.alpha,
                beta: h.beta,
                swish: h.swish,
            },
            _ => return None,
        };
        Some((vec![a], y, act))
    }

    /// SiLU spelled out: `x` read exactly by `Sigmoid(x)` and by `Mul(x, that)` (either
    /// operand order), the sigmoid read only by the Mul: (Mul step, Sigmoid step).
    fn silu_pair(&self, x: ValueId) -> Option<(usize, usize)> {
        let readers = &self.uses[x.index()];
        let [p, q] = readers[..] else {
            return None;
        };
        for (sig, mul) in [(p, q), (q, p)] {
            let is_sig = matches!(self.op(sig), Some(Op::Unary(u)) if u.kind == UnaryOp::Sigmoid);
            if !is_sig || self.binary(mul) != Some(BinaryOp::Mul) {
                continue;
            }
            let s = self.out(sig);
            let exact = self.is_f32(s) && self.shape(s) == self.shape(x);
            if exact && self.only_reader(s) == Some(mul) && self.other_operand(mul, x) == Some(s) {
                return Some((mul, sig));
            }
        }
        None
    }
}
