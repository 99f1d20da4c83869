//! LeRobot checkpoint interop: `config.json` (ACTConfig, draccus format) and
//! strict `model.safetensors` loading (every key present, none unknown, shapes equal).

use super::config::{ActModelConfig, ActTrainConfig};
use super::model::Act;
use super::data_info::ActDataInfo;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::Path;
use tch::nn::VarStore;
use tch::Device;

/// A LeRobot `config.json` for this run's ACT (type "act", features in camera order).
pub fn config_json(cfg: &ActTrainConfig, info: &ActDataInfo) -> String {
    let m = &cfg.model;
    let mut input = serde_json::Map::new();
    input.insert(
        info.state_key.clone(),
        json!({"type": "STATE", "shape": [info.state_dim()]}),
    );
    for (k, h, w) in &info.cameras {
        input.insert(k.clone(), json!({"type": "VISUAL", "shape": [3, h, w]}));
    }
    let v = json!({
        "type": "act",
        "n_obs_steps": 1,
        "input_features": Value::Object(input),
        "output_features": {info.action_key.clone(): {"type": "ACTION", "shape": [info.action_dim()]}},
        "device": "cpu",
        "use_amp": false,
        "push_to_hub": false,
        "normalization_mapping": {"VISUAL": "MEAN_STD", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"},
        "chunk_size": m.chunk_size,
        "n_action_steps": m.n_action_steps,
        "vision_backbone": m.vision_backbone,
        "pretrained_backbone_weights": null,
        "replace_final_stride_with_dilation": false,
        "pre_norm": m.pre_norm,
        "dim_model": m.dim_model,
        "n_heads": m.n_heads,
        "dim_feedforward": m.dim_feedforward,
        "feedforward_activation": m.feedforward_activation,
        "n_encoder_layers": m.n_encoder_layers,
        "n_decoder_layers": m.n_decoder_layers,
        "use_vae": m.use_vae,
        "latent_dim": m.latent_dim,
        "n_vae_encoder_layers": m.n_vae_encoder_layers,
        "temporal_ensemble_coeff": m.temporal_ensemble_coeff,
        "dropout": m.dropout,
        "kl_weight": m.kl_weight,
        "optimizer_lr": cfg.train.lr,
        "optimizer_weight_decay": cfg.train.weight_decay,
        "optimizer_lr_backbone": cfg.train.lr_backbone,
    });
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// What a LeRobot `config.json` says about the model and its features.
#[derive(Debug, Clone)]
pub struct LeRobotActConfig {
    pub model: ActModelConfig,
    pub state_key: String,
    pub state_dim: usize,
    /// (key, H, W) in input_features order.
    pub cameras: Vec<(String, usize, usize)>,
    pub action_key: String,
    pub action_dim: usize,
}

pub fn read_config(path: &Path) -> Result<LeRobotActConfig> {
    let text = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let v: Value =
        serde_json::from_slice(&text).with_context(|| format!("parse {}", path.display()))?;
    let p = path.display();
    if v.get("type").and_then(Value::as_str) != Some("act") {
        bail!("{p}: `type` is {:?}, expected \"act\"", v.get("type"));
    }
    let d = ActModelConfig::default();
    let u = |k: &str, def: usize| -> Result<usize> {
        match v.get(k) {
            None => Ok(def),
            Some(x) => x
                .as_u64()
                .map(|n| n as usize)
                .with_context(|| format!("{p}: `{k}` is not a non-negative integer")),
        }
    };
    let f = |k: &str, def: f64| -> Result<f64> {
        match v.get(k) {
            None => Ok(def),
            Some(x) => x
                .as_f64()
                .with_context(|| format!("{p}: `{k}` is not a number")),
        }
    };
    let s = |k: &str, def: &str| -> Result<String> {
        match v.get(k) {
            None => Ok(def.to_string()),
            Some(x) => x
                .as_str()
                .map(str::to_string)
                .with_context(|| format!("{p}: `{k}` is not a string")),
        }
    };
    let b = |k: &str, def: bool| -> Result<bool> {
        match v.get(k) {
            None => Ok(def),
            Some(x) => x
                .as_bool()
                .with_context(|| format!("{p}: `{k}` is not a boolean")),
        }
    };
    if u("n_obs_steps", 1)? != 1 {
        bail!("{p}: n_obs_steps must be 1 for ACT");
    }
    if b("replace_final_stride_with_dilation", false)? {
        bail!("{p}: replace_final_stride_with_dilation = true is not supported");
    }
    let model = ActModelConfig {
        chunk_size: u("chunk_size", d.chunk_size)?,
        n_action_steps: u("n_action_steps", d.n_action_steps)?,
        vision_backbone: s("vision_backbone", &d.vision_backbone)?,
        pre_norm: b("pre_norm", d.pre_norm)?,
        dim_model: u("dim_model", d.dim_model)?,
        n_heads: u("n_heads", d.n_heads)?,
        dim_feedforward: u("dim_feedforward", d.dim_feedforward)?,
        feedforward_activation: s("feedforward_activation", &d.feedforward_activation)?,
        n_encoder_layers: u("n_encoder_layers", d.n_encoder_layers)?,
        n_decoder_layers: u("n_decoder_layers", d.n_decoder_layers)?,
        use_vae: b("use_vae", d.use_vae)?,
        latent_dim: u("latent_dim", d.latent_dim)?,
        n_vae_encoder_layers: u("n_vae_encoder_layers", d.n_vae_encoder_layers)?,
        temporal_ensemble_coeff: v.get("temporal_ensemble_coeff").and_then(Value::as_f64),
        dropout: f("dropout", d.dropout)?,
        kl_weight: f("kl_weight", d.kl_weight)?,
    };
    let feats = |k: &str| -> Result<Vec<(String, String, Vec<usize>)>> {
        let o = v
            .get(k)
            .and_then(Value::as_object)
            .with_context(|| format!("{p}: `{k}` is missing"))?;
        o.iter()
            .map(|(name, ft)| {
                let ty = ft
                    .get("type")
                    .and_then(Value::as_str)
                    .with_context(|| format!("{p}: `{k}.{name}.type` is missing"))?;
                let shape = ft
                    .get("shape")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_u64)
                            .map(|x| x as usize)
                            .collect::<Vec<_>>()
                    })
                    .with_context(|| format!("{p}: `{k}.{name}.shape` is missing"))?;
                Ok((name.clone(), ty.to_string(), shape))
            })
            .collect()
    };
    let (mut state, mut cams) = (None, Vec::new());
    for (name, ty, shape) in feats("input_features")? {
        match ty.as_str() {
            "STATE" => state = Some((name, shape.iter().product())),
            "VISUAL" => {
                if shape.len() != 3 || shape[0] != 3 {
                    bail!("{p}: camera `{name}` has shape {shape:?}, expected [3, H, W]");
                }
                cams.push((name, shape[1], shape[2]));
            }
            "ENV" => bail!("{p}: `{name}` (environment state) is not supported by this trainer"),
            o => bail!("{p}: input feature `{name}` has unsupported type {o}"),
        }
    }
    let (state_key, state_dim) =
        state.with_context(|| format!("{p}: no STATE input feature (robot state is required)"))?;
    let outs = feats("output_features")?;
    let (action_key, _, ashape) = outs
        .into_iter()
        .find(|(_, t, _)| t == "ACTION")
        .with_context(|| format!("{p}: no ACTION output feature"))?;
    Ok(LeRobotActConfig {
        model,
        state_key,
        state_dim,
        cameras: cams,
        action_key,
        action_dim: ashape.iter().product(),
    })
}

/// Strictly load a LeRobot ACT state dict into `vs` (built with `Act::new` under
/// `model`): every variable must be in the file, every file key must be a variable,
/// shapes must match. Returns the number of tensors set.
pub fn load_weights(vs: &mut VarStore, file: &Path) -> Result<usize> {
    let ts =
        tch::Tensor::read_safetensors(file).with_context(|| format!("read {}", file.display()))?;
    let vars = vs.variables();
    let mut unknown = Vec::new();
    let mut seen = std::collections::HashSet::new();
    tch::no_grad(|| -> Result<()> {
        for (name, t) in &ts {
            match vars.get(name) {
                Some(v) => {
                    if v.size() != t.size() {
                        bail!("{}: `{name}` has shape {:?}, the model's is {:?} (config / checkpoint mismatch)", file.display(), t.size(), v.size());
                    }
                    v.shallow_clone()
                        .copy_(&t.to_kind(tch::Kind::Float).to_device(v.device()));
                    seen.insert(name.clone());
                }
                None => unknown.push(name.clone()),
            }
        }
        Ok(())
    })?;
    let mut missing: Vec<&String> = vars.keys().filter(|k| !seen.contains(*k)).collect();
    missing.sort();
    unknown.sort();
    if !missing.is_empty() || !unknown.is_empty() {
        bail!(
            "{}: not an exact match for this ACT config: {} missing (e.g. {:?}), {} unexpected (e.g. {:?})",
            file.display(),
            missing.len(),
            &missing[..missing.len().min(5)],
            unknown.len(),
            &unknown[..unknown.len().min(5)]
        );
    }
    Ok(seen.len())
}

/// Build an ACT from a LeRobot pretrained directory (config.json + model.safetensors).
pub fn load_pretrained(dir: &Path, device: Device) -> Result<(VarStore, Act, LeRobotActConfig)> {
    let lc = read_config(&dir.join("config.json"))?;
    let mut vs = VarStore::new(device);
    let act = Act::new(
        &(vs.root() / "model"),
        &lc.model,
        lc.state_dim,
        lc.action_dim,
        lc.cameras.len(),
    );
    load_weights(&mut vs, &dir.join("model.safetensors"))?;
    Ok((vs, act, lc))
}
