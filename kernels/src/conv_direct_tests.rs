//! The direct Conv over packed weights (`conv_direct.rs`) against the plain reference of
//! `conv_tests.rs`: its cases, its epilogues, its split over threads, which Convs it serves
//! and its 1-D form.
use super::conv::{conv, conv_fused, ConvWeight};
use super::conv_direct::{direct_available, PackedConvWeight};
use super::conv_epilogue::Epilogue;
use super::conv_tests::{case, case_attrs, cases, max_abs_diff, outputs, values, Case};
use tessera_ir::op::ConvAttrs;
use tessera_ir::Tensor;

/// The cases the direct kernel serves (more than one input channel per group), and wider
/// ones: several panels of 48 channels with a partial last one, blocks of 128 positions
/// spanning images, 1×1 Convs read in place.
fn direct_cases() -> Vec<Case> {
    let mut v: Vec<Case> = cases().into_iter().filter(|c| c.x[1] > c.g).collect();
    v.push(case(
        [2, 20, 9, 9],
        100,
        [3, 3],
        [1, 1],
        [1, 1],
        [1; 4],
        1,
        true,
    ));
    v.push(case(
        [3, 16, 11, 7],
        2 * 70,
        [3, 3],
        [2, 1],
        [1, 2],
        [2, 0, 1, 3],
        2,
        false,
    ));
    v.push(case(
        [2, 32, 10, 13],
        64,
        [1, 1],
        [1, 1],
        [1, 1],
        [0; 4],
        1,
        true,
    ));
    v.push(case(
        [2, 24, 3, 3],
        1000,
        [1, 1],
        [1, 1],
        [1, 1],
        [0; 4],
        1,
        true,
    ));
    v
}

#[test]
fn direct_conv_over_packed_weights_matches_reference() {
    if !direct_available() {
        println!("skipped: the direct Conv needs AVX-512F or AVX2");
        return;
    }
    for (i, cs) in direct_cases().iter().enumerate() {
        let (got, want) = outputs(cs, 31 + i as u64, true);
        let d = max_abs_diff(&got, &want);
        assert!(d < 1e-4, "case {i}: max abs diff {d}");
    }
}

#[test]
fn direct_conv_epilogues_match_the_conv_then_its_epilogue() {
    if !direct_available() {
        println!("skipped: the direct Conv needs AVX-512F or AVX2");
        return;
    }
    // Few positions (the epilogue once per image over whole planes: 1×1 over two 2×2 maps,
    // 3×3 over two 3×3 maps) and planes split over blocks of positions (13×13 maps).
    for (i, cs) in [
        case([2, 48, 2, 2], 100, [1, 1], [1, 1], [1, 1], [0; 4], 1, true),
        case([2, 32, 3, 3], 70, [3, 3], [1, 1], [1, 1], [1; 4], 1, false),
        case([2, 16, 13, 13], 64, [3, 3], [1, 1], [1, 1], [1; 4], 1, true),
    ]
    .iter()
    .enumerate()
    {
        let [n, c, h, wd] = cs.x;
        let xs = values(n * c * h * wd, 50 + i as u64);
        let ws = values(cs.m * c * cs.k[0] * cs.k[1], 60 + i as u64);
        let attrs = case_attrs(cs);
        let xt = Tensor::f32(cs.x.to_vec(), xs);
        let wt = Tensor::f32(vec![cs.m, c, cs.k[0], cs.k[1]], ws.clone());
        let bt = Tensor::f32(vec![cs.m], values(cs.m, 70 + i as u64));
        let b = cs.bias.then_some(&bt);
        let plain = conv(&attrs, &xt, &wt, b).expect("valid case");
        let plain = plain.as_f32().expect("f32 output");
        let residual = values(plain.len(), 80 + i as u64);
        let pw = PackedConvWeight::pack(&wt.shape, &ws, 1).expect("packable weight");
        let epi = Epilogue {
            residual: Some(&residual),
            act: Some(super::conv_epilogue::ConvActivation::Silu),
            ..Epilogue::default()
        };
        let got = conv_fused(&attrs, &xt, ConvWeight::Packed(&pw), b, epi).expect("valid case");
        let got = got.as_f32().expect("f32 output");
        for (k, ((g, p), r)) in got.iter().zip(plain).zip(&residual).enumerate() {
            let y = p + r;
            let want = y / (1.0 + (-y).exp());
            assert!(
                (g - want).abs() <= 1e-4 * (1.0 + want.abs()),
                "case {i}, element {k}: {g} vs {want}"
            );
        }
    }
}

#[test]
fn direct_conv_split_over_threads_gives_the_same_bits() {
    if !direct_available() {
        println!("skipped: the direct Conv needs AVX-512F or AVX2");
        return;
    }
    // 2·64·16·16 outputs of 9·32 taps: split into blocks of positions over the pool's
    // threads; 32 positions of 200 channels: one block, split into ranges of panels.
    for cs in [
        case([2, 32, 16, 16], 64, [3, 3], [1, 1], [1, 1], [1; 4], 1, true),
        case([2, 64, 4, 4], 200, [3, 3], [1, 1], [1, 1], [1; 4], 1, false),
    ] {
        let (one, _) = outputs(&cs, 9, true);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .expect("a 3-thread pool");
        let (three, want) = pool.install(|| outputs(&cs, 9, true));
        assert_eq!(one, three);
        let d = max_abs_diff(&one, &want);
        assert!(d < 1e-4, "max abs diff {d}");
    }
}

#[test]
fn the_direct_kernel_serves_multi_tap_convs_on_small_or_large_maps_or_few_channels() {
    if !direct_available() {
        println!("skipped: the direct Conv needs AVX-512F or AVX2");
        return;
    }
    let attrs = |k: usize, dil: usize, pad: usize, group: usize| ConvAttrs {
        strides: vec![1; k],
        dilations: vec![dil; k],
        pads: vec![pad; 2 * k],
        group,
        depthwise: false,
    };
    use super::conv_direct::direct_suits;
    // Dense 3×3 Convs on 3×3 maps of two images and on a 56×56 map, a stem on a small
    // map, a 1-D Conv of 16 channels per group: served.
    assert!(direct_suits(
        &[2, 64, 3, 3],
        &[64, 64, 3, 3],
        &attrs(2, 1, 1, 1)
    ));
    assert!(direct_suits(
        &[1, 64, 56, 56],
        &[64, 64, 3, 3],
        &attrs(2, 1, 1, 1)
    ));
    // A stem over a 20×20 map (10-wide output rows); over 224×224 the few-channel kernel
    // serves it (`conv_few_channels.rs`), not the direct one.
    let mut stem = attrs(2, 1, 3, 1);
    stem.strides = vec![2, 2];
    assert!(direct_suits(&[2, 3, 20, 20], &[64, 3, 7, 7], &stem));
    assert!(!direct_suits(&[1, 3, 224, 224], &[64, 3, 7, 7], &stem));
    assert!(direct_suits(&[2, 32, 30], &[32, 16, 5], &attrs(1, 1, 2, 2)));
    // A Conv of few taps in all (VGG's stem, on a 32×32 map): not served.
    assert!(!direct_suits(
        &[2, 3, 32, 32],
        &[64, 3, 3, 3],
        &attrs(2, 1, 1, 1)
    ));
    // A 1×1 Conv of 512 channels over 18 positions (a classifier): served; of 160: served;
    // over the 1×1 maps of two images (a squeeze-excitation block): not.
    let one = attrs(2, 1, 0, 1);
    assert!(direct_suits(&[2, 512, 3, 3], &[1000, 512, 1, 1], &one));
    assert!(direct_suits(&[2, 160, 3, 3], &[960, 160, 1, 1], &one));
    assert!(!direct_suits(&[2, 160, 1, 1], &[960, 160, 1, 1], &one));
    // 64 channels on two 15×15 maps: served (the direct tiles were faster than im2col on
    // every such plane measured, on AVX2 and on AVX-512).
    assert!(direct_suits(
        &[2, 64, 15, 15],
        &[64, 64, 3, 3],
        &attrs(2, 1, 1, 1)
    ));
    // 1×1, depthwise, 3-D: not served.
    assert!(!direct_suits(
        &[2, 64, 15, 15],
        &[64, 64, 1, 1],
        &attrs(2, 1, 0, 1)
    ));
    assert!(!direct_suits(
        &[2, 64, 15, 15],
        &[64, 1, 3, 3],
        &attrs(2, 1, 1, 64)
    ));
    assert!(!direct_suits(
        &[1, 4, 5, 5, 5],
        &[4, 4, 3, 3, 3],
        &attrs(3, 1, 1, 1)
    ));
    // DeepLabV3's ASPP: dilation 12 on a 4×4 map, 8 of 9 taps read padding only.
    assert!(!direct_suits(
        &[2, 12, 4, 4],
        &[10, 12, 3, 3],
        &attrs(2, 12, 12, 1)
    ));
    // ResNeXt's groups of 4 output channels: not served.
    assert!(!direct_suits(
        &[1, 128, 8, 8],
        &[128, 4, 3, 3],
        &attrs(2, 1, 1, 32)
    ));
    // A shape that does not fit its group: not served.
    assert!(!direct_suits(
        &[2, 6, 5, 5],
        &[4, 4, 3, 3],
        &attrs(2, 1, 1, 2)
    ));
}

#[test]
fn direct_conv_over_one_axis_matches_the_im2col_path() {
    if !direct_available() {
        println!("skipped: the direct Conv needs AVX-512F or AVX2");
        return;
    }
    // [n, c, len], W [m, c/g, k], stride, dilation, pads, group.
    for (i, &(x, w, st, dil, pads, g)) in [
        ([2, 8, 30], [20, 4, 5], 1, 1, [2, 2], 2),
        ([3, 6, 17], [50, 6, 3], 2, 2, [0, 3], 1),
        ([1, 16, 9], [64, 16, 4], 1, 3, [1, 0], 1),
    ]
    .iter()
    .enumerate()
    {
        let attrs = ConvAttrs {
            strides: vec![st],
            dilations: vec![dil],
            pads: pads.to_vec(),
            group: g,
            depthwise: false,
        };
        let wv = values(w.iter().product(), 2 * i as u64);
        let xt = Tensor::f32(x.to_vec(), values(x.iter().product(), 1 + 2 * i as u64));
        let wt = Tensor::f32(w.to_vec(), wv.clone());
        let bt = Tensor::f32(vec![w[0]], values(w[0], 7));
        let want = conv(&attrs, &xt, &wt, Some(&bt)).expect("valid case");
        let pw = PackedConvWeight::pack(&w, &wv, g).expect("packable weight");
        let got = conv_fused(
            &attrs,
            &xt,
            ConvWeight::Packed(&pw),
            Some(&bt),
            Epilogue::default(),
        )
        .expect("valid case");
        assert_eq!(got.shape, want.shape);
        let (a, b) = (got.as_f32().unwrap(), want.as_f32().unwrap());
        let d = max_abs_diff(a, b);
        assert!(d < 1e-4, "case {i}: max abs diff {d}");
    }
}
