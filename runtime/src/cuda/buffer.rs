//! Device tensors: f32 storage for floats, i64 for integers, u8 for booleans (the same
//! storage classes as host [`Tensor`]s, so f16/bf16 compute in f32 as on the CPU).
use super::context::Lane;
use super::CudaError;
use cudarc::driver::{CudaSlice, LaunchArgs, PushKernelArg};
use std::sync::Arc;
use tessera_ir::{numel, DType, Tensor, TensorData};

/// Storage class of a dtype on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// f32 elements (all float dtypes).
    F32,
    /// i64 elements (all integer dtypes).
    I64,
    /// u8 elements, 0 or 1 (bool).
    Bool,
}

impl Class {
    /// The class of `dtype`.
    pub fn of(dtype: DType) -> Class {
        if dtype.is_float() {
            Class::F32
        } else if dtype.is_int() {
            Class::I64
        } else {
            Class::Bool
        }
    }

    /// Element size in bytes on the device.
    pub fn size(self) -> usize {
        match self {
            Class::F32 => 4,
            Class::I64 => 8,
            Class::Bool => 1,
        }
    }

    /// The element type's suffix in kernel names (`unary_f32`, `cast_i64_u8`).
    pub fn suffix(self) -> &'static str {
        match self {
            Class::F32 => "f32",
            Class::I64 => "i64",
            Class::Bool => "u8",
        }
    }

    /// The name of kernel family `base` for this element type (`base_f32`, ...).
    pub fn kernel(self, base: &str) -> String {
        format!("{base}_{}", self.suffix())
    }

    /// The name of data-movement kernel family `base` for this element size (`base_b4`,
    /// ...: those kernels only copy elements, so one kernel serves a size).
    pub fn copy_kernel(self, base: &str) -> String {
        format!("{base}_b{}", self.size())
    }
}

/// A device buffer passed to a kernel that reads it, whatever its element type: callers
/// pick the kernel by the buffer's [`Class`] ([`Class::kernel`]), so the element type the
/// kernel's C signature declares is the buffer's.
pub struct Arg<'a>(pub &'a DeviceData);

/// A device buffer passed to a kernel that writes it (see [`Arg`]).
pub struct ArgMut<'a>(pub &'a mut DeviceData);

/// Implements cudarc's kernel-argument trait for a buffer wrapper by delegating to the
/// typed slice inside (`&CudaSlice<T>` for [`Arg`], `&mut CudaSlice<T>` for [`ArgMut`]).
macro_rules! push_any_class {
    ($wrapper:ident) => {
        // SAFETY: delegates to cudarc's own impl for the typed slice, so the pushed pointer
        // is the slice's device pointer (which lives for 'b, as long as the borrowed slice)
        // and cudarc's stream-synchronisation events are waited for and recorded as for a
        // typed slice.
        unsafe impl<'a, 'b: 'a> PushKernelArg<$wrapper<'b>> for LaunchArgs<'a> {
            #[inline(always)]
            fn arg(&mut self, arg: $wrapper<'b>) -> &mut Self {
                match arg.0 {
                    DeviceData::F32(s) => self.arg(s),
                    DeviceData::I64(s) => self.arg(s),
                    DeviceData::Bool(s) => self.arg(s),
                }
            }
        }
    };
}
push_any_class!(Arg);
push_any_class!(ArgMut);

/// Device storage. Buffers hold at least one element (CUDA refuses empty allocations);
/// the logical element count is the tensor's shape product.
pub enum DeviceData {
    /// Floats.
    F32(CudaSlice<f32>),
    /// Integers.
    I64(CudaSlice<i64>),
    /// Booleans as 0/1 bytes.
    Bool(CudaSlice<u8>),
}

impl DeviceData {
    /// Zero-filled storage of `n` elements of `class`.
    pub fn zeros(lane: &Lane, class: Class, n: usize) -> Result<DeviceData, CudaError> {
        let n = n.max(1);
        let s = &lane.stream;
        Ok(match class {
            Class::F32 => DeviceData::F32(s.alloc_zeros::<f32>(n).map_err(CudaError::driver)?),
            Class::I64 => DeviceData::I64(s.alloc_zeros::<i64>(n).map_err(CudaError::driver)?),
            Class::Bool => DeviceData::Bool(s.alloc_zeros::<u8>(n).map_err(CudaError::driver)?),
        })
    }

    /// As a kernel argument the kernel reads.
    pub fn arg(&self) -> Arg<'_> {
        Arg(self)
    }

    /// Its class.
    pub fn class(&self) -> Class {
        match self {
            DeviceData::F32(_) => Class::F32,
            DeviceData::I64(_) => Class::I64,
            DeviceData::Bool(_) => Class::Bool,
        }
    }
}

/// A tensor in device memory. Cloning shares the buffer (values are never written after
/// they are produced, so Reshape and Identity are free).
#[derive(Clone)]
pub struct DeviceTensor {
    /// Logical dtype.
    pub dtype: DType,
    /// Shape.
    pub shape: Vec<usize>,
    /// Storage.
    pub data: Arc<DeviceData>,
}

impl DeviceTensor {
    /// Wraps fresh storage.
    pub fn new(dtype: DType, shape: Vec<usize>, data: DeviceData) -> DeviceTensor {
        DeviceTensor {
            dtype,
            shape,
            data: Arc::new(data),
        }
    }

    /// A zero tensor.
    pub fn zeros(lane: &Lane, dtype: DType, shape: Vec<usize>) -> Result<DeviceTensor, CudaError> {
        let data = DeviceData::zeros(lane, Class::of(dtype), numel(&shape))?;
        Ok(DeviceTensor::new(dtype, shape, data))
    }

    /// Element count.
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    /// Storage class.
    pub fn class(&self) -> Class {
        self.data.class()
    }

    /// Its storage as a kernel argument the kernel reads.
    pub fn arg(&self) -> Arg<'_> {
        Arg(&self.data)
    }

    /// A tensor of this one's shape holding `data` (an elementwise op's output).
    pub fn same_shape(&self, dtype: DType, data: DeviceData) -> DeviceTensor {
        DeviceTensor::new(dtype, self.shape.clone(), data)
    }

    /// Copies a host tensor to the device.
    pub fn upload(lane: &Lane, t: &Tensor) -> Result<DeviceTensor, CudaError> {
        let s = &lane.stream;
        let data = if t.numel() == 0 {
            DeviceData::zeros(lane, Class::of(t.dtype), 1)?
        } else {
            match &t.data {
                TensorData::F32(v) => DeviceData::F32(s.clone_htod(v).map_err(CudaError::driver)?),
                TensorData::I64(v) => DeviceData::I64(s.clone_htod(v).map_err(CudaError::driver)?),
                TensorData::Bool(v) => {
                    let bytes: Vec<u8> = v.iter().map(|&b| b as u8).collect();
                    DeviceData::Bool(s.clone_htod(&bytes).map_err(CudaError::driver)?)
                }
            }
        };
        Ok(DeviceTensor::new(t.dtype, t.shape.clone(), data))
    }

    /// Copies the tensor back to the host (waits for the lane).
    pub fn download(&self, lane: &Lane) -> Result<Tensor, CudaError> {
        fn host<T: cudarc::driver::DeviceRepr>(
            lane: &Lane,
            b: &CudaSlice<T>,
            n: usize,
        ) -> Result<Vec<T>, CudaError> {
            if n == 0 {
                return Ok(vec![]);
            }
            lane.stream
                .clone_dtoh(&b.slice(0..n))
                .map_err(CudaError::driver)
        }
        let n = self.numel();
        let data = match &*self.data {
            DeviceData::F32(b) => TensorData::F32(host(lane, b, n)?),
            DeviceData::I64(b) => TensorData::I64(host(lane, b, n)?),
            DeviceData::Bool(b) => {
                TensorData::Bool(host(lane, b, n)?.into_iter().map(|x| x != 0).collect())
            }
        };
        lane.synchronize()?;
        Tensor::new(self.dtype, self.shape.clone(), data)
            .map_err(|e| CudaError::Plan(e.to_string()))
    }

    /// The f32 buffer, or an error naming `what`.
    pub fn f32(&self, what: &str) -> Result<&CudaSlice<f32>, CudaError> {
        match &*self.data {
            DeviceData::F32(b) => Ok(b),
            _ => Err(CudaError::Unsupported(format!(
                "{what}: expected a float tensor, got {}",
                self.dtype
            ))),
        }
    }
}
