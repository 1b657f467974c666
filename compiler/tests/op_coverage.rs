//! Walks every `Op` variant (through `OpKind::ALL` and each kind's sample) and checks that
//! the op is covered everywhere: shape inference, a cost (FLOPs and bytes), a CPU kernel whose
//! outputs match inference, and a partitioning that names rows of the rule table (or says
//! replicated only). A new `Op` variant does not compile until it has a kind and a sample
//! (`ir/src/spec/kind.rs`), and then fails here until its spec is complete.
use std::collections::BTreeSet;
use tessera_compiler::cost::{op_bytes, op_flops};
use tessera_compiler::partition::rules::rule_names;
use tessera_ir::infer::infer;
use tessera_ir::spec::{OpKind, Partitioning};
use tessera_ir::{numel, DType, Tensor, TensorData};

/// Ops that only move or select data: zero FLOPs. Every other op must cost some.
const NO_ARITHMETIC: &[OpKind] = &[
    OpKind::Reshape,
    OpKind::Transpose,
    OpKind::Concat,
    OpKind::Split,
    OpKind::Slice,
    OpKind::Gather,
    OpKind::GatherNd,
    OpKind::GatherElements,
    OpKind::Expand,
    OpKind::Cast,
    OpKind::Trilu,
    OpKind::Pad,
];

/// A deterministic pseudo-random tensor: floats in [-1, 1), integers in 0..2 (valid indices
/// for the samples, whose axes all have extent ≥ 2), random booleans.
fn random_tensor(dtype: DType, shape: &[usize], seed: &mut u64) -> Tensor {
    let mut next = || {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *seed >> 33
    };
    let n = numel(shape);
    let data = if dtype.is_float() {
        TensorData::F32(
            (0..n)
                .map(|_| next() as f32 / 2f32.powi(30) - 1.0)
                .collect(),
        )
    } else if dtype == DType::Bool {
        TensorData::Bool((0..n).map(|_| next() % 2 == 1).collect())
    } else {
        TensorData::I64((0..n).map(|_| (next() % 2) as i64).collect())
    };
    Tensor::new(dtype, shape.to_vec(), data).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_op_has_inference_cost_kernel_and_partitioning() {
    let rule_names: BTreeSet<&str> = rule_names().into_iter().collect();
    let mut named: BTreeSet<&str> = BTreeSet::new();
    let mut seed = 42;
    for &kind in OpKind::ALL {
        let sample = kind.sample();
        let op = &sample.op;
        let ins: Vec<(DType, &[usize])> = sample
            .inputs
            .iter()
            .map(|(d, s)| (*d, s.as_slice()))
            .collect();

        // Inference.
        let outs = infer("sample", op, &ins).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert!(!outs.is_empty(), "{kind:?}: no outputs");

        // Cost.
        let in_shapes: Vec<&[usize]> = ins.iter().map(|(_, s)| *s).collect();
        let out_shapes: Vec<&[usize]> = outs.iter().map(|(_, s)| s.as_slice()).collect();
        let flops = op_flops(op, &in_shapes, &out_shapes);
        if NO_ARITHMETIC.contains(&kind) {
            assert_eq!(flops, 0, "{kind:?} moves data only");
        } else {
            assert!(flops > 0, "{kind:?}: no FLOPs");
        }
        let typed_outs: Vec<(DType, &[usize])> =
            outs.iter().map(|(d, s)| (*d, s.as_slice())).collect();
        assert!(op_bytes(op, &ins, &typed_outs) > 0, "{kind:?}: no bytes");

        // CPU kernel: the outputs inference announces, with its dtypes and shapes.
        let tensors: Vec<Tensor> = ins
            .iter()
            .map(|(d, s)| random_tensor(*d, s, &mut seed))
            .collect();
        let refs: Vec<&Tensor> = tensors.iter().collect();
        let got = tessera_kernels::eval(op, &refs).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        let got: Vec<(DType, Vec<usize>)> =
            got.iter().map(|t| (t.dtype, t.shape.clone())).collect();
        assert_eq!(got, outs, "{kind:?}: kernel outputs vs inference");

        // Partitioning: rule-table rows by name, or replicated only.
        match op.spec().partitioning() {
            Partitioning::Rules(rules) => {
                assert!(!rules.is_empty(), "{kind:?}: empty rule list");
                for r in rules {
                    assert!(rule_names.contains(r), "{kind:?} names unknown rule '{r}'");
                    assert_ne!(*r, "replicated", "{kind:?}: the fallback is implicit");
                    named.insert(r);
                }
            }
            Partitioning::ReplicatedOnly => {}
        }
    }
    // Every row of the rule table is claimed by some op (the fallback by all; `kv-block`
    // re-instantiates the other rules, so each op's own rows answer for it).
    let unclaimed: Vec<&&str> = rule_names
        .iter()
        .filter(|r| **r != "replicated" && **r != "kv-block" && !named.contains(**r))
        .collect();
    assert!(
        unclaimed.is_empty(),
        "rules no op spec names: {unclaimed:?}"
    );
}

/// Concrete FLOP counts of the samples with a closed form.
#[test]
fn flops_of_products_norms_and_attention() {
    let flops = |kind: OpKind| {
        let s = kind.sample();
        let ins: Vec<(DType, &[usize])> =
            s.inputs.iter().map(|(d, x)| (*d, x.as_slice())).collect();
        let outs = infer("sample", &s.op, &ins).unwrap_or_else(|e| panic!("{e}"));
        let in_shapes: Vec<&[usize]> = ins.iter().map(|(_, x)| *x).collect();
        let out_shapes: Vec<&[usize]> = outs.iter().map(|(_, x)| x.as_slice()).collect();
        op_flops(&s.op, &in_shapes, &out_shapes)
    };
    // [2, 3, 4] · [4, 5]: 2·M·N·K over the batch = 2·(2·3·5)·4.
    assert_eq!(flops(OpKind::MatMul), 240);
    // [3, 4] · [5, 4]ᵀ: 2·3·5·4.
    assert_eq!(flops(OpKind::Gemm), 120);
    // LayerNorm of [2, 8]: 8 per element.
    assert_eq!(flops(OpKind::LayerNorm), 128);
    // Q [2, 4, 3, 8], K/V [2, 2, 5, 8], past [2, 2, 2, 8]: T = 7,
    // 4·B·H·Sq·T·D + 5·B·H·Sq·T = 4·2·4·3·7·8 + 5·2·4·3·7.
    assert_eq!(flops(OpKind::Attention), 5376 + 840);
}
