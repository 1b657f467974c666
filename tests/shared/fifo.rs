//! FIFO helpers shared by the tests of every crate (included with `#[path]`, since test
//! targets of different crates cannot share a module otherwise): a FIFO opened for reading
//! blocks until a writer comes, so the code under test must refuse it, and the tests must
//! fail rather than hang when it does not.
#![cfg(unix)]
#![allow(dead_code)]
use std::path::Path;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

/// Makes a FIFO at `path` (with the `mkfifo` command).
pub fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo").arg(path).status();
    assert!(status.unwrap().success(), "mkfifo {}", path.display());
}

/// Runs `f` on a thread and returns its result; fails the test if it has not returned within
/// `secs` seconds (what hung is named by `what`).
pub fn within<T: Send + 'static>(
    secs: u64,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (done, result) = std::sync::mpsc::sync_channel(1);
    std::thread::spawn(move || done.send(f()).ok());
    match result.recv_timeout(Duration::from_secs(secs)) {
        Ok(value) => value,
        Err(RecvTimeoutError::Timeout) => panic!("{what} hung on a FIFO for {secs} s"),
        Err(RecvTimeoutError::Disconnected) => panic!("{what} panicked (its message is above)"),
    }
}

/// [`within`] 20 seconds: for library calls that must refuse a FIFO at once.
pub fn within_timeout<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    within(20, "the call", f)
}
