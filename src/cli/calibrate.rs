//! `tessera calibrate`: measure the machine's collectives, GEMMs and memory-bound ops on the
//! runtime's own devices and write a cost-model profile that `--cost-model FILE` reads.
//!
//! Every measurement runs on all `N` devices at once (one host thread per rank, the
//! shared-memory exchange of the runtime for collectives), as a plan runs, and takes the
//! median over repetitions of the slowest rank:
//! * each collective kind over message sizes, fitted to `alpha + ring_bytes / beta` by
//!   least squares;
//! * GEMM throughput for one shape of each class ([`GemmClass`]);
//! * the bandwidth of memory-bound ops (elementwise add, softmax, layer norm) and the fixed
//!   cost of one op (a one-element add).
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::time::Instant;
use tessera_compiler::cost::{self, Calibration, CostModel, GemmClass, LinkFit};
use tessera_ir::op::{BinaryAttrs, BinaryOp, MatMulAttrs, NormAttrs, SoftmaxAttrs};
use tessera_ir::plan::CollectiveKind;
use tessera_ir::{Op, Tensor};
use tessera_runtime::collectives::CollectiveSpec;
use tessera_runtime::device::cpu::{CpuBackend, CpuDevice};
use tessera_runtime::device::{Backend, Device};

/// Which devices to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CalibBackend {
    /// Host threads with shared-memory collectives.
    Cpu,
    /// CUDA GPUs.
    Cuda,
}

/// Arguments of `tessera calibrate`.
#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// Devices to measure.
    #[arg(long, value_enum, default_value = "cpu")]
    backend: CalibBackend,
    /// Number of devices (ranks) measured together.
    #[arg(long, short = 'n', value_name = "N", default_value_t = 2)]
    devices: usize,
    /// Where to write the profile (TOML).
    #[arg(long, short = 'o', value_name = "FILE.toml")]
    output: PathBuf,
    /// Small sizes and few repetitions (seconds instead of a minute; for tests).
    #[arg(long)]
    quick: bool,
}

/// Runs `tessera calibrate`.
pub fn run(args: CalibrateArgs) -> Result<()> {
    if args.backend == CalibBackend::Cuda {
        bail!(
            "calibrate --backend cuda: no CUDA GPU can be measured by this build (the tessera \
             command has no CUDA backend; CUDA calibration is not implemented); use \
             --backend cpu, or a GPU preset (--cost-model nvlink or pcie)"
        );
    }
    if args.devices == 0 {
        bail!("calibrate: --devices must be at least 1");
    }
    let model = calibrate_cpu(args.devices, args.quick)?;
    let text = cost::cost_model_toml(&model);
    std::fs::write(&args.output, &text)
        .with_context(|| format!("cannot write '{}'", args.output.display()))?;
    print!("{text}");
    eprintln!("wrote {}", args.output.display());
    Ok(())
}

/// Measures `n` CPU devices.
fn calibrate_cpu(n: usize, quick: bool) -> Result<CostModel> {
    let reps = if quick { 3 } else { 15 };
    let mut cal = Calibration::default();
    let sizes: &[usize] = if quick {
        &[1 << 8, 1 << 14]
    } else {
        &[1 << 8, 1 << 12, 1 << 16, 1 << 18, 1 << 20, 1 << 22]
    };
    for kind in [
        CollectiveKind::AllReduce,
        CollectiveKind::AllGather,
        CollectiveKind::ReduceScatter,
        CollectiveKind::AllToAll,
        CollectiveKind::Broadcast,
    ] {
        let mut points = Vec::new();
        for &floats in sizes {
            let (secs, logical) = time_collective(n, kind, floats, reps)?;
            points.push((cost::ring_bytes(kind, logical, n), secs));
        }
        cal.collectives.insert(kind, fit(&points));
    }
    let gemms: [(GemmClass, [usize; 3]); 4] = if quick {
        [
            (GemmClass::Skinny, [8, 128, 128]),
            (GemmClass::Small, [32, 32, 64]),
            (GemmClass::Medium, [128, 128, 256]),
            (GemmClass::Large, [256, 512, 1024]),
        ]
    } else {
        [
            (GemmClass::Skinny, [16, 1024, 1024]),
            (GemmClass::Small, [64, 64, 128]),
            (GemmClass::Medium, [256, 256, 512]),
            (GemmClass::Large, [1024, 768, 768]),
        ]
    };
    for (class, [m, nn, k]) in gemms {
        debug_assert_eq!(GemmClass::of(m, nn, k), class);
        let a = Tensor::f32(vec![m, k], fill(m * k));
        let b = Tensor::f32(vec![k, nn], fill(k * nn));
        let s = time_op(n, &Op::MatMul(MatMulAttrs {}), &[a, b], reps)?;
        cal.gemm_flops_per_s
            .insert(class, 2.0 * (m * nn * k) as f64 / s);
    }
    let overhead = {
        let x = Tensor::f32(vec![1], vec![1.0]);
        let add = Op::Binary(BinaryAttrs {
            kind: BinaryOp::Add,
        });
        time_op(n, &add, &[x.clone(), x], reps.max(20))?
    };
    cal.op_overhead_s = overhead;
    let (rows, cols) = if quick { (64, 256) } else { (1024, 1024) };
    let numel = rows * cols;
    let x = Tensor::f32(vec![rows, cols], fill(numel));
    let g = Tensor::f32(vec![cols], fill(cols));
    let mut bws = Vec::new();
    for (op, ins, bytes) in [
        (
            Op::Binary(BinaryAttrs {
                kind: BinaryOp::Add,
            }),
            vec![x.clone(), x.clone()],
            3 * numel * 4,
        ),
        (
            Op::Softmax(SoftmaxAttrs {
                axis: 1,
                log: false,
            }),
            vec![x.clone()],
            2 * numel * 4,
        ),
        (
            Op::LayerNorm(NormAttrs {
                axis: 1,
                epsilon: 1e-5,
            }),
            vec![x.clone(), g.clone(), g.clone()],
            2 * numel * 4,
        ),
    ] {
        let s = time_op(n, &op, &ins, reps)?;
        bws.push(bytes as f64 / (s - overhead).max(s / 2.0));
    }
    cal.mem_bytes_per_s = Some(bws.iter().sum::<f64>() / bws.len() as f64);
    let base = cal.collectives[&CollectiveKind::AllReduce];
    Ok(CostModel {
        name: format!("calibrated-cpu-{n}"),
        alpha_s: base.alpha_s,
        beta_bytes_per_s: base.beta_bytes_per_s,
        flops_per_s: cal.gemm_flops_per_s[&GemmClass::Medium],
        calibration: cal,
        inter_group: None,
    })
}

fn fill(len: usize) -> Vec<f32> {
    (0..len).map(|i| ((i % 13) as f32 - 6.0) * 0.01).collect()
}

/// Least-squares `t = alpha + bytes / beta` over `(bytes, seconds)` points, each weighted by
/// `1 / seconds²` (relative error): sizes span four orders of magnitude, and an unweighted
/// fit is decided by the largest messages alone, leaving the latency to noise. A negative
/// intercept is clamped to 0 and a non-positive slope to 1 PB/s (latency-bound).
fn fit(points: &[(f64, f64)]) -> LinkFit {
    let w = |y: f64| if y > 0.0 { 1.0 / (y * y) } else { 0.0 };
    let sw: f64 = points.iter().map(|&(_, y)| w(y)).sum();
    if sw <= 0.0 {
        return LinkFit {
            alpha_s: 0.0,
            beta_bytes_per_s: 1e15,
        };
    }
    let mx = points.iter().map(|&(x, y)| w(y) * x).sum::<f64>() / sw;
    let my = points.iter().map(|&(_, y)| w(y) * y).sum::<f64>() / sw;
    let sxx: f64 = points
        .iter()
        .map(|&(x, y)| w(y) * (x - mx) * (x - mx))
        .sum();
    let sxy: f64 = points
        .iter()
        .map(|&(x, y)| w(y) * (x - mx) * (y - my))
        .sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let slope = if slope > 0.0 { slope } else { 1e-15 };
    LinkFit {
        alpha_s: (my - slope * mx).max(0.0),
        beta_bytes_per_s: 1.0 / slope,
    }
}

/// Runs `setup` once per device (untimed), then `work` on every device at once, `reps`
/// times; the median over repetitions of the slowest rank's seconds.
fn on_all<S, P, F>(n: usize, reps: usize, setup: P, work: F) -> Result<f64>
where
    P: Fn(&mut CpuDevice) -> Result<S, String> + Sync,
    F: Fn(&mut CpuDevice, &S) -> Result<(), String> + Sync,
{
    // One thread per device: the cost model's figures are per core.
    let devices = CpuBackend::new(1)
        .create_devices(n)
        .map_err(|e| anyhow::anyhow!("cannot create {n} CPU devices: {e}"))?;
    let per_rank: Vec<Result<Vec<f64>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = devices
            .into_iter()
            .map(|mut d| {
                let (setup, work) = (&setup, &work);
                s.spawn(move || {
                    let state = setup(&mut d)?;
                    work(&mut d, &state)?; // warm-up
                    (0..reps)
                        .map(|_| {
                            let t = Instant::now();
                            work(&mut d, &state).map(|()| t.elapsed().as_secs_f64())
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a rank panicked".into())))
            .collect()
    });
    let mut slowest = vec![0.0f64; reps];
    for r in per_rank {
        let times = r.map_err(|e| anyhow::anyhow!("calibration run failed: {e}"))?;
        for (s, t) in slowest.iter_mut().zip(times) {
            *s = s.max(t);
        }
    }
    slowest.sort_by(f64::total_cmp);
    Ok(slowest[reps / 2])
}

/// Seconds of one op on every device at once.
fn time_op(n: usize, op: &Op, inputs: &[Tensor], reps: usize) -> Result<f64> {
    let setup = |d: &mut CpuDevice| {
        inputs
            .iter()
            .map(|t| d.upload(t.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())
    };
    on_all(n, reps, setup, |d, bufs| {
        let refs: Vec<_> = bufs.iter().collect();
        d.compute(op, &refs, &[]).map_err(|e| e.to_string())?;
        Ok(())
    })
    .with_context(|| format!("timing {}", op.name()))
}

/// Seconds of one collective of `kind` whose local input holds about `floats` elements,
/// and the logical tensor's bytes.
fn time_collective(
    n: usize,
    kind: CollectiveKind,
    floats: usize,
    reps: usize,
) -> Result<(f64, u64)> {
    let group: Vec<usize> = (0..n).collect();
    let cols = 64;
    let rows = (floats / cols).max(1);
    let (shape, spec, logical) = match kind {
        CollectiveKind::AllToAll => (
            vec![rows, cols * n],
            CollectiveSpec {
                kind,
                axis: Some(0),
                to_axis: Some(1),
                counts: vec![],
            },
            rows * n * cols * n,
        ),
        CollectiveKind::AllGather => (
            vec![rows, cols],
            CollectiveSpec {
                kind,
                axis: Some(0),
                to_axis: None,
                counts: vec![],
            },
            rows * cols * n,
        ),
        CollectiveKind::ReduceScatter => (
            vec![rows * n, cols],
            CollectiveSpec {
                kind,
                axis: Some(0),
                to_axis: None,
                counts: vec![],
            },
            rows * n * cols,
        ),
        _ => (
            vec![rows, cols],
            CollectiveSpec {
                kind,
                axis: None,
                to_axis: None,
                counts: vec![],
            },
            rows * cols,
        ),
    };
    let x = Tensor::f32(shape.clone(), fill(shape.iter().product()));
    let setup = |d: &mut CpuDevice| d.upload(x.clone()).map_err(|e| e.to_string());
    let secs = on_all(n, reps, setup, |d, b| {
        d.collective(&group, &spec, b).map_err(|e| e.to_string())?;
        Ok(())
    })
    .with_context(|| format!("timing {}", kind.as_str()))?;
    Ok((secs, (logical * 4) as u64))
}

#[cfg(test)]
mod tests {
    use super::fit;

    #[test]
    fn least_squares_recovers_a_line() {
        // t = 3 µs + bytes / 2 GB/s, exactly.
        let pts: Vec<(f64, f64)> = [1e3, 1e5, 1e7]
            .iter()
            .map(|&b| (b, 3e-6 + b / 2e9))
            .collect();
        let f = fit(&pts);
        assert!((f.alpha_s - 3e-6).abs() < 1e-12, "{f:?}");
        assert!((f.beta_bytes_per_s / 2e9 - 1.0).abs() < 1e-9, "{f:?}");
    }

    #[test]
    fn the_latency_survives_noise_on_large_messages() {
        // t = 5 µs + bytes / 1 GB/s with +-3 % noise on every point: an unweighted fit lets
        // the 16 MB point's noise (0.5 ms) swamp the 5 µs intercept.
        let pts: Vec<(f64, f64)> = [1e3, 1.6e4, 2.6e5, 1e6, 4e6, 1.6e7]
            .iter()
            .zip([1.03, 0.97, 1.03, 0.97, 1.03, 0.97])
            .map(|(&b, e)| (b, (5e-6 + b / 1e9) * e))
            .collect();
        let f = fit(&pts);
        assert!((f.alpha_s / 5e-6 - 1.0).abs() < 0.2, "{f:?}");
        assert!((f.beta_bytes_per_s / 1e9 - 1.0).abs() < 0.1, "{f:?}");
    }
}
