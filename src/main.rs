//! `tessera`: compile ONNX models into tensor-parallel plans, inspect and draw them.
//!
//! Every failure prints one line (`error: ...` naming the file, tensor or option at fault)
//! and exits non-zero.
#![warn(missing_docs)]

mod cli;

use clap::Parser;
use std::process::ExitCode;

/// mimalloc, not the system allocator: see `tessera-run`'s.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(e) => return cli::report_clap_error(e),
    };
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cli::one_line(&e));
            ExitCode::FAILURE
        }
    }
}
