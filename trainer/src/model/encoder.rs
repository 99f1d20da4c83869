//! Observation encoder (docs/MODEL.md): ResNet-GN per camera, tactile (taxels
//! or a pretrained tactile MAE), proprio; `tokens` or `concat` fusion.

use super::fusion::SparseCrossAttention;
use super::layers::{Conv, GroupNorm, LinInit, Linear};
use super::{ModalityRange, Obs, ObsDims};
use crate::config::{camera_modality, Config, Fusion, TactileKind};
use crate::tactile_mae::model::MaeEncoder;
use anyhow::{bail, Result};
use tch::nn::Path;
use tch::{Kind, Tensor};

#[derive(Debug)]
struct BasicBlock {
    conv1: Conv,
    bn1: GroupNorm,
    conv2: Conv,
    bn2: GroupNorm,
    down: Option<(Conv, GroupNorm)>,
}

impl BasicBlock {
    fn new(p: &Path, cin: i64, cout: i64, stride: i64) -> Self {
        let down = (stride != 1 || cin != cout).then(|| {
            let d = p / "downsample";
            (Conv::new(&d, "0", cin, cout, 1, stride, 0), GroupNorm::new(&d, "1", cout))
        });
        BasicBlock {
            conv1: Conv::new(p, "conv1", cin, cout, 3, stride, 1),
            bn1: GroupNorm::new(p, "bn1", cout),
            conv2: Conv::new(p, "conv2", cout, cout, 3, 1, 1),
            bn2: GroupNorm::new(p, "bn2", cout),
            down,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let y = self.bn1.forward(&self.conv1.forward(x)).relu();
        let y = self.bn2.forward(&self.conv2.forward(&y));
        let idn = match &self.down {
            Some((c, g)) => g.forward(&c.forward(x)),
            None => x.shallow_clone(),
        };
        (y + idn).relu()
    }
}

/// ResNet-18-style backbone with GroupNorm; output (N, 8w, h, w').
#[derive(Debug)]
pub struct ResNetGn {
    conv1: Conv,
    bn1: GroupNorm,
    blocks: Vec<BasicBlock>,
    mean: Tensor,
    std: Tensor,
    pub out_channels: i64,
}

impl ResNetGn {
    pub fn new(p: &Path, width: i64, blocks: [usize; 4]) -> Self {
        let mut v = Vec::new();
        let mut cin = width;
        for (s, &n) in blocks.iter().enumerate() {
            let cout = width << s;
            let lp = p / format!("layer{}", s + 1);
            for b in 0..n {
                let stride = if s > 0 && b == 0 { 2 } else { 1 };
                v.push(BasicBlock::new(&(&lp / b), cin, cout, stride));
                cin = cout;
            }
        }
        let dev = p.device();
        ResNetGn {
            conv1: Conv::new(p, "conv1", 3, width, 7, 2, 3),
            bn1: GroupNorm::new(p, "bn1", width),
            blocks: v,
            mean: Tensor::from_slice(&[0.485f32, 0.456, 0.406]).view([1, 3, 1, 1]).to_device(dev),
            std: Tensor::from_slice(&[0.229f32, 0.224, 0.225]).view([1, 3, 1, 1]).to_device(dev),
            out_channels: width * 8,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let x = (x - &self.mean) / &self.std;
        let mut x = self.bn1.forward(&self.conv1.forward(&x)).relu();
        x = x.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        for b in &self.blocks {
            x = b.forward(&x);
        }
        x
    }
}

/// Spatial size of the stride-32 feature map for an input of `n` pixels
/// (conv 7/2/3, maxpool 3/2/1, three stride-2 3x3 convs with pad 1).
pub fn feature_size(n: usize) -> usize {
    let conv = |n: usize, k: usize, s: usize, p: usize| (n + 2 * p - k) / s + 1;
    let mut n = conv(n, 7, 2, 3);
    n = conv(n, 3, 2, 1);
    for _ in 0..3 {
        n = conv(n, 3, 2, 1);
    }
    n
}

#[derive(Debug)]
struct Camera {
    backbone: ResNetGn,
    proj: Option<Linear>,
}

/// Tactile features per frame before fusion.
enum TactileFeatures {
    /// The values themselves (taxels, or a pressure image as a vector).
    Raw,
    /// A pretrained MAE encoder's mean patch token (`obs_encoder.tactile.mae.*`).
    Mae(MaeEncoder),
}

impl std::fmt::Debug for TactileFeatures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TactileFeatures::Raw => f.write_str("Raw"),
            TactileFeatures::Mae(m) => write!(f, "Mae({:?})", m.cfg),
        }
    }
}

impl TactileFeatures {
    /// (B, To, N) -> (B, To, F).
    fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            TactileFeatures::Raw => x.shallow_clone(),
            TactileFeatures::Mae(m) => {
                let s = x.size();
                let (ih, iw) = m.cfg.image;
                let frames = x.reshape([s[0] * s[1], m.cfg.channels, ih, iw]);
                m.features(&frames).reshape([s[0], s[1], -1])
            }
        }
    }
}

/// The tactile features of a config: `None` when tactile is not used; with their width.
fn tactile_features(p: &Path, cfg: &Config, dims: &ObsDims) -> Result<Option<(TactileFeatures, i64)>> {
    let Some((key, n)) = &dims.tactile else { return Ok(None) };
    match cfg.encoder.tactile {
        TactileKind::None => Ok(None),
        TactileKind::Taxels => Ok(Some((TactileFeatures::Raw, *n as i64))),
        TactileKind::Mae => {
            let Some(shapes) = &dims.tactile_mae else {
                bail!("encoder.tactile = \"mae\" but the run has no tactile MAE shapes (data.json dims.tactile_mae)")
            };
            let cells = shapes.values_per_frame();
            if cells != *n {
                bail!("`{key}` has {n} values per frame, the tactile MAE takes {:?} x {} = {cells}", shapes.image, shapes.channels);
            }
            let mae = MaeEncoder::new(&(p / "tactile" / "mae"), shapes).map_err(anyhow::Error::msg)?;
            Ok(Some((TactileFeatures::Mae(mae), shapes.width)))
        }
    }
}

#[derive(Debug)]
pub struct ObsEncoder {
    cameras: Vec<Camera>,
    tactile_features: Option<TactileFeatures>,
    tactile: Option<Linear>,
    proprio: Option<Linear>,
    /// `fusion = "cross_attention"`: the proprio/tactile tokens query the camera tokens.
    cross: Option<SparseCrossAttention>,
    fusion: Fusion,
    to: i64,
    pub context_tokens: i64,
    pub context_dim: i64,
    pub modality_map: Vec<ModalityRange>,
}

impl ObsEncoder {
    pub fn new(p: &Path, cfg: &Config, dims: &ObsDims) -> Result<Self> {
        let e = &cfg.encoder;
        let to = cfg.model.n_obs_steps as i64;
        let dc = e.cond_dim as i64;
        let tokens = cfg.model.fusion.has_tokens();
        let cross_fusion = cfg.model.fusion == Fusion::CrossAttention;
        let feat = feature_size(e.image_size[0]) * feature_size(e.image_size[1]);
        let mut map = Vec::new();
        let mut start = 0usize;
        let mut push = |name: &str, n: usize, map: &mut Vec<ModalityRange>| {
            map.push(ModalityRange { modality: name.to_string(), start, end: start + n });
            start += n;
        };
        let cameras: Vec<Camera> = e
            .cameras
            .iter()
            .map(|key| {
                let m = camera_modality(key);
                let cp = p / m;
                let backbone = ResNetGn::new(&(&cp / "backbone"), e.resnet_width as i64, e.resnet_blocks);
                let proj = tokens.then(|| Linear::new(&cp, "proj", backbone.out_channels, dc, true, LinInit::Xavier));
                if tokens && !cross_fusion {
                    push(m, cfg.model.n_obs_steps * feat, &mut map);
                }
                Camera { backbone, proj }
            })
            .collect();
        let tf = tactile_features(p, cfg, dims)?;
        let use_tactile = tf.is_some();
        let taxels = tf.as_ref().map_or(0, |t| t.1);
        let (tactile, proprio) = if tokens {
            let t = use_tactile.then(|| Linear::new(&(p / "tactile"), "proj", taxels, dc, true, LinInit::Xavier));
            if cross_fusion {
                // one attended-vision token per query token, then the query tokens themselves
                push("vision", cfg.model.n_obs_steps * (1 + usize::from(use_tactile)), &mut map);
            }
            if use_tactile {
                push("tactile", cfg.model.n_obs_steps, &mut map);
            }
            let pr = Linear::new(&(p / "proprio"), "proj", dims.state_dim as i64, dc, true, LinInit::Xavier);
            push("proprio", cfg.model.n_obs_steps, &mut map);
            (t, Some(pr))
        } else {
            (None, None)
        };
        let (l, dcx) = if tokens {
            (start as i64, dc)
        } else {
            let c8 = (e.resnet_width * 8) as i64;
            let per_step = c8 * cameras.len() as i64 + if use_tactile { taxels } else { 0 } + dims.state_dim as i64;
            (1, to * per_step)
        };
        let cross = cross_fusion.then(|| SparseCrossAttention::new(&(p / "fusion"), dc, e.cross_attention.unwrap_or_default()));
        Ok(ObsEncoder {
            cameras,
            tactile_features: tf.map(|t| t.0),
            tactile,
            proprio,
            cross,
            fusion: cfg.model.fusion,
            to,
            context_tokens: l,
            context_dim: dcx,
            modality_map: map,
        })
    }

    /// obs -> context (B, L, Dc). Images are (B, To, 3, H, W) in [0, 1].
    pub fn forward(&self, obs: &Obs) -> Tensor {
        let b = obs.state.size()[0];
        let to = self.to;
        let mut parts: Vec<Tensor> = Vec::new();
        for (cam, img) in self.cameras.iter().zip(&obs.images) {
            let s = img.size();
            let f = cam.backbone.forward(&img.reshape([b * to, s[2], s[3], s[4]]));
            let fs = f.size(); // (B*To, C, h, w)
            match (&self.fusion, &cam.proj) {
                (fusion, Some(proj)) if fusion.has_tokens() => {
                    let cells = f.flatten(2, 3).transpose(1, 2); // (B*To, h*w, C)
                    let tok = proj.forward(&cells).reshape([b, to * fs[2] * fs[3], -1]);
                    parts.push(tok);
                }
                _ => parts.push(f.mean_dim([2i64, 3].as_slice(), false, Kind::Float).reshape([b, to, fs[1]])),
            }
        }
        let tactile = match (&self.tactile_features, &obs.tactile) {
            (Some(f), Some(x)) => Some(f.forward(x)),
            _ => None,
        };
        match self.fusion {
            Fusion::Tokens | Fusion::CrossAttention => {
                let mut own = Vec::new();
                if let (Some(t), Some(x)) = (&self.tactile, &tactile) {
                    own.push(t.forward(x));
                }
                if let Some(p) = &self.proprio {
                    own.push(p.forward(&obs.state));
                }
                match &self.cross {
                    Some(x) => {
                        let queries = Tensor::cat(&own, 1);
                        let (vision, _) = x.forward(&queries, &Tensor::cat(&parts, 1));
                        Tensor::cat(&[vision, queries], 1)
                    }
                    None => {
                        parts.extend(own);
                        Tensor::cat(&parts, 1)
                    }
                }
            }
            Fusion::Concat => {
                if let Some(x) = tactile {
                    parts.push(x);
                }
                parts.push(obs.state.shallow_clone());
                // upstream's TimmObsEncoder: each key's (B, To, d) becomes (B, To*d), then keys are concatenated
                let flat: Vec<Tensor> = parts.iter().map(|x| x.reshape([b, 1, -1])).collect();
                Tensor::cat(&flat, 2)
            }
        }
    }
}
