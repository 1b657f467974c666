//! `tessera compile MODEL.onnx --devices N -o PLAN.json`.
use anyhow::Result;
use clap::Args;

/// Arguments of `tessera compile`.
#[derive(Debug, Args)]
pub struct CompileArgs {}

/// Runs `tessera compile`.
pub fn run(_args: CompileArgs) -> Result<()> {
    anyhow::bail!("compile needs the partitioner")
}
