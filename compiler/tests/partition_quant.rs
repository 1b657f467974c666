//! Quantised weights in the partitioner: a split is offered only along whole scale blocks,
//! and parameter bytes are the stored bytes (int8 plus scale), figures computed from shapes.
mod partition_common;
use partition_common::*;
use tessera_ir::{DType, Quant, TensorId, Weight, WeightData};

const H: usize = 64;
const F: usize = 128;
/// Rows per scale block of the quantised weight.
const BLOCK: usize = 16;

/// `x[8, H] · w0[H, H] · w1[H, F]`, w0 f32, w1 int8 with an f32 scale per block of 16 rows
/// and column (`[H / 16, F]`) when `quantised`, else f32.
fn two_matmuls(quantised: bool) -> (tessera_ir::Graph, TensorId) {
    two_matmuls_with(quantised, H / BLOCK)
}

/// [`two_matmuls`] with `scale_rows` rows of w1's scale (1: one scale per column).
fn two_matmuls_with(quantised: bool, scale_rows: usize) -> (tessera_ir::Graph, TensorId) {
    let mut b = B::new();
    let x = b.input("x", DType::F32, &[8, H]);
    let w0 = b.weight("w0", &[H, H]);
    let a = b.matmul(x, w0);
    let w1 = if quantised {
        let file = |name: &str, dtype: DType, shape: Vec<usize>, offset| Weight {
            perm: None,
            packed_bits: None,
            name: name.into(),
            dtype,
            data: WeightData::File {
                path: "q.bin".into(),
                offset,
                length: (shape.iter().product::<usize>() * dtype.size_bytes()) as u64,
            },
            shape,
            quant: None,
        };
        let mut w = file("w1", DType::I8, vec![H, F], 0);
        w.quant = Some(Quant {
            dtype: DType::F32,
            scale: Box::new(file(
                "w1.scale",
                DType::F32,
                vec![scale_rows, F],
                (H * F) as u64,
            )),
            zero_point: None,
        });
        b.g.add_weight(w)
    } else {
        b.weight("w1", &[H, F])
    };
    let y = b.matmul(a, w1);
    b.output(y);
    (b.g, w1)
}

/// The split axis of weight `t` in the plan, if split.
fn shard_axis(plan: &tessera_ir::plan::Plan, t: TensorId) -> Option<usize> {
    plan.weight_shards
        .iter()
        .find(|s| s.tensor == t)
        .map(|s| s.axis)
}

#[test]
fn quantised_weight_splits_only_along_whole_blocks() {
    let (g, w1) = two_matmuls(true);
    assert_eq!(
        g.tensor(w1).dtype,
        DType::F32,
        "the graph tensor is the logical float"
    );
    let stored = H * F + (H / BLOCK) * F * 4;
    assert_eq!(g.weights[&w1].size_bytes(), stored);
    // 4 devices: Megatron, w1 by rows: 16 rows each = one whole block of the scale.
    let p4 = run(&g, 4).plan;
    assert_eq!(shard_axis(&p4, w1), Some(0));
    let want4 = H * H * 4 / 4 + (H / 4) * F + F * 4;
    assert_eq!(p4.estimates[0].param_bytes, want4 as u64);
    // 8 devices: 8 rows each would cut the 16-row blocks, so w1 is split by columns.
    let p8 = run(&g, 8).plan;
    assert_eq!(shard_axis(&p8, w1), Some(1));
    let want8 = H * H * 4 / 8 + H * (F / 8) + (H / BLOCK) * (F / 8) * 4;
    assert_eq!(p8.estimates[0].param_bytes, want8 as u64);
    // The same graph in f32 splits w1 by rows on 8 devices: the block rule made the change.
    let (f, fw1) = two_matmuls(false);
    assert_eq!(shard_axis(&run(&f, 8).plan, fw1), Some(0));
}

/// The default budget allows a quantised weight its larger share: split by rows, each rank
/// holds the whole per-column scale (split by columns, a 1/N part), and a plan may need the
/// row split (Megatron's second projection), so the budget counts that one.
#[test]
fn the_budget_counts_a_row_split_quantised_weights_whole_scale() {
    use tessera_compiler::partition::{budget::Budgets, PartitionOptions};
    let (g, _) = two_matmuls_with(true, 1);
    for n in [2usize, 4] {
        let opts = PartitionOptions::new(n);
        let total = Budgets::new(&g, n, &opts)
            .total
            .expect("time objective has a budget");
        let w0 = H * H * 4 / n;
        let by_rows = (H / n) * F + F * 4;
        let by_cols = H * (F / n) + (F / n) * 4;
        assert!(by_rows > by_cols);
        assert_eq!(total, (w0 + by_rows) as f64, "N={n}");
    }
}
