//! Tests of the fused elementwise programs: each equals the unfused ops bit for bit.
use super::super::testing::*;
use super::super::{eval_fused, FusedOp};
use super::*;
use crate::eval;
use tessera_ir::op::*;
use tessera_ir::Op;

fn unary(kind: UnaryOp, x: &Tensor) -> Tensor {
    run(Op::Unary(UnaryAttrs { kind }), &[x])
}

fn fused(out_shape: &[usize], instrs: Vec<EwInstr>, ins: &[&Tensor]) -> Tensor {
    let op = FusedOp::Elementwise(ElementwiseProgram {
        out_shape: out_shape.to_vec(),
        instrs,
        out_dtype: DType::F32,
    });
    eval_fused(&op, ins).unwrap()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.as_f32().unwrap().iter().map(|v| v.to_bits()).collect()
}

/// `tanh-GELU(x·w + b) / sqrt(y)`-style tree over broadcast operands, with a 2101-element
/// trailing block (full chunks and an odd tail) and a middle-axis broadcast, equals
/// the unfused ops bit for bit.
#[test]
fn broadcasting_tree_equals_the_unfused_ops_bitwise() {
    use EwInstr::*;
    for (xs, ws, bs) in [
        (vec![2, 3, 2101], vec![2101], vec![3, 1]),
        (vec![2, 3, 5], vec![2, 1, 5], vec![]),
        (vec![4, 1], vec![1, 7], vec![4, 7]),
    ] {
        let x = rand(xs, 1);
        let w = rand(ws, 2);
        let b = rand(bs, 3);
        let y = unary(UnaryOp::Abs, &rand(vec![1], 4));
        let xw = bin(BinaryOp::Mul, &x, &w);
        let z = bin(BinaryOp::Add, &xw, &b);
        let g = run(
            Op::Gelu(GeluAttrs {
                tanh_approximation: true,
            }),
            &[&z],
        );
        let s = unary(UnaryOp::Sqrt, &y);
        let p = bin(BinaryOp::Pow, &g, &Tensor::f32(vec![], vec![2.0]));
        let want = bin(BinaryOp::Div, &p, &s);
        let two = Tensor::f32(vec![], vec![2.0]);
        let prog = vec![
            Load(0),
            Load(1),
            Binary(BinaryOp::Mul, 0, 1),
            Load(2),
            Binary(BinaryOp::Add, 2, 3),
            Gelu { tanh: true, x: 4 },
            Load(4),
            Binary(BinaryOp::Pow, 5, 6),
            Load(3),
            Unary(UnaryOp::Sqrt, 8),
            Binary(BinaryOp::Div, 7, 9),
        ];
        let got = fused(&want.shape, prog, &[&x, &w, &b, &y, &two]);
        assert_eq!(got.shape, want.shape);
        assert_eq!(bits(&got), bits(&want));
    }
}

/// `Where(cond, Cast(mask)·x, -x)` with a broadcast condition, a bool and an int64 leaf
/// cast to f32 (as Cast converts them), SiLU, Exp, Tanh, Clip and HardSwish.
#[test]
fn where_cast_and_unary_kinds_equal_the_unfused_ops_bitwise() {
    use EwInstr::*;
    let x = rand(vec![3, 4, 129], 5);
    let cond = Tensor::bool(vec![4, 1], vec![true, false, false, true]);
    let mask = Tensor::i64(vec![3, 1, 129], (0..387).map(|i| i % 3).collect());
    let flag = Tensor::bool(vec![129], (0..129).map(|i| i % 2 == 0).collect());
    let cast = |t: &Tensor| crate::cast_tensor(t, DType::F32);
    let mx = bin(BinaryOp::Mul, &cast(&mask), &x);
    let neg = unary(UnaryOp::Neg, &x);
    let w = run(Op::Where, &[&cond, &mx, &neg]);
    let silu = unary(UnaryOp::Silu, &w);
    let e = unary(UnaryOp::Exp, &unary(UnaryOp::Tanh, &silu));
    let c = run(
        Op::Clip(ClipAttrs {
            min: Some(0.5),
            max: None,
        }),
        &[&e],
    );
    let hs = run(
        Op::HardSigmoid(HardSigmoidAttrs {
            alpha: 0.2,
            beta: 0.5,
            swish: true,
        }),
        &[&c],
    );
    let want = bin(BinaryOp::Sub, &hs, &cast(&flag));
    let prog = vec![
        LoadCast(1),
        Load(0),
        Binary(BinaryOp::Mul, 0, 1),
        Unary(UnaryOp::Neg, 1),
        Where {
            cond: 2,
            a: 2,
            b: 3,
        },
        Unary(UnaryOp::Silu, 4),
        Unary(UnaryOp::Tanh, 5),
        Unary(UnaryOp::Exp, 6),
        Clip {
            min: Some(0.5),
            max: None,
            x: 7,
        },
        HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
            swish: true,
            x: 8,
        },
        LoadCast(3),
        Binary(BinaryOp::Sub, 9, 10),
    ];
    let got = fused(&want.shape, prog, &[&x, &mask, &cond, &flag]);
    assert_eq!(bits(&got), bits(&want));
}

/// Sin and Cos of a rotary table's angles (positions × frequencies), with angles beyond the
/// wide range and a NaN among them: the program's values are the unfused ops' bit for bit.
#[test]
fn sin_and_cos_equal_the_unfused_ops_bitwise() {
    use EwInstr::*;
    let pos = Tensor::i64(vec![2, 130, 1], (0..260).map(|i| (i % 130) * 997).collect());
    let mut freq: Vec<f32> = (0..16)
        .map(|i| 10_000f32.powf(-(i as f32) / 16.0))
        .collect();
    freq[15] = f32::NAN;
    let freq = Tensor::f32(vec![1, 1, 16], freq);
    let angles = bin(BinaryOp::Mul, &crate::cast_tensor(&pos, DType::F32), &freq);
    let want = bin(
        BinaryOp::Add,
        &unary(UnaryOp::Cos, &angles),
        &unary(UnaryOp::Sin, &angles),
    );
    let prog = vec![
        LoadCast(0),
        Load(1),
        Binary(BinaryOp::Mul, 0, 1),
        Unary(UnaryOp::Cos, 2),
        Unary(UnaryOp::Sin, 2),
        Binary(BinaryOp::Add, 3, 4),
    ];
    let got = fused(&want.shape, prog, &[&pos, &freq]);
    assert_eq!(bits(&got), bits(&want));
    // Positions up to 128 813 reach angles past the wide range's 65 536.
    let big = match &angles.data {
        tessera_ir::TensorData::F32(v) => v.iter().filter(|a| a.abs() > 65_536.0).count(),
        _ => 0,
    };
    assert!(big > 0);
}

/// Inside a thread pool the rows are split between threads; the result is the same.
/// Registers that hold one value per block (scalars, a per-row value outside the block):
/// a scalar on either side of Sub and Div, one read by Pow and Where (filled out), a
/// Where of a per-row condition, and a program whose result is itself one value.
#[test]
fn uniform_registers_equal_the_unfused_ops_bitwise() {
    use EwInstr::*;
    let x = rand(vec![3, 1029], 11);
    let row = rand(vec![3, 1], 12);
    let c = Tensor::f32(vec![], vec![0.75]);
    let cond = Tensor::bool(vec![3, 1], vec![true, false, true]);
    let e = unary(UnaryOp::Exp, &row);
    let a = bin(BinaryOp::Sub, &e, &x);
    let d = bin(BinaryOp::Div, &a, &c);
    let p = bin(BinaryOp::Pow, &d, &e);
    let w = run(Op::Where, &[&cond, &e, &p]);
    let want = bin(BinaryOp::Mul, &w, &c);
    let prog = vec![
        Load(0),
        Load(1),
        Unary(UnaryOp::Exp, 1),
        Binary(BinaryOp::Sub, 2, 0),
        Load(2),
        Binary(BinaryOp::Div, 3, 4),
        Binary(BinaryOp::Pow, 5, 2),
        Where {
            cond: 3,
            a: 2,
            b: 6,
        },
        Binary(BinaryOp::Mul, 7, 4),
    ];
    let got = fused(&[3, 1029], prog, &[&x, &row, &c, &cond]);
    assert_eq!(bits(&got), bits(&want));
    // Every input repeated over the block: the result is one value per row.
    let want = bin(BinaryOp::Add, &e, &c);
    let prog = vec![
        Load(0),
        Unary(UnaryOp::Exp, 0),
        Load(1),
        Binary(BinaryOp::Add, 1, 2),
    ];
    let got = fused(&[3, 1029], prog, &[&row, &c]);
    let want = run(
        Op::Expand(ExpandAttrs {
            shape: vec![3, 1029],
        }),
        &[&want],
    );
    assert_eq!(bits(&got), bits(&want));
}

#[test]
fn split_between_threads_gives_the_same_result() {
    use EwInstr::*;
    let x = rand(vec![64, 1000], 7);
    let b = rand(vec![1000], 8);
    let prog = vec![
        Load(0),
        Load(1),
        Binary(BinaryOp::Add, 0, 1),
        Gelu { tanh: false, x: 2 },
    ];
    let want = fused(&[64, 1000], prog.clone(), &[&x, &b]);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    let got = pool.install(|| fused(&[64, 1000], prog, &[&x, &b]));
    assert_eq!(bits(&got), bits(&want));
    let gelu = run(
        Op::Gelu(GeluAttrs {
            tanh_approximation: false,
        }),
        &[&bin(BinaryOp::Add, &x, &b)],
    );
    assert_eq!(bits(&got), bits(&gelu));
}

#[test]
fn bad_programs_and_inputs_are_errors() {
    use EwInstr::*;
    let x = rand(vec![2, 3], 9);
    let op = |instrs: Vec<EwInstr>| {
        FusedOp::Elementwise(ElementwiseProgram {
            out_shape: vec![2, 3],
            instrs,
            out_dtype: DType::F32,
        })
    };
    // An integer result needs a last Quantize to exactly that type's range.
    for (last, ok) in [
        (Unary(UnaryOp::Neg, 0), false),
        (
            Quantize {
                lo: 0.0,
                hi: 255.0,
                x: 0,
                s: 0,
                z: 0,
            },
            false,
        ),
        (
            Quantize {
                lo: -128.0,
                hi: 127.0,
                x: 0,
                s: 0,
                z: 0,
            },
            true,
        ),
    ] {
        let p = FusedOp::Elementwise(ElementwiseProgram {
            out_shape: vec![2, 3],
            instrs: vec![Load(0), last],
            out_dtype: DType::I8,
        });
        let r = eval_fused(&p, &[&x]);
        assert_eq!(r.is_ok(), ok, "{r:?}");
        if let Ok(t) = r {
            assert_eq!(t.dtype, DType::I8);
        }
    }
    let later = eval_fused(&op(vec![Unary(UnaryOp::Neg, 1), Load(0)]), &[&x]);
    assert!(later.unwrap_err().to_string().contains("later register"));
    let wide = rand(vec![4, 3], 10);
    let e = eval_fused(&op(vec![Load(0)]), &[&wide]).unwrap_err();
    assert!(e.to_string().contains("does not broadcast"), "{e}");
    let e = eval_fused(&op(vec![LoadCast(0)]), &[&x]).unwrap_err();
    assert!(e.to_string().contains("wrong type"), "{e}");
    let e = eval_fused(&op(vec![Load(0), Unary(UnaryOp::Not, 0)]), &[&x]).unwrap_err();
    assert!(e.to_string().contains("Not"), "{e}");
    assert!(eval(&Op::Where, &[&x, &x, &x]).is_err());
}

/// A pre-activation BatchNorm (`relu(x·s + t)`, per-channel s and t), Sign, Max and Min,
/// over values with NaNs and zeros of both signs, equal the unfused ops bit for bit.
#[test]
fn relu_sign_max_min_equal_the_unfused_ops_bitwise() {
    use EwInstr::*;
    let mut x = rand(vec![2, 3, 5, 7], 21);
    if let TensorData::F32(v) = &mut x.data {
        v[0] = f32::NAN;
        v[1] = -0.0;
        v[2] = 0.0;
        v[40] = f32::NAN;
    }
    let s = rand(vec![3, 1, 1], 22);
    let t = rand(vec![3, 1, 1], 23);
    let y = rand(vec![5, 7], 24);
    let bn = bin(BinaryOp::Add, &bin(BinaryOp::Mul, &x, &s), &t);
    let relu = unary(UnaryOp::Relu, &bn);
    let sign = unary(UnaryOp::Sign, &x);
    let hi = bin(BinaryOp::Max, &relu, &y);
    let want = bin(BinaryOp::Min, &hi, &sign);
    let prog = vec![
        Load(0),
        Load(1),
        Binary(BinaryOp::Mul, 0, 1),
        Load(2),
        Binary(BinaryOp::Add, 2, 3),
        Unary(UnaryOp::Relu, 4),
        Load(3),
        Binary(BinaryOp::Max, 5, 6),
        Unary(UnaryOp::Sign, 0),
        Binary(BinaryOp::Min, 7, 8),
    ];
    let got = fused(&want.shape, prog, &[&x, &s, &t, &y]);
    assert_eq!(bits(&got), bits(&want));
}

/// A bias read by every block (loaded once per thread where every chunk reads the same
/// values: several blocks to a chunk, or blocks no longer than a chunk), as f32 and as
/// int64 cast to f32, beside a residual, with a last chunk shorter than the others, equals
/// the unfused ops bit for bit.
#[test]
fn a_bias_read_by_every_block_equals_the_unfused_ops() {
    use EwInstr::*;
    // Blocks of 64 (many to a chunk), of 1500 (one to a chunk) and of 5000 (several
    // chunks to a block, where the bias differs between chunks).
    for (rows, len) in [(37, 64), (5, 1500), (3, 5000)] {
        let x = rand(vec![rows, len], 1);
        let b = rand(vec![len], 2);
        let r = rand(vec![rows, len], 3);
        let ib = Tensor::i64(vec![len], (0..len as i64).map(|i| i % 7 - 3).collect());
        let sum = bin(BinaryOp::Add, &bin(BinaryOp::Add, &x, &b), &r);
        let want = unary(
            UnaryOp::Relu,
            &bin(BinaryOp::Mul, &sum, &crate::cast_tensor(&ib, DType::F32)),
        );
        let prog = vec![
            Load(0),
            Load(1),
            Binary(BinaryOp::Add, 0, 1),
            Load(2),
            Binary(BinaryOp::Add, 2, 3),
            LoadCast(3),
            Binary(BinaryOp::Mul, 4, 5),
            Unary(UnaryOp::Relu, 6),
        ];
        let got = fused(&[rows, len], prog, &[&x, &b, &r, &ib]);
        assert_eq!(bits(&got), bits(&want), "{rows}x{len}");
    }
}

/// Operands broadcast along different outer axes (`[1, H, S, S]` over the batch beside
/// `[B, 1, S, S]` over the heads: T5's position bias and its mask), with blocks short enough
/// that several are evaluated to a chunk, equal the unfused ops bit for bit.
#[test]
fn operands_broadcast_along_different_outer_axes() {
    use EwInstr::*;
    for (xs, bs, cs) in [
        (vec![3, 5, 7], vec![1, 5, 7], vec![3, 1, 7]),
        (vec![2, 3, 600], vec![1, 3, 600], vec![2, 1, 600]),
        (vec![2, 4, 12, 12], vec![1, 4, 12, 12], vec![2, 1, 12, 12]),
    ] {
        let x = rand(xs.clone(), 1);
        let b = rand(bs, 2);
        let c = rand(cs, 3);
        let want = unary(
            UnaryOp::Relu,
            &bin(BinaryOp::Add, &bin(BinaryOp::Add, &x, &b), &c),
        );
        let prog = vec![
            Load(0),
            Load(1),
            Binary(BinaryOp::Add, 0, 1),
            Load(2),
            Binary(BinaryOp::Add, 2, 3),
            Unary(UnaryOp::Relu, 4),
        ];
        let got = fused(&xs, prog, &[&x, &b, &c]);
        assert_eq!(bits(&got), bits(&want), "{xs:?}");
    }
}
