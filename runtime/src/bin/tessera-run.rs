//! `tessera-run`: executes a partitioned plan on N devices.
//!
//! ```text
//! tessera-run PLAN.json --input NAME=FILE.npy ... [--output DIR] [--backend cpu|cuda]
//!             [--check] [--tolerance 1e-5] [--stats] [--model PATH] [--nproc N]
//! ```
//!
//! With `--backend cuda --nproc N` it starts one process per GPU on this machine; with the
//! torchrun-style variables RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT set
//! (one process per GPU, on any number of machines) it runs as that rank. Rank 0 writes the
//! outputs and runs `--check`.
//!
//! Exit status: 0 on success, 1 on any error (one line on stderr), 2 on bad usage, 3 when
//! `--check` finds an output outside the tolerance.
use anyhow::{anyhow, bail, Context, Result};

/// mimalloc, not the system allocator: with glibc's, the ranks' output buffers of a run
/// went back to the system and were faulted in again (ConvNeXt-T: 41.9 → 34.3 ms a run at
/// 64 px; docs/benchmarks.md, session 29).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tessera_ir::Tensor;
use tessera_runtime::device::cpu::CpuBackend;
use tessera_runtime::device::DeviceKind;
use tessera_runtime::exec::check::{
    compare_outputs, compare_outputs_quantised, DEFAULT_TOLERANCE, QUANTISED_OFF_SHARE,
};
use tessera_runtime::exec::data::reference_outputs;
use tessera_runtime::exec::load::{open_plan, LoadedPlan};
use tessera_runtime::exec::validate::validate_inputs;
use tessera_runtime::exec::RunStats;
use tessera_runtime::multiproc::{self, ProcessRole};
use tessera_runtime::npy::{read_npy, write_npy};
use tessera_runtime::session::{Session, SessionOptions};

/// Run a Tessera plan (from `tessera compile`) on N devices.
#[derive(Debug, Parser)]
#[command(
    name = "tessera-run",
    version,
    after_help = "Environment: TESSERA_FUSE=0 runs every plan step unfused on CPU devices \
(by default attention, MatMul+bias(+GELU), Add+LayerNorm, Conv+BatchNorm/residual/activation and elementwise chains run as fused kernels); \
TESSERA_PROFILE=1 (or =shapes, =steps) prints the time per op kind (and output shape, or per\nstep in run order) per rank: the mean of the --repeat runs, or the one run without --repeat."
)]
struct Args {
    /// The plan JSON written by `tessera compile`.
    plan: PathBuf,
    /// A model input as NAME=FILE.npy (repeat for each input).
    #[arg(long = "input", short = 'i', value_name = "NAME=FILE.npy")]
    inputs: Vec<String>,
    /// Directory to write each output to, as `<output name>.npy` (created if missing).
    #[arg(long, short = 'o', value_name = "DIR")]
    output: Option<PathBuf>,
    /// Backend: cpu (--threads-per-device threads per device) or cuda (one GPU per device; needs --features cuda).
    #[arg(long, default_value = "cpu")]
    backend: DeviceKind,
    /// Also run the unpartitioned model on the reference executor and compare the outputs.
    #[arg(long)]
    check: bool,
    /// Relative tolerance of --check: max|a−b| / max(max|ref|, 1e-6) per output.
    #[arg(long, default_value_t = DEFAULT_TOLERANCE)]
    tolerance: f64,
    /// Print measured per-rank statistics (peak live bytes, time, collectives).
    #[arg(long)]
    stats: bool,
    /// Source model to load weights from (default: the plan's source path, relative to the plan).
    #[arg(long, value_name = "PATH")]
    model: Option<PathBuf>,
    /// Benchmark: run the plan this many more times after the first run and print the
    /// latency (min / median / mean of the repeats; weight slices are loaded once and reused).
    /// At most 1000000.
    #[arg(
        long,
        default_value_t = 0,
        value_name = "K",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=MAX_REPEAT)
    )]
    repeat: usize,
    /// With --backend cuda: start one process per GPU on this machine (N must equal the
    /// plan's device count). Without it, all ranks run as streams of GPU 0.
    #[arg(long, value_name = "N")]
    nproc: Option<usize>,
    /// CPU backend: threads each device computes with (default: the machine's cores divided
    /// by the plan's devices, at least 1). Large products and fused kernels split over them.
    #[arg(
        long,
        value_name = "K",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_THREADS)
    )]
    threads_per_device: Option<usize>,
    /// CPU backend: leave the rank threads where the scheduler puts them. By default each
    /// device's threads are bound to cores of their own when the machine has a core for
    /// every thread.
    #[arg(long)]
    no_pin: bool,
}

/// The most `--threads-per-device`.
const MAX_THREADS: u64 = 4096;

/// The most `--repeat` runs (their latencies are kept to sort them).
const MAX_REPEAT: u64 = 1_000_000;

fn main() {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => usage_error(e),
    };
    match run(&args) {
        Ok(true) => {}
        Ok(false) => std::process::exit(3),
        Err(e) => {
            eprintln!("tessera-run: {}", format!("{e:#}").replace('\n', " "));
            std::process::exit(1);
        }
    }
}

/// The plan, weights and inputs of the run: held by a resident session (in-process runs),
/// or directly (one rank of a one-process-per-GPU run).
enum Loaded {
    Resident(Session, Arc<BTreeMap<String, Tensor>>),
    Direct(
        Box<tessera_ir::plan::Plan>,
        tessera_runtime::weights::WeightStore,
        BTreeMap<String, Tensor>,
    ),
}

/// Help and version as clap prints them; a usage error as one line, exit status 2.
fn usage_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let rendered = e.render().to_string();
    let first = rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid arguments");
    let first = first.trim().trim_start_matches("error: ");
    eprintln!("tessera-run: {first} (see tessera-run --help)");
    std::process::exit(2);
}

/// Runs the command; `Ok(false)` when `--check` failed.
fn run(args: &Args) -> Result<bool> {
    // An explicit --model is trusted to be the right file only if its hash matches too.
    let LoadedPlan { plan, store } = open_plan(&args.plan, args.model.as_deref())?;
    let inputs = read_inputs(&args.inputs)?;
    validate_inputs(&plan, &inputs)?;

    let role = multiproc::role(args.nproc);
    if role != ProcessRole::InProcess && args.backend != DeviceKind::Cuda {
        bail!("--nproc and RANK/WORLD_SIZE (one process per device) need --backend cuda");
    }
    if role != ProcessRole::InProcess && plan.data.is_some() {
        bail!(
            "plan '{}' has a data axis (mesh {}): one process per device runs 1-D plans only; run it in one process (CPU devices, or --backend cuda on one GPU)",
            args.plan.display(),
            plan.mesh.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x")
        );
    }
    let names: Vec<String> = plan
        .graph
        .outputs
        .iter()
        .map(|t| plan.graph.tensor(*t).name.clone())
        .collect();
    let out_paths = match &args.output {
        Some(dir) => output_paths(dir, &names),
        None => Vec::new(),
    };
    for path in &out_paths {
        plan.refuse_input(&args.plan, path, "output")?;
    }
    let (outputs, stats, loaded) = match role {
        ProcessRole::Launcher { nproc } => {
            if nproc != plan.ranks.len() {
                bail!(
                    "--nproc {nproc}: the plan was compiled for {} devices",
                    plan.ranks.len()
                );
            }
            multiproc::launch(nproc)?;
            return Ok(true);
        }
        ProcessRole::Rank => {
            let t0 = Instant::now();
            let (rank, outputs, rank_stats) = multiproc::run_rank(&plan, &store, &inputs)?;
            if rank != 0 {
                return Ok(true);
            }
            let stats = RunStats {
                backend: "cuda (one process per GPU)".into(),
                wall_ms: t0.elapsed().as_secs_f64() * 1e3,
                // Each rank process measures only itself; rank 0 reports its own figures.
                ranks: vec![rank_stats],
            };
            (
                outputs,
                stats,
                Loaded::Direct(Box::new(plan), store, inputs),
            )
        }
        ProcessRole::InProcess => {
            // One resident session serves the run, the --repeat runs and the --check.
            let opts = SessionOptions {
                backend: args.backend,
                threads_per_device: args.threads_per_device.unwrap_or(0),
                pin_threads: !args.no_pin,
            };
            let session = Session::new(plan, store, &opts)?;
            let inputs = Arc::new(inputs);
            let (outputs, stats) = session.run_shared(inputs.clone())?;
            (outputs, stats, Loaded::Resident(session, inputs))
        }
    };
    let (plan, store, inputs) = match &loaded {
        Loaded::Resident(s, inputs) => (s.plan(), s.store(), &**inputs),
        Loaded::Direct(plan, store, inputs) => (&**plan, store, inputs),
    };
    let threads = match args.backend {
        DeviceKind::Cpu => format!(
            ", {} thread(s) per device",
            CpuBackend::new(args.threads_per_device.unwrap_or(0)).threads_for(plan.ranks.len())
        ),
        DeviceKind::Cuda => String::new(),
    };
    println!(
        "ran {} on {} {} device(s){threads} in {:.2} ms",
        args.plan.display(),
        plan.ranks.len(),
        stats.backend,
        stats.wall_ms
    );
    match &args.output {
        Some(dir) => write_outputs(dir, &names, &out_paths, &outputs)?,
        None => {
            for (name, t) in names.iter().zip(&outputs) {
                println!("  output '{name}': {}{:?}", t.dtype, t.shape);
            }
        }
    }
    if args.stats {
        print_stats(&stats);
    }
    if args.repeat == 0 {
        eprint!("{}", tessera_runtime::exec::take_step_profiles());
    } else {
        // The profile covers the repeats, not the first run (which loads the weights).
        tessera_runtime::exec::take_step_profiles();
        let Loaded::Resident(session, shared) = &loaded else {
            bail!("--repeat runs in one process (not with --nproc or RANK/WORLD_SIZE)");
        };
        let mut ms = Vec::with_capacity(args.repeat);
        for _ in 0..args.repeat {
            let t0 = Instant::now();
            session.run_shared(shared.clone())?;
            ms.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        ms.sort_by(f64::total_cmp);
        let mean = ms.iter().sum::<f64>() / ms.len() as f64;
        println!(
            "latency over {} runs: min {:.3} ms, median {:.3} ms, mean {:.3} ms",
            ms.len(),
            ms[0],
            ms[ms.len() / 2],
            mean
        );
        eprint!("{}", tessera_runtime::exec::take_step_profiles());
    }
    if !args.check {
        return Ok(true);
    }
    let t0 = Instant::now();
    let reference = reference_outputs(plan, store, inputs).context("reference run")?;
    let ref_ms = t0.elapsed().as_secs_f64() * 1e3;
    let quantised = plan
        .graph
        .node_ids()
        .any(|n| matches!(plan.graph.node(n).op, tessera_ir::Op::Quantize(_)));
    let diffs = match quantised {
        true => compare_outputs_quantised(&names, &outputs, &reference, args.tolerance),
        false => compare_outputs(&names, &outputs, &reference, args.tolerance),
    };
    println!("check against the unpartitioned model (reference executor, {ref_ms:.2} ms), tolerance {:e}:", args.tolerance);
    if quantised {
        println!(
            "  (the plan quantises activations: an output also passes with at most {}% of its \
             elements outside the tolerance, each a value rounded to the neighbouring step)",
            QUANTISED_OFF_SHARE * 100.0
        );
    }
    for d in &diffs {
        println!(
            "  {} '{}': max abs error {:.3e}, max relative error {:.3e}, {:.3}% of elements outside",
            if d.ok { "ok  " } else { "FAIL" },
            d.name,
            d.max_abs,
            d.max_rel,
            d.off_share * 100.0
        );
    }
    let failed: Vec<&str> = diffs
        .iter()
        .filter(|d| !d.ok)
        .map(|d| d.name.as_str())
        .collect();
    if failed.is_empty() {
        println!("check passed: {} output(s) match", diffs.len());
        Ok(true)
    } else {
        eprintln!(
            "tessera-run: check failed for output(s): {}",
            failed.join(", ")
        );
        Ok(false)
    }
}

/// Parses `NAME=FILE.npy` arguments and reads the files.
fn read_inputs(specs: &[String]) -> Result<BTreeMap<String, Tensor>> {
    let mut inputs = BTreeMap::new();
    for spec in specs {
        let (name, file) = spec
            .split_once('=')
            .ok_or_else(|| anyhow!("--input '{spec}': expected NAME=FILE.npy"))?;
        if name.is_empty() || file.is_empty() {
            bail!("--input '{spec}': expected NAME=FILE.npy");
        }
        let t = read_npy(Path::new(file)).with_context(|| format!("input '{name}'"))?;
        if inputs.insert(name.to_string(), t).is_some() {
            bail!("input '{name}' given twice");
        }
    }
    Ok(inputs)
}

/// A file name for an output: characters other than letters, digits, `.`, `_` and `-`
/// become `_` (ONNX names may contain `/` or `:`).
fn file_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("_{s}")
    } else {
        s
    }
}

/// The file in `dir` of each output: `<file_name>.npy`, or `<file_name>_2.npy`, `_3`…
/// when an earlier output already took that name (`a/b` and `a:b` are both `a_b`).
fn output_paths(dir: &Path, names: &[String]) -> Vec<PathBuf> {
    let mut taken = std::collections::HashSet::new();
    names
        .iter()
        .map(|name| {
            let base = file_name(name);
            let mut stem = base.clone();
            let mut k = 1;
            while !taken.insert(stem.clone()) {
                k += 1;
                stem = format!("{base}_{k}");
            }
            dir.join(format!("{stem}.npy"))
        })
        .collect()
}

fn write_outputs(
    dir: &Path,
    names: &[String],
    paths: &[PathBuf],
    outputs: &[Tensor],
) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output directory {}", dir.display()))?;
    for ((name, path), t) in names.iter().zip(paths).zip(outputs) {
        write_npy(path, t)?;
        println!(
            "  output '{name}': {}{:?} -> {}",
            t.dtype,
            t.shape,
            path.display()
        );
    }
    Ok(())
}

fn print_stats(stats: &RunStats) {
    println!("per-rank statistics (measured):");
    println!("  rank  peak_live_bytes  weight_bytes  steps  collectives  collective_bytes  sent_bytes  wall_ms");
    for r in &stats.ranks {
        println!(
            "  {:>4}  {:>15}  {:>12}  {:>5}  {:>11}  {:>16}  {:>10}  {:>7.2}",
            r.rank,
            r.peak_live_bytes,
            r.weight_bytes,
            r.steps,
            r.collectives,
            r.collective_bytes,
            r.sent_bytes,
            r.wall_ms
        );
    }
    for r in &stats.ranks {
        if !r.fused.is_empty() {
            let kinds: Vec<String> = r.fused.iter().map(|(k, n)| format!("{n}× {k}")).collect();
            println!("  rank {} fused kernels: {}", r.rank, kinds.join(", "));
        }
    }
}
