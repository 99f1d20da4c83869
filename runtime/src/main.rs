//! `maniflow`: run, inspect and benchmark policy packages.
//!
//! Thin on purpose: each subcommand lives in `cli/`, the work in the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

#[derive(Parser)]
#[command(
    name = "maniflow",
    version,
    about = "Real-time runtime for ManiFlow and ACT robot policies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a policy package: inputs, outputs, normalisation, sampler, graphs, parameters.
    Inspect(cli::inspect::Args),
    /// Latency of every stage vs the raw ONNX Runtime sessions, and peak memory.
    Bench(cli::bench::Args),
    /// One observation (.npz, raw units) -> the unnormalised action chunk (.npz).
    Infer(cli::infer::Args),
    /// The main job on the embedded default: the bundled policy in a closed loop on synthetic observations.
    Demo(cli::demo::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Inspect(a) => cli::inspect::run(a),
        Command::Bench(a) => cli::bench::run(a),
        Command::Infer(a) => cli::infer::run(a),
        Command::Demo(a) => cli::demo::run(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line (with its causes), no backtrace.
            let mut msg = format!("{e}");
            for cause in e.chain().skip(1) {
                let c = cause.to_string();
                if !msg.contains(&c) {
                    msg.push_str(": ");
                    msg.push_str(&c);
                }
            }
            eprintln!("maniflow: error: {msg}");
            ExitCode::FAILURE
        }
    }
}
