//! A plan that needs more memory than the cap is refused before it runs, naming where it
//! peaks (issue 13: a cap on total planned memory).
mod exec_support;

use exec_support::*;
use tessera_runtime::exec::memory::{check_planned_memory, rank_peak, ENV_CAP};
use tessera_runtime::exec::{run_plan, RunOptions};
use tessera_runtime::weights::WeightStore;

/// The 2-rank MLP of exec_support, per rank: x [2,4,8] 256 B, w1 and w2 shards 384 B each
/// (resident), h and gelu(h) [2,4,12] 384 B each, the partial and the reduced y 256 B each.
/// Live bytes by step: 256, 640, 1024 (x freed after fc1: 768), 1152 (h freed: 768),
/// 1152, 1408 at fc2 (g freed: 1024), 1280 at the all-reduce. Peak: 1408 at step 5.
#[test]
fn the_planned_peak_is_counted_and_capped() {
    let (plan, inputs) = mlp_plan(2);
    let peak = rank_peak(&plan, 0);
    assert_eq!((peak.bytes, peak.step), (1408, 5));
    assert_eq!(rank_peak(&plan, 1).bytes, 1408);
    assert!(check_planned_memory(&plan, Some(2816)).is_ok());
    assert!(check_planned_memory(&plan, None).is_ok());
    let msg = check_planned_memory(&plan, Some(2815))
        .expect_err("one byte short")
        .to_string();
    assert_mentions(
        &msg,
        &[
            "needs 2816 bytes",
            "rank 0 peaks at 1408 bytes at step 5",
            "cap of 2815",
        ],
    );

    // The CPU run checks it before anything runs (the only test of this binary that sets
    // the variable).
    std::env::set_var(ENV_CAP, "2815");
    let store = WeightStore::with_dir(".");
    let err = run_plan(&plan, &store, &inputs, &RunOptions::default())
        .expect_err("over the cap")
        .to_string();
    assert_mentions(&err, &["needs 2816 bytes", "TESSERA_MAX_PLANNED_BYTES"]);
    std::env::set_var(ENV_CAP, "2816");
    assert!(run_plan(&plan, &store, &inputs, &RunOptions::default()).is_ok());
    std::env::set_var(ENV_CAP, "lots");
    let err = run_plan(&plan, &store, &inputs, &RunOptions::default())
        .expect_err("not a number")
        .to_string();
    assert_mentions(&err, &["TESSERA_MAX_PLANNED_BYTES=lots"]);
    std::env::remove_var(ENV_CAP);
}
