//! A pretrained tactile MAE as a policy's tactile encoder (`encoder.tactile = "mae"`).
//!
//! A run starts from a `pretrain-tactile` run directory: its `config.toml` gives the encoder's
//! shapes, its `data.json` the pressure normalisation and its latest checkpoint the
//! `encoder.*` weights, which become `obs_encoder.tactile.mae.*` of the policy. The policy's
//! tactile input is normalised exactly as in pretraining: `(p - mean) / std`, one mean and std
//! for every cell (a `mean_std` normalisation with those values repeated per cell, so the
//! runtime's normaliser does the same).

use super::config::PretrainConfig;
use super::data::TactileDataInfo;
use super::model::MaeConfig;
use crate::checkpoint;
use anyhow::{bail, Context, Result};
use maniflow_runtime::policy::manifest::Normalization;
use std::path::{Path, PathBuf};
use tch::Tensor;

/// Variable prefix of the MAE encoder inside a ManiFlow policy.
pub const POLICY_PREFIX: &str = "obs_encoder.tactile.mae.";

/// What a policy takes from a pretraining run.
#[derive(Debug, Clone)]
pub struct PretrainedMae {
    pub run: PathBuf,
    pub checkpoint: PathBuf,
    pub shapes: MaeConfig,
    /// The dataset feature the MAE was pretrained on.
    pub key: String,
    pub mean: f64,
    pub std: f64,
}

impl PretrainedMae {
    /// Reads `run`'s config, data description and latest checkpoint; every error names the file.
    pub fn load(run: &Path) -> Result<PretrainedMae> {
        let cfg_path = run.join("config.toml");
        if !cfg_path.exists() {
            bail!("encoder.tactile_mae.run: {} has no config.toml (not a `maniflow-train pretrain-tactile` run)", run.display());
        }
        let cfg = PretrainConfig::load(&cfg_path)?;
        let data_path = run.join("data.json");
        let text = std::fs::read_to_string(&data_path).with_context(|| format!("encoder.tactile_mae.run: reading {}", data_path.display()))?;
        let data: TactileDataInfo = serde_json::from_str(&text).with_context(|| format!("parsing {}", data_path.display()))?;
        if !(data.mean.is_finite() && data.std.is_finite() && data.std > 0.0) {
            bail!("{}: pressure normalisation mean {} std {} is not usable", data_path.display(), data.mean, data.std);
        }
        let checkpoint = checkpoint::latest(run)?
            .with_context(|| format!("encoder.tactile_mae.run: {} has no complete checkpoint (did pretraining finish an epoch?)", run.display()))?;
        Ok(PretrainedMae { run: run.to_path_buf(), checkpoint, shapes: cfg.tactile_mae, key: data.key, mean: data.mean, std: data.std })
    }

    /// Values per tactile frame (`H * W * C`).
    pub fn cells(&self) -> usize {
        self.shapes.values_per_frame()
    }

    /// The policy's normalisation of the tactile feature (`cells` values).
    pub fn normalization(&self) -> Normalization {
        let n = self.cells();
        Normalization::MeanStd { mean: vec![self.mean as f32; n], std: vec![self.std as f32; n], eps: 0.0 }
    }

    /// The checkpoint's `encoder.*` tensors under the policy's names (`obs_encoder.tactile.mae.*`).
    pub fn encoder_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let path = self.checkpoint.join("model.safetensors");
        let all = checkpoint::read_tensors(&path)?;
        let enc: Vec<(String, Tensor)> =
            all.into_iter().filter_map(|(n, t)| n.strip_prefix("encoder.").map(|rest| (format!("{POLICY_PREFIX}{rest}"), t))).collect();
        if enc.is_empty() {
            bail!("{}: no `encoder.*` tensors (not a tactile MAE checkpoint)", path.display());
        }
        Ok(enc)
    }

    /// Checks the policy's tactile feature against the pretraining: same key, same size.
    pub fn check_feature(&self, key: &str, values: usize) -> Result<()> {
        if key != self.key {
            bail!(
                "encoder.tactile_key = `{key}` but the tactile MAE in {} was pretrained on `{}`",
                self.run.display(),
                self.key
            );
        }
        if values != self.cells() {
            bail!(
                "`{key}` has {values} values per frame, the tactile MAE in {} takes {:?} x {} = {}",
                self.run.display(),
                self.shapes.image,
                self.shapes.channels,
                self.cells()
            );
        }
        Ok(())
    }
}

/// Copies the pretrained encoder into a policy's variables: every `obs_encoder.tactile.mae.*`
/// variable must get a tensor of its shape and every tensor must find its variable.
pub fn init_policy(vs: &mut tch::nn::VarStore, tensors: &[(String, Tensor)], origin: &Path) -> Result<usize> {
    let vars = vs.variables();
    let mut n = 0;
    tch::no_grad(|| -> Result<()> {
        for (name, t) in tensors {
            let Some(v) = vars.get(name) else {
                bail!("{}: `{name}` has no place in the policy (its tactile MAE shapes differ from the checkpoint's)", origin.display());
            };
            if v.size() != t.size() {
                bail!("{}: `{name}` has shape {:?}, the policy needs {:?}", origin.display(), t.size(), v.size());
            }
            let mut v = v.shallow_clone();
            v.copy_(&t.to_device(v.device()));
            n += 1;
        }
        Ok(())
    })?;
    let expected = vars.keys().filter(|k| k.starts_with(POLICY_PREFIX)).count();
    if n != expected {
        bail!("{}: {n} encoder tensors for the policy's {expected} tactile MAE variables", origin.display());
    }
    Ok(n)
}

/// Freezes (or not) the policy's MAE variables.
pub fn set_frozen(vs: &tch::nn::VarStore, frozen: bool) {
    for (name, t) in vs.variables() {
        if name.starts_with(POLICY_PREFIX) {
            let _ = t.set_requires_grad(!frozen);
        }
    }
}
