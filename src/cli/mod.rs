//! Command-line interface: argument definitions and one module per subcommand.
mod calibrate;
mod common;
mod compile;
mod dot;
mod inspect;
mod mesh;
mod rules;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Automatic tensor-parallel partitioning of ONNX models.
#[derive(Debug, Parser)]
#[command(name = "tessera", version, about)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Partition an ONNX model across N devices and write the plan as JSON.
    Compile(compile::CompileArgs),
    /// Summarise an ONNX model (MODEL.onnx) or a plan (PLAN.json).
    Inspect(inspect::InspectArgs),
    /// Draw an ONNX model's graph or one rank of a plan as DOT (or SVG).
    Dot(dot::DotArgs),
    /// Print the canonicalisation rules (rewrite patterns with guards).
    Rules(rules::RulesArgs),
    /// Measure the devices' collectives, GEMMs and memory-bound ops and write a cost-model
    /// profile (TOML) for `compile --cost-model FILE`.
    Calibrate(calibrate::CalibrateArgs),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Compile(a) => compile::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Dot(a) => dot::run(a),
        Command::Rules(a) => rules::run(a),
        Command::Calibrate(a) => calibrate::run(a),
    }
}

/// An error with its causes, on one line.
pub fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}")
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prints a clap error: help and version in full, usage errors as one line.
pub fn report_clap_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // Printing help can only fail on a closed stdout; nothing useful is left to do.
            let _ = e.print();
            if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            let rendered = e.render().to_string();
            let first = rendered
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments");
            eprintln!("{} (see tessera --help)", first.trim());
            ExitCode::from(2)
        }
    }
}
