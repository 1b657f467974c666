//! Weight loading: files are memory-mapped lazily (one map per file, shared) and decoded from
//! little-endian bytes into host tensors, reading only the requested slice.
//!
//! Weight paths are never trusted: a store made from a verified plan
//! ([`WeightStore::verified`]) reads only the files `Plan::verify_files` hashed; any other
//! store confines each path to its folder (`tessera_ir::files::confine`: relative, no `..`,
//! no link out of the folder). Only regular files are opened (never a FIFO or a device).
use crate::RuntimeError;
use memmap2::Mmap;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tessera_ir::files::{confine, open_regular};
use tessera_ir::op::{Op, SliceAttrs, TransposeAttrs};
use tessera_ir::plan::{AxisSlice, VerifiedFiles};
use tessera_ir::{DType, Tensor, TensorData, Weight, WeightData};
use tessera_kernels::eval;

mod quant;

/// Bytes of one mapped file (an empty file has no map).
enum Mapped {
    Map(Mmap),
    Empty,
}

impl Mapped {
    fn bytes(&self) -> &[u8] {
        match self {
            Mapped::Map(m) => m,
            Mapped::Empty => &[],
        }
    }
}

/// Key of a resident weight: file, byte offset, byte length, dtype, shape, slice and the
/// quantisation parameters (as written by `Debug`, which round-trips floats), so two plans
/// of the same model share entries and different weights never collide.
type ResidentKey = (
    PathBuf,
    u64,
    u64,
    DType,
    Vec<usize>,
    Option<(usize, usize, usize)>,
    Option<String>,
);

/// Decoded weights by [`ResidentKey`].
type ResidentMap = HashMap<ResidentKey, Arc<Tensor>>;

/// Resolves and decodes weights of one model. Thread-safe: devices share one store.
pub struct WeightStore {
    dir: PathBuf,
    /// The model file, when known: the one file outside `dir` a weight may name (as a link).
    model: Option<PathBuf>,
    /// When made from a verified plan: each weight path → the checked file, and no other.
    verified: Option<BTreeMap<String, PathBuf>>,
    maps: Mutex<HashMap<PathBuf, Arc<Mapped>>>,
    /// Decoded file-backed weights (or slices) kept by [`WeightStore::load_resident`].
    resident: Mutex<ResidentMap>,
}

impl std::fmt::Debug for WeightStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl WeightStore {
    /// A store for the model at `model_path` (a file, whose directory holds its weights, or
    /// a directory). Weight paths are confined to that directory. Files are mapped on first
    /// use.
    pub fn open(model_path: &Path) -> Result<WeightStore, RuntimeError> {
        let meta = std::fs::metadata(model_path).map_err(|e| RuntimeError::Io {
            path: model_path.display().to_string(),
            msg: e.to_string(),
        })?;
        let (dir, model) = if meta.is_dir() {
            (model_path.to_path_buf(), None)
        } else {
            let dir = tessera_ir::files::dir_of(model_path).to_path_buf();
            (dir, Some(model_path.to_path_buf()))
        };
        Ok(WeightStore {
            dir,
            model,
            verified: None,
            maps: Mutex::new(HashMap::new()),
            resident: Mutex::new(HashMap::new()),
        })
    }

    /// A store that reads exactly the weight files a plan verified (see
    /// `Plan::verify_files`): a weight path the verification did not resolve is refused.
    pub fn verified(files: &VerifiedFiles) -> WeightStore {
        WeightStore {
            dir: tessera_ir::files::dir_of(&files.model).to_path_buf(),
            model: Some(files.model.clone()),
            verified: Some(files.weight_files.clone()),
            maps: Mutex::new(HashMap::new()),
            resident: Mutex::new(HashMap::new()),
        }
    }

    /// A store that confines weight paths to `dir` without checking anything up front
    /// (for graphs whose weights are all inline).
    pub fn with_dir(dir: impl Into<PathBuf>) -> WeightStore {
        WeightStore {
            dir: dir.into(),
            model: None,
            verified: None,
            maps: Mutex::new(HashMap::new()),
            resident: Mutex::new(HashMap::new()),
        }
    }

    /// The directory weight paths are confined to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of files mapped so far.
    pub fn mapped_files(&self) -> usize {
        self.maps.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Number of decoded weights (or slices) held resident by [`WeightStore::load_resident`].
    pub fn resident_count(&self) -> usize {
        self.resident.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// [`WeightStore::load`], decoded once and kept resident: later calls for the same weight
    /// and slice return the same shared tensor without copying (as onnxruntime keeps its
    /// initializers). Inline weights are returned as [`WeightStore::load`] does, not kept.
    /// The tensors live as long as the store.
    pub fn load_resident(
        &self,
        w: &Weight,
        slice: Option<&AxisSlice>,
    ) -> Result<Arc<Tensor>, RuntimeError> {
        let Some(key) = self.resident_key(w, slice)? else {
            return self.load(w, slice).map(Arc::new);
        };
        if let Some(t) = self.resident_cache(w, &key)?.get(&key) {
            return Ok(t.clone());
        }
        // Decoded outside the lock so ranks load different weights in parallel; two ranks
        // racing on the same weight both decode it and the first insert wins.
        let t = Arc::new(self.load(w, slice)?);
        let mut cache = self.resident_cache(w, &key)?;
        Ok(cache.entry(key).or_insert(t).clone())
    }

    /// Drops the resident copy of `w` (or of `slice` of it) that
    /// [`WeightStore::load_resident`] keeps, once a rank holds the weight in another form
    /// (a Conv's weight packed for the direct kernel): the store no longer holds it twice.
    /// A later load decodes it again.
    pub fn release_resident(
        &self,
        w: &Weight,
        slice: Option<&AxisSlice>,
    ) -> Result<(), RuntimeError> {
        if let Some(key) = self.resident_key(w, slice)? {
            self.resident_cache(w, &key)?.remove(&key);
        }
        Ok(())
    }

    /// The resident cache's key of a file weight (None for an inline one, never kept).
    fn resident_key(
        &self,
        w: &Weight,
        slice: Option<&AxisSlice>,
    ) -> Result<Option<ResidentKey>, RuntimeError> {
        let WeightData::File {
            path,
            offset,
            length,
        } = &w.data
        else {
            return Ok(None);
        };
        Ok(Some((
            self.resolve(w, path)?,
            *offset,
            *length,
            w.dtype,
            w.shape.clone(),
            slice.map(|s| (s.axis, s.start, s.end)),
            w.quant.as_ref().map(|q| format!("{q:?}")),
        )))
    }

    /// The locked resident cache (`key` names the weight in the error of a poisoned lock).
    fn resident_cache(
        &self,
        w: &Weight,
        key: &ResidentKey,
    ) -> Result<std::sync::MutexGuard<'_, ResidentMap>, RuntimeError> {
        self.resident.lock().map_err(|_| RuntimeError::Weight {
            name: w.name.clone(),
            path: key.0.display().to_string(),
            msg: "resident weight cache lock poisoned".into(),
        })
    }

    /// The file weight `w` names with `path`: the verified file, or the path confined to
    /// the store's folder.
    fn resolve(&self, w: &Weight, path: &str) -> Result<PathBuf, RuntimeError> {
        let err = |msg: String| RuntimeError::Weight {
            name: w.name.clone(),
            path: path.to_string(),
            msg,
        };
        match &self.verified {
            Some(files) => files.get(path).cloned().ok_or_else(|| {
                err("not among the weight files the plan verification checked".into())
            }),
            None => confine(&self.dir, path, self.model.as_deref())
                .map_err(|e| err(format!("location {e} (folder '{}')", self.dir.display()))),
        }
    }

    fn map(&self, w: &Weight, path: &Path) -> Result<Arc<Mapped>, RuntimeError> {
        let err = |msg: String| RuntimeError::Weight {
            name: w.name.clone(),
            path: path.display().to_string(),
            msg,
        };
        let mut maps = self
            .maps
            .lock()
            .map_err(|_| err("weight cache lock poisoned".into()))?;
        if let Some(m) = maps.get(path) {
            return Ok(m.clone());
        }
        let file = open_regular(path).map_err(|e| err(format!("cannot open: {e}")))?;
        let len = file
            .metadata()
            .map_err(|e| err(format!("cannot stat: {e}")))?
            .len();
        let mapped = if len == 0 {
            Mapped::Empty
        } else {
            // SAFETY: the map is read-only and private to this process; model and weight
            // files are not modified while a run reads them (a concurrent truncation would
            // be a caller error the OS reports as SIGBUS, as with any mmap reader).
            Mapped::Map(unsafe { Mmap::map(&file) }.map_err(|e| err(format!("cannot map: {e}")))?)
        };
        let m = Arc::new(mapped);
        maps.insert(path.to_path_buf(), m.clone());
        Ok(m)
    }

    /// Loads a weight (or only `slice` of it) as a host tensor. Floats widen to f32,
    /// integers to i64; the logical dtype is kept. A quantised weight is dequantised: its
    /// stored slice, the matching part of its scale and zero point, as a float tensor of
    /// its logical dtype.
    /// A weight stored transposed ([`Weight::perm`]) is read as stored (the slice on the
    /// stored axis the logical one came from) and transposed after.
    pub fn load(&self, w: &Weight, slice: Option<&AxisSlice>) -> Result<Tensor, RuntimeError> {
        if let Some(perm) = &w.perm {
            return self.load_transposed(w, perm, slice);
        }
        match &w.quant {
            Some(q) => quant::load(self, w, q, slice),
            None => self.load_stored(w, slice),
        }
    }

    /// A 2-D quantised weight (or `slice` of it) `[K, N]` as its stored integers with one
    /// scale and zero point per column, for integer GEMMs; `None` when it is not quantised,
    /// not 2-D, or its scale or zero point varies along K (blocked quantisation).
    pub fn load_columns(
        &self,
        w: &Weight,
        slice: Option<&AxisSlice>,
    ) -> Result<Option<ColumnQuant>, RuntimeError> {
        let Some(q) = &w.quant else {
            return Ok(None);
        };
        if w.shape.len() != 2 {
            return Ok(None);
        }
        let transposed = match w.perm.as_deref() {
            None => false,
            Some([1, 0]) => true,
            Some(_) => return Ok(None),
        };
        let parts = if transposed {
            let err = |msg: String| RuntimeError::Weight {
                name: w.name.clone(),
                path: quant::location(w).into(),
                msg,
            };
            let stored = w.stored_view().map_err(|e| err(e.to_string()))?;
            let stored_slice = slice.map(|s| AxisSlice {
                axis: 1 - s.axis.min(1),
                start: s.start,
                end: s.end,
            });
            let q = stored.quant.as_ref().unwrap_or(q);
            let p = quant::load_parts(self, &stored, q, stored_slice.as_ref())?;
            let [r, c] = p.shape[..] else {
                return Ok(None);
            };
            quant::QuantParts {
                shape: vec![c, r],
                values: transpose_rows(&p.values, r, c),
                scales: transpose_rows(&p.scales, r, c),
                zeros: transpose_rows(&p.zeros, r, c),
            }
        } else {
            quant::load_parts(self, w, q, slice)?
        };
        let [k, n] = parts.shape[..] else {
            return Ok(None);
        };
        let (scale, zero) = (
            parts.scales[..n.min(parts.scales.len())].to_vec(),
            parts.zeros[..n.min(parts.zeros.len())].to_vec(),
        );
        let per_column = (0..k).all(|r| {
            parts.scales[r * n..(r + 1) * n] == scale[..]
                && parts.zeros[r * n..(r + 1) * n] == zero[..]
        });
        Ok(per_column.then_some(ColumnQuant {
            k,
            n,
            dtype: w.dtype,
            values: parts.values,
            scale,
            zero,
        }))
    }

    /// [`WeightStore::load`] of a weight stored transposed by `perm`.
    fn load_transposed(
        &self,
        w: &Weight,
        perm: &[usize],
        slice: Option<&AxisSlice>,
    ) -> Result<Tensor, RuntimeError> {
        let err = |msg: String| RuntimeError::Weight {
            name: w.name.clone(),
            path: quant::location(w).into(),
            msg,
        };
        let stored = w.stored_view().map_err(|e| err(e.to_string()))?;
        let stored_slice = match slice {
            None => None,
            Some(s) => Some(AxisSlice {
                axis: *perm.get(s.axis).ok_or_else(|| {
                    err(format!(
                        "slice axis {} out of range for {:?}",
                        s.axis, w.shape
                    ))
                })?,
                start: s.start,
                end: s.end,
            }),
        };
        let t = self.load(&stored, stored_slice.as_ref())?;
        let op = Op::Transpose(TransposeAttrs {
            perm: perm.to_vec(),
        });
        let mut out = eval(&op, &[&t]).map_err(|e| err(e.to_string()))?;
        out.pop()
            .ok_or_else(|| err("transpose produced no output".into()))
    }

    /// [`WeightStore::load`] of the stored elements, ignoring any quantisation.
    fn load_stored(&self, w: &Weight, slice: Option<&AxisSlice>) -> Result<Tensor, RuntimeError> {
        let (path, offset, length) = match &w.data {
            WeightData::Inline { tensor } => return inline_slice(w, tensor, slice),
            WeightData::File {
                path,
                offset,
                length,
            } => (path, *offset, *length),
        };
        let full = self.resolve(w, path)?;
        let err = |msg: String| RuntimeError::Weight {
            name: w.name.clone(),
            path: full.display().to_string(),
            msg,
        };
        let es = w.dtype.size_bytes();
        w.check_packing().map_err(|e| err(e.to_string()))?;
        let expected = tessera_ir::checked_bytes(&w.shape, w.dtype)
            .map(|_| w.stored_bytes(tessera_ir::numel(&w.shape)))
            .ok_or_else(|| err(format!("{}{:?} overflows a size", w.dtype, w.shape)))?;
        if length != expected as u64 {
            return Err(err(format!(
                "length {length} bytes does not match {}{:?} ({expected} bytes)",
                w.dtype, w.shape,
            )));
        }
        let map = self.map(w, &full)?;
        let bytes = map.bytes();
        let end = offset
            .checked_add(length)
            .filter(|&e| e <= bytes.len() as u64);
        let Some(end) = end else {
            // Found by the plan_fields fuzz target: `offset + length` itself may overflow.
            return Err(err(format!(
                "bytes {offset}..{offset}+{length} are past the end of the file ({} bytes)",
                bytes.len()
            )));
        };
        let data = &bytes[offset as usize..end as usize];
        if let Some(bits) = w.packed_bits {
            // Sub-byte elements: unpacked whole, then sliced (a slice's rows need not start
            // on a byte).
            let values = unpack(
                data,
                bits,
                w.dtype == DType::I8,
                tessera_ir::numel(&w.shape),
            );
            let t = Tensor::new(w.dtype, w.shape.clone(), TensorData::I64(values))
                .map_err(|e| err(e.to_string()))?;
            return inline_slice(w, &t, slice);
        }
        let Some(s) = slice else {
            return Tensor::new(w.dtype, w.shape.clone(), decode(w.dtype, data))
                .map_err(|e| err(e.to_string()));
        };
        let (outer, dim, inner) = slice_geometry(w, s).map_err(err)?;
        let row = dim * inner * es;
        let mut chunks = Vec::with_capacity(outer);
        for o in 0..outer {
            let a = o * row + s.start * inner * es;
            let b = o * row + s.end * inner * es;
            chunks.push(decode(w.dtype, &data[a..b]));
        }
        let mut shape = w.shape.clone();
        shape[s.axis] = s.end - s.start;
        Tensor::new(w.dtype, shape, concat_data(w.dtype, chunks)).map_err(|e| err(e.to_string()))
    }
}

/// The `[c, r]` transpose of a row-major `[r, c]` matrix.
fn transpose_rows<T: Copy>(v: &[T], r: usize, c: usize) -> Vec<T> {
    (0..r * c).map(|i| v[(i % r) * c + i / r]).collect()
}

/// A quantised `[K, N]` weight with one scale and zero point per column
/// ([`WeightStore::load_columns`]).
pub struct ColumnQuant {
    /// Rows.
    pub k: usize,
    /// Columns.
    pub n: usize,
    /// The stored type (int8, uint8, ...).
    pub dtype: DType,
    /// Stored integers, `[K, N]` row-major.
    pub values: Vec<i64>,
    /// Per column: the scale.
    pub scale: Vec<f32>,
    /// Per column: the zero point (0 without one).
    pub zero: Vec<i64>,
}

/// Checks a slice against a weight's shape and returns (outer, extent, inner) around its axis.
fn slice_geometry(w: &Weight, s: &AxisSlice) -> Result<(usize, usize, usize), String> {
    if s.axis >= w.shape.len() || s.start > s.end || s.end > w.shape[s.axis] {
        return Err(format!(
            "slice axis {} [{}..{}) out of range for shape {:?}",
            s.axis, s.start, s.end, w.shape
        ));
    }
    let outer = w.shape[..s.axis].iter().product();
    let inner = w.shape[s.axis + 1..].iter().product();
    Ok((outer, w.shape[s.axis], inner))
}

fn inline_slice(w: &Weight, t: &Tensor, slice: Option<&AxisSlice>) -> Result<Tensor, RuntimeError> {
    let err = |msg: String| RuntimeError::Weight {
        name: w.name.clone(),
        path: "inline".into(),
        msg,
    };
    let Some(s) = slice else { return Ok(t.clone()) };
    slice_geometry(w, s).map_err(err)?;
    let op = Op::Slice(SliceAttrs {
        axes: vec![s.axis],
        starts: vec![s.start as i64],
        ends: vec![s.end as i64],
        steps: vec![1],
    });
    let mut out = eval(&op, &[t]).map_err(|e| err(e.to_string()))?;
    out.pop()
        .ok_or_else(|| err("slice produced no output".into()))
}

fn concat_data(dtype: DType, chunks: Vec<TensorData>) -> TensorData {
    let mut acc = decode(dtype, &[]);
    for c in chunks {
        match (&mut acc, c) {
            (TensorData::F32(a), TensorData::F32(b)) => a.extend(b),
            (TensorData::I64(a), TensorData::I64(b)) => a.extend(b),
            (TensorData::Bool(a), TensorData::Bool(b)) => a.extend(b),
            // decode() gives one storage class per dtype, so chunks always match.
            _ => {}
        }
    }
    acc
}

/// The first `n` elements of `bits`-bit integers packed from the low bits of each byte up
/// (`bits` 2 or 4, which divide 8), sign-extended when `signed`.
fn unpack(bytes: &[u8], bits: u8, signed: bool, n: usize) -> Vec<i64> {
    let per_byte = (8 / bits) as usize;
    let mask = (1u8 << bits) - 1;
    let shift = 8 - bits as u32;
    (0..n)
        .map(|i| {
            let v = (bytes[i / per_byte] >> ((i % per_byte) as u32 * bits as u32)) & mask;
            if signed {
                // The element's sign bit to bit 7, then an arithmetic shift back.
                (((v << shift) as i8) >> shift) as i64
            } else {
                v as i64
            }
        })
        .collect()
}

/// Decodes little-endian bytes of `dtype` (a whole number of elements) into host storage.
pub fn decode(dtype: DType, bytes: &[u8]) -> TensorData {
    fn le<const N: usize>(bytes: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
        // chunks_exact yields slices of exactly N bytes, so the conversion cannot fail.
        bytes
            .chunks_exact(N)
            .map(|c| <[u8; N]>::try_from(c).unwrap_or([0; N]))
    }
    match dtype {
        DType::F32 => TensorData::F32(le::<4>(bytes).map(f32::from_le_bytes).collect()),
        DType::F16 => TensorData::F32(
            le::<2>(bytes)
                .map(|b| half::f16::from_le_bytes(b).to_f32())
                .collect(),
        ),
        DType::BF16 => TensorData::F32(
            le::<2>(bytes)
                .map(|b| half::bf16::from_le_bytes(b).to_f32())
                .collect(),
        ),
        DType::F64 => TensorData::F32(
            le::<8>(bytes)
                .map(|b| f64::from_le_bytes(b) as f32)
                .collect(),
        ),
        DType::I64 => TensorData::I64(le::<8>(bytes).map(i64::from_le_bytes).collect()),
        DType::I32 => TensorData::I64(
            le::<4>(bytes)
                .map(|b| i32::from_le_bytes(b) as i64)
                .collect(),
        ),
        DType::I16 => TensorData::I64(
            le::<2>(bytes)
                .map(|b| i16::from_le_bytes(b) as i64)
                .collect(),
        ),
        DType::I8 => TensorData::I64(bytes.iter().map(|&b| b as i8 as i64).collect()),
        DType::U8 => TensorData::I64(bytes.iter().map(|&b| b as i64).collect()),
        DType::Bool => TensorData::Bool(bytes.iter().map(|&b| b != 0).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_weight(name: &str, dtype: DType, shape: Vec<usize>, path: &str, offset: u64) -> Weight {
        let length = (shape.iter().product::<usize>() * dtype.size_bytes()) as u64;
        Weight {
            perm: None,
            packed_bits: None,
            name: name.into(),
            dtype,
            shape,
            data: WeightData::File {
                path: path.into(),
                offset,
                length,
            },
            quant: None,
        }
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) {
        let mut f = std::fs::File::create(dir.join(name)).unwrap();
        f.write_all(bytes).unwrap();
    }

    #[test]
    fn loads_whole_and_sliced_f32_from_offset() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = vec![0xAAu8; 3]; // 3 junk bytes before the tensor
        for i in 0..12 {
            bytes.extend((i as f32).to_le_bytes());
        }
        write(dir.path(), "w.bin", &bytes);
        write(dir.path(), "model.onnx", b"");
        let store = WeightStore::open(&dir.path().join("model.onnx")).unwrap();
        let w = file_weight("w", DType::F32, vec![3, 4], "w.bin", 3);
        let t = store.load(&w, None).unwrap();
        assert_eq!(
            t.as_f32().unwrap(),
            &(0..12).map(|i| i as f32).collect::<Vec<_>>()[..]
        );
        // Columns 1..3 of each row.
        let s = store
            .load(
                &w,
                Some(&AxisSlice {
                    axis: 1,
                    start: 1,
                    end: 3,
                }),
            )
            .unwrap();
        assert_eq!(s.shape, vec![3, 2]);
        assert_eq!(s.as_f32().unwrap(), &[1.0, 2.0, 5.0, 6.0, 9.0, 10.0]);
        let r = store
            .load(
                &w,
                Some(&AxisSlice {
                    axis: 0,
                    start: 2,
                    end: 3,
                }),
            )
            .unwrap();
        assert_eq!(r.as_f32().unwrap(), &[8.0, 9.0, 10.0, 11.0]);
        assert_eq!(store.mapped_files(), 1);
    }

    #[test]
    fn packed_weights_unpack_signed_and_unsigned_and_slice() {
        // 4-bit: a 2×3 tensor packed low nibble first: values 1, -2, 7, -8, 0, 5 (int4).
        let vals: [i64; 6] = [1, -2, 7, -8, 0, 5];
        let nib = |v: i64| (v as u8) & 0xF;
        let bytes: Vec<u8> = vals
            .chunks(2)
            .map(|p| nib(p[0]) | (nib(p[1]) << 4))
            .collect();
        assert_eq!(unpack(&bytes, 4, true, 6), vals);
        let unsigned: Vec<i64> = vals.iter().map(|&v| nib(v) as i64).collect();
        assert_eq!(unpack(&bytes, 4, false, 6), unsigned);
        // 2-bit: 0b11_10_01_00 holds 0, 1, 2, 3 (unsigned), 0, 1, -2, -1 (signed).
        assert_eq!(unpack(&[0b1110_0100], 2, false, 4), [0, 1, 2, 3]);
        assert_eq!(unpack(&[0b1110_0100], 2, true, 4), [0, 1, -2, -1]);

        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "w.bin", &[&[0xEE][..], &bytes].concat());
        write(dir.path(), "model.onnx", b"");
        let store = WeightStore::open(&dir.path().join("model.onnx")).unwrap();
        let mut w = file_weight("w", DType::I8, vec![2, 3], "w.bin", 1);
        w.packed_bits = Some(4);
        let WeightData::File { length, .. } = &mut w.data else {
            unreachable!("file_weight makes a file weight")
        };
        *length = 3;
        assert_eq!(w.size_bytes(), 3, "6 4-bit values are 3 bytes");
        assert_eq!(store.load(&w, None).unwrap().as_i64().unwrap(), &vals);
        // Column 1 of both rows: its elements straddle bytes.
        let col = AxisSlice {
            axis: 1,
            start: 1,
            end: 2,
        };
        let s = store.load(&w, Some(&col)).unwrap();
        assert_eq!(
            (s.shape.clone(), s.as_i64().unwrap()),
            (vec![2, 1], &[-2, 0][..])
        );
        // A length that does not match the packed size, and a width that cannot be packed.
        let mut bad = w.clone();
        if let WeightData::File { length, .. } = &mut bad.data {
            *length = 6;
        }
        let e = store.load(&bad, None).unwrap_err().to_string();
        assert!(e.contains("length 6 bytes"), "{e}");
        bad = w.clone();
        bad.packed_bits = Some(3);
        let e = store.load(&bad, None).unwrap_err().to_string();
        assert!(e.contains("only 2 or 4 bits"), "{e}");
    }

    #[test]
    fn decodes_every_dtype() {
        let h = half::f16::from_f32(1.5).to_le_bytes();
        assert_eq!(decode(DType::F16, &h), TensorData::F32(vec![1.5]));
        let b = half::bf16::from_f32(-2.0).to_le_bytes();
        assert_eq!(decode(DType::BF16, &b), TensorData::F32(vec![-2.0]));
        assert_eq!(
            decode(DType::F64, &0.25f64.to_le_bytes()),
            TensorData::F32(vec![0.25])
        );
        assert_eq!(
            decode(DType::I64, &(-5i64).to_le_bytes()),
            TensorData::I64(vec![-5])
        );
        assert_eq!(
            decode(DType::I32, &(-7i32).to_le_bytes()),
            TensorData::I64(vec![-7])
        );
        assert_eq!(decode(DType::I8, &[0xFF]), TensorData::I64(vec![-1]));
        assert_eq!(decode(DType::U8, &[0xFF]), TensorData::I64(vec![255]));
        assert_eq!(
            decode(DType::Bool, &[0, 2]),
            TensorData::Bool(vec![false, true])
        );
    }

    #[test]
    fn errors_name_weight_and_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "small.bin", &[0u8; 8]);
        let store = WeightStore::with_dir(dir.path());
        let missing = file_weight("emb", DType::F32, vec![2], "nope.bin", 0);
        let e = store.load(&missing, None).unwrap_err().to_string();
        assert!(
            e.contains("emb") && e.contains("nope.bin") && e.contains("cannot be resolved"),
            "{e}"
        );
        let past = file_weight("big", DType::F32, vec![4], "small.bin", 0);
        let e = store.load(&past, None).unwrap_err().to_string();
        assert!(e.contains("big") && e.contains("past the end"), "{e}");
        let mut bad_len = file_weight("odd", DType::F32, vec![2], "small.bin", 0);
        bad_len.data = WeightData::File {
            path: "small.bin".into(),
            offset: 0,
            length: 7,
        };
        let e = store.load(&bad_len, None).unwrap_err().to_string();
        assert!(e.contains("odd") && e.contains("does not match"), "{e}");
        let ok = file_weight("ok", DType::F32, vec![2], "small.bin", 0);
        let e = store
            .load(
                &ok,
                Some(&AxisSlice {
                    axis: 0,
                    start: 1,
                    end: 3,
                }),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("out of range"), "{e}");
    }

    #[test]
    fn inline_weights_and_slices() {
        let t = Tensor::i64(vec![2, 3], vec![0, 1, 2, 3, 4, 5]);
        let w = Weight {
            perm: None,
            packed_bits: None,
            name: "c".into(),
            dtype: DType::I64,
            shape: vec![2, 3],
            data: WeightData::Inline { tensor: t.clone() },
            quant: None,
        };
        let store = WeightStore::with_dir(".");
        assert_eq!(store.load(&w, None).unwrap(), t);
        let s = store
            .load(
                &w,
                Some(&AxisSlice {
                    axis: 1,
                    start: 2,
                    end: 3,
                }),
            )
            .unwrap();
        assert_eq!(s.as_i64().unwrap(), &[2, 5]);
    }

    #[test]
    fn transposed_weights_load_whole_and_sliced_on_the_logical_axis() {
        // Stored [2, 3] = [[0, 1, 2], [3, 4, 5]]; logical [3, 2] = its transpose.
        let stored = Tensor::i64(vec![2, 3], vec![0, 1, 2, 3, 4, 5]);
        let w = Weight {
            name: "wt".into(),
            dtype: DType::I64,
            shape: vec![3, 2],
            data: WeightData::Inline { tensor: stored },
            quant: None,
            perm: Some(vec![1, 0]),
            packed_bits: None,
        };
        let store = WeightStore::with_dir(".");
        let whole = store.load(&w, None).unwrap();
        assert_eq!(whole.shape, vec![3, 2]);
        assert_eq!(whole.as_i64().unwrap(), &[0, 3, 1, 4, 2, 5]);
        let rows = |axis, start, end| {
            store
                .load(&w, Some(&AxisSlice { axis, start, end }))
                .unwrap()
        };
        let r = rows(0, 1, 3);
        assert_eq!(
            (r.shape.clone(), r.as_i64().unwrap()),
            (vec![2, 2], &[1, 4, 2, 5][..])
        );
        let c = rows(1, 1, 2);
        assert_eq!(
            (c.shape.clone(), c.as_i64().unwrap()),
            (vec![3, 1], &[3, 4, 5][..])
        );
        let bad = Weight {
            perm: Some(vec![0, 0]),
            packed_bits: None,
            ..w
        };
        let e = store.load(&bad, None).unwrap_err().to_string();
        assert!(e.contains("wt") && e.contains("not a permutation"), "{e}");
    }
}
