//! `maniflow-train import`: an upstream ManiFlow checkpoint (geyan21/ManiFlow_Policy, image
//! policy) becomes a run directory, and optionally a policy package, in one command.
//!
//! Reading the checkpoint is Python's job (a `.ckpt` is a dill pickle holding OmegaConf
//! objects): `models/export/maniflow_upstream.py`, embedded here, derives every dimension from
//! the tensors and the config, maps the names and the normaliser, and writes
//! `weights.safetensors` + `online.safetensors` + `import.json`. This side builds the model
//! from those dims, loads both weight sets strictly (every tensor present, none left over,
//! shapes equal, errors naming the tensor and both shapes), writes a step-0 checkpoint with
//! the run's config and data.json, and exports with the usual parity gates.

use crate::config::Config;
use crate::data::TrainData;
use crate::export::DataInfo;
use crate::model::ObsDims;
use crate::train::{parse_device, sorted_vars, Trainer};
use anyhow::{bail, Context, Result};
use maniflow_runtime::policy::manifest::Normalization;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tch::nn::VarStore;
use tch::Tensor;

/// The converter, shipped inside the binary so `import` works from any directory.
pub const CONVERTER: &str = include_str!("../../models/export/maniflow_upstream.py");

pub struct ImportOptions<'a> {
    pub checkpoint: &'a Path,
    pub out: &'a Path,
    pub package: Option<&'a Path>,
    /// Side file (upstream's hydra config.yaml) for a bare safetensors state dict.
    pub config: Option<&'a Path>,
    /// Deploy the EMA weights (default) or the online model.
    pub online: bool,
    pub name: Option<&'a str>,
    /// `UPSTREAM=KEY`: the dataset key of an upstream rgb key (default
    /// `observation.images.<key>`), so the run trains on a dataset that names
    /// its cameras differently.
    pub cameras: &'a [String],
}

#[derive(Debug, Deserialize)]
struct Imported {
    source: serde_json::Value,
    model: ImportedModel,
    encoder: ImportedEncoder,
    train: ImportedTrain,
    dims: ObsDims,
    state_names: Vec<String>,
    action_names: Vec<String>,
    normalization: BTreeMap<String, Normalization>,
    notes: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct ImportedModel {
    horizon: usize,
    n_obs_steps: usize,
    n_action_steps: usize,
    action_dim: usize,
    n_layer: usize,
    n_head: usize,
    n_emb: usize,
    time_embed_dim: usize,
    qkv_bias: bool,
    qk_norm: bool,
    visual_cond_len: usize,
}

#[derive(Debug, Deserialize)]
struct ImportedEncoder {
    cameras: Vec<String>,
    image_size: [usize; 2],
    resnet_width: usize,
    resnet_blocks: [usize; 4],
}

#[derive(Debug, Deserialize)]
struct ImportedTrain {
    lr: f64,
    betas: [f64; 2],
    eps: f64,
    weight_decay: f64,
    warmup_steps: u64,
    batch_size: usize,
    seed: u64,
    flow_batch_ratio: f64,
    time_sampler: crate::config::TimeSampler,
    target_t: crate::config::TargetTMode,
    ct_discrete_steps: usize,
    sample_steps: usize,
    ema_max_decay: f64,
}

/// The `upstream-image` preset with everything the checkpoint says put in.
fn config_of(imp: &Imported) -> Result<Config> {
    let mut cfg = crate::presets::load("upstream-image")?;
    cfg.name = "upstream-import".into();
    let (m, e, t) = (&imp.model, &imp.encoder, &imp.train);
    let cm = &mut cfg.model;
    cm.horizon = m.horizon;
    cm.n_obs_steps = m.n_obs_steps;
    cm.n_action_steps = m.n_action_steps;
    cm.action_dim = m.action_dim;
    cm.n_layer = m.n_layer;
    cm.n_head = m.n_head;
    cm.n_emb = m.n_emb;
    cm.time_embed_dim = m.time_embed_dim;
    cm.qkv_bias = m.qkv_bias;
    cm.qk_norm = m.qk_norm;
    cm.visual_cond_len = m.visual_cond_len;
    let ce = &mut cfg.encoder;
    ce.cameras = e.cameras.clone();
    ce.image_size = e.image_size;
    ce.resnet_width = e.resnet_width;
    ce.resnet_blocks = e.resnet_blocks;
    ce.state_key = imp.dims.state_key.clone();
    let ct = &mut cfg.train;
    ct.lr = t.lr;
    ct.betas = t.betas;
    ct.eps = t.eps;
    ct.weight_decay = t.weight_decay;
    ct.warmup_steps = t.warmup_steps;
    ct.batch_size = t.batch_size;
    ct.seed = t.seed;
    ct.flow_batch_ratio = t.flow_batch_ratio;
    ct.time_sampler = t.time_sampler;
    ct.target_t = t.target_t;
    ct.ct_discrete_steps = t.ct_discrete_steps;
    ct.sample_steps = t.sample_steps;
    ct.ema_max_decay = t.ema_max_decay;
    ct.steps = 0;
    // Round-trip through TOML so the config is exactly what a later `train --resume` reads.
    Config::from_toml_str(&cfg.to_toml(), "the imported config")
}

/// Load `tensors` into `vs`: every variable present with its shape, nothing left over.
fn load_strict(vs: &mut VarStore, tensors: Vec<(String, Tensor)>, origin: &str) -> Result<()> {
    let mut src: HashMap<String, Tensor> = tensors.into_iter().collect();
    let mut missing = Vec::new();
    tch::no_grad(|| -> Result<()> {
        for (name, v) in sorted_vars(vs) {
            match src.remove(&name) {
                Some(t) if t.size() != v.size() => {
                    bail!("{origin}: `{name}` has shape {:?}, the model built from the checkpoint's config needs {:?}", t.size(), v.size())
                }
                Some(t) => v.shallow_clone().copy_(&t.to_device(v.device())),
                None => missing.push(name),
            }
        }
        Ok(())
    })?;
    if !missing.is_empty() {
        bail!("{origin}: {} tensors of the model are missing, e.g. {:?}", missing.len(), &missing[..missing.len().min(5)]);
    }
    if !src.is_empty() {
        let mut extra: Vec<_> = src.keys().cloned().collect();
        extra.sort();
        bail!("{origin}: {} tensors match nothing in the model, e.g. {:?}", extra.len(), &extra[..extra.len().min(5)]);
    }
    Ok(())
}

/// Run the embedded converter on the checkpoint into `dir`.
fn convert(o: &ImportOptions, dir: &Path) -> Result<()> {
    let script = dir.join("maniflow_upstream.py");
    std::fs::write(&script, CONVERTER).with_context(|| format!("write {}", script.display()))?;
    let python = crate::bench::venv_python();
    let mut cmd = std::process::Command::new(&python);
    cmd.arg(&script).arg(o.checkpoint).arg(dir);
    if let Some(c) = o.config {
        cmd.arg("--config").arg(c);
    }
    cmd.args(["--weights", if o.online { "model" } else { "ema" }]);
    for c in o.cameras {
        cmd.arg("--camera").arg(c);
    }
    let out = cmd.output().with_context(|| {
        format!("run {} (the checkpoint reader needs Python with torch, omegaconf, dill, safetensors: `make bootstrap`, or set MANIFLOW_PYTHON)", python.display())
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("(no message)");
        bail!("{}", line.trim_start_matches("import: "));
    }
    Ok(())
}

pub struct ImportReport {
    pub run: PathBuf,
    pub checkpoint: PathBuf,
    pub parameters: i64,
    pub notes: Vec<String>,
    pub source: serde_json::Value,
    pub package: Option<crate::export::ExportReport>,
}

pub fn import(o: &ImportOptions) -> Result<ImportReport> {
    if crate::checkpoint::latest(o.out)?.is_some() {
        bail!("{} already holds a training run; choose another --out", o.out.display());
    }
    let parent = o.out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    let tmp = parent.join(format!(".{}.import-tmp", o.out.file_name().and_then(|s| s.to_str()).unwrap_or("run")));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    let result = import_via(o, &tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn import_via(o: &ImportOptions, tmp: &Path) -> Result<ImportReport> {
    convert(o, tmp)?;
    let text = std::fs::read(tmp.join("import.json")).context("the converter wrote no import.json")?;
    let imp: Imported = serde_json::from_slice(&text).context("parse the converter's import.json")?;
    let cfg = config_of(&imp)?;
    let device = parse_device(&cfg.train.device)?;
    let data = TrainData::without_frames(&cfg, imp.dims.clone(), imp.normalization.clone(), device)?;
    std::fs::create_dir_all(o.out).with_context(|| format!("create {}", o.out.display()))?;
    let mut trainer = Trainer::new(cfg.clone(), o.out, &data)?;
    let origin = o.checkpoint.display().to_string();
    let read = |f: &str| crate::checkpoint::read_tensors(&tmp.join(f));
    load_strict(&mut trainer.vs, read("online.safetensors")?, &origin)?;
    load_strict(&mut trainer.ema_vs, read("weights.safetensors")?, &origin)?;
    let info = DataInfo {
        dataset: format!("imported from {}", o.checkpoint.display()),
        dims: imp.dims.clone(),
        state_names: imp.state_names.clone(),
        action_names: imp.action_names.clone(),
        normalization: imp.normalization.clone(),
        modality_map: trainer.net.encoder.modality_map.clone(),
    };
    std::fs::write(o.out.join("config.toml"), cfg.to_toml()).with_context(|| format!("write {}/config.toml", o.out.display()))?;
    info.save(o.out)?;
    std::fs::write(o.out.join("import.json"), &text).with_context(|| format!("write {}/import.json", o.out.display()))?;
    let checkpoint = trainer.save_checkpoint()?;
    let parameters = trainer.parameter_count();
    drop(trainer);
    let package = match o.package {
        Some(p) => Some(crate::export::export(o.out, p, true, Some(&checkpoint), o.name)?),
        None => None,
    };
    Ok(ImportReport { run: o.out.to_path_buf(), checkpoint, parameters, notes: imp.notes, source: imp.source, package })
}
