//! RotaryEmbedding: <https://onnx.ai/onnx/operators/onnx__RotaryEmbedding.html> (23..=28: the
//! op has one schema version, 23). torch.onnx's dynamo exporter fuses the rotary embedding of
//! LLaMA-style decoders into it from opset 23 on.
//!
//! Lowering, to ops that partition like any elementwise chain (no new IR op): with the input
//! seen as `[B, H, S, D]` (4-D) or reshaped from `[B, S, H·D]` to `[B, S, H, D]` (3-D, with
//! `num_heads`), the caches (`[B, S, R/2]`, or `[max_pos, R/2]` gathered by `position_ids`)
//! get a unit head axis, the rotated part `x[..., :R]` is cut into halves (or even and odd
//! elements when `interleaved`), and
//! `real = cos·x1 − sin·x2`, `imag = sin·x1 + cos·x2`
//! are concatenated back (interleaved: stacked on a new last axis and flattened), followed by
//! the unrotated tail `x[..., R:]`. Written as `x·[cos, cos] + [x2, x1]·[−sin, sin]`, which
//! is the reference's arithmetic to the bit and keeps fewer values alive at once (the
//! partitioner's extraction is sensitive to that). Caches whose batch is 1 broadcast over
//! the batch.
use super::{entry, Lowered, NodeCx, OpEntry, Ref, Step};
use crate::onnx::ImportError;
use tessera_ir::op::{
    AxisAttrs, BinaryAttrs, BinaryOp, ReshapeAttrs, SliceAttrs, UnaryAttrs, UnaryOp,
};
use tessera_ir::Op;

pub(super) const OPS: &[OpEntry] = &[entry("RotaryEmbedding", 23, rotary)];

/// A value of the lowering: a node input or output 0 of an earlier step.
#[derive(Clone, Copy)]
enum V {
    In(usize),
    Step(usize),
}

impl V {
    fn r(self) -> Ref {
        match self {
            V::In(i) => Ref::In(i),
            V::Step(j) => Ref::Prev(j, 0),
        }
    }
}

/// Steps under construction; each helper returns the new step's output.
struct Chain(Vec<Step>);

impl Chain {
    fn push(&mut self, op: Op, inputs: &[V]) -> V {
        let inputs = inputs.iter().map(|v| v.r()).collect();
        self.0.push(Step { op, inputs });
        V::Step(self.0.len() - 1)
    }
    fn reshape(&mut self, x: V, shape: Vec<usize>) -> V {
        self.push(Op::Reshape(ReshapeAttrs { shape }), &[x])
    }
    fn slice(&mut self, x: V, start: usize, end: usize, step: usize) -> V {
        let attrs = SliceAttrs {
            axes: vec![3],
            starts: vec![start as i64],
            ends: vec![end as i64],
            steps: vec![step as i64],
        };
        self.push(Op::Slice(attrs), &[x])
    }
    fn bin(&mut self, kind: BinaryOp, a: V, b: V) -> V {
        self.push(Op::Binary(BinaryAttrs { kind }), &[a, b])
    }
    fn concat(&mut self, axis: usize, parts: &[V]) -> V {
        self.push(Op::Concat(AxisAttrs { axis }), parts)
    }
}

/// `a` and `b` (both `shape`, last axis n) joined on the last axis: `[a, b]`, or with
/// `interleaved` `[a0, b0, a1, b1, ...]`.
fn join(c: &mut Chain, interleaved: bool, a: V, shape: &[usize], b: V) -> V {
    if !interleaved {
        return c.concat(3, &[a, b]);
    }
    let mut s5 = shape.to_vec();
    s5.push(1);
    let (a5, b5) = (c.reshape(a, s5.clone()), c.reshape(b, s5));
    let pairs = c.concat(4, &[a5, b5]);
    let mut s4 = shape.to_vec();
    s4[3] *= 2;
    c.reshape(pairs, s4)
}

fn rotary(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let x = cx.input(0)?.shape.to_vec();
    let (cos, sin) = (cx.input(1)?.shape.to_vec(), cx.input(2)?.shape.to_vec());
    if cos != sin {
        return Err(cx.err(format!("cos_cache {cos:?} and sin_cache {sin:?} differ")));
    }
    let heads = cx.attr_int("num_heads", 0);
    // x as [B, H, S, D] (4-D) or [B, S, H, D] (3-D); the axis the caches broadcast over.
    let (x4, head_axis) = match x.as_slice() {
        [b, h, s, d] => (vec![*b, *h, *s, *d], 1),
        [b, s, hidden] => {
            let h = usize::try_from(heads)
                .ok()
                .filter(|&h| h > 0 && hidden % h == 0)
                .ok_or_else(|| {
                    cx.err(format!(
                        "3-D input {x:?} needs num_heads dividing {hidden}, got {heads}"
                    ))
                })?;
            (vec![*b, *s, h, hidden / h], 2)
        }
        _ => return Err(cx.err(format!("input must be 3-D or 4-D, got {x:?}"))),
    };
    let d = x4[3];
    let r = match cx.attr_int("rotary_embedding_dim", 0) {
        0 => d,
        r if r > 0 && (r as usize) <= d && r % 2 == 0 => r as usize,
        r => {
            return Err(cx.err(format!(
                "rotary_embedding_dim {r} must be even and at most the head size {d}"
            )))
        }
    };
    let half = r / 2;
    let interleaved = cx.attr_int("interleaved", 0) != 0;
    let mut c = Chain(Vec::new());
    // The caches as [B', S, R/2]: gathered by position ids when those are given.
    let (cos_ref, sin_ref, cache) = match cx.opt_input(3) {
        Some(pos) => {
            if cos.len() != 2 {
                return Err(cx.err(format!(
                    "with position_ids the caches must be 2-D, got {cos:?}"
                )));
            }
            let gather = Op::Gather(AxisAttrs { axis: 0 });
            let gc = c.push(gather.clone(), &[V::In(1), V::In(3)]);
            let gs = c.push(gather, &[V::In(2), V::In(3)]);
            let mut shape = pos.shape.to_vec();
            shape.push(cos[1]);
            (gc, gs, shape)
        }
        None => (V::In(1), V::In(2), cos.clone()),
    };
    let [cb, cs, ch] = cache[..] else {
        return Err(cx.err(format!(
            "caches must be 3-D without position_ids, got {cache:?}"
        )));
    };
    let seq = x4[3 - head_axis];
    if ch != half || cs != seq || (cb != x4[0] && cb != 1) {
        return Err(cx.err(format!(
            "caches {cache:?} do not fit input {x:?} (want [{}, {seq}, {half}])",
            x4[0]
        )));
    }
    // [B', S, 1, R/2] (3-D input) or [B', 1, S, R/2] (4-D input).
    let mut c4 = vec![cb, cs, ch];
    c4.insert(head_axis, 1);
    let cos4 = c.reshape(cos_ref, c4.clone());
    let sin4 = c.reshape(sin_ref, c4.clone());
    let x_in = match x.len() {
        3 => c.reshape(V::In(0), x4.clone()),
        _ => V::In(0),
    };
    let rot = if r < d { c.slice(x_in, 0, r, 1) } else { x_in };
    let (x1, x2) = match interleaved {
        true => (c.slice(rot, 0, r, 2), c.slice(rot, 1, r, 2)),
        false => (c.slice(rot, 0, half, 1), c.slice(rot, half, r, 1)),
    };
    // out = x·[cos, cos] + [x2, x1]·[−sin, sin] (halves joined as halves, or interleaved):
    // the reference's cos·x1 − sin·x2 and sin·x1 + cos·x2 to the bit (x·(−s) = −(x·s) and
    // a + (−b) = a − b exactly), with one product per output element; the caches'
    // rearrangement is the same term for every rotary node that reads them.
    let neg_sin = c.push(Op::Unary(UnaryAttrs { kind: UnaryOp::Neg }), &[sin4]);
    let cos_full = join(&mut c, interleaved, cos4, &c4, cos4);
    let sin_full = join(&mut c, interleaved, neg_sin, &c4, sin4);
    let mut xs4 = x4.clone();
    xs4[3] = half;
    let swapped = join(&mut c, interleaved, x2, &xs4, x1);
    let xc = c.bin(BinaryOp::Mul, rot, cos_full);
    let xs = c.bin(BinaryOp::Mul, swapped, sin_full);
    let mut rotated = c.bin(BinaryOp::Add, xc, xs);
    if r < d {
        let pass = c.slice(x_in, r, d, 1);
        rotated = c.concat(3, &[rotated, pass]);
    }
    if x.len() == 3 {
        c.reshape(rotated, x);
    }
    Ok(Lowered::Steps(c.0))
}
