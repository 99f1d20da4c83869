//! ACT training on a LeRobot v3.0 dataset: LeRobot's objective (masked L1 +
//! kl_weight x KL), AdamW with a backbone parameter group, gradient clipping,
//! LeRobot metric names, seed 002's attention regulariser and modality dropout,
//! stability guards and atomic checkpoints whose `model.safetensors` is a
//! LeRobot state dict (with a LeRobot `config.json` beside it).

use super::config::ActTrainConfig;
use super::data_info::ActDataInfo;
use super::lerobot;
use super::model::{l1_kld, Act, ActInput};
use crate::attn_reg::attention_regularizer;
use crate::checkpoint::{self, Saved, TrainState};
use crate::data::{camera_frames, f32s, feature, feature_dim, stat};
use crate::metrics::{LoggerOptions, MetricsLogger};
use crate::train::{
    clip_scale, epoch_batch, guard_step, parse_device, sorted_vars, AdamW, Guards, SpikeDetector,
};
use anyhow::{bail, Context, Result};
use maniflow_runtime::dataset::window::{split_episodes, WindowSpec, Windows};
use maniflow_runtime::dataset::{LeRobotDataset, OpenOptions};
use maniflow_runtime::policy::manifest::Normalization;
use maniflow_runtime::policy::normalize::Normalizer;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The dataset in memory: u8 frames, normalised state and action.
pub struct ActData {
    pub info: ActDataInfo,
    images: Vec<Tensor>,
    state: Tensor,
    action: Tensor,
    pub train: Windows,
    pub val: Windows,
    pub train_episodes: Vec<usize>,
    pub val_episodes: Vec<usize>,
    img_mean: Tensor,
    img_std: Tensor,
    device: Device,
}

pub struct ActBatch {
    pub state: Tensor,
    pub images: Vec<Tensor>,
    pub action: Tensor,
    pub is_pad: Tensor,
    pub episodes: Vec<usize>,
}

impl ActData {
    pub fn new(ds: &LeRobotDataset, cfg: &ActTrainConfig, device: Device) -> Result<ActData> {
        let root = ds.root.display().to_string();
        let (sk, ak) = (cfg.data.state_key.as_str(), cfg.data.action_key.as_str());
        let (ds_dim, da) = (feature_dim(ds, sk)?, feature_dim(ds, ak)?);
        let ms = |key: &str| -> Result<Normalization> {
            Ok(Normalization::MeanStd {
                mean: f32s(&stat(ds, key, "mean")?),
                std: f32s(&stat(ds, key, "std")?),
                eps: 1e-8,
            })
        };
        let (sn, an) = (ms(sk)?, ms(ak)?);
        let (state, _) = feature(ds, sk, &Normalizer::new(&sn, ds_dim), ds_dim)?;
        let (action, _) = feature(ds, ak, &Normalizer::new(&an, da), da)?;
        let mut norms = BTreeMap::new();
        norms.insert(sk.to_string(), sn);
        norms.insert(ak.to_string(), an);
        let mut images = Vec::new();
        let mut cams = Vec::new();
        for key in &cfg.data.cameras {
            let (frames, h, w) = camera_frames(ds, key, device)?;
            images.push(frames);
            cams.push((key.clone(), h, w));
            norms.insert(
                key.clone(),
                Normalization::MeanStd {
                    mean: IMAGENET_MEAN.to_vec(),
                    std: IMAGENET_STD.to_vec(),
                    eps: 1e-8,
                },
            );
        }
        let (train_episodes, val_episodes) =
            split_episodes(ds.num_episodes(), cfg.data.val_ratio, cfg.train.seed);
        // LeRobot: every frame starts a sample; the chunk runs past the episode end with action_is_pad.
        let c = cfg.model.chunk_size;
        let spec = WindowSpec {
            n_obs_steps: 1,
            horizon: c,
            n_action_steps: c,
        };
        let train = Windows::new(ds, &train_episodes, spec);
        let val = Windows::new(ds, &val_episodes, spec);
        if train.len() < cfg.train.batch_size {
            bail!(
                "{root}: {} training samples is fewer than one batch ({})",
                train.len(),
                cfg.train.batch_size
            );
        }
        let info = ActDataInfo {
            dataset: root.clone(),
            cameras: cams,
            state_key: sk.to_string(),
            state_names: crate::cli_train::feature_names(ds, sk, ds_dim),
            action_key: ak.to_string(),
            action_names: crate::cli_train::feature_names(ds, ak, da),
            normalization: norms,
        };
        Ok(ActData {
            info,
            images,
            state: state.to_device(device),
            action: action.to_device(device),
            train,
            val,
            train_episodes,
            val_episodes,
            img_mean: Tensor::from_slice(&IMAGENET_MEAN)
                .view([1, 3, 1, 1])
                .to_device(device),
            img_std: Tensor::from_slice(&IMAGENET_STD)
                .view([1, 3, 1, 1])
                .to_device(device),
            device,
        })
    }

    pub fn batch(&self, split: &Windows, idx: &[usize]) -> ActBatch {
        let b = idx.len() as i64;
        let (mut of, mut af, mut pad, mut eps) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for &i in idx {
            let w = split.sample(i);
            of.push(w.obs_frames[0] as i64);
            af.extend(w.action_frames.iter().map(|&f| f as i64));
            pad.extend(w.action_is_pad.iter().copied());
            eps.push(w.episode);
        }
        let oi = Tensor::from_slice(&of).to_device(self.device);
        let ai = Tensor::from_slice(&af).to_device(self.device);
        let images = self
            .images
            .iter()
            .map(|all| {
                let x = all
                    .index_select(0, &oi)
                    .permute([0, 3, 1, 2])
                    .to_kind(Kind::Float)
                    / 255.0;
                (x - &self.img_mean) / (&self.img_std + 1e-8)
            })
            .collect();
        ActBatch {
            state: self.state.index_select(0, &oi),
            images,
            action: self
                .action
                .index_select(0, &ai)
                .view([b, -1, self.info.action_dim() as i64]),
            is_pad: Tensor::from_slice(&pad)
                .view([b, -1])
                .to_device(self.device),
            episodes: eps,
        }
    }
}

/// Seed 002 phase 1: per sample, with probability p, zero one modality (normalised space).
fn modality_dropout(batch: &mut ActBatch, cfg: &ActTrainConfig, rng: &mut impl Rng) -> usize {
    let md = &cfg.modality_dropout;
    if md.p <= 0.0 {
        return 0;
    }
    let b = batch.state.size()[0];
    let (mut keep_state, mut keep_img) = (vec![1f32; b as usize], vec![1f32; b as usize]);
    let mut dropped = 0;
    for i in 0..b as usize {
        if rng.random::<f64>() < md.p {
            let m = &md.modalities[rng.random_range(0..md.modalities.len())];
            if m == "state" {
                keep_state[i] = 0.0;
            } else {
                keep_img[i] = 0.0;
            }
            dropped += 1;
        }
    }
    if dropped > 0 {
        let dev = batch.state.device();
        let ks = Tensor::from_slice(&keep_state).view([b, 1]).to_device(dev);
        let ki = Tensor::from_slice(&keep_img)
            .view([b, 1, 1, 1])
            .to_device(dev);
        batch.state = &batch.state * ks;
        batch.images = batch.images.iter().map(|x| x * &ki).collect();
    }
    dropped
}

fn config_sha(cfg: &ActTrainConfig) -> String {
    let mut c = cfg.clone();
    c.train.steps = 0;
    hex::encode(Sha256::digest(c.to_toml().as_bytes()))
}

pub struct ActSummary {
    pub steps: u64,
    pub seconds: f64,
    pub last_l1: f64,
    pub first_state_ratio: f64,
    pub last_state_ratio: f64,
}

/// Key ranges of the encoder tokens that count as state (latent + robot_state)
/// and as vision (camera cells) for the regulariser.
pub fn act_token_ranges(
    n_1d: usize,
    n_tokens: usize,
) -> (Vec<std::ops::Range<usize>>, Vec<std::ops::Range<usize>>) {
    (vec![0..n_1d], vec![n_1d..n_tokens])
}

/// `maniflow-train train` with an ACT config.
pub fn train(
    cfg_path_or_text: (&str, String),
    dataset: &Path,
    out: &Path,
    steps: Option<u64>,
    init: Option<&Path>,
    quiet: bool,
    device: Option<&str>,
) -> Result<ActSummary> {
    let (origin, text) = cfg_path_or_text;
    let mut cfg = ActTrainConfig::from_toml_str(&text, origin)?;
    if let Some(s) = steps {
        cfg.train.steps = s;
    }
    if let Some(d) = device {
        cfg.train.device = d.to_string();
    }
    if checkpoint::latest(out)?.is_some() {
        bail!(
            "{} already holds a training run; choose another --out",
            out.display()
        );
    }
    let device = parse_device(&cfg.train.device)?;
    if cfg.train.threads > 0 {
        tch::set_num_threads(cfg.train.threads as i32);
    }
    let t0 = Instant::now();
    let opts = OpenOptions {
        image_keys: Some(cfg.data.cameras.clone()),
        ..Default::default()
    };
    let ds = LeRobotDataset::open(dataset, &opts)
        .with_context(|| format!("open dataset {}", dataset.display()))?;
    let data = ActData::new(&ds, &cfg, device)?;
    eprintln!(
        "dataset {}: {} episodes ({} train / {} val), {} frames, {} train samples; loaded in {:.1}s",
        dataset.display(),
        ds.num_episodes(),
        data.train_episodes.len(),
        data.val_episodes.len(),
        ds.num_frames(),
        data.train.len(),
        t0.elapsed().as_secs_f64()
    );
    drop(ds);
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    tch::manual_seed(cfg.train.seed as i64);
    let mut vs = VarStore::new(device);
    let model = Act::new(
        &(vs.root() / "model"),
        &cfg.model,
        data.info.state_dim(),
        data.info.action_dim(),
        data.info.cameras.len(),
    );
    if let Some(p) = init {
        let file = if p.is_dir() {
            p.join("model.safetensors")
        } else {
            p.to_path_buf()
        };
        let n = lerobot::load_weights(&mut vs, &file)?;
        eprintln!("initialised all {n} tensors from {}", file.display());
    }
    std::fs::write(out.join("config.toml"), cfg.to_toml())
        .with_context(|| format!("write {}", out.join("config.toml").display()))?;
    std::fs::write(
        out.join("data.json"),
        serde_json::to_vec_pretty(&data.info)?,
    )
    .with_context(|| format!("write {}/data.json", out.display()))?;
    let nparams: i64 = vs
        .trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum();
    eprintln!(
        "ACT: {nparams} parameters (dim {} x {} enc / {} dec layers, {} backbone), chunk {}, {} cameras, device {}",
        cfg.model.dim_model,
        cfg.model.n_encoder_layers,
        cfg.model.n_decoder_layers,
        cfg.model.vision_backbone,
        cfg.model.chunk_size,
        data.info.cameras.len(),
        cfg.train.device
    );
    let mut opt = AdamW::new(&vs, false);
    let tc = cfg.train.clone();
    opt.set_lr_multiplier(|n| n.starts_with("model.backbone."), tc.lr_backbone / tc.lr);
    let mut state = TrainState::new(config_sha(&cfg), tc.seed);
    let total = tc.steps;
    let mut logger = MetricsLogger::new(
        out,
        total,
        LoggerOptions {
            quiet,
            ..Default::default()
        },
    )?;
    let mut spikes = SpikeDetector::new(tc.spike_window, tc.spike_factor, Vec::new());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(tc.seed ^ 0xAC7);
    let start = Instant::now();
    let (mut first_ratio, mut last_ratio, mut last_l1) = (f64::NAN, f64::NAN, f64::NAN);
    let reg = cfg.attention_loss.clone();
    let lerobot_cfg = lerobot::config_json(&cfg, &data.info);
    while state.step < total {
        let step = state.step + 1;
        tch::manual_seed((tc.seed.wrapping_mul(1_000_003).wrapping_add(step)) as i64);
        let t_data = Instant::now();
        let (epoch, idx) = epoch_batch(data.train.len(), tc.batch_size, tc.seed, step);
        let mut batch = data.batch(&data.train, &idx);
        let dropped = modality_dropout(&mut batch, &cfg, &mut rng);
        let dataloading_s = t_data.elapsed().as_secs_f64();
        let t_upd = Instant::now();
        let outp = model.forward(
            &ActInput {
                state: &batch.state,
                images: &batch.images,
                action: Some((&batch.action, &batch.is_pad)),
            },
            true,
        );
        let (l1, kld) = l1_kld(&outp, &batch.action, &batch.is_pad);
        let mut loss = match &kld {
            Some(k) => &l1 + k * cfg.model.kl_weight,
            None => l1.shallow_clone(),
        };
        let (sr, vr) = act_token_ranges(outp.n_1d, outp.n_tokens);
        let ar = attention_regularizer(&outp.cross_attn, &sr, &vr, &reg);
        let lambda = reg.lambda(step);
        if lambda > 0.0 {
            loss = loss + &ar.loss * lambda;
        }
        let lval = loss.double_value(&[]);
        opt.zero_grad();
        let mut grad_norm = f64::NAN;
        if lval.is_finite() {
            loss.backward();
            grad_norm = opt.grad_norm();
        }
        let guards = Guards {
            max_consecutive_nonfinite: tc.max_consecutive_nonfinite,
            spike_factor: tc.spike_factor,
            skip_on_spike: false,
        };
        let what = format!("episodes {:?}", batch.episodes);
        if !guard_step(
            &mut state,
            &mut spikes,
            &mut logger,
            out,
            step,
            lval,
            grad_norm,
            &guards,
            &what,
        )? {
            opt.step(
                tc.lr,
                tc.betas,
                tc.eps,
                tc.weight_decay,
                clip_scale(grad_norm, tc.grad_clip),
            );
        }
        opt.zero_grad();
        let update_s = t_upd.elapsed().as_secs_f64();
        state.step = step;
        state.epoch = epoch;
        let l1v = l1.double_value(&[]);
        if first_ratio.is_nan() {
            first_ratio = ar.state_ratio;
        }
        last_ratio = ar.state_ratio;
        last_l1 = l1v;
        if step == 1 || step % tc.log_every == 0 || step == total {
            let mut s: Vec<(&str, f64)> = vec![
                ("loss", lval),
                ("l1_loss", l1v),
                ("grad_norm", grad_norm),
                ("lr", tc.lr),
                ("update_s", update_s),
                ("dataloading_s", dataloading_s),
                ("state_attention_ratio", ar.state_ratio),
                ("vision_attention_ratio", ar.vision_ratio),
                ("vision_attention_entropy", ar.vision_entropy),
            ];
            if let Some(k) = &kld {
                s.push(("kld_loss", k.double_value(&[])));
            }
            if reg.enabled {
                s.push(("attention_loss", ar.loss.double_value(&[])));
                s.push(("attention_loss_weight", lambda));
            }
            if cfg.modality_dropout.p > 0.0 {
                s.push(("modality_dropout_samples", dropped as f64));
            }
            let val;
            if step % tc.val_every == 0 || step == total {
                if let Some(v) = val_l1(&model, &data, tc.batch_size) {
                    val = v;
                    s.push(("val_l1_loss", val));
                }
            }
            logger.log(step, epoch, &s);
        }
        if step % tc.checkpoint_every == 0 || step == total {
            state.spike_window = spikes.window.iter().copied().collect();
            let model_t = sorted_vars(&vs);
            let p = checkpoint::save(
                out,
                &Saved {
                    model: &model_t,
                    ema: None,
                    optimizer: &opt.state_tensors(),
                    state: &state,
                },
            )?;
            let cj = p.join("config.json");
            std::fs::write(&cj, &lerobot_cfg).with_context(|| format!("write {}", cj.display()))?;
            logger.event(step, &format!("checkpoint {}", p.display()));
        }
    }
    logger.flush();
    let seconds = start.elapsed().as_secs_f64();
    Ok(ActSummary {
        steps: state.step,
        seconds,
        last_l1,
        first_state_ratio: first_ratio,
        last_state_ratio: last_ratio,
    })
}

/// L1 of the inference path (latent = 0, eval mode) on held-out episodes.
fn val_l1(model: &Act, data: &ActData, b: usize) -> Option<f64> {
    let n = data.val.len();
    if n == 0 {
        return None;
    }
    let _g = tch::no_grad_guard();
    let stride = (n / (4 * b)).max(1);
    let idx: Vec<usize> = (0..n).step_by(stride).collect();
    let (mut tot, mut cnt) = (0.0, 0.0);
    for chunk in idx.chunks(b).take(4) {
        let batch = data.batch(&data.val, chunk);
        let o = model.forward(
            &ActInput {
                state: &batch.state,
                images: &batch.images,
                action: None,
            },
            false,
        );
        let (l1, _) = l1_kld(&o, &batch.action, &batch.is_pad);
        tot += l1.double_value(&[]);
        cnt += 1.0;
    }
    (cnt > 0.0).then(|| tot / cnt)
}

pub fn run_dir_is_act(run: &Path) -> bool {
    std::fs::read_to_string(run.join("config.toml"))
        .map(|t| super::config::is_act_toml(&t))
        .unwrap_or(false)
}

pub fn latest_checkpoint(run: &Path) -> Result<PathBuf> {
    checkpoint::latest(run)?
        .with_context(|| format!("{}: no checkpoint yet (train first)", run.display()))
}
