//! Calibrated cost profiles: the numbers of a profile change which plan the search picks, and
//! the plan records the modelled time under its own profile.
mod partition_common;
use partition_common::*;
use tessera_compiler::cost::parse_cost_model_toml;
use tessera_compiler::partition::{partition, PartitionOptions};
use tessera_ir::plan::ObjectiveKind;

/// A profile whose collectives cost `alpha` seconds of latency (the all-reduce through its
/// own measured entry, the others through the base numbers), GEMMs `gemm_rate` FLOP/s.
fn profile(all_reduce_alpha: f64, gemm_rate: f64) -> String {
    format!(
        "name = \"synthetic\"\nalpha_s = {all_reduce_alpha:e}\nbeta_bytes_per_s = 1e10\nflops_per_s = {gemm_rate:e}\n\
         mem_bytes_per_s = 1e10\nop_overhead_s = 1e-6\n\
         [gemm_flops_per_s]\nmedium = {gemm_rate:e}\nlarge = {gemm_rate:e}\nsmall = {gemm_rate:e}\n\
         [collectives.all_reduce]\nalpha_s = {all_reduce_alpha:e}\nbeta_bytes_per_s = 1e10\n"
    )
}

#[test]
fn profiles_change_the_plan() {
    let g = mlp(2, 64, 128, false);
    let plan_under = |text: &str| {
        let mut opts = PartitionOptions::new(2);
        opts.objective = ObjectiveKind::Latency;
        opts.cost_model = parse_cost_model_toml(text, "synthetic.toml").unwrap();
        partition(&g, &opts).unwrap().plan
    };
    // Slow GEMMs, cheap collectives: split the MLP (one collective, half the FLOPs per rank).
    let split = plan_under(&profile(1e-6, 1e8));
    assert_eq!(split.collectives.len(), 1, "{:?}", split.summary);
    // Fast GEMMs, collectives dearer than the whole MLP: replicate, no collective.
    let repl = plan_under(&profile(1.0, 1e13));
    assert!(repl.collectives.is_empty(), "{:?}", repl.summary);
    assert!(repl.estimates[0].flops > split.estimates[0].flops);
    // The recorded modelled time: at 1e8 FLOP/s the split plan's GEMMs alone take
    // FLOPs / 1e8 seconds; the replicated plan at 1e13 FLOP/s is far below a second.
    let gemm_s = split.estimates[0].flops as f64 / 1e8;
    assert!(
        split.estimates[0].model_s > 0.9 * gemm_s,
        "{:?}",
        split.estimates[0]
    );
    assert!(repl.estimates[0].model_s < 1e-2, "{:?}", repl.estimates[0]);
}

#[test]
fn default_objective_is_modelled_time() {
    assert_eq!(PartitionOptions::new(2).objective, ObjectiveKind::Time);
}
