//! Dequantisation on load: a quantised weight's stored slice (int8/uint8), the matching part
//! of its scale and zero point, and `(stored − zero_point) × scale` as a float tensor of the
//! weight's logical dtype and sliced shape. Devices and the reference executor only ever see
//! the float values.
use super::WeightStore;
use crate::RuntimeError;
use tessera_ir::plan::AxisSlice;
use tessera_ir::{DType, Quant, Tensor, TensorData, Weight, WeightData};

/// Loads quantised weight `w` (or `slice` of it) dequantised.
pub(super) fn load(
    store: &WeightStore,
    w: &Weight,
    q: &Quant,
    slice: Option<&AxisSlice>,
) -> Result<Tensor, RuntimeError> {
    let parts = load_parts(store, w, q, slice)?;
    let round = |x: f32| match q.dtype {
        DType::F16 => half::f16::from_f32(x).to_f32(),
        DType::BF16 => half::bf16::from_f32(x).to_f32(),
        _ => x,
    };
    let out = (parts.values.iter().zip(&parts.scales).zip(&parts.zeros))
        .map(|((&v, &s), &z)| round((v - z) as f32 * s))
        .collect();
    Tensor::new(q.dtype, parts.shape, TensorData::F32(out)).map_err(|e| RuntimeError::Weight {
        name: w.name.clone(),
        path: location(w).into(),
        msg: e.to_string(),
    })
}

/// A quantised weight's slice as stored, with each element's scale and zero point.
pub struct QuantParts {
    /// The slice's shape.
    pub shape: Vec<usize>,
    /// Stored integers, row-major.
    pub values: Vec<i64>,
    /// Each element's scale.
    pub scales: Vec<f32>,
    /// Each element's zero point (0 without one).
    pub zeros: Vec<i64>,
}

/// Loads quantised weight `w` (or `slice` of it, as stored: no `perm`) with the scale and
/// zero point of every element.
pub(super) fn load_parts(
    store: &WeightStore,
    w: &Weight,
    q: &Quant,
    slice: Option<&AxisSlice>,
) -> Result<QuantParts, RuntimeError> {
    let err = |msg: String| RuntimeError::Weight {
        name: w.name.clone(),
        path: location(w).into(),
        msg,
    };
    w.check_quant().map_err(|e| err(e.to_string()))?;
    let stored = store.load_stored(w, slice)?;
    let values = stored
        .as_i64()
        .ok_or_else(|| err(format!("stored values are not {}", w.dtype)))?
        .to_vec();
    let local = stored.shape.clone();
    let scale = Param::load(store, w, &q.scale, slice, &local)?;
    let zero = match q.zero_point.as_deref() {
        Some(z) => Some(Param::load(store, w, z, slice, &local)?),
        None => None,
    };
    let (scale_values, zero_values) = (
        scale.values.to_f64_vec(),
        zero.as_ref().map(|z| z.values.to_i64_vec()),
    );
    let mut scales = Vec::with_capacity(values.len());
    let mut zeros = Vec::with_capacity(values.len());
    let rank = local.len();
    let inner = local.last().copied().unwrap_or(1);
    let outer = values.len().checked_div(inner).unwrap_or(0);
    let mut idx = vec![0usize; rank.saturating_sub(1)];
    for _ in 0..outer {
        let (sb, zb) = (scale.base(&idx), zero.as_ref().map_or(0, |z| z.base(&idx)));
        for j in 0..inner {
            scales.push(scale_values[sb + scale.last(j)] as f32);
            zeros.push(
                zero_values
                    .as_ref()
                    .map_or(0, |zs| zs[zb + zero.as_ref().map_or(0, |p| p.last(j))]),
            );
        }
        // Next index over the leading axes (row-major odometer).
        for a in (0..idx.len()).rev() {
            idx[a] += 1;
            if idx[a] < local[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    Ok(QuantParts {
        shape: local,
        values,
        scales,
        zeros,
    })
}

/// `path` of a file-backed weight, `inline` otherwise (for error messages).
pub(super) fn location(w: &Weight) -> &str {
    match &w.data {
        WeightData::File { path, .. } => path,
        WeightData::Inline { .. } => "inline",
    }
}

/// The part of a scale or zero point a slice of the weight needs, with, per axis, the flat
/// offset of the parameter element each local index of the weight uses.
struct Param {
    values: Tensor,
    /// `offsets[a][i]`: contribution of local index `i` on axis `a` to the flat offset.
    offsets: Vec<Vec<usize>>,
}

impl Param {
    /// Loads the part of parameter `p` of weight `w` that `slice` (giving the local shape
    /// `local`) reads: its own slice along the same axis when its extent there is over 1
    /// (the blocks the weight's slice touches), the whole parameter otherwise.
    fn load(
        store: &WeightStore,
        w: &Weight,
        p: &Weight,
        slice: Option<&AxisSlice>,
        local: &[usize],
    ) -> Result<Param, RuntimeError> {
        // check_quant: p has w's rank and each extent is 1 or divides w's (so is non-zero).
        let block = |a: usize| (w.shape[a] / p.shape[a].max(1)).max(1);
        let sub = slice.filter(|s| p.shape[s.axis] > 1).map(|s| {
            let b = block(s.axis);
            AxisSlice {
                axis: s.axis,
                start: s.start / b,
                end: s.end.div_ceil(b),
            }
        });
        let values = store.load_stored(p, sub.as_ref())?;
        let mut strides = vec![1usize; values.shape.len()];
        for a in (0..strides.len().saturating_sub(1)).rev() {
            strides[a] = strides[a + 1] * values.shape[a + 1];
        }
        let offsets = (0..local.len())
            .map(|a| {
                let origin = slice.filter(|s| s.axis == a).map_or(0, |s| s.start);
                let first = sub.as_ref().filter(|s| s.axis == a).map_or(0, |s| s.start);
                (0..local[a])
                    .map(|i| ((origin + i) / block(a) - first) * strides[a])
                    .collect()
            })
            .collect();
        Ok(Param { values, offsets })
    }

    /// Flat offset of the leading indices `idx` (all axes but the last).
    fn base(&self, idx: &[usize]) -> usize {
        idx.iter().zip(&self.offsets).map(|(&i, o)| o[i]).sum()
    }

    /// Offset contribution of index `j` on the last axis.
    fn last(&self, j: usize) -> usize {
        self.offsets.last().map_or(0, |o| o[j])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inline(name: &str, t: Tensor, dtype: DType) -> Weight {
        Weight {
            perm: None,
            packed_bits: None,
            name: name.into(),
            dtype,
            shape: t.shape.clone(),
            data: WeightData::Inline {
                tensor: Tensor { dtype, ..t },
            },
            quant: None,
        }
    }

    /// int8 [4, 6] with values 0..24 − 12, blocked scale along axis 0 (blocks of 2 rows)
    /// and per-column zero point.
    fn weight() -> Weight {
        let q: Vec<i64> = (0..24).map(|i| i - 12).collect();
        let mut w = inline("w", Tensor::i64(vec![4, 6], q), DType::I8);
        w.quant = Some(Quant {
            dtype: DType::F32,
            scale: Box::new(inline(
                "s",
                Tensor::f32(vec![2, 1], vec![0.5, 0.25]),
                DType::F32,
            )),
            zero_point: Some(Box::new(inline(
                "z",
                Tensor::i64(vec![1, 6], vec![0, 1, 2, 3, 4, 5]),
                DType::I8,
            ))),
        });
        w
    }

    /// Hand-computed: row r, any column c → ((6r + c − 12) − c) × (0.5 if r < 2 else 0.25).
    fn expected(r: usize) -> f32 {
        let s = if r < 2 { 0.5 } else { 0.25 };
        (6.0 * r as f32 - 12.0) * s
    }

    #[test]
    fn dequantises_whole_and_sliced() {
        let store = WeightStore::with_dir(".");
        let w = weight();
        let t = store.load(&w, None).unwrap();
        assert_eq!((t.dtype, t.shape.clone()), (DType::F32, vec![4, 6]));
        let want: Vec<f32> = (0..24).map(|i| expected(i / 6)).collect();
        assert_eq!(t.as_f32().unwrap(), &want[..]);
        assert_eq!(&want[..6], &[-6.0; 6]);
        assert_eq!(&want[18..], &[1.5; 6]);
        // Rows 2..4 (rank 1 of 2): the second scale block only.
        let s = AxisSlice {
            axis: 0,
            start: 2,
            end: 4,
        };
        let t = store.load(&w, Some(&s)).unwrap();
        assert_eq!(t.shape, vec![2, 6]);
        assert_eq!(t.as_f32().unwrap(), &want[12..]);
        // Columns 3..5: zero points 3 and 4, every scale block.
        let s = AxisSlice {
            axis: 1,
            start: 3,
            end: 5,
        };
        let t = store.load(&w, Some(&s)).unwrap();
        assert_eq!(t.shape, vec![4, 2]);
        let cols: Vec<f32> = (0..4).flat_map(|r| [expected(r); 2]).collect();
        assert_eq!(t.as_f32().unwrap(), &cols[..]);
        // A row slice that starts inside a block (row 1..3) maps each row to its block.
        let s = AxisSlice {
            axis: 0,
            start: 1,
            end: 3,
        };
        let t = store.load(&w, Some(&s)).unwrap();
        assert_eq!(t.as_f32().unwrap(), &want[6..18]);
        assert_eq!(&want[6..12], &[-3.0; 6]);
        assert_eq!(&want[12..18], &[0.0; 6]);
    }

    #[test]
    fn uint8_per_tensor_without_zero_point_and_errors() {
        let store = WeightStore::with_dir(".");
        let mut w = inline("u", Tensor::i64(vec![3], vec![0, 128, 255]), DType::U8);
        w.quant = Some(Quant {
            dtype: DType::F32,
            scale: Box::new(inline("s", Tensor::f32(vec![1], vec![0.5]), DType::F32)),
            zero_point: None,
        });
        let t = store.load(&w, None).unwrap();
        assert_eq!(t.as_f32().unwrap(), &[0.0, 64.0, 127.5]);
        // A scale of another rank is refused, naming the weight and the scale.
        if let Some(q) = &mut w.quant {
            *q.scale = inline("s2", Tensor::f32(vec![1, 1], vec![0.5]), DType::F32);
        }
        let e = store.load(&w, None).unwrap_err().to_string();
        assert!(e.contains("'u'") && e.contains("'s2'"), "{e}");
    }

    #[test]
    fn columns_of_a_weight_stored_transposed() {
        // Stored [3, 2] (rows are the logical columns), read as [2, 3] through perm [1, 0];
        // the scale and zero point are stored [3, 1]: one per logical column.
        let perm = Some(vec![1, 0]);
        let q = Tensor::i64(vec![3, 2], vec![1, 2, 3, 4, 5, 6]);
        let mut w = inline("w", q, DType::I8);
        let mut s = inline(
            "s",
            Tensor::f32(vec![3, 1], vec![0.5, 0.25, 2.0]),
            DType::F32,
        );
        let mut z = inline("z", Tensor::i64(vec![3, 1], vec![0, 1, -1]), DType::I8);
        w.shape = vec![2, 3];
        (w.perm, s.perm, z.perm) = (perm.clone(), perm.clone(), perm);
        (s.shape, z.shape) = (vec![1, 3], vec![1, 3]);
        w.quant = Some(Quant {
            dtype: DType::F32,
            scale: Box::new(s),
            zero_point: Some(Box::new(z)),
        });
        let store = WeightStore::with_dir(".");
        let c = store.load_columns(&w, None).unwrap().expect("per-column");
        assert_eq!((c.k, c.n), (2, 3));
        assert_eq!(c.values, [1, 3, 5, 2, 4, 6]);
        assert_eq!(c.scale, [0.5, 0.25, 2.0]);
        assert_eq!(c.zero, [0, 1, -1]);
        // The logical column 1 of the dequantised weight: (3 − 1)·0.25, (4 − 1)·0.25.
        let t = store.load(&w, None).unwrap();
        assert_eq!(t.as_f32().unwrap()[1], 0.5);
        assert_eq!(t.as_f32().unwrap()[4], 0.75);
    }
}
