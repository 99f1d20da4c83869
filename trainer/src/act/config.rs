//! ACT training config (TOML, `policy = "act"`). Model fields carry LeRobot's
//! `ACTConfig` names and defaults; optimiser defaults are LeRobot's
//! (AdamW lr 1e-5, backbone lr 1e-5, weight decay 1e-4, grad clip 10, batch 8).

use crate::attn_reg::AttnRegConfig;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ActTrainConfig {
    /// Must be "act" (a ManiFlow config has no `policy` key).
    pub policy: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub model: ActModelConfig,
    pub data: ActDataConfig,
    #[serde(default)]
    pub train: ActOptimConfig,
    /// Seed 002's attention regulariser on the decoder cross-attention.
    #[serde(default)]
    pub attention_loss: AttnRegConfig,
    #[serde(default)]
    pub modality_dropout: ModalityDropout,
}

/// LeRobot `ACTConfig` model fields (same names and defaults).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ActModelConfig {
    pub chunk_size: usize,
    pub n_action_steps: usize,
    /// "resnet18" or "resnet34" (torchvision names, frozen BatchNorm).
    pub vision_backbone: String,
    pub pre_norm: bool,
    pub dim_model: usize,
    pub n_heads: usize,
    pub dim_feedforward: usize,
    /// "relu" or "gelu".
    pub feedforward_activation: String,
    pub n_encoder_layers: usize,
    pub n_decoder_layers: usize,
    pub use_vae: bool,
    pub latent_dim: usize,
    pub n_vae_encoder_layers: usize,
    pub temporal_ensemble_coeff: Option<f64>,
    pub dropout: f64,
    pub kl_weight: f64,
}

impl Default for ActModelConfig {
    fn default() -> Self {
        ActModelConfig {
            chunk_size: 100,
            n_action_steps: 100,
            vision_backbone: "resnet18".into(),
            pre_norm: false,
            dim_model: 512,
            n_heads: 8,
            dim_feedforward: 3200,
            feedforward_activation: "relu".into(),
            n_encoder_layers: 4,
            n_decoder_layers: 1,
            use_vae: true,
            latent_dim: 32,
            n_vae_encoder_layers: 4,
            temporal_ensemble_coeff: None,
            dropout: 0.1,
            kl_weight: 10.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ActDataConfig {
    /// Camera keys, in token (and LeRobot `input_features`) order.
    pub cameras: Vec<String>,
    #[serde(default = "d_state")]
    pub state_key: String,
    #[serde(default = "d_action")]
    pub action_key: String,
    /// Fraction of episodes held out for `val_l1_loss`.
    #[serde(default = "d_val")]
    pub val_ratio: f64,
}

fn d_state() -> String {
    "observation.state".into()
}
fn d_action() -> String {
    "action".into()
}
fn d_val() -> f64 {
    0.05
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ActOptimConfig {
    pub batch_size: usize,
    pub steps: u64,
    pub seed: u64,
    pub lr: f64,
    /// Learning rate of `model.backbone.*` (LeRobot's second parameter group).
    pub lr_backbone: f64,
    pub weight_decay: f64,
    pub betas: [f64; 2],
    pub eps: f64,
    /// Max total gradient norm (0 = off).
    pub grad_clip: f64,
    pub log_every: u64,
    pub val_every: u64,
    pub checkpoint_every: u64,
    /// Torch intra-op threads (0 = libtorch default).
    pub threads: usize,
    pub device: String,
    /// Loss-spike detector (METRICS.md "Stability").
    pub spike_window: usize,
    pub spike_factor: f64,
    pub max_consecutive_nonfinite: u32,
}

impl Default for ActOptimConfig {
    fn default() -> Self {
        ActOptimConfig {
            batch_size: 8,
            steps: 100_000,
            seed: 1000,
            lr: 1e-5,
            lr_backbone: 1e-5,
            weight_decay: 1e-4,
            betas: [0.9, 0.999],
            eps: 1e-8,
            grad_clip: 10.0,
            log_every: 50,
            val_every: 500,
            checkpoint_every: 5000,
            threads: 0,
            device: "cpu".into(),
            spike_window: 200,
            spike_factor: 5.0,
            max_consecutive_nonfinite: 10,
        }
    }
}

/// Modality dropout (seed 002, phase 1): during training, each sample with
/// probability `p` gets one of `modalities` (picked uniformly) zeroed in
/// normalised space (the state becomes the dataset mean; a camera frame the
/// normalisation mean image). Off by default; the seed uses p = 0.3.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModalityDropout {
    pub p: f64,
    /// "state" and/or "images" (all cameras at once).
    pub modalities: Vec<String>,
}

impl Default for ModalityDropout {
    fn default() -> Self {
        ModalityDropout {
            p: 0.0,
            modalities: vec!["state".into(), "images".into()],
        }
    }
}

impl ActTrainConfig {
    pub fn from_toml_str(text: &str, origin: &str) -> anyhow::Result<ActTrainConfig> {
        crate::config::parse_validated(text, origin, Self::validate)
    }

    pub fn load(path: &Path) -> anyhow::Result<ActTrainConfig> {
        Self::from_toml_str(
            &crate::config::read_config_text(path)?,
            &path.display().to_string(),
        )
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    pub fn validate(&self) -> Result<(), String> {
        let m = &self.model;
        let err = |f: &str, msg: String| Err(format!("field `{f}` {msg}"));
        if self.policy != "act" {
            return err(
                "policy",
                format!("is `{}`; this config format is for \"act\"", self.policy),
            );
        }
        if m.dim_model == 0 || m.n_heads == 0 || m.dim_model % m.n_heads != 0 {
            return err(
                "model.dim_model",
                format!(
                    "({}) must be a positive multiple of model.n_heads ({})",
                    m.dim_model, m.n_heads
                ),
            );
        }
        if m.dim_model % 4 != 0 {
            return err(
                "model.dim_model",
                "must be a multiple of 4 (2-D sinusoidal camera embedding)".into(),
            );
        }
        if m.chunk_size == 0 || m.n_action_steps == 0 || m.n_action_steps > m.chunk_size {
            return err(
                "model.n_action_steps",
                format!(
                    "({}) must be in 1..=chunk_size ({})",
                    m.n_action_steps, m.chunk_size
                ),
            );
        }
        if m.temporal_ensemble_coeff.is_some() && m.n_action_steps != 1 {
            return err(
                "model.n_action_steps",
                "must be 1 with temporal_ensemble_coeff (LeRobot's rule)".into(),
            );
        }
        if !["resnet18", "resnet34"].contains(&m.vision_backbone.as_str()) {
            return err(
                "model.vision_backbone",
                format!(
                    "`{}` is not supported (resnet18, resnet34)",
                    m.vision_backbone
                ),
            );
        }
        if !["relu", "gelu"].contains(&m.feedforward_activation.as_str()) {
            return err(
                "model.feedforward_activation",
                format!(
                    "`{}` is not supported (relu, gelu)",
                    m.feedforward_activation
                ),
            );
        }
        if m.n_encoder_layers == 0
            || m.n_decoder_layers == 0
            || (m.use_vae && m.n_vae_encoder_layers == 0)
        {
            return err(
                "model.n_encoder_layers",
                "and n_decoder_layers (and n_vae_encoder_layers with use_vae) must be >= 1".into(),
            );
        }
        if !(0.0..1.0).contains(&m.dropout) {
            return err("model.dropout", "must be in [0, 1)".into());
        }
        if self.data.cameras.is_empty() {
            return err(
                "data.cameras",
                "must name at least one camera (ACT without images is not supported)".into(),
            );
        }
        if !(0.0..1.0).contains(&self.data.val_ratio) {
            return err("data.val_ratio", "must be in [0, 1)".into());
        }
        let t = &self.train;
        if t.batch_size == 0 || t.log_every == 0 || t.checkpoint_every == 0 || t.val_every == 0 {
            return err(
                "train.batch_size",
                "and log_every, val_every, checkpoint_every must be >= 1".into(),
            );
        }
        if !(0.0..=1.0).contains(&self.modality_dropout.p) {
            return err("modality_dropout.p", "must be in [0, 1]".into());
        }
        for mo in &self.modality_dropout.modalities {
            if mo != "state" && mo != "images" {
                return err(
                    "modality_dropout.modalities",
                    format!("has `{mo}` (expected \"state\" or \"images\")"),
                );
            }
        }
        if self.modality_dropout.p > 0.0 && self.modality_dropout.modalities.is_empty() {
            return err("modality_dropout.modalities", "is empty but p > 0".into());
        }
        self.attention_loss.validate()
    }
}

/// True when a TOML text is an ACT config (`policy = "act"` at top level).
pub fn is_act_toml(text: &str) -> bool {
    toml::from_str::<toml::Table>(text)
        .ok()
        .and_then(|t| t.get("policy").and_then(|v| v.as_str().map(|s| s == "act")))
        .unwrap_or(false)
}
