//! Data-movement ops lowered at import into Reshape, Expand and Transpose (which partition
//! and run as any of those), and IsInf into comparisons:
//!
//! * Tile: <https://onnx.ai/onnx/operators/onnx__Tile.html> (6..=28; `repeats` must be a
//!   constant): `x` `[d0, …, dk]` reshaped to `[1, d0, …, 1, dk]`, expanded to
//!   `[r0, d0, …, rk, dk]`, reshaped to `[r0·d0, …, rk·dk]`
//! * DepthToSpace: <https://onnx.ai/onnx/operators/onnx__DepthToSpace.html> (11..=28, modes
//!   DCR and CRD) and SpaceToDepth:
//!   <https://onnx.ai/onnx/operators/onnx__SpaceToDepth.html> (1..=28, modes DCR and CRD
//!   from 28): the spec's own Reshape, Transpose, Reshape
//! * IsInf: <https://onnx.ai/onnx/operators/onnx__IsInf.html> (10..=28):
//!   `x = +∞` or `x = −∞` (as `detect_positive` / `detect_negative` ask)
use super::activation_extra::{scalar, Chain};
use super::elementwise::bin;
use super::{entry, Lowered, NodeCx, OpEntry, Ref};
use crate::onnx::ImportError;
use tessera_ir::op::{BinaryOp, ExpandAttrs, ReshapeAttrs, TransposeAttrs};
use tessera_ir::Op;

pub(super) const OPS: &[OpEntry] = &[
    entry("Tile", 6, tile),
    entry("DepthToSpace", 11, depth_to_space),
    entry("SpaceToDepth", 1, space_to_depth),
    entry("IsInf", 10, is_inf),
];

fn reshape(shape: Vec<usize>) -> Op {
    Op::Reshape(ReshapeAttrs { shape })
}

fn tile(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let shape = cx.input(0)?.shape.to_vec();
    let repeats = cx
        .opt_const_ints(1)?
        .ok_or_else(|| cx.err("input 1 (repeats) must be a constant"))?;
    if repeats.len() != shape.len() {
        return Err(cx.err(format!(
            "repeats {repeats:?} must have one entry per axis of the input {shape:?}"
        )));
    }
    if let Some(r) = repeats.iter().find(|&&r| r < 0) {
        return Err(cx.err(format!("repeats must be non-negative, got {r}")));
    }
    let reps: Vec<usize> = repeats.iter().map(|&r| r as usize).collect();
    let (mut split, mut expanded, mut out) = (vec![], vec![], vec![]);
    for (&d, &r) in shape.iter().zip(&reps) {
        split.extend([1, d]);
        expanded.extend([r, d]);
        out.push(
            r.checked_mul(d)
                .ok_or_else(|| cx.err(format!("tiling {shape:?} by {reps:?} overflows")))?,
        );
    }
    let mut c = Chain::default();
    let s = c.push(reshape(split), vec![Ref::In(0)]);
    let e = c.push(Op::Expand(ExpandAttrs { shape: expanded }), vec![s]);
    c.push(reshape(out), vec![e]);
    Ok(c.done())
}

/// `(b, c, h, w, blocksize)` of a 4-D input, or an error naming what is wrong.
fn blocks(cx: &NodeCx) -> Result<([usize; 4], usize), ImportError> {
    let shape = cx.input(0)?.shape;
    let [b, c, h, w] = shape[..] else {
        return Err(cx.err(format!("expects a 4-D input, got shape {shape:?}")));
    };
    let bs = cx.attr_int("blocksize", 0);
    if bs < 1 {
        return Err(cx.err(format!("blocksize must be at least 1, got {bs}")));
    }
    Ok(([b, c, h, w], bs as usize))
}

fn depth_to_space(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let ([b, c, h, w], bs) = blocks(cx)?;
    if c % (bs * bs) != 0 {
        return Err(cx.err(format!(
            "{c} channels do not divide into blocks of {bs}x{bs}"
        )));
    }
    let cb = c / (bs * bs);
    let (first, perm) = match cx.attr_str("mode").as_deref() {
        None | Some("DCR") => (vec![b, bs, bs, cb, h, w], vec![0, 3, 4, 1, 5, 2]),
        Some("CRD") => (vec![b, cb, bs, bs, h, w], vec![0, 1, 4, 2, 5, 3]),
        Some(other) => return Err(cx.err(format!("unknown mode '{other}' (DCR or CRD)"))),
    };
    let mut ch = Chain::default();
    let s = ch.push(reshape(first), vec![Ref::In(0)]);
    let t = ch.push(Op::Transpose(TransposeAttrs { perm }), vec![s]);
    ch.push(reshape(vec![b, cb, h * bs, w * bs]), vec![t]);
    Ok(ch.done())
}

fn space_to_depth(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let ([b, c, h, w], bs) = blocks(cx)?;
    if h % bs != 0 || w % bs != 0 {
        return Err(cx.err(format!(
            "spatial dims {h}x{w} are not multiples of blocksize {bs}"
        )));
    }
    // DCR (the only layout before opset 28): output channel (i·bs + j)·c + k; CRD:
    // k·bs² + i·bs + j.
    let perm = match cx.attr_str("mode").as_deref() {
        None | Some("DCR") => vec![0, 3, 5, 1, 2, 4],
        Some("CRD") => vec![0, 1, 3, 5, 2, 4],
        Some(other) => return Err(cx.err(format!("unknown mode '{other}' (DCR or CRD)"))),
    };
    let mut ch = Chain::default();
    let s = ch.push(
        reshape(vec![b, c, h / bs, bs, w / bs, bs]),
        vec![Ref::In(0)],
    );
    let t = ch.push(Op::Transpose(TransposeAttrs { perm }), vec![s]);
    ch.push(reshape(vec![b, c * bs * bs, h / bs, w / bs]), vec![t]);
    Ok(ch.done())
}

fn is_inf(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let x = cx.input(0)?;
    if !x.dtype.is_float() {
        return Err(cx.err(format!("expects a float input, got {:?}", x.dtype)));
    }
    let (pos, neg) = (
        cx.attr_int("detect_positive", 1) != 0,
        cx.attr_int("detect_negative", 1) != 0,
    );
    let mut c = Chain::default();
    let test = |c: &mut Chain, v: f64| {
        c.push(
            bin(BinaryOp::Equal),
            vec![Ref::In(0), Ref::Const(scalar(x.dtype, v))],
        )
    };
    match (pos, neg) {
        (true, true) => {
            let p = test(&mut c, f64::INFINITY);
            let n = test(&mut c, f64::NEG_INFINITY);
            c.push(bin(BinaryOp::Or), vec![p, n]);
        }
        (true, false) => {
            test(&mut c, f64::INFINITY);
        }
        (false, true) => {
            test(&mut c, f64::NEG_INFINITY);
        }
        // Nothing to detect: x ≠ x is false for every value but NaN; x = +∞ and x = −∞ both
        // can't hold, so their And is all false.
        (false, false) => {
            let p = test(&mut c, f64::INFINITY);
            let n = test(&mut c, f64::NEG_INFINITY);
            c.push(bin(BinaryOp::And), vec![p, n]);
        }
    }
    Ok(c.done())
}
