//! Bounded waits for NCCL, in the spirit of torch's NCCL watchdog.
//!
//! * [`wait_for`]: after a collective is enqueued, its rank polls completion (an event
//!   recorded after it) and the communicator's asynchronous error until a deadline. A
//!   stalled peer (dead, or calling a different collective) therefore gives this rank a
//!   [`CudaError::Collective`] naming the rank and the collective after the timeout, and
//!   the communicator is aborted so that the stream's pending work ends.
//! * [`Deadman`]: a thread that watches calls which block inside a library and cannot be
//!   polled (`ncclCommInitRank`). When an armed call outlives its deadline the thread runs
//!   its expiry action; in a rank process that is [`exit_process`], which prints the reason
//!   and ends the process with `libc::_exit` — not `std::process::exit`, which runs atexit
//!   handlers and library teardown while the main thread may still be inside CUDA or NCCL
//!   (that teardown can itself hang).
//!
//! Both are independent of CUDA, so the tests below drive them with fake collectives.
use super::CudaError;
use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// An enqueued operation whose completion can be polled.
pub trait Pending {
    /// `Ok(true)` once the operation completed; `Err` on a failure seen while polling.
    fn poll(&mut self) -> Result<bool, String>;
    /// An asynchronous error reported for the operation (NCCL: `ncclCommGetAsyncError`).
    fn async_error(&mut self) -> Option<String>;
    /// Aborts the operation (NCCL: `ncclCommAbort`), so that its pending work ends.
    fn abort(&mut self);
}

/// Waits until `p` completes, fails, reports an asynchronous error or `timeout` passes;
/// aborts it on anything but completion. `rank` and `what` name it in the error.
pub fn wait_for(
    rank: usize,
    what: &str,
    timeout: Duration,
    p: &mut impl Pending,
) -> Result<(), CudaError> {
    let start = Instant::now();
    let mut polls: u32 = 0;
    let fail = |p: &mut dyn Pending, msg: String| {
        p.abort();
        Err(CudaError::Collective {
            rank,
            what: what.to_string(),
            msg: format!("{msg}; communicator aborted"),
        })
    };
    loop {
        match p.poll() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => return fail(p, e),
        }
        if let Some(e) = p.async_error() {
            return fail(p, format!("asynchronous error: {e}"));
        }
        let waited = start.elapsed();
        if waited >= timeout {
            return fail(
                p,
                format!(
                    "did not complete within {:.1} s (a peer stalled, died or called a \
                     different collective; TESSERA_NCCL_TIMEOUT_S sets the limit)",
                    timeout.as_secs_f64()
                ),
            );
        }
        // Spin briefly (collectives usually finish in microseconds), then back off.
        polls = polls.saturating_add(1);
        if polls < 64 {
            std::thread::yield_now();
        } else {
            let nap = Duration::from_micros(u64::from(polls.min(1000)));
            std::thread::sleep(nap.min(timeout.saturating_sub(waited)));
        }
    }
}

/// What a [`Deadman`] does when an armed call outlives its deadline (gets the message).
pub type ExpireFn = Box<dyn Fn(String) + Send + Sync>;

/// The expiry action of a rank process: print `message` and end the process at once with
/// `libc::_exit(code)` (see the module notes for why not `process::exit`).
pub fn exit_process(code: i32) -> ExpireFn {
    Box::new(move |message| {
        eprintln!("tessera-run: {message}; exiting");
        // SAFETY: _exit only ends the process (no handlers, no unwinding); calling it from
        // any thread is allowed, and nothing after it runs.
        unsafe { libc::_exit(code) }
    })
}

struct State {
    armed: BTreeMap<u64, (String, Instant, Duration)>,
    next: u64,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    /// The state, even if a thread panicked while holding the lock (the state stays
    /// consistent: every update is a single map operation).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A watcher thread for blocking calls (see the module notes).
pub struct Deadman {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// An armed call: disarmed when dropped.
#[must_use = "the call is watched only while the guard lives"]
pub struct Armed<'a> {
    deadman: &'a Deadman,
    id: u64,
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        self.deadman.shared.lock().armed.remove(&self.id);
        self.deadman.shared.wake.notify_all();
    }
}

impl Deadman {
    /// Starts the watcher of `rank`; `on_expire` runs on its thread for each expired call.
    pub fn start(rank: usize, on_expire: ExpireFn) -> Deadman {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                armed: BTreeMap::new(),
                next: 0,
                stop: false,
            }),
            wake: Condvar::new(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("tessera-deadman-{rank}"))
            .spawn(move || watch(rank, &s, &on_expire))
            .ok();
        Deadman { shared, thread }
    }

    /// Watches `what` for `timeout` from now, until the returned guard drops.
    pub fn arm(&self, what: &str, timeout: Duration) -> Armed<'_> {
        let mut st = self.shared.lock();
        let id = st.next;
        st.next += 1;
        st.armed
            .insert(id, (what.to_string(), Instant::now() + timeout, timeout));
        drop(st);
        self.shared.wake.notify_all();
        Armed { deadman: self, id }
    }
}

fn watch(rank: usize, shared: &Shared, on_expire: &ExpireFn) {
    let mut st = shared.lock();
    loop {
        if st.stop {
            return;
        }
        let now = Instant::now();
        let expired: Vec<u64> = st
            .armed
            .iter()
            .filter(|(_, (_, deadline, _))| *deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        if !expired.is_empty() {
            let msgs: Vec<String> = expired
                .iter()
                .filter_map(|id| st.armed.remove(id))
                .map(|(what, _, t)| {
                    format!(
                        "rank {rank}: {what} did not return within {:.1} s",
                        t.as_secs_f64()
                    )
                })
                .collect();
            drop(st);
            for m in msgs {
                on_expire(m);
            }
            st = shared.lock();
            continue;
        }
        let next = st.armed.values().map(|(_, d, _)| *d).min();
        st = match next {
            Some(d) => {
                let wait = d.saturating_duration_since(now);
                shared
                    .wake
                    .wait_timeout(st, wait)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0)
            }
            None => shared.wake.wait(st).unwrap_or_else(|p| p.into_inner()),
        };
    }
}

impl Drop for Deadman {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;

    /// A collective of two ranks that completes only when both arrived.
    struct FakeCollective {
        arrived: Arc<[AtomicBool; 2]>,
        async_err: Option<String>,
        aborted: Arc<AtomicBool>,
    }

    impl Pending for FakeCollective {
        fn poll(&mut self) -> Result<bool, String> {
            Ok(self.arrived.iter().all(|a| a.load(Ordering::SeqCst)))
        }
        fn async_error(&mut self) -> Option<String> {
            self.async_err.clone()
        }
        fn abort(&mut self) {
            self.aborted.store(true, Ordering::SeqCst);
        }
    }

    fn fake(arrived: &Arc<[AtomicBool; 2]>) -> (FakeCollective, Arc<AtomicBool>) {
        let aborted = Arc::new(AtomicBool::new(false));
        let f = FakeCollective {
            arrived: arrived.clone(),
            async_err: None,
            aborted: aborted.clone(),
        };
        (f, aborted)
    }

    #[test]
    fn stalled_rank_times_out_naming_rank_and_collective() {
        let arrived = Arc::new([AtomicBool::new(true), AtomicBool::new(false)]);
        // Rank 1 never arrives: rank 0's all-reduce must fail, not hang.
        let (mut f, aborted) = fake(&arrived);
        let t0 = Instant::now();
        let e = wait_for(0, "all_reduce", Duration::from_millis(150), &mut f)
            .expect_err("stalled peer")
            .to_string();
        assert!(t0.elapsed() >= Duration::from_millis(150));
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert!(
            e.contains("rank 0") && e.contains("all_reduce") && e.contains("within 0.1"),
            "{e}"
        );
        assert!(e.contains("aborted"), "{e}");
        assert!(
            aborted.load(Ordering::SeqCst),
            "the communicator is aborted"
        );
    }

    #[test]
    fn completion_from_another_thread_ends_the_wait() {
        let arrived = Arc::new([AtomicBool::new(true), AtomicBool::new(false)]);
        let (mut f, aborted) = fake(&arrived);
        let a = arrived.clone();
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            a[1].store(true, Ordering::SeqCst);
        });
        wait_for(0, "broadcast", Duration::from_secs(10), &mut f).expect("completes");
        late.join().expect("thread");
        assert!(!aborted.load(Ordering::SeqCst));
    }

    #[test]
    fn async_error_fails_at_once() {
        let arrived = Arc::new([AtomicBool::new(true), AtomicBool::new(false)]);
        let (mut f, aborted) = fake(&arrived);
        f.async_err = Some("remote process exited or there was a network error".into());
        let t0 = Instant::now();
        let e = wait_for(1, "reduce_scatter", Duration::from_secs(30), &mut f)
            .expect_err("async error")
            .to_string();
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert!(
            e.contains("rank 1") && e.contains("reduce_scatter") && e.contains("remote process"),
            "{e}"
        );
        assert!(aborted.load(Ordering::SeqCst));
    }

    fn recorder() -> (ExpireFn, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let f: ExpireFn = Box::new(move |m| {
            if let Ok(t) = tx.lock() {
                let _ = t.send(m);
            }
        });
        (f, rx)
    }

    #[test]
    fn deadman_fires_for_a_call_that_never_returns() {
        let (on_expire, rx) = recorder();
        let dm = Deadman::start(3, on_expire);
        // A simulated init that blocks forever (the guard is held past the deadline).
        let _stuck = dm.arm("NCCL init (ncclCommInitRank)", Duration::from_millis(80));
        let m = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the deadman fires");
        assert!(
            m.contains("rank 3") && m.contains("ncclCommInitRank"),
            "{m}"
        );
        assert!(m.contains("within 0.1 s"), "{m}");
    }

    #[test]
    fn deadman_stays_quiet_for_calls_that_return() {
        let (on_expire, rx) = recorder();
        let dm = Deadman::start(0, on_expire);
        for _ in 0..20 {
            let _g = dm.arm("quick call", Duration::from_millis(200));
        }
        let long = dm.arm("long call", Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(300));
        drop(long);
        assert!(rx.try_recv().is_err(), "nothing expired");
        drop(dm); // the thread stops and joins
    }
}
