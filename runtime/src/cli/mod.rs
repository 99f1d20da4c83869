//! The CLI layer: the subcommands of the `maniflow` binary (`main.rs` only
//! parses arguments and dispatches here), plus what only they use: `.npz`
//! observation files (`infer`) and synthetic observations (`demo`, `bench`).
//! It may import every other layer; nothing imports it except `main.rs` and
//! the tests.

pub mod npz;
pub mod synthetic;
pub mod teleop;

pub mod bench;
pub mod bus_bench;
pub mod calibrate;
pub mod cameras;
pub mod demo;
pub mod eval;
pub mod gpu_check;
pub mod infer;
pub mod inspect;
pub mod record;
pub mod robot;
pub mod run;
pub mod sim;
pub mod sim_serial;
pub mod transport_bench;

use std::path::Path;

use crate::policy::engine::Engine;
use crate::policy::options::{EngineOptions, ExecutionProvider};
use anyhow::Context;

/// A flag set by the first SIGINT/SIGTERM (printing `note`, if any); a second
/// signal exits at once with status 130.
pub fn stop_on_signal(
    note: Option<&'static str>,
) -> anyhow::Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    ctrlc::set_handler(move || {
        if s.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        if let Some(n) = note {
            eprintln!("{n}");
        }
    })
    .context("installing the SIGINT/SIGTERM handler")?;
    Ok(stop)
}

/// Options shared by the commands that run a policy.
#[derive(clap::Args, Debug, Clone)]
pub struct RunOpts {
    /// ONNX Runtime intra-op threads per session.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Where the graphs run: cpu, cuda[:N], tensorrt[:N] (GPU ones need a `--features cuda` build).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Sampling steps N (ManiFlow); default: the manifest's `sampler.steps`.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Noise seed; default: the manifest's `sampler.seed`.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Initial noise of each chunk: fresh (a new draw each time) or fixed (the same every chunk).
    #[arg(long, value_enum, default_value = "fresh")]
    pub noise_mode: crate::policy::options::NoiseMode,
    /// Let ONNX Runtime fall back to the CPU when a GPU execution provider cannot
    /// start (default: refuse with an error).
    #[arg(long)]
    pub cpu_fallback: bool,
}

impl RunOpts {
    pub fn engine_options(&self) -> anyhow::Result<EngineOptions> {
        let provider: ExecutionProvider = self
            .device
            .parse()
            .map_err(|e: String| anyhow::anyhow!("--device: {e}"))?;
        if self.steps == Some(0) {
            anyhow::bail!("--steps must be >= 1");
        }
        Ok(EngineOptions {
            intra_threads: self.threads.max(1),
            provider,
            error_on_failure: !self.cpu_fallback,
            steps: self.steps,
            seed: self.seed,
            noise: self.noise_mode,
        })
    }
}

/// Initialise ONNX Runtime (a clear error when it is missing) and load the package.
pub fn load_engine(dir: &Path, opts: &RunOpts) -> anyhow::Result<Engine> {
    crate::policy::ortlib::init()?;
    let eo = opts.engine_options()?;
    Engine::load(dir, &eo).with_context(|| format!("loading policy package {}", dir.display()))
}
