//! numpy arrays ⇄ runtime tensors, and ONNX type strings.
//!
//! Feeds are copied once, into the runtime's tensor (which owns its elements); outputs are
//! handed to numpy without a copy when numpy has their element type (the tensor's vector
//! becomes the array's buffer).
use half::f16;
use numpy::ndarray::{ArrayD, IxDyn};
use numpy::{
    Element, IntoPyArray, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use tessera_ir::{DType, Tensor, TensorData};

/// onnxruntime's type string for a dtype (`NodeArg.type`).
pub fn onnx_type(d: DType) -> &'static str {
    match d {
        DType::F32 => "tensor(float)",
        DType::F16 => "tensor(float16)",
        DType::BF16 => "tensor(bfloat16)",
        DType::F64 => "tensor(double)",
        DType::I64 => "tensor(int64)",
        DType::I32 => "tensor(int32)",
        DType::I16 => "tensor(int16)",
        DType::I8 => "tensor(int8)",
        DType::U8 => "tensor(uint8)",
        DType::Bool => "tensor(bool)",
    }
}

/// The array's elements in logical (C) order: the slice itself when contiguous.
fn elements<T: Element + Copy>(a: &Bound<'_, PyArrayDyn<T>>) -> PyResult<Vec<T>> {
    let ro = a.try_readonly()?;
    Ok(match ro.as_slice() {
        Ok(s) => s.to_vec(),
        Err(_) => ro.as_array().iter().copied().collect(),
    })
}

/// Converts the feed `obj` (a numpy array, or anything `numpy.asarray` accepts) to a tensor
/// of its own element type; the session then checks dtype and shape against the plan.
/// `Err(msg)` names what numpy type is not supported.
pub fn feed_to_tensor(py: Python<'_>, name: &str, obj: &Bound<'_, PyAny>) -> PyResult<Tensor> {
    let arr: Bound<'_, PyAny> = if obj.downcast::<PyUntypedArray>().is_ok() {
        obj.clone()
    } else {
        py.import("numpy")?.call_method1("asarray", (obj,))?
    };
    let untyped = arr.downcast::<PyUntypedArray>()?;
    let shape = untyped.shape().to_vec();
    let dt = untyped.dtype();
    macro_rules! ints {
        ($t:ty, $d:expr) => {
            if dt.is_equiv_to(&numpy::dtype::<$t>(py)) {
                let v = elements(arr.downcast::<PyArrayDyn<$t>>()?)?;
                let data = TensorData::I64(v.into_iter().map(i64::from).collect());
                return Ok(Tensor {
                    dtype: $d,
                    shape,
                    data,
                });
            }
        };
    }
    if dt.is_equiv_to(&numpy::dtype::<f32>(py)) {
        let v = elements(arr.downcast::<PyArrayDyn<f32>>()?)?;
        return Ok(Tensor {
            dtype: DType::F32,
            shape,
            data: TensorData::F32(v),
        });
    }
    if dt.is_equiv_to(&numpy::dtype::<f64>(py)) {
        let v = elements(arr.downcast::<PyArrayDyn<f64>>()?)?;
        let data = TensorData::F32(v.into_iter().map(|x| x as f32).collect());
        return Ok(Tensor {
            dtype: DType::F64,
            shape,
            data,
        });
    }
    if dt.is_equiv_to(&numpy::dtype::<f16>(py)) {
        let v = elements(arr.downcast::<PyArrayDyn<f16>>()?)?;
        let data = TensorData::F32(v.into_iter().map(f32::from).collect());
        return Ok(Tensor {
            dtype: DType::F16,
            shape,
            data,
        });
    }
    if dt.is_equiv_to(&numpy::dtype::<i64>(py)) {
        let v = elements(arr.downcast::<PyArrayDyn<i64>>()?)?;
        return Ok(Tensor {
            dtype: DType::I64,
            shape,
            data: TensorData::I64(v),
        });
    }
    ints!(i32, DType::I32);
    ints!(i16, DType::I16);
    ints!(i8, DType::I8);
    ints!(u8, DType::U8);
    if dt.is_equiv_to(&numpy::dtype::<bool>(py)) {
        let v = elements(arr.downcast::<PyArrayDyn<bool>>()?)?;
        return Ok(Tensor {
            dtype: DType::Bool,
            shape,
            data: TensorData::Bool(v),
        });
    }
    Err(crate::InvalidArgument::new_err(format!(
        "input '{name}': numpy dtype {} is not supported (expected float32, float16, float64, int64, int32, int16, int8, uint8 or bool)",
        dt.str().map_or_else(|_| "?".into(), |s| s.to_string())
    )))
}

/// A numpy array of `v` with `shape`, taking over `v`'s buffer.
fn array<T: Element>(py: Python<'_>, shape: &[usize], v: Vec<T>) -> PyResult<PyObject> {
    let a = ArrayD::from_shape_vec(IxDyn(shape), v)
        .map_err(|e| crate::TesseraError::new_err(format!("output of shape {shape:?}: {e}")))?;
    Ok(a.into_pyarray(py).into_any().unbind())
}

/// Converts an output tensor to a numpy array of its ONNX element type (bfloat16, which
/// numpy lacks, as float32). float32 and int64 outputs are not copied.
pub fn tensor_to_array(py: Python<'_>, t: Tensor) -> PyResult<PyObject> {
    let Tensor { dtype, shape, data } = t;
    match data {
        TensorData::F32(v) => match dtype {
            DType::F64 => array(py, &shape, v.into_iter().map(f64::from).collect()),
            DType::F16 => array(py, &shape, v.into_iter().map(f16::from_f32).collect()),
            _ => array(py, &shape, v),
        },
        TensorData::I64(v) => match dtype {
            // Values of narrower types are in range (kernels saturate or wrap as ONNX does).
            DType::I32 => array(py, &shape, v.into_iter().map(|x| x as i32).collect()),
            DType::I16 => array(py, &shape, v.into_iter().map(|x| x as i16).collect()),
            DType::I8 => array(py, &shape, v.into_iter().map(|x| x as i8).collect()),
            DType::U8 => array(py, &shape, v.into_iter().map(|x| x as u8).collect()),
            _ => array(py, &shape, v),
        },
        TensorData::Bool(v) => array(py, &shape, v),
    }
}
