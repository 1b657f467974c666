//! Resize: <https://onnx.ai/onnx/operators/onnx__Resize.html> (11..=28): nearest, linear and
//! cubic modes, every coordinate transformation but opset 11's `tf_half_pixel_for_nn`,
//! antialias, `axes` and `keep_aspect_ratio_policy` (18+). `roi`, `scales` and `sizes` must
//! be constants; they become static output extents and scales. Axes that stay the same
//! (scale 1, same extent, whole region) are not resized, as the ONNX reference skips them.
use super::{entry, Lowered, NodeCx, OpEntry};
use crate::onnx::ImportError;
use tessera_ir::op::{ResizeAttrs, ResizeCoord, ResizeMode, ResizeNearest};
use tessera_ir::Op;

pub(super) const OPS: &[OpEntry] = &[entry("Resize", 11, resize)];

/// An optional constant input that an empty tensor also leaves out (opset 11 needs `roi`
/// and `scales` given, empty when unused).
fn given(cx: &NodeCx, i: usize) -> Result<Option<Vec<f64>>, ImportError> {
    match cx.opt_input(i) {
        None => Ok(None),
        Some(v) if v.shape.contains(&0) => Ok(None),
        Some(_) => Ok(Some(cx.const_input(i)?.to_f64_vec())),
    }
}

/// `math.isclose` with Python's default tolerance (the reference's identity test).
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn resize(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let x = cx.input(0)?.shape.to_vec();
    let rank = x.len();
    let mode = match cx.attr_str("mode").as_deref() {
        None | Some("nearest") => ResizeMode::Nearest,
        Some("linear") => ResizeMode::Linear,
        Some("cubic") => ResizeMode::Cubic,
        Some(other) => return Err(cx.err(format!("unknown mode '{other}'"))),
    };
    let coord = match cx.attr_str("coordinate_transformation_mode").as_deref() {
        None | Some("half_pixel") => ResizeCoord::HalfPixel,
        Some("half_pixel_symmetric") => ResizeCoord::HalfPixelSymmetric,
        Some("pytorch_half_pixel") => ResizeCoord::PytorchHalfPixel,
        Some("align_corners") => ResizeCoord::AlignCorners,
        Some("asymmetric") => ResizeCoord::Asymmetric,
        Some("tf_crop_and_resize") => ResizeCoord::TfCropAndResize,
        Some("tf_half_pixel_for_nn") => {
            return Err(cx.unsupported("coordinate_transformation_mode 'tf_half_pixel_for_nn' (opset 11 only) is not supported",
            ))
        }
        Some(other) => {
            return Err(cx.err(format!(
                "unknown coordinate_transformation_mode '{other}'"
            )))
        }
    };
    let nearest = match cx.attr_str("nearest_mode").as_deref() {
        None | Some("round_prefer_floor") => ResizeNearest::RoundPreferFloor,
        Some("round_prefer_ceil") => ResizeNearest::RoundPreferCeil,
        Some("floor") => ResizeNearest::Floor,
        Some("ceil") => ResizeNearest::Ceil,
        Some(other) => return Err(cx.err(format!("unknown nearest_mode '{other}'"))),
    };
    let antialias = cx.attr_int("antialias", 0) != 0;
    if antialias && mode == ResizeMode::Nearest {
        return Err(cx.err("antialias applies to linear and cubic modes only"));
    }
    let axes = match cx.attr_ints("axes") {
        Some(a) => {
            let v: Vec<usize> = a
                .iter()
                .map(|&k| cx.axis(k, rank))
                .collect::<Result<_, _>>()?;
            if (1..v.len()).any(|i| v[..i].contains(&v[i])) {
                return Err(cx.err(format!("repeated axis in axes {a:?}")));
            }
            v
        }
        None => (0..rank).collect(),
    };
    let n = axes.len();
    // Full-rank scales, sizes and region.
    let mut scales = vec![1.0f64; rank];
    let mut sizes = x.clone();
    let mut roi: Vec<f64> = [vec![0.0; rank], vec![1.0; rank]].concat();
    if coord == ResizeCoord::TfCropAndResize {
        let r = given(cx, 1)?.ok_or_else(|| cx.err("tf_crop_and_resize needs the roi input"))?;
        if r.len() != 2 * n {
            return Err(cx.err(format!("roi {r:?} needs {} entries", 2 * n)));
        }
        for (i, &a) in axes.iter().enumerate() {
            (roi[a], roi[rank + a]) = (r[i], r[n + i]);
        }
    }
    match (given(cx, 2)?, given(cx, 3)?) {
        (Some(_), Some(_)) => return Err(cx.err("give scales or sizes, not both")),
        (None, None) => return Err(cx.err("needs scales or sizes")),
        (Some(s), None) => {
            if s.len() != n {
                return Err(cx.err(format!("scales {s:?} need {n} entries")));
            }
            for (i, &a) in axes.iter().enumerate() {
                if !(s[i].is_finite() && s[i] > 0.0) {
                    return Err(cx.err(format!("scale {} must be finite and positive", s[i])));
                }
                scales[a] = s[i];
                sizes[a] = (s[i] * x[a] as f64).floor() as usize;
            }
        }
        (None, Some(z)) => {
            if z.len() != n || z.iter().any(|&v| v < 0.0) {
                return Err(cx.err(format!("sizes {z:?} need {n} entries >= 0")));
            }
            for (i, &a) in axes.iter().enumerate() {
                if x[a] == 0 {
                    return Err(cx.err(format!("axis {a} of X {x:?} is empty")));
                }
                sizes[a] = z[i] as usize;
                scales[a] = z[i] / x[a] as f64;
            }
            let policy = cx.attr_str("keep_aspect_ratio_policy");
            let pick = match policy.as_deref() {
                None | Some("stretch") => None,
                Some("not_larger") => Some(f64::min as fn(f64, f64) -> f64),
                Some("not_smaller") => Some(f64::max as fn(f64, f64) -> f64),
                Some(other) => {
                    return Err(cx.err(format!("unknown keep_aspect_ratio_policy '{other}'")))
                }
            };
            if let Some(pick) = pick.filter(|_| n > 0) {
                let s = axes.iter().map(|&a| scales[a]).reduce(pick).unwrap_or(1.0);
                for &a in &axes {
                    scales[a] = s;
                    sizes[a] = (s * x[a] as f64 + 0.5) as usize;
                }
            }
        }
    }
    let resized: Vec<usize> = (0..rank)
        .filter(|&a| {
            !(close(scales[a], 1.0)
                && sizes[a] == x[a]
                && (coord != ResizeCoord::TfCropAndResize
                    || (close(roi[a], 0.0) && close(roi[rank + a], 1.0))))
        })
        .collect();
    let crop = coord == ResizeCoord::TfCropAndResize;
    let attrs = ResizeAttrs {
        mode,
        coord,
        nearest,
        cubic_a: cx.attr_float("cubic_coeff_a", -0.75),
        exclude_outside: cx.attr_int("exclude_outside", 0) != 0,
        antialias,
        extrapolation_value: cx.attr_float("extrapolation_value", 0.0),
        sizes: resized.iter().map(|&a| sizes[a]).collect(),
        scales: resized.iter().map(|&a| scales[a]).collect(),
        roi: if crop {
            let starts = resized.iter().map(|&a| roi[a]);
            starts
                .chain(resized.iter().map(|&a| roi[rank + a]))
                .collect()
        } else {
            Vec::new()
        },
        axes: resized,
    };
    Ok(Lowered::op(Op::Resize(attrs), &[0]))
}
