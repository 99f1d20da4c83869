//! The training loop: consistency flow training with EMA, AdamW, warm-up +
//! cosine, gradient clipping, stability guards, metrics and checkpoints.

use crate::augment::augment;
use crate::checkpoint::{self, Saved, TrainState};
use crate::config::Config;
use crate::data::{Batch, TrainData};
use crate::metrics::{stats, MetricsLogger, LoggerOptions};
use crate::model::ditx::Recorder;
use crate::model::{ManiFlowNet, Obs};
use crate::objective::{consistency_flow_loss, LossParts};
use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

fn default_device_name() -> String {
    "cpu".into()
}

pub fn parse_device(s: &str) -> Result<Device> {
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        s if s.starts_with("cuda:") => {
            let n: usize = s[5..].parse().with_context(|| format!("bad device `{s}`"))?;
            Ok(Device::Cuda(n))
        }
        _ => bail!("unknown device `{s}` (expected cpu, cuda or cuda:N)"),
    }
    .and_then(|d| crate::cuda::require(d).map(|()| d))
}

/// AdamW with decoupled weight decay, written out so its state can be saved
/// and restored exactly (torch.optim.AdamW semantics, foreach-free).
pub struct AdamW {
    pub names: Vec<String>,
    params: Vec<Tensor>,
    decay: Vec<bool>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Per-parameter learning-rate multiplier (parameter groups).
    lr_mult: Vec<f64>,
    pub step: u64,
    /// Room for the largest parameter, reused by every step for g^2 and the
    /// denominator: no step allocates (a fresh temporary per tensor costs
    /// its page faults every step: 193 M parameters in upstream-image).
    scratch: Option<Tensor>,
}

fn no_decay_name(name: &str) -> bool {
    name.ends_with(".bias")
        || name.contains("norm")
        || name.contains(".bn")
        || name.contains("downsample.1")
        || name.ends_with("pos_emb")
        || name.ends_with("vis_cond_pos_embed")
        || name.contains("modality_gate")
}

impl AdamW {
    pub fn new(vs: &VarStore, no_decay_norm_bias: bool) -> Self {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let names: Vec<String> = vars.iter().map(|(n, _)| n.clone()).collect();
        let decay = names.iter().map(|n| !(no_decay_norm_bias && no_decay_name(n))).collect();
        let m = vars.iter().map(|(_, p)| p.zeros_like()).collect();
        let v = vars.iter().map(|(_, p)| p.zeros_like()).collect();
        let lr_mult = vec![1.0; names.len()];
        let params: Vec<Tensor> = vars.into_iter().map(|(_, p)| p).collect();
        let scratch = params
            .iter()
            .max_by_key(|p| p.numel())
            .map(|p| Tensor::empty([p.numel() as i64], (p.kind(), p.device())));
        AdamW { names, params, decay, m, v, lr_mult, step: 0, scratch }
    }

    /// Scale the learning rate of every parameter whose name satisfies `pick`
    /// (a second parameter group, e.g. LeRobot's backbone lr).
    pub fn set_lr_multiplier(&mut self, pick: impl Fn(&str) -> bool, mult: f64) {
        for (n, m) in self.names.iter().zip(self.lr_mult.iter_mut()) {
            if pick(n) {
                *m = mult;
            }
        }
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.detach_();
                let _ = g.zero_();
            }
        }
    }

    /// Total L2 norm of the gradients (before clipping).
    pub fn grad_norm(&self) -> f64 {
        self.grad_sq().double_value(&[]).sqrt()
    }

    /// Sum of squared gradients as a Double scalar on the parameters' device
    /// (summed in parameter order, so the host value equals the old sequential sum).
    pub fn grad_sq(&self) -> Tensor {
        let mut acc: Option<Tensor> = None;
        for p in &self.params {
            let g = p.grad();
            if g.defined() {
                // the norm in the gradient's precision (no f64 copy of every gradient), squared in f64
                let s = g.norm().to_kind(Kind::Double).square();
                acc = Some(match acc {
                    None => s,
                    Some(a) => a + s,
                });
            }
        }
        acc.unwrap_or_else(|| Tensor::zeros([], (Kind::Double, Device::Cpu)))
    }

    /// One AdamW step (torch.optim.AdamW's update, decoupled weight decay) on the gradients
    /// scaled by `clip_scale`, in place: the gradients are scaled where they lie (they are
    /// zeroed after every step) and the moments and the update need one temporary per tensor
    /// (g^2, then the denominator), which matters for the 193 M-parameter upstream-image model.
    pub fn step(&mut self, lr: f64, betas: [f64; 2], eps: f64, wd: f64, clip_scale: f64) {
        self.step += 1;
        let k = self.step as i32;
        let (b1, b2) = (betas[0], betas[1]);
        let bc1 = 1.0 - b1.powi(k);
        let bc2 = 1.0 - b2.powi(k);
        tch::no_grad(|| {
            for i in 0..self.params.len() {
                let mut g = self.params[i].grad();
                // frozen (a stage's `frozen`, a frozen tactile encoder): no update, no decay
                if !g.defined() || !self.params[i].requires_grad() {
                    continue;
                }
                if clip_scale != 1.0 {
                    let _ = g.g_mul_scalar_(clip_scale);
                }
                let lr = lr * self.lr_mult[i];
                if self.decay[i] && wd > 0.0 {
                    let _ = self.params[i].g_mul_scalar_(1.0 - lr * wd);
                }
                let mut tmp = self.temporary(i);
                let _ = self.m[i].lerp_(&g, 1.0 - b1); // m = b1 m + (1 - b1) g
                let _ = g.square_out(&tmp);
                let _ = self.v[i].lerp_(&tmp, 1.0 - b2); // v = b2 v + (1 - b2) g^2
                if lr == 0.0 {
                    continue;
                }
                // p -= lr / bc1 * m / (sqrt(v / bc2) + eps), as p += m / denom'
                let _ = self.v[i].sqrt_out(&tmp);
                let denom = &mut tmp;
                let _ = denom.g_div_scalar_(bc2.sqrt());
                let _ = denom.g_add_scalar_(eps);
                let _ = denom.g_mul_scalar_(-bc1 / lr);
                let _ = self.params[i].addcdiv_(&self.m[i], &*denom);
            }
        });
    }

    /// A tensor shaped like parameter `i` in the scratch buffer (a fresh one
    /// where the scratch does not fit: another dtype or device).
    fn temporary(&self, i: usize) -> Tensor {
        let p = &self.params[i];
        match &self.scratch {
            Some(s) if s.kind() == p.kind() && s.device() == p.device() && s.numel() >= p.numel() => {
                s.narrow(0, 0, p.numel() as i64).view(p.size().as_slice())
            }
            _ => p.empty_like(),
        }
    }

    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, n) in self.names.iter().enumerate() {
            out.push((format!("exp_avg.{n}"), self.m[i].shallow_clone()));
            out.push((format!("exp_avg_sq.{n}"), self.v[i].shallow_clone()));
        }
        out.push(("step".into(), Tensor::from_slice(&[self.step as i64])));
        out
    }

    pub fn load_state(&mut self, ts: Vec<(String, Tensor)>) -> Result<()> {
        let map: std::collections::HashMap<String, Tensor> = ts.into_iter().collect();
        tch::no_grad(|| -> Result<()> {
            for (i, n) in self.names.iter().enumerate() {
                for (pre, dst) in [("exp_avg", &mut self.m[i]), ("exp_avg_sq", &mut self.v[i])] {
                    let key = format!("{pre}.{n}");
                    let src = map.get(&key).with_context(|| format!("optimizer state has no `{key}`"))?;
                    dst.copy_(src);
                }
            }
            Ok(())
        })?;
        self.step = map
            .get("step")
            .map(|t| t.int64_value(&[]) as u64)
            .context("optimizer state has no `step`")?;
        Ok(())
    }
}

/// Warm-up then cosine to 0, stepped per batch (diffusers' schedule).
pub fn lr_at(step: u64, base: f64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        return base * step as f64 / warmup.max(1) as f64;
    }
    let prog = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    base * 0.5 * (1.0 + (std::f64::consts::PI * prog.min(1.0)).cos())
}

/// EMA decay after `k` optimiser steps (MANIFLOW.md section 4).
pub fn ema_decay(k: u64, max: f64) -> f64 {
    let s = k.saturating_sub(1) as f64;
    if s <= 0.0 {
        return 0.0;
    }
    (1.0 - (1.0 + s).powf(-0.75)).clamp(0.0, max)
}

pub fn sorted_vars(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

pub fn ema_update(ema: &VarStore, online: &VarStore, decay: f64) {
    let on = online.variables();
    tch::no_grad(|| {
        for (name, mut e) in ema.variables() {
            if let Some(p) = on.get(&name) {
                let _ = e.lerp_(p, 1.0 - decay); // e = decay e + (1 - decay) p, in place
            }
        }
    });
}

pub fn copy_vars(dst: &mut VarStore, src: &[(String, Tensor)], origin: &str) -> Result<()> {
    let map: std::collections::HashMap<&str, &Tensor> = src.iter().map(|(n, t)| (n.as_str(), t)).collect();
    tch::no_grad(|| -> Result<()> {
        for (name, mut v) in dst.variables() {
            let s = map.get(name.as_str()).with_context(|| format!("{origin}: no tensor `{name}`"))?;
            if s.size() != v.size() {
                bail!("{origin}: `{name}` has shape {:?}, the model needs {:?}", s.size(), v.size());
            }
            v.copy_(&s.to_device(v.device()));
        }
        Ok(())
    })
}

/// Running-median loss-spike detector (METRICS.md "Stability").
pub struct SpikeDetector {
    pub window: VecDeque<f64>,
    cap: usize,
    factor: f64,
}

impl SpikeDetector {
    pub fn new(cap: usize, factor: f64, init: Vec<f64>) -> Self {
        SpikeDetector { window: init.into(), cap: cap.max(1), factor }
    }
    pub fn median(&self) -> Option<f64> {
        if self.window.len() < 10.min(self.cap) {
            return None;
        }
        let mut v: Vec<f64> = self.window.iter().copied().collect();
        v.sort_by(|a, b| a.total_cmp(b));
        Some(v[v.len() / 2])
    }
    /// Returns Some(median) when `loss` is a spike. Spikes are not added to the window.
    pub fn check(&mut self, loss: f64) -> Option<f64> {
        let med = self.median();
        if let Some(m) = med {
            if loss > self.factor * m {
                return Some(m);
            }
        }
        self.window.push_back(loss);
        while self.window.len() > self.cap {
            self.window.pop_front();
        }
        None
    }
}

/// Window indices of optimiser step `step` (1-based) over `n` samples: a
/// per-epoch permutation seeded by (seed, epoch), drop_last. Returns (epoch, indices).
pub fn epoch_batch(n: usize, batch: usize, seed: u64, step: u64) -> (u64, Vec<usize>) {
    let spe = (n / batch).max(1) as u64;
    let epoch = (step - 1) / spe;
    let i = ((step - 1) % spe) as usize;
    let mut perm: Vec<usize> = (0..n).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9).wrapping_add(epoch));
    perm.shuffle(&mut rng);
    (epoch, perm[i * batch..(i + 1) * batch].to_vec())
}

/// Gradient scale that clips the total norm to `max` (0 = no clipping).
pub fn clip_scale(grad_norm: f64, max: f64) -> f64 {
    if max > 0.0 && grad_norm > max {
        max / (grad_norm + 1e-6)
    } else {
        1.0
    }
}

/// The stability guards' settings (METRICS.md "Stability").
pub struct Guards {
    pub max_consecutive_nonfinite: u32,
    pub spike_factor: f64,
    pub skip_on_spike: bool,
}

/// One step's stability guards: a non-finite loss or gradient skips the update
/// and is counted, `max_consecutive_nonfinite` in a row abort the run (the last
/// good checkpoint stays); a loss spike is logged with `what` (the batch) and
/// skips the update when `skip_on_spike`. Returns whether to skip the update.
#[allow(clippy::too_many_arguments)]
pub fn guard_step(
    state: &mut TrainState,
    spikes: &mut SpikeDetector,
    logger: &mut MetricsLogger,
    run: &Path,
    step: u64,
    lval: f64,
    grad_norm: f64,
    g: &Guards,
    what: &str,
) -> Result<bool> {
    if !lval.is_finite() || !grad_norm.is_finite() {
        state.nonfinite_run += 1;
        state.nonfinite_total += 1;
        logger.event(
            step,
            &format!(
                "nonfinite step {step}: loss {lval} grad_norm {grad_norm}; update skipped ({} in a row, abort at {}); {what}",
                state.nonfinite_run, g.max_consecutive_nonfinite
            ),
        );
        if state.nonfinite_run >= g.max_consecutive_nonfinite {
            logger.flush();
            bail!(
                "aborting: {} consecutive non-finite steps (last at step {step}); the last good checkpoint is kept in {}",
                state.nonfinite_run,
                checkpoint::checkpoints_dir(run).display()
            );
        }
        return Ok(true);
    }
    state.nonfinite_run = 0;
    if let Some(med) = spikes.check(lval) {
        state.spikes_total += 1;
        logger.event(
            step,
            &format!(
                "spike step {step}: loss {lval:.4} > {} x running median {med:.4}; {what}{}",
                g.spike_factor,
                if g.skip_on_spike { "; update skipped" } else { "" }
            ),
        );
        return Ok(g.skip_on_spike);
    }
    Ok(false)
}

/// Test hook: `MANIFLOW_TEST_INJECT=nan@5,nan@6,spike@30` corrupts those steps'
/// loss (nan: NaN loss; spike: x100 targets) to exercise the guards.
pub(crate) fn injected(step: u64, kind: &str) -> bool {
    std::env::var("MANIFLOW_TEST_INJECT")
        .map(|v| v.split(',').any(|e| e.trim() == format!("{kind}@{step}")))
        .unwrap_or(false)
}

pub struct Trainer<'a> {
    pub cfg: Config,
    pub run: PathBuf,
    pub data: &'a TrainData,
    pub vs: VarStore,
    pub net: ManiFlowNet,
    pub ema_vs: VarStore,
    pub ema: ManiFlowNet,
    pub opt: AdamW,
    pub state: TrainState,
    device: Device,
    /// Index of the `[[train.stages]]` entry applied last (None before the first step).
    stage: Option<usize>,
}

pub fn config_sha(cfg: &Config) -> String {
    // Hash everything except the step budget, so a run may be extended with
    // --steps, and the device, so a run may move between CPU and GPU.
    let mut c = cfg.clone();
    c.train.steps = 0;
    c.train.device = default_device_name();
    hex::encode(Sha256::digest(c.to_toml().as_bytes()))
}

impl<'a> Trainer<'a> {
    pub fn new(cfg: Config, run: &Path, data: &'a TrainData) -> Result<Self> {
        let device = parse_device(&cfg.train.device)?;
        if cfg.train.threads > 0 {
            tch::set_num_threads(cfg.train.threads as i32);
        }
        tch::manual_seed(cfg.train.seed as i64);
        let vs = VarStore::new(device);
        let net = ManiFlowNet::new(&vs.root(), &cfg, &data.dims)?;
        let mut ema_vs = VarStore::new(device);
        let ema = ManiFlowNet::new(&ema_vs.root(), &cfg, &data.dims)?;
        ema_vs.copy(&vs)?;
        ema_vs.freeze();
        let mut opt = AdamW::new(&vs, cfg.train.no_decay_norm_bias);
        if let Some(src) = &cfg.encoder.tactile_mae {
            // frozen: no gradient, so no update and no weight decay
            crate::tactile_mae::policy::set_frozen(&vs, src.freeze);
            opt.set_lr_multiplier(|n| n.starts_with(crate::tactile_mae::policy::POLICY_PREFIX), src.lr_scale);
        }
        let names: Vec<String> = vs.variables().into_keys().collect();
        crate::stages::check_frozen_prefixes(&cfg, &names)?;
        let state = TrainState::new(config_sha(&cfg), cfg.train.seed);
        Ok(Trainer { cfg, run: run.to_path_buf(), data, vs, net, ema_vs, ema, opt, state, device, stage: None })
    }

    /// Apply the stage of optimiser step `step` when it differs from the last one applied:
    /// its frozen parameters (plus a frozen tactile encoder) get no gradient, the others
    /// do again; the router temperature of the online and EMA networks; one event line.
    fn enter_stage(&mut self, step: u64, logger: &mut MetricsLogger) {
        let Some((i, stage)) = self.cfg.stage_at(step) else { return };
        if self.stage == Some(i) {
            return;
        }
        let mae_frozen = self.cfg.encoder.tactile_mae.as_ref().is_some_and(|s| s.freeze);
        let mut n_frozen = 0;
        for (name, t) in self.vs.variables() {
            let by_stage = crate::stages::frozen_by(stage, &name);
            n_frozen += usize::from(by_stage);
            let frozen = by_stage || (mae_frozen && name.starts_with(crate::tactile_mae::policy::POLICY_PREFIX));
            let _ = t.set_requires_grad(!frozen);
        }
        let tau = self.cfg.router_temperature_at(step);
        for net in [&self.net, &self.ema] {
            if let Some(h) = net.ditx.experts() {
                h.set_temperature(tau);
            }
        }
        logger.event(step, crate::stages::describe(&self.cfg, i, stage, step, n_frozen));
        self.stage = Some(i);
    }

    /// Parameters the optimiser updates (a frozen tactile encoder is not counted).
    pub fn parameter_count(&self) -> i64 {
        self.vs.trainable_variables().iter().filter(|t| t.requires_grad()).map(|t| t.numel() as i64).sum()
    }

    /// The pretrained tactile encoder into the online and EMA weights; the number of tensors.
    pub fn init_tactile_mae(&mut self, mae: &crate::tactile_mae::policy::PretrainedMae) -> Result<usize> {
        let tensors = mae.encoder_tensors()?;
        let origin = mae.checkpoint.join("model.safetensors");
        crate::tactile_mae::policy::init_policy(&mut self.vs, &tensors, &origin)?;
        crate::tactile_mae::policy::init_policy(&mut self.ema_vs, &tensors, &origin)
    }

    pub fn resume(&mut self, ckpt: &Path) -> Result<()> {
        let st = checkpoint::read_state(ckpt)?;
        if st.config_sha256 != self.state.config_sha256 {
            bail!(
                "{}: this checkpoint was made with a different config (sha256 {} vs {}); resume with the run's own config.toml",
                ckpt.display(),
                st.config_sha256,
                self.state.config_sha256
            );
        }
        let model = checkpoint::read_tensors(&ckpt.join("model.safetensors"))?;
        copy_vars(&mut self.vs, &model, &ckpt.join("model.safetensors").display().to_string())?;
        let ema = checkpoint::read_tensors(&ckpt.join("ema.safetensors"))?;
        copy_vars(&mut self.ema_vs, &ema, &ckpt.join("ema.safetensors").display().to_string())?;
        self.opt.load_state(checkpoint::read_tensors(&ckpt.join("optimizer.safetensors"))?)?;
        self.state = st;
        Ok(())
    }

    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        checkpoint::save(
            &self.run,
            &Saved {
                model: &sorted_vars(&self.vs),
                ema: Some(&sorted_vars(&self.ema_vs)),
                optimizer: &self.opt.state_tensors(),
                state: &self.state,
            },
        )
    }

    /// Window indices of optimiser step `step` (1-based): a per-epoch
    /// permutation seeded by (seed, epoch), drop_last.
    pub fn batch_indices(&self, step: u64) -> (u64, Vec<usize>) {
        epoch_batch(self.data.train.len(), self.cfg.train.batch_size, self.cfg.train.seed, step)
    }

    fn prepare_obs(&self, batch: &Batch, train: bool) -> Obs {
        let aug = train && self.cfg.encoder.augment;
        Obs {
            images: batch
                .obs
                .images
                .iter()
                .map(|x| {
                    if aug {
                        let s = x.size();
                        augment(&x.view([s[0] * s[1], s[2], s[3], s[4]])).view(s.as_slice())
                    } else {
                        x.shallow_clone()
                    }
                })
                .collect(),
            state: batch.obs.state.shallow_clone(),
            tactile: batch.obs.tactile.as_ref().map(|t| t.shallow_clone()),
        }
    }

    /// Objective on held-out episodes, no grad, eval mode, fixed noise.
    pub fn val_loss(&self) -> Option<f64> {
        let n = self.data.val.len();
        let b = self.cfg.train.batch_size;
        if n < 2 {
            return None;
        }
        let _g = tch::no_grad_guard();
        tch::manual_seed(self.cfg.train.seed as i64 ^ 0x5eed);
        let mut tot = 0.0;
        let mut cnt = 0.0;
        let stride = (n / (4 * b)).max(1);
        for chunk in (0..n).step_by(stride).collect::<Vec<_>>().chunks(b).take(4) {
            if chunk.len() < 2 {
                continue;
            }
            let batch = self.data.batch(&self.data.val, chunk);
            let ctx = self.net.encode(&batch.obs);
            let l = consistency_flow_loss(&self.net, &self.ema, &ctx, &batch.action, &self.cfg.train, self.prefix_args(), false, None);
            let p = l.parts();
            tot += p.loss_flow + p.loss_ct;
            cnt += 1.0;
        }
        (cnt > 0.0).then(|| tot / cnt)
    }

    /// MSE between the N-step EMA sample and the ground truth (unnormalised).
    pub fn action_mse(&self, batch: &Batch) -> f64 {
        let _g = tch::no_grad_guard();
        let ctx = self.ema.encode(&batch.obs);
        let noise = batch.action.randn_like();
        let x = self.ema.sample(&ctx, &noise, self.cfg.train.sample_steps, false);
        let pred = unnormalize(self.data, &x);
        let gt = self.data.raw_actions(batch);
        (pred - gt).square().mean(Kind::Float).double_value(&[])
    }

    /// Extra no-grad forward that records cross-attention and gates.
    fn record(&self, batch: &Batch, want_attn: bool) -> Recorder {
        let _g = tch::no_grad_guard();
        let mut rec = Recorder { want_attn, ..Default::default() };
        let ctx = self.net.encode(&batch.obs);
        let b = batch.action.size()[0];
        let t = Tensor::rand([b], (Kind::Float, self.device));
        let x0 = batch.action.randn_like();
        let tb = t.view([b, 1, 1]);
        let xt = (1.0 - &tb) * x0 + &tb * &batch.action;
        let _ = self.net.velocity(&xt, &t, &t.zeros_like(), &ctx, false, Some(&mut rec));
        rec
    }

    pub fn run(&mut self, total_steps: u64, log_opts: LoggerOptions) -> Result<RunSummary> {
        let tc = self.cfg.train.clone();
        let mut logger = MetricsLogger::new(&self.run, total_steps, log_opts)?;
        let mut spikes = SpikeDetector::new(tc.spike_window, tc.spike_factor, self.state.spike_window.clone());
        let start = Instant::now();
        let first_step = self.state.step + 1;
        let mut last = LossParts::default();
        let mut steps_done = 0u64;
        while self.state.step < total_steps {
            let step = self.state.step + 1;
            tch::manual_seed((tc.seed.wrapping_mul(1_000_003).wrapping_add(step)) as i64);
            let (epoch, idx) = self.batch_indices(step);
            self.state.epoch = epoch;
            let mut batch = self.data.batch(&self.data.train, &idx);
            if injected(step, "spike") {
                batch.action = &batch.action * 100.0;
            }
            let obs = self.prepare_obs(&batch, true);
            let log_now = step == first_step || step % tc.log_every == 0 || step == total_steps;
            let want_gates = log_now && self.cfg.model.use_gate_attn;
            let reg_on = self.cfg.attention_loss.enabled;
            let mut rec = Recorder { want_attn: reg_on, attn_grad: reg_on, ..Default::default() };
            self.enter_stage(step, &mut logger);
            let (loss, alpha) = crate::cuda::run(tc.autocast, self.device, || {
                let ctx = self.net.encode(&obs);
                let loss = consistency_flow_loss(
                    &self.net,
                    &self.ema,
                    &ctx,
                    &batch.action,
                    &tc,
                    self.prefix_args(),
                    true,
                    if want_gates || reg_on { Some(&mut rec) } else { None },
                );
                (loss, self.net.router_alpha(&ctx))
            });
            let mut total = loss.total;
            // Seed 004's load balancing: weight * E * sum_i usage_i^2 over the batch.
            let lb_weight = self.cfg.model.router().load_balance;
            if let (Some(a), true) = (&alpha, lb_weight > 0.0) {
                total = total + crate::model::experts::load_balance(a) * lb_weight;
            }
            // Seed 002's regulariser on the flow branch's cross-attention.
            let reg = reg_on.then(|| {
                let (st, vi) = self.reg_ranges();
                let r = crate::attn_reg::attention_regularizer(&rec.attn, &st, &vi, &self.cfg.attention_loss);
                let lambda = self.cfg.attention_loss.lambda(step);
                (r, lambda)
            });
            if let Some((r, lambda)) = &reg {
                if *lambda > 0.0 {
                    total = total + &r.loss * *lambda;
                }
            }
            rec.attn.clear();
            if injected(step, "nan") {
                total = total * f64::NAN;
            }
            // One copy back per step: the loss, its parts and the gradient norm
            // (backward runs first; a non-finite loss leaves NaN gradients,
            // which the guard below never applies).
            self.opt.zero_grad();
            total.backward();
            let (lval, parts, grad_sq) = step_scalars(&total, &loss.scalars, &self.opt.grad_sq());
            let finite_loss = lval.is_finite();
            let grad_norm = if finite_loss { grad_sq.sqrt() } else { f64::NAN };
            let guards = Guards { max_consecutive_nonfinite: tc.max_consecutive_nonfinite, spike_factor: tc.spike_factor, skip_on_spike: tc.spike_skip_update };
            let what = format!("windows {:?} episodes {:?}", batch.windows, batch.episodes);
            let skip = guard_step(&mut self.state, &mut spikes, &mut logger, &self.run, step, lval, grad_norm, &guards, &what)?;
            let lr = lr_at(step, self.cfg.lr_base_at(step), tc.warmup_steps, tc.steps.max(total_steps));
            if !skip {
                self.opt.step(lr, tc.betas, tc.eps, tc.weight_decay, clip_scale(grad_norm, tc.grad_clip));
                ema_update(&self.ema_vs, &self.vs, ema_decay(self.opt.step, tc.ema_max_decay));
            }
            self.opt.zero_grad();
            self.state.step = step;
            steps_done += 1;
            if finite_loss {
                last = parts;
            }
            if log_now {
                let mut s: Vec<(String, f64)> = vec![
                    ("train_loss".into(), lval),
                    ("loss_flow".into(), parts.loss_flow),
                    ("loss_ct".into(), parts.loss_ct),
                    ("bc_loss".into(), parts.loss_flow + parts.loss_ct),
                    ("v_flow_pred_magnitude".into(), parts.v_flow_rms),
                    ("v_ct_pred_magnitude".into(), parts.v_ct_rms),
                    ("loss_prefix_next".into(), parts.loss_prefix_next),
                    ("lr".into(), lr),
                    ("global_step".into(), step as f64),
                    ("epoch".into(), epoch as f64),
                    ("grad_norm".into(), grad_norm),
                ];
                if want_gates {
                    s.extend(self.gate_metrics(&rec, lval));
                }
                if let (Some(a), Some(h)) = (&alpha, self.net.ditx.experts()) {
                    s.extend(crate::model::experts::router_metrics(a, h.temperature()));
                }
                if let Some(i) = self.stage {
                    s.push(("stage".into(), i as f64));
                }
                if let Some((r, lambda)) = &reg {
                    s.push(("attention_loss".into(), r.loss.double_value(&[])));
                    s.push(("attention_loss_weight".into(), *lambda));
                    s.push(("state_attention_ratio".into(), r.state_ratio));
                    s.push(("vision_attention_ratio".into(), r.vision_ratio));
                }
                if step % tc.val_every == 0 || step == total_steps {
                    if let Some(v) = self.val_loss() {
                        s.push(("val_loss".into(), v));
                    }
                }
                if step % tc.sample_every == 0 || step == total_steps {
                    s.push(("train_action_mse_error".into(), self.action_mse(&batch)));
                }
                if self.cfg.model.use_gate_attn && (step % tc.attn_every == 0 || step == total_steps) {
                    s.extend(self.attn_metrics(&batch));
                }
                let refs: Vec<(&str, f64)> = s.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                logger.log(step, epoch, &refs);
            }
            if step % tc.checkpoint_every == 0 || step == total_steps {
                self.state.spike_window = spikes.window.iter().copied().collect();
                let p = self.save_checkpoint()?;
                logger.event(step, &format!("checkpoint {}", p.display()));
            }
        }
        logger.flush();
        let secs = start.elapsed().as_secs_f64();
        Ok(RunSummary {
            steps: steps_done,
            seconds: secs,
            steps_per_s: steps_done as f64 / secs.max(1e-9),
            last,
            final_step: self.state.step,
        })
    }

    /// (n_obs_steps, prefix d_max) for the objective.
    fn prefix_args(&self) -> (usize, usize) {
        (self.cfg.model.n_obs_steps, self.cfg.model.prefix_d_max())
    }

    /// Context-token ranges that count as state (proprio) and vision (cameras).
    fn reg_ranges(&self) -> (Vec<std::ops::Range<usize>>, Vec<std::ops::Range<usize>>) {
        let (mut st, mut vi) = (Vec::new(), Vec::new());
        for m in &self.net.encoder.modality_map {
            match m.modality.as_str() {
                "proprio" => st.push(m.start..m.end),
                "tactile" => {}
                _ => vi.push(m.start..m.end),
            }
        }
        (st, vi)
    }

    fn gate_metrics(&self, rec: &Recorder, train_loss: f64) -> Vec<(String, f64)> {
        let per_layer: Vec<Vec<f32>> = rec
            .gates
            .iter()
            .map(|ts| {
                ts.iter()
                    .flat_map(|t| Vec::<f32>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Float)).unwrap_or_default())
                    .collect()
            })
            .filter(|v: &Vec<f32>| !v.is_empty())
            .collect();
        let mut out = Vec::new();
        if !per_layer.is_empty() {
            out.extend(stats::gate_stats(&per_layer));
        }
        let gamma = self.net.ditx.modality_gates();
        if !gamma.is_empty() {
            let names: Vec<&str> = self.net.encoder.modality_map.iter().map(|m| m.modality.as_str()).collect();
            let ms = stats::modality_gate_stats(&gamma, &names);
            let get = |k: &str| ms.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
            let tactile = get("gate/modality_tactile_mean");
            let proprio = get("gate/modality_proprio_mean");
            out.extend(ms.iter().cloned());
            out.extend(stats::correlation_stats(train_loss, tactile, proprio));
        }
        out
    }

    fn attn_metrics(&self, batch: &Batch) -> Vec<(String, f64)> {
        let rec = self.record(batch, true);
        let arrays: Vec<(Vec<f32>, [usize; 4])> = rec
            .attn
            .iter()
            .map(|p| {
                let s = p.size();
                let v = Vec::<f32>::try_from(p.to_device(Device::Cpu).flatten(0, -1)).unwrap_or_default();
                (v, [s[0] as usize, s[1] as usize, s[2] as usize, s[3] as usize])
            })
            .collect();
        let refs: Vec<(&[f32], [usize; 4])> = arrays.iter().map(|(v, s)| (v.as_slice(), *s)).collect();
        let map: Vec<(String, usize, usize)> =
            self.net.encoder.modality_map.iter().map(|m| (m.modality.clone(), m.start, m.end)).collect();
        stats::attn_stats(&refs, &map)
    }
}

/// The step's scalars in one device-to-host copy: (loss, parts, sum of
/// squared gradients).
pub fn step_scalars(total: &Tensor, parts: &Tensor, grad_sq: &Tensor) -> (f64, LossParts, f64) {
    let dev = total.device();
    let all = Tensor::cat(
        &[
            total.detach().to_kind(Kind::Double).view([1]),
            parts.to_kind(Kind::Double).view([-1]),
            grad_sq.to_device(dev).to_kind(Kind::Double).view([1]),
        ],
        0,
    );
    let v = Vec::<f64>::try_from(all.to_device(Device::Cpu)).unwrap_or_default();
    let g = |i: usize| v.get(i).copied().unwrap_or(f64::NAN);
    let n = crate::objective::N_PARTS;
    (g(0), LossParts::from_slice(&v[1.min(v.len())..v.len().min(1 + n)]), g(1 + n))
}

/// Unnormalise (B, T, Da) normalised actions with the dataset's action normaliser.
pub fn unnormalize(data: &TrainData, x: &Tensor) -> Tensor {
    let s = x.size();
    let da = s[2] as usize;
    let flat: Vec<f32> = Vec::try_from(x.to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1)).unwrap_or_default();
    let mut out = vec![0f32; flat.len()];
    let n = data.action_normalizer();
    for (src, dst) in flat.chunks(da).zip(out.chunks_mut(da)) {
        n.unnormalize(src, dst);
    }
    Tensor::from_slice(&out).view(s.as_slice()).to_device(x.device())
}

#[derive(Debug, Clone)]
pub struct RunSummary {
    pub steps: u64,
    pub seconds: f64,
    pub steps_per_s: f64,
    pub last: LossParts,
    pub final_step: u64,
}
