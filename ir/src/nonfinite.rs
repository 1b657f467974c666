//! Serde for floats that may be NaN or ±infinity: finite values are JSON numbers as usual,
//! the others the strings `"NaN"`, `"inf"` and `"-inf"` (serde_json would otherwise write
//! `null` and fail to read it back). The module functions handle `Vec<f32>` (tensor
//! elements); [`one`] and [`option`] handle single op attributes (`f32`, `Option<f32>`).
use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserializer, Serializer};
use std::fmt;

/// Serialises `v` with non-finite elements as strings.
pub(crate) fn serialize<S: Serializer>(v: &[f32], s: S) -> Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for x in v {
        seq.serialize_element(&Out(*x))?;
    }
    seq.end()
}

/// One float as written: a number when finite, else one of the three strings.
struct Out(f32);

impl serde::Serialize for Out {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let x = self.0;
        if x.is_finite() {
            s.serialize_f32(x)
        } else if x.is_nan() {
            s.serialize_str("NaN")
        } else if x > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }
}

/// A single `f32` attribute (`#[serde(with = "crate::nonfinite::one")]`).
pub(crate) mod one {
    use super::{Elem, Out};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Serialises `v`, a string when it is not finite.
    pub(crate) fn serialize<S: Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
        Out(*v).serialize(s)
    }

    /// Reads what [`serialize`] writes.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
        Ok(Elem::deserialize(d)?.0)
    }
}

/// An `Option<f32>` attribute (`#[serde(with = "crate::nonfinite::option")]`): `null` is
/// None.
pub(crate) mod option {
    use super::{Elem, Out};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Serialises `v`, a string when it is not finite.
    pub(crate) fn serialize<S: Serializer>(v: &Option<f32>, s: S) -> Result<S::Ok, S::Error> {
        v.map(Out).serialize(s)
    }

    /// Reads what [`serialize`] writes.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f32>, D::Error> {
        Ok(Option::<Elem>::deserialize(d)?.map(|e| e.0))
    }
}

/// Reads what [`serialize`] writes (plain numbers too).
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
    d.deserialize_seq(SeqVisitor)
}

struct SeqVisitor;

impl<'de> Visitor<'de> for SeqVisitor {
    type Value = Vec<f32>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of numbers (or \"NaN\", \"inf\", \"-inf\")")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<f32>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
        while let Some(Elem(x)) = seq.next_element()? {
            out.push(x);
        }
        Ok(out)
    }
}

/// One element: a number or one of the three strings.
struct Elem(f32);

impl<'de> serde::Deserialize<'de> for Elem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Elem, D::Error> {
        d.deserialize_any(ElemVisitor)
    }
}

struct ElemVisitor;

impl Visitor<'_> for ElemVisitor {
    type Value = Elem;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number, \"NaN\", \"inf\" or \"-inf\"")
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Elem, E> {
        Ok(Elem(v as f32))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Elem, E> {
        Ok(Elem(v as f32))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Elem, E> {
        Ok(Elem(v as f32))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Elem, E> {
        match v {
            "NaN" => Ok(Elem(f32::NAN)),
            "inf" => Ok(Elem(f32::INFINITY)),
            "-inf" => Ok(Elem(f32::NEG_INFINITY)),
            _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{DType, Tensor, TensorData};

    #[test]
    fn non_finite_elements_survive_json() {
        let t = Tensor {
            dtype: DType::F32,
            shape: vec![5],
            data: TensorData::F32(vec![1.5, f32::NEG_INFINITY, f32::INFINITY, f32::NAN, -0.0]),
        };
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.contains(r#"[1.5,"-inf","inf","NaN",-0.0]"#), "{json}");
        let back: Tensor = serde_json::from_str(&json).unwrap();
        let TensorData::F32(v) = &back.data else {
            panic!("not f32: {back:?}")
        };
        assert_eq!(v[..3], [1.5, f32::NEG_INFINITY, f32::INFINITY]);
        assert!(v[3].is_nan());
        assert!(v[4] == 0.0 && v[4].is_sign_negative());
        let bad = json.replace("\"NaN\"", "\"nan?\"");
        assert!(serde_json::from_str::<Tensor>(&bad).is_err());
    }
}
