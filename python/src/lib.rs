//! `tessera._tessera`: the native module of the `tessera` Python package.
//!
//! [`InferenceSession`] is shaped like onnxruntime's: built from an ONNX model (compiled for
//! N devices on the fly) or a plan, `run(output_names, feeds)` with numpy arrays,
//! `get_inputs()` / `get_outputs()` returning [`NodeArg`]s. The ranks are the runtime's
//! resident [`tessera::Session`]: started once, kept between runs. Every call that compiles
//! or runs releases the GIL; a run checks for signals (Ctrl-C) every 20 ms and stops its
//! ranks at their next step when one arrives. Errors are Python exceptions carrying the
//! runtime's one-line messages: [`InvalidArgument`] for feeds and options,
//! [`TesseraError`] for everything else (import, partition, plan files, execution).
#![warn(missing_docs)]

mod convert;

use convert::{feed_to_tensor, onnx_type, tensor_to_array};
use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// mimalloc for the Rust side's buffers, as in `tessera-run`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tessera::{compile as compile_model, ApiError, CompileOptions, CompiledPlan};
use tessera_ir::plan::ObjectiveKind;
use tessera_runtime::device::DeviceKind;
use tessera_runtime::exec::ExecError;
use tessera_runtime::session::{IoInfo, Session, SessionOptions};

create_exception!(
    tessera,
    TesseraError,
    PyRuntimeError,
    "A model could not be compiled, a plan read or verified, or a run failed."
);
create_exception!(
    tessera,
    InvalidArgument,
    TesseraError,
    "A feed or an option is wrong (missing, unknown, wrong dtype or shape)."
);

/// Maps a Rust error onto the Python exception carrying its one-line message.
fn py_err(e: ApiError) -> PyErr {
    let msg = e.to_string().replace('\n', " ");
    match e {
        ApiError::Options(_) | ApiError::Exec(ExecError::Input { .. }) => {
            InvalidArgument::new_err(msg)
        }
        _ => TesseraError::new_err(msg),
    }
}

/// A model input or output: `name`, `shape` (a list of ints) and `type` (an ONNX type string
/// such as `'tensor(float)'`), as onnxruntime's `NodeArg`.
#[pyclass(module = "tessera", frozen)]
struct NodeArg {
    #[pyo3(get)]
    name: String,
    #[pyo3(get)]
    shape: Vec<usize>,
    #[pyo3(get, name = "type")]
    ty: &'static str,
}

#[pymethods]
impl NodeArg {
    fn __repr__(&self) -> String {
        format!(
            "NodeArg(name='{}', type='{}', shape={:?})",
            self.name, self.ty, self.shape
        )
    }
}

impl NodeArg {
    fn from_info(i: &IoInfo) -> NodeArg {
        NodeArg {
            name: i.name.clone(),
            shape: i.shape.clone(),
            ty: onnx_type(i.dtype),
        }
    }
}

/// A tensor-parallel plan: from `tessera.compile(...)`, `tessera.Plan.load(path)` or a
/// session's `.plan`.
#[pyclass(module = "tessera")]
struct Plan {
    inner: CompiledPlan,
}

#[pymethods]
impl Plan {
    /// Reads a plan file written by `tessera compile` or `Plan.save`.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Plan> {
        let inner = py
            .allow_threads(|| CompiledPlan::open(&path))
            .map_err(py_err)?;
        Ok(Plan { inner })
    }

    /// Number of devices the plan runs on.
    #[getter]
    fn devices(&self) -> usize {
        self.inner.plan().ranks.len()
    }

    /// The report `tessera inspect` prints (bytes, memory, FLOPs per device, collectives).
    fn summary(&self) -> String {
        self.inner.summary()
    }

    /// One rank's program as a DOT digraph (what `tessera dot` writes).
    #[pyo3(signature = (rank = 0))]
    fn to_dot(&self, rank: usize) -> PyResult<String> {
        self.inner.to_dot(rank).map_err(py_err)
    }

    /// Writes the plan as JSON to `path` (readable by `tessera-run` and `Plan.load`).
    fn save(&mut self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let inner = &mut self.inner;
        py.allow_threads(|| inner.save(&path)).map_err(py_err)
    }

    fn __repr__(&self) -> String {
        format!(
            "Plan(devices={}, model='{}')",
            self.devices(),
            self.inner.model_path().display()
        )
    }
}

/// Compile options from the keyword arguments of `compile` / `InferenceSession`.
fn compile_options(
    devices: Option<usize>,
    shapes: Option<&Bound<'_, PyDict>>,
    objective: &str,
    time_limit: Option<f64>,
) -> PyResult<CompileOptions> {
    let mut opts = CompileOptions::new(devices.unwrap_or(1));
    if let Some(shapes) = shapes {
        for (k, v) in shapes.iter() {
            let name: String = k.extract()?;
            let dims: Vec<usize> = v.extract().map_err(|_| {
                InvalidArgument::new_err(format!(
                    "shapes['{name}']: expected a list of non-negative ints"
                ))
            })?;
            opts.shapes.insert(name, dims);
        }
    }
    opts.objective = objective
        .parse::<ObjectiveKind>()
        .map_err(|e| InvalidArgument::new_err(format!("objective: {e}")))?;
    opts.time_limit = match time_limit {
        None => None,
        Some(s) if s.is_finite() && s > 0.0 && s <= 1e6 => Some(Duration::from_secs_f64(s)),
        Some(s) => {
            return Err(InvalidArgument::new_err(format!(
                "time_limit={s}: expected seconds between 0 and 1000000 (None: no limit)"
            )))
        }
    };
    Ok(opts)
}

/// Imports the ONNX model at `model` and partitions it for `devices` devices; returns a
/// `Plan`. `shapes` fixes dynamic input dimensions (`{"input_ids": [1, 128]}`),
/// `objective` is "memory", "time" or "latency", `time_limit` bounds the search (seconds).
#[pyfunction]
#[pyo3(signature = (model, devices = 1, shapes = None, objective = "memory", time_limit = Some(10.0)))]
fn compile(
    py: Python<'_>,
    model: PathBuf,
    devices: usize,
    shapes: Option<&Bound<'_, PyDict>>,
    objective: &str,
    time_limit: Option<f64>,
) -> PyResult<Plan> {
    let opts = compile_options(Some(devices), shapes, objective, time_limit)?;
    let inner = py
        .allow_threads(|| compile_model(&model, &opts))
        .map_err(py_err)?;
    Ok(Plan { inner })
}

/// A model or plan loaded on N devices, run many times (onnxruntime's `InferenceSession`).
#[pyclass(module = "tessera")]
struct InferenceSession {
    session: Arc<Session>,
    plan: Py<Plan>,
}

#[pymethods]
impl InferenceSession {
    /// `model_or_plan`: a path to an ONNX model (compiled here for `devices` devices, default
    /// 1, with `shapes`, `objective` and `time_limit` as in `tessera.compile`), a path to a
    /// plan file (`devices`, if given, must match it), or a `Plan`. `backend`: "cpu" (resident
    /// threads per device) or "cuda". `threads_per_device` (CPU): threads each device
    /// computes with (default: the machine's cores divided by the devices, at least 1).
    #[new]
    #[pyo3(signature = (model_or_plan, devices = None, shapes = None, objective = "memory", backend = "cpu", time_limit = Some(10.0), threads_per_device = None))]
    #[allow(clippy::too_many_arguments)] // onnxruntime-style keyword arguments
    fn new(
        py: Python<'_>,
        model_or_plan: &Bound<'_, PyAny>,
        devices: Option<usize>,
        shapes: Option<&Bound<'_, PyDict>>,
        objective: &str,
        backend: &str,
        time_limit: Option<f64>,
        threads_per_device: Option<usize>,
    ) -> PyResult<InferenceSession> {
        if threads_per_device == Some(0) {
            return Err(InvalidArgument::new_err(
                "threads_per_device: must be at least 1",
            ));
        }
        let backend: DeviceKind = backend
            .parse()
            .map_err(|e: String| InvalidArgument::new_err(format!("backend: {e}")))?;
        let opts = SessionOptions {
            backend,
            threads_per_device: threads_per_device.unwrap_or(0),
            // Several sessions may share this process: leave placement to the scheduler.
            pin_threads: false,
        };
        let plan: CompiledPlan = if let Ok(p) = model_or_plan.downcast::<Plan>() {
            let p = p.borrow();
            check_devices(devices, &p.inner, "the plan")?;
            p.inner.clone()
        } else {
            let path: PathBuf = model_or_plan.extract().map_err(|_| {
                PyValueError::new_err(
                    "model_or_plan: expected a path (str or os.PathLike) or a tessera.Plan",
                )
            })?;
            if tessera::session::is_onnx(&path) {
                let copts = compile_options(devices, shapes, objective, time_limit)?;
                py.allow_threads(|| compile_model(&path, &copts))
                    .map_err(py_err)?
            } else {
                let p = py
                    .allow_threads(|| CompiledPlan::open(&path))
                    .map_err(py_err)?;
                check_devices(devices, &p, &format!("plan '{}'", path.display()))?;
                p
            }
        };
        let session = py.allow_threads(|| plan.session(&opts)).map_err(py_err)?;
        Ok(InferenceSession {
            session: Arc::new(session),
            plan: Py::new(py, Plan { inner: plan })?,
        })
    }

    /// The model's inputs (`NodeArg`s), in the graph's order.
    fn get_inputs(&self) -> Vec<NodeArg> {
        self.session
            .inputs()
            .iter()
            .map(NodeArg::from_info)
            .collect()
    }

    /// The model's outputs (`NodeArg`s), in the graph's order.
    fn get_outputs(&self) -> Vec<NodeArg> {
        self.session
            .outputs()
            .iter()
            .map(NodeArg::from_info)
            .collect()
    }

    /// The plan this session runs.
    #[getter]
    fn plan(&self, py: Python<'_>) -> Py<Plan> {
        self.plan.clone_ref(py)
    }

    /// Number of devices (ranks).
    #[getter]
    fn devices(&self) -> usize {
        self.session.devices()
    }

    /// Runs the model: `feeds` maps every input name to a numpy array (exact dtype and shape
    /// of `get_inputs()`); returns the outputs named in `output_names` (None or []: all, in
    /// `get_outputs()` order) as numpy arrays. Calls from several threads queue.
    #[pyo3(signature = (output_names, feeds, run_options = None))]
    fn run(
        &self,
        py: Python<'_>,
        output_names: Option<Vec<String>>,
        feeds: &Bound<'_, PyDict>,
        run_options: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyList>> {
        let _ = run_options; // accepted for onnxruntime compatibility; nothing to set
        let outs = self.session.outputs();
        let picks: Vec<usize> = match output_names {
            None => (0..outs.len()).collect(),
            Some(names) if names.is_empty() => (0..outs.len()).collect(),
            Some(names) => names
                .iter()
                .map(|n| {
                    outs.iter().position(|o| &o.name == n).ok_or_else(|| {
                        let all: Vec<&str> = outs.iter().map(|o| o.name.as_str()).collect();
                        InvalidArgument::new_err(format!(
                            "output '{n}': not an output of the model (its outputs are: {})",
                            all.join(", ")
                        ))
                    })
                })
                .collect::<PyResult<_>>()?,
        };
        let mut inputs = BTreeMap::new();
        for (k, v) in feeds.iter() {
            let name: String = k
                .extract()
                .map_err(|_| InvalidArgument::new_err("feeds: keys must be input names (str)"))?;
            let t = feed_to_tensor(py, &name, &v)?;
            inputs.insert(name, t);
        }
        let inputs = Arc::new(inputs);
        let session = self.session.clone();
        let mut interrupt: Option<PyErr> = None;
        let result = py.allow_threads(|| {
            session.run_interruptible(inputs, &mut || {
                Python::with_gil(|py| match py.check_signals() {
                    Ok(()) => false,
                    Err(e) => {
                        interrupt = Some(e);
                        true
                    }
                })
            })
        });
        if let Some(e) = interrupt {
            return Err(e);
        }
        let (outputs, _) = result.map_err(|e| py_err(ApiError::Exec(e)))?;
        let mut slots: Vec<Option<tessera_ir::Tensor>> = outputs.into_iter().map(Some).collect();
        let list = PyList::empty(py);
        for (i, &o) in picks.iter().enumerate() {
            // Moved out for its last pick, copied for an output asked for twice.
            let t = if picks[i + 1..].contains(&o) {
                slots[o].clone()
            } else {
                slots[o].take()
            };
            let t = t.ok_or_else(|| TesseraError::new_err("output missing"))?;
            list.append(tensor_to_array(py, t)?)?;
        }
        Ok(list.unbind())
    }

    fn __repr__(&self) -> String {
        format!(
            "InferenceSession(devices={}, backend='{}')",
            self.session.devices(),
            self.session.backend()
        )
    }
}

/// Checks an explicit `devices` against a plan's device count.
fn check_devices(devices: Option<usize>, plan: &CompiledPlan, what: &str) -> PyResult<()> {
    let n = plan.plan().ranks.len();
    match devices {
        Some(d) if d != n => Err(InvalidArgument::new_err(format!(
            "devices={d}: {what} was compiled for {n} devices"
        ))),
        _ => Ok(()),
    }
}

/// The native module.
#[pymodule]
fn _tessera(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<InferenceSession>()?;
    m.add_class::<NodeArg>()?;
    m.add_class::<Plan>()?;
    m.add_function(wrap_pyfunction!(compile, m)?)?;
    m.add("TesseraError", m.py().get_type::<TesseraError>())?;
    m.add("InvalidArgument", m.py().get_type::<InvalidArgument>())?;
    Ok(())
}
