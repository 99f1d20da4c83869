//! Training configuration (TOML). Presets live in `trainer/configs/`; a run
//! directory gets the resolved config as `config.toml`.
//!
//! Every table is `deny_unknown_fields`: a typo is an error that names the key.

use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Free-text name of the preset / run.
    #[serde(default)]
    pub name: String,
    pub model: ModelConfig,
    pub encoder: EncoderConfig,
    pub train: TrainConfig,
    pub data: DataConfig,
    /// Seed 002's attention regulariser on the DiTX cross-attention (state =
    /// proprio tokens, vision = camera tokens of the modality map). Off by default.
    #[serde(default, skip_serializing_if = "attn_reg_off")]
    pub attention_loss: crate::attn_reg::AttnRegConfig,
}

fn attn_reg_off(c: &crate::attn_reg::AttnRegConfig) -> bool {
    *c == crate::attn_reg::AttnRegConfig::default()
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GateType {
    None,
    Headwise,
    Elementwise,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Fusion {
    /// Per-modality tokens; cross-attention decides (default).
    Tokens,
    /// Upstream: every feature of every obs step flattened into ONE context token.
    Concat,
    /// Seed 004's V4: the proprio (and tactile) tokens query the camera tokens through
    /// multi-head cross-attention with a sparse top-k gate; DiTX gets the compact context
    /// [attended vision per query token, tactile tokens, proprio tokens] (`[encoder.cross_attention]`).
    #[serde(rename = "cross_attention")]
    CrossAttention,
}

impl Fusion {
    /// A context of per-modality tokens with a modality map (modality gates, attention metrics).
    pub fn has_tokens(self) -> bool {
        matches!(self, Fusion::Tokens | Fusion::CrossAttention)
    }
}

/// `[encoder.cross_attention]`: the sparse cross-attention of `fusion = "cross_attention"`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CrossAttentionConfig {
    /// Attention heads; they split `encoder.cond_dim`.
    pub heads: usize,
    /// Fraction of the camera tokens each query keeps per head (the largest weights,
    /// renormalised to sum to 1): seed 004's top 30 %.
    pub top_k: f64,
}

impl Default for CrossAttentionConfig {
    fn default() -> Self {
        CrossAttentionConfig { heads: 4, top_k: 0.3 }
    }
}

impl CrossAttentionConfig {
    /// Camera tokens kept out of `n`: ceil(top_k n), at least 1.
    pub fn keep(&self, n: usize) -> usize {
        ((self.top_k * n as f64).ceil() as usize).clamp(1, n.max(1))
    }
}

/// The DiTX velocity network (MANIFLOW.md section 1-2).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// T: chunk length.
    pub horizon: usize,
    /// To: observation steps.
    pub n_obs_steps: usize,
    /// Executed actions per chunk (runtime slicing starts at To-1).
    pub n_action_steps: usize,
    /// Da. 0 = take it from the dataset's `action` feature.
    #[serde(default)]
    pub action_dim: usize,
    pub n_layer: usize,
    pub n_head: usize,
    /// D.
    pub n_emb: usize,
    /// Et (upstream `diffusion_timestep_embed_dim`).
    pub time_embed_dim: usize,
    pub qkv_bias: bool,
    pub qk_norm: bool,
    /// Attention-probability dropout (train only).
    pub p_drop_attn: f64,
    /// `vis_cond_pos_embed` has visual_cond_len * To rows.
    pub visual_cond_len: usize,
    pub use_gate_attn: bool,
    pub gate_type: GateType,
    pub fusion: Fusion,
    /// Training-time real-time chunking: the network learns to continue a given
    /// prefix of the chunk (absent = off, today's model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<PrefixConfig>,
    /// E expert heads on DiTX's final layer, mixed per observation by a router on the
    /// fused context (seed 004's router + experts); 0 = the single head (upstream).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub experts: usize,
    /// `[model.router]`: with `experts` >= 2 (defaults: load_balance 0.01, temperature 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<RouterConfig>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// `[model.router]`: how the expert heads are mixed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// Weight of the load-balancing loss `E * sum_i usage_i^2` (1 when the batch uses the
    /// experts equally, E when one takes everything).
    #[serde(default = "default_load_balance")]
    pub load_balance: f64,
    /// Softmax temperature of the router (alpha = softmax(logits / temperature)); a
    /// stage's `router_temperature` replaces it while the stage runs.
    #[serde(default = "default_one")]
    pub temperature: f64,
}

fn default_load_balance() -> f64 {
    0.01
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig { load_balance: default_load_balance(), temperature: 1.0 }
    }
}

impl ModelConfig {
    /// The router settings (defaults when `[model.router]` is absent).
    pub fn router(&self) -> RouterConfig {
        self.router.unwrap_or_default()
    }

    /// Largest prefix trained (0 = prefix conditioning off).
    pub fn prefix_d_max(&self) -> usize {
        self.prefix.as_ref().map_or(0, PrefixConfig::d_max)
    }
}

/// Prefix conditioning (training-time RTC, Black et al. 2025, arXiv 2512.05964):
/// per example a delay d in `0..=d_max` is drawn; the chunk's first d executed rows
/// are given clean (flagged by a learned embedding) and left out of both losses.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PrefixConfig {
    /// Largest delay trained, in control ticks. Absent: from the control rate and the
    /// measured inference time, `ceil(inference_ms * control_hz / 1000) + 1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d_max: Option<usize>,
    /// The robot's control rate (Hz) the delay is counted in.
    #[serde(default = "default_control_hz")]
    pub control_hz: f64,
    /// Measured p99 inference time on the target computer (ms), e.g. from `maniflow bench`.
    #[serde(default = "default_inference_ms")]
    pub inference_ms: f64,
}

fn default_control_hz() -> f64 {
    30.0
}

fn default_inference_ms() -> f64 {
    15.0
}

impl PrefixConfig {
    pub fn d_max(&self) -> usize {
        self.d_max.unwrap_or_else(|| (self.inference_ms * self.control_hz / 1000.0).ceil().max(0.0) as usize + 1)
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TactileKind {
    /// Taxel array (or a pressure image as a vector): Linear per frame.
    Taxels,
    /// Pressure images through a pretrained tactile MAE encoder
    /// (`maniflow-train pretrain-tactile`), then Linear per frame; see `encoder.tactile_mae`.
    Mae,
    /// Not used even if the dataset has it.
    None,
}

/// Observation encoders (MANIFLOW.md section 3).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EncoderConfig {
    /// Camera feature keys, in token order (e.g. `observation.images.head`).
    pub cameras: Vec<String>,
    /// Model input resolution (H, W); dataset frames are resized (bilinear) to it.
    pub image_size: [usize; 2],
    /// ResNet stem width (64 = ResNet-18); stage widths are w, 2w, 4w, 8w. Multiple of 16.
    pub resnet_width: usize,
    /// BasicBlocks per stage ([2, 2, 2, 2] = ResNet-18).
    pub resnet_blocks: [usize; 4],
    /// Dc in `tokens` fusion (token width). In `concat` fusion Dc is derived.
    pub cond_dim: usize,
    /// Proprioception key.
    pub state_key: String,
    /// Tactile key and kind.
    #[serde(default = "default_tactile_key")]
    pub tactile_key: String,
    pub tactile: TactileKind,
    /// With `tactile = "mae"`: the pretraining run and whether its encoder is frozen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tactile_mae: Option<TactileMaeSource>,
    /// With `model.fusion = "cross_attention"` (defaults: 4 heads, top 30 %).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_attention: Option<CrossAttentionConfig>,
    /// Train-time augmentation (never at inference).
    pub augment: bool,
}

/// `[encoder.tactile_mae]`: where a policy's tactile encoder comes from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TactileMaeSource {
    /// A `maniflow-train pretrain-tactile` run directory: its `config.toml` gives the
    /// encoder's shapes, its `data.json` the pressure normalisation (the policy uses the same),
    /// its latest checkpoint the `encoder.*` weights. Read once, when a run starts; the policy's
    /// own checkpoints and `data.json` carry everything after that.
    pub run: std::path::PathBuf,
    /// Keep the pretrained encoder fixed (true) or fine-tune it with the policy (false).
    #[serde(default = "default_true")]
    pub freeze: bool,
    /// Learning-rate multiplier of the encoder when it is fine-tuned.
    #[serde(default = "default_one")]
    pub lr_scale: f64,
}

fn default_true() -> bool {
    true
}

fn default_one() -> f64 {
    1.0
}

fn default_tactile_key() -> String {
    "observation.tactile".into()
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TimeSampler {
    /// 0.999 * Beta(1, 1.5) (upstream default).
    Beta,
    Uniform,
    Cosmap,
    LogitNormal,
    Mode,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TargetTMode {
    Relative,
    Absolute,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub batch_size: usize,
    pub steps: u64,
    pub seed: u64,
    pub lr: f64,
    pub betas: [f64; 2],
    pub eps: f64,
    pub weight_decay: f64,
    /// No decay on biases, norms and embeddings.
    #[serde(default)]
    pub no_decay_norm_bias: bool,
    pub warmup_steps: u64,
    /// 0 = off (upstream).
    #[serde(default)]
    pub grad_clip: f64,
    /// Fraction of the batch for the flow branch (upstream 0.75); the rest is consistency.
    pub flow_batch_ratio: f64,
    pub time_sampler: TimeSampler,
    pub target_t: TargetTMode,
    /// Consistency branch: t = k / ct_discrete_steps, k ~ U{0..ct_discrete_steps-1}.
    pub ct_discrete_steps: usize,
    pub ema_max_decay: f64,
    pub log_every: u64,
    pub val_every: u64,
    /// Steps between `train_action_mse_error` evaluations.
    pub sample_every: u64,
    /// Sampling steps N for `train_action_mse_error`.
    pub sample_steps: usize,
    pub attn_every: u64,
    pub checkpoint_every: u64,
    /// Loss-spike detector: running median over this many steps ...
    pub spike_window: usize,
    /// ... and a step is a spike when loss > spike_factor * median.
    pub spike_factor: f64,
    /// Skip the optimiser update on a spike step.
    pub spike_skip_update: bool,
    /// Abort after this many consecutive non-finite steps.
    pub max_consecutive_nonfinite: u32,
    /// Torch intra-op threads (0 = libtorch default).
    #[serde(default)]
    pub threads: usize,
    /// `cpu`, `cuda`, `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Mixed precision on CUDA: "off" (f32) or "bf16" (autocast; see `cuda.rs`).
    #[serde(default)]
    pub autocast: crate::cuda::Autocast,
    /// Named stages (`[[train.stages]]`, e.g. warm-up, transition, fine-tune) with step
    /// boundaries and per-stage settings; none = one stage with the settings above.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<Stage>,
}

/// One `[[train.stages]]` entry: it runs from the step after the previous stage's `until`
/// to its own `until` (inclusive); the last stage runs to the end of training.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub name: String,
    /// Last step of the stage; every stage but the last has one, the last has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
    /// Base learning rate of the stage (replaces `train.lr`; the warm-up + cosine schedule
    /// of the whole run still multiplies it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Parameters kept fixed during the stage: prefixes of variable names, e.g.
    /// `"obs_encoder"`, `"model.blocks.0"`, `"model.final_layer.router"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frozen: Vec<String>,
    /// Router softmax temperature during the stage (needs `model.experts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_temperature: Option<f64>,
}

fn default_device() -> String {
    "cpu".into()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Fraction of episodes held out for `val_loss`.
    pub val_ratio: f64,
    pub action_key: String,
}

impl Config {
    pub fn from_toml_str(text: &str, origin: &str) -> anyhow::Result<Config> {
        parse_validated(text, origin, Self::validate)
    }

    pub fn load(path: &Path) -> anyhow::Result<Config> {
        Self::from_toml_str(&read_config_text(path)?, &path.display().to_string())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    pub fn validate(&self) -> Result<(), String> {
        let m = &self.model;
        let e = &self.encoder;
        let t = &self.train;
        let err = |field: &str, msg: String| Err(format!("field `{field}` {msg}"));
        if m.n_emb % m.n_head != 0 {
            return err("model.n_emb", format!("({}) must be divisible by model.n_head ({})", m.n_emb, m.n_head));
        }
        if m.time_embed_dim < 4 || m.time_embed_dim % 2 != 0 {
            return err("model.time_embed_dim", "must be even and >= 4".into());
        }
        if m.n_obs_steps == 0 || m.horizon < m.n_obs_steps - 1 + m.n_action_steps {
            return err(
                "model.horizon",
                format!(
                    "({}) must be >= n_obs_steps - 1 + n_action_steps ({})",
                    m.horizon,
                    m.n_obs_steps.saturating_sub(1) + m.n_action_steps
                ),
            );
        }
        if m.n_layer == 0 {
            return err("model.n_layer", "must be >= 1".into());
        }
        if let Some(p) = &m.prefix {
            if !(p.control_hz.is_finite() && p.control_hz > 0.0) {
                return err("model.prefix.control_hz", format!("must be > 0, got {}", p.control_hz));
            }
            if !(p.inference_ms.is_finite() && p.inference_ms >= 0.0) {
                return err("model.prefix.inference_ms", format!("must be >= 0, got {}", p.inference_ms));
            }
            let first = m.n_obs_steps - 1;
            if p.d_max() == 0 || first + p.d_max() >= m.horizon {
                return err(
                    "model.prefix.d_max",
                    format!("({}) must be in 1..{} (horizon - n_obs_steps + 1 leaves a row to generate)", p.d_max(), m.horizon - first),
                );
            }
        }
        if e.resnet_width == 0 || e.resnet_width % 16 != 0 {
            return err("encoder.resnet_width", "must be a positive multiple of 16 (GroupNorm with C/16 groups)".into());
        }
        if e.resnet_blocks.iter().any(|&b| b == 0) {
            return err("encoder.resnet_blocks", "every stage needs at least one block".into());
        }
        if e.image_size[0] < 32 || e.image_size[1] < 32 {
            return err("encoder.image_size", "must be at least 32x32 (stride-32 feature map)".into());
        }
        match (e.tactile, &e.tactile_mae) {
            (TactileKind::Mae, None) => {
                return err("encoder.tactile_mae", "is needed with encoder.tactile = \"mae\": [encoder.tactile_mae] run = \"<a pretrain-tactile run>\"".into())
            }
            (TactileKind::Mae, Some(s)) if !(s.lr_scale.is_finite() && s.lr_scale > 0.0) => {
                return err("encoder.tactile_mae.lr_scale", format!("must be > 0, got {}", s.lr_scale));
            }
            (TactileKind::Taxels | TactileKind::None, Some(_)) => {
                return err("encoder.tactile_mae", "is only read with encoder.tactile = \"mae\"".into());
            }
            _ => {}
        }
        if !(0.0..=1.0).contains(&t.flow_batch_ratio) {
            return err("train.flow_batch_ratio", "must be in [0, 1]".into());
        }
        if t.batch_size < 2 {
            return err("train.batch_size", "must be >= 2 (flow and consistency branches)".into());
        }
        if t.ct_discrete_steps == 0 {
            return err("train.ct_discrete_steps", "must be >= 1".into());
        }
        if !(0.0..1.0).contains(&self.data.val_ratio) {
            return err("data.val_ratio", "must be in [0, 1)".into());
        }
        if t.log_every == 0 || t.checkpoint_every == 0 {
            return err("train.log_every", "and train.checkpoint_every must be >= 1".into());
        }
        if m.fusion == Fusion::CrossAttention {
            let x = e.cross_attention.unwrap_or_default();
            if x.heads == 0 || e.cond_dim % x.heads != 0 {
                return err("encoder.cross_attention.heads", format!("({}) must divide encoder.cond_dim ({})", x.heads, e.cond_dim));
            }
            if !(x.top_k > 0.0 && x.top_k <= 1.0) {
                return err("encoder.cross_attention.top_k", format!("must be in (0, 1], got {}", x.top_k));
            }
            if e.cameras.is_empty() {
                return err("model.fusion", "\"cross_attention\" needs at least one camera (the keys and values)".into());
            }
        } else if e.cross_attention.is_some() {
            return err("encoder.cross_attention", "is only read with model.fusion = \"cross_attention\"".into());
        }
        self.validate_router()?;
        self.validate_stages()?;
        if self.attention_loss.enabled && !m.fusion.has_tokens() {
            return err("attention_loss.enabled", "needs model.fusion = \"tokens\" (concat fusion has one context token, no modalities)".into());
        }
        self.attention_loss.validate()
    }
}

impl Config {
    fn validate_router(&self) -> Result<(), String> {
        let m = &self.model;
        if m.experts == 1 {
            return Err("field `model.experts` must be 0 (a single head) or >= 2, got 1".into());
        }
        match (&m.router, m.experts) {
            (Some(_), 0) => Err("field `model.router` is only read with model.experts >= 2".into()),
            (Some(r), _) if !(r.load_balance.is_finite() && r.load_balance >= 0.0) => {
                Err(format!("field `model.router.load_balance` must be >= 0, got {}", r.load_balance))
            }
            (Some(r), _) if !(r.temperature.is_finite() && r.temperature > 0.0) => {
                Err(format!("field `model.router.temperature` must be > 0, got {}", r.temperature))
            }
            _ => Ok(()),
        }
    }

    fn validate_stages(&self) -> Result<(), String> {
        let stages = &self.train.stages;
        let mut prev: Option<u64> = None;
        for (i, s) in stages.iter().enumerate() {
            let at = |field: &str| format!("field `train.stages[{i}].{field}` (stage \"{}\")", s.name);
            if s.name.trim().is_empty() {
                return Err(format!("field `train.stages[{i}].name` must not be empty"));
            }
            if stages[..i].iter().any(|o| o.name == s.name) {
                return Err(format!("{}: two stages have this name", at("name")));
            }
            let last = i + 1 == stages.len();
            match (s.until, last) {
                (None, false) => return Err(format!("{} is missing: every stage but the last ends at a step", at("until"))),
                (Some(_), true) => return Err(format!("{}: the last stage runs to the end of training; leave `until` out", at("until"))),
                (Some(u), false) if u <= prev.unwrap_or(0) => {
                    return Err(format!("{} ({u}) must be after the previous stage's end ({})", at("until"), prev.unwrap_or(0)))
                }
                _ => {}
            }
            prev = s.until.or(prev);
            if let Some(lr) = s.lr {
                if !(lr.is_finite() && lr >= 0.0) {
                    return Err(format!("{} must be >= 0, got {lr}", at("lr")));
                }
            }
            if let Some(tau) = s.router_temperature {
                if self.model.experts == 0 {
                    return Err(format!("{} needs model.experts >= 2 (there is no router)", at("router_temperature")));
                }
                if !(tau.is_finite() && tau > 0.0) {
                    return Err(format!("{} must be > 0, got {tau}", at("router_temperature")));
                }
            }
            if let Some(f) = s.frozen.iter().find(|f| f.trim().is_empty()) {
                return Err(format!("{} holds an empty prefix {f:?}", at("frozen")));
            }
        }
        Ok(())
    }

    /// The stage that runs optimiser step `step` (1-based) and its index; None without stages.
    pub fn stage_at(&self, step: u64) -> Option<(usize, &Stage)> {
        let stages = &self.train.stages;
        stages.iter().enumerate().find(|(_, s)| s.until.is_none_or(|u| step <= u))
    }

    /// The router temperature at step `step` (the stage's, else `model.router.temperature`).
    pub fn router_temperature_at(&self, step: u64) -> f64 {
        self.stage_at(step).and_then(|(_, s)| s.router_temperature).unwrap_or(self.model.router().temperature)
    }

    /// The base learning rate at step `step` (the stage's, else `train.lr`).
    pub fn lr_base_at(&self, step: u64) -> f64 {
        self.stage_at(step).and_then(|(_, s)| s.lr).unwrap_or(self.train.lr)
    }
}

/// Parse a TOML config and validate it; both kinds of error start with `origin`.
pub fn parse_validated<T: serde::de::DeserializeOwned>(
    text: &str,
    origin: &str,
    validate: fn(&T) -> Result<(), String>,
) -> anyhow::Result<T> {
    let cfg: T = toml::from_str(text).map_err(|e| anyhow::anyhow!("{origin}: {}", e.to_string().trim_end()))?;
    validate(&cfg).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
    Ok(cfg)
}

/// A config file's text; the error names the file.
pub fn read_config_text(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))
}

/// Modality name of a camera key: the last `.`-separated segment
/// (`observation.images.head` -> `head`).
pub fn camera_modality(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}
