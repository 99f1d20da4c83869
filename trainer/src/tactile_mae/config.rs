//! The pretraining config (`maniflow-train pretrain-tactile --config`): the MAE's
//! shapes (`[tactile_mae]`) and the run (`[pretrain]`). Every field has a
//! default (`trainer/configs/tactile-mae.toml` lists them); unknown fields are
//! refused by name.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::model::MaeConfig;
use crate::config::{parse_validated, read_config_text};

/// `[pretrain]`: data, objective weights, optimiser, schedule, guards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainSettings {
    /// The dataset's pressure image feature.
    pub key: String,
    /// Frames between the four frames of a clip (1 = consecutive frames).
    pub frame_stride: usize,
    /// Clips are used when one of their frames has a cell at or above this
    /// pressure (the pads touch something); 0 = every clip. Frames without
    /// contact are sensor noise, and most of a pick episode has no contact.
    pub min_contact_pressure: f64,
    pub epochs: u64,
    pub batch_size: usize,
    /// Peak learning rate, reached after `warmup_epochs` (linear), then cosine to 0.
    pub lr: f64,
    pub warmup_epochs: f64,
    pub weight_decay: f64,
    pub betas: [f64; 2],
    pub eps: f64,
    /// Clip the gradient's total norm (0 = off).
    pub grad_clip: f64,
    /// Weight of `loss_static` and of `loss_dynamic` in `loss_total`.
    pub alpha: f64,
    pub beta: f64,
    pub seed: u64,
    /// A checkpoint every this many epochs (and after the last).
    pub checkpoint_every_epochs: u64,
    pub spike_factor: f64,
    pub spike_window: usize,
    pub spike_skip_update: bool,
    pub max_consecutive_nonfinite: u32,
    /// cpu, cuda, cuda:N (not part of the run's identity: a resume may move it).
    pub device: String,
}

impl Default for PretrainSettings {
    fn default() -> Self {
        PretrainSettings {
            key: "observation.tactile_image".into(),
            frame_stride: 1,
            min_contact_pressure: 0.1,
            epochs: 20,
            batch_size: 64,
            lr: 1e-3,
            warmup_epochs: 2.0,
            weight_decay: 0.05,
            betas: [0.9, 0.95],
            eps: 1e-8,
            grad_clip: 1.0,
            alpha: 0.5,
            beta: 0.5,
            seed: 0,
            checkpoint_every_epochs: 1,
            spike_factor: 10.0,
            spike_window: 50,
            spike_skip_update: false,
            max_consecutive_nonfinite: 5,
            device: "cpu".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainConfig {
    pub tactile_mae: MaeConfig,
    pub pretrain: PretrainSettings,
}

impl PretrainConfig {
    pub fn from_toml_str(text: &str, origin: &str) -> anyhow::Result<PretrainConfig> {
        parse_validated(text, origin, Self::validate)
    }

    pub fn load(path: &Path) -> anyhow::Result<PretrainConfig> {
        Self::from_toml_str(&read_config_text(path)?, &path.display().to_string())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// sha256 of everything that makes the run (not the epoch budget or the device).
    pub fn sha(&self) -> String {
        let mut c = self.clone();
        c.pretrain.epochs = 0;
        c.pretrain.device = String::new();
        hex::encode(Sha256::digest(c.to_toml().as_bytes()))
    }

    pub fn validate(&self) -> Result<(), String> {
        self.tactile_mae.check()?;
        let p = &self.pretrain;
        let bad = |f: &str, why: String| Err(format!("pretrain.{f}: {why}"));
        if p.key.is_empty() {
            return bad("key", "is empty".into());
        }
        if p.frame_stride == 0 || p.batch_size == 0 || p.epochs == 0 {
            return bad("frame_stride", "frame_stride, batch_size and epochs must be >= 1".into());
        }
        for (f, v) in [("lr", p.lr), ("eps", p.eps)] {
            if !(v.is_finite() && v > 0.0) {
                return bad(f, format!("{v} must be > 0"));
            }
        }
        for (f, v) in [("min_contact_pressure", p.min_contact_pressure), ("alpha", p.alpha), ("beta", p.beta), ("weight_decay", p.weight_decay), ("grad_clip", p.grad_clip), ("warmup_epochs", p.warmup_epochs)] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(f, format!("{v} must be >= 0"));
            }
        }
        if p.alpha + p.beta <= 0.0 {
            return bad("alpha", "alpha + beta must be > 0".into());
        }
        if !p.betas.iter().all(|b| (0.0..1.0).contains(b)) {
            return bad("betas", format!("{:?} must be in [0, 1)", p.betas));
        }
        if !(p.spike_factor > 1.0) || p.spike_window == 0 || p.max_consecutive_nonfinite == 0 {
            return bad("spike_factor", "spike_factor > 1, spike_window >= 1 and max_consecutive_nonfinite >= 1".into());
        }
        if p.checkpoint_every_epochs == 0 {
            return bad("checkpoint_every_epochs", "must be >= 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_and_bad_fields_are_named() {
        let c = PretrainConfig::default();
        assert_eq!(PretrainConfig::from_toml_str(&c.to_toml(), "x").unwrap(), c);
        let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/tactile-mae.toml");
        assert_eq!(PretrainConfig::load(Path::new(shipped)).unwrap(), c, "configs/tactile-mae.toml lists the defaults");
        let e = PretrainConfig::from_toml_str("[pretrain]\nalpah = 1.0\n", "cfg.toml").unwrap_err().to_string();
        assert!(e.contains("cfg.toml") && e.contains("alpah"), "{e}");
        let e = PretrainConfig::from_toml_str("[pretrain]\nlr = -1.0\n", "cfg.toml").unwrap_err().to_string();
        assert!(e.contains("pretrain.lr"), "{e}");
        let e = PretrainConfig::from_toml_str("[tactile_mae]\npatch = 5\n", "cfg.toml").unwrap_err().to_string();
        assert!(e.contains("tactile_mae.patch"), "{e}");
        // The epoch budget and the device do not change the run's identity.
        let mut d = c.clone();
        d.pretrain.epochs = 99;
        d.pretrain.device = "cuda".into();
        assert_eq!(d.sha(), c.sha());
        d.pretrain.alpha = 0.25;
        assert_ne!(d.sha(), c.sha());
    }
}
