//! `maniflow-train pretrain-tactile`: the tactile MAE's joint (mode 2) training
//! loop with seed 001's metrics at three levels.
//!
//! - Every step: the 13 `batch/*` metrics of [`JointScalars::batch_metrics`],
//!   `batch/lr`, `batch/epoch`, `batch/iteration` (the optimiser step: no
//!   gradient accumulation) and `grad_norm`.
//! - At the end of every epoch: `epoch`, `epoch/train_loss` (mean `loss_total`),
//!   `epoch/lr`, `epoch/best_loss_so_far`, the means of `loss_static`,
//!   `loss_dynamic`, `loss_ratio`, `weighted_static`, `weighted_dynamic`, and
//!   `epoch/actual_{static,dynamic}_contribution` =
//!   `alpha mean(static) / (alpha mean(static) + beta mean(dynamic))` and the rest.
//! - At the end: `summary/best_epoch`, `summary/best_loss`,
//!   `summary/total_time_seconds` (also in `RUN/summary.json`).
//!
//! Written to `metrics.jsonl` and TensorBoard (`tb/`), with PNG plots in
//! `plots/` at the end. Steps whose loss is not finite are skipped, counted and
//! left out of the epoch means; the same guards as ManiFlow training apply
//! (non-finite steps abort after `max_consecutive_nonfinite` in a row, loss
//! spikes are logged and skipped). Checkpoints are written atomically at epoch
//! ends; `--resume` continues bit-exactly (the masking draws are seeded per step).

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tch::nn::VarStore;

use super::config::PretrainConfig;
use super::data::{TactileClips, TactileDataInfo};
use super::model::TactileMae;
use super::objective::JointScalars;
use crate::checkpoint::{self, Saved, TrainState};
use crate::metrics::{LoggerOptions, MetricsLogger};
use crate::train::{clip_scale, copy_vars, epoch_batch, guard_step, injected, lr_at, parse_device, sorted_vars, AdamW, Guards, SpikeDetector};

/// Command-line overrides.
#[derive(Debug, Clone, Default)]
pub struct PretrainOptions {
    pub resume: bool,
    pub epochs: Option<u64>,
    pub device: Option<String>,
    pub quiet: bool,
}

/// Seed 001's summary, plus the last epoch's means.
#[derive(Debug, Clone, Serialize)]
pub struct PretrainSummary {
    #[serde(rename = "summary/best_epoch")]
    pub best_epoch: u64,
    #[serde(rename = "summary/best_loss")]
    pub best_loss: f64,
    #[serde(rename = "summary/total_time_seconds")]
    pub total_time_seconds: f64,
    pub steps: u64,
    pub epochs: u64,
    pub nonfinite_steps: u64,
    pub spikes: u64,
    pub last_epoch: Option<EpochMeans>,
}

/// Means of one epoch's finite steps.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct EpochMeans {
    pub steps: u64,
    pub loss_total: f64,
    pub loss_static: f64,
    pub loss_dynamic: f64,
    pub loss_ratio: f64,
    pub weighted_static: f64,
    pub weighted_dynamic: f64,
}

impl EpochMeans {
    fn add(&mut self, s: &JointScalars) {
        self.steps += 1;
        self.loss_total += s.loss_total;
        self.loss_static += s.loss_static;
        self.loss_dynamic += s.loss_dynamic;
        self.loss_ratio += s.loss_ratio;
        self.weighted_static += s.weighted_static;
        self.weighted_dynamic += s.weighted_dynamic;
    }

    fn mean(&self) -> EpochMeans {
        let n = self.steps.max(1) as f64;
        EpochMeans {
            steps: self.steps,
            loss_total: self.loss_total / n,
            loss_static: self.loss_static / n,
            loss_dynamic: self.loss_dynamic / n,
            loss_ratio: self.loss_ratio / n,
            weighted_static: self.weighted_static / n,
            weighted_dynamic: self.weighted_dynamic / n,
        }
    }
}

/// Seed 001's epoch metrics of epoch `epoch` (means from [`EpochMeans::mean`]).
pub fn epoch_metrics(epoch: u64, m: &EpochMeans, lr: f64, best: f64, alpha: f64, beta: f64) -> Vec<(&'static str, f64)> {
    let (ws, wd) = (alpha * m.loss_static, beta * m.loss_dynamic);
    vec![
        ("epoch", epoch as f64),
        ("epoch/train_loss", m.loss_total),
        ("epoch/lr", lr),
        ("epoch/best_loss_so_far", best),
        ("epoch/loss_static", m.loss_static),
        ("epoch/loss_dynamic", m.loss_dynamic),
        ("epoch/loss_ratio", m.loss_ratio),
        ("epoch/weighted_static", m.weighted_static),
        ("epoch/weighted_dynamic", m.weighted_dynamic),
        ("epoch/actual_static_contribution", ws / (ws + wd)),
        ("epoch/actual_dynamic_contribution", wd / (ws + wd)),
    ]
}

const BEST_LOSS: &str = "best_loss";
const BEST_EPOCH: &str = "best_epoch";
const SECONDS: &str = "seconds";

/// The run's config: its own on `--resume`, else `config` (or the defaults).
fn run_config(config: Option<&Path>, out: &Path, o: &PretrainOptions) -> Result<PretrainConfig> {
    let own = out.join("config.toml");
    let mut cfg = if o.resume {
        if !own.exists() {
            bail!("--resume: {} has no config.toml (not a pretraining run)", out.display());
        }
        if config.is_some() {
            eprintln!("note: --resume uses the run's own {}", own.display());
        }
        PretrainConfig::load(&own)?
    } else {
        if checkpoint::latest(out)?.is_some() {
            bail!("{} already holds a run; pass --resume to continue it or choose another --out", out.display());
        }
        match config {
            Some(p) => PretrainConfig::load(p)?,
            None => PretrainConfig::default(),
        }
    };
    if let Some(e) = o.epochs {
        cfg.pretrain.epochs = e;
    }
    if let Some(d) = &o.device {
        cfg.pretrain.device = d.clone();
    }
    cfg.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(cfg)
}

/// The data a resumed run continues on must be the data it started on.
fn check_same_data(out: &Path, now: &TactileDataInfo) -> Result<()> {
    let p = out.join("data.json");
    let text = std::fs::read_to_string(&p).with_context(|| format!("--resume: reading {}", p.display()))?;
    let then: TactileDataInfo = serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
    if (then.clips, then.image, then.mean, then.std) != (now.clips, now.image, now.mean, now.std) {
        bail!(
            "--resume: the dataset differs from the run's ({}: {} clips, mean {} std {}; now {} clips, mean {} std {})",
            p.display(),
            then.clips,
            then.mean,
            then.std,
            now.clips,
            now.mean,
            now.std
        );
    }
    Ok(())
}

fn write_json(path: &Path, v: &impl Serialize) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(v)?).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} -> {}", tmp.display(), path.display()))
}

/// Pretrains on `dataset`'s pressure images into the run directory `out`.
pub fn pretrain(config: Option<&Path>, dataset: &Path, out: &Path, o: &PretrainOptions) -> Result<PretrainSummary> {
    let cfg = run_config(config, out, o)?;
    let device = parse_device(&cfg.pretrain.device)?;
    let t0 = Instant::now();
    let data = TactileClips::load(dataset, &cfg, device)?;
    eprintln!(
        "dataset {}: {} episodes, {} frames of {} ({}x{}), {} clips with contact (of {}); pressure mean {:.4} std {:.4}; loaded in {:.1}s",
        dataset.display(),
        data.info.episodes,
        data.info.frames,
        data.info.key,
        data.info.image.0,
        data.info.image.1,
        data.len(),
        data.info.clips_all,
        data.info.mean,
        data.info.std,
        t0.elapsed().as_secs_f64()
    );
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    if o.resume {
        check_same_data(out, &data.info)?;
    } else {
        write_json(&out.join("data.json"), &data.info)?;
    }
    std::fs::write(out.join("config.toml"), cfg.to_toml()).with_context(|| format!("writing {}/config.toml", out.display()))?;
    let mut run = Run::new(cfg, out, &data, device)?;
    if o.resume {
        run.resume()?;
    }
    run.train(o.quiet)
}

/// One pretraining run: model, optimiser, state.
struct Run<'a> {
    cfg: PretrainConfig,
    out: std::path::PathBuf,
    data: &'a TactileClips,
    vs: VarStore,
    mae: TactileMae,
    opt: AdamW,
    state: TrainState,
}

impl<'a> Run<'a> {
    fn new(cfg: PretrainConfig, out: &Path, data: &'a TactileClips, device: tch::Device) -> Result<Self> {
        tch::manual_seed(cfg.pretrain.seed as i64);
        let vs = VarStore::new(device);
        let mae = TactileMae::new(&vs.root(), &cfg.tactile_mae).map_err(|e| anyhow::anyhow!("{e}"))?;
        let opt = AdamW::new(&vs, true);
        let mut state = TrainState::new(cfg.sha(), cfg.pretrain.seed);
        state.extra = [(BEST_LOSS.to_string(), f64::INFINITY), (BEST_EPOCH.to_string(), 0.0), (SECONDS.to_string(), 0.0)].into();
        Ok(Run { cfg, out: out.to_path_buf(), data, vs, mae, opt, state })
    }

    fn resume(&mut self) -> Result<()> {
        let ckpt = checkpoint::latest(&self.out)?.with_context(|| format!("--resume: {} has no complete checkpoint", self.out.display()))?;
        let st = checkpoint::read_state(&ckpt)?;
        if st.config_sha256 != self.state.config_sha256 {
            bail!("--resume: {} was written with another config (sha256 {} vs {})", ckpt.display(), st.config_sha256, self.state.config_sha256);
        }
        let model = ckpt.join("model.safetensors");
        copy_vars(&mut self.vs, &checkpoint::read_tensors(&model)?, &model.display().to_string())?;
        self.opt.load_state(checkpoint::read_tensors(&ckpt.join("optimizer.safetensors"))?)?;
        self.state = st;
        eprintln!("resumed from {} (step {}, epoch {})", ckpt.display(), self.state.step, self.state.epoch);
        Ok(())
    }

    fn save(&self) -> Result<std::path::PathBuf> {
        checkpoint::save(
            &self.out,
            &Saved { model: &sorted_vars(&self.vs), ema: None, optimizer: &self.opt.state_tensors(), state: &self.state },
        )
    }

    fn steps_per_epoch(&self) -> u64 {
        (self.data.len() / self.cfg.pretrain.batch_size).max(1) as u64
    }

    fn train(&mut self, quiet: bool) -> Result<PretrainSummary> {
        let p = self.cfg.pretrain.clone();
        let spe = self.steps_per_epoch();
        let total = p.epochs * spe;
        let warmup = (p.warmup_epochs * spe as f64).round() as u64;
        let mut logger = MetricsLogger::new(&self.out, total, LoggerOptions { quiet, print_every: spe, start_step: self.state.step, ..Default::default() })?;
        let mut spikes = SpikeDetector::new(p.spike_window, p.spike_factor, self.state.spike_window.clone());
        let guards = Guards { max_consecutive_nonfinite: p.max_consecutive_nonfinite, spike_factor: p.spike_factor, skip_on_spike: p.spike_skip_update };
        let seconds_before = self.state.extra.get(SECONDS).copied().unwrap_or(0.0);
        let start = Instant::now();
        let mut acc = EpochMeans::default();
        let mut last_epoch = None;
        while self.state.step < total {
            let step = self.state.step + 1;
            tch::manual_seed(p.seed.wrapping_mul(1_000_003).wrapping_add(step) as i64);
            let (epoch, idx) = epoch_batch(self.data.len(), p.batch_size, p.seed, step);
            self.state.epoch = epoch;
            let clips = self.data.batch(&idx);
            let mut j = self.mae.joint_loss(&clips, p.alpha, p.beta);
            if injected(step, "nan") {
                j.loss_static = j.loss_static * f64::NAN;
                j.total = &j.total * f64::NAN;
            }
            self.opt.zero_grad();
            j.total.backward();
            let s = j.scalars();
            let grad_norm = if s.loss_total.is_finite() { self.opt.grad_norm() } else { f64::NAN };
            let what = format!("clips {:?}", &idx[..idx.len().min(8)]);
            let skip = guard_step(&mut self.state, &mut spikes, &mut logger, &self.out, step, s.loss_total, grad_norm, &guards, &what)?;
            let lr = lr_at(step, p.lr, warmup, total);
            if !skip {
                self.opt.step(lr, p.betas, p.eps, p.weight_decay, clip_scale(grad_norm, p.grad_clip));
                acc.add(&s);
            }
            self.opt.zero_grad();
            self.state.step = step;
            let mut m: Vec<(&str, f64)> = s.batch_metrics().to_vec();
            m.extend([("batch/lr", lr), ("batch/epoch", epoch as f64), ("batch/iteration", step as f64), ("grad_norm", grad_norm)]);
            logger.log(step, epoch, &m);
            if step % spe == 0 {
                let means = acc.mean();
                last_epoch = Some(means);
                self.end_epoch(&mut logger, epoch, &means, lr, seconds_before + start.elapsed().as_secs_f64());
                acc = EpochMeans::default();
                if (epoch + 1) % p.checkpoint_every_epochs == 0 || step == total {
                    self.state.spike_window = spikes.window.iter().copied().collect();
                    let c = self.save()?;
                    logger.event(step, format!("checkpoint {}", c.display()));
                }
            }
        }
        let summary = self.finish(&mut logger, seconds_before + start.elapsed().as_secs_f64(), last_epoch)?;
        Ok(summary)
    }

    /// Logs the epoch metrics and tracks the best epoch (by `epoch/train_loss`).
    fn end_epoch(&mut self, logger: &mut MetricsLogger, epoch: u64, m: &EpochMeans, lr: f64, seconds: f64) {
        let best = self.state.extra.get(BEST_LOSS).copied().unwrap_or(f64::INFINITY);
        if m.steps > 0 && m.loss_total < best {
            self.state.extra.insert(BEST_LOSS.into(), m.loss_total);
            self.state.extra.insert(BEST_EPOCH.into(), epoch as f64);
        }
        self.state.extra.insert(SECONDS.into(), seconds);
        let best = self.state.extra[BEST_LOSS];
        let p = &self.cfg.pretrain;
        logger.log(self.state.step, epoch, &epoch_metrics(epoch, m, lr, best, p.alpha, p.beta));
    }

    fn finish(&mut self, logger: &mut MetricsLogger, seconds: f64, last_epoch: Option<EpochMeans>) -> Result<PretrainSummary> {
        let s = PretrainSummary {
            best_epoch: self.state.extra.get(BEST_EPOCH).copied().unwrap_or(0.0) as u64,
            best_loss: self.state.extra.get(BEST_LOSS).copied().unwrap_or(f64::NAN),
            total_time_seconds: seconds,
            steps: self.state.step,
            epochs: self.cfg.pretrain.epochs,
            nonfinite_steps: self.state.nonfinite_total,
            spikes: self.state.spikes_total,
            last_epoch,
        };
        logger.log(
            self.state.step,
            self.state.epoch,
            &[("summary/best_epoch", s.best_epoch as f64), ("summary/best_loss", s.best_loss), ("summary/total_time_seconds", s.total_time_seconds)],
        );
        logger.flush();
        write_json(&self.out.join("summary.json"), &s)?;
        let records = crate::metrics::read_jsonl(self.out.join("metrics.jsonl"))?;
        crate::health::plots::write_all(&self.out, &records)?;
        Ok(s)
    }
}
