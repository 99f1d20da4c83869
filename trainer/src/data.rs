//! From a LeRobot v3 dataset to training batches: episode-aware windows,
//! normalisation with the runtime's own `Normalizer` (so training and
//! deployment agree bit for bit), and tensors on the training device.

use crate::config::{Config, Fusion, TactileKind};
use crate::model::{Obs, ObsDims};
use anyhow::{bail, Context, Result};
use maniflow_runtime::dataset::window::{split_episodes, WindowSpec, Windows};
use maniflow_runtime::dataset::LeRobotDataset;
use maniflow_runtime::policy::manifest::Normalization;
use maniflow_runtime::policy::normalize::Normalizer;
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};

/// Normalisation of every feature the model sees (goes into policy.toml).
#[derive(Debug, Clone)]
pub struct Norms {
    pub by_key: BTreeMap<String, Normalization>,
}

pub struct TrainData {
    pub dims: ObsDims,
    pub norms: Norms,
    /// Per camera: all frames, (N, H, W, 3) u8 at the dataset's resolution.
    images: Vec<Tensor>,
    /// (N, Ds) normalised.
    state: Tensor,
    /// (N, Ntax) normalised.
    tactile: Option<Tensor>,
    /// (N, Da) normalised to [-1, 1] (limits).
    action: Tensor,
    /// Unnormalised actions (N, Da), for `train_action_mse_error`.
    action_raw: Tensor,
    action_norm: Normalizer,
    pub train: Windows,
    pub val: Windows,
    pub train_episodes: Vec<usize>,
    pub val_episodes: Vec<usize>,
    image_size: [usize; 2],
    episode_of: Vec<i64>,
    device: Device,
}

/// One batch, on the device.
pub struct Batch {
    pub obs: Obs,
    /// (B, T, Da) normalised.
    pub action: Tensor,
    /// Window indices and episode ids (for spike reports).
    pub windows: Vec<usize>,
    pub episodes: Vec<usize>,
    /// First frame index of each window's action chunk.
    pub action_frames: Tensor,
}

/// Statistic `name` of feature `key` from meta/stats.json, one value per element
/// of the feature. A pressure image's stats are one value over every cell, in
/// stored counts: they are converted to pressures and repeated per cell.
pub(crate) fn stat(ds: &LeRobotDataset, key: &str, name: &str) -> Result<Vec<f64>> {
    let fs = ds
        .stats
        .as_ref()
        .with_context(|| format!("{}: meta/stats.json is missing (normalisation needs it)", ds.root.display()))?
        .get(key)
        .with_context(|| format!("{}: meta/stats.json has no feature `{key}`", ds.root.display()))?;
    let v: &[f64] = match name {
        "min" => &fs.min,
        "max" => &fs.max,
        "mean" => &fs.mean,
        "std" => &fs.std,
        _ => fs.quantiles.get(name).map(|v| v.as_slice()).unwrap_or(&[]),
    };
    if v.is_empty() {
        bail!("{}: meta/stats.json has no `{key}.{name}`", ds.root.display());
    }
    let dim = feature_dim(ds, key)?;
    if let Some((h, w, scale)) = ds.info.features.get(key).and_then(|f| f.pressure_image_shape()) {
        return Ok(vec![v[0] * scale; h * w]);
    }
    if v.len() != dim {
        bail!("{}: meta/stats.json `{key}.{name}` has {} values, the feature has {dim}", ds.root.display(), v.len());
    }
    Ok(v.to_vec())
}

pub(crate) fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// Gather a float feature of every frame into a normalised (N, D) tensor.
pub(crate) fn feature(ds: &LeRobotDataset, key: &str, norm: &Normalizer, dim: usize) -> Result<(Tensor, Tensor)> {
    let n = ds.num_frames();
    let mut raw = Vec::with_capacity(n * dim);
    let mut out = vec![0f32; n * dim];
    for f in 0..n {
        let v = ds.vector(key, f);
        if v.len() != dim {
            bail!("{}: feature `{key}` frame {f} has {} values, expected {dim}", ds.root.display(), v.len());
        }
        raw.extend_from_slice(v);
    }
    for (src, dst) in raw.chunks(dim).zip(out.chunks_mut(dim)) {
        norm.normalize(src, dst);
    }
    let t = Tensor::from_slice(&out).view([n as i64, dim as i64]);
    let r = Tensor::from_slice(&raw).view([n as i64, dim as i64]);
    Ok((t, r))
}

/// Number of values of feature `key` (product of its shape in meta/info.json).
pub(crate) fn feature_dim(ds: &LeRobotDataset, key: &str) -> Result<usize> {
    ds.info
        .features
        .get(key)
        .map(|f| f.shape.iter().product())
        .with_context(|| format!("{}: meta/info.json has no feature `{key}` (the config needs it)", ds.root.display()))
}

/// Every frame of camera `key` as one (N, H, W, 3) u8 tensor on `device`, with (H, W).
pub(crate) fn camera_frames(ds: &LeRobotDataset, key: &str, device: Device) -> Result<(Tensor, usize, usize)> {
    let root = ds.root.display();
    let (h, w, c) = ds
        .image_shape(key)
        .with_context(|| format!("{root}: camera `{key}` from the config is not an image/video feature"))?;
    if c != 3 {
        bail!("{root}: camera `{key}` has {c} channels, expected 3 (RGB)");
    }
    let n = ds.num_frames();
    let mut buf = Vec::with_capacity(n * h * w * 3);
    for f in 0..n {
        buf.extend_from_slice(ds.image(key, f));
    }
    Ok((Tensor::from_slice(&buf).view([n as i64, h as i64, w as i64, 3]).to_device(device), h, w))
}

impl TrainData {
    pub fn new(ds: &LeRobotDataset, cfg: &Config, device: Device) -> Result<TrainData> {
        Self::with_norms(ds, cfg, device, None)
    }

    /// As `new`, but with the normalisation of action, state and tactile taken from `fixed`
    /// (a run's `data.json`) instead of the dataset's statistics: a resumed or imported run keeps
    /// the normalisation its weights were trained with.
    pub fn with_norms(
        ds: &LeRobotDataset,
        cfg: &Config,
        device: Device,
        fixed: Option<&BTreeMap<String, Normalization>>,
    ) -> Result<TrainData> {
        let e = &cfg.encoder;
        let m = &cfg.model;
        let root = ds.root.display().to_string();
        let dim_of = |key: &str| feature_dim(ds, key);
        let action_key = cfg.data.action_key.as_str();
        let da = dim_of(action_key)?;
        if m.action_dim != 0 && m.action_dim != da {
            bail!("config model.action_dim = {} but the dataset's `{action_key}` has {da} values", m.action_dim);
        }
        let ds_dim = dim_of(&e.state_key)?;
        let tactile = match e.tactile {
            TactileKind::Taxels | TactileKind::Mae => Some((e.tactile_key.clone(), dim_of(&e.tactile_key)?)),
            TactileKind::None => None,
        };
        let mut norms = BTreeMap::new();
        // Actions: limits (MANIFLOW.md section 4).
        let a_norm = Normalization::Limits {
            min: f32s(&stat(ds, action_key, "min")?),
            max: f32s(&stat(ds, action_key, "max")?),
        };
        // State: mean/std with tokens; raw (identity) with upstream concat.
        let s_norm = match m.fusion {
            Fusion::Tokens | Fusion::CrossAttention => Normalization::MeanStd {
                mean: f32s(&stat(ds, &e.state_key, "mean")?),
                std: f32s(&stat(ds, &e.state_key, "std")?),
                eps: 1e-8,
            },
            Fusion::Concat => Normalization::Identity,
        };
        let a_norm = pick_norm(fixed, action_key, da, a_norm)?;
        let s_norm = pick_norm(fixed, &e.state_key, ds_dim, s_norm)?;
        let an = Normalizer::new(&a_norm, da);
        let sn = Normalizer::new(&s_norm, ds_dim);
        let (action, action_raw) = feature(ds, action_key, &an, da)?;
        let (state, _) = feature(ds, &e.state_key, &sn, ds_dim)?;
        norms.insert(action_key.to_string(), a_norm);
        norms.insert(e.state_key.clone(), s_norm);
        let tactile_t = match &tactile {
            Some((key, n)) => {
                let t_norm = Normalization::MinMax {
                    min: f32s(&stat(ds, key, "min")?),
                    max: f32s(&stat(ds, key, "max")?),
                    eps: 1e-8,
                };
                let t_norm = pick_norm(fixed, key, *n, t_norm)?;
                let tn = Normalizer::new(&t_norm, *n);
                norms.insert(key.clone(), t_norm);
                Some(feature(ds, key, &tn, *n)?.0)
            }
            None => None,
        };
        let mut images = Vec::new();
        let mut cams = Vec::new();
        for key in &e.cameras {
            images.push(camera_frames(ds, key, device)?.0);
            cams.push((key.clone(), e.image_size[0], e.image_size[1]));
            norms.insert(key.clone(), Normalization::Identity);
        }
        let dims = ObsDims {
            cameras: cams,
            state_key: e.state_key.clone(),
            state_dim: ds_dim,
            tactile,
            // set from the pretraining run (or the run's data.json) by the caller
            tactile_mae: None,
            action_dim: da,
        };
        let (train_episodes, val_episodes) = split_episodes(ds.num_episodes(), cfg.data.val_ratio, cfg.train.seed);
        let spec = window_spec(cfg);
        let train = Windows::new(ds, &train_episodes, spec);
        let val = Windows::new(ds, &val_episodes, spec);
        if train.len() < cfg.train.batch_size {
            bail!(
                "{root}: {} training windows from {} episodes is fewer than one batch ({}); record more data or lower train.batch_size",
                train.len(),
                train_episodes.len(),
                cfg.train.batch_size
            );
        }
        let episode_of = (0..ds.num_frames()).map(|f| ds.episode_of(f) as i64).collect();
        Ok(TrainData {
            dims,
            norms: Norms { by_key: norms },
            images,
            state: state.to_device(device),
            tactile: tactile_t.map(|t| t.to_device(device)),
            action: action.to_device(device),
            action_raw: action_raw.to_device(device),
            action_norm: an,
            train,
            val,
            train_episodes,
            val_episodes,
            image_size: e.image_size,
            episode_of,
            device,
        })
    }

    /// No frames at all: the dims and normalisation of a model that was not trained here
    /// (`maniflow-train import`). Such data can build, checkpoint and export a model, not train it.
    pub fn without_frames(cfg: &Config, dims: ObsDims, norms: BTreeMap<String, Normalization>, device: Device) -> Result<TrainData> {
        let action_key = cfg.data.action_key.as_str();
        let a_norm = norms.get(action_key).with_context(|| format!("no normalisation for `{action_key}`"))?;
        check_norm_len(action_key, a_norm, dims.action_dim)?;
        let spec = window_spec(cfg);
        let empty = |d: usize| Tensor::zeros([0, d as i64], (Kind::Float, device));
        Ok(TrainData {
            action_norm: Normalizer::new(a_norm, dims.action_dim),
            images: Vec::new(),
            state: empty(dims.state_dim),
            tactile: dims.tactile.as_ref().map(|(_, n)| empty(*n)),
            action: empty(dims.action_dim),
            action_raw: empty(dims.action_dim),
            train: Windows::from_lengths(&[], spec),
            val: Windows::from_lengths(&[], spec),
            train_episodes: Vec::new(),
            val_episodes: Vec::new(),
            image_size: cfg.encoder.image_size,
            episode_of: Vec::new(),
            dims,
            norms: Norms { by_key: norms },
            device,
        })
    }

    pub fn action_normalizer(&self) -> &Normalizer {
        &self.action_norm
    }

    /// Assemble the windows `idx` of `split` into a batch.
    pub fn batch(&self, split: &Windows, idx: &[usize]) -> Batch {
        let b = idx.len() as i64;
        let mut obs_f = Vec::new();
        let mut act_f = Vec::new();
        let mut episodes = Vec::new();
        let mut first = Vec::new();
        for &i in idx {
            let w = split.sample(i);
            obs_f.extend(w.obs_frames.iter().map(|&f| f as i64));
            act_f.extend(w.action_frames.iter().map(|&f| f as i64));
            first.push(w.action_frames[0] as i64);
            episodes.push(w.episode);
        }
        let to = (obs_f.len() as i64) / b.max(1);
        let t = (act_f.len() as i64) / b.max(1);
        let oi = Tensor::from_slice(&obs_f).to_device(self.device);
        let ai = Tensor::from_slice(&act_f).to_device(self.device);
        let [h, w] = self.image_size.map(|v| v as i64);
        let images = self
            .images
            .iter()
            .map(|all| {
                let x = all.index_select(0, &oi).permute([0, 3, 1, 2]).to_kind(Kind::Float) / 255.0;
                let s = x.size();
                let x = if s[2] != h || s[3] != w { x.upsample_bilinear2d([h, w], false, None, None) } else { x };
                x.view([b, to, 3, h, w])
            })
            .collect();
        let obs = Obs {
            images,
            state: self.state.index_select(0, &oi).view([b, to, -1]),
            tactile: self.tactile.as_ref().map(|x| x.index_select(0, &oi).view([b, to, -1])),
        };
        Batch {
            obs,
            action: self.action.index_select(0, &ai).view([b, t, -1]),
            windows: idx.to_vec(),
            episodes,
            action_frames: ai.view([b, t]),
        }
    }

    /// Unnormalised ground-truth chunk of a batch, (B, T, Da).
    pub fn raw_actions(&self, batch: &Batch) -> Tensor {
        let s = batch.action_frames.size();
        self.action_raw.index_select(0, &batch.action_frames.flatten(0, -1)).view([s[0], s[1], -1])
    }

    pub fn num_frames(&self) -> usize {
        self.episode_of.len()
    }
}

/// The sample windows the model's horizon and observation steps ask for.
fn window_spec(cfg: &Config) -> WindowSpec {
    let m = &cfg.model;
    WindowSpec { n_obs_steps: m.n_obs_steps, horizon: m.horizon, n_action_steps: m.n_action_steps }
}

fn check_norm_len(key: &str, n: &Normalization, dim: usize) -> Result<()> {
    for (name, v) in n.stats() {
        if v.len() != dim {
            bail!("normalisation of `{key}`: {name} has {} values, the feature has {dim}", v.len());
        }
    }
    Ok(())
}

/// The run's fixed normalisation of `key` when there is one (checked against the feature's size),
/// else the one computed from the dataset.
fn pick_norm(fixed: Option<&BTreeMap<String, Normalization>>, key: &str, dim: usize, computed: Normalization) -> Result<Normalization> {
    match fixed.and_then(|f| f.get(key)) {
        Some(n) => {
            check_norm_len(key, n, dim).context("the run's data.json")?;
            Ok(n.clone())
        }
        None => Ok(computed),
    }
}
