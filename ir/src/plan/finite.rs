//! Finds a float JSON cannot hold (NaN, ±infinity) before a plan is written: serde_json
//! would silently write it as `null`, and the plan would not read back as it was.
//!
//! [`first_non_finite`] walks any `Serialize` value with a serializer that writes nothing
//! and only looks at floats, keeping the path it is at for the message.
use serde::ser::{self, Serialize};
use std::fmt;

/// The path (e.g. `graph.nodes[3].op.Clip.min = inf`) of the first non-finite float of
/// `value`, or None when every float is finite.
pub(crate) fn first_non_finite<T: Serialize + ?Sized>(value: &T) -> Option<String> {
    let mut probe = Probe {
        path: Vec::new(),
        found: None,
    };
    // The walk stops with `Stop` at the first non-finite float; any other error comes from a
    // type's own Serialize impl and will surface again when the plan is really serialised.
    let _ = value.serialize(&mut probe);
    probe.found
}

struct Probe {
    /// Path segments: `.field`, `[index]`, `.Variant`.
    path: Vec<String>,
    found: Option<String>,
}

impl Probe {
    fn float(&mut self, v: f64) -> Result<(), Stop> {
        if v.is_finite() {
            return Ok(());
        }
        let path = self.path.concat();
        self.found = Some(format!("{} = {v}", path.trim_start_matches('.')));
        Err(Stop)
    }

    fn nested<T: Serialize + ?Sized>(&mut self, segment: String, v: &T) -> Result<(), Stop> {
        self.path.push(segment);
        v.serialize(&mut *self)?;
        self.path.pop();
        Ok(())
    }
}

/// Ends the walk (a non-finite float was found, or a Serialize impl failed).
#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stopped")
    }
}

impl std::error::Error for Stop {}

impl ser::Error for Stop {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        Stop
    }
}

/// A sequence, tuple, map or struct being walked.
struct Compound<'a> {
    probe: &'a mut Probe,
    /// Next element index (sequences and tuples).
    index: usize,
    /// Path segment of the current map key.
    key: String,
    /// Whether a variant segment was pushed and must be popped at the end.
    pop: bool,
}

impl Compound<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Stop> {
        let i = self.index;
        self.index += 1;
        self.probe.nested(format!("[{i}]"), v)
    }

    fn finish(self) -> Result<(), Stop> {
        if self.pop {
            self.probe.path.pop();
        }
        Ok(())
    }
}

impl Probe {
    fn compound(&mut self, variant: Option<&str>) -> Compound<'_> {
        if let Some(v) = variant {
            self.path.push(format!(".{v}"));
        }
        Compound {
            probe: self,
            index: 0,
            key: String::new(),
            pop: variant.is_some(),
        }
    }
}

/// Serializer methods that look at nothing (no float inside).
macro_rules! ignore {
    ($($method:ident: $ty:ty),*) => {$(
        fn $method(self, _: $ty) -> Result<(), Stop> {
            Ok(())
        }
    )*};
}

impl<'a> ser::Serializer for &'a mut Probe {
    type Ok = ();
    type Error = Stop;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    ignore!(
        serialize_bool: bool,
        serialize_i8: i8,
        serialize_i16: i16,
        serialize_i32: i32,
        serialize_i64: i64,
        serialize_u8: u8,
        serialize_u16: u16,
        serialize_u32: u32,
        serialize_u64: u64,
        serialize_char: char,
        serialize_str: &str,
        serialize_bytes: &[u8],
        serialize_unit_struct: &'static str
    );
    fn serialize_f32(self, v: f32) -> Result<(), Stop> {
        self.float(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<(), Stop> {
        self.float(v)
    }
    fn serialize_none(self) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<(), Stop> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), Stop> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<(), Stop> {
        self.nested(format!(".{variant}"), v)
    }
    fn serialize_seq(self, _: Option<usize>) -> Opened<'a> {
        Ok(self.compound(None))
    }
    fn serialize_tuple(self, _: usize) -> Opened<'a> {
        Ok(self.compound(None))
    }
    fn serialize_tuple_struct(self, _: Name, _: usize) -> Opened<'a> {
        Ok(self.compound(None))
    }
    fn serialize_tuple_variant(self, _: Name, _: u32, variant: Name, _: usize) -> Opened<'a> {
        Ok(self.compound(Some(variant)))
    }
    fn serialize_map(self, _: Option<usize>) -> Opened<'a> {
        Ok(self.compound(None))
    }
    fn serialize_struct(self, _: Name, _: usize) -> Opened<'a> {
        Ok(self.compound(None))
    }
    fn serialize_struct_variant(self, _: Name, _: u32, variant: Name, _: usize) -> Opened<'a> {
        Ok(self.compound(Some(variant)))
    }
}

/// A serde type, field or variant name.
type Name = &'static str;

/// What opening a compound value (sequence, tuple, map, struct) gives.
type Opened<'a> = Result<Compound<'a>, Stop>;

/// Sequence-like compounds: each element is `[index]` in the path.
macro_rules! seq_like {
    ($($tr:ident :: $method:ident),*) => {$(
        impl ser::$tr for Compound<'_> {
            type Ok = ();
            type Error = Stop;
            fn $method<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Stop> {
                self.element(v)
            }
            fn end(self) -> Result<(), Stop> {
                self.finish()
            }
        }
    )*};
}

seq_like!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

/// Struct-like compounds: each field is `.name` in the path.
macro_rules! struct_like {
    ($($tr:ident),*) => {$(
        impl ser::$tr for Compound<'_> {
            type Ok = ();
            type Error = Stop;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                v: &T,
            ) -> Result<(), Stop> {
                self.probe.nested(format!(".{key}"), v)
            }
            fn end(self) -> Result<(), Stop> {
                self.finish()
            }
        }
    )*};
}

struct_like!(SerializeStruct, SerializeStructVariant);

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = Stop;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Stop> {
        self.key = serde_json::to_string(key).unwrap_or_else(|_| "?".into());
        key.serialize(&mut *self.probe)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Stop> {
        let segment = format!("[{}]", std::mem::take(&mut self.key));
        self.probe.nested(segment, v)
    }
    fn end(self) -> Result<(), Stop> {
        self.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use std::collections::BTreeMap;

    #[derive(Serialize)]
    enum Attr {
        Clip { min: Option<f32>, max: f32 },
        Scale(f64),
    }

    #[derive(Serialize)]
    struct Doc {
        name: String,
        ops: Vec<Attr>,
        rates: BTreeMap<String, (u64, f64)>,
    }

    #[test]
    fn the_first_non_finite_float_is_named_by_its_path() {
        let mut doc = Doc {
            name: "x".into(),
            ops: vec![
                Attr::Scale(2.0),
                Attr::Clip {
                    min: Some(0.0),
                    max: 6.0,
                },
            ],
            rates: BTreeMap::from([("a".to_string(), (1, 0.5))]),
        };
        assert_eq!(first_non_finite(&doc), None);
        doc.ops[1] = Attr::Clip {
            min: Some(f32::NEG_INFINITY),
            max: 6.0,
        };
        assert_eq!(
            first_non_finite(&doc).as_deref(),
            Some("ops[1].Clip.min = -inf")
        );
        doc.ops.clear();
        doc.rates.insert("b".into(), (2, f64::NAN));
        assert_eq!(
            first_non_finite(&doc).as_deref(),
            Some("rates[\"b\"][1] = NaN")
        );
    }
}
