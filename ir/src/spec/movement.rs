//! Data movement: Reshape (also Squeeze, Unsqueeze, Flatten;
//! <https://onnx.ai/onnx/operators/onnx__Reshape.html>), Transpose, Concat, Split, Slice,
//! Expand and Trilu (<https://onnx.ai/onnx/operators/onnx__Trilu.html>).
//!
//! Cost: no FLOPs; bytes are the input and output (a slice reads only what it keeps).
//! Partitioning: each passes partial sums through (`linear-partial`, not Trilu) and keeps a
//! split on an axis it does not move (`reshape-split`, `transpose-split`, `slice-unsplit`,
//! `elementwise-split` for Expand, `norm-keep-split` for Trilu); a Split or Slice of a
//! projection X·W also splits the weight (`fused-section`).
use super::{tensor_bytes, Arity, OpSpec, Partitioning};
use crate::infer::{broadcast_shapes, InferCx, TypedShape};
use crate::op::{
    AxisAttrs, ExpandAttrs, ReshapeAttrs, SliceAttrs, SplitAttrs, TransposeAttrs, TriluAttrs,
};
use crate::{checked_numel, numel, DType, IrError};

/// Normalises one ONNX Slice axis: negative `start`/`end` count from the back, then both are
/// clamped to `[0, dim]` for a positive step and to `[0, dim-1]` / `[-1, dim-1]` for a negative
/// one (the ONNX rules). Returns the clamped `(start, end)` that [`SliceAttrs`] stores.
pub fn normalize_slice(start: i64, end: i64, step: i64, dim: usize) -> (i64, i64) {
    let dim = dim as i64;
    let fix = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
    let (s, e) = (fix(start), fix(end));
    if step > 0 {
        (s.clamp(0, dim), e.clamp(0, dim))
    } else {
        (s.max(0).min(dim - 1), e.clamp(-1, dim - 1))
    }
}

/// Number of elements a clamped slice `start..end` by `step` selects (0 when empty or when
/// `step` is 0): `ceil((end - start) / step)`, computed in i128 so that no `start`, `end`
/// or `step` (i64::MAX, i64::MIN included) overflows.
pub fn slice_len(start: i64, end: i64, step: i64) -> usize {
    let (start, end, step) = (i128::from(start), i128::from(end), i128::from(step));
    let (span, step) = if step > 0 {
        (end - start, step)
    } else {
        (start - end, -step)
    };
    if span <= 0 || step == 0 {
        return 0;
    }
    // span ≤ 2^64 - 1 and step ≥ 1, so the count fits in u64; saturate where usize is narrower.
    usize::try_from((span + step - 1) / step).unwrap_or(usize::MAX)
}

/// A data-movement spec from its name, arity, rule-table rows and inference (`|attrs, cx|
/// body`): no FLOPs, bytes as the default (input and output once).
macro_rules! movement_spec {
    ($name:literal, $arity:expr, $rules:expr, |$s:ident, $cx:ident| $infer:expr) => {
        fn name(&self) -> String {
            $name.into()
        }
        fn arity(&self) -> Arity {
            $arity
        }
        fn infer(&self, $cx: &InferCx) -> Result<Vec<TypedShape>, IrError> {
            let $s = self;
            $infer
        }
        fn flops(&self, _inputs: &[&[usize]], _outputs: &[&[usize]]) -> u64 {
            0
        }
        fn partitioning(&self) -> Partitioning {
            Partitioning::Rules($rules)
        }
    };
}

impl OpSpec for ReshapeAttrs {
    movement_spec!(
        "Reshape",
        Arity::exactly(1),
        &["linear-partial", "reshape-split"],
        |a, cx| reshape(cx, &a.shape).map(|o| vec![o])
    );
}

impl OpSpec for TransposeAttrs {
    movement_spec!(
        "Transpose",
        Arity::exactly(1),
        &["linear-partial", "transpose-split"],
        |a, cx| transpose(cx, &a.perm).map(|o| vec![o])
    );
}

/// The spec of [`crate::Op::Concat`]: inputs X... joined along the axis.
pub struct ConcatSpec<'a>(pub &'a AxisAttrs);

impl OpSpec for ConcatSpec<'_> {
    movement_spec!(
        "Concat",
        Arity::at_least(1),
        &["linear-partial", "slice-unsplit"],
        |a, cx| concat(cx, a.0.axis).map(|o| vec![o])
    );
}

impl OpSpec for SplitAttrs {
    movement_spec!(
        "Split",
        Arity::exactly(1),
        &["linear-partial", "slice-unsplit", "fused-section"],
        |a, cx| split(cx, a.axis, &a.sizes)
    );
}

impl OpSpec for SliceAttrs {
    fn name(&self) -> String {
        "Slice".into()
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn infer(&self, cx: &InferCx) -> Result<Vec<TypedShape>, IrError> {
        slice(cx, self).map(|o| vec![o])
    }
    fn flops(&self, _inputs: &[&[usize]], _outputs: &[&[usize]]) -> u64 {
        0
    }
    /// Reads only the selected elements.
    fn bytes(&self, _inputs: &[(DType, &[usize])], outputs: &[(DType, &[usize])]) -> u64 {
        2 * tensor_bytes(outputs)
    }
    fn partitioning(&self) -> Partitioning {
        Partitioning::Rules(&["linear-partial", "slice-unsplit", "fused-section"])
    }
}

impl OpSpec for ExpandAttrs {
    movement_spec!(
        "Expand",
        Arity::exactly(1),
        &["elementwise-split", "linear-partial"],
        |a, cx| {
            let (d, x) = cx.input(0);
            let out = broadcast_shapes(&x, &a.shape)
                .ok_or_else(|| cx.err(format!("cannot expand {x:?} to {:?}", a.shape)))?;
            Ok(vec![(d, out)])
        }
    );
}

impl OpSpec for TriluAttrs {
    movement_spec!(
        "Trilu",
        Arity::exactly(1),
        &["norm-keep-split"],
        |_a, cx| {
            if cx.inputs[0].1.len() < 2 {
                return Err(cx.err(format!(
                    "input must have rank >= 2, got shape {:?}",
                    cx.inputs[0].1
                )));
            }
            Ok(vec![cx.input(0)])
        }
    );
}

fn reshape(cx: &InferCx, shape: &[usize]) -> Result<TypedShape, IrError> {
    let (d, x) = cx.input(0);
    let to = checked_numel(shape).ok_or_else(|| {
        cx.err(format!(
            "target shape {shape:?} overflows the element count"
        ))
    })?;
    if numel(&x) != to {
        return Err(cx.err(format!(
            "cannot reshape {x:?} ({} elements) to {shape:?} ({to} elements)",
            numel(&x),
        )));
    }
    Ok((d, shape.to_vec()))
}

fn transpose(cx: &InferCx, perm: &[usize]) -> Result<TypedShape, IrError> {
    let (d, x) = cx.input(0);
    let mut seen = vec![false; x.len()];
    let is_perm = perm.len() == x.len()
        && perm
            .iter()
            .all(|&p| p < x.len() && !std::mem::replace(&mut seen[p], true));
    if !is_perm {
        return Err(cx.err(format!(
            "perm {perm:?} is not a permutation of the axes of {x:?}"
        )));
    }
    Ok((d, perm.iter().map(|&p| x[p]).collect()))
}

fn concat(cx: &InferCx, axis: usize) -> Result<TypedShape, IrError> {
    let d = cx.same_dtype(&(0..cx.inputs.len()).collect::<Vec<_>>())?;
    let first = cx.inputs[0].1;
    cx.axis_in_range(axis, first.len())?;
    let mut out = first.to_vec();
    out[axis] = 0;
    for (_, s) in cx.inputs {
        let same_rest = s.len() == first.len()
            && s.iter()
                .zip(first)
                .enumerate()
                .all(|(i, (a, b))| i == axis || a == b);
        if !same_rest {
            return Err(cx.err(format!(
                "inputs {first:?} and {s:?} differ outside the concat axis {axis}"
            )));
        }
        out[axis] += s[axis];
    }
    Ok((d, out))
}

fn split(cx: &InferCx, axis: usize, sizes: &[usize]) -> Result<Vec<TypedShape>, IrError> {
    let (d, x) = cx.input(0);
    cx.axis_in_range(axis, x.len())?;
    if sizes.iter().sum::<usize>() != x[axis] || sizes.is_empty() {
        return Err(cx.err(format!(
            "split sizes {sizes:?} do not sum to extent {} of axis {axis} of {x:?}",
            x[axis]
        )));
    }
    Ok(sizes
        .iter()
        .map(|&n| {
            let mut s = x.clone();
            s[axis] = n;
            (d, s)
        })
        .collect())
}

fn slice(cx: &InferCx, a: &SliceAttrs) -> Result<TypedShape, IrError> {
    let (d, mut x) = cx.input(0);
    let n = a.axes.len();
    if a.starts.len() != n || a.ends.len() != n || a.steps.len() != n {
        return Err(cx.err(format!(
            "axes/starts/ends/steps lengths differ: {}/{}/{}/{}",
            n,
            a.starts.len(),
            a.ends.len(),
            a.steps.len()
        )));
    }
    let mut seen = vec![false; x.len()];
    for i in 0..n {
        let (axis, start, end, step) = (a.axes[i], a.starts[i], a.ends[i], a.steps[i]);
        cx.axis_in_range(axis, x.len())?;
        if std::mem::replace(&mut seen[axis], true) {
            return Err(cx.err(format!("axis {axis} sliced twice in {:?}", a.axes)));
        }
        let dim = x[axis] as i64;
        let ok = match step {
            0 => false,
            s if s > 0 => (0..=dim).contains(&start) && (0..=dim).contains(&end),
            _ => (-1..dim).contains(&start) && (-1..dim).contains(&end),
        };
        if !ok {
            return Err(cx.err(format!(
                "slice {start}..{end} step {step} on axis {axis} is not clamped to the extent of {x:?}"
            )));
        }
        x[axis] = slice_len(start, end, step);
    }
    Ok((d, x))
}
