//! `maniflow-train train` and `synth-dataset`.

use crate::config::Config;
use crate::data::TrainData;
use crate::export::DataInfo;
use crate::metrics::LoggerOptions;
use crate::tactile_mae::policy::PretrainedMae;
use crate::train::{parse_device, Trainer};
use anyhow::{bail, Context, Result};
use maniflow_runtime::dataset::{LeRobotDataset, OpenOptions};
use std::path::Path;

pub(crate) fn feature_names(ds: &LeRobotDataset, key: &str, dim: usize) -> Vec<String> {
    let names: Vec<String> = ds
        .info
        .features
        .get(key)
        .and_then(|f| f.names.as_ref())
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    if names.len() == dim {
        names
    } else {
        (0..dim).map(|i| format!("{key}.{i}")).collect()
    }
}

#[allow(clippy::too_many_arguments)]
pub fn train(spec: &str, dataset: &Path, out: &Path, steps: Option<u64>, resume: bool, init: Option<&Path>, quiet: bool, device: Option<&str>) -> Result<()> {
    let cfg_path = out.join("config.toml");
    let mut cfg: Config = if resume {
        if !cfg_path.exists() {
            bail!("--resume: {} has no config.toml (not a run directory)", out.display());
        }
        let own = Config::load(&cfg_path)?;
        let given = crate::presets::load(spec)?;
        let mut a = own.clone();
        let mut b = given.clone();
        a.train.steps = 0;
        b.train.steps = 0;
        if a != b {
            eprintln!("note: --resume uses the run's own {} (the --config given differs)", cfg_path.display());
        }
        own
    } else {
        if crate::checkpoint::latest(out)?.is_some() {
            bail!("{} already holds a training run; pass --resume to continue it or choose another --out", out.display());
        }
        crate::presets::load(spec)?
    };
    if let Some(s) = steps {
        cfg.train.steps = s;
    }
    if let Some(d) = device {
        // The device is not part of what makes a run (resume may move it).
        cfg.train.device = d.to_string();
    }
    parse_device(&cfg.train.device)?;
    let opts = OpenOptions { image_keys: Some(cfg.encoder.cameras.clone()), ..Default::default() };
    let t0 = std::time::Instant::now();
    let ds = LeRobotDataset::open(dataset, &opts).with_context(|| format!("open dataset {}", dataset.display()))?;
    // A resumed (or imported) run keeps the normalisation its weights were trained with.
    let saved = if resume { Some(DataInfo::load(out)?) } else { None };
    let mae = match (&cfg.encoder.tactile_mae, &saved) {
        (Some(src), None) => Some(PretrainedMae::load(&src.run)?),
        _ => None,
    };
    let fixed = match (&saved, &mae) {
        (Some(s), _) => Some(s.normalization.clone()),
        // the pressures are normalised as in pretraining
        (None, Some(m)) => Some([(cfg.encoder.tactile_key.clone(), m.normalization())].into_iter().collect()),
        (None, None) => None,
    };
    let mut data = TrainData::with_norms(&ds, &cfg, crate::train::parse_device(&cfg.train.device)?, fixed.as_ref())?;
    data.dims.tactile_mae = match (&saved, &mae) {
        (Some(s), _) => s.dims.tactile_mae.clone(),
        (None, Some(m)) => {
            let (key, n) = data.dims.tactile.as_ref().context("encoder.tactile = \"mae\" without a tactile feature")?;
            m.check_feature(key, *n)?;
            Some(m.shapes.clone())
        }
        (None, None) => None,
    };
    eprintln!(
        "dataset {}: {} episodes ({} train / {} val), {} frames, {} train windows; loaded in {:.1}s",
        dataset.display(),
        ds.num_episodes(),
        data.train_episodes.len(),
        data.val_episodes.len(),
        ds.num_frames(),
        data.train.len(),
        t0.elapsed().as_secs_f64()
    );
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let mut trainer = Trainer::new(cfg.clone(), out, &data)?;
    let info = DataInfo {
        dataset: dataset.display().to_string(),
        dims: data.dims.clone(),
        state_names: feature_names(&ds, &cfg.encoder.state_key, data.dims.state_dim),
        action_names: feature_names(&ds, &cfg.data.action_key, data.dims.action_dim),
        normalization: data.norms.by_key.clone(),
        modality_map: trainer.net.encoder.modality_map.clone(),
    };
    if resume {
        let ckpt = crate::checkpoint::latest(out)?.with_context(|| format!("--resume: {} has no complete checkpoint", out.display()))?;
        trainer.resume(&ckpt)?;
        eprintln!("resumed from {} (step {})", ckpt.display(), trainer.state.step);
    } else {
        if let Some(m) = &mae {
            let n = trainer.init_tactile_mae(m)?;
            eprintln!("tactile encoder: {n} tensors from {} ({})", m.checkpoint.display(), if cfg.encoder.tactile_mae.as_ref().is_some_and(|s| s.freeze) { "frozen" } else { "fine-tuned" });
        }
        if let Some(p) = init {
            let n = crate::cli_train::init_from(&mut trainer, p)?;
            eprintln!("initialised {n} tensors from {}", p.display());
        }
        std::fs::write(&cfg_path, cfg.to_toml()).with_context(|| format!("write {}", cfg_path.display()))?;
        info.save(out)?;
    }
    // keep the step budget in the stored config current
    std::fs::write(&cfg_path, cfg.to_toml()).with_context(|| format!("write {}", cfg_path.display()))?;
    eprintln!(
        "model: {} parameters ({} layers x {}), context {} tokens x {}, device {}",
        trainer.parameter_count(),
        cfg.model.n_layer,
        cfg.model.n_emb,
        trainer.net.encoder.context_tokens,
        trainer.net.encoder.context_dim,
        cfg.train.device
    );
    if !resume && cfg.train.steps == 0 {
        // `--steps 0` (e.g. with --init): the initial weights become a step-0 checkpoint to export.
        let ckpt = trainer.save_checkpoint()?;
        println!("no training steps; wrote the initial weights as {}", ckpt.display());
        return Ok(());
    }
    let s = trainer.run(cfg.train.steps, LoggerOptions { quiet, ..Default::default() })?;
    println!(
        "trained {} steps in {:.1}s ({:.2} steps/s); final step {}; loss_flow {:.4} loss_ct {:.4}; run {}",
        s.steps,
        s.seconds,
        s.steps_per_s,
        s.final_step,
        s.last.loss_flow,
        s.last.loss_ct,
        out.display()
    );
    Ok(())
}

/// Load matching tensors from a safetensors file: an upstream DiTX state dict
/// (no `model.` prefix) or one of our checkpoints. Returns how many were set;
/// shapes must match; unknown keys are listed as an error.
pub fn init_from(trainer: &mut Trainer, path: &Path) -> Result<usize> {
    let ts = crate::checkpoint::read_tensors(path)?;
    let vars = trainer.vs.variables();
    let mut n = 0;
    let mut unknown = Vec::new();
    tch::no_grad(|| -> Result<()> {
        for (name, t) in &ts {
            let key = if vars.contains_key(name) { name.clone() } else { format!("model.{name}") };
            match vars.get(&key) {
                Some(v) => {
                    if v.size() != t.size() {
                        bail!("{}: `{name}` has shape {:?}, the model's `{key}` is {:?}", path.display(), t.size(), v.size());
                    }
                    let mut v = v.shallow_clone();
                    v.copy_(t);
                    n += 1;
                }
                None => unknown.push(name.clone()),
            }
        }
        Ok(())
    })?;
    if !unknown.is_empty() {
        bail!("{}: {} tensors match nothing in the model, e.g. {:?}", path.display(), unknown.len(), &unknown[..unknown.len().min(5)]);
    }
    trainer.ema_vs.copy(&trainer.vs)?;
    Ok(n)
}

pub fn synth(out: &Path, episodes: usize, frames: usize, seed: u64, video: Option<&str>) -> Result<()> {
    use maniflow_runtime::dataset::synth::{write_synthetic, SynthConfig};
    use maniflow_runtime::dataset::VideoCodec;
    let video = match video {
        None => None,
        Some("av1") => Some(VideoCodec::Av1),
        Some("h264") => Some(VideoCodec::H264),
        Some(o) => bail!("--video {o}: expected av1 or h264"),
    };
    let cfg = SynthConfig { episodes, frames_per_episode: frames, seed, video, ..Default::default() };
    let s = write_synthetic(out, &cfg)?;
    println!("wrote {}: {} episodes, {} frames in {:.1}s", out.display(), s.episodes, s.frames, s.elapsed.as_secs_f64());
    Ok(())
}
