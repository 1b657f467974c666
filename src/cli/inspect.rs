//! `tessera inspect MODEL.onnx | PLAN.json`.
use super::common::{classify, display_name, emit, import, load_timings, Artifact};
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;
use tessera_compiler::report::{model_summary_text, PlanReport};
use tessera_ir::plan::Plan;

/// Arguments of `tessera inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// An ONNX model (.onnx) or a plan written by `tessera compile`.
    file: PathBuf,
    /// Static input shapes for a model, e.g. `input_ids=1x128,mask=1x128` (repeatable).
    #[arg(long = "shape", value_name = "NAME=DIMS")]
    shapes: Vec<String>,
    /// Print one JSON object instead of tables (plans only).
    #[arg(long)]
    json: bool,
}

/// Runs `tessera inspect`.
pub fn run(args: InspectArgs) -> Result<()> {
    match classify(&args.file)? {
        Artifact::Model(path) => {
            if args.json {
                bail!("--json is for plans; '{}' is an ONNX model", path.display());
            }
            let model = import(&path, &args.shapes)?;
            emit(
                &model_summary_text(&display_name(&path), &model.graph, &model.report),
                None,
            )
        }
        Artifact::Plan(path) => {
            if !args.shapes.is_empty() {
                bail!(
                    "--shape is for ONNX models; the shapes of plan '{}' are fixed",
                    path.display()
                );
            }
            let plan = Plan::read(&path)?;
            let report = PlanReport::new(&plan, load_timings(&path).as_ref());
            if args.json {
                let mut text = serde_json::to_string_pretty(&report)?;
                text.push('\n');
                emit(&text, None)
            } else {
                emit(&report.to_text(), None)
            }
        }
    }
}
