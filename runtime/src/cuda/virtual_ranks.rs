//! Virtual ranks: N ranks of a plan as N lanes (streams) of one GPU, for running partitioned
//! plans on a single-GPU machine (NCCL refuses two ranks on one device).
//!
//! Each rank thread owns its lane. A collective meets in a [`LaneExchange`]: every member
//! first waits for its own lane (so its input is complete), deposits its input and waits;
//! the last member to arrive computes every member's output in device memory on its own
//! lane with the copy and add kernels, in a fixed order (all-reduce sums rank 0 + rank 1 +
//! ... left to right), waits for that lane, and publishes the outputs.
//!
//! Buffer lifetime across streams: every buffer handed from one lane to another is complete
//! (its producer's lane was synchronized) before the other lane sees it, and cudarc's event
//! tracking (on by default once a context has several streams) makes a buffer's drop wait,
//! on its owning stream, for the last read recorded on it before freeing it. A buffer keeps
//! only its *last* read event, so no output is shared between ranks: replicated results
//! (all-reduce, all-gather, broadcast) are copied once per rank, and after the round each
//! buffer is read by one rank's lane only.
use super::buffer::DeviceTensor;
use super::collectives::{check_full_group, need_axis, need_to_axis};
use super::context::Lane;
use super::meta::StridedMeta;
use super::ops;
use super::CudaError;
use crate::collectives::{CollectiveError, CollectiveSpec};
use crate::device::DeviceError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;
use tessera_ir::plan::CollectiveKind;

/// How often a waiting member re-checks the abort flag even without a notification.
const POLL: Duration = Duration::from_millis(50);

/// The meeting point of the virtual ranks' collectives (one per run, shared by its devices).
#[derive(Default)]
pub struct LaneExchange {
    world: usize,
    aborted: AtomicBool,
    state: Mutex<Round>,
    cv: Condvar,
}

/// One collective round: deposits until everyone arrived, then outputs until everyone took
/// theirs.
#[derive(Default)]
struct Round {
    generation: u64,
    deposits: Vec<Option<(CollectiveSpec, DeviceTensor)>>,
    arrived: usize,
    outputs: Option<Result<Vec<DeviceTensor>, String>>,
    taken: usize,
}

impl LaneExchange {
    /// An exchange for `world` ranks.
    pub fn new(world: usize) -> LaneExchange {
        LaneExchange {
            world,
            state: Mutex::new(Round {
                deposits: vec![None; world],
                ..Round::default()
            }),
            ..LaneExchange::default()
        }
    }

    /// Marks the run as failed and wakes every waiting member.
    pub fn abort(&self) {
        self.aborted.store(true, Ordering::SeqCst);
        // Taking the lock orders the flag store before the waiters' re-check.
        let _g = self.lock();
        self.cv.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, Round> {
        // A poisoned lock means a member panicked while holding it; the round state is only
        // replaced whole, so it stays consistent and the run is aborted anyway.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits while `busy` holds, failing as soon as the run is aborted.
    fn wait_while<'a>(
        &self,
        mut st: MutexGuard<'a, Round>,
        kind: &'static str,
        busy: impl Fn(&Round) -> bool,
    ) -> Result<MutexGuard<'a, Round>, DeviceError> {
        loop {
            if self.aborted.load(Ordering::SeqCst) {
                return Err(CollectiveError::Aborted { kind }.into());
            }
            if !busy(&st) {
                return Ok(st);
            }
            st = self
                .cv
                .wait_timeout(st, POLL)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Runs `spec` over `group` for `rank`, whose input `x` lives on `lane`; blocks until
    /// every rank of the world called it and returns this rank's output.
    pub fn collective(
        &self,
        rank: usize,
        lane: &Lane,
        group: &[usize],
        spec: &CollectiveSpec,
        x: &DeviceTensor,
    ) -> Result<DeviceTensor, DeviceError> {
        let kind = spec.kind.as_str();
        check_full_group(group, self.world)?;
        lane.synchronize()?;
        let st = self.lock();
        // A member may arrive while the previous round's outputs are still being taken.
        let mut st = self.wait_while(st, kind, |r| r.outputs.is_some())?;
        st.deposits[rank] = Some((spec.clone(), x.clone()));
        st.arrived += 1;
        if st.arrived == self.world {
            let deposits: Vec<_> = st.deposits.iter_mut().filter_map(Option::take).collect();
            st.outputs = Some(
                self.compute(lane, group, deposits)
                    .map_err(|e| e.to_string()),
            );
            st.arrived = 0;
            st.taken = 0;
            st.generation += 1;
            self.cv.notify_all();
        } else {
            let gen = st.generation;
            st = self.wait_while(st, kind, |r| r.generation == gen)?;
        }
        let out = match &st.outputs {
            Some(Ok(outs)) => outs
                .get(rank)
                .cloned()
                .ok_or_else(|| DeviceError::Backend(format!("{kind}: no output for rank {rank}"))),
            Some(Err(m)) => Err(DeviceError::Backend(m.clone())),
            None => Err(DeviceError::Backend(format!("{kind}: round lost"))),
        };
        st.taken += 1;
        if st.taken == self.world {
            st.outputs = None;
            self.cv.notify_all();
        }
        out
    }

    /// The leader's part: checks that every member called the same collective, computes
    /// all outputs on `lane` and waits for them (the inputs are dropped after that wait).
    fn compute(
        &self,
        lane: &Lane,
        group: &[usize],
        deposits: Vec<(CollectiveSpec, DeviceTensor)>,
    ) -> Result<Vec<DeviceTensor>, CudaError> {
        if deposits.len() != self.world {
            return Err(CudaError::Plan(
                "a rank deposited twice in one round".into(),
            ));
        }
        let (specs, xs): (Vec<_>, Vec<_>) = deposits.into_iter().unzip();
        if let Some(r) = specs.iter().position(|s| s != &specs[0]) {
            return Err(CudaError::Plan(format!(
                "ranks disagree on the next collective: rank 0 {:?}, rank {r} {:?}",
                specs[0], specs[r]
            )));
        }
        let outs = virtual_collective(lane, group, &specs[0], &xs)?;
        lane.synchronize()?;
        Ok(outs)
    }
}

/// Sums the tensors left to right (rank order).
fn ordered_sum(lane: &Lane, xs: &[DeviceTensor]) -> Result<DeviceTensor, CudaError> {
    let mut acc = xs
        .first()
        .cloned()
        .ok_or_else(|| CudaError::Plan("collective over no ranks".into()))?;
    for x in &xs[1..] {
        acc = ops::elementwise::add_same_shape(lane, &acc, x)?;
    }
    Ok(acc)
}

/// Chunk `r` of `world` along `axis`.
fn chunk(
    lane: &Lane,
    x: &DeviceTensor,
    axis: usize,
    r: usize,
    world: usize,
) -> Result<DeviceTensor, CudaError> {
    let e = *x
        .shape
        .get(axis)
        .ok_or_else(|| CudaError::Plan(format!("axis {axis} out of range for {:?}", x.shape)))?;
    if e % world != 0 {
        return Err(CudaError::Plan(format!(
            "axis {axis} of {:?} does not split into {world} parts",
            x.shape
        )));
    }
    let c = e / world;
    ops::movement::take_range(lane, x, axis, r * c, (r + 1) * c)
}

/// `world` copies of `x`, one per rank (see the module notes on buffer lifetime).
fn replicate(lane: &Lane, x: &DeviceTensor, world: usize) -> Result<Vec<DeviceTensor>, CudaError> {
    let identity: Vec<usize> = (0..x.shape.len()).collect();
    let meta = StridedMeta::permute(&x.shape, &identity)?;
    (0..world)
        .map(|_| ops::copy_to_new(lane, x, &meta, x.shape.clone()))
        .collect()
}

/// The outputs of a collective for every rank (`xs`: every rank's input, by rank), computed
/// in device memory on `lane`.
pub fn virtual_collective(
    lane: &Lane,
    group: &[usize],
    spec: &CollectiveSpec,
    xs: &[DeviceTensor],
) -> Result<Vec<DeviceTensor>, CudaError> {
    let world = xs.len();
    check_full_group(group, world)?;
    match spec.kind {
        CollectiveKind::AllReduce => replicate(lane, &ordered_sum(lane, xs)?, world),
        CollectiveKind::Broadcast => replicate(lane, &xs[group[0]], world),
        CollectiveKind::AllGather => {
            let refs: Vec<&DeviceTensor> = xs.iter().collect();
            let all = ops::movement::concat(lane, &refs, need_axis(spec)?)?;
            replicate(lane, &all, world)
        }
        CollectiveKind::ReduceScatter => {
            let sum = ordered_sum(lane, xs)?;
            let axis = need_axis(spec)?;
            (0..world)
                .map(|r| chunk(lane, &sum, axis, r, world))
                .collect()
        }
        CollectiveKind::AllToAll => {
            let (axis, to_axis) = (need_axis(spec)?, need_to_axis(spec)?);
            (0..world)
                .map(|r| {
                    let parts: Vec<DeviceTensor> = xs
                        .iter()
                        .map(|x| chunk(lane, x, to_axis, r, world))
                        .collect::<Result<_, _>>()?;
                    let refs: Vec<&DeviceTensor> = parts.iter().collect();
                    ops::movement::concat(lane, &refs, axis)
                })
                .collect()
        }
    }
}
