//! Checked tensor sizes and the cap on any single tensor.
//!
//! Every place that multiplies a shape out (shape inference, constant folding, plan
//! validation, `--shape`) goes through [`checked_numel`] / [`checked_bytes`] or
//! [`check_tensor_size`], so a huge or overflowing shape is a clear error *before* anything
//! is allocated, never a wrapped count or an allocation abort.
use crate::DType;
use thiserror::Error;

/// The largest size in bytes of any single tensor: 2^34 bytes = 16 GiB. Larger tensors are
/// refused by shape inference, constant folding, `--shape` and plan validation.
pub const MAX_TENSOR_BYTES: usize = 1 << 34;

/// The most devices a plan may span (`tessera compile --devices`, the product of `--mesh`,
/// a plan's mesh): partitioning and running hold per-rank state, so an absurd count would
/// exhaust memory before failing.
pub const MAX_DEVICES: usize = 4096;

/// Why a shape's size is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SizeError {
    /// The element count or byte size does not fit in a `usize`.
    #[error("shape {shape:?} of {dtype} overflows the element count")]
    Overflow {
        /// The shape.
        shape: Vec<usize>,
        /// Its element type.
        dtype: DType,
    },
    /// The tensor is larger than [`MAX_TENSOR_BYTES`].
    #[error(
        "shape {shape:?} of {dtype} is {bytes} bytes, over the cap of {} bytes (16 GiB) per tensor",
        MAX_TENSOR_BYTES
    )]
    OverCap {
        /// The shape.
        shape: Vec<usize>,
        /// Its element type.
        dtype: DType,
        /// Its size in bytes.
        bytes: usize,
    },
}

/// Number of elements of `shape` (1 for a scalar), `None` when it overflows a `usize`. A
/// shape with a zero dim has 0 elements whatever its other dims.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    if shape.contains(&0) {
        return Some(0);
    }
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// Size in bytes of a `dtype` tensor of `shape`, `None` when it overflows a `usize`.
pub fn checked_bytes(shape: &[usize], dtype: DType) -> Option<usize> {
    checked_numel(shape)?.checked_mul(dtype.size_bytes())
}

/// The size in bytes of a `dtype` tensor of `shape`, checked against overflow and against
/// [`MAX_TENSOR_BYTES`].
pub fn check_tensor_size(shape: &[usize], dtype: DType) -> Result<usize, SizeError> {
    let bytes = checked_bytes(shape, dtype).ok_or_else(|| SizeError::Overflow {
        shape: shape.to_vec(),
        dtype,
    })?;
    if bytes > MAX_TENSOR_BYTES {
        return Err(SizeError::OverCap {
            shape: shape.to_vec(),
            dtype,
            bytes,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_caps() {
        assert_eq!(checked_numel(&[]), Some(1));
        assert_eq!(checked_numel(&[2, 3]), Some(6));
        assert_eq!(checked_numel(&[1 << 62, 1 << 62]), None);
        assert_eq!(checked_numel(&[1 << 62, 0, 1 << 62]), Some(0));
        assert_eq!(checked_bytes(&[1 << 62], DType::F32), None);
        assert_eq!(check_tensor_size(&[4, 4], DType::F32), Ok(64));
        assert_eq!(check_tensor_size(&[1 << 32], DType::F32), Ok(1 << 34));
        let e = check_tensor_size(&[1 << 32, 2], DType::F32).unwrap_err();
        assert!(
            e.to_string()
                .contains("[4294967296, 2] of f32 is 34359738368 bytes"),
            "{e}"
        );
        let e = check_tensor_size(&[1 << 62, 4], DType::I64).unwrap_err();
        assert!(e.to_string().contains("overflows"), "{e}");
    }
}
