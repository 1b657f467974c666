//! Conv kernel paths (depthwise over tap tables, im2col + GEMM, pointwise, batched images,
//! rayon-split depthwise) against a plain direct-loop reference, on random shapes with
//! groups, dilation, stride, padding and tiny planes.
use super::conv::{conv, conv_fused, ConvWeight};
use super::conv_direct::PackedConvWeight;
use super::conv_epilogue::Epilogue;
use tessera_ir::op::ConvAttrs;
use tessera_ir::Tensor;

/// Deterministic values in [-1, 1) (64-bit LCG).
pub(super) fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// One 2-D case: X [n, c, h, w], W [m, c/g, kh, kw], stride, dilation, pads (t, l, b, r).
pub(super) struct Case {
    pub(super) x: [usize; 4],
    pub(super) m: usize,
    pub(super) k: [usize; 2],
    pub(super) stride: [usize; 2],
    pub(super) dil: [usize; 2],
    pub(super) pads: [usize; 4],
    pub(super) g: usize,
    pub(super) bias: bool,
}

/// Direct 2-D convolution: every output sums every tap inside the input.
pub(super) fn reference(
    cs: &Case,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
) -> (Vec<usize>, Vec<f32>) {
    let [n, c, h, wd] = cs.x;
    let (cg, mg) = (c / cs.g, cs.m / cs.g);
    let oh = (h + cs.pads[0] + cs.pads[2] - cs.dil[0] * (cs.k[0] - 1) - 1) / cs.stride[0] + 1;
    let ow = (wd + cs.pads[1] + cs.pads[3] - cs.dil[1] * (cs.k[1] - 1) - 1) / cs.stride[1] + 1;
    let mut out = vec![0f32; n * cs.m * oh * ow];
    for img in 0..n {
        for oc in 0..cs.m {
            let gi = oc / mg;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = b.map_or(0.0, |b| b[oc]);
                    for ci in 0..cg {
                        for ky in 0..cs.k[0] {
                            for kx in 0..cs.k[1] {
                                let iy =
                                    (oy * cs.stride[0] + ky * cs.dil[0]) as i64 - cs.pads[0] as i64;
                                let ix =
                                    (ox * cs.stride[1] + kx * cs.dil[1]) as i64 - cs.pads[1] as i64;
                                if iy < 0 || ix < 0 || iy >= h as i64 || ix >= wd as i64 {
                                    continue;
                                }
                                let xi =
                                    ((img * c + gi * cg + ci) * h + iy as usize) * wd + ix as usize;
                                let wi = ((oc * cg + ci) * cs.k[0] + ky) * cs.k[1] + kx;
                                acc += x[xi] * w[wi];
                            }
                        }
                    }
                    out[((img * cs.m + oc) * oh + oy) * ow + ox] = acc;
                }
            }
        }
    }
    (vec![n, cs.m, oh, ow], out)
}

/// The largest absolute difference of two equally long slices.
pub(super) fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0, f32::max)
}

/// Runs the kernel and the reference on one case; returns the max abs difference.
fn max_diff(cs: &Case, seed: u64) -> f32 {
    let (got, want) = outputs(cs, seed, false);
    max_abs_diff(&got, &want)
}

/// The Conv attributes of one case.
pub(super) fn case_attrs(cs: &Case) -> ConvAttrs {
    ConvAttrs {
        strides: cs.stride.to_vec(),
        dilations: cs.dil.to_vec(),
        pads: cs.pads.to_vec(),
        group: cs.g,
        depthwise: false,
    }
}

/// The kernel's output (through W packed for the direct kernel when `packed`) and the
/// reference's on one case.
pub(super) fn outputs(cs: &Case, seed: u64, packed: bool) -> (Vec<f32>, Vec<f32>) {
    let [n, c, h, wd] = cs.x;
    let xs = values(n * c * h * wd, seed);
    let ws = values(cs.m * (c / cs.g) * cs.k[0] * cs.k[1], seed + 1);
    let bs = values(cs.m, seed + 2);
    let attrs = case_attrs(cs);
    let xt = Tensor::f32(cs.x.to_vec(), xs.clone());
    let wt = Tensor::f32(vec![cs.m, c / cs.g, cs.k[0], cs.k[1]], ws.clone());
    let bt = Tensor::f32(vec![cs.m], bs.clone());
    let b = cs.bias.then_some(&bt);
    let got = if packed {
        let pw = PackedConvWeight::pack(&wt.shape, &ws, cs.g).expect("packable weight");
        conv_fused(&attrs, &xt, ConvWeight::Packed(&pw), b, Epilogue::default())
    } else {
        conv(&attrs, &xt, &wt, b)
    };
    let got = got.expect("valid case");
    let (shape, want) = reference(cs, &xs, &ws, cs.bias.then_some(&bs[..]));
    assert_eq!(got.shape, shape);
    (got.as_f32().expect("f32 output").to_vec(), want)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn case(
    x: [usize; 4],
    m: usize,
    k: [usize; 2],
    stride: [usize; 2],
    dil: [usize; 2],
    pads: [usize; 4],
    g: usize,
    bias: bool,
) -> Case {
    Case {
        x,
        m,
        k,
        stride,
        dil,
        pads,
        g,
        bias,
    }
}

pub(super) fn cases() -> Vec<Case> {
    vec![
        // Dilated 3×3 on planes no larger than the dilation (DeepLabV3's ASPP): only the
        // centre tap is live (a strided view of W), then taps of one row and one column
        // (a compacted W), and one plane where no tap reads X at all (only the bias).
        case(
            [2, 12, 4, 4],
            10,
            [3, 3],
            [1, 1],
            [12, 12],
            [12; 4],
            1,
            true,
        ),
        case([2, 6, 4, 5], 8, [3, 3], [1, 1], [4, 4], [4; 4], 2, true),
        case(
            [1, 4, 1, 1],
            6,
            [1, 1],
            [4, 4],
            [1, 1],
            [2, 2, 2, 2],
            1,
            true,
        ),
        // One output position of a few images (Inception's 1×3 Convs on 1×1 maps: one
        // live tap; a 3×3 Conv on a 1×1 map; a 3×3 window over a whole 3×3 plane): the
        // narrow product over each image's column.
        case(
            [2, 20, 1, 1],
            12,
            [1, 3],
            [1, 1],
            [1, 1],
            [0, 1, 0, 1],
            1,
            true,
        ),
        case([3, 8, 1, 1], 5, [3, 3], [1, 1], [1, 1], [1; 4], 1, false),
        case([2, 8, 3, 3], 6, [3, 3], [2, 2], [1, 1], [0; 4], 1, true),
        // At most 16 columns (two 2×2 maps; one 3×3 map read in place): the narrow product
        // over the transposed columns, with and without groups.
        case([2, 12, 2, 2], 20, [1, 1], [1, 1], [1, 1], [0; 4], 1, true),
        case([2, 8, 2, 2], 6, [3, 3], [1, 1], [1, 1], [1; 4], 2, false),
        case([1, 12, 3, 3], 20, [1, 1], [1, 1], [1, 1], [0; 4], 1, true),
        // 1×1 Convs on 1×1 planes (squeeze-excitation): one strided GEMM per group.
        case([5, 12, 1, 1], 20, [1, 1], [1, 1], [1, 1], [0; 4], 1, true),
        case([3, 12, 1, 1], 8, [1, 1], [1, 1], [1, 1], [0; 4], 4, false),
        // Depthwise 3×3 / 5×5 on tiny planes (MobileNet's late stages), padded, strided.
        case(
            [8, 24, 2, 2],
            24,
            [5, 5],
            [1, 1],
            [1, 1],
            [2, 2, 2, 2],
            24,
            true,
        ),
        case(
            [8, 24, 4, 4],
            24,
            [3, 3],
            [1, 1],
            [1, 1],
            [1, 1, 1, 1],
            24,
            false,
        ),
        case(
            [2, 16, 7, 7],
            16,
            [5, 5],
            [2, 2],
            [1, 1],
            [2, 2, 2, 2],
            16,
            true,
        ),
        case(
            [2, 8, 9, 6],
            8,
            [3, 3],
            [2, 1],
            [2, 2],
            [2, 1, 1, 2],
            8,
            true,
        ),
        case(
            [1, 4, 1, 1],
            4,
            [3, 3],
            [1, 1],
            [1, 1],
            [1, 1, 1, 1],
            4,
            true,
        ),
        // Stride 2 on rows of 70: whole 16-wide de-interleaved chunks in im2col (a stem
        // Conv) and in the depthwise phase planes.
        case(
            [2, 3, 9, 70],
            5,
            [3, 3],
            [2, 2],
            [1, 1],
            [1, 1, 1, 1],
            1,
            true,
        ),
        case(
            [2, 6, 5, 70],
            6,
            [3, 3],
            [2, 2],
            [1, 1],
            [0, 1, 1, 0],
            6,
            false,
        ),
        // Patch embeddings (kernel = stride, no padding): trailing rows and columns past
        // the last whole patch are not read; grouped too.
        case([2, 3, 17, 18], 8, [4, 4], [4, 4], [1, 1], [0; 4], 1, true),
        case([3, 4, 8, 6], 6, [2, 3], [2, 3], [1, 1], [0; 4], 2, false),
        // Depthwise with a channel multiplier (mg = 3).
        case(
            [2, 4, 5, 5],
            12,
            [3, 3],
            [1, 2],
            [1, 1],
            [1, 0, 1, 1],
            4,
            true,
        ),
        // Pointwise 1×1 (one image, batched images), tiny planes.
        case(
            [1, 16, 3, 5],
            8,
            [1, 1],
            [1, 1],
            [1, 1],
            [0, 0, 0, 0],
            1,
            true,
        ),
        case(
            [8, 24, 2, 2],
            40,
            [1, 1],
            [1, 1],
            [1, 1],
            [0, 0, 0, 0],
            1,
            false,
        ),
        // Strided 1×1 and padded 1×1 take im2col.
        case(
            [2, 6, 5, 5],
            4,
            [1, 1],
            [2, 2],
            [1, 1],
            [0, 0, 0, 0],
            1,
            true,
        ),
        case(
            [2, 6, 3, 3],
            4,
            [1, 1],
            [1, 1],
            [1, 1],
            [1, 0, 0, 1],
            1,
            true,
        ),
        // Dense and grouped 3×3 / 7×7 with stride, dilation, asymmetric pads.
        case(
            [3, 6, 8, 7],
            10,
            [3, 3],
            [1, 1],
            [1, 1],
            [1, 1, 1, 1],
            1,
            true,
        ),
        case(
            [2, 6, 9, 9],
            8,
            [3, 2],
            [2, 1],
            [2, 3],
            [0, 2, 3, 1],
            2,
            false,
        ),
        case(
            [2, 3, 12, 12],
            4,
            [7, 7],
            [2, 2],
            [1, 1],
            [3, 3, 3, 3],
            1,
            true,
        ),
        case(
            [8, 16, 2, 2],
            8,
            [3, 3],
            [1, 1],
            [1, 1],
            [1, 1, 1, 1],
            4,
            true,
        ),
    ]
}

#[test]
fn conv_paths_match_direct_reference() {
    for (i, cs) in cases().iter().enumerate() {
        let d = max_diff(cs, 11 + i as u64);
        assert!(d < 1e-4, "case {i}: max abs diff {d}");
    }
}

#[test]
fn depthwise_split_over_threads_matches_reference() {
    // Large enough (2·64·16·16·9 taps) to split over the pool's threads.
    let cs = case(
        [2, 64, 16, 16],
        64,
        [3, 3],
        [1, 1],
        [1, 1],
        [1, 1, 1, 1],
        64,
        true,
    );
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .expect("a 3-thread pool");
    let d = pool.install(|| max_diff(&cs, 5));
    assert!(d < 1e-4, "max abs diff {d}");
}

/// Stems the few-channel kernel serves (`conv_few_channels.rs`): 3 channels at stride 2 and
/// 1, a partial last block of output channels, blocks that cross images, rows that end in a
/// partial vector, asymmetric padding, dilation, a 1-channel Conv; each on one thread and
/// split over three.
#[test]
fn few_channel_stems_match_reference() {
    use super::conv_depthwise_flat::FlatGeometry;
    use super::conv_few_channels::few_channels_suits;
    let stems = [
        case(
            [1, 3, 40, 36],
            32,
            [3, 3],
            [2, 2],
            [1, 1],
            [1, 1, 1, 1],
            1,
            true,
        ),
        case(
            [2, 3, 20, 33],
            12,
            [3, 3],
            [1, 1],
            [1, 1],
            [1, 1, 1, 1],
            1,
            true,
        ),
        case(
            [3, 2, 17, 40],
            20,
            [5, 5],
            [2, 2],
            [1, 1],
            [2, 1, 2, 3],
            1,
            false,
        ),
        case(
            [2, 1, 16, 37],
            8,
            [3, 3],
            [1, 1],
            [2, 2],
            [2, 2, 2, 2],
            1,
            true,
        ),
    ];
    let stems: Vec<Case> = stems
        .into_iter()
        .chain([
            // Many taps: ResNet's 7×7 stride-2 stem, 16 channels under 7×7 taps.
            case(
                [1, 3, 40, 40],
                16,
                [7, 7],
                [2, 2],
                [1, 1],
                [3, 3, 3, 3],
                1,
                true,
            ),
            case(
                [1, 16, 20, 40],
                24,
                [7, 7],
                [2, 2],
                [1, 1],
                [3, 3, 3, 3],
                1,
                true,
            ),
            // 1×1 Convs, run as one row of the whole plane: 17- and 29-wide rows (a row
            // boundary inside a vector), planes of two images, planes ending mid-vector.
            case(
                [2, 16, 9, 17],
                24,
                [1, 1],
                [1, 1],
                [1, 1],
                [0, 0, 0, 0],
                1,
                true,
            ),
            case(
                [1, 5, 7, 29],
                9,
                [1, 1],
                [1, 1],
                [1, 1],
                [0, 0, 0, 0],
                1,
                false,
            ),
        ])
        .collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .expect("a 3-thread pool");
    for (i, cs) in stems.iter().enumerate() {
        let [_, c, h, wd] = cs.x;
        let oh = (h + cs.pads[0] + cs.pads[2] - cs.dil[0] * (cs.k[0] - 1) - 1) / cs.stride[0] + 1;
        let ow = (wd + cs.pads[1] + cs.pads[3] - cs.dil[1] * (cs.k[1] - 1) - 1) / cs.stride[1] + 1;
        let geo = FlatGeometry {
            input: [h, wd],
            output: [oh, ow],
            kernel: cs.k,
            strides: cs.stride,
            dilations: cs.dil,
            pads: [cs.pads[0], cs.pads[1]],
        };
        let taps = cs.k[0] * cs.k[1];
        if !few_channels_suits(c, cs.m, cs.g, geo.output[1], taps) {
            let isa = crate::lanes16::lanes_isa();
            let avx2_pointwise = isa == Some(crate::lanes16::LanesIsa::Avx2) && taps == 1;
            assert!(
                isa.is_none() || avx2_pointwise,
                "case {i} is a stem it serves"
            );
            eprintln!("skipped case {i}: not a Conv the few-channel kernel serves here");
            continue;
        }
        let d = max_diff(cs, 40 + i as u64);
        assert!(d < 1e-4, "case {i}: max abs diff {d}");
        let d = pool.install(|| max_diff(cs, 40 + i as u64));
        assert!(d < 1e-4, "case {i} on 3 threads: max abs diff {d}");
    }
}
