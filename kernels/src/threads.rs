//! How the kernels share their work with the threads of the rayon pool they run in (a CPU
//! device's threads): whether to split at all ([`pool_threads`], [`serial`]), from which
//! size ([`split_min`], smaller inside [`polled`]) and rows split in whole rows
//! ([`par_rows`]). No split divides a reduction, so results do not depend on the threads.
use rayon::prelude::*;

thread_local! {
    /// Set while [`serial`] runs its closure: kernels then keep their work on this thread.
    static SERIAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Set while [`polled`] runs its closure.
    static POLLED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A product or convolution is split between the pool's threads from
/// `min_sleeping >> SPLIT_POLLED_SHIFT` multiply-adds inside [`polled`].
const SPLIT_POLLED_SHIFT: u32 = 3;

/// Runs `f` telling the kernels it calls that the other threads of their rayon pool are
/// polling for work (a hand-over costs about a microsecond), so that smaller products are
/// worth splitting.
pub fn polled<R>(f: impl FnOnce() -> R) -> R {
    with_flag(&POLLED, f)
}

/// Runs `f` with the thread-local `flag` set, restoring it when `f` returns or unwinds.
fn with_flag<R>(
    flag: &'static std::thread::LocalKey<std::cell::Cell<bool>>,
    f: impl FnOnce() -> R,
) -> R {
    /// Restores the flag's earlier value on drop.
    struct Restore(&'static std::thread::LocalKey<std::cell::Cell<bool>>, bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            self.0.with(|s| s.set(self.1));
        }
    }
    let _restore = Restore(flag, flag.with(|s| s.replace(true)));
    f()
}

/// The size from which a kernel splits its work between the pool's threads: its own
/// `min_sleeping` (chosen where waking a sleeping worker costs tens of microseconds), an
/// eighth of it inside [`polled`].
pub(crate) fn split_min(min_sleeping: usize) -> usize {
    if POLLED.with(|s| s.get()) {
        min_sleeping >> SPLIT_POLLED_SHIFT
    } else {
        min_sleeping
    }
}

/// Runs `f` with every kernel it calls on the calling thread alone, even inside a rayon
/// pool (work too small to be worth waking the pool's other threads for).
pub fn serial<R>(f: impl FnOnce() -> R) -> R {
    with_flag(&SERIAL, f)
}

/// Threads a kernel may split its work over: the size of the rayon pool it runs in (a
/// device's threads), or 1 outside any pool and inside [`serial`].
pub(crate) fn pool_threads() -> usize {
    match rayon::current_thread_index() {
        Some(_) if !SERIAL.with(|s| s.get()) => rayon::current_num_threads(),
        _ => 1,
    }
}

/// Elements from which [`par_rows`] splits while the pool's other threads sleep.
const ROWS_MIN_ELEMENTS: usize = 1 << 18;

/// Runs `f(first_row, rows)` over `out` in whole rows of `row` elements: split between the
/// pool's threads (about four pieces each) when it has several and `out` holds at least
/// [`split_min`] of [`ROWS_MIN_ELEMENTS`] elements, else in one call.
pub(crate) fn par_rows<T: Send>(out: &mut [T], row: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let rows = out.len().checked_div(row).unwrap_or(0);
    let threads = pool_threads();
    if threads > 1 && rows > 1 && out.len() >= split_min(ROWS_MIN_ELEMENTS) {
        let per = rows.div_ceil(threads * 4).max(1);
        out.par_chunks_mut(per * row)
            .enumerate()
            .for_each(|(i, piece)| f(i * per, piece));
    } else {
        f(0, out);
    }
}

/// [`par_rows`] over two outputs of the same rows, `a` and `b`, or `a` alone when `b` is
/// empty (`f` then gets empty pieces of `b`).
pub(crate) fn par_rows_pair<T: Send>(
    a: &mut [T],
    b: &mut [T],
    row: usize,
    f: impl Fn(usize, &mut [T], &mut [T]) + Sync,
) {
    if b.is_empty() {
        return par_rows(a, row, |r0, piece| f(r0, piece, &mut []));
    }
    let rows = a.len().checked_div(row).unwrap_or(0);
    let threads = pool_threads();
    if threads > 1 && rows > 1 && a.len() >= split_min(ROWS_MIN_ELEMENTS) {
        let per = rows.div_ceil(threads * 4).max(1);
        a.par_chunks_mut(per * row)
            .zip(b.par_chunks_mut(per * row))
            .enumerate()
            .for_each(|(i, (pa, pb))| f(i * per, pa, pb));
    } else {
        f(0, a, b);
    }
}
