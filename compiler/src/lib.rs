//! Tessera compiler: ONNX import (parse → fold constants/shapes → infer → validate), the
//! e-graph partitioner and its cost model, and DOT rendering.
#![warn(missing_docs)]

pub mod cost;
pub mod onnx;
pub mod partition;
