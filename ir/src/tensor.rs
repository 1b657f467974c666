//! Host tensors: what constant folding and the CPU executors compute on.
use crate::{checked_numel, numel, DType, IrError};
use serde::{Deserialize, Serialize};

/// Element storage of a host tensor. Floats compute as f32, integers as i64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TensorData {
    /// Float elements (f32/f16/bf16/f64 dtypes). In JSON, NaN and ±infinity are the
    /// strings `"NaN"`, `"inf"`, `"-inf"` (JSON numbers cannot hold them).
    F32(#[serde(with = "crate::nonfinite")] Vec<f32>),
    /// Integer elements (i64/i32/i16/i8/u8 dtypes).
    I64(Vec<i64>),
    /// Boolean elements.
    Bool(Vec<bool>),
}

impl TensorData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::Bool(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A dense row-major host tensor with a logical dtype.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    /// Logical element type.
    pub dtype: DType,
    /// Static shape.
    pub shape: Vec<usize>,
    /// Elements, row-major.
    pub data: TensorData,
}

impl Tensor {
    /// Builds a tensor, checking that the element count and storage class match.
    pub fn new(dtype: DType, shape: Vec<usize>, data: TensorData) -> Result<Tensor, IrError> {
        let ok_class = match (&data, dtype) {
            (TensorData::F32(_), d) => d.is_float(),
            (TensorData::I64(_), d) => d.is_int(),
            (TensorData::Bool(_), d) => d == DType::Bool,
        };
        if !ok_class {
            return Err(IrError::Tensor {
                name: String::new(),
                msg: format!("storage does not match dtype {dtype}"),
            });
        }
        if checked_numel(&shape) != Some(data.len()) {
            return Err(IrError::Tensor {
                name: String::new(),
                msg: format!("{} elements for shape {:?}", data.len(), shape),
            });
        }
        Ok(Tensor { dtype, shape, data })
    }

    /// An f32 tensor.
    pub fn f32(shape: Vec<usize>, v: Vec<f32>) -> Tensor {
        assert_eq!(numel(&shape), v.len(), "Tensor::f32: element count");
        Tensor {
            dtype: DType::F32,
            shape,
            data: TensorData::F32(v),
        }
    }

    /// An i64 tensor.
    pub fn i64(shape: Vec<usize>, v: Vec<i64>) -> Tensor {
        assert_eq!(numel(&shape), v.len(), "Tensor::i64: element count");
        Tensor {
            dtype: DType::I64,
            shape,
            data: TensorData::I64(v),
        }
    }

    /// A bool tensor.
    pub fn bool(shape: Vec<usize>, v: Vec<bool>) -> Tensor {
        assert_eq!(numel(&shape), v.len(), "Tensor::bool: element count");
        Tensor {
            dtype: DType::Bool,
            shape,
            data: TensorData::Bool(v),
        }
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// f32 elements, if stored as floats.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }

    /// i64 elements, if stored as integers.
    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            TensorData::I64(v) => Some(v),
            _ => None,
        }
    }

    /// bool elements, if stored as booleans.
    pub fn as_bool(&self) -> Option<&[bool]> {
        match &self.data {
            TensorData::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// Elements converted to i64 (floats truncated, bools 0/1): for shape-like constants.
    pub fn to_i64_vec(&self) -> Vec<i64> {
        match &self.data {
            TensorData::F32(v) => v.iter().map(|x| *x as i64).collect(),
            TensorData::I64(v) => v.clone(),
            TensorData::Bool(v) => v.iter().map(|x| *x as i64).collect(),
        }
    }

    /// Elements converted to f64 (for comparisons in tests and checks).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match &self.data {
            TensorData::F32(v) => v.iter().map(|x| *x as f64).collect(),
            TensorData::I64(v) => v.iter().map(|x| *x as f64).collect(),
            TensorData::Bool(v) => v.iter().map(|x| *x as u8 as f64).collect(),
        }
    }

    /// Size in bytes under the logical dtype.
    pub fn size_bytes(&self) -> usize {
        self.numel().saturating_mul(self.dtype.size_bytes())
    }
}
