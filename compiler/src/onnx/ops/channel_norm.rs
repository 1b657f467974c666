//! Per-channel normalisations of `[N, C, D1..]` tensors, lowered to existing ops.
//!
//! * BatchNormalization: <https://onnx.ai/onnx/operators/onnx__BatchNormalization.html>
//!   (9..=28, inference only: `training_mode=1` is refused): `X·s + (B − mean·s)` with
//!   `s = scale / √(var + ε)` broadcast per channel
//! * InstanceNormalization: <https://onnx.ai/onnx/operators/onnx__InstanceNormalization.html>
//!   (6..=28): LayerNorm over the spatial axes, then the per-channel scale and bias
//! * GroupNormalization: <https://onnx.ai/onnx/operators/onnx__GroupNormalization.html>
//!   (18..=28; version 18's per-group scale and bias and version 21's per-channel ones):
//!   LayerNorm over `[C/G, D1..]` of X reshaped to `[N, G, −1]`
use super::{entry, Lowered, NodeCx, OpEntry, Ref, Step};
use crate::onnx::ImportError;
use tessera_ir::op::{BinaryAttrs, BinaryOp, NormAttrs, ReshapeAttrs, UnaryAttrs, UnaryOp};
use tessera_ir::{DType, Op, Tensor};

pub(super) const OPS: &[OpEntry] = &[
    entry("BatchNormalization", 9, batch_norm),
    entry("InstanceNormalization", 6, instance_norm),
    entry("GroupNormalization", 18, group_norm),
];

fn bin(kind: BinaryOp) -> Op {
    Op::Binary(BinaryAttrs { kind })
}

fn reshape(shape: Vec<usize>) -> Op {
    Op::Reshape(ReshapeAttrs { shape })
}

/// A scalar constant of a float dtype.
fn scalar(dtype: DType, v: f32) -> Tensor {
    Tensor {
        dtype,
        ..Tensor::f32(vec![], vec![v])
    }
}

/// X float of rank >= 3: its dtype and shape, and the per-channel shape `[C, 1, ..]`.
fn channels(cx: &NodeCx) -> Result<(DType, Vec<usize>, Vec<usize>), ImportError> {
    let x = cx.input(0)?;
    if x.shape.len() < 3 || !x.dtype.is_float() {
        return Err(cx.err(format!(
            "X {}{:?} must be a float [N, C, D1..]",
            x.dtype, x.shape
        )));
    }
    let mut per_channel = vec![1; x.shape.len() - 1];
    per_channel[0] = x.shape[1];
    Ok((x.dtype, x.shape.to_vec(), per_channel))
}

/// Inputs `idx` must be `[len]`.
fn check_vec(cx: &NodeCx, idx: &[usize], len: usize) -> Result<(), ImportError> {
    for &i in idx {
        let s = cx.input(i)?.shape;
        if s != [len] {
            return Err(cx.err(format!("input {i} has shape {s:?}, expected [{len}]")));
        }
    }
    Ok(())
}

fn batch_norm(cx: &NodeCx) -> Result<Lowered, ImportError> {
    if cx.attr_int("training_mode", 0) != 0 {
        return Err(cx.err("training_mode=1 is not supported (inference only)"));
    }
    if (1..3).any(|k| cx.output_used(k)) {
        return Err(cx.err("the running mean and variance outputs are not supported"));
    }
    let (dtype, _, per_channel) = channels(cx)?;
    check_vec(cx, &[1, 2, 3, 4], per_channel[0])?;
    let eps = cx.attr_float("epsilon", 1e-5);
    let p = Ref::Prev;
    let steps = vec![
        // 0: var + eps; 1: sqrt; 2: s = scale / sqrt; 3: mean·s; 4: B − mean·s
        Step {
            op: bin(BinaryOp::Add),
            inputs: vec![Ref::In(4), Ref::Const(scalar(dtype, eps))],
        },
        Step {
            op: Op::Unary(UnaryAttrs {
                kind: UnaryOp::Sqrt,
            }),
            inputs: vec![p(0, 0)],
        },
        Step {
            op: bin(BinaryOp::Div),
            inputs: vec![Ref::In(1), p(1, 0)],
        },
        Step {
            op: bin(BinaryOp::Mul),
            inputs: vec![Ref::In(3), p(2, 0)],
        },
        Step {
            op: bin(BinaryOp::Sub),
            inputs: vec![Ref::In(2), p(3, 0)],
        },
        // 5, 6: to [C, 1, ..]; 7: X·s; 8: + shift
        Step {
            op: reshape(per_channel.clone()),
            inputs: vec![p(2, 0)],
        },
        Step {
            op: reshape(per_channel),
            inputs: vec![p(4, 0)],
        },
        Step {
            op: bin(BinaryOp::Mul),
            inputs: vec![Ref::In(0), p(5, 0)],
        },
        Step {
            op: bin(BinaryOp::Add),
            inputs: vec![p(7, 0), p(6, 0)],
        },
    ];
    Ok(Lowered::Steps(steps))
}

/// Appends `y · scale + bias` with scale and bias (node inputs 1 and 2) reshaped to
/// `param_shape`, `y` being the last step's output.
fn scale_and_shift(steps: &mut Vec<Step>, param_shape: Vec<usize>) {
    let y = steps.len() - 1;
    let n = steps.len();
    steps.push(Step {
        op: reshape(param_shape.clone()),
        inputs: vec![Ref::In(1)],
    });
    steps.push(Step {
        op: reshape(param_shape),
        inputs: vec![Ref::In(2)],
    });
    steps.push(Step {
        op: bin(BinaryOp::Mul),
        inputs: vec![Ref::Prev(y, 0), Ref::Prev(n, 0)],
    });
    steps.push(Step {
        op: bin(BinaryOp::Add),
        inputs: vec![Ref::Prev(n + 2, 0), Ref::Prev(n + 1, 0)],
    });
}

/// LayerNorm over `axis..` with a unit scale (the node's scale applies afterwards).
fn plain_layer_norm(dtype: DType, axis: usize, epsilon: f32, x: Ref) -> Step {
    Step {
        op: Op::LayerNorm(NormAttrs { axis, epsilon }),
        inputs: vec![
            x,
            Ref::Const(Tensor {
                dtype,
                ..Tensor::f32(vec![1], vec![1.0])
            }),
        ],
    }
}

fn instance_norm(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let (dtype, _, per_channel) = channels(cx)?;
    check_vec(cx, &[1, 2], per_channel[0])?;
    let eps = cx.attr_float("epsilon", 1e-5);
    let mut steps = vec![plain_layer_norm(dtype, 2, eps, Ref::In(0))];
    scale_and_shift(&mut steps, per_channel);
    Ok(Lowered::Steps(steps))
}

fn group_norm(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let (dtype, x, per_channel) = channels(cx)?;
    let c = x[1];
    let g = match cx.attr_int("num_groups", 0) {
        g if g >= 1 && c % g as usize == 0 => g as usize,
        g => {
            return Err(cx.err(format!(
                "num_groups {g} must be >= 1 and divide the {c} channels"
            )))
        }
    };
    let eps = cx.attr_float("epsilon", 1e-5);
    let rest: usize = x[1..].iter().product::<usize>() / g;
    let scale_len = cx.input(1)?.shape.iter().product::<usize>();
    let mut steps = vec![
        Step {
            op: reshape(vec![x[0], g, rest]),
            inputs: vec![Ref::In(0)],
        },
        plain_layer_norm(dtype, 2, eps, Ref::Prev(0, 0)),
    ];
    if scale_len == c {
        check_vec(cx, &[1, 2], c)?;
        steps.push(Step {
            op: reshape(x.clone()),
            inputs: vec![Ref::Prev(1, 0)],
        });
        scale_and_shift(&mut steps, per_channel);
    } else {
        // Opset 18: one scale and bias per group.
        check_vec(cx, &[1, 2], g)?;
        scale_and_shift(&mut steps, vec![g, 1]);
        let last = steps.len() - 1;
        steps.push(Step {
            op: reshape(x),
            inputs: vec![Ref::Prev(last, 0)],
        });
    }
    Ok(Lowered::Steps(steps))
}
