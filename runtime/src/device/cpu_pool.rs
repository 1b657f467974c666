//! A CPU device's thread pool: which ops are worth splitting between its threads, and the
//! helpers that keep its other threads polling for work while a run goes on.
//!
//! A sleeping rayon worker takes tens of microseconds to wake (a futex and a reschedule,
//! more on a VM), and a run hands split work to the pool at every large op. So the rank's
//! program runs on a thread of the pool (`Device::enter` with [`DevicePool::home`]); from
//! its first split op to the end of the run the pool's other threads poll for work
//! ([`Helpers`]), and smaller ops are split: from a sixteenth of the sizes the device hands
//! over ([`POOL_MIN_POLLING`]), and from an eighth of the kernels' own. Where the machine has fewer cores than threads,
//! nothing polls and the pool sleeps between ops as rayon's pools do.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_ir::{Op, Tensor};

/// The smallest work worth splitting between a device's threads.
#[derive(Debug, Clone, Copy)]
pub(super) struct PoolMin {
    /// Multiply-adds of a product, convolution or attention.
    macs: usize,
    /// Elements of the largest operand of other work.
    elements: usize,
}

/// [`PoolMin`] when the pool's other threads sleep between ops: handing work over costs
/// more than it saves below it. (Measured: a 128×64×256 MLP product, 2M multiply-adds, ran
/// 4× slower through the pool on a loaded 2-core machine.)
const POOL_MIN_SLEEPING: PoolMin = PoolMin {
    macs: 1 << 22,
    elements: 1 << 18,
};

/// [`PoolMin`] while the pool's other threads poll for work: a hand-over costs about a
/// microsecond. (Measured: Qwen2 at 1×128 on 2 threads, 0.55 → 0.42 ms with these and the
/// kernels' own split sizes in [`tessera_kernels::polled`].)
const POOL_MIN_POLLING: PoolMin = PoolMin {
    macs: 1 << 18,
    elements: 1 << 15,
};

/// How long a helper thread of a run waits for work, polling, before it sleeps until
/// rayon wakes it (a rank waiting long on a peer lets its pool sleep).
const HELPER_IDLE: Duration = Duration::from_millis(1);

/// A device's rayon pool of two or more threads.
#[derive(Debug)]
pub(super) struct DevicePool {
    pool: Arc<rayon::ThreadPool>,
    /// Whether its threads may poll for work: only where the machine has a core for every
    /// thread of every device (polling threads would take cores from the others').
    poll: bool,
    /// The polling threads of the current run, from its first split op.
    helpers: Option<Helpers>,
}

impl DevicePool {
    /// Wraps a pool; `poll` as in [`DevicePool::poll`].
    pub(super) fn new(pool: rayon::ThreadPool, poll: bool) -> DevicePool {
        DevicePool {
            pool: Arc::new(pool),
            poll,
            helpers: None,
        }
    }

    /// The pool's threads.
    pub(super) fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// The pool, to run a rank's program on one of its threads (`install`) when its other
    /// threads may poll; `None` otherwise.
    pub(super) fn home(&self) -> Option<Arc<rayon::ThreadPool>> {
        self.poll.then(|| self.pool.clone())
    }

    /// The smallest work to split now.
    pub(super) fn min(&self) -> PoolMin {
        match self.entered() {
            true => POOL_MIN_POLLING,
            false => POOL_MIN_SLEEPING,
        }
    }

    /// True on a thread of this pool that may poll (inside [`DevicePool::home`]'s install).
    fn entered(&self) -> bool {
        self.poll && self.pool.current_thread_index().is_some()
    }

    /// Runs `f` split between the pool's threads (`big`) or on the calling thread alone.
    pub(super) fn run<R: Send>(&mut self, big: bool, f: impl FnOnce() -> R + Send) -> R {
        if !big {
            return tessera_kernels::serial(f);
        }
        if self.helpers.is_none() && self.entered() {
            self.helpers = Some(Helpers::start(&self.pool));
        }
        self.pool.install(f)
    }

    /// Ends a run: the helpers stop polling.
    pub(super) fn finish_run(&mut self) {
        self.helpers = None;
    }
}

/// The other threads of a device's pool, polling for work while the rank runs on one of
/// them. Dropping it lets them go back to sleep.
#[derive(Debug)]
struct Helpers {
    stop: Arc<AtomicBool>,
}

impl Helpers {
    /// Sets every thread of `pool` but the calling one polling (called inside the pool).
    fn start(pool: &rayon::ThreadPool) -> Helpers {
        let stop = Arc::new(AtomicBool::new(false));
        let me = rayon::current_thread_index();
        let flag = stop.clone();
        pool.spawn_broadcast(move |ctx| {
            if Some(ctx.index()) != me {
                poll_for_work(&flag);
            }
        });
        Helpers { stop }
    }
}

impl Drop for Helpers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Runs the pool's pending jobs (rayon's `yield_now` steals them) until `stop` is set or
/// none has come for [`HELPER_IDLE`].
fn poll_for_work(stop: &AtomicBool) {
    let mut idle_since = Instant::now();
    while !stop.load(Ordering::Acquire) {
        match rayon::yield_now() {
            Some(rayon::Yield::Executed) => idle_since = Instant::now(),
            Some(rayon::Yield::Idle) if idle_since.elapsed() < HELPER_IDLE => {
                std::hint::spin_loop()
            }
            _ => return,
        }
    }
}

/// Multiply-adds of a product `[.., m, k] · [.., k, n]` (0 when the shapes are not those
/// of a product).
fn product_macs(a: &[usize], b: &[usize]) -> usize {
    match (a, b) {
        ([.., m, k], [.., n]) if a.len() >= 2 && !b.is_empty() => {
            let batch: usize = a[..a.len() - 2].iter().product();
            batch.max(1) * m * k * n
        }
        _ => 0,
    }
}

/// Multiply-adds of a convolution (or a transposed one) of `x` `[N, C, spatial..]` with a
/// weight `w` of `w.numel()` elements, taken as stride 1: every input position meets the
/// whole weight once (1–4× the true count for strided ones).
fn conv_macs(x: &[usize], w: &[usize]) -> usize {
    match x {
        [n, _, spatial @ ..] if !spatial.is_empty() => {
            n * spatial.iter().product::<usize>() * w.iter().product::<usize>()
        }
        _ => 0,
    }
}

/// True when an op is large enough to run inside the device's pool.
pub(super) fn op_is_big(op: &Op, inputs: &[&Tensor], min: PoolMin) -> bool {
    match op {
        Op::MatMul(_) | Op::Gemm(_) | Op::Einsum(_) => {
            inputs.len() >= 2
                && product_macs(&inputs[0].shape, &inputs[1].shape).max(inputs[0].numel())
                    >= min.macs
        }
        Op::Conv(_) | Op::ConvTranspose(_) => {
            inputs.len() >= 2 && conv_macs(&inputs[0].shape, &inputs[1].shape) >= min.macs
        }
        // Rows split between the threads (`tessera_kernels::par_rows`).
        Op::RmsNorm(_) => inputs.first().is_some_and(|x| x.numel() >= min.elements),
        _ => false,
    }
}

/// True when a fused op is large enough to run inside the device's pool.
pub(super) fn fused_is_big(
    op: &tessera_kernels::FusedOp,
    inputs: &[&Tensor],
    min: PoolMin,
) -> bool {
    use tessera_kernels::FusedOp;
    match op {
        // q [B, Sq, H·D] against Sk keys: B·Sq·H·D·Sk multiply-adds per product; the
        // kernel splits heads between the threads.
        FusedOp::Attention(a) => inputs[0].numel() * a.kv_len >= min.macs,
        FusedOp::MatMulEpilogue { held: Some(w), .. } => {
            inputs.first().map_or(0, |x| x.numel()) * w.shape()[1] >= min.macs
        }
        FusedOp::MatMulEpilogue { .. } => {
            inputs.len() >= 2 && product_macs(&inputs[0].shape, &inputs[1].shape) >= min.macs
        }
        FusedOp::QuantMatMul(q) => {
            let rows = inputs.first().map_or(0, |x| {
                x.shape[..x.shape.len().saturating_sub(1)]
                    .iter()
                    .product::<usize>()
            });
            let kn = match &q.weight {
                tessera_kernels::QuantWeight::Packed(w) => w.shape().iter().product(),
                tessera_kernels::QuantWeight::Dequantised { scale, .. } => {
                    inputs
                        .first()
                        .map_or(0, |x| x.shape.last().copied().unwrap_or(0))
                        * scale.len()
                }
            };
            rows * kn >= min.macs
        }
        // The Conv's own measure (op_is_big), so fusing never moves a Conv between threads
        // (a held weight keeps its logical shape).
        FusedOp::ConvEpilogue { held, .. } => {
            use tessera_kernels::HeldConvWeight;
            let w = match held {
                Some(HeldConvWeight::Packed(p)) => Some(p.shape()),
                Some(HeldConvWeight::Grouped(p)) => Some(p.shape()),
                Some(HeldConvWeight::Plain(t)) => Some(&t.shape[..]),
                None => inputs.get(1).map(|t| &t.shape[..]),
            };
            match (inputs.first(), w) {
                (Some(x), Some(w)) => conv_macs(&x.shape, w) >= min.macs,
                _ => false,
            }
        }
        _ => inputs.iter().map(|t| t.numel()).max().unwrap_or(0) >= min.elements,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn conv_work_counts_every_position_against_the_whole_weight() {
        // 2 images of 16 channels on 8×8, 32 filters of 16×3×3: 2·64·4608.
        assert_eq!(conv_macs(&[2, 16, 8, 8], &[32, 16, 3, 3]), 589_824);
        // A depthwise Conv's weight is one plane per channel.
        assert_eq!(conv_macs(&[1, 96, 28, 28], &[96, 1, 3, 3]), 677_376);
        assert_eq!(conv_macs(&[4, 8], &[8, 8]), 0);
    }

    #[test]
    fn helpers_run_split_work_and_stop_when_dropped() {
        use rayon::prelude::*;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("a 2-thread pool");
        let sum: u64 = pool.install(|| {
            let helpers = Helpers::start(&pool);
            let s = (0..100_000u64).into_par_iter().map(|i| i % 7).sum();
            drop(helpers);
            s
        });
        assert_eq!(sum, (0..100_000u64).map(|i| i % 7).sum::<u64>());
        // A broadcast reaches every thread only once each has left its polling loop.
        let (tx, rx) = mpsc::channel();
        let pool = Arc::new(pool);
        let p = pool.clone();
        std::thread::spawn(move || {
            let _ = tx.send(p.broadcast(|c| c.index()).len());
        });
        let reached = rx.recv_timeout(Duration::from_secs(10));
        assert_eq!(reached, Ok(2), "a helper kept polling after its run ended");
    }
}
