//! A pre-parse walk of the protobuf wire format that rejects what the `protobuf` crate
//! would crash on instead of reporting.
//!
//! `protobuf` 3.4 (the version `onnx-protobuf` is generated against) skips an unknown
//! *group* field by recursing once per nested group with no depth limit
//! (RUSTSEC-2024-0437), so a few megabytes of `0x0b` bytes overflow the stack and abort the
//! process. ONNX never writes groups (its schema is proto3-style), so a group can only be an
//! unknown field; this walk follows the `ModelProto` schema ([`Msg::field`], the message
//! fields `onnx-protobuf` 0.2.3's generated decoder descends into) into every message the
//! decoder will parse, and rejects a group
//! nested deeper than [`MAX_GROUP_DEPTH`] or a message nested deeper than
//! [`MAX_MESSAGE_DEPTH`] (the decoder's own limit), naming the byte offset. Everything it
//! accepts, protobuf parses without deep recursion. It reads only tags and length
//! prefixes: tensor bytes are skipped, not read.

/// Deepest nesting of unknown groups accepted (protobuf skips them recursively).
pub(crate) const MAX_GROUP_DEPTH: usize = 32;
/// Deepest nesting of messages accepted: protobuf's default recursion limit.
pub(crate) const MAX_MESSAGE_DEPTH: usize = 100;

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

/// Checks `bytes` as an encoded `ModelProto`; the error is a one-line reason.
pub(crate) fn check_model(bytes: &[u8]) -> Result<(), String> {
    let mut r = Reader { bytes, pos: 0 };
    walk(&mut r, bytes.len(), Msg::Model, 1)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    /// Reads a varint that ends before `end`.
    fn varint(&mut self, end: usize) -> Result<u64, String> {
        let start = self.pos;
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.bytes.get(self.pos).filter(|_| self.pos < end) else {
                return Err(format!(
                    "a varint at byte {start} runs past the end of its message"
                ));
            };
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("varint longer than 10 bytes at byte {start}"))
    }

    /// Moves `n` bytes on, not past `end`.
    fn skip(&mut self, n: u64, end: usize, what: &str) -> Result<(), String> {
        let at = self.pos;
        match usize::try_from(n).ok().and_then(|n| at.checked_add(n)) {
            Some(to) if to <= end => {
                self.pos = to;
                Ok(())
            }
            _ if at as u128 + n as u128 > self.bytes.len() as u128 => Err(format!(
                "{what} at byte {at} runs past the end of the file ({n} bytes, {} left): \
                 the file may be truncated",
                end.saturating_sub(at)
            )),
            _ => Err(format!(
                "{what} at byte {at} runs past the end of its message ({n} bytes, {} left)",
                end.saturating_sub(at)
            )),
        }
    }

    /// Skips the value of a field of `wire` type other than a group.
    fn skip_value(&mut self, wire: u8, end: usize) -> Result<(), String> {
        match wire {
            VARINT => self.varint(end).map(|_| ()),
            FIXED64 => self.skip(8, end, "a fixed64 field"),
            FIXED32 => self.skip(4, end, "a fixed32 field"),
            LEN => {
                let n = self.varint(end)?;
                self.skip(n, end, "a length-delimited field")
            }
            _ => Err(format!("wire type {wire} at byte {}", self.pos)),
        }
    }

    /// Reads a tag: (field number, wire type).
    fn tag(&mut self, end: usize) -> Result<(u64, u8), String> {
        let at = self.pos;
        let tag = self.varint(end)?;
        let wire = (tag & 7) as u8;
        if wire > FIXED32 {
            return Err(format!("invalid wire type {wire} at byte {at}"));
        }
        Ok((tag >> 3, wire))
    }

    /// Skips the rest of a group whose start tag was just read, iteratively.
    fn skip_group(&mut self, end: usize, in_message: &str) -> Result<(), String> {
        let start = self.pos;
        let mut depth = 1usize;
        while depth > 0 {
            if self.pos >= end {
                return Err(format!(
                    "unterminated protobuf group starting at byte {start} in {in_message}"
                ));
            }
            let (_, wire) = self.tag(end)?;
            match wire {
                START_GROUP => {
                    depth += 1;
                    if depth > MAX_GROUP_DEPTH {
                        return Err(format!(
                            "protobuf groups nested more than {MAX_GROUP_DEPTH} deep at byte \
                             {} in {in_message} (ONNX files never contain groups)",
                            self.pos
                        ));
                    }
                }
                END_GROUP => depth -= 1,
                w => self.skip_value(w, end)?,
            }
        }
        Ok(())
    }
}

/// Walks the fields of one `msg` between the reader's position and `end`.
fn walk(r: &mut Reader, end: usize, msg: Msg, depth: usize) -> Result<(), String> {
    if depth > MAX_MESSAGE_DEPTH {
        return Err(format!(
            "messages nested more than {MAX_MESSAGE_DEPTH} deep at byte {} ({})",
            r.pos,
            msg.name()
        ));
    }
    while r.pos < end {
        let (field, wire) = r.tag(end)?;
        match wire {
            START_GROUP => r.skip_group(end, msg.name())?,
            END_GROUP => {
                return Err(format!(
                    "unexpected end-group tag at byte {} in {}",
                    r.pos,
                    msg.name()
                ))
            }
            LEN => match msg.field(field) {
                Some(sub) => {
                    let n = r.varint(end)?;
                    let at = r.pos;
                    r.skip(n, end, sub.name())?;
                    let mut inner = Reader {
                        bytes: r.bytes,
                        pos: at,
                    };
                    walk(&mut inner, r.pos, sub, depth + 1)?;
                }
                None => r.skip_value(LEN, end)?,
            },
            w => r.skip_value(w, end)?,
        }
    }
    Ok(())
}

/// The ONNX messages the decoder parses, by what their message fields hold.
#[derive(Clone, Copy)]
enum Msg {
    Model,
    Graph,
    Node,
    Attribute,
    ValueInfo,
    TrainingInfo,
    TensorAnnotation,
    Tensor,
    SparseTensor,
    TensorShape,
    Type,
    /// `TypeProto.Tensor` and `TypeProto.SparseTensor`: a shape in field 2.
    TypeTensor,
    /// `TypeProto.Sequence` and `TypeProto.Optional`: an element type in field 1.
    TypeElement,
    TypeMap,
    Function,
    /// A message without message fields (opset ids, string pairs, dimensions, segments).
    Leaf,
}

impl Msg {
    /// The message type of field `number`, when the decoder parses it as a message.
    fn field(self, number: u64) -> Option<Msg> {
        use Msg::*;
        Some(match (self, number) {
            (Model, 7) | (TrainingInfo, 1 | 2) | (Attribute, 6 | 11) => Graph,
            (Model, 20) => TrainingInfo,
            (Model, 25) => Function,
            (Graph, 1) | (Function, 7) => Node,
            (Graph, 5) | (Attribute, 5 | 10) | (SparseTensor, 1 | 2) => Tensor,
            (Graph, 15) | (Attribute, 22 | 23) => SparseTensor,
            (Graph, 11..=13) | (Function, 12) => ValueInfo,
            (Graph, 14) => TensorAnnotation,
            (Node, 5) | (Function, 11) => Attribute,
            (Attribute, 14 | 15) | (ValueInfo, 2) | (TypeElement, 1) | (TypeMap, 2) => Type,
            (Type, 1 | 8) => TypeTensor,
            (Type, 4 | 9) => TypeElement,
            (Type, 5) => TypeMap,
            (TypeTensor, 2) => TensorShape,
            (Model, 8 | 14)
            | (Graph, 16)
            | (Node, 9)
            | (ValueInfo, 4)
            | (TrainingInfo, 3 | 4)
            | (TensorAnnotation, 2)
            | (Tensor, 3 | 13 | 16)
            | (TensorShape, 1)
            | (Function, 9 | 14) => Leaf,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Msg::Model => "ModelProto",
            Msg::Graph => "GraphProto",
            Msg::Node => "NodeProto",
            Msg::Attribute => "AttributeProto",
            Msg::ValueInfo => "ValueInfoProto",
            Msg::TrainingInfo => "TrainingInfoProto",
            Msg::TensorAnnotation => "TensorAnnotation",
            Msg::Tensor => "TensorProto",
            Msg::SparseTensor => "SparseTensorProto",
            Msg::TensorShape => "TensorShapeProto",
            Msg::Type => "TypeProto",
            Msg::TypeTensor => "TypeProto.Tensor",
            Msg::TypeElement => "TypeProto.Sequence/Optional",
            Msg::TypeMap => "TypeProto.Map",
            Msg::Function => "FunctionProto",
            Msg::Leaf => "a nested message",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_groups_are_rejected_with_the_offset() {
        let bytes = vec![0x0b; 2_000_000];
        let err = check_model(&bytes).unwrap_err();
        assert!(err.contains("nested more than 32 deep at byte 33"), "{err}");
    }

    #[test]
    fn shallow_unknown_groups_are_skipped() {
        // field 100 (unknown) as a group holding a varint, then ir_version = 8.
        let mut bytes = vec![0xa3, 0x06, 0x08, 0x01, 0xa4, 0x06];
        bytes.extend([0x08, 0x08]);
        assert_eq!(check_model(&bytes), Ok(()));
    }

    #[test]
    fn groups_inside_nested_messages_are_found() {
        // graph (7) { node (1) { 33 nested groups } }
        let groups: Vec<u8> = [vec![0x0b; 33], vec![0x0c; 33]].concat();
        let mut node = vec![0x0a, groups.len() as u8];
        node.extend(&groups);
        let mut bytes = vec![0x3a, node.len() as u8];
        bytes.extend(&node);
        let err = check_model(&bytes).unwrap_err();
        assert!(err.contains("in NodeProto"), "{err}");
    }

    /// A varint that straddles the end of its message (fuzzing found it: the remaining
    /// length was computed as `end − position` with the position past the end).
    #[test]
    fn varints_across_a_message_end_are_rejected() {
        // graph (7) of 2 bytes holding node (1) whose length varint continues past them.
        let err = check_model(&[0x3a, 0x02, 0x0a, 0x80, 0x01, 8, 8]).unwrap_err();
        assert!(err.contains("varint at byte 3 runs past the end"), "{err}");
        // The fuzz target's input: a length-delimited field after an overlong varint.
        let input = [
            0x3a, 0x05, 0x0a, 0x03, 0x12, 0x0d, 0x0a, 0x42, 0x04, 0x0a, 0x00, 0x10, 0x0d,
        ];
        assert!(check_model(&input).is_err());
    }

    #[test]
    fn lengths_past_the_end_are_rejected() {
        let err = check_model(&[0x3a, 0x10, 0x00]).unwrap_err();
        assert!(
            err.contains("GraphProto at byte 2 runs past the end of the file"),
            "{err}"
        );
        let err = check_model(&[0x3a, 0x03, 0x0a, 0x05, 0x00, 8, 8, 8, 8, 8]).unwrap_err();
        assert!(
            err.contains("NodeProto at byte 4 runs past the end of its message"),
            "{err}"
        );
    }
}
