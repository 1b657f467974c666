//! `TensorProto` → host [`Tensor`] (for constants and folding) or [`Weight`] (initializers,
//! referenced by file offset without copying bytes).
use super::offsets::RawSpan;
use super::ImportError;
use onnx_protobuf::tensor_proto::DataLocation;
use onnx_protobuf::TensorProto;
use std::path::Path;
use tessera_ir::files;
use tessera_ir::{numel, DType, Tensor, TensorData, Weight, WeightData};

/// The dtype and shape a `TensorProto` declares; a negative dim or a size that overflows or
/// exceeds [`tessera_ir::MAX_TENSOR_BYTES`] is an error naming the tensor.
pub(crate) fn dtype_and_shape(
    t: &TensorProto,
    name: &str,
) -> Result<(DType, Vec<usize>), ImportError> {
    let dtype = DType::from_onnx_code(t.data_type)
        .or_else(|| packed_type(t.data_type).map(|(d, _)| d))
        .ok_or_else(|| {
            ImportError::tensor(
                name,
                format!(
                    "unsupported ONNX data type {} ({})",
                    DType::onnx_code_name(t.data_type),
                    t.data_type
                ),
            )
        })?;
    let shape = t
        .dims
        .iter()
        .map(|&d| {
            usize::try_from(d)
                .map_err(|_| ImportError::tensor(name, format!("negative dim in {:?}", t.dims)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Checked before any size is computed from the dims (they may overflow a usize).
    tessera_ir::check_tensor_size(&shape, dtype)
        .map_err(|e| ImportError::tensor(name, e.to_string()))?;
    Ok((dtype, shape))
}

/// ONNX's sub-byte integer types as (the 8-bit dtype whose values they take, bits per
/// element): UINT4 (21) and INT4 (22), stored two per byte, low nibble first.
pub(crate) fn packed_type(code: i32) -> Option<(DType, u8)> {
    match code {
        21 => Some((DType::U8, 4)),
        22 => Some((DType::I8, 4)),
        _ => None,
    }
}

/// The `n` 4-bit values of `bytes` (low nibble first), sign-extended when `signed`.
fn unpack4(bytes: impl Iterator<Item = u8>, signed: bool, n: usize) -> Vec<i64> {
    bytes
        .flat_map(|b| [b & 0xF, b >> 4])
        .take(n)
        .map(|v| {
            if signed {
                (((v << 4) as i8) >> 4) as i64
            } else {
                v as i64
            }
        })
        .collect()
}

/// True when the tensor's bytes live in an external file.
pub(crate) fn is_external(t: &TensorProto) -> bool {
    t.data_location.enum_value() == Ok(DataLocation::EXTERNAL)
}

/// Decodes a tensor held in the model (raw_data or typed fields) into a host tensor; `name`
/// names it in errors. Exported as `onnx::decode_tensor_proto`.
pub fn decode(t: &TensorProto, name: &str) -> Result<Tensor, ImportError> {
    let (dtype, shape) = dtype_and_shape(t, name)?;
    if is_external(t) {
        return Err(ImportError::tensor(
            name,
            "data is stored externally and cannot be folded",
        ));
    }
    let n = numel(&shape);
    if let Some((_, bits)) = packed_type(t.data_type) {
        let signed = dtype == DType::I8;
        let bytes = if t.raw_data.is_empty() {
            // Typed storage: int32_data holds one packed byte per element.
            unpack4(t.int32_data.iter().map(|&x| x as u8), signed, n)
        } else {
            unpack4(t.raw_data.iter().copied(), signed, n)
        };
        let stored = if t.raw_data.is_empty() {
            t.int32_data.len()
        } else {
            t.raw_data.len()
        };
        if stored != (n * bits as usize).div_ceil(8) {
            return Err(ImportError::tensor(
                name,
                format!("{stored} bytes stored for {bits}-bit {dtype} {shape:?}"),
            ));
        }
        return Tensor::new(dtype, shape, TensorData::I64(bytes))
            .map_err(|e| ImportError::tensor(name, e.to_string()));
    }
    let data = if !t.raw_data.is_empty() {
        decode_raw(&t.raw_data, dtype, n).ok_or_else(|| {
            ImportError::tensor(
                name,
                format!(
                    "raw_data has {} bytes, expected {} for {dtype} {shape:?}",
                    t.raw_data.len(),
                    n * dtype.size_bytes()
                ),
            )
        })?
    } else {
        decode_typed(t, dtype)
    };
    if data.len() != n {
        return Err(ImportError::tensor(
            name,
            format!("{} elements stored for shape {shape:?}", data.len()),
        ));
    }
    Tensor::new(dtype, shape, data).map_err(|e| ImportError::tensor(name, e.to_string()))
}

fn decode_raw(raw: &[u8], dtype: DType, n: usize) -> Option<TensorData> {
    let size = dtype.size_bytes();
    if raw.len() != n * size {
        return None;
    }
    let chunks = raw.chunks_exact(size);
    let b2 = |c: &[u8]| [c[0], c[1]];
    let b4 = |c: &[u8]| [c[0], c[1], c[2], c[3]];
    let b8 = |c: &[u8]| [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]];
    Some(match dtype {
        DType::F32 => TensorData::F32(chunks.map(|c| f32::from_le_bytes(b4(c))).collect()),
        DType::F64 => TensorData::F32(chunks.map(|c| f64::from_le_bytes(b8(c)) as f32).collect()),
        DType::F16 => TensorData::F32(
            chunks
                .map(|c| half::f16::from_le_bytes(b2(c)).to_f32())
                .collect(),
        ),
        DType::BF16 => TensorData::F32(
            chunks
                .map(|c| half::bf16::from_le_bytes(b2(c)).to_f32())
                .collect(),
        ),
        DType::I64 => TensorData::I64(chunks.map(|c| i64::from_le_bytes(b8(c))).collect()),
        DType::I32 => TensorData::I64(chunks.map(|c| i32::from_le_bytes(b4(c)) as i64).collect()),
        DType::I16 => TensorData::I64(chunks.map(|c| i16::from_le_bytes(b2(c)) as i64).collect()),
        DType::I8 => TensorData::I64(raw.iter().map(|&b| b as i8 as i64).collect()),
        DType::U8 => TensorData::I64(raw.iter().map(|&b| b as i64).collect()),
        DType::Bool => TensorData::Bool(raw.iter().map(|&b| b != 0).collect()),
    })
}

fn decode_typed(t: &TensorProto, dtype: DType) -> TensorData {
    match dtype {
        DType::F32 => TensorData::F32(t.float_data.clone()),
        DType::F64 => TensorData::F32(t.double_data.iter().map(|&x| x as f32).collect()),
        // f16/bf16 are stored as their bit patterns in int32_data.
        DType::F16 => TensorData::F32(
            t.int32_data
                .iter()
                .map(|&x| half::f16::from_bits(x as u16).to_f32())
                .collect(),
        ),
        DType::BF16 => TensorData::F32(
            t.int32_data
                .iter()
                .map(|&x| half::bf16::from_bits(x as u16).to_f32())
                .collect(),
        ),
        DType::I64 => TensorData::I64(t.int64_data.clone()),
        DType::I32 | DType::I16 | DType::I8 | DType::U8 => {
            TensorData::I64(t.int32_data.iter().map(|&x| x as i64).collect())
        }
        DType::Bool => TensorData::Bool(t.int32_data.iter().map(|&x| x != 0).collect()),
    }
}

/// Builds the weight for an initializer: file-backed when its bytes are `raw_data` in the
/// model (`raw` is the span found by the wire walk) or external data, inline otherwise.
/// `file` is the model's file name (the path `raw_data` weights record); `model`, when the
/// model is a file on disk, is its path, to which external data is confined: its location
/// must be relative without `..` (always checked) and resolve to a regular file inside the
/// model's folder (checked when `model` is given).
pub(crate) fn initializer_weight(
    t: &TensorProto,
    file: &str,
    model: Option<&Path>,
    raw: Option<RawSpan>,
) -> Result<Weight, ImportError> {
    let name = t.name.as_str();
    let (dtype, shape) = dtype_and_shape(t, name)?;
    let packed_bits = packed_type(t.data_type).map(|(_, b)| b);
    let expected = match packed_bits {
        Some(b) => (numel(&shape) * b as usize).div_ceil(8),
        None => numel(&shape) * dtype.size_bytes(),
    } as u64;
    let data = if is_external(t) {
        let data = external_location(t, expected)?;
        if let WeightData::File { path, .. } = &data {
            confine_location(name, path, file, model)?;
        }
        data
    } else if !t.raw_data.is_empty() {
        let (offset, length) =
            raw.ok_or_else(|| ImportError::tensor(name, "raw_data offset not found in the file"))?;
        if length != expected {
            return Err(ImportError::tensor(
                name,
                format!("raw_data has {length} bytes, expected {expected} for {dtype} {shape:?}"),
            ));
        }
        WeightData::File {
            path: file.into(),
            offset,
            length,
        }
    } else {
        WeightData::Inline {
            tensor: decode(t, name)?,
        }
    };
    // Inline tensors hold their values unpacked; file bytes stay packed.
    let packed_bits = packed_bits.filter(|_| matches!(data, WeightData::File { .. }));
    Ok(Weight {
        perm: None,
        packed_bits,
        name: name.into(),
        dtype,
        shape,
        data,
        quant: None,
    })
}

/// Refuses an external-data `location` of initializer `name` that may read outside the
/// folder of the model (`file`, at `model` when on disk); see [`initializer_weight`].
fn confine_location(
    name: &str,
    location: &str,
    file: &str,
    model: Option<&Path>,
) -> Result<(), ImportError> {
    let refused = |msg: String| ImportError::ExternalData {
        name: name.into(),
        location: location.into(),
        file: model.map_or_else(|| file.to_string(), |m| m.display().to_string()),
        msg,
    };
    match model {
        Some(m) => files::confine(files::dir_of(m), location, Some(m)).map(|_| ()),
        None => files::check_location(location).map(|_| ()),
    }
    .map_err(|e| refused(e.to_string()))
}

fn external_location(t: &TensorProto, expected: u64) -> Result<WeightData, ImportError> {
    let name = t.name.as_str();
    let (mut path, mut offset, mut length) = (None, 0u64, None);
    for kv in &t.external_data {
        let num = |v: &str| {
            v.parse::<u64>().map_err(|_| {
                ImportError::tensor(
                    name,
                    format!("external_data {} = '{v}' is not a number", kv.key),
                )
            })
        };
        match kv.key.as_str() {
            "location" => path = Some(kv.value.clone()),
            "offset" => offset = num(&kv.value)?,
            "length" => length = Some(num(&kv.value)?),
            _ => {}
        }
    }
    let path = path.ok_or_else(|| ImportError::tensor(name, "external data without a location"))?;
    let length = length.unwrap_or(expected);
    if length != expected {
        return Err(ImportError::tensor(
            name,
            format!(
                "external data length {length} differs from the {expected} bytes its shape needs"
            ),
        ));
    }
    Ok(WeightData::File {
        path,
        offset,
        length,
    })
}
