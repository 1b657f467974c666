//! NumPy `.npy` files ⇄ host tensors (through the `npyz` crate).
//!
//! Read: f32, f16, f64, bf16-free float types; i64, i32, i16, i8, u8; bool. Floats are held
//! as f32, integers as i64 (see [`tessera_ir::Tensor`]); the logical dtype is kept. Write: the
//! tensor's logical dtype (bf16, which NumPy lacks, is written as f32). C order only.
use std::io::{BufReader, BufWriter, Read};
use std::path::{Path, PathBuf};
use tessera_ir::{DType, Tensor, TensorData};
use thiserror::Error;

/// Reading or writing a `.npy` file failed.
#[derive(Debug, Error)]
#[error("{}: {msg}", path.display())]
pub struct NpyError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub msg: String,
}

fn err(path: &Path, msg: impl std::fmt::Display) -> NpyError {
    NpyError {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

/// Reads a `.npy` file into a host tensor. Only a regular file is read: a FIFO, device,
/// socket or directory is refused before it could block.
pub fn read_npy(path: &Path) -> Result<Tensor, NpyError> {
    let file = tessera_ir::files::open_regular(path).map_err(|e| match e {
        tessera_ir::files::FileError::NotRegular { kind, .. } => {
            err(path, format!("not a regular file (it is a {kind})"))
        }
        tessera_ir::files::FileError::Io { source, .. } => err(path, source),
    })?;
    read_npy_from(BufReader::new(file), path)
}

/// Reads `.npy` bytes from `reader` as [`read_npy`] does (`path` names the source in
/// errors; nothing is opened).
pub fn read_npy_from<R: Read>(mut reader: R, path: &Path) -> Result<Tensor, NpyError> {
    let head =
        read_header(&mut reader).map_err(|msg| err(path, format!("not a .npy file: {msg}")))?;
    let npy = npyz::NpyFile::new(std::io::Cursor::new(head).chain(reader))
        .map_err(|e| err(path, format!("not a .npy file: {e}")))?;
    if npy.order() != npyz::Order::C && npy.shape().iter().filter(|d| **d > 1).count() > 1 {
        return Err(err(
            path,
            "Fortran-ordered arrays are not supported (save with np.ascontiguousarray)",
        ));
    }
    let shape: Vec<usize> = npy.shape().iter().map(|d| *d as usize).collect();
    let npyz::DType::Plain(ts) = npy.dtype() else {
        return Err(err(
            path,
            format!("unsupported dtype {}", npy.dtype().descr()),
        ));
    };
    let size = ts.size_field();
    let bad = |e: std::io::Error| err(path, e);
    use npyz::TypeChar as C;
    let (dtype, data) = match (ts.type_char(), size) {
        (C::Float, 4) => (
            DType::F32,
            TensorData::F32(npy.into_vec::<f32>().map_err(bad)?),
        ),
        (C::Float, 2) => {
            let v = npy.into_vec::<half::f16>().map_err(bad)?;
            (
                DType::F16,
                TensorData::F32(v.into_iter().map(f32::from).collect()),
            )
        }
        (C::Float, 8) => {
            let v = npy.into_vec::<f64>().map_err(bad)?;
            (
                DType::F64,
                TensorData::F32(v.into_iter().map(|x| x as f32).collect()),
            )
        }
        (C::Int, 8) => (
            DType::I64,
            TensorData::I64(npy.into_vec::<i64>().map_err(bad)?),
        ),
        (C::Int, 4) => (DType::I32, ints(npy.into_vec::<i32>().map_err(bad)?)),
        (C::Int, 2) => (DType::I16, ints(npy.into_vec::<i16>().map_err(bad)?)),
        (C::Int, 1) => (DType::I8, ints(npy.into_vec::<i8>().map_err(bad)?)),
        (C::Uint, 1) => (DType::U8, ints(npy.into_vec::<u8>().map_err(bad)?)),
        (C::Bool, 1) => (
            DType::Bool,
            TensorData::Bool(npy.into_vec::<bool>().map_err(bad)?),
        ),
        _ => return Err(err(path, format!("unsupported dtype {ts}"))),
    };
    Tensor::new(dtype, shape, data).map_err(|e| err(path, e))
}

/// The longest header read, as NumPy's own `max_header_size` (a header of a plain array is
/// about 120 bytes).
pub const MAX_HEADER_BYTES: usize = 10_000;

/// Deepest nesting of brackets accepted in a header (a plain array's has 2).
const MAX_HEADER_NESTING: usize = 4;

/// Reads the magic string, version, header length and header of a `.npy` stream and returns
/// those bytes, checked before `npyz` parses them: a header longer than
/// [`MAX_HEADER_BYTES`] (a 4 GiB length would be allocated) or nested deeper than a plain
/// array's (`npyz`'s parser takes exponential time on `{{{{…`) is refused.
fn read_header<R: Read>(reader: &mut R) -> Result<Vec<u8>, String> {
    let mut head = vec![0u8; 8];
    reader
        .read_exact(&mut head)
        .map_err(|e| format!("reading the magic string: {e}"))?;
    if &head[..6] != b"\x93NUMPY" {
        return Err("no \\x93NUMPY magic string".into());
    }
    let len = match head[6] {
        1 => {
            let mut b = [0u8; 2];
            reader.read_exact(&mut b).map_err(|e| e.to_string())?;
            head.extend_from_slice(&b);
            usize::from(u16::from_le_bytes(b))
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            reader.read_exact(&mut b).map_err(|e| e.to_string())?;
            head.extend_from_slice(&b);
            usize::try_from(u32::from_le_bytes(b)).unwrap_or(usize::MAX)
        }
        v => return Err(format!("unsupported format version {v}")),
    };
    if len > MAX_HEADER_BYTES {
        return Err(format!(
            "header of {len} bytes (more than {MAX_HEADER_BYTES})"
        ));
    }
    let start = head.len();
    head.resize(start + len, 0);
    reader
        .read_exact(&mut head[start..])
        .map_err(|e| format!("reading the {len}-byte header: {e}"))?;
    // Brackets inside strings count too: a plain array's strings hold none.
    let mut depth = 0usize;
    for &c in &head[start..] {
        match c {
            b'{' | b'[' | b'(' => {
                depth += 1;
                if depth > MAX_HEADER_NESTING {
                    return Err(format!(
                        "header nested more than {MAX_HEADER_NESTING} brackets deep"
                    ));
                }
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    check_shape_product(&head[start..])?;
    Ok(head)
}

/// Refuses a header whose `'shape'` multiplies out past `u64` (`npyz` would overflow computing
/// the element count). A header without a readable shape is left to `npyz` to reject.
fn check_shape_product(header: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(header);
    let Some(at) = text.find("'shape'") else {
        return Ok(());
    };
    let rest = &text[at..];
    let (Some(open), Some(close)) = (rest.find('('), rest.find(')')) else {
        return Ok(());
    };
    if close < open {
        return Ok(());
    }
    let mut count: u64 = 1;
    for dim in rest[open + 1..close].split(',').map(str::trim) {
        if dim.is_empty() {
            continue;
        }
        let Ok(d) = dim.parse::<u64>() else {
            return Err(format!("shape dimension {dim:?} is not a size"));
        };
        count = count.checked_mul(d).ok_or_else(|| {
            format!(
                "shape ({}) has more than 2^64 elements",
                &rest[open + 1..close]
            )
        })?;
    }
    Ok(())
}

fn ints<T: Into<i64>>(v: Vec<T>) -> TensorData {
    TensorData::I64(v.into_iter().map(Into::into).collect())
}

/// Writes a host tensor as a `.npy` file in its logical dtype.
pub fn write_npy(path: &Path, t: &Tensor) -> Result<(), NpyError> {
    let shape: Vec<u64> = t.shape.iter().map(|d| *d as u64).collect();
    // Never through a symbolic link (out/y.npy linked to a file elsewhere) nor into a FIFO.
    let file = tessera_ir::files::create_regular(path).map_err(|e| err(path, e))?;
    let w = BufWriter::new(file);
    let res = match (&t.data, t.dtype) {
        (TensorData::F32(v), DType::F16) => {
            write_all(w, &shape, v.iter().map(|x| half::f16::from_f32(*x)))
        }
        (TensorData::F32(v), DType::F64) => write_all(w, &shape, v.iter().map(|x| *x as f64)),
        (TensorData::F32(v), _) => write_all(w, &shape, v.iter().copied()),
        (TensorData::I64(v), DType::I32) => write_all(w, &shape, v.iter().map(|x| *x as i32)),
        (TensorData::I64(v), DType::I16) => write_all(w, &shape, v.iter().map(|x| *x as i16)),
        (TensorData::I64(v), DType::I8) => write_all(w, &shape, v.iter().map(|x| *x as i8)),
        (TensorData::I64(v), DType::U8) => write_all(w, &shape, v.iter().map(|x| *x as u8)),
        (TensorData::I64(v), _) => write_all(w, &shape, v.iter().copied()),
        (TensorData::Bool(v), _) => write_all(w, &shape, v.iter().copied()),
    };
    res.map_err(|e| err(path, e))
}

fn write_all<T, W>(w: W, shape: &[u64], items: impl Iterator<Item = T>) -> std::io::Result<()>
where
    T: npyz::Serialize + npyz::AutoSerialize,
    W: std::io::Write,
{
    use npyz::WriterBuilder;
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(w)
        .begin_nd()?;
    writer.extend(items)?;
    writer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_supported_dtype() {
        let dir = tempfile::tempdir().unwrap();
        let cases = vec![
            Tensor::f32(vec![2, 3], vec![1.0, -2.5, 3.25, 0.0, 1e-3, 7.0]),
            Tensor {
                dtype: DType::F16,
                shape: vec![3],
                data: TensorData::F32(vec![0.5, -1.0, 2.0]),
            },
            Tensor::i64(vec![2, 2], vec![1, -2, 3, i64::MAX]),
            Tensor {
                dtype: DType::I32,
                shape: vec![2],
                data: TensorData::I64(vec![-7, 9]),
            },
            Tensor::bool(vec![3], vec![true, false, true]),
            Tensor::f32(vec![], vec![4.0]),
        ];
        for (i, t) in cases.into_iter().enumerate() {
            let p = dir.path().join(format!("{i}.npy"));
            write_npy(&p, &t).unwrap();
            assert_eq!(read_npy(&p).unwrap(), t, "case {i}");
        }
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("junk.npy");
        std::fs::write(&p, b"not numpy").unwrap();
        let e = read_npy(&p).unwrap_err().to_string();
        assert!(
            e.contains("junk.npy") && e.contains("not a .npy file"),
            "{e}"
        );
        let e = read_npy(&dir.path().join("missing.npy"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.npy"), "{e}");
    }

    /// A `.npy` stream: magic, version 1, the header padded as NumPy pads it, then `body`.
    fn npy_v1(header: &str, body: &[u8]) -> Vec<u8> {
        let mut h = header.to_string();
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(body);
        out
    }

    /// Found by the `npy_read` fuzz target: a header of nested braces took npyz's parser
    /// minutes (exponential); a version-2 header length of 4 GiB would be allocated.
    #[test]
    fn pathological_headers_are_refused_at_once() {
        let p = Path::new("fuzz.npy");
        let ok = npy_v1(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
            &[0, 0, 128, 63, 0, 0, 0, 64],
        );
        assert_eq!(
            read_npy_from(&ok[..], p).unwrap(),
            Tensor::f32(vec![2], vec![1.0, 2.0])
        );
        let nested = format!(
            "{{'descr': {}'<f4'{}, 'fortran_order': False, 'shape': (2,), }}",
            "{".repeat(200),
            "}".repeat(200)
        );
        let start = std::time::Instant::now();
        let e = read_npy_from(&npy_v1(&nested, &[0; 8])[..], p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("fuzz.npy") && e.contains("nested"), "{e}");
        assert!(start.elapsed().as_secs() < 1);
        let mut huge = b"\x93NUMPY\x02\x00".to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        let e = read_npy_from(&huge[..], p).unwrap_err().to_string();
        assert!(e.contains("header of 4294967295 bytes"), "{e}");
    }

    /// Found by the `npy_read` fuzz target: a shape whose element count overflows `u64`
    /// made `npyz` overflow (a panic in checked builds, a wrong length otherwise).
    #[test]
    fn shapes_past_u64_are_refused() {
        let p = Path::new("fuzz.npy");
        let bytes = npy_v1(
            "{'descr': '<f2', 'fortran_order': False, 'shape': (0000000000000008643000000000, 86430000000, 3), }",
            &[0; 8],
        );
        let e = read_npy_from(&bytes[..], p).unwrap_err().to_string();
        assert!(e.contains("fuzz.npy") && e.contains("2^64"), "{e}");
        // A large but representable shape with no data behind it is a clean read error.
        let bytes = npy_v1(
            "{'descr': '<f2', 'fortran_order': False, 'shape': (4000000000, 4000000000), }",
            &[0; 8],
        );
        let e = read_npy_from(&bytes[..], p).unwrap_err().to_string();
        assert!(e.contains("fuzz.npy"), "{e}");
    }
}
