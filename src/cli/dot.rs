//! `tessera dot MODEL.onnx | PLAN.json`.
use super::common::{classify, display_name, emit, import, Artifact};
use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};
use tessera_compiler::report::{graph_to_dot, plan_to_dot, render_svg, LayerRange, PlanDotOptions};
use tessera_ir::files::dir_of;
use tessera_ir::plan::Plan;
use tessera_ir::{Graph, WeightData};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Graphviz DOT source.
    Dot,
    /// SVG rendered by Graphviz's `dot` binary.
    Svg,
}

/// Arguments of `tessera dot`.
#[derive(Debug, Args)]
pub struct DotArgs {
    /// An ONNX model (.onnx) or a plan written by `tessera compile`.
    file: PathBuf,
    /// Write to this file instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Rank whose program is drawn (plans only).
    #[arg(long, value_name = "R")]
    rank: Option<usize>,
    /// Output format.
    #[arg(long, value_enum, default_value = "dot")]
    format: Format,
    /// Repeated layers to draw expanded, e.g. `0..2` (the rest collapse, one cluster per distinct layer plan).
    #[arg(long, value_name = "A..B")]
    layers: Option<String>,
    /// Static input shapes for a model, e.g. `input_ids=1x128` (repeatable).
    #[arg(long = "shape", value_name = "NAME=DIMS")]
    shapes: Vec<String>,
}

/// Runs `tessera dot`.
pub fn run(args: DotArgs) -> Result<()> {
    let dot = match classify(&args.file)? {
        Artifact::Model(path) => {
            if args.rank.is_some() || args.layers.is_some() {
                bail!(
                    "--rank and --layers are for plans; '{}' is an ONNX model",
                    path.display()
                );
            }
            let model = import(&path, &args.shapes)?;
            if let Some(out) = &args.output {
                refuse_model_input(out, &path, &model.graph)?;
            }
            graph_to_dot(&model.graph, &display_name(&path))
        }
        Artifact::Plan(path) => {
            if !args.shapes.is_empty() {
                bail!(
                    "--shape is for ONNX models; the shapes of plan '{}' are fixed",
                    path.display()
                );
            }
            let expand = args
                .layers
                .as_deref()
                .map(str::parse::<LayerRange>)
                .transpose()?;
            let plan = Plan::read(&path)?;
            if let Some(out) = &args.output {
                if same_file(out, &path) {
                    bail!(
                        "cannot write '{}': it is the plan being drawn",
                        out.display()
                    );
                }
                plan.refuse_input(&path, out, "DOT output")?;
            }
            let opts = PlanDotOptions {
                rank: args.rank.unwrap_or(0),
                expand,
            };
            plan_to_dot(&plan, &opts).map_err(|e| anyhow::anyhow!("'{}': {e}", path.display()))?
        }
    };
    let text = match args.format {
        Format::Dot => dot,
        Format::Svg => render_svg(&dot)?,
    };
    emit(&text, args.output.as_deref())
}

/// Whether `a` and `b` are one existing file (links resolved).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Refuses an output that is the model being drawn or one of its weight files.
fn refuse_model_input(out: &Path, model: &Path, graph: &Graph) -> Result<()> {
    if same_file(out, model) {
        bail!(
            "cannot write '{}': it is the model being drawn",
            out.display()
        );
    }
    for w in graph.weights.values() {
        if let WeightData::File { path, .. } = &w.data {
            if same_file(out, &dir_of(model).join(path)) {
                bail!(
                    "cannot write '{}': it is the weight file of initializer '{}'",
                    out.display(),
                    w.name
                );
            }
        }
    }
    Ok(())
}
