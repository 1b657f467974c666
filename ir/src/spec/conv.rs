//! Convolutions and pooling: Conv (<https://onnx.ai/onnx/operators/onnx__Conv.html>),
//! ConvTranspose (<https://onnx.ai/onnx/operators/onnx__ConvTranspose.html>), MaxPool and
//! AveragePool (<https://onnx.ai/onnx/operators/onnx__MaxPool.html>), all over the spatial
//! axes `2..` of an `[N, C, D1..]` input, with explicit pads (begins, then ends).
//!
//! Cost: Conv 2 FLOPs per multiply-add (`2 · |Y| · C/group · K`), ConvTranspose the same
//! per input element, pooling one per window element. Partitioning: Conv and ConvTranspose
//! by batch (`conv-batch`: X and Y split on axis 0, W and B replicated); pooling keeps a
//! batch or channel split (`pool-keep-split`). (Channel splits of Conv, column- and row-like,
//! are not in the table yet: with them the frontier DP's per-frontier cost/memory fronts grow
//! without bound on MobileNet/EfficientNet graphs.)
use super::{Arity, OpSpec, Partitioning};
use crate::infer::{InferCx, TypedShape};
use crate::op::{ConvAttrs, ConvTransposeAttrs, PoolAttrs, PoolKind};
use crate::{numel, IrError};

/// Output extent of a convolution or pooling window along one axis:
/// `floor((input + pads − ((kernel − 1)·dilation + 1)) / stride) + 1` (rounded up with
/// `ceil`, dropping a last window that would start in the end padding, as onnxruntime and
/// PyTorch do), or None when the window does not fit.
pub fn window_out_extent(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pads: (usize, usize),
    ceil: bool,
) -> Option<usize> {
    let span = kernel
        .checked_sub(1)?
        .checked_mul(dilation)?
        .checked_add(1)?;
    let padded = input.checked_add(pads.0)?.checked_add(pads.1)?;
    let room = padded.checked_sub(span)?;
    if stride == 0 {
        return None;
    }
    let mut out = if ceil {
        room.div_ceil(stride) + 1
    } else {
        room / stride + 1
    };
    if ceil && out > 1 && (out - 1) * stride >= input + pads.0 {
        out -= 1;
    }
    Some(out)
}

/// Output extent of a transposed convolution along one axis:
/// `stride·(input − 1) + output_padding + (kernel − 1)·dilation + 1 − pads`.
pub fn transpose_out_extent(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pads: (usize, usize),
    output_padding: usize,
) -> Option<usize> {
    let full = stride
        .checked_mul(input.checked_sub(1)?)?
        .checked_add(output_padding)?
        .checked_add(kernel.checked_sub(1)?.checked_mul(dilation)?)?
        .checked_add(1)?;
    full.checked_sub(pads.0)?.checked_sub(pads.1)
}

/// Checks that each per-axis list has one entry per spatial axis (pads two) and that
/// strides and dilations are positive.
fn check_lists(
    cx: &InferCx,
    spatial: usize,
    strides: &[usize],
    dilations: &[usize],
    pads: &[usize],
) -> Result<(), IrError> {
    if strides.len() != spatial || dilations.len() != spatial || pads.len() != 2 * spatial {
        return Err(cx.err(format!(
            "{spatial} spatial axes need {spatial} strides, {spatial} dilations and {} pads, \
             got {strides:?}, {dilations:?}, {pads:?}",
            2 * spatial
        )));
    }
    if strides.contains(&0) || dilations.contains(&0) {
        return Err(cx.err(format!(
            "strides {strides:?} and dilations {dilations:?} must be >= 1"
        )));
    }
    Ok(())
}

/// X and W float, of one rank >= 3; returns the number of spatial axes.
fn conv_inputs(cx: &InferCx) -> Result<usize, IrError> {
    cx.float_input(0)?;
    cx.same_dtype(&[0, 1])?;
    let (x, w) = (cx.inputs[0].1, cx.inputs[1].1);
    if x.len() < 3 || w.len() != x.len() {
        return Err(cx.err(format!(
            "X {x:?} must be [N, C, D1..] and W {w:?} of the same rank"
        )));
    }
    Ok(x.len() - 2)
}

/// The optional bias is `[m]`.
fn check_bias(cx: &InferCx, m: usize) -> Result<(), IrError> {
    if cx.inputs.len() > 2 {
        cx.same_dtype(&[0, 2])?;
        if cx.inputs[2].1 != [m] {
            return Err(cx.err(format!("bias {:?} must be [{m}]", cx.inputs[2].1)));
        }
    }
    Ok(())
}

impl ConvAttrs {
    /// The groups a Conv over `c` input channels runs: `c` when depthwise, else `group`.
    pub fn groups(&self, c: usize) -> usize {
        if self.depthwise {
            c
        } else {
            self.group
        }
    }
}

impl OpSpec for ConvAttrs {
    fn name(&self) -> String {
        "Conv".into()
    }
    fn arity(&self) -> Arity {
        Arity::range(2, 3)
    }
    fn infer(&self, cx: &InferCx) -> Result<Vec<TypedShape>, IrError> {
        let spatial = conv_inputs(cx)?;
        check_lists(cx, spatial, &self.strides, &self.dilations, &self.pads)?;
        let (x, w) = (cx.inputs[0].1, cx.inputs[1].1);
        let g = self.groups(x[1]);
        if g == 0 || x[1] % g != 0 || w[0] % g != 0 || w[1] * g != x[1] {
            return Err(cx.err(format!(
                "X {x:?} and W {w:?} do not fit group {g} (W[1]·group must be C, M a multiple of group)"
            )));
        }
        check_bias(cx, w[0])?;
        let mut out = vec![x[0], w[0]];
        for i in 0..spatial {
            let pads = (self.pads[i], self.pads[spatial + i]);
            let e = window_out_extent(
                x[2 + i],
                w[2 + i],
                self.strides[i],
                self.dilations[i],
                pads,
                false,
            )
            .ok_or_else(|| {
                cx.err(format!(
                    "kernel {:?} (dilations {:?}) does not fit input {x:?} with pads {:?}",
                    &w[2..],
                    self.dilations,
                    self.pads
                ))
            })?;
            out.push(e);
        }
        Ok(vec![(cx.inputs[0].0, out)])
    }
    fn flops(&self, inputs: &[&[usize]], outputs: &[&[usize]]) -> u64 {
        let w = inputs.get(1).copied().unwrap_or(&[]);
        let per_out = numel(w) as u64 / w.first().copied().unwrap_or(1).max(1) as u64;
        2 * per_out * outputs.first().map_or(0, |s| numel(s) as u64)
    }
    fn partitioning(&self) -> Partitioning {
        Partitioning::Rules(&["conv-batch", "conv-column", "conv-row", "conv-depthwise"])
    }
}

impl OpSpec for ConvTransposeAttrs {
    fn name(&self) -> String {
        "ConvTranspose".into()
    }
    fn arity(&self) -> Arity {
        Arity::range(2, 3)
    }
    fn infer(&self, cx: &InferCx) -> Result<Vec<TypedShape>, IrError> {
        let spatial = conv_inputs(cx)?;
        let c = &self.conv;
        check_lists(cx, spatial, &c.strides, &c.dilations, &c.pads)?;
        if self.output_padding.len() != spatial {
            return Err(cx.err(format!(
                "output_padding {:?} needs {spatial} entries",
                self.output_padding
            )));
        }
        let (x, w) = (cx.inputs[0].1, cx.inputs[1].1);
        let g = c.group;
        if g == 0 || x[1] % g != 0 || w[0] != x[1] {
            return Err(cx.err(format!(
                "X {x:?} and W {w:?} do not fit group {g} (W[0] must be C, a multiple of group)"
            )));
        }
        let m = w[1] * g;
        check_bias(cx, m)?;
        let mut out = vec![x[0], m];
        for i in 0..spatial {
            let pads = (c.pads[i], c.pads[spatial + i]);
            let e = transpose_out_extent(
                x[2 + i],
                w[2 + i],
                c.strides[i],
                c.dilations[i],
                pads,
                self.output_padding[i],
            )
            .filter(|&e| e > 0)
            .ok_or_else(|| {
                cx.err(format!(
                    "pads {:?} leave no output of input {x:?} and kernel {:?}",
                    c.pads,
                    &w[2..]
                ))
            })?;
            out.push(e);
        }
        Ok(vec![(cx.inputs[0].0, out)])
    }
    fn flops(&self, inputs: &[&[usize]], _outputs: &[&[usize]]) -> u64 {
        let x = inputs.first().copied().unwrap_or(&[]);
        let w = inputs.get(1).copied().unwrap_or(&[]);
        let per_in = numel(w) as u64 / w.first().copied().unwrap_or(1).max(1) as u64;
        2 * per_in * numel(x) as u64
    }
    fn partitioning(&self) -> Partitioning {
        Partitioning::Rules(&["conv-batch"])
    }
}

impl OpSpec for PoolAttrs {
    fn name(&self) -> String {
        match self.kind {
            PoolKind::Max => "MaxPool",
            PoolKind::Average => "AveragePool",
        }
        .into()
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn infer(&self, cx: &InferCx) -> Result<Vec<TypedShape>, IrError> {
        let x = cx.inputs[0].1;
        if x.len() < 3 {
            return Err(cx.err(format!("X {x:?} must be [N, C, D1..]")));
        }
        let spatial = x.len() - 2;
        check_lists(cx, spatial, &self.strides, &self.dilations, &self.pads)?;
        if self.kernel.len() != spatial || self.kernel.contains(&0) {
            return Err(cx.err(format!(
                "kernel_shape {:?} needs {spatial} positive entries",
                self.kernel
            )));
        }
        let dtype = cx.inputs[0].0;
        if self.kind == PoolKind::Average || !dtype.is_int() {
            cx.float_input(0)?;
        }
        let mut out = x[..2].to_vec();
        for i in 0..spatial {
            let pads = (self.pads[i], self.pads[spatial + i]);
            if pads.0 >= self.kernel[i] || pads.1 >= self.kernel[i] {
                return Err(cx.err(format!(
                    "pads {:?} must be smaller than kernel_shape {:?}",
                    self.pads, self.kernel
                )));
            }
            let e = window_out_extent(
                x[2 + i],
                self.kernel[i],
                self.strides[i],
                self.dilations[i],
                pads,
                self.ceil_mode,
            )
            .ok_or_else(|| {
                cx.err(format!(
                    "kernel_shape {:?} (dilations {:?}) does not fit input {x:?} with pads {:?}",
                    self.kernel, self.dilations, self.pads
                ))
            })?;
            out.push(e);
        }
        Ok(vec![(dtype, out)])
    }
    fn flops(&self, _inputs: &[&[usize]], outputs: &[&[usize]]) -> u64 {
        numel(&self.kernel) as u64 * outputs.first().map_or(0, |s| numel(s) as u64)
    }
    fn partitioning(&self) -> Partitioning {
        Partitioning::Rules(&["pool-keep-split"])
    }
}
