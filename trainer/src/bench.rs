//! `maniflow-train bench`: training steps per second on random data (the full
//! step: augmentation, encoder, flow + consistency loss with the EMA target,
//! backward, AdamW, EMA update), next to the PyTorch reference model
//! (`trainer/tests/reference/maniflow_ref.py bench`) timed in the same run.

use crate::augment::augment;
use crate::config::{Config, TactileKind};
use crate::cuda::Autocast;
use crate::export::random_obs;
use crate::model::{ManiFlowNet, Obs, ObsDims};
use crate::objective::consistency_flow_loss;
use crate::train::{clip_scale, ema_decay, ema_update, step_scalars, AdamW};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::Instant;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

pub fn synthetic_dims(cfg: &crate::config::Config) -> ObsDims {
    ObsDims {
        cameras: cfg.encoder.cameras.iter().map(|k| (k.clone(), cfg.encoder.image_size[0], cfg.encoder.image_size[1])).collect(),
        state_key: cfg.encoder.state_key.clone(),
        state_dim: 6,
        tactile: match cfg.encoder.tactile {
            TactileKind::Taxels => Some((cfg.encoder.tactile_key.clone(), 32)),
            TactileKind::Mae => Some((cfg.encoder.tactile_key.clone(), crate::tactile_mae::model::MaeConfig::default().values_per_frame())),
            TactileKind::None => None,
        },
        // the simulator's pads with the default pretraining shapes
        tactile_mae: (cfg.encoder.tactile == TactileKind::Mae).then(crate::tactile_mae::model::MaeConfig::default),
        action_dim: if cfg.model.action_dim > 0 { cfg.model.action_dim } else { 6 },
    }
}

pub fn peak_rss_mb() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_maxrss as f64 / 1024.0
}

/// The source tree: `MANIFLOW_ROOT` (a binary run away from where it was
/// built, as on the GPU machine), else the tree it was built from.
pub fn repo_root() -> PathBuf {
    if let Some(r) = std::env::var_os("MANIFLOW_ROOT").filter(|r| !r.is_empty()) {
        return PathBuf::from(r);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().map(|p| p.to_path_buf()).unwrap_or_default()
}

/// `MANIFLOW_PYTHON`, else the bootstrap's `.venv/bin/python` (on a machine
/// with its own PyTorch, such as the GPU machine, set MANIFLOW_PYTHON=python3).
pub fn venv_python() -> PathBuf {
    std::env::var_os("MANIFLOW_PYTHON").map(PathBuf::from).unwrap_or_else(|| repo_root().join(".venv/bin/python"))
}

/// One model, its EMA twin, AdamW and a fixed random batch on one device: the
/// full training step that `bench` times and `gpu-check` compares across devices.
pub struct BenchModel {
    pub cfg: Config,
    pub device: Device,
    pub vs: VarStore,
    pub net: ManiFlowNet,
    pub ema_vs: VarStore,
    pub ema: ManiFlowNet,
    pub opt: AdamW,
    pub obs: Obs,
    pub x1: Tensor,
}

impl BenchModel {
    /// Weights from `tch::manual_seed(0)` on the CPU, then moved to `device`,
    /// so every device starts from the same numbers.
    pub fn new(cfg: &Config, device: Device) -> Result<BenchModel> {
        let dims = synthetic_dims(cfg);
        tch::manual_seed(0);
        let cpu_vs = VarStore::new(Device::Cpu);
        let _ = ManiFlowNet::new(&cpu_vs.root(), cfg, &dims)?;
        let b = cfg.train.batch_size as i64;
        let to = cfg.model.n_obs_steps as i64;
        let (t, da) = (cfg.model.horizon as i64, dims.action_dim as i64);
        let obs = random_obs(&dims, to, b);
        let x1 = Tensor::rand([b, t, da], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let mut vs = VarStore::new(device);
        let net = ManiFlowNet::new(&vs.root(), cfg, &dims)?;
        vs.copy(&cpu_vs)?;
        let mut ema_vs = VarStore::new(device);
        let ema = ManiFlowNet::new(&ema_vs.root(), cfg, &dims)?;
        ema_vs.copy(&vs)?;
        let opt = AdamW::new(&vs, cfg.train.no_decay_norm_bias);
        let obs = Obs {
            images: obs.images.iter().map(|x| x.to_device(device)).collect(),
            state: obs.state.to_device(device),
            tactile: obs.tactile.map(|x| x.to_device(device)),
        };
        Ok(BenchModel { cfg: cfg.clone(), device, vs, net, ema_vs, ema, opt, obs, x1: x1.to_device(device) })
    }

    pub fn parameter_count(&self) -> i64 {
        self.vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
    }

    /// One training step (augmentation, encoder, loss, backward, clipped AdamW,
    /// EMA); returns (loss, grad_norm) from its one device-to-host copy.
    pub fn step(&mut self, autocast: Autocast) -> (f64, f64) {
        self.step_profiled(autocast, None)
    }

    /// `step`, adding each phase's wall time (seconds, after a device sync) to `prof`
    /// in the order of `PHASES`.
    pub fn step_profiled(&mut self, autocast: Autocast, mut prof: Option<&mut [f64; PHASES.len()]>) -> (f64, f64) {
        let tc = self.cfg.train.clone();
        let prefix = (self.cfg.model.n_obs_steps, self.cfg.model.prefix_d_max());
        let aug = self.cfg.encoder.augment;
        let mut clock = PhaseClock::new(self.device);
        let mut lap = |i: usize, c: &mut PhaseClock| {
            if let Some(p) = prof.as_deref_mut() {
                p[i] += c.lap();
            }
        };
        let obs = &self.obs;
        let loss = crate::cuda::run(autocast, self.device, || {
            let images = obs
                .images
                .iter()
                .map(|x| {
                    let s = x.size();
                    if aug {
                        augment(&x.view([s[0] * s[1], s[2], s[3], s[4]])).view(s.as_slice())
                    } else {
                        x.shallow_clone()
                    }
                })
                .collect();
            lap(0, &mut clock);
            let o = Obs { images, state: obs.state.shallow_clone(), tactile: obs.tactile.as_ref().map(|t| t.shallow_clone()) };
            let ctx = self.net.encode(&o);
            lap(1, &mut clock);
            let l = consistency_flow_loss(&self.net, &self.ema, &ctx, &self.x1, &tc, prefix, true, None);
            lap(2, &mut clock);
            l
        });
        self.opt.zero_grad();
        loss.total.backward();
        lap(3, &mut clock);
        let (lval, _, sq) = step_scalars(&loss.total, &loss.scalars, &self.opt.grad_sq());
        let grad_norm = sq.sqrt();
        lap(4, &mut clock);
        self.opt.step(tc.lr, tc.betas, tc.eps, tc.weight_decay, clip_scale(grad_norm, tc.grad_clip));
        lap(5, &mut clock);
        ema_update(&self.ema_vs, &self.vs, ema_decay(self.opt.step, tc.ema_max_decay));
        lap(6, &mut clock);
        (lval, grad_norm)
    }

    /// Wait for the device.
    pub fn sync(&self) {
        if let Device::Cuda(i) = self.device {
            tch::Cuda::synchronize(i as i64);
        }
    }
}

/// The phases of a training step that `bench --profile` times.
pub const PHASES: [&str; 7] = [
    "augmentation",
    "encoder forward",
    "loss forward (DiTX flow + consistency, EMA target)",
    "backward",
    "grad norm + scalars to host",
    "AdamW",
    "EMA update",
];

/// Wall time between phases, synchronising the device first so each phase is charged its own work
/// (read only when profiling: an unprofiled step never synchronises).
struct PhaseClock {
    device: Device,
    t: Instant,
}

impl PhaseClock {
    fn new(device: Device) -> Self {
        PhaseClock { device, t: Instant::now() }
    }
    fn lap(&mut self) -> f64 {
        if let Device::Cuda(i) = self.device {
            tch::Cuda::synchronize(i as i64);
        }
        let now = Instant::now();
        let d = now.duration_since(self.t).as_secs_f64();
        self.t = now;
        d
    }
}

/// `maniflow-train bench`: steps/s of `spec` on `device`, next to the PyTorch
/// reference on the same device when `reference`.
pub fn run(spec: &str, opts: &BenchOptions) -> Result<()> {
    let mut cfg = crate::presets::load(spec)?;
    if let Some(b) = opts.batch {
        cfg.train.batch_size = b;
    }
    let device = crate::train::parse_device(opts.device.as_deref().unwrap_or(&cfg.train.device))?;
    let autocast = opts.autocast.unwrap_or(cfg.train.autocast);
    let threads = opts.threads.unwrap_or(tch::get_num_threads() as usize);
    tch::set_num_threads(threads as i32);
    let mut m = BenchModel::new(&cfg, device)?;
    let params = m.parameter_count();
    let b = cfg.train.batch_size;
    for _ in 0..2 {
        m.step(autocast);
    }
    m.sync();
    let t0 = Instant::now();
    let mut prof = [0.0; PHASES.len()];
    for _ in 0..opts.steps {
        m.step_profiled(autocast, opts.profile.then_some(&mut prof));
    }
    m.sync();
    let secs = t0.elapsed().as_secs_f64();
    if opts.profile {
        let n = opts.steps.max(1) as f64;
        let total: f64 = prof.iter().sum();
        eprintln!("profile of one step ({} steps, mean):", opts.steps);
        for (name, s) in PHASES.iter().zip(prof) {
            eprintln!("  {:>8.1} ms  {:>5.1} %  {name}", 1e3 * s / n, 100.0 * s / total.max(1e-12));
        }
        eprintln!("  {:>8.1} ms  total", 1e3 * total / n);
    }
    let ours = opts.steps as f64 / secs;
    let rss = peak_rss_mb();
    let dev = device_name(device);
    let ac = if device == Device::Cpu { Autocast::Off } else { autocast };
    println!(
        "{{\"impl\":\"maniflow-train (tch)\",\"config\":\"{}\",\"batch\":{b},\"threads\":{threads},\"device\":\"{dev}\",\"autocast\":\"{}\",\"params\":{params},\"steps_per_s\":{ours:.4},\"peak_rss_mb\":{rss:.1}}}",
        cfg.name,
        autocast_name(ac)
    );
    if opts.reference {
        let v = reference_bench(&cfg, b, opts.steps, threads, &dev, ac, opts.profile)?;
        let theirs = v["steps_per_s"].as_f64().context("reference JSON has no steps_per_s")?;
        println!("{v}");
        println!(
            "ratio (tch / PyTorch eager) = {:.2}x steps/s on {dev}; peak RSS {:.0} MB (tch) vs {:.0} MB (PyTorch)",
            ours / theirs,
            rss,
            v["peak_rss_mb"].as_f64().unwrap_or(f64::NAN)
        );
    }
    Ok(())
}

/// Options of `maniflow-train bench`.
#[derive(Debug, Clone, Default)]
pub struct BenchOptions {
    pub batch: Option<usize>,
    pub steps: usize,
    pub reference: bool,
    pub threads: Option<usize>,
    pub device: Option<String>,
    pub autocast: Option<Autocast>,
    /// Time each phase of the step (and say where the time goes).
    pub profile: bool,
}

pub fn device_name(d: Device) -> String {
    match d {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    }
}

pub fn autocast_name(a: Autocast) -> &'static str {
    match a {
        Autocast::Off => "off",
        Autocast::Bf16 => "bf16",
    }
}

/// The PyTorch reference's `bench` JSON line, run in this process's Python.
pub fn reference_bench(cfg: &Config, batch: usize, steps: usize, threads: usize, device: &str, autocast: Autocast, profile: bool) -> Result<serde_json::Value> {
    let cfg_file = std::env::temp_dir().join(format!("maniflow-bench-{}.toml", std::process::id()));
    std::fs::write(&cfg_file, cfg.to_toml())?;
    let script = repo_root().join("trainer/tests/reference/maniflow_ref.py");
    let out = std::process::Command::new(venv_python())
        .arg(&script)
        .args(["bench", "--config"])
        .arg(&cfg_file)
        .args(["--batch", &batch.to_string(), "--steps", &steps.to_string(), "--threads", &threads.to_string()])
        .args(["--device", device, "--autocast", autocast_name(autocast)])
        .args(profile.then_some("--profile"))
        .output()
        .with_context(|| format!("run {}", script.display()))?;
    let _ = std::fs::remove_file(&cfg_file);
    if !out.status.success() {
        anyhow::bail!("reference bench failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    if profile {
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.trim_start().starts_with('{')).context("reference printed no JSON line")?;
    Ok(serde_json::from_str(line)?)
}
