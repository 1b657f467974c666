//! The meeting point of in-process ranks' collectives, independent of where the data lives
//! (the virtual ranks of [`super::virtual_ranks`] exchange device tensors through it; the
//! tests below exchange integers).
//!
//! Every member deposits its input and waits; the last member to arrive checks that all
//! called the same collective, runs the leader function on the inputs (in rank order) and
//! publishes one output per rank; each member takes its own. A member that arrives for the
//! next collective while the previous round's outputs are still being taken waits for them.
//! Waiting re-checks an abort flag ([`Exchange::abort`]) so that a failed rank never leaves
//! its peers hanging, and is bounded ([`Exchange::with_timeout`]): a rank that stalls
//! without failing (or calls nothing) makes the waiting ranks fail after the timeout with
//! an error naming them, the collective and the ranks that never arrived.
use crate::collectives::{CollectiveError, CollectiveSpec};
use crate::device::DeviceError;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often a waiting member re-checks the abort flag even without a notification.
const POLL: Duration = Duration::from_millis(50);

/// Default bound on one collective's wait (as for NCCL collectives).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// A rendezvous of `world` rank threads, one collective round at a time.
pub struct Exchange<T> {
    world: usize,
    timeout: Duration,
    aborted: AtomicBool,
    state: Mutex<Round<T>>,
    cv: Condvar,
}

/// One round: deposits until everyone arrived, then outputs until everyone took theirs.
struct Round<T> {
    generation: u64,
    deposits: Vec<Option<(CollectiveSpec, T)>>,
    arrived: usize,
    /// Each rank's output, moved out (not cloned) when the rank takes it, so the rank
    /// holds the only handle to it.
    outputs: Option<Result<Vec<Option<T>>, String>>,
    taken: usize,
}

impl<T: Clone> Exchange<T> {
    /// An exchange for `world` ranks whose waits are bounded by [`DEFAULT_TIMEOUT`].
    pub fn new(world: usize) -> Exchange<T> {
        Exchange::with_timeout(world, DEFAULT_TIMEOUT)
    }

    /// An exchange for `world` ranks whose waits fail after `timeout`.
    pub fn with_timeout(world: usize, timeout: Duration) -> Exchange<T> {
        Exchange {
            world,
            timeout,
            aborted: AtomicBool::new(false),
            state: Mutex::new(Round {
                generation: 0,
                deposits: vec![None; world],
                arrived: 0,
                outputs: None,
                taken: 0,
            }),
            cv: Condvar::new(),
        }
    }

    /// Number of ranks.
    pub fn world(&self) -> usize {
        self.world
    }

    /// Marks the run as failed and wakes every waiting member.
    pub fn abort(&self) {
        self.aborted.store(true, Ordering::SeqCst);
        // Taking the lock orders the flag store before the waiters' re-check.
        let _g = self.lock();
        self.cv.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, Round<T>> {
        // A poisoned lock means a member panicked while holding it; the round's fields are
        // only updated together under the lock, and the run is being aborted anyway.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits while `busy` holds, failing as soon as the run is aborted, or after the timeout
    /// (which aborts the run, so that every other waiting rank fails too).
    fn wait_while<'a>(
        &self,
        mut st: MutexGuard<'a, Round<T>>,
        rank: usize,
        kind: &'static str,
        busy: impl Fn(&Round<T>) -> bool,
    ) -> Result<MutexGuard<'a, Round<T>>, DeviceError> {
        let start = Instant::now();
        loop {
            if self.aborted.load(Ordering::SeqCst) {
                return Err(CollectiveError::Aborted { kind }.into());
            }
            if !busy(&st) {
                return Ok(st);
            }
            if start.elapsed() >= self.timeout {
                let who = if st.outputs.is_some() {
                    "the previous round's outputs were not all taken".to_string()
                } else {
                    let missing: Vec<usize> = (0..self.world)
                        .filter(|r| st.deposits[*r].is_none())
                        .collect();
                    format!("ranks {missing:?} never arrived")
                };
                self.aborted.store(true, Ordering::SeqCst);
                self.cv.notify_all();
                return Err(DeviceError::Backend(format!(
                    "rank {rank}, collective {kind}: did not complete within {:.1} s; {who} \
                     (stalled or calling something else; TESSERA_NCCL_TIMEOUT_S sets the limit)",
                    self.timeout.as_secs_f64()
                )));
            }
            st = self
                .cv
                .wait_timeout(st, POLL.min(self.timeout))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Rank `rank` joins collective `spec` with input `x` and blocks until every rank has;
    /// the last to arrive runs `leader` on all inputs (by rank), which returns one output
    /// per rank. Returns this rank's output, the leader's error, or an abort.
    pub fn meet(
        &self,
        rank: usize,
        spec: &CollectiveSpec,
        x: T,
        leader: impl FnOnce(Vec<T>) -> Result<Vec<T>, String>,
    ) -> Result<T, DeviceError> {
        let kind = spec.kind.as_str();
        if rank >= self.world {
            return Err(DeviceError::Backend(format!(
                "{kind}: rank {rank} is not below world size {}",
                self.world
            )));
        }
        let st = self.lock();
        let mut st = self.wait_while(st, rank, kind, |r| r.outputs.is_some())?;
        if st.deposits[rank].is_some() {
            return Err(DeviceError::Backend(format!(
                "{kind}: rank {rank} joined one round twice"
            )));
        }
        st.deposits[rank] = Some((spec.clone(), x));
        st.arrived += 1;
        if st.arrived == self.world {
            let (specs, xs): (Vec<_>, Vec<_>) =
                st.deposits.iter_mut().filter_map(Option::take).unzip();
            let outputs = match specs.iter().position(|s| s != &specs[0]) {
                Some(r) => Err(format!(
                    "ranks disagree on the collective: rank 0 called {:?}, rank {r} {:?}",
                    specs[0], specs[r]
                )),
                None => leader(xs).and_then(|o| {
                    if o.len() == self.world {
                        Ok(o)
                    } else {
                        Err(format!(
                            "{kind}: {} outputs for {} ranks",
                            o.len(),
                            self.world
                        ))
                    }
                }),
            };
            st.outputs = Some(outputs.map(|o| o.into_iter().map(Some).collect()));
            st.arrived = 0;
            st.taken = 0;
            st.generation += 1;
            self.cv.notify_all();
        } else {
            let gen = st.generation;
            st = self.wait_while(st, rank, kind, |r| r.generation == gen)?;
        }
        let out = match &mut st.outputs {
            Some(Ok(outs)) => outs
                .get_mut(rank)
                .and_then(Option::take)
                .ok_or_else(|| DeviceError::Backend(format!("{kind}: output taken twice"))),
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
}

/// One [`Exchange`] per group of ranks (the whole world on a 1-D mesh; each data group's
/// ranks on a `[D, T]` mesh), made on a group's first collective and shared by its members.
pub struct ExchangeGroups<T> {
    timeout: Duration,
    aborted: AtomicBool,
    groups: Mutex<BTreeMap<Vec<usize>, Arc<Exchange<T>>>>,
}

impl<T: Clone> ExchangeGroups<T> {
    /// No group yet; each group's waits fail after `timeout`.
    pub fn new(timeout: Duration) -> ExchangeGroups<T> {
        ExchangeGroups {
            timeout,
            aborted: AtomicBool::new(false),
            groups: Mutex::new(BTreeMap::new()),
        }
    }

    /// The exchange of `group` (ranks in member order), made on first use; one made after
    /// [`ExchangeGroups::abort`] starts aborted.
    pub fn exchange(&self, group: &[usize]) -> Arc<Exchange<T>> {
        let mut map = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(group.to_vec())
            .or_insert_with(|| {
                let ex = Arc::new(Exchange::with_timeout(group.len(), self.timeout));
                // Read under the lock that abort() also takes: no group escapes an abort.
                if self.aborted.load(Ordering::SeqCst) {
                    ex.abort();
                }
                ex
            })
            .clone()
    }

    /// Wakes every member of every group with an abort (a rank failed).
    pub fn abort(&self) {
        let map = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        self.aborted.store(true, Ordering::SeqCst);
        for ex in map.values() {
            ex.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;
    use tessera_ir::plan::CollectiveKind;

    fn spec(kind: CollectiveKind) -> CollectiveSpec {
        CollectiveSpec {
            kind,
            axis: None,
            to_axis: None,
            counts: vec![],
        }
    }

    /// Every rank gets the rank-order sum; outputs of one round never leak into the next.
    fn sums(ex: &Exchange<i64>, rank: usize, rounds: i64) -> Vec<i64> {
        let s = spec(CollectiveKind::AllReduce);
        (0..rounds)
            .map(|round| {
                let x = 10 * round + rank as i64;
                let sum = |xs: Vec<i64>| Ok(vec![xs.iter().sum(); xs.len()]);
                ex.meet(rank, &s, x, sum).unwrap()
            })
            .collect()
    }

    #[test]
    fn ranks_meet_round_after_round() {
        let ex = Arc::new(Exchange::new(3));
        let handles: Vec<_> = (0..3)
            .map(|r| {
                let ex = ex.clone();
                thread::spawn(move || sums(&ex, r, 50))
            })
            .collect();
        let want: Vec<i64> = (0..50).map(|round| 30 * round + 3).collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), want);
        }
    }

    #[test]
    fn each_group_meets_apart_and_an_abort_reaches_every_group() {
        let groups: ExchangeGroups<i64> = ExchangeGroups::new(DEFAULT_TIMEOUT);
        let (a, b) = (groups.exchange(&[0, 1]), groups.exchange(&[2, 3]));
        assert!(Arc::ptr_eq(&a, &groups.exchange(&[0, 1])));
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!((a.world(), b.world()), (2, 2));
        // Two groups of 2 sum their own members' inputs, concurrently.
        let handles: Vec<_> = [(0usize, 0usize), (0, 1), (1, 0), (1, 1)]
            .into_iter()
            .map(|(g, m)| {
                let ex = if g == 0 { a.clone() } else { b.clone() };
                thread::spawn(move || {
                    let s = spec(CollectiveKind::AllReduce);
                    let x = 10 * g as i64 + m as i64;
                    ex.meet(m, &s, x, |xs| Ok(vec![xs.iter().sum(); xs.len()]))
                        .unwrap()
                })
            })
            .collect();
        let got: Vec<i64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(got, vec![1, 1, 21, 21]);
        groups.abort();
        // A group made after the abort starts aborted: its first member does not wait.
        let late = groups.exchange(&[4, 5]);
        let e = late
            .meet(0, &spec(CollectiveKind::AllReduce), 1, Ok)
            .unwrap_err();
        assert!(e.is_abort(), "{e}");
    }

    #[test]
    fn mismatched_collectives_fail_every_rank() {
        let ex = Arc::new(Exchange::new(2));
        let e2 = ex.clone();
        let other = thread::spawn(move || {
            e2.meet(1, &spec(CollectiveKind::Broadcast), 0, Ok)
                .unwrap_err()
                .to_string()
        });
        let mine = ex
            .meet(0, &spec(CollectiveKind::AllReduce), 0, Ok)
            .unwrap_err()
            .to_string();
        assert!(mine.contains("disagree"), "{mine}");
        assert_eq!(other.join().unwrap(), mine);
    }

    #[test]
    fn abort_wakes_a_waiting_rank() {
        let ex = Arc::new(Exchange::<i64>::new(2));
        let e2 = ex.clone();
        let waiting = thread::spawn(move || {
            e2.meet(0, &spec(CollectiveKind::AllReduce), 1, Ok)
                .unwrap_err()
        });
        thread::sleep(Duration::from_millis(100));
        ex.abort();
        let err = waiting.join().unwrap();
        assert!(err.is_abort(), "{err}");
        let late = ex.meet(1, &spec(CollectiveKind::AllReduce), 1, Ok);
        assert!(late.unwrap_err().is_abort());
    }

    /// Each rank receives the only handle to its output (moved out, never cloned), at 3, 4
    /// and 8 ranks: what lets the virtual ranks free each output on its own rank's terms.
    #[test]
    fn outputs_are_moved_to_their_rank() {
        for world in [3usize, 4, 8] {
            let ex = Arc::new(Exchange::<Arc<usize>>::new(world));
            let handles: Vec<_> = (0..world)
                .map(|r| {
                    let ex = ex.clone();
                    thread::spawn(move || {
                        (0..20)
                            .map(|round| {
                                let per_rank = |xs: Vec<Arc<usize>>| {
                                    Ok((0..xs.len()).map(|i| Arc::new(round * 100 + i)).collect())
                                };
                                let s = spec(CollectiveKind::AllReduce);
                                let out = ex.meet(r, &s, Arc::new(r), per_rank).unwrap();
                                (Arc::strong_count(&out), *out == round * 100 + r)
                            })
                            .all(|(count, right)| count == 1 && right)
                    })
                })
                .collect();
            for h in handles {
                assert!(
                    h.join().unwrap(),
                    "world {world}: an output was shared or wrong"
                );
            }
        }
    }

    /// A rank that never calls the collective (stalled, alive) makes the others fail after
    /// the timeout, naming themselves, the collective and the missing rank.
    #[test]
    fn a_stalled_rank_times_the_others_out() {
        let ex = Arc::new(Exchange::<i64>::with_timeout(3, Duration::from_millis(200)));
        let t0 = std::time::Instant::now();
        let waiting: Vec<_> = (0..2)
            .map(|r| {
                let ex = ex.clone();
                thread::spawn(move || {
                    ex.meet(r, &spec(CollectiveKind::AllReduce), 1, Ok)
                        .unwrap_err()
                        .to_string()
                })
            })
            .collect();
        let errs: Vec<String> = waiting.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(t0.elapsed() < Duration::from_secs(5));
        // One rank times out; the other may instead see the abort it triggered.
        let timed_out: Vec<&String> = errs.iter().filter(|e| e.contains("within 0.2 s")).collect();
        assert!(!timed_out.is_empty(), "{errs:?}");
        for e in timed_out {
            assert!(
                e.contains("all_reduce") && e.contains("[2]") && e.contains("rank "),
                "{e}"
            );
        }
    }
}
