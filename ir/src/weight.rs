//! Weights (initializers and large constants): metadata plus a lazy reference to the bytes.
use crate::{DType, Tensor};
use serde::{Deserialize, Serialize};

/// Where a weight's bytes live. The compiler never reads them; the runtime reads (or maps)
/// only the slice each rank needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WeightData {
    /// Little-endian raw bytes inside a file: the ONNX model itself (raw_data of an
    /// initializer) or an external-data file. `path` is relative to the model's folder and
    /// confined to it (no absolute path, no `..`, no link out of the folder; see
    /// [`crate::files::confine`]), at import and whenever the bytes are read.
    File {
        /// File path.
        path: String,
        /// Byte offset of the first element.
        offset: u64,
        /// Byte length (numel × dtype size).
        length: u64,
    },
    /// A small tensor held in memory and serialised with the plan (folded constants,
    /// initializers stored as typed fields rather than raw bytes).
    Inline {
        /// The value.
        tensor: Tensor,
    },
}

/// A weight tensor of the graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Weight {
    /// Initializer name in the source model.
    pub name: String,
    /// Element type as stored.
    pub dtype: DType,
    /// Shape.
    pub shape: Vec<usize>,
    /// Where the bytes are.
    pub data: WeightData,
}

impl Weight {
    /// Size in bytes.
    pub fn size_bytes(&self) -> usize {
        crate::numel(&self.shape) * self.dtype.size_bytes()
    }

    /// The in-memory value, if this weight is inline.
    pub fn inline(&self) -> Option<&Tensor> {
        match &self.data {
            WeightData::Inline { tensor } => Some(tensor),
            WeightData::File { .. } => None,
        }
    }
}
