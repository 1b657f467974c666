//! Tessera compiler: ONNX import (parse → fold constants/shapes → infer → validate), the
//! e-graph partitioner and its cost model, and DOT rendering.
#![warn(missing_docs)]
// Module docs describe the import phases and search internals by linking their private
// items; that is deliberate (the docs are for contributors too).
#![allow(rustdoc::private_intra_doc_links)]

pub mod canon;
pub mod cost;
pub mod onnx;
pub mod partition;
pub mod report;
