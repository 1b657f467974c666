//! The evaluation of a fused elementwise program ([`super::elementwise`]): chunk by chunk
//! over blocks of the output, each instruction into its own register, with the registers
//! that hold one value over a block kept as scalars.
use super::elementwise::{BlockOffsets, ElementwiseProgram, EwInstr, Inner, Src};
use super::quantize::{fake_quant, quantize};
use crate::binary::{float_op, max_f32, min_f32, pow_f32};
use crate::simd::vectorized;
use crate::unary::{erf, float_fn, gelu_erf, gelu_tanh, hi_then, relu, sign};
use tessera_ir::op::{BinaryOp, UnaryOp};

thread_local! {
    /// Each thread's registers ([`Runner::with_scratch`]), kept between programs.
    static REGISTERS: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Evaluates blocks of the output.
pub(super) struct Runner<'a> {
    pub(super) p: &'a ElementwiseProgram,
    pub(super) srcs: &'a [Src<'a>],
    pub(super) modes: &'a [Inner],
    pub(super) offsets: &'a [BlockOffsets],
    pub(super) len: usize,
    /// Per register: one value over each chunk ([`uniform_registers`]).
    pub(super) uniform: &'a [bool],
    /// Elements per register ([`super::elementwise::chunk_len`]).
    pub(super) chunk: usize,
    /// Whole blocks per chunk: 1, or several when blocks are short (a per-row value of a
    /// norm makes the block one row), so each instruction's dispatch covers a full chunk.
    pub(super) group: usize,
}

/// The registers that hold one value over each block: loads of inputs repeated over the
/// block (a scalar, a per-channel scale outside the block) and ops of such registers only.
/// A chunk computes one element of them; an instruction that reads one beside a full
/// register either takes it as a scalar ([`Runner::keeps_uniform`]) or has it filled first.
pub(super) fn uniform_registers(p: &ElementwiseProgram, modes: &[Inner]) -> Vec<bool> {
    let mut u: Vec<bool> = Vec::with_capacity(p.instrs.len());
    for ins in &p.instrs {
        let v = match *ins {
            EwInstr::Load(j) | EwInstr::LoadCast(j) => modes[j] == Inner::Repeat,
            EwInstr::Where { cond, a, b } => modes[cond] == Inner::Repeat && u[a] && u[b],
            _ => {
                let (regs, n) = operands(ins);
                regs[..n].iter().all(|&x| u[x])
            }
        };
        u.push(v);
    }
    u
}

/// The registers an instruction reads: the first `n` of the array.
pub(super) fn operands(ins: &EwInstr) -> ([usize; 3], usize) {
    match *ins {
        EwInstr::Load(_) | EwInstr::LoadCast(_) => ([0; 3], 0),
        EwInstr::Unary(_, x)
        | EwInstr::Gelu { x, .. }
        | EwInstr::Clip { x, .. }
        | EwInstr::CastThrough { x, .. }
        | EwInstr::HardSigmoid { x, .. } => ([x, 0, 0], 1),
        EwInstr::Binary(_, a, b) | EwInstr::Where { a, b, .. } => ([a, b, 0], 2),
        EwInstr::Quantize { x, s, z, .. } | EwInstr::FakeQuant { x, s, z, .. } => ([x, s, z], 3),
    }
}

impl<'a> Runner<'a> {
    /// Whether instruction `ins` (not uniform itself) reads its uniform operand `x` as a
    /// scalar: one operand of Add/Sub/Mul/Div, or the scale and zero point of a (fake)
    /// quantisation of a full register.
    fn keeps_uniform(&self, ins: &EwInstr, x: usize) -> bool {
        let u = self.uniform;
        match *ins {
            EwInstr::Binary(
                BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div,
                a,
                b,
            ) => u[a] != u[b] && u[x],
            EwInstr::Quantize { x: v, s, z, .. } | EwInstr::FakeQuant { x: v, s, z, .. } => {
                !u[v] && u[s] && u[z] && x != v
            }
            _ => false,
        }
    }

    /// Whether input `j` reads the same values in every chunk: one block for every block
    /// of the output (a bias), and chunks that start at a block each (whole blocks, or
    /// blocks no longer than a chunk). A later chunk may be shorter: a prefix of the same.
    fn same_every_chunk(&self, j: usize) -> bool {
        matches!(self.offsets[j], BlockOffsets::First)
            && self.modes[j] == Inner::Full
            && (self.group > 1 || self.len <= self.chunk)
    }

    /// Fills `dst`, whole blocks starting at block `first`.
    pub(super) fn blocks(&self, first: usize, dst: &mut [f32]) {
        self.with_scratch(
            #[inline(always)]
            |run, scratch| {
                if run.group > 1 {
                    for (gi, blocks) in dst.chunks_mut(run.group * run.len).enumerate() {
                        run.chunk(first + gi * run.group, 0, blocks, scratch);
                    }
                } else {
                    for (bi, block) in dst.chunks_mut(run.len).enumerate() {
                        run.part(first + bi, 0, block, scratch);
                    }
                }
            },
        );
    }

    /// Fills `dst`, elements `[start, start + dst.len())` of block `o` (ungrouped blocks).
    pub(super) fn span(&self, o: usize, start: usize, dst: &mut [f32]) {
        self.with_scratch(
            #[inline(always)]
            |run, scratch| run.part(o, start, dst, scratch),
        );
    }

    /// Elements `[start, start + dst.len())` of block `o`, chunk by chunk.
    #[inline(always)]
    fn part(&self, o: usize, start: usize, dst: &mut [f32], scratch: &mut Scratch<'_, 'a>) {
        let mut at = start;
        for piece in dst.chunks_mut(self.chunk) {
            self.chunk(o, at, piece, scratch);
            at += piece.len();
        }
    }

    /// Runs `f` in the widest vector region with fresh registers (`f` must be
    /// `#[inline(always)]`, so that its loops are compiled for that region).
    #[inline(always)]
    fn with_scratch(&self, f: impl FnOnce(&Self, &mut Scratch<'_, 'a>)) {
        let nregs = self.p.instrs.len();
        // The registers are taken from the thread's buffer and given back after: every
        // register is written before it is read, so stale values need no clearing (a fresh
        // zeroed buffer per call cost as much as a small program's arithmetic).
        let mut regs = REGISTERS.take();
        let chunk = self.chunk;
        if regs.len() < nregs * chunk {
            regs = vec![0f32; nregs * chunk];
        }
        let mut cond = vec![false; chunk];
        let mut direct: Vec<Option<&'a [f32]>> = vec![None; nregs];
        let mut filled = vec![false; nregs];
        let mut kept = vec![false; nregs];
        vectorized(
            #[inline(always)]
            || {
                let mut scratch = Scratch {
                    regs: &mut regs,
                    cond: &mut cond,
                    direct: &mut direct,
                    filled: &mut filled,
                    kept: &mut kept,
                };
                f(self, &mut scratch)
            },
        );
        REGISTERS.set(regs);
    }

    /// Input `j`'s elements of a chunk, converted by `f`, into `out`: elements
    /// `[start, start + out.len())` of block `o`, or (grouped) whole blocks from `o`.
    #[inline(always)]
    fn read<T: Copy, U: Copy>(
        &self,
        v: &[T],
        j: usize,
        o: usize,
        start: usize,
        out: &mut [U],
        f: impl Fn(T) -> U,
    ) {
        let len = self.len;
        let seg = if self.group > 1 { len } else { out.len() };
        for (b, piece) in out.chunks_mut(seg).enumerate() {
            let base = self.offsets[j].at(o + b);
            match self.modes[j] {
                Inner::Full => {
                    let src = &v[base * len + start..][..piece.len()];
                    piece.iter_mut().zip(src).for_each(|(y, &x)| *y = f(x));
                }
                Inner::Repeat => piece.fill(f(v[base])),
            }
        }
    }

    /// Input `j`'s elements of a chunk of `m` (as [`Runner::read`]) as one slice of the
    /// input, when they are contiguous there.
    #[inline(always)]
    fn contiguous<'v>(
        &self,
        v: &'v [f32],
        j: usize,
        o: usize,
        start: usize,
        m: usize,
    ) -> Option<&'v [f32]> {
        if self.modes[j] != Inner::Full {
            return None;
        }
        let offsets = &self.offsets[j];
        let base = offsets.at(o);
        let blocks = if self.group > 1 { m / self.len } else { 1 };
        if !matches!(offsets, BlockOffsets::Same)
            && !(1..blocks).all(|b| offsets.at(o + b) == base + b)
        {
            return None;
        }
        Some(&v[base * self.len + start..][..m])
    }

    /// Evaluates elements `[start, start + dst.len())` of block `o` into `dst`, or when
    /// grouped, `dst.len() / len` whole blocks from block `o`.
    #[inline(always)]
    fn chunk(&self, o: usize, start: usize, dst: &mut [f32], sc: &mut Scratch<'_, 'a>) {
        let Scratch {
            regs,
            cond,
            direct,
            filled,
            kept,
        } = sc;
        let m = dst.len();
        let srcs: &'a [Src<'a>] = self.srcs;
        let chunk = self.chunk;
        let last = self.p.instrs.len() - 1;
        filled.fill(false);
        // A load read in place in one chunk may need copying in the next (an operand
        // broadcast over an outer axis is contiguous over some runs of blocks only).
        direct.fill(None);
        for (i, ins) in self.p.instrs.iter().enumerate() {
            let uni = self.uniform[i];
            // A uniform register computes one element; a full one reads its uniform operands
            // as scalars or filled out to the chunk.
            let m = if uni { 1 } else { m };
            if !uni {
                let (regs_read, n) = operands(ins);
                for &x in &regs_read[..n] {
                    if self.uniform[x] && !filled[x] && !self.keeps_uniform(ins, x) {
                        let c = regs[x * chunk];
                        regs[x * chunk..x * chunk + m].fill(c);
                        filled[x] = true;
                    }
                }
            }
            if kept[i] {
                continue;
            }
            let (done, rest) = regs.split_at_mut(i * chunk);
            // The last instruction writes the output itself.
            let r: &mut [f32] = if i == last && !uni {
                &mut *dst
            } else {
                &mut rest[..m]
            };
            let direct_now: &[Option<&'a [f32]>] = direct;
            let reg = |x: usize| match direct_now[x] {
                Some(v) => v,
                None => &done[x * chunk..x * chunk + m],
            };
            // The value of uniform register `x` (its one element).
            let scalar = |x: usize| done[x * chunk];
            match *ins {
                EwInstr::Load(j) => {
                    if let Src::F32(v) = &srcs[j] {
                        let v: &'a [f32] = v;
                        match self.contiguous(v, j, o, start, m) {
                            Some(s) if i != last => direct[i] = Some(s),
                            Some(s) => r.copy_from_slice(s),
                            None => self.read(v, j, o, start, r, |x| x),
                        }
                    }
                    // (Read in place, the slice is given again for each chunk.)
                    kept[i] = i != last && direct[i].is_none() && self.same_every_chunk(j);
                }
                EwInstr::LoadCast(j) => {
                    match &srcs[j] {
                        Src::I64(v) => self.read(v, j, o, start, r, |x| x as f32),
                        Src::Bool(v) => self.read(v, j, o, start, r, |x| x as u8 as f32),
                        Src::F32(_) => {}
                    }
                    kept[i] = i != last && direct[i].is_none() && self.same_every_chunk(j);
                }
                EwInstr::Unary(kind, x) => {
                    let a = reg(x);
                    match kind {
                        UnaryOp::Identity => r.copy_from_slice(a),
                        UnaryOp::Neg => r.iter_mut().zip(a).for_each(|(y, &v)| *y = -v),
                        UnaryOp::Sqrt => r.iter_mut().zip(a).for_each(|(y, &v)| *y = v.sqrt()),
                        UnaryOp::Reciprocal => r.iter_mut().zip(a).for_each(|(y, &v)| *y = 1.0 / v),
                        UnaryOp::Erf => r.iter_mut().zip(a).for_each(|(y, &v)| *y = erf(v)),
                        UnaryOp::Exp => r
                            .iter_mut()
                            .zip(a)
                            .for_each(|(y, &v)| *y = crate::simd::exp(v)),
                        UnaryOp::Tanh => r
                            .iter_mut()
                            .zip(a)
                            .for_each(|(y, &v)| *y = crate::simd::tanh(v)),
                        UnaryOp::Sigmoid => r
                            .iter_mut()
                            .zip(a)
                            .for_each(|(y, &v)| *y = crate::simd::sigmoid(v)),
                        UnaryOp::Silu => r
                            .iter_mut()
                            .zip(a)
                            .for_each(|(y, &v)| *y = v * crate::simd::sigmoid(v)),
                        // Monomorphised, as the kinds above: through `float_fn`'s pointer
                        // these are calls per element (libm's in the baseline build).
                        UnaryOp::Log => r
                            .iter_mut()
                            .zip(a)
                            .for_each(|(y, &v)| *y = crate::simd::ln(v)),
                        UnaryOp::Floor => r.iter_mut().zip(a).for_each(|(y, &v)| *y = v.floor()),
                        UnaryOp::Ceil => r.iter_mut().zip(a).for_each(|(y, &v)| *y = v.ceil()),
                        UnaryOp::Round => r
                            .iter_mut()
                            .zip(a)
                            .for_each(|(y, &v)| *y = v.round_ties_even()),
                        UnaryOp::Abs => r.iter_mut().zip(a).for_each(|(y, &v)| *y = v.abs()),
                        // Wide where the reduction holds, then libm beyond it (`trig.rs`):
                        // the same values as the unfused op. Through `float_fn`'s pointer
                        // the scalar form's fused multiply-adds are library calls (a rotary
                        // table's `[8, 128, 16]` went from 69 to 400 µs).
                        UnaryOp::Sin => {
                            r.iter_mut()
                                .zip(a)
                                .for_each(|(y, &v)| *y = crate::trig::sin_reduced(v));
                            crate::trig::fix_large(a, r, f32::sin);
                        }
                        UnaryOp::Cos => {
                            r.iter_mut()
                                .zip(a)
                                .for_each(|(y, &v)| *y = crate::trig::cos_reduced(v));
                            crate::trig::fix_large(a, r, f32::cos);
                        }
                        // ReLU after a pre-activation BatchNorm (DenseNet: 62 per run) went
                        // through `float_fn`'s pointer at 1.6 ns per element.
                        UnaryOp::Relu => r.iter_mut().zip(a).for_each(|(y, &v)| *y = relu(v)),
                        UnaryOp::Sign => r.iter_mut().zip(a).for_each(|(y, &v)| *y = sign(v)),
                        // A `for` loop: `for_each`'s `Zip::fold` was left outlined
                        // (baseline build) around this larger body.
                        UnaryOp::Softplus => {
                            for (y, &v) in r.iter_mut().zip(a) {
                                *y = crate::simd::softplus(v);
                            }
                        }
                        other => {
                            // Checked before the loop: every program kind has a float form.
                            if let Ok(f) = float_fn(other) {
                                r.iter_mut().zip(a).for_each(|(y, &v)| *y = f(v));
                            }
                        }
                    }
                }
                EwInstr::Gelu { tanh, x } => {
                    let a = reg(x);
                    if tanh {
                        r.iter_mut().zip(a).for_each(|(y, &v)| *y = gelu_tanh(v));
                    } else {
                        r.iter_mut().zip(a).for_each(|(y, &v)| *y = gelu_erf(v));
                    }
                }
                EwInstr::Clip { min, max, x } => {
                    let (lo, hi) = (
                        min.unwrap_or(f32::NEG_INFINITY),
                        max.unwrap_or(f32::INFINITY),
                    );
                    r.iter_mut()
                        .zip(reg(x))
                        .for_each(|(y, &v)| *y = hi_then(if v < lo { lo } else { v }, hi));
                }
                EwInstr::CastThrough { to, x } => {
                    // Truncation alone where the width holds every value (one vector pass,
                    // the usual case), else the exact conversion element by element.
                    let (lo, hi) = crate::int_range_f32(to);
                    let a = reg(x);
                    let mut outside = false;
                    for (y, &v) in r.iter_mut().zip(a) {
                        // `+ 0.0`: an integer has no −0 (a truncated −0.4 comes back +0).
                        let t = v.trunc() + 0.0;
                        outside |= !(t >= lo && t <= hi);
                        *y = t;
                    }
                    if outside {
                        for (y, &v) in r.iter_mut().zip(a) {
                            *y = crate::cast_through(to, lo, hi, v);
                        }
                    }
                }
                EwInstr::HardSigmoid {
                    alpha,
                    beta,
                    swish,
                    x,
                } => {
                    let hs = |v: f32| (alpha * v + beta).clamp(0.0, 1.0);
                    r.iter_mut()
                        .zip(reg(x))
                        .for_each(|(y, &v)| *y = if swish { v * hs(v) } else { hs(v) });
                }
                EwInstr::Quantize { lo, hi, x, s, z } | EwInstr::FakeQuant { lo, hi, x, s, z } => {
                    let params = match !uni && self.keeps_uniform(ins, s) {
                        true => QuantParams::Scalar(scalar(s), scalar(z)),
                        false => QuantParams::Full(reg(s), reg(z)),
                    };
                    if matches!(ins, EwInstr::FakeQuant { .. }) {
                        quant_pass(r, reg(x), params, |v, s, z| fake_quant(v, s, z, lo, hi));
                    } else {
                        quant_pass(r, reg(x), params, |v, s, z| quantize(v, s, z, lo, hi));
                    }
                }
                EwInstr::Binary(kind, a, b) if !uni && self.keeps_uniform(ins, b) => {
                    let (a, q) = (reg(a), scalar(b));
                    let it = r.iter_mut().zip(a);
                    match kind {
                        BinaryOp::Add => it.for_each(|(y, &p)| *y = p + q),
                        BinaryOp::Sub => it.for_each(|(y, &p)| *y = p - q),
                        BinaryOp::Mul => it.for_each(|(y, &p)| *y = p * q),
                        _ => it.for_each(|(y, &p)| *y = p / q),
                    }
                }
                EwInstr::Binary(kind, a, b) if !uni && self.keeps_uniform(ins, a) => {
                    let (p, b) = (scalar(a), reg(b));
                    let it = r.iter_mut().zip(b);
                    match kind {
                        BinaryOp::Add => it.for_each(|(y, &q)| *y = p + q),
                        BinaryOp::Sub => it.for_each(|(y, &q)| *y = p - q),
                        BinaryOp::Mul => it.for_each(|(y, &q)| *y = p * q),
                        _ => it.for_each(|(y, &q)| *y = p / q),
                    }
                }
                EwInstr::Binary(kind, a, b) => {
                    let (a, b) = (reg(a), reg(b));
                    let zip = r.iter_mut().zip(a.iter().zip(b));
                    match kind {
                        BinaryOp::Add => zip.for_each(|(y, (&p, &q))| *y = p + q),
                        BinaryOp::Sub => zip.for_each(|(y, (&p, &q))| *y = p - q),
                        BinaryOp::Mul => zip.for_each(|(y, (&p, &q))| *y = p * q),
                        BinaryOp::Div => zip.for_each(|(y, (&p, &q))| *y = p / q),
                        BinaryOp::Pow => zip.for_each(|(y, (&p, &q))| *y = pow_f32(p, q)),
                        BinaryOp::Max => zip.for_each(|(y, (&p, &q))| *y = max_f32(p, q)),
                        BinaryOp::Min => zip.for_each(|(y, (&p, &q))| *y = min_f32(p, q)),
                        other => {
                            // Checked before the loop: every program kind has a float form.
                            if let Ok(f) = float_op(other) {
                                zip.for_each(|(y, (&p, &q))| *y = f(p, q));
                            }
                        }
                    }
                }
                EwInstr::Where { cond: j, a, b } => {
                    if let Src::Bool(v) = &self.srcs[j] {
                        let c = &mut cond[..m];
                        self.read(v, j, o, start, c, |x| x);
                        let (a, b) = (reg(a), reg(b));
                        r.iter_mut()
                            .zip(c.iter().zip(a.iter().zip(b)))
                            .for_each(|(y, (&c, (&p, &q)))| *y = if c { p } else { q });
                    }
                }
            }
        }
        if self.uniform[last] {
            dst.fill(regs[last * chunk]);
        }
    }
}

/// The scale and zero point of a (fake) quantisation: one value each, or per element.
enum QuantParams<'r> {
    Scalar(f32, f32),
    Full(&'r [f32], &'r [f32]),
}

/// `r[e] = f(a[e], scale, zero point)` over the chunk.
#[inline(always)]
fn quant_pass(r: &mut [f32], a: &[f32], p: QuantParams<'_>, f: impl Fn(f32, f32, f32) -> f32) {
    match p {
        QuantParams::Scalar(s, z) => r.iter_mut().zip(a).for_each(|(y, &v)| *y = f(v, s, z)),
        QuantParams::Full(s, z) => {
            for (y, ((&v, &s), &z)) in r.iter_mut().zip(a.iter().zip(s).zip(z)) {
                *y = f(v, s, z);
            }
        }
    }
}

/// A thread's scratch space for [`Runner::chunk`].
struct Scratch<'s, 'a> {
    /// One chunk per instruction.
    regs: &'s mut [f32],
    /// A Where's condition.
    cond: &'s mut [bool],
    /// Registers that are a slice of an input (a full load is not copied).
    direct: &'s mut [Option<&'a [f32]>],
    /// Uniform registers filled out to the chunk in this chunk.
    filled: &'s mut [bool],
    /// Loads that hold the same values in every chunk ([`Runner::same_every_chunk`]),
    /// once loaded.
    kept: &'s mut [bool],
}
