//! `maniflow-train export` for ACT runs: `act.onnx` written by our ONNX writer
//! from the checkpoint (frozen BatchNorm folded into the convolutions, latent =
//! zeros, constant positional embeddings), a parity check against the tch
//! forward (max abs <= 1e-4, else no package), `policy.toml` (kind "act",
//! LeRobot normalisation), and a runtime pipeline check through `Engine`.

use super::config::ActTrainConfig;
use super::model::{backbone_blocks, sinusoid_2d, Act, ActInput};
use super::data_info::ActDataInfo;
use super::train::latest_checkpoint;
use crate::export::{max_abs, ort_run, session, units, PARITY_TOL};
use crate::onnx::builder::{batch, fixed, GraphBuilder};
use crate::onnx::maniflow::Weights;
use crate::train::{copy_vars, sorted_vars};
use anyhow::{bail, Context, Result};
use maniflow_runtime::policy::manifest::{
    ActionOutput, ColorOrder, GraphFile, Graphs, ImageInput, Inputs, Manifest, Normalization,
    Outputs, PolicyKind, Producer, ResizeRule, StateInput,
};
use maniflow_runtime::policy::package::sha256_hex;
use std::path::{Path, PathBuf};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

pub struct ActExportReport {
    pub out: PathBuf,
    pub checkpoint: PathBuf,
    pub graph_err: f64,
    pub pipeline_err: f64,
}

fn get<'a>(w: &'a Weights, n: &str) -> Result<&'a [f32]> {
    Ok(w.get(n)?.1)
}

/// Fold `<bn>` (frozen BatchNorm) into the preceding bias-free conv `<conv>.weight`;
/// inserts `<conv>.fused_weight` / `<conv>.fused_bias`.
fn fold(w: &mut Weights, conv: &str, bn: &str) -> Result<()> {
    let (shape, cw) = {
        let (s, d) = w.get(&format!("{conv}.weight"))?;
        (s.to_vec(), d.to_vec())
    };
    let c = shape[0];
    let per = cw.len() / c;
    let (g, b, rm, rv) = (
        get(w, &format!("{bn}.weight"))?.to_vec(),
        get(w, &format!("{bn}.bias"))?.to_vec(),
        get(w, &format!("{bn}.running_mean"))?.to_vec(),
        get(w, &format!("{bn}.running_var"))?.to_vec(),
    );
    let mut fw = cw;
    let mut fb = vec![0f32; c];
    for o in 0..c {
        let scale = g[o] * (1.0 / (rv[o] + 1e-5).sqrt());
        for v in &mut fw[o * per..(o + 1) * per] {
            *v *= scale;
        }
        fb[o] = b[o] - rm[o] * scale;
    }
    w.insert(&format!("{conv}.fused_weight"), shape, fw)?;
    w.insert(&format!("{conv}.fused_bias"), vec![c], fb)
}

fn conv(g: &mut GraphBuilder, x: &str, name: &str, stride: usize, pad: usize) -> Result<String> {
    let wn = g.param(&format!("{name}.fused_weight"), None)?;
    let bn = g.param(&format!("{name}.fused_bias"), None)?;
    Ok(g.conv(x, &wn, Some(&bn), stride, pad))
}

fn backbone(g: &mut GraphBuilder, x: &str, p: &str, name: &str) -> Result<String> {
    let y = conv(g, x, &format!("{p}.conv1"), 2, 3)?;
    let y = g.relu(&y);
    let mut x = g.maxpool(&y, 3, 2, 1);
    let (mut cin, mut cout) = (64usize, 64usize);
    for (s, &nb) in backbone_blocks(name).iter().enumerate() {
        if s > 0 {
            cout *= 2;
        }
        for b in 0..nb {
            let q = format!("{p}.layer{}.{b}", s + 1);
            let stride = if s > 0 && b == 0 { 2 } else { 1 };
            let y = conv(g, &x, &format!("{q}.conv1"), stride, 1)?;
            let y = g.relu(&y);
            let y = conv(g, &y, &format!("{q}.conv2"), 1, 1)?;
            let idn = if stride != 1 || cin != cout {
                conv(g, &x, &format!("{q}.downsample.0"), stride, 0)?
            } else {
                x.clone()
            };
            let s2 = g.add(&y, &idn);
            x = g.relu(&s2);
            cin = cout;
        }
    }
    Ok(x)
}

struct Dims {
    d: i64,
    h: i64,
}

/// nn.MultiheadAttention forward with the split in_proj (`<p>.q/k/v.weight` inserted).
fn mha(g: &mut GraphBuilder, p: &str, q: &str, k: &str, v: &str, dm: &Dims) -> Result<String> {
    let hd = dm.d / dm.h;
    let qp = g.linear(q, &format!("{p}.q.weight"), Some(&format!("{p}.q.bias")))?;
    let kp = g.linear(k, &format!("{p}.k.weight"), Some(&format!("{p}.k.bias")))?;
    let vp = g.linear(v, &format!("{p}.v.weight"), Some(&format!("{p}.v.bias")))?;
    let qh = g.reshape(&qp, &[0, 0, dm.h, hd]);
    let qh = g.transpose(&qh, &[0, 2, 1, 3]);
    let sc = g.scalar((hd as f64).sqrt() as f32);
    let qh = g.div(&qh, &sc);
    let kh = g.reshape(&kp, &[0, 0, dm.h, hd]);
    let kt = g.transpose(&kh, &[0, 2, 3, 1]);
    let vh = g.reshape(&vp, &[0, 0, dm.h, hd]);
    let vh = g.transpose(&vh, &[0, 2, 1, 3]);
    let s = g.matmul(&qh, &kt);
    let pr = g.softmax(&s, -1);
    let o = g.matmul(&pr, &vh);
    let o = g.transpose(&o, &[0, 2, 1, 3]);
    let o = g.reshape(&o, &[0, 0, dm.d]);
    g.linear(
        &o,
        &format!("{p}.out_proj.weight"),
        Some(&format!("{p}.out_proj.bias")),
    )
}

fn split_in_proj(w: &mut Weights, p: &str, d: usize) -> Result<()> {
    let iw = get(w, &format!("{p}.in_proj_weight"))?.to_vec();
    let ib = get(w, &format!("{p}.in_proj_bias"))?.to_vec();
    for (i, n) in ["q", "k", "v"].iter().enumerate() {
        w.insert(
            &format!("{p}.{n}.weight"),
            vec![d, d],
            iw[i * d * d..(i + 1) * d * d].to_vec(),
        )?;
        w.insert(
            &format!("{p}.{n}.bias"),
            vec![d],
            ib[i * d..(i + 1) * d].to_vec(),
        )?;
    }
    Ok(())
}

fn norm(g: &mut GraphBuilder, x: &str, p: &str) -> Result<String> {
    let w = g.param(&format!("{p}.weight"), None)?;
    let b = g.param(&format!("{p}.bias"), None)?;
    Ok(g.layer_norm(x, &w, Some(&b), 1e-5))
}

fn ffn(g: &mut GraphBuilder, x: &str, p: &str, gelu: bool) -> Result<String> {
    let y = g.linear(
        x,
        &format!("{p}.linear1.weight"),
        Some(&format!("{p}.linear1.bias")),
    )?;
    let y = if gelu {
        // exact GELU: 0.5 x (1 + erf(x / sqrt 2))
        let r2 = g.scalar(std::f32::consts::SQRT_2);
        let e = g.div(&y, &r2);
        let e = g.op("Erf", &[&e], vec![]);
        let one = g.scalar(1.0);
        let e = g.add(&e, &one);
        let h = g.scalar(0.5);
        let t = g.mul(&y, &e);
        g.mul(&t, &h)
    } else {
        g.relu(&y)
    };
    g.linear(
        &y,
        &format!("{p}.linear2.weight"),
        Some(&format!("{p}.linear2.bias")),
    )
}

/// One residual sub-layer as LeRobot arranges it (the graph twin of
/// `Act::sublayer`): pre-norm `x + f(norm(x))`, post-norm `norm(x + f(x))`.
fn sublayer(
    g: &mut GraphBuilder,
    x: &str,
    norm_prefix: &str,
    pre_norm: bool,
    f: impl FnOnce(&mut GraphBuilder, &str) -> Result<String>,
) -> Result<String> {
    if pre_norm {
        let h = norm(g, x, norm_prefix)?;
        let y = f(g, &h)?;
        Ok(g.add(x, &y))
    } else {
        let y = f(g, x)?;
        let s = g.add(x, &y);
        norm(g, &s, norm_prefix)
    }
}

/// `act.onnx` bytes for the model described by `cfg` with `w` (LeRobot names).
pub fn build_act(
    cfg: &ActTrainConfig,
    info: &ActDataInfo,
    mut w: Weights,
    feat_hw: &[(i64, i64)],
) -> Result<Vec<u8>> {
    let m = &cfg.model;
    let d = m.dim_model;
    let dm = Dims {
        d: d as i64,
        h: m.n_heads as i64,
    };
    let gelu = m.feedforward_activation == "gelu";
    // Derived tensors: folded BN, split in_proj, constants.
    let bb = "model.backbone";
    fold(&mut w, &format!("{bb}.conv1"), &format!("{bb}.bn1"))?;
    for (s, &nb) in backbone_blocks(&m.vision_backbone).iter().enumerate() {
        for b in 0..nb {
            let q = format!("{bb}.layer{}.{b}", s + 1);
            fold(&mut w, &format!("{q}.conv1"), &format!("{q}.bn1"))?;
            fold(&mut w, &format!("{q}.conv2"), &format!("{q}.bn2"))?;
            if s > 0 && b == 0 {
                fold(
                    &mut w,
                    &format!("{q}.downsample.0"),
                    &format!("{q}.downsample.1"),
                )?;
            }
        }
    }
    for i in 0..m.n_encoder_layers {
        split_in_proj(&mut w, &format!("model.encoder.layers.{i}.self_attn"), d)?;
    }
    for i in 0..m.n_decoder_layers {
        split_in_proj(&mut w, &format!("model.decoder.layers.{i}.self_attn"), d)?;
        split_in_proj(
            &mut w,
            &format!("model.decoder.layers.{i}.multihead_attn"),
            d,
        )?;
    }
    // Latent token = the latent projection of zeros = its bias.
    let latent_tok = get(&w, "model.encoder_latent_input_proj.bias")?.to_vec();
    // Positional embedding of every encoder token: 1-D rows, then each camera's 2-D table.
    let mut pos = get(&w, "model.encoder_1d_feature_pos_embed.weight")?.to_vec();
    for &(fh, fw) in feat_hw {
        let pe: Vec<f32> = Vec::try_from(sinusoid_2d(fh, fw, d as i64).flatten(0, -1))?;
        pos.extend(pe);
    }
    let s_tokens = pos.len() / d;
    let mut g = GraphBuilder::new("act", &w);
    let state = g.input(&info.state_key, &[batch(), fixed(info.state_dim())])?;
    let mut cams = Vec::new();
    for (k, h, wd) in &info.cameras {
        cams.push(g.input(k, &[batch(), fixed(3), fixed(*h), fixed(*wd)])?);
    }
    g.set_scope("tokens");
    let st = g.linear(
        &state,
        "model.encoder_robot_state_input_proj.weight",
        Some("model.encoder_robot_state_input_proj.bias"),
    )?;
    let st = g.unsqueeze(&st, &[1]); // (B, 1, D)
    let lt = g.constant_f32(&[1, 1, d], &latent_tok);
    let shp = g.shape(&st);
    let lt = g.op("Expand", &[&lt, &shp], vec![]);
    let mut toks = vec![lt, st.clone()];
    for (i, cam) in cams.iter().enumerate() {
        g.set_scope(&format!("camera{i}"));
        let f = backbone(&mut g, cam, bb, &m.vision_backbone)?;
        let pw = g.param("model.encoder_img_feat_input_proj.weight", None)?;
        let pb = g.param("model.encoder_img_feat_input_proj.bias", None)?;
        let f = g.conv(&f, &pw, Some(&pb), 1, 0);
        let f = g.reshape(&f, &[0, d as i64, -1]);
        toks.push(g.transpose(&f, &[0, 2, 1]));
    }
    g.set_scope("encoder");
    let refs: Vec<&str> = toks.iter().map(String::as_str).collect();
    let mut x = g.concat(&refs, 1);
    let pos = g.constant_f32(&[1, s_tokens, d], &pos);
    for i in 0..m.n_encoder_layers {
        let p = format!("model.encoder.layers.{i}");
        g.set_scope(&p);
        x = sublayer(&mut g, &x, &format!("{p}.norm1"), m.pre_norm, |g, h| {
            let qk = g.add(h, &pos);
            mha(g, &format!("{p}.self_attn"), &qk, &qk, h, &dm)
        })?;
        x = sublayer(&mut g, &x, &format!("{p}.norm2"), m.pre_norm, |g, h| {
            ffn(g, h, &p, gelu)
        })?;
    }
    if m.pre_norm {
        x = norm(&mut g, &x, "model.encoder.norm")?;
    }
    g.set_scope("decoder");
    let c = m.chunk_size;
    let dpos = g.param("model.decoder_pos_embed.weight", Some(&[1, c, d]))?;
    let zeros = g.constant_f32(&[1, c, d], &vec![0.0; c * d]);
    let bshape = g.shape(&st); // (B, 1, D)
    let b1 = g.slice(&bshape, &[0], &[1], &[0]);
    let cd = g.constant_i64(&[c as i64, d as i64]);
    let yshape = g.concat(&[&b1, &cd], 0);
    let mut y = g.op("Expand", &[&zeros, &yshape], vec![]);
    let mem_k = g.add(&x, &pos);
    for i in 0..m.n_decoder_layers {
        let p = format!("model.decoder.layers.{i}");
        g.set_scope(&p);
        y = sublayer(&mut g, &y, &format!("{p}.norm1"), m.pre_norm, |g, h| {
            let qk = g.add(h, &dpos);
            mha(g, &format!("{p}.self_attn"), &qk, &qk, h, &dm)
        })?;
        y = sublayer(&mut g, &y, &format!("{p}.norm2"), m.pre_norm, |g, h| {
            let q = g.add(h, &dpos);
            mha(g, &format!("{p}.multihead_attn"), &q, &mem_k, &x, &dm)
        })?;
        y = sublayer(&mut g, &y, &format!("{p}.norm3"), m.pre_norm, |g, h| {
            ffn(g, h, &p, gelu)
        })?;
    }
    let y = norm(&mut g, &y, "model.decoder.norm")?;
    g.set_scope("head");
    let a = g.linear(
        &y,
        "model.action_head.weight",
        Some("model.action_head.bias"),
    )?;
    g.output(&a, "action", &[batch(), fixed(c), fixed(info.action_dim())]);
    g.to_bytes()
}

/// Stride-32 feature map size of a ResNet for an (h, w) input.
pub fn feature_hw(h: usize, w: usize) -> (i64, i64) {
    let f = |n: usize| {
        let mut n = (n as i64 + 2 * 3 - 7) / 2 + 1; // conv1
        n = (n + 2 - 3) / 2 + 1; // maxpool
        for _ in 0..3 {
            n = (n + 2 - 3) / 2 + 1; // stride-2 3x3 convs of layers 2-4
        }
        n
    };
    (f(h), f(w))
}

/// Export an ACT run's checkpoint to a policy package.
pub fn export(
    run: &Path,
    out: &Path,
    checkpoint: Option<&Path>,
    name: Option<&str>,
) -> Result<ActExportReport> {
    let cfg = ActTrainConfig::load(&run.join("config.toml"))?;
    let info = ActDataInfo::load(run)?;
    let ckpt = match checkpoint {
        Some(p) => p.to_path_buf(),
        None => latest_checkpoint(run)?,
    };
    let wfile = ckpt.join("model.safetensors");
    let mut vs = VarStore::new(Device::Cpu);
    let net = Act::new(
        &(vs.root() / "model"),
        &cfg.model,
        info.state_dim(),
        info.action_dim(),
        info.cameras.len(),
    );
    let tensors = crate::checkpoint::read_tensors(&wfile)?;
    copy_vars(&mut vs, &tensors, &wfile.display().to_string())?;
    export_model(&cfg, &info, &vs, &net, out, name, &ckpt)
}

/// Export a built model (used by `export` and by tests on LeRobot checkpoints).
pub fn export_model(
    cfg: &ActTrainConfig,
    info: &ActDataInfo,
    vs: &VarStore,
    net: &Act,
    out: &Path,
    name: Option<&str>,
    ckpt: &Path,
) -> Result<ActExportReport> {
    let mut weights = Weights::new();
    for (n, t) in sorted_vars(vs) {
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        let data: Vec<f32> =
            Vec::try_from(t.to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1))?;
        weights.insert(&n, shape, data)?;
    }
    let feat: Vec<(i64, i64)> = info
        .cameras
        .iter()
        .map(|(_, h, w)| feature_hw(*h, *w))
        .collect();
    let bytes = build_act(cfg, info, weights, &feat)?;
    // Parity on random normalised inputs (B = 2).
    let env = maniflow_runtime::policy::ortlib::environment().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut sess = session(&env, &bytes)?;
    let _g = tch::no_grad_guard();
    tch::manual_seed(4321);
    let state = Tensor::randn([2, info.state_dim() as i64], (Kind::Float, Device::Cpu));
    let images: Vec<Tensor> = info
        .cameras
        .iter()
        .map(|(_, h, w)| Tensor::randn([2, 3, *h as i64, *w as i64], (Kind::Float, Device::Cpu)))
        .collect();
    let want = net
        .forward(
            &ActInput {
                state: &state,
                images: &images,
                action: None,
            },
            false,
        )
        .actions
        .to_device(Device::Cpu);
    let mut ins = vec![(info.state_key.clone(), state.shallow_clone())];
    for ((k, _, _), t) in info.cameras.iter().zip(&images) {
        ins.push((k.clone(), t.shallow_clone()));
    }
    let got = ort_run(&mut sess, ins, "action")?;
    if got.size() != want.size() {
        bail!(
            "exported graph gives shape {:?}, tch {:?}",
            got.size(),
            want.size()
        );
    }
    let graph_err = max_abs(&got, &want);
    if !(graph_err <= PARITY_TOL) {
        bail!("parity check failed: act.onnx vs tch max abs error {graph_err:.3e} (limit {PARITY_TOL:.0e}); no package written");
    }
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let write = |f: &str, b: &[u8]| {
        std::fs::write(out.join(f), b).with_context(|| format!("write {}", out.join(f).display()))
    };
    write("act.onnx", &bytes)?;
    let m = &cfg.model;
    let manifest = Manifest {
        format_version: 1,
        kind: PolicyKind::Act,
        name: name.map(str::to_string).unwrap_or_else(|| out.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()),
        description: format!("ACT ({}) trained by maniflow-train on {}", cfg.name, info.dataset),
        n_obs_steps: 1,
        inputs: Inputs {
            cameras: info
                .cameras
                .iter()
                .map(|(k, h, w)| ImageInput { key: k.clone(), height: *h, width: *w, channels: 3, color_order: ColorOrder::Rgb, resize: ResizeRule::None })
                .collect(),
            state: Some(StateInput { key: info.state_key.clone(), names: info.state_names.clone(), units: units(&info.state_names) }),
            tactile: None,
        },
        outputs: Outputs {
            action: ActionOutput {
                key: info.action_key.clone(),
                names: info.action_names.clone(),
                units: units(&info.action_names),
                horizon: m.chunk_size,
                n_action_steps: m.n_action_steps,
                start_index: 0,
                prefix_d_max: 0,
            },
        },
        normalization: info.normalization.clone(),
        sampler: None,
        modality_map: Vec::new(),
        graphs: Graphs { encoder: None, velocity: None, act: Some(GraphFile { file: "act.onnx".into(), sha256: sha256_hex(&bytes) }) },
        producer: Producer {
            name: "maniflow-train".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            notes: format!("weights of {}; ONNX written by maniflow-train (opset 17); parity vs tch {graph_err:.3e}", ckpt.display()),
            parity_max_abs_err: Some(graph_err),
        },
    };
    let text = manifest.to_toml().context("serialise policy.toml")?;
    write(
        "policy.toml",
        format!("# Written by maniflow-train export.\n{text}").as_bytes(),
    )?;
    let pipeline_err = match pipeline_parity(out, net, info) {
        Ok(e) if e <= PARITY_TOL => e,
        other => {
            for f in ["act.onnx", "policy.toml"] {
                let _ = std::fs::remove_file(out.join(f));
            }
            match other {
                Ok(e) => bail!("runtime pipeline parity failed: max error {e:.3e} (normalised action units, limit {PARITY_TOL:.0e}); package removed"),
                Err(e) => return Err(e.context("runtime pipeline check; package removed")),
            }
        }
    };
    Ok(ActExportReport {
        out: out.to_path_buf(),
        checkpoint: ckpt.to_path_buf(),
        graph_err,
        pipeline_err,
    })
}

/// The runtime's whole path (u8 frames + raw state -> normalise -> act.onnx ->
/// unnormalise) against tch on the same raw observation; error in normalised units.
fn pipeline_parity(dir: &Path, net: &Act, info: &ActDataInfo) -> Result<f64> {
    use maniflow_runtime::policy::engine::{Engine, ObservationStep};
use maniflow_runtime::policy::options::EngineOptions;
    use maniflow_runtime::policy::normalize::Normalizer;
    use maniflow_runtime::policy::preprocess::Frame;
    use rand::{Rng, SeedableRng};
    let mut eng = Engine::load(dir, &EngineOptions::default()).map_err(|e| {
        anyhow::anyhow!(
            "the runtime refuses the exported package {}: {e}",
            dir.display()
        )
    })?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(77);
    let imgs: Vec<Vec<u8>> = info
        .cameras
        .iter()
        .map(|(_, h, w)| (0..h * w * 3).map(|_| rng.random::<u8>()).collect())
        .collect();
    let raw_state: Vec<f32> = (0..info.state_dim())
        .map(|_| rng.random_range(-60.0..60.0))
        .collect();
    let frames: Vec<Frame> = info
        .cameras
        .iter()
        .zip(&imgs)
        .map(|((_, h, w), buf)| Frame {
            data: buf,
            width: *w,
            height: *h,
            order: ColorOrder::Rgb,
        })
        .collect();
    eng.set_observation(
        0,
        &ObservationStep {
            cameras: &frames,
            state: Some(&raw_state),
            tactile: None,
        },
    )
    .map_err(|e| anyhow::anyhow!("runtime set_observation: {e}"))?;
    let chunk = eng
        .infer()
        .map_err(|e| anyhow::anyhow!("runtime infer: {e}"))?
        .to_vec();
    let norm = |key: &str, n: usize| -> Result<Normalizer> {
        Ok(Normalizer::new(
            info.normalization
                .get(key)
                .with_context(|| format!("no normalisation for `{key}`"))?,
            n,
        ))
    };
    let mut sn = vec![0f32; raw_state.len()];
    norm(&info.state_key, info.state_dim())?.normalize(&raw_state, &mut sn);
    let images: Vec<Tensor> = info
        .cameras
        .iter()
        .zip(&imgs)
        .map(|((k, h, w), buf)| -> Result<Tensor> {
            let x = Tensor::from_slice(buf.as_slice())
                .view([1, *h as i64, *w as i64, 3])
                .permute([0, 3, 1, 2])
                .to_kind(Kind::Float)
                / 255.0;
            let (mean, std) = match info.normalization.get(k) {
                Some(Normalization::MeanStd { mean, std, eps }) => (
                    Tensor::from_slice(mean).view([1, 3, 1, 1]),
                    Tensor::from_slice(std).view([1, 3, 1, 1]) + *eps as f64,
                ),
                other => bail!("camera `{k}`: normalisation {other:?} is not mean_std"),
            };
            Ok((x - mean) / std)
        })
        .collect::<Result<_>>()?;
    let st = Tensor::from_slice(&sn).view([1, -1]);
    let x = net
        .forward(
            &ActInput {
                state: &st,
                images: &images,
                action: None,
            },
            false,
        )
        .actions;
    let xs: Vec<f32> = Vec::try_from(x.to_device(Device::Cpu).flatten(0, -1))?;
    let da = info.action_dim();
    let an = norm(&info.action_key, da)?;
    let mut un = vec![0f32; xs.len()];
    for (a, b) in xs.chunks(da).zip(un.chunks_mut(da)) {
        an.unnormalize(a, b);
    }
    if un.len() != chunk.len() {
        bail!("runtime chunk has {} values, tch {}", chunk.len(), un.len());
    }
    let std = match info.normalization.get(&info.action_key) {
        Some(Normalization::MeanStd { std, .. }) => std.clone(),
        _ => vec![1.0; da],
    };
    Ok(chunk
        .iter()
        .zip(&un)
        .enumerate()
        .map(|(i, (a, b))| ((a - b).abs() / std[i % da].max(1e-6)) as f64)
        .fold(0.0, f64::max))
}
