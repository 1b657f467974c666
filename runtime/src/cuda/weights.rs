//! Where the CUDA executor gets host weights from, and host-side slicing.
//!
//! [`WeightSource`] is implemented by the runtime's mmap-backed
//! [`crate::weights::WeightStore`] (which slices while reading), by [`InlineWeights`]
//! (plans whose weights are all inline) and by [`NamedWeights`] (a map from initializer
//! name to tensor, for tests and tools).
use super::CudaError;
use std::collections::BTreeMap;
use tessera_ir::plan::AxisSlice;
use tessera_ir::{Tensor, TensorData, Weight, WeightData};

/// A provider of weight values (f32 for float weights, as host [`Tensor`]s store them).
pub trait WeightSource {
    /// The value of `weight`, or only `slice` of it.
    fn load_weight(&self, weight: &Weight, slice: Option<&AxisSlice>) -> Result<Tensor, CudaError>;
}

/// Serves inline weights only; file-backed weights are an error naming the weight.
#[derive(Debug, Clone, Copy, Default)]
pub struct InlineWeights;

impl WeightSource for InlineWeights {
    fn load_weight(&self, weight: &Weight, slice: Option<&AxisSlice>) -> Result<Tensor, CudaError> {
        match &weight.data {
            WeightData::Inline { tensor } => maybe_slice(tensor, slice),
            WeightData::File { path, .. } => Err(CudaError::Plan(format!(
                "weight '{}' lives in '{path}'; use a weight store that reads model files",
                weight.name
            ))),
        }
    }
}

/// Weights by initializer name (inline weights are served from the plan as well).
#[derive(Debug, Clone, Default)]
pub struct NamedWeights(pub BTreeMap<String, Tensor>);

impl WeightSource for NamedWeights {
    fn load_weight(&self, weight: &Weight, slice: Option<&AxisSlice>) -> Result<Tensor, CudaError> {
        match self.0.get(&weight.name) {
            Some(t) => maybe_slice(t, slice),
            None => InlineWeights.load_weight(weight, slice),
        }
    }
}

impl WeightSource for crate::weights::WeightStore {
    /// Reads (mmap) only the requested slice, converting f16/bf16 to f32.
    fn load_weight(&self, weight: &Weight, slice: Option<&AxisSlice>) -> Result<Tensor, CudaError> {
        self.load(weight, slice)
            .map_err(|e| CudaError::Plan(e.to_string()))
    }
}

fn maybe_slice(t: &Tensor, slice: Option<&AxisSlice>) -> Result<Tensor, CudaError> {
    match slice {
        None => Ok(t.clone()),
        Some(s) => host_slice(t, s),
    }
}

/// `[s.start, s.end)` of axis `s.axis` of a host tensor.
pub fn host_slice(t: &Tensor, s: &AxisSlice) -> Result<Tensor, CudaError> {
    if s.axis >= t.shape.len() || s.start > s.end || s.end > t.shape[s.axis] {
        return Err(CudaError::Plan(format!(
            "slice {}..{} of axis {} of shape {:?}",
            s.start, s.end, s.axis, t.shape
        )));
    }
    let outer: usize = t.shape[..s.axis].iter().product();
    let extent = t.shape[s.axis];
    let inner: usize = t.shape[s.axis + 1..].iter().product();
    fn take<T: Copy>(v: &[T], outer: usize, extent: usize, inner: usize, s: &AxisSlice) -> Vec<T> {
        let mut out = Vec::with_capacity(outer * (s.end - s.start) * inner);
        for o in 0..outer {
            out.extend_from_slice(&v[(o * extent + s.start) * inner..(o * extent + s.end) * inner]);
        }
        out
    }
    let data = match &t.data {
        TensorData::F32(v) => TensorData::F32(take(v, outer, extent, inner, s)),
        TensorData::I64(v) => TensorData::I64(take(v, outer, extent, inner, s)),
        TensorData::Bool(v) => TensorData::Bool(take(v, outer, extent, inner, s)),
    };
    let mut shape = t.shape.clone();
    shape[s.axis] = s.end - s.start;
    Tensor::new(t.dtype, shape, data).map_err(|e| CudaError::Plan(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ir::DType;

    #[test]
    fn slices_the_middle_axis() {
        let t = Tensor::f32(vec![2, 3, 2], (0..12).map(|i| i as f32).collect());
        let s = host_slice(
            &t,
            &AxisSlice {
                axis: 1,
                start: 1,
                end: 3,
            },
        )
        .unwrap();
        assert_eq!(s.shape, vec![2, 2, 2]);
        assert_eq!(s.as_f32().unwrap(), &[2., 3., 4., 5., 8., 9., 10., 11.]);
        assert!(host_slice(
            &t,
            &AxisSlice {
                axis: 1,
                start: 2,
                end: 4
            }
        )
        .is_err());
    }

    #[test]
    fn inline_and_named_sources() {
        let inline = Weight {
            name: "w".into(),
            dtype: DType::I64,
            shape: vec![4],
            data: WeightData::Inline {
                tensor: Tensor::i64(vec![4], vec![1, 2, 3, 4]),
            },
        };
        let got = InlineWeights
            .load_weight(
                &inline,
                Some(&AxisSlice {
                    axis: 0,
                    start: 2,
                    end: 4,
                }),
            )
            .unwrap();
        assert_eq!(got.as_i64().unwrap(), &[3, 4]);
        let file = Weight {
            name: "big".into(),
            dtype: DType::F32,
            shape: vec![2],
            data: WeightData::File {
                path: "m.onnx".into(),
                offset: 0,
                length: 8,
            },
        };
        assert!(InlineWeights
            .load_weight(&file, None)
            .unwrap_err()
            .to_string()
            .contains("'big'"));
        let named = NamedWeights(
            [("big".to_string(), Tensor::f32(vec![2], vec![5.0, 6.0]))]
                .into_iter()
                .collect(),
        );
        assert_eq!(
            named.load_weight(&file, None).unwrap().as_f32().unwrap(),
            &[5.0, 6.0]
        );
    }
}
