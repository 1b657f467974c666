//! Data-movement ops whose shape arguments become static attributes.
//!
//! * Reshape: <https://onnx.ai/onnx/operators/onnx__Reshape.html> (13..=23; 0 and -1 resolved,
//!   `allowzero` honoured)
//! * Transpose: <https://onnx.ai/onnx/operators/onnx__Transpose.html> (13..=23)
//! * Squeeze / Unsqueeze: <https://onnx.ai/onnx/operators/onnx__Squeeze.html> (13..=23, axes
//!   input) → Reshape
//! * Flatten: <https://onnx.ai/onnx/operators/onnx__Flatten.html> (13..=23) → Reshape
//! * Expand: <https://onnx.ai/onnx/operators/onnx__Expand.html> (13..=23)
//! * Concat: <https://onnx.ai/onnx/operators/onnx__Concat.html> (13..=23)
//! * Split: <https://onnx.ai/onnx/operators/onnx__Split.html> (13..=23; `split` input, or
//!   `num_outputs` from 18)
//! * Slice: <https://onnx.ai/onnx/operators/onnx__Slice.html> (13..=23; starts/ends clamped)
use super::{entry, Lowered, NodeCx, OpEntry};
use crate::onnx::ImportError;
use tessera_ir::infer::{broadcast_shapes, normalize_slice};
use tessera_ir::op::{
    AxisAttrs, ExpandAttrs, ReshapeAttrs, SliceAttrs, SplitAttrs, TransposeAttrs,
};
use tessera_ir::{numel, Op};

pub(super) const OPS: &[OpEntry] = &[
    entry("Reshape", 5, reshape),
    entry("Transpose", 1, transpose),
    entry("Squeeze", 13, squeeze),
    entry("Unsqueeze", 13, unsqueeze),
    entry("Flatten", 1, flatten),
    entry("Expand", 8, expand),
    entry("Concat", 4, concat),
    entry("Split", 13, split),
    entry("Slice", 10, slice),
];

fn reshape_to(shape: Vec<usize>) -> Result<Lowered, ImportError> {
    Ok(Lowered::op(Op::Reshape(ReshapeAttrs { shape }), &[0]))
}

fn reshape(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let x = cx.input(0)?.shape;
    let target = cx.const_input(1)?.to_i64_vec();
    let allow_zero = cx.attr_int("allowzero", 0) != 0;
    let mut out = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            -1 if infer_at.is_none() => {
                infer_at = Some(i);
                out.push(1);
            }
            0 if !allow_zero => out.push(
                *x.get(i)
                    .ok_or_else(|| cx.err(format!("target {target:?} copies dim {i} of {x:?}")))?,
            ),
            t if t >= 0 => out.push(t as usize),
            _ => return Err(cx.err(format!("invalid reshape target {target:?} for input {x:?}"))),
        }
    }
    if let Some(i) = infer_at {
        let known = numel(&out);
        if known == 0 || !numel(x).is_multiple_of(known) {
            return Err(cx.err(format!("cannot reshape {x:?} to {target:?}")));
        }
        out[i] = numel(x) / known;
    }
    reshape_to(out)
}

fn transpose(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let rank = cx.rank(0)?;
    let perm = match cx.attr_ints("perm") {
        Some(p) => p
            .iter()
            .map(|&a| cx.axis(a, rank))
            .collect::<Result<Vec<_>, _>>()?,
        None => (0..rank).rev().collect(),
    };
    Ok(Lowered::op(Op::Transpose(TransposeAttrs { perm }), &[0]))
}

fn axes_input(cx: &NodeCx) -> Result<Option<Vec<i64>>, ImportError> {
    if cx.opt_input(1).is_some() {
        cx.opt_const_ints(1)
    } else {
        Ok(cx.attr_ints("axes"))
    }
}

fn squeeze(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let x = cx.input(0)?.shape;
    let axes = match axes_input(cx)? {
        Some(a) => cx.axes(&a, x.len())?,
        None => (0..x.len()).filter(|&i| x[i] == 1).collect(),
    };
    if let Some(&a) = axes.iter().find(|&&a| x[a] != 1) {
        return Err(cx.err(format!(
            "cannot squeeze axis {a} of extent {} in {x:?}",
            x[a]
        )));
    }
    reshape_to(
        x.iter()
            .enumerate()
            .filter(|(i, _)| !axes.contains(i))
            .map(|(_, &d)| d)
            .collect(),
    )
}

fn unsqueeze(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let x = cx.input(0)?.shape;
    let given = axes_input(cx)?.ok_or_else(|| cx.err("missing axes"))?;
    let axes = cx.axes(&given, x.len() + given.len())?;
    let mut rest = x.iter();
    let out = (0..x.len() + axes.len()).map(|i| {
        if axes.contains(&i) {
            Some(1)
        } else {
            rest.next().copied()
        }
    });
    reshape_to(
        out.collect::<Option<Vec<_>>>()
            .ok_or_else(|| cx.err("bad axes"))?,
    )
}

fn flatten(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let x = cx.input(0)?.shape;
    let a = cx.attr_int("axis", 1);
    // Flatten's axis ranges over [-r, r] (r itself is allowed).
    let axis = if a == x.len() as i64 {
        x.len()
    } else {
        cx.axis(a, x.len())?
    };
    reshape_to(vec![numel(&x[..axis]), numel(&x[axis..])])
}

fn expand(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let x = cx.input(0)?.shape;
    let target = cx.const_input(1)?.to_i64_vec();
    let target: Vec<usize> = target
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| cx.err(format!("negative dim in shape {target:?}")))
        })
        .collect::<Result<_, _>>()?;
    let shape = broadcast_shapes(x, &target).ok_or_else(|| {
        cx.err(format!(
            "cannot expand {x:?} to {target:?}: shapes do not broadcast"
        ))
    })?;
    Ok(Lowered::op(Op::Expand(ExpandAttrs { shape }), &[0]))
}

fn concat(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let a = cx
        .attr("axis")
        .map(|a| a.i)
        .ok_or_else(|| cx.err("missing attribute 'axis'"))?;
    let axis = cx.axis(a, cx.rank(0)?)?;
    let all: Vec<usize> = (0..cx.n_inputs()).collect();
    Ok(Lowered::op(Op::Concat(AxisAttrs { axis }), &all))
}

fn split(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let x = cx.input(0)?.shape;
    let axis = cx.axis(cx.attr_int("axis", 0), x.len())?;
    let sizes = match cx.opt_const_ints(1)? {
        Some(s) => s
            .iter()
            .map(|&v| {
                usize::try_from(v).map_err(|_| cx.err(format!("negative split size in {s:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => {
            let outputs = cx.node.output.len();
            let n = cx.attr_int("num_outputs", outputs as i64);
            // ONNX: num_outputs equals the node's output count; checked before the sizes are
            // allocated (a huge num_outputs would otherwise allocate one size per output).
            if n != outputs as i64 || n <= 0 {
                return Err(cx.err(format!(
                    "num_outputs {n} does not match the node's {outputs} outputs"
                )));
            }
            let n = outputs;
            let chunk = x[axis].div_ceil(n);
            (0..n)
                .map(|i| chunk.min(x[axis].saturating_sub(i * chunk)))
                .collect()
        }
    };
    Ok(Lowered::op(Op::Split(SplitAttrs { axis, sizes }), &[0]))
}

fn slice(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let x = cx.input(0)?.shape;
    let starts = cx.const_input(1)?.to_i64_vec();
    let ends = cx.const_input(2)?.to_i64_vec();
    let n = starts.len();
    let axes = cx
        .opt_const_ints(3)?
        .unwrap_or_else(|| (0..n as i64).collect());
    let steps = cx.opt_const_ints(4)?.unwrap_or_else(|| vec![1; n]);
    if ends.len() != n || axes.len() != n || steps.len() != n {
        return Err(cx.err(format!(
            "starts {starts:?}, ends {ends:?}, axes {axes:?}, steps {steps:?} differ in length"
        )));
    }
    let mut attrs = SliceAttrs {
        axes: vec![],
        starts: vec![],
        ends: vec![],
        steps: vec![],
    };
    for i in 0..n {
        let axis = cx.axis(axes[i], x.len())?;
        if steps[i] == 0 {
            return Err(cx.err("slice step 0"));
        }
        let (s, e) = normalize_slice(starts[i], ends[i], steps[i], x[axis]);
        attrs.axes.push(axis);
        attrs.starts.push(s);
        attrs.ends.push(e);
        attrs.steps.push(steps[i]);
    }
    Ok(Lowered::op(Op::Slice(attrs), &[0]))
}
