//! Kernel fusion of one rank's program, for devices that run fused kernels
//! ([`crate::device::Device::fuses`]; the CPU device does).
//!
//! Six patterns, each a chain whose intermediates are read by nothing else on the rank
//! (one consumer, not a plan output; the residual norm's sum excepted, below) and whose
//! values are exactly f32:
//!
//! * **Attention**: `Reshape [B,S,H,D]` + `Transpose` of q, k (to `[B,H,D,S]`, in one
//!   Transpose or as `[0,2,1,3]` then `[0,1,3,2]`) and v, then `MatMul(Q, Kᵀ)`, `Div`/`Mul`
//!   by a one-element scale, optionally a mask (`Add` of an f32 mask, BERT; or
//!   `Where(cond, ·, fill)`, GPT-2's causal mask), `Softmax` over the last axis,
//!   `MatMul(·, V)`, and when present the `Transpose` + `Reshape` that merge the heads back
//!   ([`FusedOp::Attention`]). Also torch dynamo's SDPA decomposition: q and Kᵀ each
//!   `Mul`-ed by a one-element scale before the product (Kᵀ as `Reshape [B·H, S, D]`,
//!   `Transpose [0, 2, 1]`, `Reshape`), an additive mask, and `Where(IsNaN(p), fill, p)`
//!   after the Softmax (the kernel replaces every NaN probability by the fill, as the
//!   unfused ops: a query masked at every key gives zeros); and the ONNX `Attention` op
//!   without KV cache, causal flag, window or softcap (`fuse/attention.rs`).
//! * **MatMul epilogue**: `MatMul`, then `Add` of a bias vector over the output columns
//!   and/or a `Gelu` (erf form) ([`FusedOp::MatMulEpilogue`]).
//!
//! The patterns key on canonical ops: the compiler's canonicalisation has already turned
//! every export's GELU, LayerNorm and RMSNorm spelling into one op (each norm's own kernel
//! is one pass; fused, it also forms the residual sum it normalises).
//! * **Residual norm**: `Add(a, b)` of two same-shape tensors feeding a last-axis
//!   `LayerNorm` or `RmsNorm`, where `a` may itself be `y + bias` (a row-parallel layer's
//!   bias, added after its all-reduce) ([`FusedOp::AddLayerNorm`]); when the sum is also read
//!   after the norm (a pre-norm layer's residual stream), it is a second output.
//! * **Conv epilogue**: `Conv`, then a per-channel `Mul` and/or `Add` (an unfolded
//!   BatchNormalization), an `Add` of a same-shape residual and/or an activation (Relu,
//!   Sigmoid, SiLU, Clip, HardSigmoid / HardSwish), applied to each block of Conv output as
//!   the Conv finishes it ([`FusedOp::ConvEpilogue`], `fuse/conv.rs`).
//! * **Rotary embedding**: `x·cos + rotate_half(x)·sin` spelled as Slice, Slice, Neg,
//!   Concat, Mul, Mul, Add over the last axis, or without the Neg (the sign folded into
//!   sin) ([`FusedOp::Rotary`], `fuse/rotary.rs`).
//! * **Elementwise trees** (after the five above): any tree of elementwise and broadcasting
//!   ops whose intermediates are read once runs as one program ([`FusedOp::Elementwise`],
//!   `fuse/elementwise.rs`).
//!
//! A fused item runs where the last step of its chain was; the chain's other steps vanish.
//! The fused kernels compute the same arithmetic as the ops they replace (bit for bit except
//! for last-bit GEMM rounding in attention), so `--check` (fused run vs the unfused
//! reference executor) stays a tight comparison. Set `TESSERA_FUSE=0` to run every step
//! unfused.
mod attention;
mod conv;
mod elementwise;
mod matmul;
mod quant_matmul;
mod rotary;
mod score_terms;

use crate::weights::WeightStore;
use tessera_ir::op::{BinaryOp, GeluAttrs};
use tessera_ir::plan::{Plan, Step, StepKind, ValueId};
use tessera_ir::{DType, Op};
use tessera_kernels::FusedOp;

/// A fused chain of steps.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fused {
    /// The kernel.
    pub op: FusedOp,
    /// Values it reads.
    pub inputs: Vec<ValueId>,
    /// The values it writes: the chain's last output, then any other value of the chain
    /// that is read outside it (the sum kept by [`FusedOp::AddLayerNorm`]).
    pub outputs: Vec<ValueId>,
    /// The steps it replaces, in program order.
    pub steps: Vec<usize>,
}

/// The epilogue steps after a product ([`Program::epilogue`]).
struct Epilogue {
    /// Its steps (the bias `Add`, the GELU), in program order.
    steps: Vec<usize>,
    /// The bias vector added.
    bias: Option<ValueId>,
    /// The GELU applied.
    gelu: Option<GeluAttrs>,
    /// The last value (the product itself when there is no epilogue).
    output: ValueId,
}

/// One unit of a rank's execution.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Item {
    /// A plan step, by index.
    Step(usize),
    /// A fused chain.
    Fused(Fused),
}

/// True unless the environment variable `TESSERA_FUSE` is `0`.
pub(crate) fn enabled() -> bool {
    std::env::var("TESSERA_FUSE").map_or(true, |v| v != "0")
}

/// True unless the environment variable `TESSERA_DIRECT_CONV` is `0` (Convs then run as
/// im2col and GEMMs over weights packed per call).
pub(crate) fn direct_conv_enabled() -> bool {
    std::env::var("TESSERA_DIRECT_CONV").map_or(true, |v| v != "0")
}

/// True unless the environment variable `TESSERA_INT8_GEMM` is `0` (quantised products
/// then run as float GEMMs of the dequantised operands).
pub(crate) fn int8_enabled() -> bool {
    std::env::var("TESSERA_INT8_GEMM").map_or(true, |v| v != "0")
}

/// The program of `steps` as items: fused chains where a pattern matches, steps elsewhere.
/// `keep[v]` marks values the rank must hold at the end (they are never fused away).
/// `rank` picks the value shapes of that rank (they differ under a ragged split). With a
/// `store`, quantised weights an integer GEMM reads and the weights of Convs the direct
/// kernel runs are loaded and packed now.
pub(crate) fn fuse(
    plan: &Plan,
    steps: &[Step],
    keep: &[bool],
    rank: usize,
    store: Option<&WeightStore>,
) -> Vec<Item> {
    let mut g = Program::new(plan, steps, keep, rank, store);
    let mut fused: Vec<Fused> = Vec::new();
    for s in 0..steps.len() {
        if let Some(f) = g.attention(s).or_else(|| g.attention_op(s)) {
            g.claim(&f);
            fused.push(f);
        }
    }
    for s in 0..steps.len() {
        let found = g
            .add_layer_norm(s)
            .or_else(|| g.quant_matmul(s))
            .or_else(|| g.matmul_epilogue(s))
            .or_else(|| g.gemm_held(s))
            .or_else(|| g.conv_epilogue(s))
            .or_else(|| g.rotary(s));
        if let Some(f) = found {
            g.claim(&f);
            fused.push(f);
        }
    }
    // Elementwise trees last, from the end of the program, so each starts at its root.
    for s in (0..steps.len()).rev() {
        if let Some(f) = g.elementwise(s) {
            g.claim(&f);
            fused.push(f);
        }
    }
    let mut at: Vec<Option<usize>> = vec![None; steps.len()];
    for (i, f) in fused.iter().enumerate() {
        // Steps are listed in program order; the chain ends at its last one.
        if let Some(&last) = f.steps.last() {
            at[last] = Some(i);
        }
    }
    let mut slots: Vec<Option<Fused>> = fused.into_iter().map(Some).collect();
    let mut items = Vec::with_capacity(steps.len());
    for (s, slot) in at.iter().enumerate() {
        match slot {
            Some(i) => {
                if let Some(f) = slots[*i].take() {
                    items.push(Item::Fused(f));
                }
            }
            None if !g.claimed[s] => items.push(Item::Step(s)),
            None => {}
        }
    }
    drop_dead(items, steps, keep)
}

/// Removes compute and weight-load steps and fused chains whose outputs nothing reads any
/// more (a Quantize and Dequantize whose every reader became an integer GEMM that quantises
/// `x` itself), last first so their own inputs can go too. Collectives always stay: every
/// rank takes part.
fn drop_dead(items: Vec<Item>, steps: &[Step], keep: &[bool]) -> Vec<Item> {
    let io = |item: &Item| -> (Vec<ValueId>, Vec<ValueId>) {
        match item {
            Item::Step(s) => (steps[*s].inputs.clone(), steps[*s].outputs.clone()),
            Item::Fused(f) => (f.inputs.clone(), f.outputs.clone()),
        }
    };
    let mut readers = vec![0usize; keep.len()];
    for item in &items {
        for v in io(item).0 {
            readers[v.index()] += 1;
        }
    }
    let mut alive = vec![true; items.len()];
    for (i, item) in items.iter().enumerate().rev() {
        let droppable = match item {
            Item::Step(s) => matches!(
                steps[*s].kind,
                StepKind::Compute { .. } | StepKind::LoadWeight { .. }
            ),
            Item::Fused(_) => true,
        };
        let (ins, outs) = io(item);
        if droppable
            && outs
                .iter()
                .all(|v| !keep[v.index()] && readers[v.index()] == 0)
        {
            alive[i] = false;
            for v in ins {
                readers[v.index()] -= 1;
            }
        }
    }
    items
        .into_iter()
        .zip(alive)
        .filter_map(|(item, a)| a.then_some(item))
        .collect()
}

/// The reader recorded for a value a fused chain reads from outside its own steps (not a
/// step index: [`Program::op`] of it is `None`).
const OUTSIDE: usize = usize::MAX;

/// Def-use view of a rank's steps, for the matchers.
struct Program<'a> {
    plan: &'a Plan,
    rank: usize,
    steps: &'a [Step],
    keep: &'a [bool],
    store: Option<&'a WeightStore>,
    producer: Vec<Option<usize>>,
    uses: Vec<Vec<usize>>,
    claimed: Vec<bool>,
}

impl<'a> Program<'a> {
    fn new(
        plan: &'a Plan,
        steps: &'a [Step],
        keep: &'a [bool],
        rank: usize,
        store: Option<&'a WeightStore>,
    ) -> Self {
        let n = plan.values.len();
        let mut producer = vec![None; n];
        let mut uses = vec![Vec::new(); n];
        for (s, step) in steps.iter().enumerate() {
            for v in &step.inputs {
                uses[v.index()].push(s);
            }
            for v in &step.outputs {
                producer[v.index()] = Some(s);
            }
        }
        Program {
            plan,
            rank,
            steps,
            keep,
            store,
            producer,
            uses,
            claimed: vec![false; steps.len()],
        }
    }

    /// Marks a fused chain's steps as taken. An input the chain reads that none of its
    /// steps read (the integer GEMM reads `x` past a shared Quantize) gains a reader outside
    /// the program ([`OUTSIDE`]), so later patterns keep it a materialised value.
    fn claim(&mut self, f: &Fused) {
        for &s in &f.steps {
            self.claimed[s] = true;
        }
        for v in &f.inputs {
            let readers = &mut self.uses[v.index()];
            if !readers.iter().any(|r| f.steps.contains(r)) {
                readers.push(OUTSIDE);
            }
        }
    }

    fn shape(&self, v: ValueId) -> &[usize] {
        self.plan.values[v.index()].shape_on(self.rank)
    }

    fn is_f32(&self, v: ValueId) -> bool {
        self.plan.values[v.index()].dtype == DType::F32
    }

    fn is_scalar(&self, v: ValueId) -> bool {
        self.is_f32(v) && self.shape(v).iter().product::<usize>() == 1
    }

    /// `prepare` of the weight `w` that step `reader` alone reads, loaded on this rank by a
    /// step nobody else claimed (not a plan output), with the step that loads it: the
    /// decoded copy the session preloaded (no second decode) is released once prepared, so
    /// the rank holds the prepared weight only. None where any of that fails.
    fn hold_weight<T>(
        &self,
        reader: usize,
        w: ValueId,
        prepare: impl FnOnce(&tessera_ir::Tensor) -> Option<T>,
    ) -> Option<(usize, T)> {
        let store = self.store?;
        let load = self.producer[w.index()]?;
        let StepKind::LoadWeight { tensor, slice } = &self.steps[load].kind else {
            return None;
        };
        if self.keep[w.index()] || self.uses[w.index()].as_slice() != [reader] || self.claimed[load]
        {
            return None;
        }
        let weight = self.plan.graph.weights.get(tensor)?;
        let t = store.load_resident(weight, slice.as_ref()).ok()?;
        if t.shape != self.shape(w) {
            return None;
        }
        let prepared = prepare(&t)?;
        // A poisoned cache only keeps the float copy resident too.
        let _ = store.release_resident(weight, slice.as_ref());
        Some((load, prepared))
    }

    /// The op of an unclaimed single-output compute step.
    fn op(&self, s: usize) -> Option<&'a Op> {
        let step = self.steps.get(s)?;
        match &step.kind {
            StepKind::Compute { op, .. } if !self.claimed[s] && step.outputs.len() == 1 => Some(op),
            _ => None,
        }
    }

    fn ins(&self, s: usize) -> &'a [ValueId] {
        &self.steps[s].inputs
    }

    /// Input `i` of step `s` (None on a malformed step, which then simply does not fuse).
    fn input(&self, s: usize, i: usize) -> Option<ValueId> {
        self.steps[s].inputs.get(i).copied()
    }

    /// The output of step `s`; only called on steps [`Program::op`] accepted, which have
    /// exactly one.
    fn out(&self, s: usize) -> ValueId {
        self.steps[s].outputs[0]
    }

    /// The step producing `v` when `v` is an f32 intermediate read only by step `by`.
    fn internal(&self, v: ValueId, by: usize) -> Option<usize> {
        self.sole_producer(v, by).filter(|_| self.is_f32(v))
    }

    /// The step producing the f32 value `v` when step `by` reads it and every other reader
    /// is a later step (not a fused chain, whose place is not known here; `v` may be kept).
    fn read_after(&self, v: ValueId, by: usize) -> Option<usize> {
        let readers = &self.uses[v.index()];
        if !self.is_f32(v)
            || !readers.contains(&by)
            || readers.iter().any(|&r| r < by || r == OUTSIDE)
        {
            return None;
        }
        let p = self.producer[v.index()]?;
        self.op(p).map(|_| p)
    }

    /// The step producing `v` when `v`, of any dtype, is read by step `by` alone and not
    /// kept.
    fn sole_producer(&self, v: ValueId, by: usize) -> Option<usize> {
        let i = v.index();
        if self.keep[i] || self.uses[i].as_slice() != [by] {
            return None;
        }
        let p = self.producer[i]?;
        self.op(p).map(|_| p)
    }

    /// Whether `a` and `b` hold the same value on this rank: the same value, or two pieces
    /// of the same layout and shape of weights held inline with equal contents (the
    /// compiler gives each reader of a folded constant its own tensor).
    fn same_value(&self, a: ValueId, b: ValueId) -> bool {
        if a == b {
            return true;
        }
        let (va, vb) = (&self.plan.values[a.index()], &self.plan.values[b.index()]);
        let inline = |t| match self.plan.graph.weights.get(&t) {
            Some(w) if w.quant.is_none() && w.perm.is_none() => match &w.data {
                tessera_ir::WeightData::Inline { tensor } => Some(tensor),
                tessera_ir::WeightData::File { .. } => None,
            },
            _ => None,
        };
        va.layout == vb.layout
            && va.shape_on(self.rank) == vb.shape_on(self.rank)
            && va.rank_shapes == vb.rank_shapes
            && matches!((inline(va.tensor), inline(vb.tensor)), (Some(x), Some(y)) if x == y)
    }

    /// The single reader of `v` when `v` is an intermediate (not kept, one use).
    fn only_reader(&self, v: ValueId) -> Option<usize> {
        let i = v.index();
        match self.uses[i].as_slice() {
            [r] if !self.keep[i] && self.op(*r).is_some() => Some(*r),
            _ => None,
        }
    }

    fn binary(&self, s: usize) -> Option<BinaryOp> {
        match self.op(s)? {
            Op::Binary(a) => Some(a.kind),
            _ => None,
        }
    }

    /// For a commutative binary step reading `x`: its other operand.
    fn other_operand(&self, s: usize, x: ValueId) -> Option<ValueId> {
        match self.ins(s) {
            [a, b] if *a == x && *b != x => Some(*b),
            [a, b] if *b == x && *a != x => Some(*a),
            _ => None,
        }
    }

    fn add_layer_norm(&self, ln: usize) -> Option<Fused> {
        let (attrs, rms) = match self.op(ln)? {
            Op::LayerNorm(attrs) => (attrs, false),
            Op::RmsNorm(attrs) => (attrs, true),
            _ => return None,
        };
        let ins = self.ins(ln);
        // x and the scale, and a LayerNorm's bias when it has one.
        let arity = if rms { 2..=2 } else { 2..=3 };
        if !arity.contains(&ins.len()) {
            return None;
        }
        let x = *ins.first()?;
        // The sum may be read after the norm too (kept as a second output: the residual
        // stream of a pre-norm layer), not before it: the fused item runs where the norm
        // was.
        let (add, keep_sum) = match self.internal(x, ln) {
            Some(add) => (add, false),
            None => (self.read_after(x, ln)?, true),
        };
        if self.binary(add) != Some(BinaryOp::Add) || attrs.axis + 1 != self.shape(x).len() {
            return None;
        }
        let [a, b] = self.ins(add)[..] else {
            return None;
        };
        if self.shape(a) != self.shape(x)
            || self.shape(b) != self.shape(x)
            || !self.is_f32(a)
            || !self.is_f32(b)
        {
            return None;
        }
        if !ins[1..].iter().all(|&p| self.is_f32(p)) {
            return None;
        }
        let mut steps = vec![add, ln];
        // One addend may itself be `y + c` with c a bias vector (added after an all-reduce).
        let n = *self.shape(x).last()?;
        let pre_bias = [(a, b), (b, a)].into_iter().find_map(|(t, r)| {
            let p = self.internal(t, add)?;
            if self.binary(p) != Some(BinaryOp::Add) {
                return None;
            }
            let [u, w] = self.ins(p)[..] else {
                return None;
            };
            let vector = |v: ValueId| self.shape(v) == [n] && self.is_f32(v);
            let full = |v: ValueId| self.shape(v) == self.shape(x) && self.is_f32(v);
            match (vector(u), vector(w)) {
                (false, true) if full(u) => Some((p, u, w, r)),
                (true, false) if full(w) => Some((p, w, u, r)),
                _ => None,
            }
        });
        let mut inputs = match pre_bias {
            Some((p, y, c, r)) => {
                steps.insert(0, p);
                vec![y, c, r]
            }
            None => vec![a, b],
        };
        inputs.extend_from_slice(&ins[1..]);
        let mut outputs = vec![self.out(ln)];
        if keep_sum {
            outputs.push(x);
        }
        Some(Fused {
            op: FusedOp::AddLayerNorm {
                attrs: attrs.clone(),
                rms,
                has_bias: ins.len() == 3,
                pre_bias: pre_bias.is_some(),
                keep_sum,
            },
            inputs,
            outputs,
            steps,
        })
    }

    /// What follows a product `m` that an epilogue can apply: an `Add` of a bias vector over
    /// its last axis, then a GELU (each optional).
    fn epilogue(&self, m: ValueId) -> Option<Epilogue> {
        let shape = self.shape(m);
        let n = *shape.last()?;
        let mut epi = Epilogue {
            steps: Vec::new(),
            bias: None,
            gelu: None,
            output: m,
        };
        let bias = self.only_reader(m).and_then(|ad| {
            let bv = self.other_operand(ad, m)?;
            let ok = self.binary(ad) == Some(BinaryOp::Add)
                && self.shape(bv) == [n]
                && self.is_f32(bv)
                && self.shape(self.out(ad)) == shape;
            ok.then_some((ad, bv))
        });
        if let Some((ad, bv)) = bias {
            epi.steps.push(ad);
            epi.bias = Some(bv);
            epi.output = self.out(ad);
        }
        if let Some((g, y, attrs)) = self.gelu_op(epi.output) {
            epi.steps.push(g);
            epi.gelu = Some(attrs);
            epi.output = y;
        }
        Some(epi)
    }

    /// The `Gelu` (either form) that is the only reader of `x` (not a plan output): its
    /// step, output and attributes.
    fn gelu_op(&self, x: ValueId) -> Option<(usize, ValueId, GeluAttrs)> {
        if self.keep[x.index()] {
            return None;
        }
        let g = self.only_reader(x)?;
        let y = self.out(g);
        let Op::Gelu(attrs) = self.op(g)? else {
            return None;
        };
        let ok = self.shape(y) == self.shape(x) && self.is_f32(y);
        ok.then_some((g, y, attrs.clone()))
    }
}
