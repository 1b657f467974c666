//! Tests of the blocked depthwise Conv (`conv_depthwise_blocked.rs`).
use super::{blocked_suits, blocked_with};
use crate::conv_depthwise::tests::values;
use crate::conv_depthwise_flat::tests::reference;
use crate::conv_depthwise_flat::FlatGeometry;
use crate::conv_epilogue::Epilogue;
use crate::lanes16::{lanes_isa, LanesIsa};

#[test]
fn blocks_of_sixteen_planes_match_the_definition_bitwise() {
    // Every instruction set this CPU has (AVX2 on AVX-512 machines too).
    let isas: Vec<LanesIsa> = match lanes_isa() {
        Some(LanesIsa::Avx512) => vec![LanesIsa::Avx512, LanesIsa::Avx2],
        Some(LanesIsa::Avx2) => vec![LanesIsa::Avx2],
        None => {
            eprintln!("skipped: the blocked depthwise kernel needs AVX-512F or AVX2");
            return;
        }
    };
    // (input, kernel, strides, dilations, begin pads, end pads)
    type Case = (
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [usize; 2],
    );
    let cases: [Case; 10] = [
        // Small planes through the whole-plane staging buffer: 3×3 (registers), a
        // partial last block of positions, stride 2 on both axes.
        ([14, 14], [3, 3], [1, 1], [1, 1], [1, 1], [1, 1]),
        ([7, 7], [3, 3], [1, 1], [1, 1], [1, 1], [1, 1]),
        ([28, 28], [3, 3], [2, 2], [1, 1], [1, 1], [1, 1]),
        ([9, 11], [5, 5], [2, 2], [1, 1], [2, 2], [2, 2]),
        // Rows of whole 16-column blocks, row by row however small the plane.
        ([12, 32], [3, 3], [2, 2], [1, 1], [1, 1], [1, 1]),
        // Larger planes row by row: whole 16-column blocks and a partial one.
        ([40, 44], [3, 3], [2, 2], [1, 1], [0, 1], [1, 1]),
        ([33, 35], [5, 5], [1, 1], [1, 1], [2, 2], [2, 2]),
        // Any other kernel (taps loaded as they go), dilation, uneven strides and pads.
        ([12, 12], [7, 7], [1, 1], [2, 1], [3, 0], [6, 3]),
        ([10, 13], [3, 2], [2, 3], [1, 2], [0, 1], [2, 0]),
        ([1, 50], [1, 5], [1, 2], [1, 1], [0, 2], [0, 2]),
    ];
    for (input, kernel, strides, dilations, pb, pe) in cases {
        let out_ext = |a: usize| {
            (input[a] + pb[a] + pe[a] - (kernel[a] - 1) * dilations[a] - 1) / strides[a] + 1
        };
        let output = [out_ext(0), out_ext(1)];
        let geo = FlatGeometry {
            input,
            output,
            kernel,
            strides,
            dilations,
            pads: pb,
        };
        // Two images of 21 channels: blocks that cross the images' boundary and a last
        // block of 10 planes.
        let (c, n) = (21, 2);
        let planes = n * c;
        let (p_in, p_out) = (input[0] * input[1], output[0] * output[1]);
        let kl = kernel[0] * kernel[1];
        let x = values(planes * p_in, 1);
        let w = values(c * kl, 2);
        let b = values(c, 3);
        // A residual epilogue: each plane must receive its own part.
        let res = values(planes * p_out, 4);
        let epi = Epilogue {
            residual: Some(&res),
            plane: p_out,
            channels: c,
            ..Epilogue::default()
        };
        for &isa in &isas {
            let out = blocked_with(Some(isa), &geo, &x, &w, Some(&b), (planes, c), epi);
            assert_eq!(out.len(), planes * p_out);
            check_planes(&out, (&geo, &x, &w, &b, &res), (c, planes), isa);
        }
    }
}

/// Every plane of `out` has the definition's bits plus its residual.
fn check_planes(
    out: &[f32],
    (geo, x, w, b, res): (&FlatGeometry, &[f32], &[f32], &[f32], &[f32]),
    (c, planes): (usize, usize),
    isa: LanesIsa,
) {
    let p_in = geo.input[0] * geo.input[1];
    let p_out = geo.output[0] * geo.output[1];
    for plane in 0..planes {
        let img = plane / c;
        let mut want = reference(geo, &x[img * c * p_in..], w, b, plane % c, 1);
        want.iter_mut()
            .zip(&res[plane * p_out..])
            .for_each(|(v, r)| *v += r);
        let got = &out[plane * p_out..][..p_out];
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(got), bits(&want), "{geo:?} plane {plane} {isa:?}");
    }
}

#[test]
fn the_row_path_and_mostly_padded_planes_are_left_to_the_other_kernels() {
    let geo = |input: [usize; 2], output: [usize; 2], k: usize, s: usize, p: usize| FlatGeometry {
        input,
        output,
        kernel: [k, k],
        strides: [s, s],
        dilations: [1, 1],
        pads: [p, p],
    };
    let isa = lanes_isa();
    let avx2 = isa == Some(LanesIsa::Avx2);
    // 3×3 on 56-wide rows: the row path on AVX-512 (there is none on AVX2).
    assert_eq!(blocked_suits(&geo([56, 56], [56, 56], 3, 1, 1), 144), avx2);
    // 5×5 on 2×2 planes: 4 of 25 taps live.
    assert!(!blocked_suits(&geo([2, 2], [2, 2], 5, 1, 2), 4608));
    // Fewer planes than a block.
    assert!(!blocked_suits(&geo([14, 14], [14, 14], 3, 1, 1), 15));
    // 3×3 on 2×2 planes: 4 inputs a plane, partial blocks only.
    assert!(!blocked_suits(&geo([2, 2], [2, 2], 3, 1, 1), 2304));
    // 32×32 outputs at stride 1: the row path on AVX-512, planes 4 KB apart on AVX2.
    assert!(!blocked_suits(&geo([32, 32], [32, 32], 3, 1, 1), 64));
    // Served wherever the kernel runs: 4×4 planes under 5×5 taps, stride 2.
    let served = isa.is_some();
    assert_eq!(blocked_suits(&geo([4, 4], [4, 4], 5, 1, 2), 576), served);
    assert_eq!(
        blocked_suits(&geo([56, 56], [28, 28], 3, 2, 1), 144),
        served
    );
}
