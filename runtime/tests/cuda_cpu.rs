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
