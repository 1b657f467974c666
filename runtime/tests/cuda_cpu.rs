//! CPU-side checks of the CUDA backend that run on any machine: no panic and one clear
//! error line without a driver, bad rank setups refused before CUDA is touched.
#![cfg(feature = "cuda")]
#[path = "exec_support/mod.rs"]
mod exec_support;

use tessera_runtime::cuda::probe::unavailable_reason;
use tessera_runtime::cuda::{CommSpec, CudaDevice};
use tessera_runtime::device::DeviceKind;
use tessera_runtime::exec::{run_plan, RunOptions};
use tessera_runtime::weights::WeightStore;

#[test]
fn opening_without_a_driver_is_an_error_not_a_panic() {
    let reason = unavailable_reason();
    let opened = CudaDevice::open(0, 1, CommSpec::Single { device: 0 });
    match (&reason, &opened) {
        (Some(why), Err(e)) => {
            println!("no CUDA here: {why}");
            let msg = e.to_string();
            assert!(
                msg.contains("CUDA") || msg.contains("lib"),
                "unclear error: {msg}"
            );
        }
        (None, Ok(_)) => println!("CUDA present: device opened"),
        (Some(why), Ok(_)) => panic!("probe says unavailable ({why}) but the device opened"),
        (None, Err(e)) => panic!("probe says available but the device failed: {e}"),
    }
}

#[test]
fn a_cuda_run_without_a_driver_fails_with_one_clear_line() {
    let Some(why) = unavailable_reason() else {
        println!("CUDA present: covered by cuda_gpu.rs");
        return;
    };
    let (plan, inputs) = exec_support::mlp_plan(2);
    let opts = RunOptions {
        backend: DeviceKind::Cuda,
    };
    let e = run_plan(&plan, &WeightStore::with_dir("."), &inputs, &opts)
        .expect_err("no driver, yet the run succeeded")
        .to_string();
    println!("no CUDA here ({why}): {e}");
    assert!(
        e.contains("CUDA") && !e.contains('\n'),
        "unclear error: {e}"
    );
}

#[test]
fn bad_rank_setups_are_refused_before_touching_cuda() {
    let refused = |rank, world, comm| {
        CudaDevice::open(rank, world, comm)
            .err()
            .expect("a bad setup was accepted")
            .to_string()
    };
    let e = refused(2, 2, CommSpec::Single { device: 0 });
    assert!(e.contains("rank 2 is not below world size 2"), "{e}");
    let e = refused(0, 2, CommSpec::Single { device: 0 });
    assert!(e.contains("needs NCCL"), "{e}");
    let id = vec![0; 5];
    let timeouts = Default::default();
    let e = refused(
        0,
        2,
        CommSpec::Nccl {
            device: 0,
            id,
            timeouts,
        },
    );
    assert!(e.contains("5 bytes"), "{e}");
}

/// Set in the child process of [`a_stuck_call_ends_the_process_with_exit_status_4`].
const STUCK_CHILD: &str = "TESSERA_TEST_STUCK_CHILD";

/// The deadman ends a process whose main thread is stuck in a call that never returns (as
/// in `ncclCommInitRank` waiting for a rank that never comes): the test re-runs itself as
/// a child whose main thread blocks forever; the watcher thread prints the reason and
/// `_exit`s with status 4.
#[test]
fn a_stuck_call_ends_the_process_with_exit_status_4() {
    use std::time::{Duration, Instant};
    use tessera_runtime::cuda::comm::EXIT_NCCL_STUCK;
    use tessera_runtime::cuda::watchdog::{exit_process, Deadman};
    if std::env::var_os(STUCK_CHILD).is_some() {
        let dm = Deadman::start(7, exit_process(EXIT_NCCL_STUCK));
        let _armed = dm.arm("simulated NCCL init", Duration::from_millis(150));
        loop {
            std::thread::park(); // the stuck call: never returns
        }
    }
    let exe = std::env::current_exe().expect("test binary");
    let t0 = Instant::now();
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "a_stuck_call_ends_the_process_with_exit_status_4",
            "--nocapture",
        ])
        .env(STUCK_CHILD, "1")
        .output()
        .expect("run the child");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_NCCL_STUCK), "{stderr}");
    assert!(
        stderr.contains("rank 7: simulated NCCL init did not return within 0.1 s"),
        "{stderr}"
    );
    assert!(t0.elapsed() < Duration::from_secs(20));
}
