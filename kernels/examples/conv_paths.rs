//! Times one Conv (with a ReLU epilogue) on the im2col path and on the direct kernel over
//! weights packed once, alternating, and prints the median of each with its GFLOP/s: the
//! measurements behind `direct_suits` (docs/benchmarks.md). One thread. A depthwise Conv
//! (GROUP = C = M) has no direct path: the first figure is then its own kernel's
//! (`conv_depthwise_rows.rs` or the phase-plane path), output allocation included.
//!
//! `cargo run --release -p tessera-kernels --example conv_paths -- N C H W M KH KW STRIDE PAD
//! GROUP REPEATS`
use std::sync::Arc;
use std::time::Instant;
use tessera_ir::op::ConvAttrs;
use tessera_ir::Tensor;
use tessera_kernels::{
    direct_suits, eval_fused, ConvActivation, FusedOp, HeldConvWeight, PackedConvWeight,
};

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

fn main() -> Result<(), String> {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|v| v.parse().map_err(|e| format!("'{v}': {e}")))
        .collect::<Result<_, _>>()?;
    let [n, c, h, w, m, kh, kw, stride, pad, group, reps] = a[..] else {
        return Err("usage: conv_paths N C H W M KH KW STRIDE PAD GROUP REPEATS".into());
    };
    if group == 0 || c % group != 0 || m % group != 0 || reps == 0 {
        return Err(format!(
            "C {c} and M {m} must be multiples of GROUP {group} > 0"
        ));
    }
    let attrs = ConvAttrs {
        strides: vec![stride; 2],
        dilations: vec![1; 2],
        pads: vec![pad; 4],
        group,
        depthwise: false,
    };
    let x = Tensor::f32(vec![n, c, h, w], values(n * c * h * w, 1));
    let ws = vec![m, c / group, kh, kw];
    let wv = values(ws.iter().product(), 2);
    let wt = Tensor::f32(ws.clone(), wv.clone());
    let b = Tensor::f32(vec![m], values(m, 3));
    let packed = Arc::new(PackedConvWeight::pack(&ws, &wv, group).map_err(|e| e.to_string())?);
    let op = |held| FusedOp::ConvEpilogue {
        attrs: attrs.clone(),
        held,
        bias: true,
        scale: false,
        shift: false,
        residual: false,
        act: Some(ConvActivation::Relu),
    };
    let mut paths = vec![(op(None), vec![&x, &wt, &b])];
    if !(group == c && group == m) {
        paths.push((op(Some(HeldConvWeight::Packed(packed))), vec![&x, &b]));
    }
    let mut times = vec![Vec::new(); paths.len()];
    let mut flops = 0.0;
    for _ in 0..reps {
        for (i, (op, ins)) in paths.iter().enumerate() {
            let t = Instant::now();
            let y = eval_fused(op, ins).map_err(|e| e.to_string())?;
            times[i].push(t.elapsed().as_secs_f64() * 1e6);
            let outputs: usize = y.shape.iter().product();
            flops = 2.0 * (outputs * (c / group) * kh * kw) as f64;
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let us: Vec<f64> = times.iter_mut().map(median).collect();
    let what = format!("X [{n}, {c}, {h}, {w}] W {ws:?} stride {stride} pad {pad} group {group}");
    match us[..] {
        [im2col, direct] => println!(
            "{what}: im2col {im2col:.1} us ({:.0} GFLOP/s), direct {direct:.1} us \
             ({:.0} GFLOP/s), direct_suits {}",
            flops / im2col / 1e3,
            flops / direct / 1e3,
            direct_suits(&[n, c, h, w], &ws, &attrs)
        ),
        _ => println!(
            "{what}: depthwise {:.1} us ({:.1} GFLOP/s)",
            us[0],
            flops / us[0] / 1e3
        ),
    }
    Ok(())
}
