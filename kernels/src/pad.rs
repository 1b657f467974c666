//! Pad: constant, reflect, edge and wrap modes; negative pads crop first (as the ONNX
//! reference does), then the remaining positive pads are filled.
use super::{describe, make, Elem, KResult};
use tessera_ir::op::{PadAttrs, PadMode};
use tessera_ir::{Tensor, TensorData};

/// Where output coordinate `o` of one axis reads: `Some(input coordinate)` or None (fill).
fn axis_map(d: usize, b: i64, e: i64, mode: PadMode) -> KResult<Vec<Option<usize>>> {
    let crop_lo = (-b).max(0) as usize;
    let crop_hi = (-e).max(0) as usize;
    let dc = d
        .checked_sub(crop_lo + crop_hi)
        .ok_or_else(|| format!("pads {b}, {e} crop more than the extent {d}"))?;
    let (pb, pe) = (b.max(0) as usize, e.max(0) as usize);
    let n = dc + pb + pe;
    let mut map = Vec::with_capacity(n);
    for o in 0..n {
        let i = o as i64 - pb as i64;
        let inside = i >= 0 && (i as usize) < dc;
        let j = if inside {
            Some(i as usize)
        } else if dc == 0 {
            if mode != PadMode::Constant {
                return Err(format!("{mode:?} padding of an empty axis"));
            }
            None
        } else {
            let dci = dc as i64;
            match mode {
                PadMode::Constant => None,
                PadMode::Edge => Some(i.clamp(0, dci - 1) as usize),
                PadMode::Wrap => Some(i.rem_euclid(dci) as usize),
                PadMode::Reflect if dc == 1 => Some(0),
                PadMode::Reflect => {
                    let period = 2 * (dci - 1);
                    let r = i.rem_euclid(period);
                    Some(if r >= dci { period - r } else { r } as usize)
                }
            }
        };
        map.push(j.map(|j| j + crop_lo));
    }
    Ok(map)
}

fn pad_typed<T: Elem>(shape: &[usize], v: &[T], maps: &[Vec<Option<usize>>], fill: T) -> Vec<T> {
    let r = shape.len();
    let mut strides = vec![1usize; r];
    for a in (0..r.saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * shape[a + 1];
    }
    let out_shape: Vec<usize> = maps.iter().map(Vec::len).collect();
    let total: usize = out_shape.iter().product();
    let mut out = Vec::with_capacity(total);
    if r == 0 {
        return v.to_vec();
    }
    let mut idx = vec![0usize; r];
    for _ in 0..total {
        let mut off = Some(0usize);
        for a in 0..r {
            off = match (off, maps[a][idx[a]]) {
                (Some(o), Some(i)) => Some(o + i * strides[a]),
                _ => None,
            };
        }
        out.push(off.map_or(fill, |o| v[o]));
        for a in (0..r).rev() {
            idx[a] += 1;
            if idx[a] < out_shape[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    out
}

/// Pads `x`.
pub(crate) fn pad(a: &PadAttrs, x: &Tensor) -> KResult<Tensor> {
    let r = x.shape.len();
    if a.pads.len() != 2 * r {
        return Err(format!("pads {:?} do not fit {}", a.pads, describe(x)));
    }
    let maps = (0..r)
        .map(|i| axis_map(x.shape[i], a.pads[i], a.pads[r + i], a.mode))
        .collect::<KResult<Vec<_>>>()?;
    let shape: Vec<usize> = maps.iter().map(Vec::len).collect();
    let data = match &x.data {
        TensorData::F32(v) => TensorData::F32(pad_typed(&x.shape, v, &maps, a.value)),
        TensorData::I64(v) => TensorData::I64(pad_typed(&x.shape, v, &maps, a.value as i64)),
        TensorData::Bool(v) => TensorData::Bool(pad_typed(&x.shape, v, &maps, a.value != 0.0)),
    };
    make(x.dtype, shape, data)
}
