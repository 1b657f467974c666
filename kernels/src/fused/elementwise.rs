//! A fused tree of elementwise ops: a small register program evaluated chunk by chunk over
//! the output, so the tree's intermediates never exist as tensors.
//!
//! Every instruction computes one op of the tree on a chunk of at most [`chunk_len`] output
//! elements into its own register (a slice of a per-thread scratch buffer); inputs are read
//! broadcast to the output shape (numpy rules), a block of trailing axes at a time, as the
//! binary kernels read them. Each instruction uses the scalar function of the kernel it
//! replaces (`unary::float_fn`, `binary::float_op`, `erf`, the GELU and Clip formulas), so
//! the program's result equals the unfused ops' bit for bit. When the call runs inside a
//! device's thread pool, blocks of rows are split between its threads.
use super::elementwise_runner::{operands, uniform_registers, Runner};
use super::{describe, make, KResult};
use crate::binary::float_op;
use crate::index::broadcast_offsets;
use crate::unary::float_fn;
use tessera_ir::op::{BinaryOp, UnaryOp};
use tessera_ir::{DType, Tensor, TensorData};

/// Elements per register, at least.
const MIN_CHUNK: usize = 512;

/// Elements per register, at most.
const MAX_CHUNK: usize = 2048;

/// Elements in all of a program's registers together: 48 KB, about the L1 cache.
const REGISTER_ELEMENTS: usize = 12 * 1024;

/// Elements per register for a program of `nregs` registers: its registers fill about the
/// L1 cache, a multiple of [`MIN_CHUNK`] between it and [`MAX_CHUNK`]. Each instruction is
/// dispatched once per chunk: over `[8, 17, 64]`, a bias and residual add took 2.75 µs in
/// chunks of 512 and 2.5 in chunks of 2048, a sum of two tensors 2.3 and 1.9.
pub(super) fn chunk_len(nregs: usize) -> usize {
    (REGISTER_ELEMENTS / nregs.max(1)).clamp(MIN_CHUNK, MAX_CHUNK) / MIN_CHUNK * MIN_CHUNK
}

/// Blocks below this many output elements are not split between threads.
const PAR_MIN_ELEMENTS: usize = 1 << 15;

/// One instruction; operands name earlier instructions (registers) or inputs.
#[derive(Debug, Clone, PartialEq)]
pub enum EwInstr {
    /// Input `i` (f32), broadcast to the output shape.
    Load(usize),
    /// Input `i` (bool or integer) converted to f32 as Cast converts it (true = 1).
    LoadCast(usize),
    /// A float unary op (not `Not`/`IsNaN`).
    Unary(UnaryOp, usize),
    /// GELU (tanh approximation when `tanh`).
    Gelu {
        /// The tanh approximation.
        tanh: bool,
        /// Operand register.
        x: usize,
    },
    /// Clip to `[min, max]` (absent bound = unbounded).
    Clip {
        /// Lower bound.
        min: Option<f32>,
        /// Upper bound.
        max: Option<f32>,
        /// Operand register.
        x: usize,
    },
    /// HardSigmoid `max(0, min(1, alpha·x + beta))`, times x when `swish`.
    HardSigmoid {
        /// Slope.
        alpha: f32,
        /// Offset.
        beta: f32,
        /// HardSwish.
        swish: bool,
        /// Operand register.
        x: usize,
    },
    /// `Cast(Cast(x, to), f32)` for an integer `to` ([`crate::cast_through_supported`]):
    /// truncated toward zero and wrapped to the width, as the two Casts give it.
    CastThrough {
        /// The integer dtype passed through.
        to: DType,
        /// Operand register.
        x: usize,
    },
    /// [`tessera_ir::Op::Quantize`] of register `x` with scale `s` and zero point `z`, as
    /// f32: `clamp(round(x / s) + z, lo, hi)`, ties to even, NaN to 0.
    Quantize {
        /// Smallest quantised value.
        lo: f32,
        /// Largest quantised value.
        hi: f32,
        /// Operand register.
        x: usize,
        /// Scale register.
        s: usize,
        /// Zero-point register.
        z: usize,
    },
    /// A Quantize and the Dequantize of its result with the same scale and zero point, the
    /// integer never stored: `(clamp(round(x / s) + z, lo, hi) − z) · s`.
    FakeQuant {
        /// Smallest quantised value.
        lo: f32,
        /// Largest quantised value.
        hi: f32,
        /// Operand register.
        x: usize,
        /// Scale register.
        s: usize,
        /// Zero-point register.
        z: usize,
    },
    /// A float arithmetic binary op (not a comparison or logic op).
    Binary(BinaryOp, usize, usize),
    /// `cond ? a : b` with `cond` the bool input `cond`.
    Where {
        /// Input index of the condition.
        cond: usize,
        /// Register chosen where the condition holds.
        a: usize,
        /// Register chosen elsewhere.
        b: usize,
    },
}

/// A fused elementwise tree: instructions in evaluation order, the last one the result.
#[derive(Debug, Clone, PartialEq)]
pub struct ElementwiseProgram {
    /// Shape of the result (every input broadcasts to it).
    pub out_shape: Vec<usize>,
    /// The instructions; register `i` holds instruction `i`'s value.
    pub instrs: Vec<EwInstr>,
    /// Type of the result: f32, or the integer type (uint8, int8, int16) of a program whose
    /// last instruction is a [`EwInstr::Quantize`] (its integers are stored as such).
    pub out_dtype: DType,
}

/// How an input is read along the trailing block of the output.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Inner {
    /// Every element of the block, contiguously.
    Full,
    /// One element repeated over the block.
    Repeat,
}

/// Splits the output into outer axes and a trailing block over which every input is either
/// contiguous or one repeated element: (first block axis, block length, mode per input).
fn trailing_block(shapes: &[&[usize]], out: &[usize]) -> (usize, usize, Vec<Inner>) {
    let mut k = out.len();
    let mut len = 1usize;
    let mut modes: Vec<Option<Inner>> = vec![None; shapes.len()];
    let mode = |s: &[usize], d: usize| -> Inner {
        let lead = out.len() - s.len();
        if d >= lead && s[d - lead] == out[d] {
            Inner::Full
        } else {
            Inner::Repeat
        }
    };
    while k > 0 {
        let d = k - 1;
        if out[d] != 1 {
            let now: Vec<Inner> = shapes.iter().map(|s| mode(s, d)).collect();
            if modes
                .iter()
                .zip(&now)
                .any(|(m, n)| m.is_some_and(|m| m != *n))
            {
                break;
            }
            modes = now.into_iter().map(Some).collect();
        }
        len *= out[d];
        k = d;
    }
    let modes = modes
        .into_iter()
        .map(|m| m.unwrap_or(Inner::Full))
        .collect();
    (k, len, modes)
}

/// Where each block of the output reads an input, in blocks of the input.
pub(super) enum BlockOffsets {
    /// Block `o` of the input (it has the output's outer axes).
    Same,
    /// Block 0 (the input has no outer axes: a bias, a scale).
    First,
    /// Any broadcast between those, one offset per block.
    Table(Vec<usize>),
}

impl BlockOffsets {
    /// The input's block read by output block `o`.
    #[inline(always)]
    pub(super) fn at(&self, o: usize) -> usize {
        match self {
            BlockOffsets::Same => o,
            BlockOffsets::First => 0,
            BlockOffsets::Table(t) => t[o],
        }
    }
}

/// An input as the program reads it.
pub(super) enum Src<'a> {
    F32(&'a [f32]),
    I64(&'a [i64]),
    Bool(&'a [bool]),
}

/// Evaluates the program on its inputs.
pub(crate) fn elementwise(p: &ElementwiseProgram, inputs: &[&Tensor]) -> KResult<Tensor> {
    let out_shape = &p.out_shape;
    let n: usize = out_shape.iter().product();
    // Check every operand before any work: registers name earlier instructions, inputs
    // exist, have the storage their instruction reads and broadcast to the output.
    let mut need: Vec<Option<&str>> = vec![None; inputs.len()];
    for (i, ins) in p.instrs.iter().enumerate() {
        let read = match *ins {
            EwInstr::Load(j) => Some((j, "f32")),
            EwInstr::LoadCast(j) => Some((j, "int")),
            EwInstr::Where { cond, .. } => Some((cond, "bool")),
            _ => None,
        };
        if let Some((j, want)) = read {
            *need
                .get_mut(j)
                .ok_or_else(|| format!("input {j} missing"))? = Some(want);
        }
        let (regs, n) = operands(ins);
        if regs[..n].iter().any(|&r| r >= i) {
            return Err(format!("instruction {i} reads a later register"));
        }
        if let EwInstr::Unary(k, _) = ins {
            float_fn(*k)?;
        }
        if let EwInstr::Binary(k, _, _) = ins {
            float_op(*k)?;
        }
        if let EwInstr::CastThrough { to, .. } = ins {
            if !crate::cast_through_supported(*to) {
                return Err(format!(
                    "a Cast through {to} is not an elementwise instruction"
                ));
            }
        }
    }
    if p.instrs.is_empty() {
        return Err("empty program".into());
    }
    // An integer result: the last instruction quantises to exactly that type's range.
    if p.out_dtype != DType::F32 {
        let range = tessera_ir::spec::quant_range(p.out_dtype);
        let ok = match (p.instrs.last(), range) {
            (Some(EwInstr::Quantize { lo, hi, .. }), Some((a, b))) => {
                *lo == a as f32 && *hi == b as f32
            }
            _ => false,
        };
        if !ok {
            return Err(format!(
                "a program of {} results must end in a Quantize to its range",
                p.out_dtype
            ));
        }
    }
    let mut srcs = Vec::with_capacity(inputs.len());
    for (t, want) in inputs.iter().zip(&need) {
        let fits = t.shape.len() <= out_shape.len()
            && t.shape
                .iter()
                .rev()
                .zip(out_shape.iter().rev())
                .all(|(&d, &o)| d == 1 || d == o);
        if !fits {
            return Err(format!(
                "input {} does not broadcast to {out_shape:?}",
                describe(t)
            ));
        }
        srcs.push(match (&t.data, *want) {
            (TensorData::F32(v), Some("f32")) if t.dtype == DType::F32 => Src::F32(v),
            (TensorData::I64(v), Some("int")) => Src::I64(v),
            (TensorData::Bool(v), Some("int" | "bool")) => Src::Bool(v),
            (_, None) => Src::F32(&[]),
            _ => return Err(format!("input {} has the wrong type", describe(t))),
        });
    }
    let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape.as_slice()).collect();
    let (k, len, modes) = trailing_block(&shapes, out_shape);
    let mut out = vec![0f32; n];
    if n == 0 {
        let data = match p.out_dtype {
            DType::F32 => TensorData::F32(out),
            _ => TensorData::I64(vec![]),
        };
        return make(p.out_dtype, out_shape.clone(), data);
    }
    let outer = &out_shape[..k];
    let offsets: Vec<BlockOffsets> = shapes
        .iter()
        .map(|s| {
            let lead = out_shape.len() - s.len();
            let trimmed: Vec<usize> = (0..k)
                .map(|d| if d >= lead { s[d - lead] } else { 1 })
                .collect();
            if trimmed == outer {
                BlockOffsets::Same
            } else if trimmed.iter().all(|&d| d == 1) {
                BlockOffsets::First
            } else {
                // Broadcasts by the check above.
                BlockOffsets::Table(broadcast_offsets(&trimmed, outer).unwrap_or_default())
            }
        })
        .collect();
    // Short blocks are evaluated several to a chunk; values repeated over a block then
    // differ within the chunk, so no register is uniform.
    let chunk = chunk_len(p.instrs.len());
    let group = if len < chunk / 2 {
        (chunk / len).max(1)
    } else {
        1
    };
    let uniform = match group {
        1 => uniform_registers(p, &modes),
        _ => vec![false; p.instrs.len()],
    };
    let run = Runner {
        chunk,
        group,
        p,
        srcs: &srcs,
        modes: &modes,
        offsets: &offsets,
        len,
        uniform: &uniform,
    };
    let threads = crate::pool_threads();
    let blocks = n / len;
    let split = threads > 1 && n >= crate::split_min(PAR_MIN_ELEMENTS);
    if split && blocks >= threads {
        use rayon::prelude::*;
        let per = blocks.div_ceil(threads * 4).max(1);
        out.par_chunks_mut(per * len)
            .enumerate()
            .for_each(|(t, dst)| run.blocks(t * per, dst));
    } else if split && group == 1 {
        // Fewer blocks than threads (a program without broadcasts is one block): pieces
        // of whole chunks within each block.
        use rayon::prelude::*;
        let per = len.div_ceil(threads * 4).next_multiple_of(chunk);
        out.par_chunks_mut(len).enumerate().for_each(|(bi, block)| {
            block
                .par_chunks_mut(per)
                .enumerate()
                .for_each(|(pi, dst)| run.span(bi, pi * per, dst))
        });
    } else {
        run.blocks(0, &mut out);
    }
    if p.out_dtype != DType::F32 {
        // Integral values inside the type's range (clamped, NaN made 0): exact as i64.
        let v = out.into_iter().map(|q| q as i64).collect();
        return make(p.out_dtype, out_shape.clone(), TensorData::I64(v));
    }
    make(DType::F32, out_shape.clone(), TensorData::F32(out))
}

#[cfg(test)]
#[path = "elementwise_tests.rs"]
mod tests;
