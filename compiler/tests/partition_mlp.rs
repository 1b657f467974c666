//! MLP: exactly one all-reduce of B·S·H values.
mod partition_common;
use partition_common::*;
use tessera_ir::plan::CollectiveKind;

#[test]
fn mlp_one_all_reduce() {
    for erf in [false, true] {
        for n in [2, 4, 8] {
            let (bsz, s, h) = (2, 16, 64);
            let g = mlp(bsz, s, h, erf);
            let p = run(&g, n).plan;
            assert_eq!(p.collectives.len(), 1, "n={n} erf={erf}: {:?}", p.summary);
            assert_eq!(count(&p, CollectiveKind::AllReduce), 1);
            assert_eq!(p.collectives[0].bytes, (bsz * s * h * 4) as u64);
            assert_eq!(p.summary.matmul_choices.get("column"), Some(&1));
            assert_eq!(p.summary.matmul_choices.get("row"), Some(&1));
            // fc1 [H,4H] split by columns, fc2 [4H,H] by rows; biases: fc1's split, fc2's replicated.
            let big = (2 * h * 4 * h * 4) as u64;
            assert!(
                p.estimates[0].param_bytes <= big / n as u64 + ((4 * h + h) * 4) as u64,
                "{:?}",
                p.estimates
            );
            assert_eq!(p.ranks.len(), n);
            assert_eq!(p.search.gap, 0.0);
        }
    }
}
