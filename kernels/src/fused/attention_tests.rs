//! Tests of the fused attention kernel against the unfused op chains.
use super::super::testing::*;
use super::super::{eval_fused, FusedOp};
use super::*;
use tessera_ir::op::*;
use tessera_ir::Op;
use tessera_ir::{DType, TensorData};

/// The unfused attention chain, as exported from PyTorch (BERT-style); `mask` maps the
/// scaled scores to the masked ones.
fn attention_chain(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    c: &Tensor,
    mask: impl Fn(&Tensor) -> Tensor,
    h: usize,
) -> (Tensor, Tensor) {
    let (b, s, hd) = (q.shape[0], q.shape[1], q.shape[2]);
    let heads = |t: &Tensor, perm: Vec<usize>| {
        let r = run(
            Op::Reshape(ReshapeAttrs {
                shape: vec![b, s, h, hd / h],
            }),
            &[t],
        );
        run(Op::Transpose(TransposeAttrs { perm }), &[&r])
    };
    let q4 = heads(q, vec![0, 2, 1, 3]);
    let kt = heads(k, vec![0, 2, 3, 1]);
    let v4 = heads(v, vec![0, 2, 1, 3]);
    let sc = run(Op::MatMul(MatMulAttrs {}), &[&q4, &kt]);
    let z = mask(&bin(BinaryOp::Div, &sc, c));
    let p = run(
        Op::Softmax(SoftmaxAttrs {
            axis: 3,
            log: false,
        }),
        &[&z],
    );
    let o = run(Op::MatMul(MatMulAttrs {}), &[&p, &v4]);
    let o2 = run(
        Op::Transpose(TransposeAttrs {
            perm: vec![0, 2, 1, 3],
        }),
        &[&o],
    );
    let merged = run(
        Op::Reshape(ReshapeAttrs {
            shape: vec![b, s, hd],
        }),
        &[&o2],
    );
    (o, merged)
}

/// Random q, k, v of shape `[b, s, h·d]` (seeds `seed`, `seed + 1`, `seed + 2`) and the
/// scale divisor 2 for `[b, s, h, d]`.
fn qkv_and_scale([b, s, h, d]: [usize; 4], seed: u64) -> [Tensor; 4] {
    [
        rand(vec![b, s, h * d], seed),
        rand(vec![b, s, h * d], seed + 1),
        rand(vec![b, s, h * d], seed + 2),
        Tensor::f32(vec![], vec![2.0]),
    ]
}

/// Self-attention over `[b, s, h, d]` that divides the scores by the scale.
fn attention_op([b, s, h, d]: [usize; 4], mask: AttentionMask, out_shape: Vec<usize>) -> FusedOp {
    FusedOp::Attention(AttentionShape {
        batch: b,
        q_len: s,
        kv_len: s,
        heads: h,
        kv_heads: h,
        layouts: [HeadLayout::TokenMajor; 3],
        head_dim: d,
        scale: AttentionScale::Div,
        mask,
        terms: vec![],
        rows: SoftmaxRows::Plain,
        causal: false,
        merged: out_shape.len() == 3,
        out_shape,
    })
}

#[test]
fn attention_equals_the_unfused_chain() {
    let (b, s, h, d) = (2, 7, 3, 4);
    let [q, k, v, c] = qkv_and_scale([b, s, h, d], 11);
    // A padding mask [B, 1, 1, S]: large negative on the masked keys.
    let mut mv = vec![0f32; b * s];
    mv[s - 1] = -10000.0;
    mv[s + 2] = -10000.0;
    let m = Tensor::f32(vec![b, 1, 1, s], mv);
    let add_mask = |z: &Tensor| bin(BinaryOp::Add, z, &m);
    let (want_heads, want_merged) = attention_chain(&q, &k, &v, &c, add_mask, h);
    let attention = |out_shape| attention_op([b, s, h, d], AttentionMask::Add, out_shape);
    for (shape, want) in [
        (vec![b, h, s, d], &want_heads),
        (vec![b, s, h * d], &want_merged),
    ] {
        let op = attention(shape.clone());
        let got = eval_fused(&op, &[&q, &k, &v, &c, &m]).unwrap();
        assert_eq!(got.shape, shape);
        let worst = max_abs_diff(&got, want);
        // Same arithmetic; only the GEMM's operand strides differ.
        assert!(worst < 1e-6, "max abs difference {worst}");
        // Inside a device's pool the heads run in parallel: the same bits.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let par = pool.install(|| eval_fused(&op, &[&q, &k, &v, &c, &m]).unwrap());
        assert_eq!(par, got);
    }
    // A mask that does not broadcast to the scores is an error naming the mask.
    let op = attention(vec![b, h, s, d]);
    let bad = rand(vec![b, 1, 1, s + 1], 14);
    let err = eval_fused(&op, &[&q, &k, &v, &c, &bad]).unwrap_err();
    assert!(err.to_string().contains("mask"), "{err}");
}

/// Heads on both product paths: on the tiles (`attention_products.rs`) and, above their
/// limit, through the `gemm` crate; each equals the unfused chain.
#[test]
fn large_and_small_heads_equal_the_unfused_chain() {
    // 520 queries × 520 keys × 128 is above the tiles' limit; 33 × 33 × 8 is below it.
    for [b, s, h, d] in [[1, 520, 1, 128], [2, 33, 2, 8]] {
        let [q, k, v, c] = qkv_and_scale([b, s, h, d], 21);
        let (_, want) = attention_chain(&q, &k, &v, &c, |z| z.clone(), h);
        let op = attention_op([b, s, h, d], AttentionMask::None, vec![b, s, h * d]);
        let got = eval_fused(&op, &[&q, &k, &v, &c]).unwrap();
        let worst = max_abs_diff(&got, &want);
        assert!(
            worst < 1e-5,
            "[{b}, {s}, {h}, {d}]: max abs difference {worst}"
        );
    }
}

/// Sq = 0 gives an empty output and Sk = 0 zeros, as the unfused chain (Softmax over
/// an empty axis, then a MatMul with an empty inner dimension); neither panics.
#[test]
fn empty_sequences_give_empty_or_zero_outputs() {
    let (b, h, d) = (2, 3, 4);
    let c = Tensor::f32(vec![], vec![2.0]);
    for (sq, sk) in [(0, 5), (5, 0), (0, 0)] {
        let op = |out_shape: Vec<usize>| {
            FusedOp::Attention(AttentionShape {
                batch: b,
                q_len: sq,
                kv_len: sk,
                heads: h,
                kv_heads: h,
                layouts: [HeadLayout::TokenMajor; 3],
                head_dim: d,
                scale: AttentionScale::Div,
                mask: AttentionMask::None,
                terms: vec![],
                rows: SoftmaxRows::Plain,
                causal: false,
                merged: out_shape.len() == 3,
                out_shape,
            })
        };
        let (q, kv) = (rand(vec![b, sq, h * d], 41), rand(vec![b, sk, h * d], 42));
        // The unfused tail: softmax over the (possibly empty) key axis, then · V.
        let p = run(
            Op::Softmax(SoftmaxAttrs {
                axis: 3,
                log: false,
            }),
            &[&Tensor::f32(vec![b, h, sq, sk], vec![0.5; b * h * sq * sk])],
        );
        let v4 = Tensor::f32(vec![b, h, sk, d], vec![1.0; b * h * sk * d]);
        let want = run(Op::MatMul(MatMulAttrs {}), &[&p, &v4]);
        assert_eq!(want.as_f32().unwrap(), vec![0.0; b * h * sq * d]);
        for shape in [vec![b, h, sq, d], vec![b, sq, h * d]] {
            let got = eval_fused(&op(shape.clone()), &[&q, &kv, &kv, &c]).unwrap();
            assert_eq!(got.shape, shape);
            assert_eq!(
                got.as_f32().unwrap(),
                want.as_f32().unwrap(),
                "Sq={sq} Sk={sk}"
            );
        }
    }
}

#[test]
fn causal_where_mask_attention_equals_the_unfused_chain() {
    let (b, s, h, d) = (1, 6, 2, 4);
    let [q, k, v, c] = qkv_and_scale([b, s, h, d], 21);
    // GPT-2: Where(tril [1, 1, S, S], scores, f32::MIN).
    let tril: Vec<bool> = (0..s * s).map(|e| e % s <= e / s).collect();
    let cond = Tensor::new(DType::Bool, vec![1, 1, s, s], TensorData::Bool(tril)).unwrap();
    let fill = Tensor::f32(vec![], vec![f32::MIN]);
    let select = |z: &Tensor| run(Op::Where, &[&cond, z, &fill]);
    let (want, _) = attention_chain(&q, &k, &v, &c, select, h);
    let op = attention_op([b, s, h, d], AttentionMask::Select, vec![b, h, s, d]);
    let got = eval_fused(&op, &[&q, &k, &v, &c, &cond, &fill]).unwrap();
    let worst = max_abs_diff(&got, &want);
    assert!(worst < 1e-6, "max abs difference {worst}");
    // The first query sees only the first key: its output row is v's first row.
    assert_eq!(&got.as_f32().unwrap()[..d], &v.as_f32().unwrap()[..d]);
    // A non-bool condition is refused by name.
    let err = eval_fused(&op, &[&q, &k, &v, &c, &fill, &fill]).unwrap_err();
    assert!(err.to_string().contains("condition"), "{err}");
}

/// Llama-style: q `[B, H, S, D]` and k, v `[B, Hk, S, D]` already split into heads (after
/// the rotary embedding), the kv heads repeated by Reshape + Expand + Reshape (GQA), the
/// scores multiplied by the scale and a causal additive mask.
#[test]
fn head_major_grouped_query_attention_equals_the_unfused_chain() {
    let (b, s, h, hk, d) = (2, 6, 4, 2, 3);
    let q = rand(vec![b, h, s, d], 31);
    let k = rand(vec![b, hk, s, d], 32);
    let v = rand(vec![b, hk, s, d], 33);
    let c = Tensor::f32(vec![], vec![0.5]);
    let causal: Vec<f32> = (0..s * s)
        .map(|e| if e % s > e / s { f32::MIN } else { 0.0 })
        .collect();
    let m = Tensor::f32(vec![1, 1, s, s], causal);
    let repeat = |t: &Tensor| {
        let r = |t: &Tensor, shape: Vec<usize>| run(Op::Reshape(ReshapeAttrs { shape }), &[t]);
        let e = run(
            Op::Expand(ExpandAttrs {
                shape: vec![b, hk, h / hk, s, d],
            }),
            &[&r(t, vec![b, hk, 1, s, d])],
        );
        r(&e, vec![b, h, s, d])
    };
    let kt = run(
        Op::Transpose(TransposeAttrs {
            perm: vec![0, 1, 3, 2],
        }),
        &[&repeat(&k)],
    );
    let sc = run(Op::MatMul(MatMulAttrs {}), &[&q, &kt]);
    let z = bin(BinaryOp::Add, &bin(BinaryOp::Mul, &sc, &c), &m);
    let p = run(
        Op::Softmax(SoftmaxAttrs {
            axis: 3,
            log: false,
        }),
        &[&z],
    );
    let want = run(Op::MatMul(MatMulAttrs {}), &[&p, &repeat(&v)]);
    let merged = run(
        Op::Reshape(ReshapeAttrs {
            shape: vec![b, s, h * d],
        }),
        &[&run(
            Op::Transpose(TransposeAttrs {
                perm: vec![0, 2, 1, 3],
            }),
            &[&want],
        )],
    );
    for (out_shape, want) in [(vec![b, h, s, d], &want), (vec![b, s, h * d], &merged)] {
        let op = FusedOp::Attention(AttentionShape {
            batch: b,
            q_len: s,
            kv_len: s,
            heads: h,
            kv_heads: hk,
            layouts: [HeadLayout::HeadMajor; 3],
            head_dim: d,
            scale: AttentionScale::Mul,
            mask: AttentionMask::Add,
            terms: vec![],
            rows: SoftmaxRows::Plain,
            causal: false,
            merged: out_shape.len() == 3,
            out_shape: out_shape.clone(),
        });
        let got = eval_fused(&op, &[&q, &k, &v, &c, &m]).unwrap();
        assert_eq!(got.shape, out_shape);
        let worst = max_abs_diff(&got, want);
        assert!(worst < 1e-6, "max abs difference {worst}");
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let par = pool.install(|| eval_fused(&op, &[&q, &k, &v, &c, &m]).unwrap());
        assert_eq!(par, got);
    }
    // kv heads that do not divide the query heads are refused by name.
    let op = FusedOp::Attention(AttentionShape {
        batch: b,
        q_len: s,
        kv_len: s,
        heads: h,
        kv_heads: 3,
        layouts: [HeadLayout::HeadMajor; 3],
        head_dim: d,
        scale: AttentionScale::Mul,
        mask: AttentionMask::None,
        terms: vec![],
        rows: SoftmaxRows::Plain,
        causal: false,
        merged: false,
        out_shape: vec![b, h, s, d],
    });
    let err = eval_fused(&op, &[&q, &k, &v, &c]).unwrap_err();
    assert!(err.to_string().contains("kv heads"), "{err}");
}

/// `Reshape [B, Hk, 1, S, D]` + `Expand [B, Hk, G, S, D]` + `Reshape [B, H, S, D]` of `t`.
fn repeat_kv(t: &Tensor, h: usize) -> Tensor {
    let [b, hk, s, d] = t.shape[..] else {
        panic!("not 4-D: {:?}", t.shape)
    };
    let r = |t: &Tensor, shape: Vec<usize>| run(Op::Reshape(ReshapeAttrs { shape }), &[t]);
    let e = run(
        Op::Expand(ExpandAttrs {
            shape: vec![b, hk, h / hk, s, d],
        }),
        &[&r(t, vec![b, hk, 1, s, d])],
    );
    r(&e, vec![b, h, s, d])
}

/// Elements equal, NaN equal to NaN.
fn same_or_both_nan(got: &[f32], want: &[f32], tol: f32) -> bool {
    got.len() == want.len()
        && got
            .iter()
            .zip(want)
            .all(|(g, w)| (g.is_nan() && w.is_nan()) || (g - w).abs() <= tol)
}

/// torch's SDPA decomposition (real dynamo exports: Llama, Mistral, GPT-2, …): q and Kᵀ
/// each multiplied by √scale, an additive `[B, 1, S, S]` mask, Softmax, then
/// `Where(IsNaN(p), 0, p)`, grouped-query k and v. One query row of batch 1 is masked at
/// every key: the plain softmax makes it NaN, the cleanup zeros, and so the fused kernel.
#[test]
fn sdpa_decomposition_with_a_fully_masked_row_equals_the_unfused_chain() {
    let (b, s, h, hk, d) = (2, 6, 4, 2, 5);
    let q = rand(vec![b, h, s, d], 51);
    let k = rand(vec![b, hk, s, d], 52);
    let v = rand(vec![b, hk, s, d], 53);
    // √(1/√5): not a power of two, so scaling q and Kᵀ apart rounds unlike c² · Q·Kᵀ.
    let c = Tensor::f32(vec![], vec![(1.0 / (d as f32).sqrt()).sqrt()]);
    let zero = Tensor::f32(vec![], vec![0.0]);
    let masked_row = 3;
    let mv: Vec<f32> = (0..b * s * s)
        .map(|e| {
            let (bi, i, j) = (e / (s * s), e / s % s, e % s);
            if j > i || (bi == 1 && i == masked_row) {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    let m = Tensor::f32(vec![b, 1, s, s], mv);
    let kt = run(
        Op::Transpose(TransposeAttrs {
            perm: vec![0, 1, 3, 2],
        }),
        &[&repeat_kv(&k, h)],
    );
    let sc = run(
        Op::MatMul(MatMulAttrs {}),
        &[&bin(BinaryOp::Mul, &q, &c), &bin(BinaryOp::Mul, &kt, &c)],
    );
    let p = run(
        Op::Softmax(SoftmaxAttrs {
            axis: 3,
            log: false,
        }),
        &[&bin(BinaryOp::Add, &sc, &m)],
    );
    let nan = run(
        Op::Unary(UnaryAttrs {
            kind: UnaryOp::IsNaN,
        }),
        &[&p],
    );
    let clean = run(Op::Where, &[&nan, &zero, &p]);
    let v4 = repeat_kv(&v, h);
    let want = run(Op::MatMul(MatMulAttrs {}), &[&clean, &v4]);
    let want_nan = run(Op::MatMul(MatMulAttrs {}), &[&p, &v4]);
    let op = |rows, out_shape: Vec<usize>| {
        FusedOp::Attention(AttentionShape {
            batch: b,
            q_len: s,
            kv_len: s,
            heads: h,
            kv_heads: hk,
            layouts: [HeadLayout::HeadMajor; 3],
            head_dim: d,
            scale: AttentionScale::Operands,
            mask: AttentionMask::Add,
            terms: vec![],
            rows,
            causal: false,
            merged: out_shape.len() != 4,
            out_shape,
        })
    };
    let shape = vec![b, h, s, d];
    let got = eval_fused(
        &op(SoftmaxRows::NanToFill, shape.clone()),
        &[&q, &k, &v, &c, &c, &m, &zero],
    )
    .unwrap();
    let gv = got.as_f32().unwrap();
    assert!(gv.iter().all(|x| x.is_finite()));
    assert!(same_or_both_nan(gv, want.as_f32().unwrap(), 1e-6));
    // The masked row (batch 1, every head) is zeros.
    for hh in 0..h {
        let o = ((h + hh) * s + masked_row) * d;
        assert_eq!(&gv[o..o + d], &[0.0; 5], "head {hh}");
    }
    // Without the cleanup the row is NaN, as the unfused chain without the Where.
    let plain = eval_fused(
        &op(SoftmaxRows::Plain, shape.clone()),
        &[&q, &k, &v, &c, &c, &m],
    )
    .unwrap();
    let pv = plain.as_f32().unwrap();
    assert!(pv[(h * s + masked_row) * d].is_nan());
    assert!(same_or_both_nan(pv, want_nan.as_f32().unwrap(), 1e-6));
    // Merged into [B·S, H·D] (GPT-2's final Reshape), in a pool: the same bits, moved.
    let merged_op = op(SoftmaxRows::NanToFill, vec![b * s, h * d]);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    let merged = pool
        .install(|| eval_fused(&merged_op, &[&q, &k, &v, &c, &c, &m, &zero]))
        .unwrap();
    assert_eq!(merged.shape, vec![b * s, h * d]);
    let mv = merged.as_f32().unwrap();
    for (bi, hh, i) in
        (0..b).flat_map(|bi| (0..h).flat_map(move |hh| (0..s).map(move |i| (bi, hh, i))))
    {
        let src = ((bi * h + hh) * s + i) * d;
        let dst = (bi * s + i) * h * d + hh * d;
        assert_eq!(&mv[dst..dst + d], &gv[src..src + d]);
    }
    // A missing NaN fill input is an error, not a read past the inputs.
    let err = eval_fused(
        &op(SoftmaxRows::NanToFill, shape),
        &[&q, &k, &v, &c, &c, &m],
    )
    .unwrap_err();
    assert!(err.to_string().contains("inputs"), "{err}");
}

/// Score terms after the mask (Gemma-2's soft-capping, T5's second additive term, a
/// `Where` with the scores in its else-branch) give the unfused chain's bits.
#[test]
fn score_terms_equal_the_unfused_chain() {
    let (b, s, h, d) = (2, 6, 3, 4);
    let [q, k, v, c] = qkv_and_scale([b, s, h, d], 31);
    let m = rand(vec![b, 1, 1, s], 34);
    let cap = Tensor::f32(vec![], vec![0.7]);
    let bias = rand(vec![1, h, s, s], 35);
    let cond = Tensor::bool(
        vec![b, 1, s, s],
        (0..b * s * s).map(|i| i % 5 == 1).collect(),
    );
    let fill = Tensor::f32(vec![], vec![-1e4]);
    let tanh = |z: &Tensor| {
        run(
            Op::Unary(UnaryAttrs {
                kind: UnaryOp::Tanh,
            }),
            &[z],
        )
    };
    let chain = |z: &Tensor| {
        let z = bin(BinaryOp::Add, z, &m);
        let z = bin(BinaryOp::Mul, &tanh(&bin(BinaryOp::Div, &z, &cap)), &cap);
        let z = bin(BinaryOp::Add, &bias, &z);
        run(Op::Where, &[&cond, &fill, &z])
    };
    let (_, want) = attention_chain(&q, &k, &v, &c, chain, h);
    let FusedOp::Attention(mut shape) =
        attention_op([b, s, h, d], AttentionMask::Add, vec![b, s, h * d])
    else {
        unreachable!("attention_op builds an attention")
    };
    use ScoreTerm::*;
    shape.terms = vec![Div, Tanh, Mul, Add, SelectElse];
    let op = FusedOp::Attention(shape);
    let inputs = [&q, &k, &v, &c, &m, &cap, &cap, &bias, &cond, &fill];
    let got = eval_fused(&op, &inputs).unwrap();
    let worst = max_abs_diff(&got, &want);
    assert!(worst < 1e-6, "max abs difference {worst}");
    // A missing term input is an error, not a panic.
    let err = eval_fused(&op, &inputs[..9]).unwrap_err();
    assert!(err.to_string().contains("input"), "{err}");
}
