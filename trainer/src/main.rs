//! `maniflow-train`: the onboard trainer. This binary links libtorch (through
//! `tch`); the robot-side `maniflow` binary does not.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use maniflow_trainer::{act, bench, cli_train, export, health, presets};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "maniflow-train", version, about = "Onboard trainer for ManiFlow and ACT policies (libtorch)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train ManiFlow (consistency flow training), or ACT when the config has
    /// `policy = "act"`, on a LeRobot v3.0 dataset.
    Train {
        /// Config file, or a preset name (so101-cpu, upstream-image, act-so101, act-so101-sim).
        #[arg(long)]
        config: String,
        /// LeRobot v3.0 dataset directory.
        #[arg(long)]
        dataset: PathBuf,
        /// Run directory (config, metrics, TensorBoard, checkpoints).
        #[arg(long)]
        out: PathBuf,
        /// Total optimiser steps (overrides train.steps).
        #[arg(long)]
        steps: Option<u64>,
        /// Continue from the run directory's last checkpoint, bit-exactly.
        #[arg(long)]
        resume: bool,
        /// Initialise the DiTX (and encoder, where names match) from a safetensors
        /// file: an upstream DiTX state dict (keys without `model.`) or one of ours.
        /// ACT: a LeRobot `model.safetensors` (or a directory holding one), loaded strictly.
        #[arg(long)]
        init: Option<PathBuf>,
        /// No progress bar; one line every log step.
        #[arg(long)]
        quiet: bool,
        /// Where to train: cpu, cuda, cuda:N (overrides `train.device`).
        #[arg(long)]
        device: Option<String>,
    },
    /// Write a policy package (encoder.onnx + velocity.onnx + policy.toml) from a run.
    Export {
        run_dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Export the EMA weights (what the paper evaluates) instead of the online ones.
        #[arg(long)]
        ema: bool,
        /// A specific checkpoint directory (default: the run's latest).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        #[arg(long)]
        name: Option<String>,
    },
    /// An upstream ManiFlow checkpoint (geyan21/ManiFlow_Policy image policy: a workspace
    /// `.ckpt`, or a safetensors state dict with its hydra config.yaml) -> a run directory
    /// (continue with `train --resume`) and, with --package, a policy package (parity-gated).
    Import {
        /// The upstream checkpoint: `*.ckpt` (a pickle: import only files you trust) or `*.safetensors`.
        checkpoint: PathBuf,
        /// Run directory to write (config.toml, data.json, import.json, a step-0 checkpoint).
        #[arg(long)]
        out: PathBuf,
        /// Also export a policy package here.
        #[arg(long)]
        package: Option<PathBuf>,
        /// Upstream's hydra config.yaml for a safetensors state dict (default: `<stem>.yaml`
        /// next to it, or the run directory's `.hydra/config.yaml`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Deploy the online model instead of the EMA model (upstream evaluates the EMA model).
        #[arg(long)]
        online: bool,
        #[arg(long)]
        name: Option<String>,
        /// `UPSTREAM=KEY`, repeatable: the dataset key of an upstream camera (default
        /// `observation.images.<upstream key>`), e.g. `head_cam=observation.images.head`.
        #[arg(long = "camera", value_name = "UPSTREAM=KEY")]
        cameras: Vec<String>,
    },
    /// Apply the health rules to a run's metrics; print verdicts, write plots and health.json.
    Health { run_dir: PathBuf },
    /// Two arms side by side at equal training progress (seed 004): eval results
    /// (success, time to success, outcomes), losses, gate and router statistics, the
    /// differences in percent and whether each is inside the run-to-run noise.
    Compare {
        /// Arm A: a run directory, or several (seeds) separated by commas.
        a: String,
        /// Arm B: a run directory, or several (seeds) separated by commas.
        b: String,
        /// Compare at this step (default: the last step every run reached).
        #[arg(long)]
        at: Option<u64>,
        /// `maniflow eval --json` reports of arm A's runs, comma-separated in the same order
        /// (default: RUN/eval.json where present).
        #[arg(long = "eval-a", value_delimiter = ',')]
        eval_a: Vec<PathBuf>,
        /// The same for arm B.
        #[arg(long = "eval-b", value_delimiter = ',')]
        eval_b: Vec<PathBuf>,
        /// Names of the arms in the report (default: their run directory names).
        #[arg(long)]
        label_a: Option<String>,
        #[arg(long)]
        label_b: Option<String>,
        /// Also write compare.md, compare.json and PNG curves of both arms here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Pretrain the tactile MAE (seed 001, joint static + dynamic) on a dataset's
    /// pressure images (`observation.tactile_image`, recorded by `maniflow record`).
    PretrainTactile {
        /// LeRobot v3.0 dataset with a pressure image feature.
        #[arg(long)]
        dataset: PathBuf,
        /// Run directory (config, data.json, metrics, TensorBoard, plots, checkpoints).
        #[arg(long)]
        out: PathBuf,
        /// Config (default: the defaults of trainer/configs/tactile-mae.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Epochs (overrides pretrain.epochs; a resumed run may be extended).
        #[arg(long)]
        epochs: Option<u64>,
        /// Continue from the run directory's last checkpoint, bit-exactly.
        #[arg(long)]
        resume: bool,
        /// Where to train: cpu, cuda, cuda:N (overrides pretrain.device).
        #[arg(long)]
        device: Option<String>,
        /// No progress bar; one line per epoch.
        #[arg(long)]
        quiet: bool,
    },
    /// Write a small synthetic LeRobot v3.0 dataset with the SO-101 layout.
    SynthDataset {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 40)]
        episodes: usize,
        #[arg(long, default_value_t = 60)]
        frames: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Store cameras as video (av1 | h264) instead of images.
        #[arg(long)]
        video: Option<String>,
    },
    /// Training-step throughput on random data, optionally next to the PyTorch reference.
    Bench {
        #[arg(long)]
        config: String,
        #[arg(long)]
        batch: Option<usize>,
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// Also time the PyTorch reference (trainer/tests/reference/maniflow_ref.py) in this run.
        #[arg(long)]
        reference: bool,
        #[arg(long)]
        threads: Option<usize>,
        /// cpu, cuda, cuda:N (default: the config's `train.device`).
        #[arg(long)]
        device: Option<String>,
        /// off or bf16 (CUDA only; default: the config's `train.autocast`).
        #[arg(long, value_parser = parse_autocast)]
        autocast: Option<maniflow_trainer::cuda::Autocast>,
        /// Time each phase of the step (augmentation, encoder, loss, backward, grad norm, AdamW, EMA).
        #[arg(long)]
        profile: bool,
    },
    /// The trainer's GPU check: one step on the GPU vs the CPU, bf16 vs f32,
    /// and steps/s next to PyTorch eager on the same GPU.
    GpuCheck {
        #[arg(long, default_value = "upstream-image")]
        config: String,
        #[arg(long)]
        batch: Option<usize>,
        #[arg(long, default_value = "cuda:0")]
        device: String,
        /// Timed steps per throughput measurement.
        #[arg(long, default_value_t = 20)]
        steps: usize,
        /// Skip the PyTorch reference.
        #[arg(long)]
        no_reference: bool,
        /// Relative tolerance, GPU vs CPU: loss and 1 - gradient cosine (10x for
        /// the gradient norm; cuDNN convolutions may use TF32).
        #[arg(long, default_value_t = 1e-3)]
        tol: f64,
    },
    /// Print a resolved preset config (to start your own).
    Preset { name: String },
    /// Report the libtorch this binary runs on and the devices it sees.
    Info,
}

fn main() {
    let cli = Cli::parse();
    maniflow_trainer::malloc::keep_freed_memory();
    let r = match cli.command {
        Command::Train { config, dataset, out, steps, resume, init, quiet, device } => match act::act_config_text(&config) {
            Ok(Some(text)) => train_act(text, &dataset, &out, steps, resume, init.as_deref(), quiet, device.as_deref()),
            Ok(None) => cli_train::train(&config, &dataset, &out, steps, resume, init.as_deref(), quiet, device.as_deref()),
            Err(e) => Err(e),
        },
        Command::Export { run_dir, out, ema, checkpoint, name } if act::train::run_dir_is_act(&run_dir) => {
            if ema {
                Err(anyhow::anyhow!("--ema: ACT runs keep no EMA weights (LeRobot trains ACT without EMA)"))
            } else {
                act::export::export(&run_dir, &out, checkpoint.as_deref(), name.as_deref()).map(|r| {
                    println!("exported {} from {}", r.out.display(), r.checkpoint.display());
                    println!(
                        "parity (ONNX Runtime vs tch, random inputs): act {:.3e}, runtime pipeline {:.3e} (limit {:.0e})",
                        r.graph_err,
                        r.pipeline_err,
                        export::PARITY_TOL
                    );
                })
            }
        }
        Command::Export { run_dir, out, ema, checkpoint, name } => {
            export::export(&run_dir, &out, ema, checkpoint.as_deref(), name.as_deref()).map(|r| {
                println!("exported {} from {}", r.out.display(), r.checkpoint.display());
                println!(
                    "parity (ONNX Runtime vs tch, random inputs): encoder {:.3e}, velocity {:.3e}, runtime pipeline {:.3e} (limit {:.0e})",
                    r.encoder_err,
                    r.velocity_err,
                    r.pipeline_err,
                    export::PARITY_TOL
                );
            })
        }
        Command::Health { run_dir } => health_cmd(&run_dir),
        Command::Compare { a, b, at, eval_a, eval_b, label_a, label_b, out } => {
            use maniflow_trainer::compare::{Arm, CompareOptions};
            let dirs = |s: &str| s.split(',').filter(|x| !x.is_empty()).map(PathBuf::from).collect::<Vec<_>>();
            Arm::load("A", label_a.as_deref(), &dirs(&a), &eval_a)
                .and_then(|arm_a| Ok((arm_a, Arm::load("B", label_b.as_deref(), &dirs(&b), &eval_b)?)))
                .and_then(|(arm_a, arm_b)| maniflow_trainer::compare::run(&arm_a, &arm_b, &CompareOptions { at, out }).map(|_| ()))
        }
        Command::PretrainTactile { dataset, out, config, epochs, resume, device, quiet } => {
            pretrain_tactile_cmd(&dataset, &out, config.as_deref(), maniflow_trainer::tactile_mae::pretrain::PretrainOptions { resume, epochs, device, quiet })
        }
        Command::Import { checkpoint, out, package, config, online, name, cameras } => import_cmd(&maniflow_trainer::import::ImportOptions {
            checkpoint: &checkpoint,
            out: &out,
            package: package.as_deref(),
            config: config.as_deref(),
            online,
            name: name.as_deref(),
            cameras: &cameras,
        }),
        Command::SynthDataset { out, episodes, frames, seed, video } => cli_train::synth(&out, episodes, frames, seed, video.as_deref()),
        Command::Bench { config, batch, steps, reference, threads, device, autocast, profile } => {
            bench::run(&config, &bench::BenchOptions { batch, steps, reference, threads, device, autocast, profile })
        }
        Command::GpuCheck { config, batch, device, steps, no_reference, tol } => {
            let o = maniflow_trainer::gpu_check::GpuCheckOptions { config, batch, device, steps, reference: !no_reference, tol };
            maniflow_trainer::gpu_check::run(&o).and_then(|ok| if ok { Ok(()) } else { bail!("GPU step differs from the CPU step beyond --tol {tol:e}") })
        }
        Command::Preset { name } => presets::get(&name).map(|t| print!("{t}")),
        Command::Info => info(),
    };
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn import_cmd(o: &maniflow_trainer::import::ImportOptions) -> Result<()> {
    let r = maniflow_trainer::import::import(o)?;
    let src = &r.source;
    println!(
        "imported {} ({} weights, upstream step {}, task {}): {} parameters",
        o.checkpoint.display(),
        src["weights"].as_str().unwrap_or("?"),
        src["global_step"],
        src["task_name"].as_str().unwrap_or("-"),
        r.parameters
    );
    println!("cameras {}; state {}; normaliser from {} ({})", src["cameras"], src["state"], src["normalizer"].as_str().unwrap_or("?"), src["normalizer_modes"]);
    for n in &r.notes {
        println!("note: {n}");
    }
    println!("run {} (checkpoint {}); continue training with `maniflow-train train --resume --config {0}/config.toml --out {0} --dataset ...`", r.run.display(), r.checkpoint.display());
    if let Some(p) = &r.package {
        println!(
            "package {}: parity (ONNX Runtime vs tch, random inputs): encoder {:.3e}, velocity {:.3e}, runtime pipeline {:.3e} (limit {:.0e})",
            p.out.display(),
            p.encoder_err,
            p.velocity_err,
            p.pipeline_err,
            export::PARITY_TOL
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn train_act(
    text: (String, String),
    dataset: &std::path::Path,
    out: &std::path::Path,
    steps: Option<u64>,
    resume: bool,
    init: Option<&std::path::Path>,
    quiet: bool,
    device: Option<&str>,
) -> Result<()> {
    if resume {
        bail!("--resume is not supported for ACT runs yet; start a new run with --init <checkpoint dir>");
    }
    let s = act::train::train((&text.0, text.1), dataset, out, steps, init, quiet, device)?;
    println!(
        "trained {} steps in {:.1}s ({:.2} steps/s); l1_loss {:.4}; state_attention_ratio {:.3} -> {:.3}; run {}",
        s.steps,
        s.seconds,
        s.steps as f64 / s.seconds.max(1e-9),
        s.last_l1,
        s.first_state_ratio,
        s.last_state_ratio,
        out.display()
    );
    Ok(())
}

fn pretrain_tactile_cmd(
    dataset: &std::path::Path,
    out: &std::path::Path,
    config: Option<&std::path::Path>,
    o: maniflow_trainer::tactile_mae::pretrain::PretrainOptions,
) -> Result<()> {
    let s = maniflow_trainer::tactile_mae::pretrain::pretrain(config, dataset, out, &o)?;
    println!(
        "pretrained {} steps ({} epochs) in {:.1}s: best epoch {} (loss_total {:.5}); {} non-finite steps, {} spikes; run {}",
        s.steps,
        s.epochs,
        s.total_time_seconds,
        s.best_epoch,
        s.best_loss,
        s.nonfinite_steps,
        s.spikes,
        out.display()
    );
    if let Some(m) = s.last_epoch {
        println!(
            "last epoch: loss_static {:.5} loss_dynamic {:.5} loss_ratio {:.3}; `maniflow-train health {}` for the verdict",
            m.loss_static,
            m.loss_dynamic,
            m.loss_ratio,
            out.display()
        );
    }
    Ok(())
}

fn health_cmd(run: &std::path::Path) -> Result<()> {
    let report = health::analyse(run)?;
    report.print();
    let p = run.join("health.json");
    std::fs::write(&p, report.to_json()).with_context(|| format!("write {}", p.display()))?;
    let records = maniflow_trainer::metrics::read_jsonl(&run.join("metrics.jsonl"))?;
    let plots = health::plots::write_all(run, &records)?;
    for p in plots {
        println!("plot  {}", p.display());
    }
    println!("report {}", p.display());
    Ok(())
}

fn parse_autocast(s: &str) -> Result<maniflow_trainer::cuda::Autocast, String> {
    match s {
        "off" => Ok(maniflow_trainer::cuda::Autocast::Off),
        "bf16" => Ok(maniflow_trainer::cuda::Autocast::Bf16),
        _ => Err(format!("`{s}`: expected off or bf16")),
    }
}

fn info() -> Result<()> {
    let lib = loaded_libtorch().unwrap_or_else(|| "unknown".into());
    println!("libtorch      {lib}");
    let cuda = match maniflow_trainer::cuda::require(tch::Device::Cuda(0)) {
        Ok(()) => format!("available, {} device(s)", tch::Cuda::device_count()),
        Err(e) => format!("not usable: {e}"),
    };
    println!("cuda          {cuda}");
    println!("threads       {}", tch::get_num_threads());
    let a = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).reshape([2, 2]);
    let b = a.matmul(&a);
    let v: Vec<f32> = b.reshape([-1]).try_into()?;
    println!("cpu matmul    [[1,2],[3,4]]^2 = {v:?}");
    if v != [7.0, 10.0, 15.0, 22.0] {
        bail!("libtorch computed a wrong matmul: {v:?}");
    }
    Ok(())
}

/// The libtorch_cpu.so this process mapped, from /proc/self/maps.
fn loaded_libtorch() -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.contains("libtorch_cpu"))
        .map(str::to_string)
}
