//! Byte offsets of initializer `raw_data` inside the model file, found by walking the
//! protobuf wire format (ModelProto.graph = 7 → GraphProto.initializer = 5 →
//! TensorProto.name = 8 / raw_data = 9) without copying any tensor bytes.
use protobuf::rt::WireType;
use protobuf::CodedInputStream;
use std::collections::HashMap;

/// `(offset, length)` of a `raw_data` field.
pub(crate) type RawSpan = (u64, u64);

const MODEL_GRAPH: u32 = 7;
const GRAPH_INITIALIZER: u32 = 5;
const TENSOR_NAME: u32 = 8;
const TENSOR_RAW_DATA: u32 = 9;

/// Maps initializer name → span of its `raw_data` in `bytes`.
pub(crate) fn raw_data_offsets(bytes: &[u8]) -> protobuf::Result<HashMap<String, RawSpan>> {
    let mut out = HashMap::new();
    let mut is = CodedInputStream::from_bytes(bytes);
    walk_fields(&mut is, |is, field, wt| {
        if field == MODEL_GRAPH && wt == WireType::LengthDelimited {
            within(is, |is| {
                walk_fields(is, |is, field, wt| {
                    if field == GRAPH_INITIALIZER && wt == WireType::LengthDelimited {
                        within(is, |is| {
                            if let (Some(name), Some(span)) = tensor_name_and_raw(is)? {
                                out.insert(name, span);
                            }
                            Ok(())
                        })
                    } else {
                        is.skip_field(wt)
                    }
                })
            })
        } else {
            is.skip_field(wt)
        }
    })?;
    Ok(out)
}

/// Calls `f(stream, field number, wire type)` for every field until the current limit.
/// `f` must consume the field's value.
fn walk_fields(
    is: &mut CodedInputStream,
    mut f: impl FnMut(&mut CodedInputStream, u32, WireType) -> protobuf::Result<()>,
) -> protobuf::Result<()> {
    while let Some(tag) = is.read_raw_tag_or_eof()? {
        let wt = WireType::new(tag & 7).ok_or_else(|| {
            protobuf::Error::from(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "bad wire type",
            ))
        })?;
        f(is, tag >> 3, wt)?;
    }
    Ok(())
}

/// Reads a length prefix and runs `f` inside that sub-message.
fn within(
    is: &mut CodedInputStream,
    f: impl FnOnce(&mut CodedInputStream) -> protobuf::Result<()>,
) -> protobuf::Result<()> {
    let len = is.read_raw_varint64()?;
    let old = is.push_limit(len)?;
    f(is)?;
    is.pop_limit(old);
    Ok(())
}

fn tensor_name_and_raw(
    is: &mut CodedInputStream,
) -> protobuf::Result<(Option<String>, Option<RawSpan>)> {
    let (mut name, mut span) = (None, None);
    walk_fields(is, |is, field, wt| match (field, wt) {
        (TENSOR_NAME, WireType::LengthDelimited) => {
            name = Some(is.read_string()?);
            Ok(())
        }
        (TENSOR_RAW_DATA, WireType::LengthDelimited) => {
            let len = is.read_raw_varint64()?;
            span = Some((is.pos(), len));
            skip_bytes(is, len)
        }
        _ => is.skip_field(wt),
    })?;
    Ok((name, span))
}

fn skip_bytes(is: &mut CodedInputStream, mut len: u64) -> protobuf::Result<()> {
    while len > 0 {
        let step = len.min(u32::MAX as u64);
        is.skip_raw_bytes(step as u32)?;
        len -= step;
    }
    Ok(())
}
