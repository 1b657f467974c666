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
//! A Conv whose weight is loaded on the rank for it alone is fused too, epilogue or not,
//! when the direct kernel serves it ([`tessera_kernels::direct_suits`]), the grouped
//! kernel serves it ([`tessera_kernels::grouped_conv_suits`]) or its end taps read only
//! padding on this rank's shapes ([`tessera_kernels::trim_dead_taps`]): its weight is read
//! from the weight store now, cut to its live taps (the op's pads cut to match), packed
//! where the direct kernel serves the result ([`PackedConvWeight`]) or blocked where the
//! grouped kernel does ([`PackedGroupedWeight`]), and the load step disappears (the rank
//! holds the prepared copy only). Inception-V3's 3×3, 1×3 and 3×1 Convs on 1×1 maps become
//! 1×1 Convs that read a ninth or a third of their weights, its 1×7 and 7×1 Convs on 3×3
//! maps keep 5 of 7 taps. Set
//! `TESSERA_DIRECT_CONV=0` to keep every Conv on im2col and the GEMM (trimming stays).
use super::{Fused, Program};
use std::borrow::Cow;
use std::sync::Arc;
use tessera_ir::op::{BinaryOp, ConvAttrs, UnaryOp};
use tessera_ir::plan::ValueId;
use tessera_ir::Op;
use tessera_ir::Tensor;
use tessera_kernels::{
    ConvActivation, FusedOp, HeldConvWeight, PackedConvWeight, PackedGroupedWeight,
};

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
        let held = self.held_conv_weight(conv, attrs);
        if !(scale || shift || residual) && act.is_none() && held.is_none() {
            return None;
        }
        let attrs = match &held {
            Some((load, _, trimmed)) => {
                steps.push(*load);
                inputs.remove(1);
                trimmed.clone().unwrap_or_else(|| attrs.clone())
            }
            None => attrs.clone(),
        };
        steps.sort_unstable();
        Some(Fused {
            op: FusedOp::ConvEpilogue {
                attrs,
                held: held.map(|(_, w, _)| w),
                bias: ins.len() == 3,
                scale,
                shift,
                residual,
                act: act.map(|a| a.2),
            },
            inputs,
            outputs: vec![x],
            steps,
        })
    }

    /// The weight of the Conv at step `conv` prepared now, the step loading it, and the
    /// Conv's trimmed attributes if its end taps read only padding: when the weight is
    /// loaded on this rank for this Conv alone and the Conv has dead end taps
    /// ([`tessera_kernels::trim_dead_taps`]: the live taps are kept) or the direct or the
    /// grouped kernel serves it; packed for the direct kernel, blocked for the grouped one,
    /// else plain.
    fn held_conv_weight(
        &self,
        conv: usize,
        attrs: &ConvAttrs,
    ) -> Option<(usize, HeldConvWeight, Option<ConvAttrs>)> {
        let (x, w) = (self.input(conv, 0)?, self.input(conv, 1)?);
        let (xs, ws) = (self.shape(x), self.shape(w));
        let direct = super::direct_conv_enabled();
        let trim = tessera_kernels::trim_dead_taps(xs, ws, attrs);
        let suits = |w: &[usize], a: &ConvAttrs| direct && tessera_kernels::direct_suits(xs, w, a);
        let grouped = |w: &[usize], a: &ConvAttrs| tessera_kernels::grouped_conv_suits(xs, w, a);
        if trim.is_none() && !suits(ws, attrs) && !grouped(ws, attrs) {
            return None;
        }
        let group = attrs.groups(*xs.get(1)?);
        let (load, held) = self.hold_weight(conv, w, |t| {
            let (shape, values, a): (_, Cow<[f32]>, _) = match &trim {
                Some(tr) => (
                    tr.weight_shape(ws),
                    Cow::Owned(tr.slice_weights(ws, t.as_f32()?)),
                    &tr.attrs,
                ),
                None => (ws.to_vec(), Cow::Borrowed(t.as_f32()?), attrs),
            };
            Some(if suits(&shape, a) {
                let p = PackedConvWeight::pack(&shape, &values, group).ok()?;
                HeldConvWeight::Packed(Arc::new(p))
            } else if grouped(&shape, a) {
                let p = PackedGroupedWeight::pack(&shape, &values, group).ok()?;
                HeldConvWeight::Grouped(Arc::new(p))
            } else {
                HeldConvWeight::Plain(Arc::new(Tensor::f32(shape, values.into_owned())))
            })
        })?;
        Some((load, held, trim.map(|t| t.attrs)))
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
