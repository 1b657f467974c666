//! GPU tests of virtual-rank collectives at 3, 4 and 8 ranks: results handed to every
//! rank must stay valid while each rank's stream keeps reading them after the others
//! dropped theirs. Each skips (printing why) where no CUDA driver, device, NVRTC or cuBLAS
//! is present; unverified on a GPU until run on one. A premature free shows as wrong
//! values here (the freed memory is reallocated and overwritten by the churn below) and as
//! an error under `compute-sanitizer --tool memcheck` (scripts/gpu_check.sh runs it so
//! where the tool is installed).
#![cfg(feature = "cuda")]

use std::sync::Arc;
use tessera_ir::op::{BinaryAttrs, BinaryOp};
use tessera_ir::plan::CollectiveKind;
use tessera_ir::{DType, Op, Tensor};
use tessera_runtime::collectives::CollectiveSpec;
use tessera_runtime::cuda::buffer::DeviceTensor;
use tessera_runtime::cuda::context::{Gpu, Lane};
use tessera_runtime::cuda::ops::run_op;
use tessera_runtime::cuda::virtual_ranks::lane_collective;
use tessera_runtime::cuda::LaneExchange;
use tessera_runtime::device::OutSpec;

/// Elements per rank: large enough that the adds below take a while on the GPU.
const N: usize = 1 << 18;
/// Rounds per collective (`TESSERA_RANKS_ROUNDS` lowers it for a run under
/// compute-sanitizer, which is much slower).
fn rounds() -> usize {
    std::env::var("TESSERA_RANKS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12)
}

fn skip_reason() -> Option<String> {
    let r = tessera_runtime::cuda::probe::unavailable_reason();
    if let Some(why) = &r {
        println!("skipping: {why}");
    }
    r
}

fn add(lane: &Lane, a: &DeviceTensor, b: &DeviceTensor) -> DeviceTensor {
    let op = Op::Binary(BinaryAttrs {
        kind: BinaryOp::Add,
    });
    let out = OutSpec {
        dtype: DType::F32,
        shape: &a.shape,
    };
    run_op(lane, &op, &[a, b], &[out]).expect("add").remove(0)
}

/// What rank `r` of `world` must receive in `round` for `kind` (inputs are filled with
/// `(r + 1)·(round + 1)`), element `i` of the result.
fn expected(kind: CollectiveKind, world: usize, round: usize, i: usize) -> f32 {
    let base = (round + 1) as f32;
    match kind {
        CollectiveKind::AllReduce => base * (world * (world + 1) / 2) as f32,
        CollectiveKind::Broadcast => base,
        // Concatenation along axis 0: element i comes from rank i / N.
        _ => base * (i / N + 1) as f32,
    }
}

/// One rank thread: every round, each collective; then reads of the shared-looking result
/// queued on this rank's stream (more reads on higher ranks, so the lanes drift apart),
/// the handle dropped before the reads complete, allocations churned, and the values
/// checked.
fn rank_thread(ex: Arc<LaneExchange>, lane: Lane, rank: usize, world: usize) {
    let group: Vec<usize> = (0..world).collect();
    let reads = (rank + 1) * 3;
    for round in 0..rounds() {
        for kind in [
            CollectiveKind::AllReduce,
            CollectiveKind::Broadcast,
            CollectiveKind::AllGather,
        ] {
            let fill = ((rank + 1) * (round + 1)) as f32;
            let x =
                DeviceTensor::upload(&lane, &Tensor::f32(vec![N], vec![fill; N])).expect("upload");
            let spec = CollectiveSpec {
                kind,
                axis: (kind == CollectiveKind::AllGather).then_some(0),
                to_axis: None,
                counts: vec![],
            };
            let y = lane_collective(&ex, rank, &lane, &group, &spec, &x)
                .unwrap_or_else(|e| panic!("rank {rank}, {}: {e}", kind.as_str()));
            drop(x);
            let mut acc = y.clone();
            for _ in 0..reads {
                acc = add(&lane, &acc, &y);
            }
            drop(y); // reads of it are still queued on this lane
            for _ in 0..4 {
                let junk = DeviceTensor::upload(
                    &lane,
                    &Tensor::f32(vec![N * world], vec![-1.0; N * world]),
                )
                .expect("churn");
                drop(junk);
            }
            let got = acc.download(&lane).expect("download").to_f64_vec();
            for (i, g) in got.iter().enumerate().step_by(997) {
                let want = expected(kind, world, round, i) * (reads + 1) as f32;
                assert_eq!(
                    *g as f32,
                    want,
                    "world {world}, rank {rank}, round {round}, {} element {i}",
                    kind.as_str()
                );
            }
        }
    }
}

fn run_world(world: usize) {
    let gpu = Gpu::open(0).expect("open GPU 0");
    let ex = Arc::new(LaneExchange::new(world));
    let lanes: Vec<Lane> = (0..world).map(|_| gpu.lane().expect("lane")).collect();
    let threads: Vec<_> = lanes
        .into_iter()
        .enumerate()
        .map(|(rank, lane)| {
            let ex = ex.clone();
            std::thread::spawn(move || {
                let run =
                    std::panic::AssertUnwindSafe(|| rank_thread(ex.clone(), lane, rank, world));
                let r = std::panic::catch_unwind(run);
                if r.is_err() {
                    ex.abort(); // wake the ranks waiting for this one
                }
                r
            })
        })
        .collect();
    let failed: Vec<usize> = threads
        .into_iter()
        .enumerate()
        .filter_map(|(rank, t)| (!matches!(t.join(), Ok(Ok(())))).then_some(rank))
        .collect();
    assert!(failed.is_empty(), "world {world}: ranks {failed:?} failed");
    drop(ex);
}

#[test]
fn shared_results_outlive_every_reader_at_3_ranks() {
    if skip_reason().is_none() {
        run_world(3);
    }
}

#[test]
fn shared_results_outlive_every_reader_at_4_ranks() {
    if skip_reason().is_none() {
        run_world(4);
    }
}

#[test]
fn shared_results_outlive_every_reader_at_8_ranks() {
    if skip_reason().is_none() {
        run_world(8);
    }
}
