//! `maniflow-train bench`: training steps per second on random data (the full
//! step: augmentation, encoder, flow + consistency loss with the EMA target,
//! backward, AdamW, EMA update), next to the PyTorch reference model
//! (`trainer/tests/reference/maniflow_ref.py bench`) timed in the same run.

use crate::augment::augment;
use crate::config::TactileKind;
use crate::export::random_obs;
use crate::model::{ManiFlowNet, ObsDims};
use crate::objective::consistency_flow_loss;
use crate::train::{ema_decay, ema_update, AdamW};
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
        tactile: (cfg.encoder.tactile == TactileKind::Taxels).then(|| (cfg.encoder.tactile_key.clone(), 32)),
        action_dim: if cfg.model.action_dim > 0 { cfg.model.action_dim } else { 6 },
    }
}

pub fn peak_rss_mb() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_maxrss as f64 / 1024.0
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().map(|p| p.to_path_buf()).unwrap_or_default()
}

pub fn venv_python() -> PathBuf {
    std::env::var_os("MANIFLOW_PYTHON").map(PathBuf::from).unwrap_or_else(|| repo_root().join(".venv/bin/python"))
}

pub fn run(spec: &str, batch: Option<usize>, steps: usize, reference: bool, threads: Option<usize>) -> Result<()> {
    let mut cfg = crate::presets::load(spec)?;
    if let Some(b) = batch {
        cfg.train.batch_size = b;
    }
    let threads = threads.unwrap_or(tch::get_num_threads() as usize);
    tch::set_num_threads(threads as i32);
    let dims = synthetic_dims(&cfg);
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let net = ManiFlowNet::new(&vs.root(), &cfg, &dims);
    let mut ema_vs = VarStore::new(Device::Cpu);
    let ema = ManiFlowNet::new(&ema_vs.root(), &cfg, &dims);
    ema_vs.copy(&vs)?;
    let mut opt = AdamW::new(&vs, cfg.train.no_decay_norm_bias);
    let params: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
    let b = cfg.train.batch_size as i64;
    let to = cfg.model.n_obs_steps as i64;
    let (t, da) = (cfg.model.horizon as i64, dims.action_dim as i64);
    let obs = random_obs(&dims, to, b);
    let x1 = Tensor::rand([b, t, da], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let tc = cfg.train.clone();
    let mut step = || {
        let images = obs
            .images
            .iter()
            .map(|x| {
                let s = x.size();
                if cfg.encoder.augment {
                    augment(&x.view([s[0] * s[1], s[2], s[3], s[4]])).view(s.as_slice())
                } else {
                    x.shallow_clone()
                }
            })
            .collect();
        let o = crate::model::Obs { images, state: obs.state.shallow_clone(), tactile: obs.tactile.as_ref().map(|t| t.shallow_clone()) };
        let ctx = net.encode(&o);
        let l = consistency_flow_loss(&net, &ema, &ctx, &x1, &tc, true, None);
        opt.zero_grad();
        l.total.backward();
        let _ = opt.grad_norm();
        opt.step(tc.lr, tc.betas, tc.eps, tc.weight_decay, 1.0);
        ema_update(&ema_vs, &vs, ema_decay(opt.step, tc.ema_max_decay));
    };
    for _ in 0..2 {
        step();
    }
    let t0 = Instant::now();
    for _ in 0..steps {
        step();
    }
    let secs = t0.elapsed().as_secs_f64();
    let ours = steps as f64 / secs;
    let rss = peak_rss_mb();
    println!(
        "{{\"impl\":\"maniflow-train (tch)\",\"config\":\"{}\",\"batch\":{b},\"threads\":{threads},\"params\":{params},\"steps_per_s\":{ours:.4},\"peak_rss_mb\":{rss:.1}}}",
        cfg.name
    );
    if reference {
        let cfg_file = std::env::temp_dir().join(format!("maniflow-bench-{}.toml", std::process::id()));
        std::fs::write(&cfg_file, cfg.to_toml())?;
        let script = repo_root().join("trainer/tests/reference/maniflow_ref.py");
        let out = std::process::Command::new(venv_python())
            .arg(&script)
            .args(["bench", "--config"])
            .arg(&cfg_file)
            .args(["--batch", &b.to_string(), "--steps", &steps.to_string(), "--threads", &threads.to_string()])
            .output()
            .with_context(|| format!("run {}", script.display()))?;
        let _ = std::fs::remove_file(&cfg_file);
        if !out.status.success() {
            anyhow::bail!("reference bench failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().rev().find(|l| l.trim_start().starts_with('{')).context("reference printed no JSON line")?;
        let v: serde_json::Value = serde_json::from_str(line)?;
        let theirs = v["steps_per_s"].as_f64().context("reference JSON has no steps_per_s")?;
        println!("{}", line.trim());
        println!(
            "ratio (tch / PyTorch eager) = {:.2}x steps/s; peak RSS {:.0} MB (tch) vs {:.0} MB (PyTorch)",
            ours / theirs,
            rss,
            v["peak_rss_mb"].as_f64().unwrap_or(f64::NAN)
        );
    }
    Ok(())
}
