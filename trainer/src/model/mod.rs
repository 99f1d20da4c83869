//! The ManiFlow policy network in `tch`: observation encoder + DiTX
//! (docs/MODEL.md). Variables live under `obs_encoder.` and `model.`.

pub mod ditx;
pub mod encoder;
pub mod experts;
pub mod fusion;
pub mod layers;

use crate::config::Config;
use serde::{Deserialize, Serialize};
use tch::nn::Path;
use tch::Tensor;

/// Feature dimensions that come from the dataset.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObsDims {
    /// (key, H, W) of each camera at the model's input resolution.
    pub cameras: Vec<(String, usize, usize)>,
    pub state_key: String,
    pub state_dim: usize,
    /// (key, values per frame) when the tactile input is used.
    pub tactile: Option<(String, usize)>,
    /// Shapes of the pretrained tactile MAE encoder (`encoder.tactile = "mae"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tactile_mae: Option<crate::tactile_mae::model::MaeConfig>,
    pub action_dim: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ModalityRange {
    pub modality: String,
    pub start: usize,
    pub end: usize,
}

/// A batch of normalised observations.
pub struct Obs {
    /// One (B, To, 3, H, W) tensor per camera, RGB in [0, 1].
    pub images: Vec<Tensor>,
    /// (B, To, Ds)
    pub state: Tensor,
    /// (B, To, N)
    pub tactile: Option<Tensor>,
}

impl Obs {
    pub fn narrow(&self, start: i64, len: i64) -> Obs {
        Obs {
            images: self.images.iter().map(|t| t.narrow(0, start, len)).collect(),
            state: self.state.narrow(0, start, len),
            tactile: self.tactile.as_ref().map(|t| t.narrow(0, start, len)),
        }
    }
}

pub struct ManiFlowNet {
    pub encoder: encoder::ObsEncoder,
    pub ditx: ditx::DiTX,
}

impl ManiFlowNet {
    pub fn new(root: &Path, cfg: &Config, dims: &ObsDims) -> anyhow::Result<Self> {
        let encoder = encoder::ObsEncoder::new(&(root / "obs_encoder"), cfg, dims)?;
        let ditx = ditx::DiTX::new(
            &(root / "model"),
            &cfg.model,
            dims.action_dim as i64,
            encoder.context_dim,
            &encoder.modality_map,
        );
        Ok(ManiFlowNet { encoder, ditx })
    }

    /// obs -> raw context (B, L, Dc) (the `encoder.onnx` output).
    pub fn encode(&self, obs: &Obs) -> Tensor {
        self.encoder.forward(obs)
    }

    /// Raw context -> velocity (the `velocity.onnx` graph).
    pub fn velocity(&self, x_t: &Tensor, t: &Tensor, target_t: &Tensor, context: &Tensor, train: bool, rec: Option<&mut ditx::Recorder>) -> Tensor {
        self.velocity_with_prefix(x_t, t, target_t, context, None, train, rec)
    }

    /// As `velocity`, continuing a given prefix (prefix-conditioned networks).
    #[allow(clippy::too_many_arguments)]
    pub fn velocity_with_prefix(
        &self,
        x_t: &Tensor,
        t: &Tensor,
        target_t: &Tensor,
        context: &Tensor,
        prefix: Option<&ditx::PrefixCond>,
        train: bool,
        rec: Option<&mut ditx::Recorder>,
    ) -> Tensor {
        let ctx = self.ditx.embed_context(context);
        self.ditx.forward(x_t, t, target_t, &ctx, prefix, train, rec)
    }

    /// Router weights alpha (B, E) for a raw context (B, L, Dc); None without experts.
    pub fn router_alpha(&self, context: &Tensor) -> Option<Tensor> {
        let heads = self.ditx.experts()?;
        Some(heads.alpha(&self.ditx.embed_context(context)))
    }

    /// Few-step Euler sampler of MANIFLOW.md section 5 (relative target time),
    /// in normalised action space: (B, T, Da).
    pub fn sample(&self, context: &Tensor, noise: &Tensor, steps: usize, absolute: bool) -> Tensor {
        self.sample_with_prefix(context, noise, None, steps, absolute)
    }

    /// As `sample`, continuing a given prefix: the prefix rows of the result are the
    /// given actions (as the runtime's engine returns them).
    pub fn sample_with_prefix(&self, context: &Tensor, noise: &Tensor, prefix: Option<&ditx::PrefixCond>, steps: usize, absolute: bool) -> Tensor {
        let ctx = self.ditx.embed_context(context);
        let b = noise.size()[0];
        let opts = (tch::Kind::Float, noise.device());
        let dt = 1.0 / steps as f64;
        let mut x = noise.shallow_clone();
        for i in 0..steps {
            let t = Tensor::full([b], i as f64 * dt, opts);
            let tt = if absolute { &t + dt } else { Tensor::full([b], dt, opts) };
            let v = self.ditx.forward(&x, &t, &tt, &ctx, prefix, false, None);
            x = x + v * dt;
        }
        match prefix {
            Some(p) => {
                let m = p.mask.unsqueeze(-1);
                &x * (1.0 - &m) + &p.actions * &m
            }
            None => x,
        }
    }
}
