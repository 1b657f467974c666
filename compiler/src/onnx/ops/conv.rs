//! Convolutions.
//!
//! * Conv: <https://onnx.ai/onnx/operators/onnx__Conv.html> (1..=28; 1-D, 2-D, 3-D and
//!   more spatial axes, groups, dilations, strides, pads and `auto_pad`, resolved into
//!   explicit pads here; float inputs)
//! * ConvTranspose: <https://onnx.ai/onnx/operators/onnx__ConvTranspose.html> (1..=28;
//!   `output_shape`, `output_padding` and `auto_pad` resolved into pads and output padding)
use super::{entry, Lowered, NodeCx, OpEntry};
use crate::onnx::ImportError;
use tessera_ir::op::{ConvAttrs, ConvTransposeAttrs};
use tessera_ir::Op;

pub(super) const OPS: &[OpEntry] = &[
    entry("Conv", 1, conv),
    entry("ConvTranspose", 1, conv_transpose),
];

/// The spatial attributes every window op shares, read and checked.
pub(super) struct WindowAttrs {
    /// Kernel extents.
    pub kernel: Vec<usize>,
    /// Strides.
    pub strides: Vec<usize>,
    /// Dilations.
    pub dilations: Vec<usize>,
    /// Explicit pads (begins, then ends); zeros when `auto_pad` is set.
    pub pads: Vec<usize>,
    /// `auto_pad`: NOTSET, SAME_UPPER, SAME_LOWER or VALID.
    pub auto_pad: String,
}

/// A per-axis list attribute of `n` positive entries, or `default` repeated.
fn list(cx: &NodeCx, name: &str, n: usize, min: i64) -> Result<Option<Vec<usize>>, ImportError> {
    let Some(v) = cx.attr_ints(name) else {
        return Ok(None);
    };
    if v.len() != n || v.iter().any(|&x| x < min) {
        return Err(cx.err(format!("{name} {v:?} must have {n} entries >= {min}")));
    }
    Ok(Some(v.into_iter().map(|x| x as usize).collect()))
}

/// Reads kernel_shape (or `kernel` from W), strides, dilations, pads and auto_pad for
/// `spatial` axes.
pub(super) fn window_attrs(
    cx: &NodeCx,
    spatial: usize,
    kernel: Option<Vec<usize>>,
) -> Result<WindowAttrs, ImportError> {
    let kernel = match (list(cx, "kernel_shape", spatial, 1)?, kernel) {
        (Some(k), Some(w)) if k != w => {
            return Err(cx.err(format!("kernel_shape {k:?} does not match W's {w:?}")))
        }
        (Some(k), _) | (None, Some(k)) => k,
        (None, None) => return Err(cx.err("missing kernel_shape")),
    };
    let auto_pad = cx.attr_str("auto_pad").unwrap_or_else(|| "NOTSET".into());
    if !["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"].contains(&auto_pad.as_str()) {
        return Err(cx.err(format!("unknown auto_pad '{auto_pad}'")));
    }
    let pads = list(cx, "pads", 2 * spatial, 0)?;
    if pads.is_some() && auto_pad != "NOTSET" {
        return Err(cx.err(format!("pads and auto_pad={auto_pad} are both given")));
    }
    Ok(WindowAttrs {
        kernel,
        strides: list(cx, "strides", spatial, 1)?.unwrap_or(vec![1; spatial]),
        dilations: list(cx, "dilations", spatial, 1)?.unwrap_or(vec![1; spatial]),
        pads: pads.unwrap_or(vec![0; 2 * spatial]),
        auto_pad,
    })
}

impl WindowAttrs {
    /// Resolves `auto_pad` SAME_UPPER / SAME_LOWER into pads for input extents `input`
    /// (the output extent is `ceil(input / stride)`).
    pub fn resolve_same(&mut self, input: &[usize]) {
        let s = input.len();
        if !self.auto_pad.starts_with("SAME") {
            return;
        }
        for (i, &extent) in input.iter().enumerate() {
            let out = extent.div_ceil(self.strides[i]);
            let span = self.kernel[i].saturating_sub(1) * self.dilations[i] + 1;
            let total = (out.saturating_sub(1) * self.strides[i] + span).saturating_sub(extent);
            let small = total / 2;
            let (b, e) = if self.auto_pad == "SAME_UPPER" {
                (small, total - small)
            } else {
                (total - small, small)
            };
            self.pads[i] = b;
            self.pads[s + i] = e;
        }
    }
}

/// X and W of one rank >= 3: the spatial axes, the input extents and W's kernel.
fn conv_shapes(cx: &NodeCx) -> Result<(usize, Vec<usize>, Vec<usize>), ImportError> {
    let x = cx.input(0)?.shape;
    let w = cx.input(1)?.shape;
    if x.len() < 3 || w.len() != x.len() {
        return Err(cx.err(format!(
            "X {x:?} must be [N, C, D1..] and W {w:?} of the same rank"
        )));
    }
    Ok((x.len() - 2, x[2..].to_vec(), w[2..].to_vec()))
}

fn inputs(cx: &NodeCx) -> Vec<usize> {
    if cx.opt_input(2).is_some() {
        vec![0, 1, 2]
    } else {
        vec![0, 1]
    }
}

fn group(cx: &NodeCx) -> Result<usize, ImportError> {
    match cx.attr_int("group", 1) {
        g if g >= 1 => Ok(g as usize),
        g => Err(cx.err(format!("group {g} must be >= 1"))),
    }
}

fn conv(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let (spatial, input, kernel) = conv_shapes(cx)?;
    let mut w = window_attrs(cx, spatial, Some(kernel))?;
    w.resolve_same(&input);
    let g = group(cx)?;
    let attrs = ConvAttrs {
        strides: w.strides,
        dilations: w.dilations,
        pads: w.pads,
        group: g,
        // One input channel per group: a channel split keeps the Conv depthwise.
        depthwise: g > 1 && g == cx.input(0)?.shape[1] && cx.input(1)?.shape[1] == 1,
    };
    Ok(Lowered::op(Op::Conv(attrs), &inputs(cx)))
}

fn conv_transpose(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let (spatial, input, kernel) = conv_shapes(cx)?;
    if input.contains(&0) || kernel.contains(&0) {
        return Err(cx.err(format!(
            "empty spatial extents: input {input:?}, kernel {kernel:?}"
        )));
    }
    let w = window_attrs(cx, spatial, Some(kernel))?;
    let mut output_padding = list(cx, "output_padding", spatial, 0)?.unwrap_or(vec![0; spatial]);
    let output_shape = match cx.attr_ints("output_shape") {
        // output_shape may list the spatial extents or the whole output shape.
        Some(v) if v.len() == spatial + 2 => Some(v[2..].to_vec()),
        Some(v) if v.len() == spatial => Some(v),
        Some(v) => {
            return Err(cx.err(format!(
                "output_shape {v:?} must have {spatial} spatial entries"
            )))
        }
        None if w.auto_pad.starts_with("SAME") => Some(
            (0..spatial)
                .map(|i| (input[i] * w.strides[i]) as i64)
                .collect(),
        ),
        None => None,
    };
    let mut pads = w.pads.clone();
    if let Some(out) = output_shape {
        for i in 0..spatial {
            let full = (w.strides[i] * (input[i] - 1)
                + output_padding[i]
                + (w.kernel[i] - 1) * w.dilations[i]
                + 1) as i64;
            let total = full - out[i];
            if total < 0 {
                // The requested output is larger than the full one: extend at the end.
                pads[i] = 0;
                pads[spatial + i] = 0;
                output_padding[i] += (-total) as usize;
                continue;
            }
            let (total, half) = (total as usize, total as usize / 2);
            let (b, e) = if w.auto_pad == "SAME_UPPER" {
                (half, total - half)
            } else {
                (total - half, half)
            };
            pads[i] = b;
            pads[spatial + i] = e;
        }
    }
    let attrs = ConvTransposeAttrs {
        conv: ConvAttrs {
            strides: w.strides,
            dilations: w.dilations,
            pads,
            group: group(cx)?,
            depthwise: false,
        },
        output_padding,
    };
    Ok(Lowered::op(Op::ConvTranspose(attrs), &inputs(cx)))
}
