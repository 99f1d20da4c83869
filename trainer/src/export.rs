//! `maniflow-train export`: a policy package from a run directory. The ONNX
//! graphs are written by our own ONNX writer (`crate::onnx`) from the model
//! definition and the checkpoint's weights; every export runs a parity check
//! (ONNX Runtime vs the tch forward on random inputs) and refuses to write
//! the package when max abs error > 1e-4.

use crate::config::{Config, TargetTMode};
use crate::model::{ManiFlowNet, ModalityRange, Obs, ObsDims};
use crate::onnx::maniflow::{build_encoder, build_velocity, Weights};
use crate::train::{copy_vars, sorted_vars};
use anyhow::{bail, Context, Result};
use maniflow_runtime::policy::manifest::{
    ActionOutput, ColorOrder, GraphFile, Graphs, ImageInput, Inputs, Manifest, Normalization, Outputs, PolicyKind,
    Producer, ResizeRule, Sampler, StateInput, TactileInput, TargetT,
};
use maniflow_runtime::policy::package::sha256_hex;
use ort::session::Session;
use ort::value::Tensor as OrtTensor;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

pub const PARITY_TOL: f64 = 1e-4;

/// What a run records about its data, for export (`RUN_DIR/data.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataInfo {
    pub dataset: String,
    pub dims: ObsDims,
    pub state_names: Vec<String>,
    pub action_names: Vec<String>,
    pub normalization: BTreeMap<String, Normalization>,
    pub modality_map: Vec<ModalityRange>,
}

impl DataInfo {
    pub fn load(run: &Path) -> Result<DataInfo> {
        let p = run.join("data.json");
        let text = std::fs::read(&p).with_context(|| format!("read {} (is {} a training run directory?)", p.display(), run.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("parse {}", p.display()))
    }
    pub fn save(&self, run: &Path) -> Result<()> {
        let p = run.join("data.json");
        std::fs::write(&p, serde_json::to_vec_pretty(self)?).with_context(|| format!("write {}", p.display()))
    }
}

pub(crate) fn units(names: &[String]) -> Vec<String> {
    names.iter().map(|n| if n.starts_with("gripper") { "percent".into() } else { "deg".into() }).collect()
}

pub struct ExportReport {
    pub out: PathBuf,
    pub encoder_err: f64,
    pub velocity_err: f64,
    pub pipeline_err: f64,
    pub checkpoint: PathBuf,
}

pub(crate) fn ort_run(sess: &mut Session, inputs: Vec<(String, Tensor)>, output: &str) -> Result<Tensor> {
    let mut vals: Vec<(String, ort::session::SessionInputValue<'static>)> = Vec::new();
    for (name, t) in inputs {
        let shape: Vec<i64> = t.size();
        let data: Vec<f32> = Vec::try_from(t.to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1))?;
        let v = OrtTensor::from_array((shape, data)).map_err(|e| anyhow::anyhow!("ort input `{name}`: {e}"))?;
        vals.push((name, v.into()));
    }
    let out = sess.run(vals).map_err(|e| anyhow::anyhow!("onnxruntime run: {e}"))?;
    let (shape, data) = out[output].try_extract_tensor::<f32>().map_err(|e| anyhow::anyhow!("output `{output}`: {e}"))?;
    let dims: Vec<i64> = shape.iter().copied().collect();
    Ok(Tensor::from_slice(data).view(dims.as_slice()))
}

pub(crate) fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

pub(crate) fn session(env: &ort::environment::Environment, bytes: &[u8]) -> Result<Session> {
    let e = |e: ort::Error| anyhow::anyhow!("onnxruntime cannot open the exported graph: {e}");
    let b = Session::builder(env).map_err(e)?;
    let mut b = b.with_intra_threads(2).map_err(|x| anyhow::anyhow!("onnxruntime session options: {x}"))?;
    b.commit_from_memory(bytes).map_err(e)
}

pub fn random_obs(dims: &ObsDims, to: i64, b: i64) -> Obs {
    Obs {
        images: dims.cameras.iter().map(|(_, h, w)| Tensor::rand([b, to, 3, *h as i64, *w as i64], (Kind::Float, Device::Cpu))).collect(),
        state: Tensor::randn([b, to, dims.state_dim as i64], (Kind::Float, Device::Cpu)),
        tactile: dims.tactile.as_ref().map(|(_, n)| Tensor::rand([b, to, *n as i64], (Kind::Float, Device::Cpu)) * 2.0 - 1.0),
    }
}

pub fn obs_inputs(dims: &ObsDims, obs: &Obs) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = dims.cameras.iter().zip(&obs.images).map(|((k, _, _), t)| (k.clone(), t.shallow_clone())).collect();
    v.push((dims.state_key.clone(), obs.state.shallow_clone()));
    if let (Some((k, _)), Some(t)) = (&dims.tactile, &obs.tactile) {
        v.push((k.clone(), t.shallow_clone()));
    }
    v
}

pub fn export(run: &Path, out: &Path, use_ema: bool, checkpoint: Option<&Path>, name: Option<&str>) -> Result<ExportReport> {
    let cfg = Config::load(&run.join("config.toml"))?;
    let info = DataInfo::load(run)?;
    let ckpt = match checkpoint {
        Some(p) => p.to_path_buf(),
        None => crate::checkpoint::latest(run)?.with_context(|| format!("{}: no checkpoint yet (train first)", run.display()))?,
    };
    let wfile = ckpt.join(if use_ema { "ema.safetensors" } else { "model.safetensors" });
    // tch model on the CPU with the checkpoint's weights.
    let mut vs = VarStore::new(Device::Cpu);
    let net = ManiFlowNet::new(&vs.root(), &cfg, &info.dims)?;
    let tensors = crate::checkpoint::read_tensors(&wfile)?;
    copy_vars(&mut vs, &tensors, &wfile.display().to_string())?;
    if net.encoder.modality_map != info.modality_map {
        bail!("{}: the modality map in data.json does not match the model built from config.toml", run.display());
    }
    // ONNX graphs from the same weights.
    let mut weights = Weights::new();
    for (n, t) in sorted_vars(&vs) {
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        let data: Vec<f32> = Vec::try_from(t.flatten(0, -1))?;
        weights.insert(&n, shape, data)?;
    }
    // The router's temperature is the one of the checkpoint's stage (baked into velocity.onnx).
    let vel_cfg = router_at_checkpoint(&cfg, &ckpt, &net)?;
    let enc_bytes = build_encoder(&cfg, &info.dims, &weights)?;
    let vel_bytes = build_velocity(&vel_cfg, &info.dims, &weights)?;
    // Parity on random inputs (B = 2).
    let env = maniflow_runtime::policy::ortlib::environment().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut enc_s = session(&env, &enc_bytes)?;
    let mut vel_s = session(&env, &vel_bytes)?;
    let to = cfg.model.n_obs_steps as i64;
    let (t, da) = (cfg.model.horizon as i64, info.dims.action_dim as i64);
    tch::manual_seed(1234);
    let _g = tch::no_grad_guard();
    let obs = random_obs(&info.dims, to, 2);
    let ctx_tch = net.encode(&obs);
    let ctx_ort = ort_run(&mut enc_s, obs_inputs(&info.dims, &obs), "context")?;
    let encoder_err = max_abs(&ctx_tch, &ctx_ort);
    let x = Tensor::randn([2, t, da], (Kind::Float, Device::Cpu));
    let tt = Tensor::rand([2], (Kind::Float, Device::Cpu));
    let tg = Tensor::rand([2], (Kind::Float, Device::Cpu));
    let mut vel_in: Vec<(String, Tensor)> =
        vec![("x_t".into(), x.shallow_clone()), ("t".into(), tt.shallow_clone()), ("target_t".into(), tg.shallow_clone()), ("context".into(), ctx_tch.shallow_clone())];
    // With prefix inputs: example 0 continues d_max given rows, example 1 none (d = 0).
    let prefix = (cfg.model.prefix_d_max() > 0).then(|| parity_prefix(t, da, cfg.model.n_obs_steps - 1, cfg.model.prefix_d_max()));
    if let Some(p) = &prefix {
        vel_in.push(("prefix".into(), p.actions.shallow_clone()));
        vel_in.push(("prefix_mask".into(), p.mask.shallow_clone()));
    }
    let v_tch = net.velocity_with_prefix(&x, &tt, &tg, &ctx_tch, prefix.as_ref(), false, None);
    let v_ort = ort_run(&mut vel_s, vel_in, "velocity")?;
    let velocity_err = max_abs(&v_tch, &v_ort);
    if !(encoder_err <= PARITY_TOL && velocity_err <= PARITY_TOL) {
        bail!(
            "parity check failed: encoder max abs error {encoder_err:.3e}, velocity {velocity_err:.3e} (limit {PARITY_TOL:.0e}); no package written"
        );
    }
    // Write the package.
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let write = |f: &str, b: &[u8]| std::fs::write(out.join(f), b).with_context(|| format!("write {}", out.join(f).display()));
    write("encoder.onnx", &enc_bytes)?;
    write("velocity.onnx", &vel_bytes)?;
    let d = &info.dims;
    let manifest = Manifest {
        format_version: 1,
        kind: PolicyKind::Maniflow,
        name: name.map(str::to_string).unwrap_or_else(|| out.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()),
        description: format!("ManiFlow ({}) trained by maniflow-train on {}{}{}", cfg.name, info.dataset, tactile_note(&cfg, d), experts_note(&vel_cfg)),
        n_obs_steps: cfg.model.n_obs_steps,
        inputs: Inputs {
            cameras: d
                .cameras
                .iter()
                .map(|(k, h, w)| ImageInput { key: k.clone(), height: *h, width: *w, channels: 3, color_order: ColorOrder::Rgb, resize: ResizeRule::Bilinear })
                .collect(),
            state: Some(StateInput { key: d.state_key.clone(), names: info.state_names.clone(), units: units(&info.state_names) }),
            tactile: d.tactile.as_ref().map(|(k, n)| TactileInput::Taxels { key: k.clone(), size: *n }),
        },
        outputs: Outputs {
            action: ActionOutput {
                key: cfg.data.action_key.clone(),
                names: info.action_names.clone(),
                units: units(&info.action_names),
                horizon: cfg.model.horizon,
                n_action_steps: cfg.model.n_action_steps,
                start_index: cfg.model.n_obs_steps - 1,
                prefix_d_max: cfg.model.prefix_d_max(),
            },
        },
        normalization: info.normalization.clone(),
        sampler: Some(Sampler {
            steps: cfg.train.sample_steps.clamp(1, 2),
            target_t: if cfg.train.target_t == TargetTMode::Absolute { TargetT::Absolute } else { TargetT::Relative },
            seed: 0,
        }),
        modality_map: if cfg.model.fusion.has_tokens() {
            info.modality_map
                .iter()
                .map(|m| maniflow_runtime::policy::manifest::ModalityRange { modality: m.modality.clone(), start: m.start, end: m.end })
                .collect()
        } else {
            Vec::new()
        },
        graphs: Graphs {
            encoder: Some(GraphFile { file: "encoder.onnx".into(), sha256: sha256_hex(&enc_bytes) }),
            velocity: Some(GraphFile { file: "velocity.onnx".into(), sha256: sha256_hex(&vel_bytes) }),
            act: None,
        },
        producer: Producer {
            name: "maniflow-train".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            notes: format!(
                "{} weights of {}; ONNX written by maniflow-train (opset 17); parity vs tch: encoder {encoder_err:.3e}, velocity {velocity_err:.3e}",
                if use_ema { "EMA" } else { "online" },
                ckpt.display()
            ),
            parity_max_abs_err: Some(encoder_err.max(velocity_err)),
        },
    };
    let text = manifest.to_toml().context("serialise policy.toml")?;
    write("policy.toml", format!("# Written by maniflow-train export.\n{text}").as_bytes())?;
    // The runtime must load it, and its whole pipeline must agree with tch.
    let pipeline_err = match pipeline_parity(out, &net, &info, &cfg) {
        Ok(e) if e <= PARITY_TOL => e,
        other => {
            for f in ["encoder.onnx", "velocity.onnx", "policy.toml"] {
                let _ = std::fs::remove_file(out.join(f));
            }
            match other {
                Ok(e) => bail!("runtime pipeline parity failed: max error {e:.3e} (normalised action units, limit {PARITY_TOL:.0e}); package removed"),
                Err(e) => return Err(e.context("runtime pipeline check; package removed")),
            }
        }
    };
    Ok(ExportReport { out: out.to_path_buf(), encoder_err, velocity_err, pipeline_err, checkpoint: ckpt })
}

/// `cfg` with `model.router.temperature` set to the temperature of the checkpoint's stage,
/// which the tch network `net` then uses too (unchanged without experts).
fn router_at_checkpoint(cfg: &Config, ckpt: &Path, net: &ManiFlowNet) -> Result<Config> {
    let Some(heads) = net.ditx.experts() else { return Ok(cfg.clone()) };
    let step = crate::checkpoint::read_state(ckpt)?.step;
    let tau = cfg.router_temperature_at(step);
    heads.set_temperature(tau);
    let mut out = cfg.clone();
    out.model.router = Some(crate::config::RouterConfig { temperature: tau, ..cfg.model.router() });
    Ok(out)
}

/// The expert heads, for the manifest's description.
fn experts_note(cfg: &Config) -> String {
    match cfg.model.experts {
        0 => String::new(),
        e => format!("; {e} expert heads mixed by a router (temperature {})", cfg.model.router().temperature),
    }
}

/// How the tactile input is encoded, for the manifest's description.
fn tactile_note(cfg: &Config, d: &ObsDims) -> String {
    match (&d.tactile, &d.tactile_mae, &cfg.encoder.tactile_mae) {
        (Some((k, _)), Some(m), src) => format!(
            "; tactile `{k}` through a tactile MAE encoder (ViT {}x{} on {}x{} patches of {:?}, {}, pretrained in {})",
            m.depth,
            m.width,
            m.patch,
            m.patch,
            m.image,
            if src.as_ref().is_some_and(|s| s.freeze) { "frozen" } else { "fine-tuned" },
            src.as_ref().map_or("?".into(), |s| s.run.display().to_string())
        ),
        _ => String::new(),
    }
}

/// Parity inputs of a prefix-conditioned velocity graph (B = 2): example 0 is given
/// rows `first..first + d_max`, example 1 no prefix.
pub fn parity_prefix(t: i64, da: i64, first: usize, d_max: usize) -> crate::model::ditx::PrefixCond {
    let mut mask = vec![0f32; 2 * t as usize];
    for r in first..first + d_max {
        mask[r] = 1.0;
    }
    crate::model::ditx::PrefixCond {
        actions: Tensor::rand([2, t, da], (Kind::Float, Device::Cpu)) * 2.0 - 1.0,
        mask: Tensor::from_slice(&mask).view([2, t]),
    }
}

/// Load the package with the runtime's `Engine` and compare one full chunk
/// (normalise, encoder, N Euler steps, unnormalise, slice) with tch on the
/// same raw observation and the same initial noise.
fn pipeline_parity(dir: &Path, net: &ManiFlowNet, info: &DataInfo, cfg: &Config) -> Result<f64> {
    use maniflow_runtime::policy::engine::{Engine, ObservationStep, TactileReading};
use maniflow_runtime::policy::options::EngineOptions;
    use maniflow_runtime::policy::normalize::Normalizer;
    use maniflow_runtime::policy::preprocess::Frame;
    use rand::{Rng, SeedableRng};
    let mut eng = Engine::load(dir, &EngineOptions::default()).map_err(|e| anyhow::anyhow!("the runtime refuses the exported package {}: {e}", dir.display()))?;
    let d = &info.dims;
    let to = cfg.model.n_obs_steps;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
    let norm = |key: &str, len: usize| -> Result<Normalizer> {
        let n = info.normalization.get(key).with_context(|| format!("no normalisation for `{key}`"))?;
        Ok(Normalizer::new(n, len))
    };
    let sn = norm(&d.state_key, d.state_dim)?;
    let mut imgs: Vec<Vec<u8>> = d.cameras.iter().map(|(_, h, w)| (0..to * h * w * 3).map(|_| rng.random::<u8>()).collect()).collect();
    let raw_state: Vec<f32> = (0..to * d.state_dim).map(|_| rng.random_range(-60.0..60.0)).collect();
    let raw_tac: Vec<f32> = d.tactile.as_ref().map(|(_, n)| (0..to * n).map(|_| rng.random_range(0.0..3.0)).collect()).unwrap_or_default();
    for s in 0..to {
        let frames: Vec<Frame> = d
            .cameras
            .iter()
            .zip(&imgs)
            .map(|((_, h, w), buf)| Frame { data: &buf[s * h * w * 3..(s + 1) * h * w * 3], width: *w, height: *h, order: maniflow_runtime::policy::manifest::ColorOrder::Rgb })
            .collect();
        let st = &raw_state[s * d.state_dim..(s + 1) * d.state_dim];
        let tac = d.tactile.as_ref().map(|(_, n)| TactileReading::Taxels(&raw_tac[s * n..(s + 1) * n]));
        eng.set_observation(s, &ObservationStep { cameras: &frames, state: Some(st), tactile: tac })
            .map_err(|e| anyhow::anyhow!("runtime set_observation: {e}"))?;
    }
    let (t, da) = (cfg.model.horizon, d.action_dim);
    let noise: Vec<f32> = (0..t * da).map(|_| rng.random_range(-2.0..2.0)).collect();
    let chunk = eng.infer_with_noise(&noise).map_err(|e| anyhow::anyhow!("runtime infer: {e}"))?.to_vec();
    // The same in tch.
    let images: Vec<Tensor> = d
        .cameras
        .iter()
        .zip(imgs.iter_mut())
        .map(|((_, h, w), buf)| {
            Tensor::from_slice(buf.as_slice()).view([1, to as i64, *h as i64, *w as i64, 3]).permute([0, 1, 4, 2, 3]).to_kind(Kind::Float) / 255.0
        })
        .collect();
    let mut st_n = vec![0f32; raw_state.len()];
    for (a, b) in raw_state.chunks(d.state_dim).zip(st_n.chunks_mut(d.state_dim)) {
        sn.normalize(a, b);
    }
    let tactile = match &d.tactile {
        Some((k, n)) => {
            let tn = norm(k, *n)?;
            let mut v = vec![0f32; raw_tac.len()];
            for (a, b) in raw_tac.chunks(*n).zip(v.chunks_mut(*n)) {
                tn.normalize(a, b);
            }
            Some(Tensor::from_slice(&v).view([1, to as i64, *n as i64]))
        }
        None => None,
    };
    let obs = Obs { images, state: Tensor::from_slice(&st_n).view([1, to as i64, d.state_dim as i64]), tactile };
    let ctx = net.encode(&obs);
    let steps = eng.steps();
    let x = net.sample(&ctx, &Tensor::from_slice(&noise).view([1, t as i64, da as i64]), steps, cfg.train.target_t == TargetTMode::Absolute);
    let xs: Vec<f32> = Vec::try_from(x.flatten(0, -1))?;
    let an = norm(&cfg.data.action_key, da)?;
    let mut un = vec![0f32; xs.len()];
    for (a, b) in xs.chunks(da).zip(un.chunks_mut(da)) {
        an.unnormalize(a, b);
    }
    let start = cfg.model.n_obs_steps - 1;
    let mut err = chunk_err(&chunk, &un[start * da..], info, cfg)?;
    let d_max = cfg.model.prefix_d_max();
    if d_max > 0 {
        // The same with a prefix of d_max rows given (unnormalised, as the executor passes it).
        let normed: Vec<f32> = (0..d_max * da).map(|_| rng.random_range(-0.9..0.9)).collect();
        let mut raw = vec![0f32; normed.len()];
        for (a, b) in normed.chunks(da).zip(raw.chunks_mut(da)) {
            an.unnormalize(a, b);
        }
        eng.set_prefix(&raw, d_max).map_err(|e| anyhow::anyhow!("runtime set_prefix: {e}"))?;
        let chunk = eng.infer_with_noise(&noise).map_err(|e| anyhow::anyhow!("runtime infer with prefix: {e}"))?.to_vec();
        eng.set_prefix(&[], 0).map_err(|e| anyhow::anyhow!("runtime set_prefix: {e}"))?;
        if chunk[..d_max * da] != raw[..] {
            bail!("runtime chunk rows 0..{d_max} are not the given prefix");
        }
        let mut pn = vec![0f32; t * da];
        let mut mask = vec![0f32; t];
        for (r, row) in raw.chunks(da).enumerate() {
            an.normalize(row, &mut pn[(start + r) * da..(start + r + 1) * da]);
            mask[start + r] = 1.0;
        }
        let cond = crate::model::ditx::PrefixCond {
            actions: Tensor::from_slice(&pn).view([1, t as i64, da as i64]),
            mask: Tensor::from_slice(&mask).view([1, t as i64]),
        };
        let noise_t = Tensor::from_slice(&noise).view([1, t as i64, da as i64]);
        let x = net.sample_with_prefix(&ctx, &noise_t, Some(&cond), steps, cfg.train.target_t == TargetTMode::Absolute);
        let xs: Vec<f32> = Vec::try_from(x.flatten(0, -1))?;
        let mut un = vec![0f32; xs.len()];
        for (a, b) in xs.chunks(da).zip(un.chunks_mut(da)) {
            an.unnormalize(a, b);
        }
        // Rows after the prefix (the prefix rows are exact by construction).
        let gen = d_max * da;
        err = err.max(chunk_err(&chunk[gen..], &un[start * da + gen..], info, cfg)?);
    }
    Ok(err)
}

/// Max error between a runtime chunk and tch's, in normalised units (actions are in
/// degrees): error / half-range.
fn chunk_err(chunk: &[f32], expect: &[f32], info: &DataInfo, cfg: &Config) -> Result<f64> {
    let da = info.dims.action_dim;
    if expect.len() != chunk.len() {
        bail!("runtime chunk has {} values, tch {}", chunk.len(), expect.len());
    }
    let mut err = 0f64;
    for (i, (a, b)) in chunk.iter().zip(expect).enumerate() {
        let r = match info.normalization.get(&cfg.data.action_key) {
            // the normaliser's own scale: a constant dimension (range below LIMITS_RANGE_EPS) is shifted, not scaled
            Some(Normalization::Limits { min, max }) => match max[i % da] - min[i % da] {
                r if r < maniflow_runtime::policy::normalize::LIMITS_RANGE_EPS => 1.0,
                r => (r / 2.0) as f64,
            },
            _ => 1.0,
        };
        err = err.max(((a - b).abs() as f64) / r);
    }
    Ok(err)
}
