//! A resident session: one loaded plan whose rank workers and weights stay alive between
//! runs, as onnxruntime's `InferenceSession` keeps a model loaded.
//!
//! [`Session::new`] validates the plan once, checks its planned memory, decodes every
//! weight slice the ranks load (kept resident in the [`WeightStore`]), prepares each rank's
//! program once (the fusion pass, the last use of each value) and starts one worker thread
//! per rank, each owning its device. [`Session::run`] checks the inputs against the plan
//! (names, dtypes, shapes: [`ExecError::Input`]), hands them to the workers and waits for
//! their outputs; the workers then wait for the next run.
//!
//! **Concurrency**: a `Session` is `Send + Sync` and [`Session::run`] may be called from
//! several threads at once; the calls queue (a mutex around the workers) and run one after
//! another, each on all the ranks. A run that fails (or is cancelled through
//! [`Session::run_interruptible`]) leaves the session usable: the devices are recreated
//! (fresh collectives) before the next run.
//!
//! **Backends**: on the CPU backend the workers are persistent threads (one per rank). A
//! `cuda` session checks at construction that the backend is compiled in, then runs each call
//! through the per-call path of [`crate::exec::run_on`] (GPU lanes created per run;
//! weights stay decoded in the store), which does not check for cancellation.
use crate::device::cpu::CpuBackend;
use crate::device::{Backend, Device, DeviceKind};
use crate::exec::load::{open_plan, LoadedPlan};
use crate::exec::{
    data, keep_freed_memory, memory, merge_ranks, output_providers, rank_job, rank_thread, run_on,
    validate, ExecError, RankProgram, RankResult, RunStats,
};
use crate::weights::WeightStore;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tessera_ir::plan::{Plan, StepKind, ValueId};
use tessera_ir::{DType, Tensor};

pub use crate::exec::data::Inputs;

/// How often a waiting [`Session::run_interruptible`] asks whether to cancel.
const POLL: Duration = Duration::from_millis(20);

/// How long a worker waiting for its next run polls its channel (yielding the core between
/// polls) before it sleeps, and how long before a run's expected end a caller waiting for
/// the ranks' replies starts polling ([`Pool::wait_reply`]), when the machine has a core for
/// every rank (the rule of the CPU collectives' spinning): waking a sleeping thread costs
/// tens of microseconds, as much as a small model's whole run (docs/benchmarks.md).
const SPIN: Duration = Duration::from_micros(200);

/// [`SPIN`] when the machine has a core per rank, else no polling.
fn spin_for(ranks: usize) -> Duration {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if ranks <= cores {
        SPIN
    } else {
        Duration::ZERO
    }
}

/// True when ranks of `threads` threads each leave no core spare: their helpers keep every
/// core busy during a run, and a caller polling beside them takes a core from them (BERT
/// at 1×128 on 1 device × 2 threads on 2 cores: 0.34 ms with a sleeping caller, 0.46 with
/// a polling one; docs/benchmarks.md).
fn cores_busy(ranks: usize, threads: usize) -> bool {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    threads > 1 && ranks.saturating_mul(threads) >= cores
}

/// Polls `rx` for up to `spin`, yielding between polls; `None` when nothing came.
fn spin_recv<T>(rx: &Receiver<T>, spin: Duration) -> Option<T> {
    if spin.is_zero() {
        return None;
    }
    let start = Instant::now();
    loop {
        match rx.try_recv() {
            Ok(m) => return Some(m),
            Err(mpsc::TryRecvError::Disconnected) => return None,
            Err(mpsc::TryRecvError::Empty) if start.elapsed() >= spin => return None,
            Err(mpsc::TryRecvError::Empty) => std::thread::yield_now(),
        }
    }
}

/// Stack size of each rank worker (as for [`crate::exec::run_plan`]'s rank threads).
const WORKER_STACK_BYTES: usize = 32 << 20;

/// Options of a session.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// Which backend runs the ranks.
    pub backend: DeviceKind,
    /// CPU backend: threads each device owns (0: the machine's cores divided by the
    /// devices, at least 1; see [`CpuBackend::new`]).
    pub threads_per_device: usize,
    /// CPU backend: bind each device's threads to cores of their own when the machine has
    /// a core for every thread (see [`CpuBackend::pinned`]).
    pub pin_threads: bool,
}

/// A model input or output as the plan declares it (onnxruntime's `NodeArg`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoInfo {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Static shape (the plan fixes every dimension).
    pub shape: Vec<usize>,
}

/// A plan loaded once and run many times (see the module documentation).
pub struct Session {
    plan: Arc<Plan>,
    store: Arc<WeightStore>,
    inputs: Vec<IoInfo>,
    outputs: Vec<IoInfo>,
    backend: DeviceKind,
    engine: Mutex<Engine>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("devices", &self.plan.ranks.len())
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// What runs the ranks.
enum Engine {
    /// Persistent CPU worker threads.
    Cpu(Pool<CpuBackend>),
    /// A backend run per call through [`run_on`].
    PerCall,
}

impl Session {
    /// Opens the plan file at `plan_path` ([`open_plan`]: read, validate, verify the source
    /// model and weight files; `model` overrides where the model is looked for) and starts a
    /// session on it.
    pub fn open(
        plan_path: &Path,
        model: Option<&Path>,
        opts: &SessionOptions,
    ) -> Result<Session, ExecError> {
        let LoadedPlan { plan, store } = open_plan(plan_path, model)?;
        Session::new(plan, store, opts)
    }

    /// Starts a session on a plan and its weights: validates the plan, checks its planned
    /// memory, decodes every rank's weight slices and starts the rank workers.
    pub fn new(
        plan: Plan,
        store: WeightStore,
        opts: &SessionOptions,
    ) -> Result<Session, ExecError> {
        validate::validate_plan(&plan)?;
        // Shapes of the whole batch (on a `[D, T]` mesh, D groups' slices).
        let io = |ids: &[tessera_ir::TensorId], shape: &dyn Fn(usize) -> Vec<usize>| {
            ids.iter()
                .enumerate()
                .map(|(i, t)| {
                    let info = plan.graph.tensor(*t);
                    IoInfo {
                        name: info.name.clone(),
                        dtype: info.dtype,
                        shape: shape(i),
                    }
                })
                .collect::<Vec<IoInfo>>()
        };
        let g = &plan.graph;
        let inputs = io(&g.inputs, &|i| data::whole_input_shape(&plan, g.inputs[i]));
        let outputs = io(&g.outputs, &|i| data::whole_output_shape(&plan, i));
        let plan = Arc::new(plan);
        let store = Arc::new(store);
        let engine = match opts.backend {
            DeviceKind::Cpu => {
                memory::check_planned_memory(&plan, memory::host_cap()?)?;
                preload_weights(&plan, &store)?;
                Engine::Cpu(Pool::start(
                    CpuBackend::new(opts.threads_per_device).pinned(opts.pin_threads),
                    plan.clone(),
                    store.clone(),
                )?)
            }
            DeviceKind::Cuda => {
                // Fails here, not at the first run, when the backend is not compiled in.
                crate::device::cuda::CudaBackend::new()?;
                preload_weights(&plan, &store)?;
                Engine::PerCall
            }
        };
        Ok(Session {
            plan,
            store,
            inputs,
            outputs,
            backend: opts.backend,
            engine: Mutex::new(engine),
        })
    }

    /// The plan this session runs.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The plan's weights.
    pub fn store(&self) -> &WeightStore {
        &self.store
    }

    /// The model's inputs, in the graph's order.
    pub fn inputs(&self) -> &[IoInfo] {
        &self.inputs
    }

    /// The model's outputs, in the graph's order (the order [`Session::run`] returns them).
    pub fn outputs(&self) -> &[IoInfo] {
        &self.outputs
    }

    /// Number of devices (ranks).
    pub fn devices(&self) -> usize {
        self.plan.ranks.len()
    }

    /// The backend running the ranks.
    pub fn backend(&self) -> DeviceKind {
        self.backend
    }

    /// Runs the plan on `inputs` and returns its outputs in the graph's output order.
    /// The inputs are copied once to be shared with the rank workers; see
    /// [`Session::run_shared`] to hand them over without a copy.
    pub fn run(&self, inputs: &Inputs) -> Result<Vec<Tensor>, ExecError> {
        let (outputs, _) = self.run_interruptible(Arc::new(inputs.clone()), &mut || false)?;
        Ok(outputs)
    }

    /// [`Session::run`] on inputs already shared, returning the run's statistics too.
    pub fn run_shared(&self, inputs: Arc<Inputs>) -> Result<(Vec<Tensor>, RunStats), ExecError> {
        self.run_interruptible(inputs, &mut || false)
    }

    /// [`Session::run_shared`], asking `interrupted` every few milliseconds while the ranks
    /// run; once it returns true the ranks stop at their next step and the call returns
    /// [`ExecError::Cancelled`] (the session stays usable). Calls queue behind a run in
    /// progress. The per-call (`cuda`) engine does not ask.
    pub fn run_interruptible(
        &self,
        inputs: Arc<Inputs>,
        interrupted: &mut dyn FnMut() -> bool,
    ) -> Result<(Vec<Tensor>, RunStats), ExecError> {
        validate::validate_inputs(&self.plan, &inputs)?;
        // A poisoned lock only means another caller panicked while waiting; the pool marks
        // itself broken before anything can panic mid-run, so its state is still coherent.
        let mut engine = self.engine.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *engine {
            Engine::Cpu(pool) => pool.run(&self.plan, inputs, interrupted),
            Engine::PerCall => {
                let backend = crate::device::cuda::CudaBackend::new()?;
                run_on(&backend, &self.plan, &self.store, &inputs)
            }
        }
    }
}

/// Decodes every weight slice any rank loads, so the first run does not pay for it and a
/// weight that cannot be read fails the session's construction.
fn preload_weights(plan: &Plan, store: &WeightStore) -> Result<(), ExecError> {
    for rank in &plan.ranks {
        for step in &rank.steps {
            if let StepKind::LoadWeight { tensor, slice } = &step.kind {
                if let Some(w) = plan.graph.weights.get(tensor) {
                    store.load_resident(w, slice.as_ref())?;
                }
            }
        }
    }
    Ok(())
}

/// A message to a rank worker.
enum Msg<D> {
    /// Run the rank's program on these inputs.
    Run(Arc<RunMsg>),
    /// Replace the device (after a failed run: its collectives were aborted).
    Reset(D),
}

/// A worker's reply: the run's id, the rank, its result.
type Reply = (u64, usize, RankResult);

/// What every worker of one run shares.
struct RunMsg {
    /// Which run of the pool this is: replies carry it, so a reply left over from a run
    /// abandoned when a worker died is never taken for one of a later run.
    id: u64,
    /// The inputs of each data group (one group on a 1-D mesh).
    inputs: Vec<Arc<Inputs>>,
    cancel: AtomicBool,
    failures: AtomicUsize,
}

/// Persistent rank workers of one backend.
struct Pool<B: Backend> {
    backend: B,
    senders: Vec<Sender<Msg<B::Device>>>,
    replies: Receiver<Reply>,
    /// Runs started so far.
    runs: u64,
    handles: Vec<JoinHandle<()>>,
    /// The devices' collectives were aborted by a failed run: recreate them first.
    broken: bool,
    /// How long the caller polls for replies near a run's expected end (see [`SPIN`]).
    spin: Duration,
    /// The ranks' threads fill the cores ([`cores_busy`]): the caller polls only after
    /// runs short enough that the pools' helpers hardly start.
    cores_busy: bool,
    /// How long the last run's ranks took to reply: the caller sleeps through most of the
    /// next run and polls only near its expected end ([`Pool::wait_reply`]).
    last_wait: Duration,
}

impl<B> Pool<B>
where
    B: Backend + Send + 'static,
    B::Device: 'static,
{
    /// Creates the devices and starts one worker per rank.
    fn start(backend: B, plan: Arc<Plan>, store: Arc<WeightStore>) -> Result<Pool<B>, ExecError> {
        keep_freed_memory();
        let n = plan.ranks.len();
        let busy = cores_busy(n, backend.busy_cores_per_device(n));
        let devices = backend.create_devices(n)?;
        let providers = output_providers(&plan);
        let (reply_tx, replies) = mpsc::channel();
        let (ready_tx, ready) = mpsc::channel::<()>();
        let mut senders = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        for (rank, dev) in devices.into_iter().enumerate() {
            let keep: Vec<ValueId> = plan
                .outputs
                .iter()
                .copied()
                .filter(|v| providers.get(v).is_some_and(|p| p.contains(&rank)))
                .collect();
            let (tx, rx) = mpsc::channel();
            let worker = Worker {
                rank,
                spin: spin_for(n),
                plan: plan.clone(),
                store: store.clone(),
                keep,
                replies: reply_tx.clone(),
            };
            let h = std::thread::Builder::new()
                .name(format!("tessera-rank-{rank}"))
                .stack_size(WORKER_STACK_BYTES)
                .spawn({
                    let ready = ready_tx.clone();
                    move || worker.serve(dev, rx, ready)
                })
                .map_err(|e| ExecError::Panic {
                    rank,
                    msg: format!("cannot spawn thread: {e}"),
                })?;
            senders.push(tx);
            handles.push(h);
        }
        drop(ready_tx);
        // Every worker has named itself and prepared its program before the session is
        // handed out (a worker that died early closes its end and is reported at a run).
        for _ in 0..n {
            if ready.recv().is_err() {
                break;
            }
        }
        Ok(Pool {
            backend,
            senders,
            replies,
            handles,
            broken: false,
            spin: spin_for(n),
            cores_busy: busy,
            last_wait: Duration::ZERO,
            runs: 0,
        })
    }

    /// Runs every rank on `inputs` and merges their results.
    fn run(
        &mut self,
        plan: &Plan,
        inputs: Arc<Inputs>,
        interrupted: &mut dyn FnMut() -> bool,
    ) -> Result<(Vec<Tensor>, RunStats), ExecError> {
        if self.broken {
            for (tx, dev) in self
                .senders
                .iter()
                .zip(self.backend.create_devices(self.senders.len())?)
            {
                tx.send(Msg::Reset(dev)).map_err(|_| self.dead_worker())?;
            }
            self.broken = false;
        }
        let start = Instant::now();
        let n = self.senders.len();
        self.runs += 1;
        let inputs = match data::split_inputs(plan, &inputs)? {
            Some(groups) => groups.into_iter().map(Arc::new).collect(),
            None => vec![inputs],
        };
        let msg = Arc::new(RunMsg {
            id: self.runs,
            inputs,
            cancel: AtomicBool::new(false),
            failures: AtomicUsize::new(0),
        });
        for tx in &self.senders {
            if tx.send(Msg::Run(msg.clone())).is_err() {
                self.broken = true;
                return Err(self.dead_worker());
            }
        }
        let sent = Instant::now();
        let mut results: Vec<Option<RankResult>> = (0..n).map(|_| None).collect();
        let mut got = 0;
        while got < n {
            let reply = self.wait_reply(sent);
            match reply {
                Ok((id, _, _)) if id != msg.id => {}
                Ok((_, rank, r)) => {
                    results[rank] = Some(r);
                    got += 1;
                }
                Err(RecvTimeoutError::Timeout) => {
                    if !msg.cancel.load(std::sync::atomic::Ordering::Relaxed) && interrupted() {
                        msg.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    // A worker that ended without replying panicked outside its rank
                    // (the rank itself catches panics): its reply will never come.
                    if let Some(rank) =
                        (0..n).find(|&r| results[r].is_none() && self.handles[r].is_finished())
                    {
                        self.broken = true;
                        msg.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                        return Err(ExecError::Panic {
                            rank,
                            msg: "rank worker ended".into(),
                        });
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.broken = true;
                    return Err(self.dead_worker());
                }
            }
        }
        self.last_wait = sent.elapsed();
        let results: Vec<RankResult> = results.into_iter().flatten().collect();
        if results.iter().any(Result::is_err) {
            self.broken = true;
        }
        merge_ranks(plan, self.backend.kind().to_string(), results, start)
    }

    /// The next reply of a run whose messages went out at `sent`, or a timeout after
    /// [`POLL`]. Where the caller polls (`spin`), it first sleeps until `spin` before the
    /// last run's duration, then polls: polling the first `spin` of every run and then
    /// sleeping paid both a busy second core and a wake-up (a 1-device GPT-2 at 1×128 on a
    /// 2-core VM: 0.750–0.759 → 0.722–0.727 ms, docs/benchmarks.md). Where the ranks'
    /// threads fill the cores, it sleeps through runs longer than `spin`.
    fn wait_reply(&self, sent: Instant) -> Result<Reply, RecvTimeoutError> {
        if self.spin.is_zero() || (self.cores_busy && self.last_wait > self.spin) {
            return self.replies.recv_timeout(POLL);
        }
        let asleep = self.last_wait.saturating_sub(self.spin).min(POLL);
        if let Some(left) = asleep.checked_sub(sent.elapsed()).filter(|d| !d.is_zero()) {
            match self.replies.recv_timeout(left) {
                Err(RecvTimeoutError::Timeout) => {}
                reply => return reply,
            }
        }
        match spin_recv(&self.replies, self.spin) {
            Some(r) => Ok(r),
            None => self.replies.recv_timeout(POLL),
        }
    }

    /// The error of a run whose worker is gone.
    fn dead_worker(&self) -> ExecError {
        let rank = self
            .handles
            .iter()
            .position(|h| h.is_finished())
            .unwrap_or(0);
        ExecError::Panic {
            rank,
            msg: "rank worker ended".into(),
        }
    }
}

impl<B: Backend> Drop for Pool<B> {
    fn drop(&mut self) {
        // Closing the channels ends each worker's loop.
        self.senders.clear();
        for h in self.handles.drain(..) {
            // A worker that panicked has nothing left to clean up.
            let _ = h.join();
        }
    }
}

/// One rank's worker: owns its device, runs its prepared program for each run.
struct Worker {
    rank: usize,
    spin: Duration,
    plan: Arc<Plan>,
    store: Arc<WeightStore>,
    keep: Vec<ValueId>,
    replies: Sender<Reply>,
}

impl Worker {
    fn serve<D: Device>(self, mut dev: D, rx: Receiver<Msg<D>>, ready: Sender<()>) {
        dev.bind_thread();
        let empty = Inputs::new();
        let prepared = rank_job(&self.plan, &self.store, &empty, self.rank, |v| {
            self.keep.contains(v)
        });
        let program = RankProgram::prepare(&prepared, dev.fuses(), dev.shares_host_tensors());
        // The session may be waiting for this; if it is gone, the loop below ends at once.
        let _ = ready.send(());
        drop(ready);
        let mut rx = rx;
        loop {
            // The runs go on inside the device's compute context (a CPU device's pool), so
            // that no run starts with a hand-over to it.
            let (back, reset) = dev.enter(|dev| {
                let reset = self.serve_runs(dev, &rx, &program);
                (rx, reset)
            });
            rx = back;
            match reset {
                Some(d) => {
                    dev = d;
                    dev.bind_thread();
                }
                None => return,
            }
        }
    }

    /// Runs the program on each run message until a reset (the new device is returned) or
    /// until the session is gone (`None`).
    fn serve_runs<D: Device>(
        &self,
        dev: &mut D,
        rx: &Receiver<Msg<D>>,
        program: &RankProgram,
    ) -> Option<D> {
        loop {
            let msg = spin_recv(rx, self.spin).or_else(|| rx.recv().ok())?;
            let run = match msg {
                Msg::Reset(d) => return Some(d),
                Msg::Run(run) => run,
            };
            let group = self.plan.mesh.group_of(self.rank);
            let inputs = run.inputs.get(group).or(run.inputs.first())?;
            let mut job = rank_job(&self.plan, &self.store, inputs, self.rank, |v| {
                self.keep.contains(v)
            });
            job.cancel = Some(&run.cancel);
            let r = rank_thread(dev, &job, Some(program), &run.failures);
            let id = run.id;
            drop(job);
            drop(run);
            if self.replies.send((id, self.rank, r)).is_err() {
                return None;
            }
        }
    }
}
