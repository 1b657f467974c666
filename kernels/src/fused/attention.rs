//! The fused multi-head attention kernel (see [`super::FusedOp::Attention`]): per batch and
//! head, `Q·Kᵀ` into one `Sq × Sk` scratch through strided views of q and k (or through
//! scaled copies of the head's rows when q and Kᵀ are scaled before the product), scale and
//! mask in one pass, the softmax (with the masked-row handling of the spelling it replaces),
//! then `·V` written straight into the output layout. Where the mask hides a tail of keys
//! from each row (causal masks), the rows go in blocks that read only the keys up to their
//! furthest unmasked one (`attention_extent.rs`).
use super::attention_extent::{block_keys, row_ends, ROW_BLOCK};
use super::attention_mask::{bools, mask_row, mask_strides, Mask};
use super::attention_products::{self as products, transpose_keys};
use super::{expect_inputs, f32s, scalar};
use crate::matmul::{gemm_into, MatView};
use crate::simd::vectorized;
use crate::softmax::{softmax_row, softmax_row_guarded, softmax_row_nan_fill};
use crate::{describe, make, KResult};
use tessera_ir::{DType, Tensor, TensorData};

/// Shape of a fused attention.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionShape {
    /// Batch B.
    pub batch: usize,
    /// Query length Sq.
    pub q_len: usize,
    /// Key/value length Sk.
    pub kv_len: usize,
    /// Heads H (of q and of the output).
    pub heads: usize,
    /// Key/value heads Hk (H is a multiple; query head `hh` reads kv head `hh / (H / Hk)`:
    /// grouped-query attention's repeat of each kv head, `Expand` of `[B, Hk, 1, Sk, D]`).
    pub kv_heads: usize,
    /// Layouts of q, k and v.
    pub layouts: [HeadLayout; 3],
    /// Head size D.
    pub head_dim: usize,
    /// How the scores are scaled.
    pub scale: AttentionScale,
    /// How the scaled scores are masked.
    pub mask: AttentionMask,
    /// Elementwise steps on the masked scores before the softmax, in order (their inputs
    /// follow the mask's): Gemma-2's soft-capping `tanh(z ⊘ c) · c`, a second additive
    /// term (T5's position bias, then its padding mask), a `Where` with the scores in its
    /// else-branch.
    pub terms: Vec<ScoreTerm>,
    /// What the softmax does with masked rows.
    pub rows: SoftmaxRows,
    /// Keys after a query's own position are masked too (ONNX `Attention`'s `is_causal`
    /// without a past: key j hidden from query i when j > i), on top of `mask`. Only with
    /// [`SoftmaxRows::Guarded`] rows (a row with no key left is zeros).
    pub causal: bool,
    /// The output is `[B, Sq, H, D]` in memory (heads merged back by the chain's Transpose
    /// + Reshape) rather than `[B, H, Sq, D]`.
    pub merged: bool,
    /// Output shape: `[B, H, Sq, D]`, or, merged, any shape of `B·Sq·H·D` elements (the
    /// chain's final Reshape, e.g. `[B, Sq, H·D]` or `[B·Sq, H·D]`).
    pub out_shape: Vec<usize>,
}

/// Where a fused attention's q, k or v comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadLayout {
    /// `[B, S, heads·D]`, tokens first (split into heads by the fused Reshape + Transpose).
    TokenMajor,
    /// `[B, heads, S, D]`, heads already split (e.g. after a rotary embedding).
    HeadMajor,
}

impl HeadLayout {
    /// Offset of head `hh`'s first row in batch `b` and the row stride, for a tensor of
    /// `heads` heads of `s` rows of `d`.
    fn head(self, b: usize, hh: usize, heads: usize, s: usize, d: usize) -> (usize, usize) {
        match self {
            HeadLayout::TokenMajor => (b * s * heads * d + hh * d, heads * d),
            HeadLayout::HeadMajor => ((b * heads + hh) * s * d, d),
        }
    }
}

/// How a fused attention scales its scores (the scale inputs follow q, k, v).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttentionScale {
    /// `Q·Kᵀ` unscaled (no input; e.g. OPT scales q in its projection).
    None,
    /// `Q·Kᵀ ⊘ c` (one input: the one-element c; BERT's `Div`).
    Div,
    /// `Q·Kᵀ · c` (one input: the one-element c).
    Mul,
    /// `(Q·cq)·(Kᵀ·ck)`: q and Kᵀ each multiplied before the product (two inputs: cq, ck;
    /// torch's SDPA decomposition multiplies both by √scale).
    Operands,
    /// `(Q·c)·Kᵀ`: only q multiplied before the product (one input: c; exports that scale
    /// the query as the reference attention of the Llama paper's code does).
    Query,
    /// `Q·(Kᵀ·c)`: only Kᵀ multiplied before the product (one input: c; DeBERTa's scaled
    /// key).
    Key,
    /// `(Q·s)·(Kᵀ·s)` with `s` fixed (no input; ONNX Attention's √scale).
    Fixed(f32),
}

impl AttentionScale {
    fn inputs(self) -> usize {
        match self {
            AttentionScale::None | AttentionScale::Fixed(_) => 0,
            AttentionScale::Div
            | AttentionScale::Mul
            | AttentionScale::Query
            | AttentionScale::Key => 1,
            AttentionScale::Operands => 2,
        }
    }
}

/// The mask of a fused attention; its tensors broadcast to `[B, H, Sq, Sk]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionMask {
    /// No mask.
    None,
    /// `z + mask` (one more input: the f32 mask; BERT's padding mask).
    Add,
    /// `Where(cond, z, fill)` (two more inputs: the bool condition and a one-element f32
    /// fill; GPT-2's causal mask).
    Select,
    /// `z + (cond ? 0 : −∞)` (one more input: the bool condition; ONNX Attention's boolean
    /// `attn_mask`).
    Bias,
}

impl AttentionMask {
    fn inputs(self) -> usize {
        match self {
            AttentionMask::None => 0,
            AttentionMask::Add | AttentionMask::Bias => 1,
            AttentionMask::Select => 2,
        }
    }
}

/// One elementwise step of [`AttentionShape::terms`], as the unfused op computes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreTerm {
    /// `z + t` (one input: f32, broadcasting to `[B, H, Sq, Sk]`).
    Add,
    /// `Where(cond, z, fill)` (two inputs: the bool condition, broadcasting, and a
    /// one-element f32 fill).
    Select,
    /// `Where(cond, fill, z)` (the same two inputs).
    SelectElse,
    /// `z · c` (one input: the one-element c).
    Mul,
    /// `z ⊘ c` (one input: the one-element c).
    Div,
    /// `tanh(z)` (no input; the `Tanh` kernel's function).
    Tanh,
}

impl ScoreTerm {
    /// Inputs this step reads.
    pub fn inputs(self) -> usize {
        match self {
            ScoreTerm::Tanh => 0,
            ScoreTerm::Add | ScoreTerm::Mul | ScoreTerm::Div => 1,
            ScoreTerm::Select | ScoreTerm::SelectElse => 2,
        }
    }
}

/// A resolved [`ScoreTerm`]: data and strides over `[B, H, Sq, Sk]`.
#[derive(Clone, Copy)]
enum Term<'a> {
    Add(&'a [f32], [usize; 4]),
    /// Condition, strides, fill, and whether the scores are the else-branch.
    Select(&'a [bool], [usize; 4], f32, bool),
    Mul(f32),
    Div(f32),
    Tanh,
}

/// Resolves `terms` from `inputs` (starting at `at`).
fn resolve_terms<'a>(
    terms: &[ScoreTerm],
    inputs: &[&'a Tensor],
    mut at: usize,
    full: [usize; 4],
) -> KResult<Vec<Term<'a>>> {
    let mut out = Vec::with_capacity(terms.len());
    for &t in terms {
        let input = |i: usize| -> KResult<&'a Tensor> {
            inputs
                .get(at + i)
                .copied()
                .ok_or_else(|| format!("score term {t:?} is missing input {i}"))
        };
        out.push(match t {
            ScoreTerm::Add => {
                let m = input(0)?;
                Term::Add(f32s(m, "score term")?, mask_strides(m, full)?)
            }
            ScoreTerm::Select | ScoreTerm::SelectElse => {
                let cond = input(0)?;
                let fill = scalar(input(1)?, "score term fill")?;
                let strides = mask_strides(cond, full)?;
                let c = bools(cond, "score term condition")?;
                Term::Select(c, strides, fill, t == ScoreTerm::SelectElse)
            }
            ScoreTerm::Mul => Term::Mul(scalar(input(0)?, "score term factor")?),
            ScoreTerm::Div => Term::Div(scalar(input(0)?, "score term divisor")?),
            ScoreTerm::Tanh => Term::Tanh,
        });
        at += t.inputs();
    }
    Ok(out)
}

/// Applies one resolved term to a row of scores; `mo` maps strides to the row's offset.
#[inline(always)]
fn term_row(row: &mut [f32], t: Term, mo: impl Fn([usize; 4]) -> usize) {
    match t {
        Term::Add(m, ms) if ms[3] == 1 => {
            let (o, n) = (mo(ms), row.len());
            row.iter_mut().zip(&m[o..o + n]).for_each(|(s, &e)| *s += e);
        }
        Term::Add(m, ms) => {
            let o = mo(ms);
            row.iter_mut()
                .enumerate()
                .for_each(|(j, s)| *s += m[o + j * ms[3]]);
        }
        Term::Select(cond, ms, fill, scores_else) => {
            let o = mo(ms);
            for (j, s) in row.iter_mut().enumerate() {
                if cond[o + j * ms[3]] == scores_else {
                    *s = fill;
                }
            }
        }
        Term::Mul(c) => row.iter_mut().for_each(|s| *s *= c),
        Term::Div(c) => row.iter_mut().for_each(|s| *s /= c),
        Term::Tanh => row.iter_mut().for_each(|s| *s = crate::simd::tanh(*s)),
    }
}

/// What a fused attention's softmax does; the plain softmax of a row masked to −∞ throughout
/// is NaN (its max is −∞).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoftmaxRows {
    /// The plain `Softmax` (NaN rows stay NaN).
    Plain,
    /// The plain `Softmax`, then `Where(IsNaN(p), fill, p)`: every NaN probability becomes
    /// `fill` (one more input, the last: the one-element f32 fill; torch's SDPA
    /// decomposition, with fill 0).
    NanToFill,
    /// ONNX Attention's: a row whose mask is −∞ at every key gives zeros, other rows the
    /// reference's guarded softmax.
    Guarded,
}

/// Per-head scratch: the scores, the merged layout's `[Sq, D]` context, the scaled copies
/// of the head's q and k rows (empty unless q and Kᵀ are scaled before the product), and
/// the keys each query row reads under the mask rows at `ends_at` (with whether any row
/// reads fewer than all).
struct Scratch {
    scores: Vec<f32>,
    ctx: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    ends: Vec<usize>,
    ends_at: Option<(usize, bool)>,
    /// The tiled products' operands (`attention_products.rs`): Kᵀ of the key-value head
    /// `kt_at` (batch, head) as `[D, Sk]`, and the identity column map `0..max(Sk, D)`.
    kt: Vec<f32>,
    kt_at: Option<(usize, usize)>,
    cols: Vec<u32>,
}

impl Scratch {
    fn new(a: &AttentionShape, prescaled: bool) -> Self {
        let (sq, sk, d) = (a.q_len, a.kv_len, a.head_dim);
        let pre = |n: usize| if prescaled { vec![0f32; n] } else { Vec::new() };
        Scratch {
            scores: Vec::new(),
            ctx: vec![0f32; sq * d],
            q: pre(sq * d),
            k: pre(sk * d),
            ends: vec![sk; sq],
            ends_at: None,
            kt: Vec::new(),
            kt_at: None,
            cols: (0..sk.max(d) as u32).collect(),
        }
    }

    /// The keys each query row reads under the mask rows from `base` (`row_stride` apart)
    /// and, when `causal`, its own position,
    /// into `ends` (kept while the next head reads the same mask rows); true when some row
    /// reads fewer than all `sk`.
    fn extent(
        &mut self,
        mask: Mask<'_>,
        base: usize,
        row_stride: usize,
        sk: usize,
        causal: bool,
    ) -> bool {
        match self.ends_at {
            Some((at, skips)) if at == base => skips,
            _ => {
                let skips = row_ends(mask, base, row_stride, sk, causal, &mut self.ends);
                self.ends_at = Some((base, skips));
                skips
            }
        }
    }
}

/// `rows` rows of `d` from `src` at `base` (row stride `rs`), each element times `c`, into
/// the contiguous `dst`: the unfused `Mul` of q or Kᵀ by a one-element scale.
fn scaled_rows(dst: &mut [f32], src: &[f32], base: usize, rs: usize, d: usize, c: f32) {
    for (r, out) in dst.chunks_exact_mut(d).enumerate() {
        let row = &src[base + r * rs..base + r * rs + d];
        for (o, &x) in out.iter_mut().zip(row) {
            *o = x * c;
        }
    }
}

pub(super) fn attention(a: &AttentionShape, inputs: &[&Tensor]) -> KResult<Tensor> {
    let n_scale = a.scale.inputs();
    let n_mask = a.mask.inputs();
    let n_terms: usize = a.terms.iter().map(|t| t.inputs()).sum();
    let nan_fill = a.rows == SoftmaxRows::NanToFill;
    expect_inputs(inputs, 3 + n_scale + n_mask + n_terms + nan_fill as usize)?;
    let (bsz, sq, sk, h, d) = (a.batch, a.q_len, a.kv_len, a.heads, a.head_dim);
    let hd = h * d;
    let hk = a.kv_heads;
    if hk == 0 || h % hk != 0 {
        return Err(format!(
            "{h} query heads are not a multiple of {hk} kv heads"
        ));
    }
    let group = h / hk;
    let (q, k, v) = (
        f32s(inputs[0], "q")?,
        f32s(inputs[1], "k")?,
        f32s(inputs[2], "v")?,
    );
    if q.len() != bsz * sq * hd || k.len() != bsz * sk * hk * d || v.len() != bsz * sk * hk * d {
        return Err(format!(
            "q {}, k {}, v {} do not hold B={bsz}, H={h} (kv {hk}), D={d} with Sq={sq}, Sk={sk}",
            describe(inputs[0]),
            describe(inputs[1]),
            describe(inputs[2])
        ));
    }
    if a.out_shape.iter().product::<usize>() != bsz * h * sq * d {
        return Err(format!(
            "output shape {:?} does not hold B={bsz}, H={h}, Sq={sq}, D={d}",
            a.out_shape
        ));
    }
    let [q_lay, k_lay, v_lay] = a.layouts;
    // Post-product scale (`mul` and the factor) and the pre-product factors of q and Kᵀ.
    let (post_mul, c, pre) = match a.scale {
        AttentionScale::None => (true, 1.0, None),
        AttentionScale::Div => (false, scalar(inputs[3], "scale")?, None),
        AttentionScale::Mul => (true, scalar(inputs[3], "scale")?, None),
        AttentionScale::Operands => (
            true,
            1.0,
            Some((scalar(inputs[3], "q scale")?, scalar(inputs[4], "k scale")?)),
        ),
        // Kᵀ times exactly 1: the same products as the unscaled Kᵀ.
        AttentionScale::Query => (true, 1.0, Some((scalar(inputs[3], "q scale")?, 1.0))),
        // Q times exactly 1, likewise.
        AttentionScale::Key => (true, 1.0, Some((1.0, scalar(inputs[3], "k scale")?))),
        AttentionScale::Fixed(s) => (true, 1.0, Some((s, s))),
    };
    let m0 = 3 + n_scale;
    let full = [bsz, h, sq, sk];
    let mask = match a.mask {
        AttentionMask::None => Mask::None,
        AttentionMask::Add => Mask::Add(f32s(inputs[m0], "mask")?, mask_strides(inputs[m0], full)?),
        AttentionMask::Select => {
            let cond = bools(inputs[m0], "mask condition")?;
            let fill = scalar(inputs[m0 + 1], "mask fill")?;
            Mask::Select(cond, mask_strides(inputs[m0], full)?, fill)
        }
        AttentionMask::Bias => {
            let cond = bools(inputs[m0], "mask condition")?;
            Mask::Bias(cond, mask_strides(inputs[m0], full)?)
        }
    };
    let terms = resolve_terms(&a.terms, inputs, m0 + n_mask, full)?;
    let fill = if nan_fill {
        scalar(inputs[m0 + n_mask + n_terms], "NaN fill")?
    } else {
        0.0
    };
    let mut out = vec![0f32; bsz * h * sq * d];
    if out.is_empty() || sk == 0 {
        // No queries: an empty output. No keys: the softmax is over nothing and the
        // product with an empty V sums nothing, so zeros, as the unfused Softmax + MatMul.
        return make(DType::F32, a.out_shape.clone(), TensorData::F32(out));
    }
    // Heads up to the tiles' limit multiply on the unpacked GEMM's tiles
    // (`attention_products.rs`), larger ones through the `gemm` crate.
    let tiled = products::tiled(sq, sk, d);
    // One head: the scaled, masked softmax of Q·Kᵀ into `scores`, then P·V into `ctx`
    // ([Sq, D] rows) or, for the unmerged layout, straight into `out` at `direct`.
    let head = |b: usize, hh: usize, w: &mut Scratch, direct: Option<&mut [f32]>| -> KResult<()> {
        let (base_q, q_rs) = q_lay.head(b, hh, h, sq, d);
        let (base_k, k_rs) = k_lay.head(b, hh / group, hk, sk, d);
        let (base_v, v_rs) = v_lay.head(b, hh / group, hk, sk, d);
        // The keys each row reads: all of them, or (a mask that hides each row's tail of
        // keys, no score terms) blocks of rows up to their furthest unmasked key.
        let skips = match mask {
            _ if !terms.is_empty() => false,
            Mask::Add(_, ms) | Mask::Select(_, ms, _) | Mask::Bias(_, ms) => {
                w.extent(mask, b * ms[0] + hh * ms[1], ms[2], sk, a.causal)
            }
            Mask::None => w.extent(mask, 0, 0, sk, a.causal),
        };
        // scores = Q_bh · K_bhᵀ: Q rows are tokens; Kᵀ element (e, j) is key j's e.
        let (qv, ktv) = match pre {
            None => (
                MatView::row_major(q, base_q, q_rs),
                MatView::col_major(k, base_k, k_rs),
            ),
            Some((cq, ck)) => {
                scaled_rows(&mut w.q, q, base_q, q_rs, d, cq);
                // The tiles read K scaled as it is transposed, once per key-value head.
                if !tiled {
                    scaled_rows(&mut w.k, k, base_k, k_rs, d, ck);
                }
                (
                    MatView::row_major(&w.q, 0, d),
                    MatView::col_major(&w.k, 0, d),
                )
            }
        };
        let mut direct = direct;
        // Without keys to skip, one block of every row (the products' best shape).
        let block = if skips { ROW_BLOCK } else { sq };
        if w.scores.len() < block * sk {
            w.scores.resize(block * sk, 0.0);
        }
        for r0 in (0..sq).step_by(block) {
            let r1 = (r0 + block).min(sq);
            let keys = if skips {
                block_keys(&w.ends[r0..r1], sk)
            } else {
                sk
            };
            let qb = MatView {
                off: qv.off + r0 * qv.rs,
                ..qv
            };
            if tiled {
                // Kᵀ of this key-value head, once for the query heads that share it.
                if w.kt_at != Some((b, hh / group)) {
                    // Times exactly 1 without a pre-product scale: the same values.
                    let ck = pre.map_or(1.0, |(_, ck)| ck);
                    transpose_keys(&mut w.kt, k, (base_k, k_rs), sk, d, ck);
                    w.kt_at = Some((b, hh / group));
                }
                let q_rows = match pre {
                    None => (q, base_q + r0 * q_rs, q_rs),
                    Some(_) => (&w.q[..], r0 * d, d),
                };
                products::scores(r1 - r0, keys, d, q_rows, &w.kt, sk, &w.cols, &mut w.scores)?;
            } else {
                gemm_into(r1 - r0, keys, d, &mut w.scores, 0, qb, ktv, 1.0, false)?;
            }
            let scores = &mut w.scores[..(r1 - r0) * keys];
            vectorized(
                #[inline(always)]
                || {
                    for (li, row) in scores.chunks_exact_mut(keys).enumerate() {
                        let i = r0 + li;
                        // z = s ⊘ c, masked, in one pass, as the unfused Div/Mul and
                        // Add/Where compute it; then the softmax.
                        let scale = |s: f32| if post_mul { s * c } else { s / c };
                        let mo = |ms: [usize; 4]| b * ms[0] + hh * ms[1] + i * ms[2];
                        let off = match mask {
                            Mask::None => 0,
                            Mask::Add(_, ms) | Mask::Select(_, ms, _) | Mask::Bias(_, ms) => mo(ms),
                        };
                        let mut all_masked = mask_row(row, mask, off, scale);
                        for &t in &terms {
                            term_row(row, t, mo);
                        }
                        if a.causal {
                            // Keys after the query's position, then whether any is left.
                            let seen = (i + 1).min(row.len());
                            row[seen..].fill(f32::NEG_INFINITY);
                            all_masked = row[..seen].iter().all(|&z| z == f32::NEG_INFINITY);
                        }
                        match a.rows {
                            SoftmaxRows::Plain => softmax_row(row, false),
                            SoftmaxRows::NanToFill => softmax_row_nan_fill(row, fill),
                            SoftmaxRows::Guarded if all_masked => row.fill(0.0),
                            SoftmaxRows::Guarded => softmax_row_guarded(row),
                        }
                    }
                },
            );
            let out = match direct.as_deref_mut() {
                Some(dst) => dst,
                None => &mut w.ctx[..],
            };
            if tiled {
                let p = &w.scores[..(r1 - r0) * keys];
                let v_rows = (v, base_v, v_rs);
                products::context(r1 - r0, keys, d, p, v_rows, &w.cols, &mut out[r0 * d..])?;
            } else {
                let pv = MatView::row_major(&w.scores, 0, keys);
                let vv = MatView::row_major(v, base_v, v_rs);
                gemm_into(r1 - r0, d, keys, out, r0 * d, pv, vv, 1.0, false)?;
            }
        }
        Ok(())
    };
    let place = |out: &mut [f32], b: usize, hh: usize, ctx: &[f32]| {
        if a.merged {
            for (r, row) in ctx.chunks_exact(d).enumerate() {
                let o = b * sq * hd + r * hd + hh * d;
                out[o..o + d].copy_from_slice(row);
            }
        } else {
            let o = (b * h + hh) * sq * d;
            out[o..o + sq * d].copy_from_slice(ctx);
        }
    };
    let threads = crate::pool_threads();
    if threads > 1 && bsz * h > 1 {
        // Inside a device's pool: heads in parallel, each into its own [Sq, D] block
        // (the same arithmetic per head), then placed in the output layout.
        use rayon::prelude::*;
        let ctxs: Vec<Vec<f32>> = (0..bsz * h)
            .into_par_iter()
            .map_init(
                || Scratch::new(a, pre.is_some()),
                |w, i| {
                    // Each head's products stay on the thread that took the head.
                    crate::serial(|| head(i / h, i % h, w, None))?;
                    Ok(w.ctx.clone())
                },
            )
            .collect::<KResult<_>>()?;
        for (i, ctx) in ctxs.iter().enumerate() {
            place(&mut out, i / h, i % h, ctx);
        }
        return make(DType::F32, a.out_shape.clone(), TensorData::F32(out));
    }
    let mut w = Scratch::new(a, pre.is_some());
    for b in 0..bsz {
        for hh in 0..h {
            if a.merged {
                head(b, hh, &mut w, None)?;
                place(&mut out, b, hh, &w.ctx);
            } else {
                let o = (b * h + hh) * sq * d;
                head(b, hh, &mut w, Some(&mut out[o..o + sq * d]))?;
            }
        }
    }
    make(DType::F32, a.out_shape.clone(), TensorData::F32(out))
}

#[cfg(test)]
#[path = "attention_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "attention_onnx_tests.rs"]
mod onnx_tests;
