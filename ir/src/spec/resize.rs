//! Resize (<https://onnx.ai/onnx/operators/onnx__Resize.html>): nearest, N-linear and cubic
//! interpolation of some axes, with static output extents and scales.
//!
//! Cost: per output element, the filter taps of every resized axis (one for nearest, 2 for
//! linear, 4 for cubic, wider with antialias). Partitioning: a split of an axis that is not
//! resized is kept (`resize-keep-split`: batch and channels of an upsampling).
use super::{Arity, OpSpec, Partitioning};
use crate::infer::{InferCx, TypedShape};
use crate::numel;
use crate::op::{ResizeAttrs, ResizeCoord, ResizeMode};
use crate::IrError;

impl ResizeAttrs {
    /// Filter taps along one resized axis of scale `scale`.
    pub fn taps(&self, scale: f64) -> usize {
        let base = match self.mode {
            ResizeMode::Nearest => return 1,
            ResizeMode::Linear => 2.0,
            ResizeMode::Cubic => 4.0,
        };
        if self.antialias && scale < 1.0 {
            (base / scale).ceil() as usize + 1
        } else {
            base as usize
        }
    }
}

impl OpSpec for ResizeAttrs {
    fn name(&self) -> String {
        "Resize".into()
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn infer(&self, cx: &InferCx) -> Result<Vec<TypedShape>, IrError> {
        let (dtype, x) = cx.input(0);
        let n = self.axes.len();
        if self.sizes.len() != n || self.scales.len() != n {
            return Err(cx.err(format!(
                "axes {:?}, sizes {:?} and scales {:?} differ in length",
                self.axes, self.sizes, self.scales
            )));
        }
        if self.axes.windows(2).any(|w| w[0] >= w[1]) {
            return Err(cx.err(format!("axes {:?} must ascend", self.axes)));
        }
        let crop = self.coord == ResizeCoord::TfCropAndResize;
        if self.roi.len() != if crop { 2 * n } else { 0 } {
            return Err(cx.err(format!(
                "roi {:?} needs {} entries",
                self.roi,
                if crop { 2 * n } else { 0 }
            )));
        }
        if let Some(s) = self.scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(cx.err(format!("scale {s} must be finite and positive")));
        }
        if let Some(r) = self.roi.iter().find(|r| !r.is_finite()) {
            return Err(cx.err(format!("roi {r} must be finite")));
        }
        if self.mode != ResizeMode::Nearest {
            cx.float_input(0)?;
        }
        let mut out = x.clone();
        for (&a, &size) in self.axes.iter().zip(&self.sizes) {
            cx.axis_in_range(a, x.len())?;
            if x[a] == 0 && size > 0 {
                return Err(cx.err(format!("axis {a} of {x:?} is empty but resized to {size}")));
            }
            out[a] = size;
        }
        Ok(vec![(dtype, out)])
    }
    fn flops(&self, _inputs: &[&[usize]], outputs: &[&[usize]]) -> u64 {
        let taps: usize = self.scales.iter().map(|&s| self.taps(s)).sum();
        2 * taps.max(1) as u64 * outputs.first().map_or(0, |s| numel(s) as u64)
    }
    fn partitioning(&self) -> Partitioning {
        Partitioning::Rules(&["resize-keep-split"])
    }
}
