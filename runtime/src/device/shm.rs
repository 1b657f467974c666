//! Shared-memory exchange for the collectives of CPU devices (one thread per rank).
//!
//! Every group of ranks gets one `Exchange`. A collective call deposits the member's
//! input; the last member to arrive checks that everyone called the same collective, moves
//! the inputs into a shared round and wakes the others; each member then computes its own
//! output from the shared inputs with [`crate::collectives::compute`] (sums in member order,
//! so results are bitwise identical run to run and across members).
//!
//! Waiting uses a [`Condvar`] with a timeout and an abort flag shared by every exchange of
//! a run ([`ShmWorld::abort`]): when one rank fails, its peers stop waiting and return
//! [`CollectiveError::Aborted`] instead of hanging (a bare `std::sync::Barrier` would).
use crate::collectives::{compute, CollectiveError, CollectiveSpec};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tessera_ir::Tensor;

/// How often a waiting member re-checks the abort flag even without a notification.
const POLL: Duration = Duration::from_millis(50);

/// How long a waiting member spins before it sleeps on the condition variable, when every
/// rank has a core of its own: waking a sleeping thread costs tens of microseconds, a
/// large share of a small all-reduce (measured: 130–240 µs per 196 KB all-reduce on two
/// ranks before spinning).
const SPIN: Duration = Duration::from_micros(200);

/// How long a waiting member polls before it sleeps when each rank's thread is pinned to a
/// core of its own ([`ShmWorld::pinned`]): the core has nothing else to run, and waking a
/// pinned thread whose core has gone idle costs far more than the 200 µs above on a VM
/// (measured on the 2-core VM, LLaMA-style 8×128 plan on 2 pinned ranks, 8 processes × 50
/// runs each: with 200 µs, 4 of 8 processes ran at 11–12 ms instead of 3–5 ms; with 3 ms,
/// all 8 ran at 3.1–5.0 ms).
const PINNED_SPIN: Duration = Duration::from_millis(3);

/// The first part of the spin, spent busy-waiting without yielding the core.
const PURE_SPIN: Duration = Duration::from_micros(20);

/// The exchanges of one run, shared by all CPU devices.
#[derive(Debug)]
pub struct ShmWorld {
    size: usize,
    /// How long waiters poll before sleeping (zero when the machine has fewer cores than
    /// ranks).
    spin: Duration,
    aborted: AtomicBool,
    groups: Mutex<BTreeMap<Vec<usize>, Arc<Exchange>>>,
    /// The inputs of collectives every member called as constant, by group and key
    /// ([`ShmWorld::collective_of_constant`]).
    remembered: Mutex<BTreeMap<(Vec<usize>, usize), Shared>>,
}

impl ShmWorld {
    /// A world of `size` ranks whose threads the OS places: waiters poll briefly before
    /// sleeping when the machine has a core per rank, else sleep at once.
    pub fn new(size: usize) -> Arc<ShmWorld> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::with_spin(size, if size <= cores { SPIN } else { Duration::ZERO })
    }

    /// A world of `size` ranks each pinned to cores of its own: waiters poll longer before
    /// sleeping (see [`PINNED_SPIN`]).
    pub fn pinned(size: usize) -> Arc<ShmWorld> {
        Self::with_spin(size, PINNED_SPIN)
    }

    fn with_spin(size: usize, spin: Duration) -> Arc<ShmWorld> {
        Arc::new(ShmWorld {
            size,
            spin,
            aborted: AtomicBool::new(false),
            groups: Mutex::new(BTreeMap::new()),
            remembered: Mutex::new(BTreeMap::new()),
        })
    }

    /// Number of ranks.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Marks the run as failed and wakes every waiting member.
    pub fn abort(&self) {
        self.aborted.store(true, Ordering::SeqCst);
        for ex in lock(&self.groups).values() {
            // Taking the lock orders the flag store before the waiters' re-check.
            let _g = lock(&ex.state);
            ex.cv.notify_all();
        }
    }

    /// True once a rank has failed.
    pub fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::SeqCst)
    }

    fn exchange(&self, group: &[usize]) -> Arc<Exchange> {
        lock(&self.groups)
            .entry(group.to_vec())
            .or_insert_with(|| {
                Arc::new(Exchange {
                    state: Mutex::new(State {
                        generation: 0,
                        deposits: vec![None; group.len()],
                        arrived: 0,
                        round: None,
                        readers_left: 0,
                    }),
                    cv: Condvar::new(),
                    generation: AtomicU64::new(0),
                })
            })
            .clone()
    }

    /// Runs one collective for `rank`, a member of `group` (ranks listed in member order).
    /// Blocks until every member of the group has called it.
    pub fn collective(
        &self,
        rank: usize,
        group: &[usize],
        spec: &CollectiveSpec,
        input: Arc<Tensor>,
    ) -> Result<Tensor, CollectiveError> {
        self.meet(rank, group, spec, input, None)
    }

    /// Runs a collective whose input is the same tensor on every call (a weight shard
    /// gathered on every run), named `key` on every member. The first call meets the
    /// other members as [`ShmWorld::collective`] does; once every member has called it with
    /// the same key, their inputs are kept (they are resident anyway), and later calls
    /// compute this member's output from them without waiting for anyone: a one-sided
    /// read of the peers' shards, as a GPU reads a peer's memory over NVLink.
    pub fn collective_of_constant(
        &self,
        rank: usize,
        group: &[usize],
        spec: &CollectiveSpec,
        input: Arc<Tensor>,
        key: usize,
    ) -> Result<Tensor, CollectiveError> {
        let kept = lock(&self.remembered).get(&(group.to_vec(), key)).cloned();
        match kept {
            Some(inputs) => {
                let member = member_of(rank, group, spec)?;
                let refs: Vec<&Tensor> = inputs.iter().map(|t| t.as_ref()).collect();
                compute(spec, &refs, member)
            }
            None => self.meet(rank, group, spec, input, Some(key)),
        }
    }

    fn meet(
        &self,
        rank: usize,
        group: &[usize],
        spec: &CollectiveSpec,
        input: Arc<Tensor>,
        key: Option<usize>,
    ) -> Result<Tensor, CollectiveError> {
        let kind = spec.kind.as_str();
        let member = member_of(rank, group, spec)?;
        if self.is_aborted() {
            return Err(CollectiveError::Aborted { kind });
        }
        let ex = self.exchange(group);
        let mut st = lock(&ex.state);
        let my_generation = st.generation;
        st.deposits[member] = Some((spec.clone(), input, key));
        st.arrived += 1;
        if st.arrived == group.len() {
            let deposits: Vec<Deposit> = st
                .deposits
                .iter_mut()
                .map(|d| d.take())
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| CollectiveError::Invalid {
                    kind,
                    msg: "a member deposited twice in one round".into(),
                })?;
            let mismatch = deposits
                .iter()
                .position(|(s, ..)| s != &deposits[0].0)
                .map(|m| {
                    format!(
                        "group {group:?}: member 0 called {:?} but member {m} called {:?}",
                        deposits[0].0, deposits[m].0
                    )
                });
            let constant = deposits
                .iter()
                .all(|d| d.2.is_some() && d.2 == deposits[0].2);
            let tensors = Arc::new(deposits.into_iter().map(|d| d.1).collect::<Vec<_>>());
            st.round = Some(match mismatch {
                None => {
                    if let (true, Some(k)) = (constant, key) {
                        // Before the round completes, so no member can call it again first.
                        lock(&self.remembered).insert((group.to_vec(), k), tensors.clone());
                    }
                    Ok(tensors)
                }
                Some(msg) => Err(msg),
            });
            st.arrived = 0;
            st.readers_left = group.len();
            st.generation += 1;
            ex.generation.store(st.generation, Ordering::Release);
            ex.cv.notify_all();
        } else {
            if !self.spin.is_zero() {
                drop(st);
                let t0 = Instant::now();
                while ex.generation.load(Ordering::Acquire) == my_generation
                    && !self.is_aborted()
                    && t0.elapsed() < self.spin
                {
                    // Past a short busy wait, yield the core while polling: on a machine
                    // busier than it has cores the peer may be waiting for one.
                    if t0.elapsed() < PURE_SPIN {
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                }
                st = lock(&ex.state);
            }
            while st.generation == my_generation {
                if self.is_aborted() {
                    return Err(CollectiveError::Aborted { kind });
                }
                st = match ex.cv.wait_timeout(st, POLL) {
                    Ok((g, _)) => g,
                    Err(p) => p.into_inner().0,
                };
            }
        }
        // `round` was set in the round this member took part in, and the next round cannot
        // complete before this member deposits again, so it still holds this round.
        let round = match st.round.as_ref() {
            Some(Ok(t)) => Ok(t.clone()),
            Some(Err(m)) => Err(m.clone()),
            None => Err("collective round vanished".to_string()),
        };
        st.readers_left -= 1;
        if st.readers_left == 0 {
            // Everyone holds its own reference now; drop the exchange's so the inputs are
            // freed as soon as the last member has computed its output.
            st.round = None;
        }
        drop(st);
        let inputs = round.map_err(|msg| CollectiveError::Invalid { kind, msg })?;
        let refs: Vec<&Tensor> = inputs.iter().map(|t| t.as_ref()).collect();
        compute(spec, &refs, member)
    }
}

#[derive(Debug)]
struct Exchange {
    state: Mutex<State>,
    cv: Condvar,
    /// `state.generation`, readable without the lock (for spinning waiters).
    generation: AtomicU64,
}

/// Every member's input of one round, in member order.
type Shared = Arc<Vec<Arc<Tensor>>>;

type Round = Result<Shared, String>;

/// A member's call: what it asked for, its input, and its key if the input is constant.
type Deposit = (CollectiveSpec, Arc<Tensor>, Option<usize>);

/// `rank`'s position in `group`.
fn member_of(
    rank: usize,
    group: &[usize],
    spec: &CollectiveSpec,
) -> Result<usize, CollectiveError> {
    group
        .iter()
        .position(|&r| r == rank)
        .ok_or_else(|| CollectiveError::Invalid {
            kind: spec.kind.as_str(),
            msg: format!("rank {rank} is not in the group {group:?}"),
        })
}

#[derive(Debug)]
struct State {
    generation: u64,
    deposits: Vec<Option<Deposit>>,
    arrived: usize,
    round: Option<Round>,
    readers_left: usize,
}

/// Locks a mutex, recovering from poisoning (a panicking rank aborts the run anyway).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ir::plan::CollectiveKind;

    /// The collective `kind` over `axis` (and `to_axis` for all-to-all).
    fn spec(kind: CollectiveKind, axis: Option<usize>, to_axis: Option<usize>) -> CollectiveSpec {
        CollectiveSpec {
            kind,
            axis,
            to_axis,
            counts: vec![],
        }
    }

    #[test]
    fn threads_agree_with_the_sequential_math() {
        for (n, pinned) in (1..=6).flat_map(|n| [(n, false), (n, true)]) {
            let world = if pinned {
                ShmWorld::pinned(n)
            } else {
                ShmWorld::new(n)
            };
            let group: Vec<usize> = (0..n).collect();
            let inputs: Vec<Tensor> = (0..n)
                .map(|r| {
                    Tensor::f32(
                        vec![2, n],
                        (0..2 * n).map(|i| (i * 7 + r) as f32 * 0.1).collect(),
                    )
                })
                .collect();
            let refs: Vec<&Tensor> = inputs.iter().collect();
            let specs = [
                spec(CollectiveKind::AllReduce, None, None),
                spec(CollectiveKind::ReduceScatter, Some(1), None),
                spec(CollectiveKind::AllGather, Some(0), None),
                spec(CollectiveKind::AllToAll, Some(0), Some(1)),
                spec(CollectiveKind::Broadcast, None, None),
            ];
            let outs: Vec<Vec<Tensor>> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..n)
                    .map(|r| {
                        let (world, group, inputs, specs) = (&world, &group, &inputs, &specs);
                        s.spawn(move || {
                            specs
                                .iter()
                                .map(|sp| {
                                    world
                                        .collective(r, group, sp, Arc::new(inputs[r].clone()))
                                        .unwrap()
                                })
                                .collect()
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for (r, per_rank) in outs.iter().enumerate() {
                for (sp, got) in specs.iter().zip(per_rank) {
                    assert_eq!(
                        got,
                        &compute(sp, &refs, r).unwrap(),
                        "n={n} pinned={pinned} rank={r} {:?}",
                        sp.kind
                    );
                }
            }
        }
    }

    #[test]
    fn abort_wakes_waiting_members() {
        // Sleeping past the spin (100 ms) and aborting during a pinned world's 3 ms poll.
        for (world, wait) in [
            (ShmWorld::new(3), Duration::from_millis(100)),
            (ShmWorld::pinned(3), Duration::from_micros(500)),
        ] {
            aborts_waiting_member(&world, wait);
        }
    }

    fn aborts_waiting_member(world: &ShmWorld, wait: Duration) {
        let spec = spec(CollectiveKind::AllReduce, None, None);
        let res = std::thread::scope(|s| {
            let w = s.spawn(|| {
                world.collective(
                    0,
                    &[0, 1, 2],
                    &spec,
                    Arc::new(Tensor::f32(vec![1], vec![1.0])),
                )
            });
            std::thread::sleep(wait);
            world.abort();
            w.join().unwrap()
        });
        assert!(
            matches!(res, Err(CollectiveError::Aborted { .. })),
            "{res:?}"
        );
    }

    #[test]
    fn constant_inputs_are_read_without_meeting_after_every_member_met_once() {
        let world = ShmWorld::new(2);
        let group = [0, 1];
        let sp = spec(CollectiveKind::AllGather, Some(0), None);
        let inputs: Vec<Arc<Tensor>> = (0..2)
            .map(|r| Arc::new(Tensor::f32(vec![1, 2], vec![r as f32, r as f32 + 0.5])))
            .collect();
        let refs: Vec<&Tensor> = inputs.iter().map(|t| t.as_ref()).collect();
        // Both members call key 7 as constant; then member 0 calls key 8 as constant and
        // member 1 the same round as an ordinary collective: only key 7 is kept.
        std::thread::scope(|s| {
            let (world, group, sp, inputs) = (&world, &group, &sp, &inputs);
            let hs: Vec<_> = (0..2)
                .map(|r| {
                    s.spawn(move || {
                        let a = world.collective_of_constant(r, group, sp, inputs[r].clone(), 7);
                        let b = match r {
                            0 => world.collective_of_constant(r, group, sp, inputs[r].clone(), 8),
                            _ => world.collective(r, group, sp, inputs[r].clone()),
                        };
                        (a.unwrap(), b.unwrap())
                    })
                })
                .collect();
            for (r, h) in hs.into_iter().enumerate() {
                let want = compute(sp, &refs, r).unwrap();
                assert_eq!(h.join().unwrap(), (want.clone(), want));
            }
        });
        // Member 1 alone: key 7 is served at once, with the gathered shards of both.
        let got = world.collective_of_constant(1, &group, &sp, inputs[1].clone(), 7);
        assert_eq!(got.unwrap(), compute(&sp, &refs, 1).unwrap());
        // Key 8 was not constant on every member, so member 0 alone waits for member 1.
        let res = std::thread::scope(|s| {
            let w = s.spawn(|| world.collective_of_constant(0, &group, &sp, inputs[0].clone(), 8));
            std::thread::sleep(Duration::from_millis(20));
            world.abort();
            w.join().unwrap()
        });
        assert!(
            matches!(res, Err(CollectiveError::Aborted { .. })),
            "{res:?}"
        );
    }

    #[test]
    fn mismatched_collectives_fail_on_every_member() {
        let world = ShmWorld::new(2);
        let a = spec(CollectiveKind::AllReduce, None, None);
        let b = spec(CollectiveKind::AllGather, Some(0), None);
        let (ra, rb) = std::thread::scope(|s| {
            let ha = s.spawn(|| {
                world.collective(0, &[0, 1], &a, Arc::new(Tensor::f32(vec![1], vec![1.0])))
            });
            let hb = s.spawn(|| {
                world.collective(1, &[0, 1], &b, Arc::new(Tensor::f32(vec![1], vec![1.0])))
            });
            (ha.join().unwrap(), hb.join().unwrap())
        });
        assert!(ra.unwrap_err().to_string().contains("member 1 called"));
        assert!(rb.is_err());
    }
}
