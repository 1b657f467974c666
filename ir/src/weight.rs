//! Weights (initializers and large constants): metadata plus a lazy reference to the bytes.
//!
//! A weight may be stored quantised ([`Quant`]): its bytes are int8/uint8, its graph tensor
//! has the logical float dtype, and the runtime dequantises each rank's slice on load.
use crate::{DType, IrError, Tensor};
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

/// Weight-only quantisation: logical value = (stored as f32 − zero_point) × scale, in the
/// logical dtype.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quant {
    /// Logical element type (a float type; f32 in practice).
    pub dtype: DType,
    /// Scale: same rank as the weight; on each axis its extent is 1 or divides the weight's
    /// extent (element i on that axis uses scale index i / (weight_extent / scale_extent)):
    /// per-tensor, per-axis and blocked quantisation are all this one rule.
    pub scale: Box<Weight>,
    /// Zero point (stored dtype, same shape rule as scale), if any.
    pub zero_point: Option<Box<Weight>>,
}

/// A weight tensor of the graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Weight {
    /// Initializer name in the source model.
    pub name: String,
    /// Element type as stored (int8/uint8 for a quantised weight).
    pub dtype: DType,
    /// Shape (the logical shape; a quantised weight stores one element per logical one).
    pub shape: Vec<usize>,
    /// Where the bytes are.
    pub data: WeightData,
    /// Quantisation parameters, when the stored bytes are quantised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quant: Option<Quant>,
    /// Stored transposed: the bytes hold a tensor whose axis `perm[i]` is this weight's
    /// axis `i` (the weight is `Transpose(stored, perm)`, as ONNX's Transpose). A canonical
    /// Linear over a weight the export stored `[out, in]` (Gemm with `transB`, or MatMul of
    /// a Transpose) reads it this way: the transpose happens once, when a rank's slice is
    /// loaded, and never runs in the plan. A quantised weight's scale and zero point carry
    /// the same `perm`. `None`: stored as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perm: Option<Vec<usize>>,
    /// Stored at `bits` bits per element (2 or 4; `dtype` I8 sign-extends, U8 does not),
    /// packed from the low bits of each byte up: stored element `i` is bits
    /// `(i·bits) mod 8 ..` of byte `i·bits / 8`, as ONNX INT4/UINT4 tensors and
    /// onnxruntime's MatMulNBits weights store them. `None`: one element per `dtype` size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packed_bits: Option<u8>,
}

impl Weight {
    /// Bytes that `numel` stored elements take (whole bytes; packed elements share them).
    pub fn stored_bytes(&self, numel: usize) -> usize {
        match self.packed_bits {
            Some(b) => numel.saturating_mul(b as usize).div_ceil(8),
            None => numel.saturating_mul(self.dtype.size_bytes()),
        }
    }

    /// Checks [`Weight::packed_bits`]: 2 or 4 bits of an 8-bit integer dtype.
    pub fn check_packing(&self) -> Result<(), IrError> {
        match self.packed_bits {
            None => Ok(()),
            Some(2 | 4) if matches!(self.dtype, DType::I8 | DType::U8) => Ok(()),
            Some(b) => Err(IrError::Tensor {
                name: self.name.clone(),
                msg: format!(
                    "packed at {b} bits per element as {}: only 2 or 4 bits of i8/u8",
                    self.dtype
                ),
            }),
        }
    }

    /// Logical element type (`quant.dtype` if quantised, else `dtype`).
    pub fn logical_dtype(&self) -> DType {
        self.quant.as_ref().map_or(self.dtype, |q| q.dtype)
    }

    /// Stored bytes, scale and zero point included (what the memory budget counts).
    pub fn size_bytes(&self) -> usize {
        self.part_bytes(&self.shape)
    }

    /// The weight itself, then its scale and zero point if quantised: every weight whose
    /// bytes must be read to load this one.
    pub fn parts(&self) -> impl Iterator<Item = &Weight> {
        let q = self.quant.as_ref();
        std::iter::once(self)
            .chain(q.map(|q| &*q.scale))
            .chain(q.and_then(|q| q.zero_point.as_deref()))
    }

    /// Whether splitting axis `axis` into `n` equal contiguous parts keeps every part
    /// aligned with the scale/zero-point blocks (always true when not quantised and `n`
    /// divides the extent).
    pub fn splittable(&self, axis: usize, n: usize) -> bool {
        let Some(&extent) = self.shape.get(axis) else {
            return false;
        };
        if n == 0 || !extent.is_multiple_of(n) {
            return false;
        }
        let c = extent / n;
        let bounds: Vec<(usize, usize)> = (0..n).map(|r| (r * c, (r + 1) * c)).collect();
        self.splittable_at(axis, &bounds)
    }

    /// Whether parts `[start, end)` of `axis` (one per rank, ragged or not) each cover whole
    /// scale/zero-point blocks (always true when not quantised).
    pub fn splittable_at(&self, axis: usize, bounds: &[(usize, usize)]) -> bool {
        let Some(&extent) = self.shape.get(axis) else {
            return false;
        };
        self.quant
            .iter()
            .flat_map(Quant::params)
            .all(|p| match p.shape.get(axis) {
                Some(1) => true,
                // Blocks of extent / e elements: every boundary on a block edge.
                Some(&e) if e > 0 && extent % e == 0 => {
                    let block = extent / e;
                    bounds
                        .iter()
                        .all(|&(s, t)| s % block == 0 && t % block == 0)
                }
                _ => false,
            })
    }

    /// Stored bytes of one rank's part when split on `axis` into `n` (scale and zero-point
    /// parts included: sliced when their extent on `axis` is over 1, whole otherwise). For
    /// a split that is not [`Weight::splittable`], parts are rounded down.
    pub fn split_bytes(&self, axis: usize, n: usize) -> usize {
        let mut local = self.shape.clone();
        if let Some(d) = local.get_mut(axis) {
            *d /= n.max(1);
        }
        self.part_bytes(&local)
    }

    /// Stored bytes of a contiguous part of shape `local` (each extent at most the
    /// weight's), with the scale and zero-point blocks it touches (a part that starts on a
    /// block boundary, as even splits of a [`Weight::splittable`] axis do).
    pub fn part_bytes(&self, local: &[usize]) -> usize {
        let stored = self.stored_bytes(crate::numel(local));
        let Some(q) = &self.quant else { return stored };
        q.params().fold(stored, |acc, p| {
            let shape: Vec<usize> = (0..p.shape.len())
                .map(|a| {
                    let (e, w, l) = (p.shape[a], self.shape.get(a), local.get(a));
                    match (w, l) {
                        (Some(&w), Some(&l)) if e > 1 && w > 0 => l.div_ceil(w / e).min(e),
                        _ => e,
                    }
                })
                .collect();
            acc.saturating_add(p.stored_bytes(crate::numel(&shape)))
        })
    }

    /// Checks the quantisation parameters against the weight: stored dtype an integer,
    /// logical dtype a float, scale a float of the weight's rank, zero point of the stored
    /// dtype, each of their extents 1 or dividing the weight's, neither quantised itself.
    /// Succeeds for an unquantised weight.
    pub fn check_quant(&self) -> Result<(), IrError> {
        self.check_packing()?;
        let Some(q) = &self.quant else { return Ok(()) };
        let err = |msg: String| IrError::Tensor {
            name: self.name.clone(),
            msg,
        };
        if !matches!(self.dtype, DType::I8 | DType::U8) {
            return Err(err(format!(
                "quantised weight stored as {}, expected i8 or u8",
                self.dtype
            )));
        }
        if !q.dtype.is_float() {
            return Err(err(format!(
                "quantised weight of logical dtype {}, expected a float",
                q.dtype
            )));
        }
        if !q.scale.dtype.is_float() {
            return Err(err(format!(
                "scale '{}' is {}, expected a float",
                q.scale.name, q.scale.dtype
            )));
        }
        if let Some(z) = &q.zero_point {
            if z.dtype != self.dtype {
                return Err(err(format!(
                    "zero point '{}' is {}, expected the stored dtype {}",
                    z.name, z.dtype, self.dtype
                )));
            }
        }
        for p in q.params() {
            let fits = p.shape.len() == self.shape.len()
                && p.shape
                    .iter()
                    .zip(&self.shape)
                    .all(|(&e, &w)| e == 1 || (e > 0 && w.is_multiple_of(e)));
            if !fits {
                return Err(err(format!(
                    "quantisation parameter '{}' {:?} does not fit weight {:?} (same rank, each extent 1 or dividing the weight's)",
                    p.name, p.shape, self.shape
                )));
            }
            if p.quant.is_some() {
                return Err(err(format!(
                    "quantisation parameter '{}' is itself quantised",
                    p.name
                )));
            }
        }
        Ok(())
    }

    /// An unquantised weight holding `tensor` in memory (its dtype and shape).
    pub fn constant(name: impl Into<String>, tensor: Tensor) -> Weight {
        Weight {
            perm: None,
            packed_bits: None,
            name: name.into(),
            dtype: tensor.dtype,
            shape: tensor.shape.clone(),
            data: WeightData::Inline { tensor },
            quant: None,
        }
    }

    /// The weight as its bytes are stored: the shape before [`Weight::perm`] (and the
    /// same for its quantisation parameters), with no `perm`. Itself when not transposed.
    /// Fails when `perm` is not a permutation of the weight's axes or a quantisation
    /// parameter's `perm` differs from the weight's.
    pub fn stored_view(&self) -> Result<Weight, IrError> {
        let Some(perm) = &self.perm else {
            return Ok(self.clone());
        };
        let err = |msg: String| IrError::Tensor {
            name: self.name.clone(),
            msg,
        };
        let stored = unpermute(&self.shape, perm).ok_or_else(|| {
            err(format!(
                "perm {perm:?} is not a permutation of the axes of {:?}",
                self.shape
            ))
        })?;
        let mut view = Weight {
            shape: stored,
            perm: None,
            ..self.clone()
        };
        if let Some(q) = &mut view.quant {
            for p in std::iter::once(&mut q.scale).chain(q.zero_point.as_mut()) {
                if p.perm.as_ref() != Some(perm) {
                    return Err(err(format!(
                        "quantisation parameter '{}' is not transposed like its weight ({perm:?})",
                        p.name
                    )));
                }
                **p = p.stored_view()?;
            }
        }
        Ok(view)
    }

    /// The in-memory value, if this weight is inline.
    pub fn inline(&self) -> Option<&Tensor> {
        match &self.data {
            WeightData::Inline { tensor } => Some(tensor),
            WeightData::File { .. } => None,
        }
    }
}

/// The shape `s` such that `Transpose(s, perm)` has shape `shape`; `None` when `perm` is
/// not a permutation of `shape`'s axes.
fn unpermute(shape: &[usize], perm: &[usize]) -> Option<Vec<usize>> {
    if perm.len() != shape.len() {
        return None;
    }
    let mut stored = vec![None; shape.len()];
    for (&dim, &p) in shape.iter().zip(perm) {
        let slot = stored.get_mut(p)?;
        if slot.is_some() {
            return None;
        }
        *slot = Some(dim);
    }
    stored.into_iter().collect()
}

impl Quant {
    /// The scale, then the zero point if any.
    pub fn params(&self) -> impl Iterator<Item = &Weight> {
        std::iter::once(&*self.scale).chain(self.zero_point.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, dtype: DType, shape: Vec<usize>, offset: u64) -> Weight {
        let length = (crate::numel(&shape) * dtype.size_bytes()) as u64;
        Weight {
            perm: None,
            packed_bits: None,
            name: name.into(),
            dtype,
            shape,
            data: WeightData::File {
                path: "m.onnx".into(),
                offset,
                length,
            },
            quant: None,
        }
    }

    /// An int8 [64, 128] weight with an f32 scale and an int8 zero point of `param_shape`.
    fn quantised(param_shape: Vec<usize>) -> Weight {
        let mut w = file("w", DType::I8, vec![64, 128], 0);
        w.quant = Some(Quant {
            dtype: DType::F32,
            scale: Box::new(file("s", DType::F32, param_shape.clone(), 8192)),
            zero_point: Some(Box::new(file("z", DType::I8, param_shape, 9000))),
        });
        w
    }

    #[test]
    fn per_axis_split_bytes() {
        // Per-column scale [1, 128] (f32) and zero point [1, 128] (i8).
        let w = quantised(vec![1, 128]);
        assert_eq!(w.logical_dtype(), DType::F32);
        assert_eq!(w.size_bytes(), 64 * 128 + 128 * 4 + 128);
        // Rows: scale and zero point whole on every rank.
        assert!(w.splittable(0, 4));
        assert_eq!(w.split_bytes(0, 4), 16 * 128 + 128 * 4 + 128);
        // Columns: scale and zero point sliced along.
        assert!(w.splittable(1, 4));
        assert_eq!(w.split_bytes(1, 4), 64 * 32 + 32 * 4 + 32);
        assert!(!w.splittable(1, 3), "3 does not divide 128");
        assert!(!w.splittable(2, 2), "no axis 2");
    }

    #[test]
    fn stored_view_undoes_perm_and_checks_it() {
        let mut w = quantised(vec![1, 128]);
        assert_eq!(w.stored_view().unwrap(), w, "no perm: itself");
        // Logical [128, 64] stored [64, 128]; the scale [1, 128] is logically [128, 1].
        w.shape = vec![128, 64];
        w.perm = Some(vec![1, 0]);
        let q = w.quant.as_mut().unwrap();
        for p in [&mut q.scale, q.zero_point.as_mut().unwrap()] {
            p.shape = vec![128, 1];
            p.perm = Some(vec![1, 0]);
        }
        let v = w.stored_view().unwrap();
        assert_eq!((v.shape.clone(), v.perm.clone()), (vec![64, 128], None));
        assert_eq!(v.quant.as_ref().unwrap().scale.shape, vec![1, 128]);
        assert!(v.check_quant().is_ok() && w.check_quant().is_ok());
        let mut unlike = w.clone();
        unlike.quant.as_mut().unwrap().scale.perm = None;
        let e = unlike.stored_view().unwrap_err().to_string();
        assert!(e.contains("not transposed like its weight"), "{e}");
        for bad in [vec![0, 0], vec![1], vec![0, 2]] {
            let b = Weight {
                perm: Some(bad),
                packed_bits: None,
                quant: None,
                ..w.clone()
            };
            let e = b.stored_view().unwrap_err().to_string();
            assert!(e.contains("not a permutation"), "{e}");
        }
    }

    #[test]
    fn blocked_split_keeps_blocks_whole() {
        // Blocks of 16 rows: scale [4, 128].
        let w = quantised(vec![4, 128]);
        assert_eq!(w.size_bytes(), 8192 + 4 * 128 * 5);
        assert!(w.splittable(0, 2) && w.splittable(0, 4));
        assert_eq!(w.split_bytes(0, 2), 32 * 128 + 2 * 128 * 5);
        assert_eq!(w.split_bytes(0, 4), 16 * 128 + 128 * 5);
        // 8 parts of 8 rows would cut blocks of 16 rows in half.
        assert!(!w.splittable(0, 8));
        assert!(w.splittable(1, 8));
        assert_eq!(w.split_bytes(1, 8), 64 * 16 + 4 * 16 * 5);
        // Unquantised: bytes / n.
        let f = file("f", DType::F32, vec![64, 128], 0);
        assert!(f.splittable(0, 8) && !f.splittable(0, 3));
        assert_eq!(f.split_bytes(0, 8), 64 * 128 * 4 / 8);
        assert_eq!(f.size_bytes(), 64 * 128 * 4);
    }

    #[test]
    fn serde_round_trip_and_old_form() {
        let w = quantised(vec![4, 128]);
        let text = serde_json::to_string(&w).unwrap();
        assert!(text.contains("\"quant\""), "{text}");
        let back: Weight = serde_json::from_str(&text).unwrap();
        assert_eq!(back, w);
        // An unquantised weight writes no `quant` and reads back without one.
        let f = file("f", DType::F32, vec![2], 0);
        let text = serde_json::to_string(&f).unwrap();
        assert!(!text.contains("quant"), "{text}");
        assert_eq!(serde_json::from_str::<Weight>(&text).unwrap(), f);
        assert_eq!(
            w.parts().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["w", "s", "z"]
        );
    }

    #[test]
    fn check_quant_names_the_fault() {
        assert!(quantised(vec![1, 128]).check_quant().is_ok());
        let msg = |w: &Weight| w.check_quant().unwrap_err().to_string();
        let bad_rank = quantised(vec![128]);
        assert!(
            msg(&bad_rank).contains("'s' [128] does not fit weight [64, 128]"),
            "{}",
            msg(&bad_rank)
        );
        let bad_extent = quantised(vec![3, 128]);
        assert!(
            msg(&bad_extent).contains("'s' [3, 128]"),
            "{}",
            msg(&bad_extent)
        );
        let mut float_stored = quantised(vec![1, 1]);
        float_stored.dtype = DType::F32;
        assert!(
            msg(&float_stored).contains("stored as f32"),
            "{}",
            msg(&float_stored)
        );
        let mut zp = quantised(vec![1, 1]);
        if let Some(q) = &mut zp.quant {
            q.zero_point.as_mut().unwrap().dtype = DType::U8;
        }
        assert!(
            msg(&zp).contains("zero point 'z' is u8, expected the stored dtype i8"),
            "{}",
            msg(&zp)
        );
        let mut int_scale = quantised(vec![1, 1]);
        if let Some(q) = &mut int_scale.quant {
            q.scale.dtype = DType::I32;
        }
        assert!(
            msg(&int_scale).contains("scale 's' is i32"),
            "{}",
            msg(&int_scale)
        );
    }
}
