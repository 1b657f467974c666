//! CPU-side checks of the CUDA backend that run on any machine: no panic without a
//! driver, the host reference of the test plan, and the plan's rank programs.
#![cfg(feature = "cuda")]
#[path = "cuda_common.rs"]
mod common;

use tessera_runtime::cuda::probe::unavailable_reason;
use tessera_runtime::cuda::{CommSpec, CudaExecutor};

#[test]
fn opening_without_a_driver_is_an_error_not_a_panic() {
    let reason = unavailable_reason();
    let opened = CudaExecutor::new(0, 1, CommSpec::Single { device: 0 });
    match (&reason, &opened) {
        (Some(why), Err(e)) => {
            println!("no CUDA here: {why}");
            let msg = e.to_string();
            assert!(
                msg.contains("CUDA") || msg.contains("lib"),
                "unclear error: {msg}"
            );
        }
        (None, Ok(_)) => println!("CUDA present: executor opened"),
        (Some(why), Ok(_)) => panic!("probe says unavailable ({why}) but the executor opened"),
        (None, Err(e)) => panic!("probe says available but the executor failed: {e}"),
    }
}

#[test]
fn bad_rank_setups_are_refused_before_touching_cuda() {
    let e = CudaExecutor::new(2, 2, CommSpec::Single { device: 0 })
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("rank 2 is not below world size 2"), "{e}");
    let e = CudaExecutor::new(0, 2, CommSpec::Single { device: 0 })
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("needs NCCL"), "{e}");
    let e = CudaExecutor::new(
        0,
        2,
        CommSpec::Nccl {
            device: 0,
            id: vec![0; 5],
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("5 bytes"), "{e}");
}

#[test]
fn test_plan_splits_weights_evenly() {
    let (plan, weights, _, want) = common::mlp_plan(4);
    assert_eq!(plan.ranks.len(), 4);
    assert_eq!(want.len(), 32);
    assert!(
        want.iter().any(|v| v.abs() > 1e-3),
        "reference output is all zeros"
    );
    let w1 = &weights["w1"];
    let mut covered = 0;
    for p in &plan.ranks {
        for s in &p.steps {
            if let tessera_ir::plan::StepKind::LoadWeight {
                tensor,
                slice: Some(sl),
            } = &s.kind
            {
                if plan.graph.weights[tensor].name == "w1" {
                    covered += sl.end - sl.start;
                }
            }
        }
    }
    assert_eq!(covered, w1.shape[1]);
    let collectives = plan.ranks[0]
        .steps
        .iter()
        .filter(|s| matches!(s.kind, tessera_ir::plan::StepKind::Collective { .. }))
        .count();
    assert_eq!(collectives, 1);
}
