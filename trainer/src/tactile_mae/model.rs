//! A small ViT masked autoencoder for tactile images (seed 001).
//!
//! Encoder: linear patch embedding + learned position and frame embeddings, pre-norm
//! transformer blocks over the visible patches only, final LayerNorm. Decoder: a linear map
//! to the decoder width, a learned mask token in every hidden position (and for every patch
//! of a frame to predict), position and frame embeddings, transformer blocks, a linear head
//! to the patch values.
//!
//! - Static ([`TactileMae::static_loss`]): frame 1, 75 % of its patches hidden, the hidden
//!   ones reconstructed.
//! - Dynamic ([`TactileMae::dynamic_losses`]): frames 1-3, each masked independently, encoded
//!   together; the decoder reconstructs their hidden patches (`loss_recon`) and predicts every
//!   patch of frame 4 from mask tokens alone (`loss_pred`).
//! - Joint (mode 2, [`TactileMae::joint_loss`]): `alpha loss_static + beta (loss_recon +
//!   loss_pred)`, both objectives on the same batch.

use tch::nn::Path;
use tch::{Kind, Tensor};

use super::objective::{frame_mse, joint, masked_patch_mse, patchify, random_masking, JointLoss, Masking};
use crate::model::layers::{AffineLayerNorm, LinInit, Linear, N002};

/// Frames of a dynamic sample: three seen, one predicted.
pub const FRAMES: i64 = 4;

/// Shapes of the MAE (the `[tactile_mae]` config section).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaeConfig {
    /// Image height and width (pixels), multiples of `patch`.
    pub image: (i64, i64),
    pub channels: i64,
    pub patch: i64,
    pub width: i64,
    pub depth: usize,
    pub heads: i64,
    pub decoder_width: i64,
    pub decoder_depth: usize,
    pub mask_ratio: f64,
}

impl Default for MaeConfig {
    /// The simulator's two 16 x 16 pads stacked (32 x 16, one channel), 4 x 4 patches.
    fn default() -> Self {
        MaeConfig { image: (32, 16), channels: 1, patch: 4, width: 64, depth: 2, heads: 4, decoder_width: 32, decoder_depth: 1, mask_ratio: 0.75 }
    }
}

impl MaeConfig {
    /// Patches per frame.
    pub fn patches(&self) -> i64 {
        (self.image.0 / self.patch) * (self.image.1 / self.patch)
    }

    /// Values per frame (H * W * C): the length of a policy's tactile vector.
    pub fn values_per_frame(&self) -> usize {
        (self.image.0 * self.image.1 * self.channels) as usize
    }

    /// Values per patch.
    pub fn patch_dim(&self) -> i64 {
        self.patch * self.patch * self.channels
    }

    /// Why these shapes cannot build, naming the field.
    pub fn check(&self) -> Result<(), String> {
        let bad = |f: &str, why: String| Err(format!("tactile_mae.{f}: {why}"));
        if self.patch < 1 || self.image.0 % self.patch != 0 || self.image.1 % self.patch != 0 {
            return bad("patch", format!("{} must divide the image size {}x{}", self.patch, self.image.0, self.image.1));
        }
        if self.heads < 1 || self.width % self.heads != 0 || self.decoder_width % self.heads != 0 {
            return bad("heads", format!("{} must divide width {} and decoder_width {}", self.heads, self.width, self.decoder_width));
        }
        if !(0.0..1.0).contains(&self.mask_ratio) {
            return bad("mask_ratio", format!("{} is not in [0, 1)", self.mask_ratio));
        }
        if self.depth == 0 || self.decoder_depth == 0 || self.channels < 1 {
            return bad("depth", "depth, decoder_depth and channels must be at least 1".into());
        }
        Ok(())
    }
}

/// Pre-norm transformer block (multi-head self-attention, MLP ratio 4, GELU).
struct Block {
    ln1: AffineLayerNorm,
    qkv: Linear,
    proj: Linear,
    ln2: AffineLayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: i64,
}

impl Block {
    fn new(p: &Path, w: i64, heads: i64) -> Block {
        Block {
            ln1: AffineLayerNorm::new(p, "norm1", w, 1e-6),
            qkv: Linear::new(&(p / "attn"), "qkv", w, 3 * w, true, LinInit::Xavier),
            proj: Linear::new(&(p / "attn"), "proj", w, w, true, LinInit::Xavier),
            ln2: AffineLayerNorm::new(p, "norm2", w, 1e-6),
            fc1: Linear::new(&(p / "mlp"), "fc1", w, 4 * w, true, LinInit::Xavier),
            fc2: Linear::new(&(p / "mlp"), "fc2", 4 * w, w, true, LinInit::Xavier),
            heads,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let s = x.size();
        let (n, l, w) = (s[0], s[1], s[2]);
        let hd = w / self.heads;
        let qkv = self.qkv.forward(&self.ln1.forward(x)).view([n, l, 3, self.heads, hd]).permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let a = (q.matmul(&k.transpose(-2, -1)) / (hd as f64).sqrt()).softmax(-1, Kind::Float);
        let o = a.matmul(&v).transpose(1, 2).reshape([n, l, w]);
        let x = x + self.proj.forward(&o);
        let y = self.fc2.forward(&self.fc1.forward(&self.ln2.forward(&x)).gelu("none"));
        x + y
    }
}

/// The MAE's encoder (what a policy keeps): patch embedding, position and
/// frame embeddings, transformer blocks, final LayerNorm.
pub struct MaeEncoder {
    pub cfg: MaeConfig,
    patch_embed: Linear,
    pos: Tensor,
    frame: Tensor,
    blocks: Vec<Block>,
    norm: AffineLayerNorm,
}

impl MaeEncoder {
    /// Variables under `enc` (`patch_embed`, `pos_embed`, `frame_embed`, `blocks.i`, `norm`).
    pub fn new(enc: &Path, cfg: &MaeConfig) -> Result<MaeEncoder, String> {
        cfg.check()?;
        let (l, w) = (cfg.patches(), cfg.width);
        Ok(MaeEncoder {
            patch_embed: Linear::new(enc, "patch_embed", cfg.patch_dim(), w, true, LinInit::Xavier),
            pos: enc.var("pos_embed", &[1, l, w], N002),
            frame: enc.var("frame_embed", &[FRAMES, w], N002),
            blocks: (0..cfg.depth).map(|i| Block::new(&(enc / "blocks" / i), w, cfg.heads)).collect(),
            norm: AffineLayerNorm::new(enc, "norm", w, 1e-6),
            cfg: cfg.clone(),
        })
    }

    /// Visible tokens of frame `f`: `(N, K, W)`.
    fn visible(&self, patches: &Tensor, f: i64, m: &Masking) -> Tensor {
        let tokens = self.patch_embed.forward(patches) + &self.pos + self.frame.get(f);
        gather_tokens(&tokens, &m.keep)
    }

    fn encode(&self, tokens: &Tensor) -> Tensor {
        let mut x = tokens.shallow_clone();
        for b in &self.blocks {
            x = b.forward(&x);
        }
        self.norm.forward(&x)
    }

    /// Features of whole frames `(N, C, H, W)` (nothing hidden, frame embedding 0):
    /// the mean of the encoded patch tokens, `(N, W)` (what a policy consumes).
    pub fn features(&self, x: &Tensor) -> Tensor {
        let patches = patchify(x, self.cfg.patch);
        let tokens = self.patch_embed.forward(&patches) + &self.pos + self.frame.get(0);
        self.encode(&tokens).mean_dim(1, false, Kind::Float)
    }
}

pub struct TactileMae {
    pub cfg: MaeConfig,
    pub encoder: MaeEncoder,
    dec_embed: Linear,
    mask_token: Tensor,
    dec_pos: Tensor,
    dec_frame: Tensor,
    dec_blocks: Vec<Block>,
    dec_norm: AffineLayerNorm,
    dec_pred: Linear,
}

/// `x` `(N, L, W)` at `idx` `(N, K)` along dim 1.
fn gather_tokens(x: &Tensor, idx: &Tensor) -> Tensor {
    let w = x.size()[2];
    x.gather(1, &idx.unsqueeze(-1).expand([-1, -1, w], false), false)
}

impl TactileMae {
    pub fn new(p: &Path, cfg: &MaeConfig) -> Result<TactileMae, String> {
        let encoder = MaeEncoder::new(&(p / "encoder"), cfg)?;
        let (l, w, dw) = (cfg.patches(), cfg.width, cfg.decoder_width);
        let dec = p / "decoder";
        Ok(TactileMae {
            encoder,
            dec_embed: Linear::new(&dec, "embed", w, dw, true, LinInit::Xavier),
            mask_token: dec.var("mask_token", &[dw], N002),
            dec_pos: dec.var("pos_embed", &[1, l, dw], N002),
            dec_frame: dec.var("frame_embed", &[FRAMES, dw], N002),
            dec_blocks: (0..cfg.decoder_depth).map(|i| Block::new(&(&dec / "blocks" / i), dw, cfg.heads)).collect(),
            dec_norm: AffineLayerNorm::new(&dec, "norm", dw, 1e-6),
            dec_pred: Linear::new(&dec, "pred", dw, cfg.patch_dim(), true, LinInit::Zero),
            cfg: cfg.clone(),
        })
    }

    fn visible(&self, patches: &Tensor, f: i64, m: &Masking) -> Tensor {
        self.encoder.visible(patches, f, m)
    }

    fn encode(&self, tokens: &Tensor) -> Tensor {
        self.encoder.encode(tokens)
    }

    /// Decoder tokens of frame `f` from its encoded visible tokens (`None`: all hidden).
    fn decoder_frame(&self, enc: Option<(&Tensor, &Masking)>, n: i64, f: i64) -> Tensor {
        let (l, dw) = (self.cfg.patches(), self.cfg.decoder_width);
        let x = match enc {
            Some((e, m)) => {
                let vis = self.dec_embed.forward(e);
                let k = vis.size()[1];
                let hidden = self.mask_token.view([1, 1, dw]).expand([n, l - k, dw], false);
                gather_tokens(&Tensor::cat(&[vis, hidden], 1), &m.restore)
            }
            None => self.mask_token.view([1, 1, dw]).expand([n, l, dw], false),
        };
        x + &self.dec_pos + self.dec_frame.get(f)
    }

    /// Patch values for decoder tokens `(N, T, DW)` -> `(N, T, D)`.
    fn decode(&self, tokens: &Tensor) -> Tensor {
        let mut x = tokens.shallow_clone();
        for b in &self.dec_blocks {
            x = b.forward(&x);
        }
        self.dec_pred.forward(&self.dec_norm.forward(&x))
    }

    /// `loss_static` of frames `(N, C, H, W)`.
    pub fn static_loss(&self, x: &Tensor) -> Tensor {
        let target = patchify(x, self.cfg.patch);
        let n = target.size()[0];
        let m = random_masking(n, self.cfg.patches(), self.cfg.mask_ratio, x.device());
        let enc = self.encode(&self.visible(&target, 0, &m));
        let pred = self.decode(&self.decoder_frame(Some((&enc, &m)), n, 0));
        masked_patch_mse(&pred, &target, &m.mask)
    }

    /// `(loss_recon, loss_pred)` of clips `(N, 4, C, H, W)`.
    pub fn dynamic_losses(&self, clips: &Tensor) -> (Tensor, Tensor) {
        let n = clips.size()[0];
        let (l, p) = (self.cfg.patches(), self.cfg.patch);
        let targets: Vec<Tensor> = (0..FRAMES).map(|f| patchify(&clips.select(1, f), p)).collect();
        let masks: Vec<Masking> = (0..3).map(|_| random_masking(n, l, self.cfg.mask_ratio, clips.device())).collect();
        let seen: Vec<Tensor> = (0..3).map(|f| self.visible(&targets[f as usize], f, &masks[f as usize])).collect();
        let k = seen[0].size()[1];
        let enc = self.encode(&Tensor::cat(&seen, 1));
        let mut dec_in: Vec<Tensor> = (0..3).map(|f| self.decoder_frame(Some((&enc.narrow(1, f * k, k), &masks[f as usize])), n, f)).collect();
        dec_in.push(self.decoder_frame(None, n, 3));
        let pred = self.decode(&Tensor::cat(&dec_in, 1));
        let recon_pred = pred.narrow(1, 0, 3 * l);
        let recon_target = Tensor::cat(&targets[..3], 1);
        let recon_mask = Tensor::cat(&masks.iter().map(|m| m.mask.shallow_clone()).collect::<Vec<_>>(), 1);
        let loss_recon = masked_patch_mse(&recon_pred, &recon_target, &recon_mask);
        let loss_pred = frame_mse(&pred.narrow(1, 3 * l, l), &targets[3]);
        (loss_recon, loss_pred)
    }

    /// Mode 2: both objectives on clips `(N, 4, C, H, W)` (the static one on frame 1).
    pub fn joint_loss(&self, clips: &Tensor, alpha: f64, beta: f64) -> JointLoss {
        let loss_static = self.static_loss(&clips.select(1, 0));
        let (recon, pred) = self.dynamic_losses(clips);
        joint(loss_static, recon, pred, alpha, beta)
    }

    /// The encoder's features of whole frames, see [`MaeEncoder::features`].
    pub fn features(&self, x: &Tensor) -> Tensor {
        self.encoder.features(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::{OptimizerConfig, VarStore};
    use tch::Device;

    /// Clips of a pressure blob sliding across the pads: frame f has it at row 8 + 4 f.
    fn clips(n: i64) -> Tensor {
        let ys = Tensor::arange(32, (Kind::Float, Device::Cpu)).view([1, 1, 1, 32, 1]);
        let xs = Tensor::arange(16, (Kind::Float, Device::Cpu)).view([1, 1, 1, 1, 16]);
        let f = Tensor::arange(FRAMES, (Kind::Float, Device::Cpu)).view([1, FRAMES, 1, 1, 1]);
        let x0 = Tensor::arange(n, (Kind::Float, Device::Cpu)).view([n, 1, 1, 1, 1]).fmod(8.0) + 4.0;
        let cy = f * 4.0 + 8.0;
        ((-(&ys - cy).square() - (&xs - x0).square()) / 8.0).exp()
    }

    #[test]
    fn shapes_are_checked_by_field() {
        let bad = MaeConfig { patch: 5, ..MaeConfig::default() };
        assert!(bad.check().unwrap_err().contains("tactile_mae.patch"));
        let bad = MaeConfig { heads: 3, ..MaeConfig::default() };
        assert!(bad.check().unwrap_err().contains("tactile_mae.heads"));
        let bad = MaeConfig { mask_ratio: 1.0, ..MaeConfig::default() };
        assert!(bad.check().unwrap_err().contains("tactile_mae.mask_ratio"));
        assert_eq!((MaeConfig::default().patches(), MaeConfig::default().patch_dim()), (32, 16));
    }

    #[test]
    fn joint_training_lowers_every_loss() {
        let _rng = crate::tch_rng_lock();
        tch::manual_seed(1);
        let vs = VarStore::new(Device::Cpu);
        let mae = TactileMae::new(&vs.root(), &MaeConfig::default()).unwrap();
        let data = clips(16);
        assert_eq!(data.size(), [16, 4, 1, 32, 16]);
        assert_eq!(mae.features(&data.select(1, 0)).size(), [16, 64]);
        let mut opt = tch::nn::AdamW::default().build(&vs, 2e-3).unwrap();
        let first = mae.joint_loss(&data, 1.0, 1.0).scalars();
        let mut last = first;
        for _ in 0..60 {
            let l = mae.joint_loss(&data, 1.0, 1.0);
            opt.backward_step(&l.total);
            last = l.scalars();
        }
        assert_eq!(last.loss_dynamic, last.loss_recon + last.loss_pred);
        // The zero-initialised head starts every loss at the data's own energy; training cuts them.
        for (name, a, b) in [("static", first.loss_static, last.loss_static), ("recon", first.loss_recon, last.loss_recon), ("pred", first.loss_pred, last.loss_pred)] {
            eprintln!("loss_{name}: {a:.4} -> {b:.4}");
            assert!(b < 0.6 * a, "{name}: {a} -> {b}");
        }
    }
}
