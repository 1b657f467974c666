//! NumPy `.npy` files ⇄ host tensors (through the `npyz` crate).
//!
//! Read: f32, f16, f64, bf16-free float types; i64, i32, i16, i8, u8; bool. Floats are held
//! as f32, integers as i64 (see [`tessera_ir::Tensor`]); the logical dtype is kept. Write: the
//! tensor's logical dtype (bf16, which NumPy lacks, is written as f32). C order only.
use std::fs::File;
use std::io::{BufReader, BufWriter};
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
    let npy = npyz::NpyFile::new(BufReader::new(file))
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

fn ints<T: Into<i64>>(v: Vec<T>) -> TensorData {
    TensorData::I64(v.into_iter().map(Into::into).collect())
}

/// Writes a host tensor as a `.npy` file in its logical dtype.
pub fn write_npy(path: &Path, t: &Tensor) -> Result<(), NpyError> {
    let shape: Vec<u64> = t.shape.iter().map(|d| *d as u64).collect();
    let file = File::create(path).map_err(|e| err(path, e))?;
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
}
