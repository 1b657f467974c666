//! The integer GEMM against the dequantised product in f64, its portable loop, its integer
//! entry point and its weight packing.
use super::*;
use crate::fused::quantize_value as quantize;

/// Deterministic pseudo-random numbers in [0, 1).
fn rng(seed: u64) -> impl FnMut() -> f64 {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Case {
    m: usize,
    k: usize,
    n: usize,
    stored: DType,
    act: ActQuant,
    gelu: Option<bool>,
}

fn range(to: DType) -> (f32, f32, f32) {
    match to {
        DType::U8 => (0.0, 255.0, 0.0),
        _ => (-128.0, 127.0, 128.0),
    }
}

/// The unfused arithmetic in f64: quantise, dequantise both sides, multiply.
fn reference(c: &Case, x: &[f32], q: &[i64], s: &[f32], z: &[i64], bias: &[f32]) -> Vec<f64> {
    let (lo, hi, _) = range(c.act.to);
    let a: Vec<f64> = x
        .iter()
        .map(|&v| (quantize(v, c.act.sq, c.act.zq, lo, hi) - c.act.zd) as f64 * c.act.sd as f64)
        .collect();
    let mut y = vec![0f64; c.m * c.n];
    for i in 0..c.m {
        for j in 0..c.n {
            let mut acc = bias[j] as f64;
            for kk in 0..c.k {
                let w = (q[kk * c.n + j] - z[j]) as f64 * s[j] as f64;
                acc += a[i * c.k + kk] * w;
            }
            y[i * c.n + j] = match c.gelu {
                Some(_) => gelu_erf(acc as f32) as f64,
                None => acc,
            };
        }
    }
    y
}

fn check(c: Case, seed: u64) {
    let mut r = rng(seed);
    let x: Vec<f32> = (0..c.m * c.k).map(|_| (r() * 6.0 - 3.0) as f32).collect();
    let lo = if c.stored == DType::I8 { -128i64 } else { 0 };
    let q: Vec<i64> = (0..c.k * c.n).map(|_| lo + (r() * 256.0) as i64).collect();
    let s: Vec<f32> = (0..c.n).map(|_| (0.002 + r() * 0.01) as f32).collect();
    let z: Vec<i64> = (0..c.n)
        .map(|_| match c.stored {
            DType::I8 => 0,
            _ => 100 + (r() * 50.0) as i64,
        })
        .collect();
    let bias: Vec<f32> = (0..c.n).map(|_| (r() - 0.5) as f32).collect();
    let w = PackedQWeight::pack(c.k, c.n, &q, c.stored, &s, &z).unwrap();
    let xt = Tensor::f32(vec![c.m, c.k], x.clone());
    let y = quant_matmul(&xt, c.act, &w, Some(&bias), c.gelu).unwrap();
    assert_eq!(y.shape, vec![c.m, c.n]);
    let got = y.as_f32().unwrap();
    let want = reference(&c, &x, &q, &s, &z, &bias);
    let scale = want.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            ((*g as f64) - w).abs() <= 2e-6 * scale,
            "element {i}: {g} against {w} (scale {scale})"
        );
    }
    // The portable loop computes the same integer sums and rounds the same way.
    let stride = w.groups * 4;
    let mut a = vec![0u8; c.m * stride];
    let mut rowsum = vec![0i32; c.m];
    let (qlo, qhi, offset) = range(c.act.to);
    for i in 0..c.m {
        for kk in 0..c.k {
            let u = (quantize(x[i * c.k + kk], c.act.sq, c.act.zq, qlo, qhi) + offset) as u8;
            a[i * stride + kk] = u;
            rowsum[i] += u as i32;
        }
    }
    let e = Epi {
        sd: c.act.sd,
        alpha: c.act.zd + offset,
        bias: Some(&bias),
        gelu: c.gelu,
    };
    let mut portable = vec![0f32; c.m * c.n];
    gemm_rows_portable(&a, &rowsum, c.m, &w, &e, &mut portable);
    // The GELU follows the sums in its own pass.
    if c.gelu.is_some() {
        portable.iter_mut().for_each(|x| *x = gelu_erf(*x));
    }
    assert_eq!(&portable[..], got, "the portable loop rounds differently");
    // The same product from the integer activation, without bias and GELU.
    if c.gelu.is_none() {
        let qt = Tensor::new(
            c.act.to,
            vec![c.m, c.k],
            TensorData::I64(
                a.chunks(stride.max(1))
                    .flat_map(|row| row[..c.k].iter().map(|&u| u as i64 - offset as i64))
                    .collect(),
            ),
        )
        .unwrap();
        let d = dequant_matmul(&qt, c.act.sd, c.act.zd, &w).unwrap();
        let with_bias: Vec<f32> = d
            .as_f32()
            .unwrap()
            .chunks(c.n)
            .flat_map(|row| row.iter().zip(&bias).map(|(y, b)| y + b))
            .collect();
        assert_eq!(&with_bias[..], got, "dequant_matmul + bias differs");
    }
}

fn u8_act() -> ActQuant {
    ActQuant {
        to: DType::U8,
        sq: 0.025,
        zq: 120.0,
        sd: 0.025,
        zd: 120.0,
    }
}

#[test]
fn uint8_activations_int8_weights_match_the_dequantised_product() {
    let shapes = [
        (1, 1, 1),
        (3, 37, 21),
        (9, 64, 70),
        (13, 130, 33),
        (128, 64, 192),
    ];
    for (m, k, n) in shapes {
        let c = Case {
            m,
            k,
            n,
            stored: DType::I8,
            act: u8_act(),
            gelu: None,
        };
        check(c, (m * 1000 + k * 10 + n) as u64);
    }
}

#[test]
fn int8_activations_uint8_weights_with_zero_points() {
    // Quantize and Dequantize with different parameters (the general form).
    let act = ActQuant {
        to: DType::I8,
        sq: 0.03,
        zq: -5.0,
        sd: 0.031,
        zd: -4.0,
    };
    for (m, k, n) in [(2, 5, 17), (7, 96, 48), (5, 3, 64)] {
        let c = Case {
            m,
            k,
            n,
            stored: DType::U8,
            act,
            gelu: None,
        };
        check(c, (m * 7 + k + n) as u64);
    }
}

#[test]
fn gelu_epilogue_on_whole_and_partial_panels() {
    for (m, k, n) in [(5, 64, 32), (6, 20, 40)] {
        let c = Case {
            m,
            k,
            n,
            stored: DType::I8,
            act: u8_act(),
            gelu: Some(false),
        };
        check(c, (m + k + n) as u64);
    }
}

#[test]
fn saturates_outliers_and_nan() {
    // Values far outside the quantiser's range clamp to 0 / 255; NaN quantises to 0.
    let act = ActQuant {
        to: DType::U8,
        sq: 0.01,
        zq: 128.0,
        sd: 0.01,
        zd: 128.0,
    };
    let q: Vec<i64> = (0..8).map(|i| i - 4).collect();
    let w = PackedQWeight::pack(4, 2, &q, DType::I8, &[1.0, 0.5], &[0, 0]).unwrap();
    let x = Tensor::f32(vec![1, 4], vec![100.0, -100.0, f32::NAN, 0.05]);
    let y = quant_matmul(&x, act, &w, None, None).unwrap();
    // a = (q − 128)·0.01 = [1.27, −1.28, −1.28, 0.05]; rows of w: [−4, −3], [−2, −1],
    // [0, 1], [2, 3].
    let a = [1.27f64, -1.28, -1.28, 0.05];
    let want0 = a[0] * -4.0 + a[1] * -2.0 + a[3] * 2.0;
    let want1 = (a[0] * -3.0 - a[1] + a[2] + a[3] * 3.0) * 0.5;
    let got = y.as_f32().unwrap();
    assert!((got[0] as f64 - want0).abs() < 1e-5, "{got:?}");
    assert!((got[1] as f64 - want1).abs() < 1e-5, "{got:?}");
}

#[test]
fn a_dequantised_weight_packs_to_its_integers() {
    let (k, n) = (37, 21);
    let mut r = rng(5);
    let q: Vec<i64> = (0..k * n).map(|_| (r() * 256.0) as i64).collect();
    let s: Vec<f32> = (0..n).map(|_| (0.001 + r() * 0.02) as f32).collect();
    let z: Vec<i64> = (0..n).map(|_| (r() * 256.0) as i64).collect();
    let w: Vec<f32> = (0..k * n)
        .map(|i| (q[i] - z[i % n]) as f32 * s[i % n])
        .collect();
    let a = PackedQWeight::pack(k, n, &q, DType::U8, &s, &z).unwrap();
    let b = PackedQWeight::from_dequantised(k, n, &w, DType::U8, &s, &z).unwrap();
    assert_eq!(a, b);
}

#[test]
fn rejects_bad_weights_and_shapes() {
    let one = [1.0f32; 2];
    assert!(PackedQWeight::pack(2, 2, &[0, 1, 2, 300], DType::I8, &one, &[0; 2]).is_err());
    assert!(PackedQWeight::pack(2, 2, &[0; 4], DType::I16, &one, &[0; 2]).is_err());
    let w = PackedQWeight::pack(2, 2, &[0; 4], DType::I8, &one, &[0; 2]).unwrap();
    let x = Tensor::f32(vec![1, 3], vec![0.0; 3]);
    let err = quant_matmul(&x, u8_act(), &w, None, None).unwrap_err();
    assert!(err.contains("K = 2"), "{err}");
}
