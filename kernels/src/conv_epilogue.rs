//! The epilogue of a fused Conv ([`crate::FusedOp::ConvEpilogue`]): the Conv's bias (where
//! the product was stored without it), a per-channel scale and shift (an inference
//! BatchNormalization left unfolded), a residual add and an activation, applied to each
//! block of Conv output as soon as the Conv has finished it (one output plane of a
//! depthwise Conv, one group's rows of a GEMM, one image's planes of a batched GEMM), while
//! it is still in cache, in one pass over pieces that fit in L1.
//!
//! Every activation is the arithmetic of its unfused kernel (`unary.rs`), element for
//! element, and the scale, shift and residual are the single roundings of the unfused
//! `Mul` and `Add`s, so a fused Conv equals the unfused chain bit for bit. (Folding the
//! scale into the weights would save the multiply but round differently.)
#[cfg(target_arch = "x86_64")]
use super::conv_epilogue_lanes::piece as vector_piece;
#[cfg(target_arch = "x86_64")]
use super::lanes16::{lanes_isa, LanesIsa};
use super::simd::{self, vectorized};
use super::unary::{hi_then, relu};

/// An activation that follows a Conv.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ConvActivation {
    /// `max(0, x)` (NaN passes through, as the Relu kernel).
    Relu,
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `x · sigmoid(x)` (SiLU / swish).
    Silu,
    /// Clamp to `[min, max]` (absent bound = unbounded; ReLU6 is `Clip(0, 6)`).
    Clip {
        /// Lower bound.
        min: Option<f32>,
        /// Upper bound.
        max: Option<f32>,
    },
    /// `max(0, min(1, alpha·x + beta))`, times x when `swish` (HardSwish).
    HardSigmoid {
        /// Slope.
        alpha: f32,
        /// Offset.
        beta: f32,
        /// HardSwish.
        swish: bool,
    },
}

/// What runs on each finished block of Conv output:
/// `act((((y + bias[ch]) · scale[ch]) + shift[ch]) + residual)`, each part optional (an
/// inference BatchNormalization the exporter left unfolded is the per-channel scale and
/// shift).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Epilogue<'a> {
    /// The Conv's own bias, one addend per output channel, added first: set by a Conv whose
    /// product was stored without it (the output is then `(product + bias)`, rounded once,
    /// as a product added to a stored bias).
    pub bias: Option<&'a [f32]>,
    /// One factor per output channel.
    pub scale: Option<&'a [f32]>,
    /// One addend per output channel.
    pub shift: Option<&'a [f32]>,
    /// A tensor of the Conv output's shape added to it (NCHW, the same flat layout).
    pub residual: Option<&'a [f32]>,
    /// The activation.
    pub act: Option<ConvActivation>,
    /// Output plane size and channel count (set by the Conv; they place the per-channel
    /// parameters).
    pub plane: usize,
    pub channels: usize,
}

impl Epilogue<'_> {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.bias.is_none()
            && self.scale.is_none()
            && self.shift.is_none()
            && self.residual.is_none()
            && self.act.is_none()
    }

    /// Applies the epilogue to `dst`, the output elements starting at flat offset `at`
    /// (whole planes: `at` and `dst.len()` are multiples of the plane size).
    ///
    /// One pass: `dst` is taken in pieces of at most [`PIECE`] elements (within one plane
    /// when there is a per-channel scale or shift), and every part of the epilogue runs on a
    /// piece while it is in L1, rather than one pass over the whole block per part (a
    /// residual Add then a ReLU over a 3 MB output read and wrote it twice from L3).
    pub fn apply(&self, dst: &mut [f32], at: usize) {
        let per_channel = (self.bias.is_some() || self.scale.is_some() || self.shift.is_some())
            && self.plane > 0
            && self.channels > 0;
        // With AVX-512 and no activation, ReLU or Clip, each part is an explicit
        // 16-lane pass over the piece (`conv_epilogue_lanes.rs`); left to the loop
        // vectoriser, in-place loops over pieces of a few hundred elements ran their tails 8
        // lanes at a time through masks (a ReLU took as long as a 16-channel 1×1 Conv).
        #[cfg(target_arch = "x86_64")]
        let fused = lanes_isa().filter(|&isa| match (isa, self.act) {
            (LanesIsa::Avx512, None | Some(ConvActivation::Relu | ConvActivation::Clip { .. })) => {
                true
            }
            // On AVX2 the loop vectoriser's bias, scale, shift, residual and Clip passes
            // ran as fast or faster (a bias alone 7–11 % faster); its ReLU pass not (a ReLU
            // after a 1×1 Conv `[72, 16]` over two 16×16 maps: 40 against 26 µs in all).
            (LanesIsa::Avx2, Some(ConvActivation::Relu)) => true,
            _ => false,
        });
        vectorized(
            #[inline(always)]
            || {
                let mut off = 0;
                while off < dst.len() {
                    let p = at + off;
                    let mut len = (dst.len() - off).min(PIECE);
                    if per_channel {
                        len = len.min(self.plane - p % self.plane);
                    }
                    let piece = &mut dst[off..off + len];
                    #[cfg(target_arch = "x86_64")]
                    if let Some(isa) = fused {
                        let ch = (p / self.plane.max(1)) % self.channels.max(1);
                        let at_ch = |v: Option<&[f32]>| v.filter(|_| per_channel).map(|v| v[ch]);
                        let r = self.residual.map(|r| &r[p..p + len]);
                        let k = (at_ch(self.bias), at_ch(self.scale), at_ch(self.shift));
                        // SAFETY: `fused` names the instruction set the CPU has.
                        unsafe { vector_piece(isa, piece, k, r, self.act) };
                        off += len;
                        continue;
                    }
                    if per_channel {
                        // Mul(y, scale) then Add(·, shift): the unfused ops' roundings.
                        let ch = (p / self.plane) % self.channels;
                        if let Some(b) = self.bias {
                            let v = b[ch];
                            piece.iter_mut().for_each(|x| *x += v);
                        }
                        if let Some(s) = self.scale {
                            let v = s[ch];
                            piece.iter_mut().for_each(|x| *x *= v);
                        }
                        if let Some(t) = self.shift {
                            let v = t[ch];
                            piece.iter_mut().for_each(|x| *x += v);
                        }
                    }
                    if let Some(r) = self.residual {
                        let r = &r[p..p + len];
                        piece.iter_mut().zip(r).for_each(|(d, &v)| *d += v);
                    }
                    if let Some(act) = self.act {
                        activate_in_place(act, piece);
                    }
                    off += len;
                }
            },
        );
    }
}

/// Elements of one piece of an epilogue pass (8 KB: it and its residual stay in L1).
const PIECE: usize = 2048;

/// Applies `act` in place, with the arithmetic of the unfused kernel; inlined into the
/// caller's vectorised context.
#[inline(always)]
fn activate_in_place(act: ConvActivation, dst: &mut [f32]) {
    match act {
        ConvActivation::Relu => dst.iter_mut().for_each(|a| *a = relu(*a)),
        ConvActivation::Sigmoid => dst.iter_mut().for_each(|a| *a = simd::sigmoid(*a)),
        ConvActivation::Silu => dst.iter_mut().for_each(|a| *a *= simd::sigmoid(*a)),
        ConvActivation::Clip { min, max } => {
            let lo = min.unwrap_or(f32::NEG_INFINITY);
            let hi = max.unwrap_or(f32::INFINITY);
            dst.iter_mut()
                .for_each(|a| *a = hi_then(if *a < lo { lo } else { *a }, hi));
        }
        ConvActivation::HardSigmoid { alpha, beta, swish } => {
            let hs = |a: f32| (alpha * a + beta).clamp(0.0, 1.0);
            if swish {
                dst.iter_mut().for_each(|a| *a *= hs(*a));
            } else {
                dst.iter_mut().for_each(|a| *a = hs(*a));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ConvActivation;
    use crate::{eval, eval_fused, FusedOp};
    use tessera_ir::op::*;
    use tessera_ir::{Op, Tensor};

    /// Deterministic values in [-4, 4) (so Relu, Clip and HardSigmoid hit both bounds).
    fn rand(shape: &[usize], seed: u64) -> Tensor {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let n = shape.iter().product();
        let v = (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 8.0 - 4.0
            })
            .collect();
        Tensor::f32(shape.to_vec(), v)
    }

    fn run(op: Op, ins: &[&Tensor]) -> Tensor {
        eval(&op, ins).unwrap().remove(0)
    }

    /// The unfused op computing `act`.
    fn act_op(act: ConvActivation) -> Op {
        let unary = |kind| Op::Unary(UnaryAttrs { kind });
        match act {
            ConvActivation::Relu => unary(UnaryOp::Relu),
            ConvActivation::Sigmoid => unary(UnaryOp::Sigmoid),
            ConvActivation::Silu => unary(UnaryOp::Silu),
            ConvActivation::Clip { min, max } => Op::Clip(ClipAttrs { min, max }),
            ConvActivation::HardSigmoid { alpha, beta, swish } => {
                Op::HardSigmoid(HardSigmoidAttrs { alpha, beta, swish })
            }
        }
    }

    const ACTS: [Option<ConvActivation>; 7] = [
        None,
        Some(ConvActivation::Relu),
        Some(ConvActivation::Sigmoid),
        Some(ConvActivation::Silu),
        Some(ConvActivation::Clip {
            min: Some(0.0),
            max: Some(6.0),
        }),
        Some(ConvActivation::Clip {
            min: None,
            max: Some(0.5),
        }),
        Some(ConvActivation::HardSigmoid {
            alpha: 1.0 / 6.0,
            beta: 0.5,
            swish: true,
        }),
    ];

    fn bits(t: &Tensor) -> Vec<u32> {
        t.as_f32().unwrap().iter().map(|v| v.to_bits()).collect()
    }

    /// Every epilogue (per-channel scale and/or shift or none, residual or not, each
    /// activation, HardSigmoid with and without the swish product) on one Conv equals the
    /// unfused Conv, Mul, Add, Add and activation ops bit for bit; returns the cases run.
    /// With `packed`, the Conv reads W packed for the direct kernel, fused and unfused.
    fn check(x: &[usize], w: &[usize], attrs: &ConvAttrs, seed: u64, packed: bool) -> usize {
        let (xt, wt, bt) = (rand(x, seed), rand(w, seed + 1), rand(&[w[0]], seed + 2));
        let packed = packed.then(|| {
            let g = attrs.groups(x[1]);
            let pw = crate::PackedConvWeight::pack(w, wt.as_f32().unwrap(), g).unwrap();
            crate::HeldConvWeight::Packed(std::sync::Arc::new(pw))
        });
        let conv_op = |scale, shift, residual, act| FusedOp::ConvEpilogue {
            attrs: attrs.clone(),
            held: packed.clone(),
            bias: true,
            scale,
            shift,
            residual,
            act,
        };
        let y = match packed {
            Some(_) => eval_fused(&conv_op(false, false, false, None), &[&xt, &bt]).unwrap(),
            None => run(Op::Conv(attrs.clone()), &[&xt, &wt, &bt]),
        };
        let r = rand(&y.shape, seed + 3);
        // BatchNormalization's per-channel factor and addend, [C, 1, 1] as imported.
        let s = rand(&[w[0], 1, 1], seed + 4);
        let t = rand(&[w[0], 1, 1], seed + 5);
        let mut acts = ACTS.to_vec();
        acts.push(Some(ConvActivation::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
            swish: false,
        }));
        let bin = |kind| Op::Binary(BinaryAttrs { kind });
        let mut checked = 0;
        for (scale, shift) in [(false, false), (true, false), (false, true), (true, true)] {
            for residual in [false, true] {
                for &act in &acts {
                    if !(scale || shift || residual) && act.is_none() {
                        continue;
                    }
                    let mut want = y.clone();
                    let mut ins = match packed {
                        Some(_) => vec![&xt, &bt],
                        None => vec![&xt, &wt, &bt],
                    };
                    if scale {
                        want = run(bin(BinaryOp::Mul), &[&want, &s]);
                        ins.push(&s);
                    }
                    if shift {
                        want = run(bin(BinaryOp::Add), &[&want, &t]);
                        ins.push(&t);
                    }
                    if residual {
                        want = run(bin(BinaryOp::Add), &[&want, &r]);
                        ins.push(&r);
                    }
                    if let Some(a) = act {
                        want = run(act_op(a), &[&want]);
                    }
                    let op = conv_op(scale, shift, residual, act);
                    let got = eval_fused(&op, &ins).unwrap();
                    assert_eq!(got.shape, want.shape);
                    let what = (scale, shift, residual, act);
                    assert_eq!(bits(&got), bits(&want), "{x:?} {w:?} {what:?}");
                    checked += 1;
                }
            }
        }
        checked
    }

    fn attrs(stride: usize, pad: usize, group: usize) -> ConvAttrs {
        ConvAttrs {
            strides: vec![stride; 2],
            dilations: vec![1; 2],
            pads: vec![pad; 4],
            group,
            depthwise: false,
        }
    }

    #[test]
    fn vector_epilogue_keeps_nan_signed_zero_and_bounds_of_the_scalar_ops() {
        use super::{hi_then, relu, Epilogue};
        // Lengths around whole vectors (masked tails), values that tell the formulations
        // apart: NaN, ±0, ±inf, the Clip bounds themselves.
        let special = [
            f32::NAN,
            -0.0,
            0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            6.0,
            -6.0,
            0.5,
            1e-40,
            -1e-40,
            3.25,
            -2.5,
        ];
        // The activations the vector path runs (the others keep the scalar loops).
        let acts = ACTS
            .into_iter()
            .filter(|a| {
                matches!(
                    a,
                    None | Some(ConvActivation::Relu | ConvActivation::Clip { .. })
                )
            })
            .chain([Some(ConvActivation::Clip {
                min: Some(-0.0),
                max: None,
            })]);
        let (bias, scale, shift) = ([0.0f32, -0.0], [1.5f32, -1.0], [-0.0f32, 2.0]);
        for n in [0usize, 1, 15, 16, 17, 33, 40] {
            let y: Vec<f32> = (0..2 * n).map(|i| special[i % special.len()]).collect();
            let r: Vec<f32> = (0..2 * n)
                .map(|i| special[(i * 7 + 3) % special.len()])
                .collect();
            for act in acts.clone() {
                for parts in 0..16u32 {
                    let epi = Epilogue {
                        bias: (parts & 1 != 0).then_some(&bias[..]),
                        scale: (parts & 2 != 0).then_some(&scale[..]),
                        shift: (parts & 4 != 0).then_some(&shift[..]),
                        residual: (parts & 8 != 0).then_some(&r[..]),
                        act,
                        plane: n,
                        channels: 2,
                    };
                    let mut got = y.clone();
                    epi.apply(&mut got, 0);
                    let want: Vec<f32> = (0..2 * n)
                        .map(|i| {
                            let ch = i / n.max(1);
                            let mut v = y[i];
                            if let Some(b) = epi.bias {
                                v += b[ch];
                            }
                            if let Some(s) = epi.scale {
                                v *= s[ch];
                            }
                            if let Some(t) = epi.shift {
                                v += t[ch];
                            }
                            if let Some(r) = epi.residual {
                                v += r[i];
                            }
                            match act {
                                Some(ConvActivation::Relu) => relu(v),
                                Some(ConvActivation::Clip { min, max }) => {
                                    let lo = min.unwrap_or(f32::NEG_INFINITY);
                                    let hi = max.unwrap_or(f32::INFINITY);
                                    hi_then(if v < lo { lo } else { v }, hi)
                                }
                                _ => v,
                            }
                        })
                        .collect();
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    // NaN payloads may differ between formulations; NaN-ness may not.
                    let canon = |v: &[f32]| {
                        v.iter()
                            .map(|x| if x.is_nan() { f32::NAN } else { *x })
                            .collect::<Vec<_>>()
                    };
                    assert_eq!(
                        bits(&canon(&got)),
                        bits(&canon(&want)),
                        "n {n} act {act:?} parts {parts:#b}"
                    );
                }
            }
        }
    }

    #[test]
    fn fused_epilogues_equal_the_unfused_ops_bitwise_on_every_conv_path() {
        // 1×1 planes (strided GEMM), depthwise (plane by plane; channels innermost),
        // per-image GEMM (planes over 2048 columns), batched GEMM, pointwise per image,
        // grouped GEMM, a 3-channel stem (the few-channel kernel where the CPU has AVX-512:
        // blocks of channels across images, rows of 18 columns).
        let cases: [(&[usize], &[usize], ConvAttrs); 8] = [
            (&[3, 12, 1, 1], &[20, 6, 1, 1], attrs(1, 0, 2)),
            (&[2, 6, 5, 5], &[6, 1, 3, 3], attrs(1, 1, 6)),
            (&[2, 12, 4, 4], &[12, 1, 5, 5], attrs(1, 2, 12)),
            (&[2, 3, 48, 48], &[5, 3, 3, 3], attrs(1, 1, 1)),
            (&[3, 4, 6, 6], &[8, 4, 3, 3], attrs(2, 1, 1)),
            (&[2, 4, 48, 48], &[6, 4, 1, 1], attrs(1, 0, 1)),
            (&[2, 4, 7, 7], &[6, 2, 3, 3], attrs(1, 1, 2)),
            (&[2, 3, 20, 36], &[12, 3, 3, 3], attrs(2, 1, 1)),
        ];
        for (i, (x, w, a)) in cases.iter().enumerate() {
            assert_eq!(check(x, w, a, 10 * i as u64, false), 63);
        }
    }

    #[test]
    fn fused_epilogues_over_packed_weights_equal_the_packed_conv_then_the_ops_bitwise() {
        if !crate::direct_available() {
            println!("skipped: the direct Conv needs AVX-512F or AVX2");
            return;
        }
        // Two images of 30×30 (blocks of positions spanning images; on AVX2, where the
        // direct Conv does not take large planes, of 3×3) and 70 channels (a partial second
        // panel), strided, grouped.
        let avx512 = crate::lanes16::lanes_isa() == Some(crate::lanes16::LanesIsa::Avx512);
        let first: &[usize] = if avx512 {
            &[2, 32, 30, 30]
        } else {
            &[2, 32, 3, 3]
        };
        let cases: [(&[usize], &[usize], ConvAttrs); 3] = [
            (first, &[70, 32, 3, 3], attrs(1, 1, 1)),
            (&[2, 8, 6, 6], &[24, 8, 3, 3], attrs(2, 1, 1)),
            (&[2, 16, 7, 7], &[40, 8, 3, 3], attrs(1, 1, 2)),
        ];
        for (i, (x, w, a)) in cases.iter().enumerate() {
            assert!(crate::direct_suits(x, w, a));
            assert_eq!(check(x, w, a, 10 * i as u64, true), 63);
        }
    }

    #[test]
    fn depthwise_split_over_threads_applies_the_epilogue_to_every_plane() {
        // 2·32 planes of 32×32 with 9 taps: above the depthwise loop's threshold for
        // splitting planes over the pool's threads.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let n =
            pool.install(|| check(&[2, 32, 32, 32], &[32, 1, 3, 3], &attrs(1, 1, 32), 7, false));
        assert_eq!(n, 63);
    }

    #[test]
    fn a_residual_of_another_shape_is_refused() {
        let (x, w) = (rand(&[1, 2, 4, 4], 1), rand(&[2, 2, 3, 3], 2));
        let op = FusedOp::ConvEpilogue {
            attrs: attrs(1, 1, 1),
            held: None,
            bias: false,
            scale: false,
            shift: false,
            residual: true,
            act: None,
        };
        // Same element count, other shape: refused after the Conv.
        let err = eval_fused(&op, &[&x, &w, &rand(&[1, 2, 2, 8], 3)]).unwrap_err();
        assert!(err.to_string().contains("residual"), "{err}");
        let err = eval_fused(&op, &[&x, &w, &rand(&[1, 2, 4, 3], 3)]).unwrap_err();
        assert!(err.to_string().contains("residual"), "{err}");
    }
}
