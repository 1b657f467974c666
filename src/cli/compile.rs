//! `tessera compile MODEL.onnx --devices N -o PLAN.json`: import → partition → write the
//! plan (pretty, deterministic JSON) and its timings sidecar, then print a summary.
use super::common::{classify, display_name, refuse_timings_over_input, write_timings, Artifact};
use anyhow::{bail, Context, Result};
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::Args;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tessera_compiler::cost;
use tessera_compiler::partition::{partition, ObjectiveKind, PartitionOptions};
use tessera_compiler::report::format::human_bytes;
use tessera_compiler::report::PlanReport;
use tessera_ir::plan::{Plan, SourceModel, Timings};
use tessera_ir::Layout;

/// `--objective`: the spellings of [`ObjectiveKind`], listed with their help.
fn objective_parser() -> impl TypedValueParser<Value = ObjectiveKind> {
    PossibleValuesParser::new(
        ObjectiveKind::ALL.map(|k| PossibleValue::new(k.as_str()).help(k.help())),
    )
    .try_map(|s| s.parse::<ObjectiveKind>())
}

/// Arguments of `tessera compile`.
#[derive(Debug, Args)]
pub struct CompileArgs {
    /// The ONNX model.
    model: PathBuf,
    /// Number of devices (1-D tensor parallelism).
    #[arg(long, short = 'n', value_name = "N")]
    devices: Option<usize>,
    /// Device mesh `DxT`: D data groups of T devices (`T` alone: `1xT`). The batch splits
    /// over the D groups; each group runs the T-device plan of its slice of the batch.
    #[arg(long, value_name = "DxT")]
    mesh: Option<String>,
    /// Batch axis of an input for a data axis (`--mesh DxT`, D > 1): `NAME=AXIS`, or
    /// `NAME=none` for an input every group gets whole (repeatable; default: axis 0).
    #[arg(long = "batch-axis", value_name = "NAME=AXIS|none")]
    batch_axes: Vec<String>,
    /// Static input shapes, e.g. `input_ids=1x128,mask=1x128` (repeatable).
    #[arg(long = "shape", value_name = "NAME=DIMS")]
    shapes: Vec<String>,
    /// Cost model: a preset (nvlink, pcie, ethernet, cpu) or a TOML file.
    #[arg(long, value_name = "PRESET|FILE.toml")]
    cost_model: Option<String>,
    /// Objective of the search.
    #[arg(long, default_value = "time", value_parser = objective_parser())]
    objective: ObjectiveKind,
    /// Per-device parameter budget: bytes, or with a unit (`512MiB`, `16GiB`, `2GB`).
    #[arg(long, value_name = "BYTES")]
    memory_per_device: Option<String>,
    /// Pin a tensor's layout: `TENSOR=R`, `TENSOR=S(axis)` or `TENSOR=P` (repeatable).
    #[arg(long = "pin", value_name = "TENSOR=LAYOUT")]
    pins: Vec<String>,
    /// Extra canonicalisation rules (the format `tessera rules` prints), applied with the
    /// built-in ones.
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    /// Extra distribution rules (the format `tessera rules --distribution` prints): more ways
    /// an op may run on N devices, applied with the built-in table.
    #[arg(long, value_name = "FILE")]
    dist_rules: Option<PathBuf>,
    /// Seconds the search may take before it settles for the best plan found (its lower
    /// bound and gap are in the plan); 0: no time limit.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    time_limit: f64,
    /// States the exact extraction keeps per step before it narrows to the most promising
    /// ones (a deterministic search budget; higher: slower, closer to proven optimal).
    #[arg(long, value_name = "N", default_value_t = tessera_compiler::partition::extract::DEFAULT_MAX_STATES)]
    max_states: usize,
    /// Where to write the plan (the timings go beside it as NAME.timings.json).
    #[arg(short, long, value_name = "PLAN.json")]
    output: PathBuf,
}

/// Runs `tessera compile`.
pub fn run(args: CompileArgs) -> Result<()> {
    let start = Instant::now();
    let model_path = match classify(&args.model)? {
        Artifact::Model(p) => p,
        Artifact::Plan(p) => bail!(
            "'{}' is not an ONNX model (expected a .onnx file)",
            p.display()
        ),
    };
    let mesh = super::mesh::resolve_mesh(args.devices, args.mesh.as_deref())?;
    let batch_axes = super::mesh::parse_batch_axes(&args.batch_axes)?;
    let mut opts = PartitionOptions::new(mesh.t);
    if let Some(spec) = &args.cost_model {
        opts.cost_model = cost_model(spec)?;
    }
    opts.objective = args.objective;
    opts.memory_per_device = args
        .memory_per_device
        .as_deref()
        .map(parse_bytes)
        .transpose()?;
    opts.pins = parse_pins(&args.pins)?;
    if !args.time_limit.is_finite() || args.time_limit < 0.0 || args.time_limit > 1e6 {
        bail!(
            "--time-limit {}: expected seconds between 0 and 1000000",
            args.time_limit
        );
    }
    opts.time_limit =
        (args.time_limit > 0.0).then(|| std::time::Duration::from_secs_f64(args.time_limit));
    if let Some(f) = &args.dist_rules {
        let bytes = tessera_ir::files::read_regular(f)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("reading rules file {}", f.display()))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("rules file {} is not UTF-8", f.display()))?;
        opts.dist_rules = tessera_compiler::partition::rules::dsl::parse_user_rules(
            &text,
            &f.display().to_string(),
        )?;
    }
    if args.max_states == 0 {
        bail!("--max-states 0: need at least 1");
    }
    opts.max_states = args.max_states;
    let plan_dir = args
        .output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !plan_dir.is_dir() {
        bail!(
            "cannot write plan '{}': directory '{}' does not exist",
            args.output.display(),
            plan_dir.display()
        );
    }

    let import_start = Instant::now();
    let mut import_opts = super::common::import_options(&args.shapes)?;
    if let Some(f) = &args.rules {
        import_opts.canon.extra_rules = super::rules::user_rules(f)?;
    }
    let imported = tessera_compiler::partition::mesh::import_for_mesh(
        &model_path,
        &import_opts,
        mesh.d,
        mesh.t,
        &batch_axes,
    )?;
    let model = imported.model;
    let import_ms = ms(import_start);
    let progress = Progress::start(start, args.time_limit);
    let partitioned = partition(&model.graph, &opts)
        .with_context(|| format!("partitioning '{}'", model_path.display()));
    progress.stop();
    let partitioned = partitioned?;
    let mut plan = partitioned.plan;
    if let Some((split, whole_shapes)) = imported.data {
        plan =
            tessera_compiler::partition::mesh::over_data_axis(plan, mesh.d, split, whole_shapes)?;
    }
    plan.source = SourceModel::record(&model_path, &args.output, &plan.graph)?;
    refuse_timings_over_input(&plan, &args.output)?;
    plan.write(&args.output)?;
    let timings = Timings {
        compile_ms: ms(start),
        import_ms,
        saturate_ms: partitioned.timings.saturate_ms,
        extract_ms: partitioned.timings.extract_ms,
    };
    let mut tjson = serde_json::to_string_pretty(&timings).context("serialising the timings")?;
    tjson.push('\n');
    let sidecar = write_timings(&plan, &args.output, &tjson)?;

    print!("{}", canon_line(&model.report.canon));
    print!(
        "{}",
        summary(
            &model_path,
            &args.output,
            sidecar.as_deref(),
            &plan,
            &timings,
            model.graph.weight_bytes() as u64
        )
    );
    Ok(())
}

/// A progress line on stderr while a compile runs past two seconds.
struct Progress {
    done: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    fn start(start: Instant, limit_s: f64) -> Progress {
        let done = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let flag = done.clone();
        let thread = std::thread::spawn(move || {
            let (lock, cv) = &*flag;
            let mut next = std::time::Duration::from_secs(2);
            loop {
                let Ok(guard) = lock.lock() else { return };
                let wait = next.saturating_sub(start.elapsed());
                let Ok((guard, _)) = cv.wait_timeout_while(guard, wait, |d| !*d) else {
                    return;
                };
                if *guard {
                    return;
                }
                drop(guard);
                let limit = if limit_s > 0.0 {
                    format!(" (time limit {limit_s} s, then the best plan found)")
                } else {
                    String::new()
                };
                eprintln!(
                    "tessera compile: searching, {:.0} s{limit}",
                    start.elapsed().as_secs_f64()
                );
                next += std::time::Duration::from_secs(2);
            }
        });
        Progress {
            done,
            thread: Some(thread),
        }
    }

    fn stop(mut self) {
        let (lock, cv) = &*self.done;
        if let Ok(mut d) = lock.lock() {
            *d = true;
        }
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            // The thread only waits and prints; a panic there is not ours to propagate.
            let _ = t.join();
        }
    }
}

/// One line on what canonicalisation did: nodes before and after, the canonical ops it
/// found, and how saturation ended.
fn canon_line(c: &tessera_compiler::canon::CanonReport) -> String {
    let found: Vec<String> = c
        .applied
        .iter()
        .filter(|(name, _)| !name.contains("commute") && !name.contains("assoc"))
        .map(|(name, n)| format!("{name} ×{n}"))
        .collect();
    let kept = c
        .kept_source
        .as_ref()
        .map(|r| format!("; kept the source graph: {r}"))
        .unwrap_or_default();
    format!(
        "canonicalised: {} → {} nodes in {} iterations ({}){}{kept}\n",
        c.nodes_before,
        c.nodes_after,
        c.iterations,
        c.stop_reason,
        if found.is_empty() {
            String::new()
        } else {
            format!("; {}", found.join(", "))
        }
    )
}

/// A preset name or a TOML file.
fn cost_model(spec: &str) -> Result<tessera_ir::plan::CostModel> {
    let looks_like_file =
        spec.ends_with(".toml") || spec.contains('/') || Path::new(spec).is_file();
    Ok(if looks_like_file {
        cost::load_cost_model_toml(Path::new(spec))?
    } else {
        cost::preset(spec)?
    })
}

/// `TENSOR=LAYOUT` pins.
fn parse_pins(pins: &[String]) -> Result<BTreeMap<String, Layout>> {
    let mut out = BTreeMap::new();
    for p in pins {
        let (name, layout) = p.rsplit_once('=').with_context(|| {
            format!("--pin '{p}': expected TENSOR=R, TENSOR=S(axis) or TENSOR=P")
        })?;
        let layout: Layout = layout
            .parse()
            .map_err(|e: String| anyhow::anyhow!("--pin '{p}': {e}"))?;
        if out.insert(name.trim().to_string(), layout).is_some() {
            bail!("--pin: tensor '{}' is pinned twice", name.trim());
        }
    }
    Ok(out)
}

/// Bytes with an optional unit: `1000`, `512MiB`, `16GiB`, `2GB`, `64k`.
fn parse_bytes(spec: &str) -> Result<u64> {
    let s = spec.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("--memory-per-device '{spec}': expected bytes, e.g. 16GiB"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024f64.powi(2),
        "gib" => 1024f64.powi(3),
        "tib" => 1024f64.powi(4),
        other => bail!("--memory-per-device '{spec}': unknown unit '{other}' (use B, KiB, MiB, GiB, KB, MB, GB)"),
    };
    Ok((value * scale).round() as u64)
}

/// Milliseconds since `t`.
fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// What `compile` prints.
fn summary(
    model: &Path,
    plan_path: &Path,
    sidecar: Option<&Path>,
    plan: &Plan,
    t: &Timings,
    model_bytes: u64,
) -> String {
    let r = PlanReport::new(plan, Some(t));
    let mut lines = vec![format!(
        "compiled {} for {} devices{} in {:.1} ms (import {:.1} ms, saturation {:.1} ms, extraction {:.1} ms)",
        display_name(model),
        r.devices,
        match r.mesh.as_slice() {
            [d, t] => format!(" (mesh {d}x{t}: {d} data groups of {t}; collectives below are per group)"),
            _ => String::new(),
        },
        t.compile_ms,
        t.import_ms,
        t.saturate_ms,
        t.extract_ms
    )];
    lines.push(match sidecar {
        Some(s) => format!("  plan {} (timings {})", plan_path.display(), s.display()),
        None => format!(
            "  plan {} (no timings file: the plan path is not a regular file)",
            plan_path.display()
        ),
    });
    lines.push(format!(
        "  all-reduces per layer: {}",
        r.per_layer_line("all_reduce")
    ));
    let others: Vec<String> = r
        .totals
        .iter()
        .filter(|(k, t)| k.as_str() != "all_reduce" && t.count > 0)
        .map(|(k, t)| format!("{} {k}", t.count))
        .collect();
    if !others.is_empty() {
        lines.push(format!("  other collectives: {}", others.join(", ")));
    }
    let ratio = if r.lower_bound_bytes > 0 {
        format!(
            " ({:.2}× the bound)",
            r.total_bytes as f64 / r.lower_bound_bytes as f64
        )
    } else {
        String::new()
    };
    lines.push(format!(
        "  communication: {} moved, lower bound {}{ratio}",
        human_bytes(r.total_bytes),
        human_bytes(r.lower_bound_bytes)
    ));
    let per_rank: Vec<String> = r
        .per_rank
        .iter()
        .map(|p| format!("rank {} {}", p.rank, human_bytes(p.param_bytes)))
        .collect();
    lines.push(format!(
        "  parameters per device: {} (whole model {})",
        per_rank.join(", "),
        human_bytes(model_bytes)
    ));
    lines.push(format!(
        "  search: {} e-classes, {} e-nodes, {} iterations ({}), gap {:.2}%",
        r.search.eclasses,
        r.search.enodes,
        r.search.iterations,
        r.search.stop_reason,
        r.search.gap * 100.0
    ));
    lines.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_with_units() {
        assert_eq!(parse_bytes("1000").unwrap(), 1000);
        assert_eq!(parse_bytes("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("2GB").unwrap(), 2_000_000_000);
        assert_eq!(parse_bytes("1.5GiB").unwrap(), 3 << 29);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("3 parsecs").is_err());
    }

    #[test]
    fn pins_parse_layouts() {
        let p = parse_pins(&["h=S(1)".into(), "y=R".into()]).unwrap();
        assert_eq!(p["h"], Layout::Split(1));
        assert_eq!(p["y"], Layout::Replicated);
        assert!(parse_pins(&["h=Q".into()]).is_err());
        assert!(parse_pins(&["h".into()]).is_err());
    }
}
