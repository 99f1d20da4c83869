//! `encoder.onnx` and `velocity.onnx` of a ManiFlow policy package, built from a
//! safetensors checkpoint exactly as docs/MODEL.md specifies (inference: no dropout,
//! no augmentation). Tensor names and shapes follow models/README.md.

use super::builder::{batch, fixed, GraphBuilder, TensorSource};
use crate::config::{camera_modality, Config, Fusion, GateType, TactileKind};
use anyhow::{bail, ensure, Context, Result};
use std::collections::HashMap;
use std::path::Path;

const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Named f32 tensors: name -> (shape, row-major data).
#[derive(Debug, Default, Clone)]
pub struct Weights {
    map: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Weights {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, name: &str, shape: Vec<usize>, data: Vec<f32>) -> Result<()> {
        let n: usize = shape.iter().product();
        ensure!(
            n == data.len(),
            "tensor `{name}`: shape {shape:?} needs {n} values, got {}",
            data.len()
        );
        self.map.insert(name.to_string(), (shape, data));
        Ok(())
    }

    /// Reads every tensor of a safetensors file (all must be F32).
    pub fn from_safetensors(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read weights {}", path.display()))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: not a safetensors file: {e}", path.display()))?;
        let mut w = Weights::new();
        for (name, view) in st.iter() {
            ensure!(
                view.dtype() == safetensors::Dtype::F32,
                "{}: tensor `{name}` is {:?}, expected F32",
                path.display(),
                view.dtype()
            );
            let raw = view.data();
            let mut data = vec![0f32; raw.len() / 4];
            le_bytes_to_f32(raw, &mut data);
            w.insert(name, view.shape().to_vec(), data)?;
        }
        Ok(w)
    }

    /// (shape, data) of `name`; the error names the missing key.
    pub fn get(&self, name: &str) -> Result<(&[usize], &[f32])> {
        match self.map.get(name) {
            Some((s, d)) => Ok((s, d)),
            None => bail!(
                "weights have no tensor `{name}` (missing key; {} tensors present)",
                self.map.len()
            ),
        }
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(|s| s.as_str())
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Little-endian f32 bytes -> f32 (a plain copy on little-endian targets).
fn le_bytes_to_f32(raw: &[u8], out: &mut [f32]) {
    debug_assert_eq!(raw.len(), 4 * out.len());
    if cfg!(target_endian = "little") {
        // SAFETY: `out` owns exactly raw.len() bytes, every bit pattern is a valid f32,
        // and the regions do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(raw.as_ptr(), out.as_mut_ptr() as *mut u8, raw.len()) }
    } else {
        for (d, c) in out.iter_mut().zip(raw.chunks_exact(4)) {
            *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
    }
}

impl TensorSource for Weights {
    fn tensor(&self, name: &str) -> Result<(&[usize], &[f32])> {
        self.get(name)
    }
}

pub use crate::model::ObsDims;

impl ObsDims {
    /// Cameras and keys from the config (`image_size` for every camera).
    pub fn from_config(cfg: &Config, state_dim: usize, taxels: Option<usize>, action_dim: usize) -> Self {
        let e = &cfg.encoder;
        ObsDims {
            cameras: e
                .cameras
                .iter()
                .map(|k| (k.clone(), e.image_size[0], e.image_size[1]))
                .collect(),
            state_key: e.state_key.clone(),
            state_dim,
            tactile: taxels.map(|n| (e.tactile_key.clone(), n)),
            tactile_mae: None,
            action_dim,
        }
    }
}

/// Spatial size after the stride-32 ResNet (conv1 7/2/3, maxpool 3/2/1, three stride-2 stages).
pub fn feature_size(n: usize) -> usize {
    let mut n = (n + 6 - 7) / 2 + 1;
    for _ in 0..4 {
        n = (n + 2 - 3) / 2 + 1;
    }
    n
}

/// The tactile input, when the config uses it and the dataset has it:
/// (key, values per frame, feature width per frame).
fn tactile_used<'a>(cfg: &Config, dims: &'a ObsDims) -> Option<(&'a str, usize, usize)> {
    match (&cfg.encoder.tactile, &dims.tactile, &dims.tactile_mae) {
        (TactileKind::Taxels, Some((k, n)), _) if *n > 0 => Some((k.as_str(), *n, *n)),
        (TactileKind::Mae, Some((k, n)), Some(m)) if *n > 0 => Some((k.as_str(), *n, m.width as usize)),
        _ => None,
    }
}

/// Context token ranges [start, end) per modality: cameras (config order), tactile,
/// proprio; in `cross_attention` fusion `vision` (one attended token per query token),
/// tactile, proprio. Empty in `concat` fusion (one fused token, no modality tokens).
pub fn modality_map(cfg: &Config, dims: &ObsDims) -> Vec<(String, usize, usize)> {
    if !cfg.model.fusion.has_tokens() {
        return Vec::new();
    }
    let to = cfg.model.n_obs_steps;
    let mut entries: Vec<(String, usize)> = if cfg.model.fusion == Fusion::CrossAttention {
        vec![("vision".into(), to * (1 + usize::from(tactile_used(cfg, dims).is_some())))]
    } else {
        dims.cameras
            .iter()
            .map(|(k, h, w)| (camera_modality(k).to_string(), to * feature_size(*h) * feature_size(*w)))
            .collect()
    };
    if tactile_used(cfg, dims).is_some() {
        entries.push(("tactile".into(), to));
    }
    entries.push(("proprio".into(), to));
    let mut start = 0;
    entries
        .into_iter()
        .map(|(m, n)| {
            start += n;
            (m, start - n, start)
        })
        .collect()
}

/// (L, Dc) of the context.
pub fn context_dims(cfg: &Config, dims: &ObsDims) -> (usize, usize) {
    match cfg.model.fusion {
        Fusion::Tokens | Fusion::CrossAttention => (modality_map(cfg, dims).last().map_or(0, |m| m.2), cfg.encoder.cond_dim),
        Fusion::Concat => {
            let per_step = 8 * cfg.encoder.resnet_width * dims.cameras.len()
                + tactile_used(cfg, dims).map_or(0, |t| t.2)
                + dims.state_dim;
            (1, cfg.model.n_obs_steps * per_step)
        }
    }
}

fn check_dims(cfg: &Config, dims: &ObsDims) -> Result<()> {
    let e = &cfg.encoder;
    let keys: Vec<&str> = dims.cameras.iter().map(|c| c.0.as_str()).collect();
    ensure!(
        keys == e.cameras,
        "ObsDims cameras {keys:?} differ from encoder.cameras {:?}",
        e.cameras
    );
    for (k, h, w) in &dims.cameras {
        ensure!(
            [*h, *w] == e.image_size,
            "camera `{k}` is {h}x{w}, encoder.image_size is {:?}",
            e.image_size
        );
        let m = camera_modality(k);
        ensure!(
            m != "tactile" && m != "proprio" && m != "vision",
            "camera `{k}`: modality name `{m}` is reserved"
        );
    }
    let mut mods: Vec<&str> = keys.iter().map(|k| camera_modality(k)).collect();
    mods.sort_unstable();
    mods.dedup();
    ensure!(
        mods.len() == keys.len(),
        "camera keys {keys:?} do not have distinct last segments"
    );
    ensure!(
        dims.state_key == e.state_key,
        "ObsDims state key `{}` != encoder.state_key `{}`",
        dims.state_key,
        e.state_key
    );
    ensure!(dims.state_dim > 0, "state_dim must be > 0");
    if e.tactile == TactileKind::Mae {
        let Some(m) = &dims.tactile_mae else {
            bail!("encoder.tactile = \"mae\" but the run's data.json has no dims.tactile_mae (the pretrained encoder's shapes)");
        };
        m.check().map_err(anyhow::Error::msg)?;
        let cells = m.values_per_frame();
        ensure!(
            dims.tactile.as_ref().is_some_and(|t| t.1 == cells),
            "tactile {:?}: the tactile MAE takes {cells} values per frame",
            dims.tactile
        );
    }
    if e.tactile != TactileKind::None {
        match &dims.tactile {
            Some((k, n)) => {
                ensure!(
                    *k == e.tactile_key,
                    "ObsDims tactile key `{k}` != encoder.tactile_key `{}`",
                    e.tactile_key
                );
                ensure!(*n > 0, "tactile `{k}` has 0 taxels");
            }
            None => bail!(
                "encoder.tactile = {:?} but the dataset has no `{}`",
                e.tactile,
                e.tactile_key
            ),
        }
    }
    Ok(())
}

/// Every source tensor under `prefix` must have been used: an unused one means the
/// config does not describe the checkpoint (a gate the graph would silently drop).
fn check_all_used(g: &GraphBuilder, w: &Weights, prefix: &str) -> Result<()> {
    let mut unused: Vec<&str> = w
        .names()
        .filter(|n| n.starts_with(prefix) && !g.used().contains(*n))
        .collect();
    if !unused.is_empty() {
        unused.sort_unstable();
        let n = unused.len();
        unused.truncate(10);
        bail!(
            "{n} weight(s) under `{prefix}` not used by the config's graph (config / checkpoint mismatch): {unused:?}"
        );
    }
    Ok(())
}

// ----------------------------------------------------------------------------- encoder

/// conv (no bias) + GroupNorm(C/16, C, eps 1e-5).
fn conv_gn(
    g: &mut GraphBuilder,
    x: &str,
    conv: &str,
    gn: &str,
    shape: [usize; 4],
    stride: usize,
    pad: usize,
) -> Result<String> {
    let wn = format!("{conv}.weight");
    g.weight_shaped(&wn, &shape)?;
    let w = g.param(&wn, None)?;
    let y = g.conv(x, &w, None, stride, pad);
    let c = shape[0];
    let (gw, gb) = (format!("{gn}.weight"), format!("{gn}.bias"));
    g.weight_shaped(&gw, &[c])?;
    g.weight_shaped(&gb, &[c])?;
    let gw = g.param(&gw, Some(&[c, 1, 1]))?;
    let gb = g.param(&gb, Some(&[c, 1, 1]))?;
    Ok(g.group_norm(&y, c / 16, &gw, &gb, 1e-5))
}

/// ResNet with GroupNorm (torchvision names); returns the stride-32 map and its channels.
fn resnet(g: &mut GraphBuilder, p: &str, x: &str, cfg: &Config) -> Result<(String, usize)> {
    let w = cfg.encoder.resnet_width;
    let x = conv_gn(g, x, &format!("{p}.conv1"), &format!("{p}.bn1"), [w, 3, 7, 7], 2, 3)?;
    let x = g.relu(&x);
    let mut x = g.maxpool(&x, 3, 2, 1);
    let mut cin = w;
    for (s, &nb) in cfg.encoder.resnet_blocks.iter().enumerate() {
        let cout = w << s;
        for b in 0..nb {
            let stride = if s > 0 && b == 0 { 2 } else { 1 };
            let q = format!("{p}.layer{}.{b}", s + 1);
            let y = conv_gn(
                g,
                &x,
                &format!("{q}.conv1"),
                &format!("{q}.bn1"),
                [cout, cin, 3, 3],
                stride,
                1,
            )?;
            let y = g.relu(&y);
            let y = conv_gn(
                g,
                &y,
                &format!("{q}.conv2"),
                &format!("{q}.bn2"),
                [cout, cout, 3, 3],
                1,
                1,
            )?;
            let idn = if stride != 1 || cin != cout {
                let (c, n) = (format!("{q}.downsample.0"), format!("{q}.downsample.1"));
                conv_gn(g, &x, &c, &n, [cout, cin, 1, 1], stride, 0)?
            } else {
                x.clone()
            };
            let s = g.add(&y, &idn);
            x = g.relu(&s);
            cin = cout;
        }
    }
    Ok((x, cin))
}

/// Linear `<p>.weight` (out, in) checked against the config, with `<p>.bias` if `bias`.
pub(super) fn linear(g: &mut GraphBuilder, x: &str, p: &str, din: usize, dout: usize, bias: bool) -> Result<String> {
    let wn = format!("{p}.weight");
    g.weight_shaped(&wn, &[dout, din])?;
    let bn = format!("{p}.bias");
    g.linear(x, &wn, bias.then_some(bn.as_str()))
}

/// `encoder.onnx`: camera / state / tactile inputs -> `context` (B, L, Dc).
pub fn build_encoder(cfg: &Config, dims: &ObsDims, weights: &Weights) -> Result<Vec<u8>> {
    check_dims(cfg, dims)?;
    let to = cfg.model.n_obs_steps;
    let tokens = cfg.model.fusion.has_tokens();
    let dc = cfg.encoder.cond_dim;
    let (l, dctx) = context_dims(cfg, dims);
    let tactile = tactile_used(cfg, dims);
    let mut g = GraphBuilder::new("maniflow_encoder", weights);
    for (k, h, w) in &dims.cameras {
        g.input(k, &[batch(), fixed(to), fixed(3), fixed(*h), fixed(*w)])?;
    }
    if let Some((k, n, _)) = tactile {
        g.input(k, &[batch(), fixed(to), fixed(n)])?;
    }
    g.input(&dims.state_key, &[batch(), fixed(to), fixed(dims.state_dim)])?;

    let mean = g.constant_f32(&[1, 3, 1, 1], &IMAGENET_MEAN);
    let std = g.constant_f32(&[1, 3, 1, 1], &IMAGENET_STD);
    let mut parts = Vec::new();
    for (k, h, w) in &dims.cameras {
        let p = format!("obs_encoder.{}", camera_modality(k));
        g.set_scope(&p);
        let x = g.reshape(k, &[-1, 3, *h as i64, *w as i64]);
        let x = g.sub(&x, &mean);
        let x = g.div(&x, &std);
        let (f, c) = resnet(&mut g, &format!("{p}.backbone"), &x, cfg)?;
        let cells = (feature_size(*h) * feature_size(*w)) as i64;
        let (c, to_i) = (c as i64, to as i64);
        if tokens {
            // (B*To, C, h, w) -> (B*To, h*w, C) -> (B, To*h*w, C), step-major, cells row-major
            let y = g.reshape(&f, &[-1, c, cells]);
            let y = g.transpose(&y, &[0, 2, 1]);
            let y = g.reshape(&y, &[-1, to_i * cells, c]);
            parts.push(linear(&mut g, &y, &format!("{p}.proj"), c as usize, dc, true)?);
        } else {
            let y = g.reduce_mean(&f, &[2, 3], false);
            parts.push(g.reshape(&y, &[-1, to_i, c]));
        }
    }
    // tactile features per frame: the values themselves, or the MAE encoder's
    let tactile = match (tactile, &dims.tactile_mae) {
        (Some((k, _, f)), Some(m)) if cfg.encoder.tactile == TactileKind::Mae => {
            Some((super::tactile_mae::features(&mut g, "obs_encoder.tactile.mae", k, m, to)?, f))
        }
        (Some((k, _, f)), _) => Some((k.to_string(), f)),
        (None, _) => None,
    };
    g.set_scope("obs_encoder");
    if tokens {
        let mut own = Vec::new();
        if let Some((t, f)) = &tactile {
            own.push(linear(&mut g, t, "obs_encoder.tactile.proj", *f, dc, true)?);
        }
        own.push(linear(
            &mut g,
            &dims.state_key,
            "obs_encoder.proprio.proj",
            dims.state_dim,
            dc,
            true,
        )?);
        let ctx = if cfg.model.fusion == Fusion::CrossAttention {
            let x = cfg.encoder.cross_attention.unwrap_or_default();
            let refs: Vec<&str> = parts.iter().map(|s| s.as_str()).collect();
            let cams = g.concat(&refs, 1);
            let refs: Vec<&str> = own.iter().map(|s| s.as_str()).collect();
            let queries = g.concat(&refs, 1);
            let cam_tokens: usize = dims.cameras.iter().map(|(_, h, w)| to * feature_size(*h) * feature_size(*w)).sum();
            let vision = super::fusion::sparse_cross_attention(&mut g, "obs_encoder.fusion", &queries, &cams, dc, x.heads, x.keep(cam_tokens))?;
            g.concat(&[&vision, &queries], 1)
        } else {
            parts.extend(own);
            let refs: Vec<&str> = parts.iter().map(|s| s.as_str()).collect();
            g.concat(&refs, 1)
        };
        g.output(&ctx, "context", &[batch(), fixed(l), fixed(dctx)]);
    } else {
        if let Some((t, _)) = tactile {
            parts.push(t);
        }
        parts.push(dims.state_key.clone());
        // upstream's TimmObsEncoder order: each key's (B, To, d) flattened to (B, 1, To*d), keys concatenated
        let flat: Vec<String> = parts.iter().map(|x| g.reshape(x, &[0, 1, -1])).collect();
        let refs: Vec<&str> = flat.iter().map(|s| s.as_str()).collect();
        let ctx = g.concat(&refs, 2);
        g.output(&ctx, "context", &[batch(), fixed(1), fixed(dctx)]);
    }
    check_all_used(&g, weights, "obs_encoder.")?;
    g.to_bytes()
}

// ----------------------------------------------------------------------------- DiTX

struct Dims {
    d: usize,
    h: usize,
    hd: usize,
    gate: GateType,
    qkv_bias: bool,
    qk_norm: bool,
}

/// SinEmb(Et) -> Linear(Et, 4Et) -> Mish -> Linear(4Et, D); `freqs` (Et/2,).
fn time_encoder(g: &mut GraphBuilder, p: &str, t: &str, freqs: &str, et: usize, d: usize) -> Result<String> {
    g.set_scope(p);
    let tu = g.unsqueeze(t, &[1]);
    let a = g.mul(&tu, freqs); // (B, Et/2)
    let (s, c) = (g.sin(&a), g.cos(&a));
    let emb = g.concat(&[&s, &c], 1);
    let y = linear(g, &emb, &format!("{p}.1"), et, 4 * et, true)?;
    let y = g.mish(&y);
    linear(g, &y, &format!("{p}.3"), 4 * et, d, true)
}

/// (B, T, D) -> (B, H, T, hd)
fn heads(g: &mut GraphBuilder, x: &str, k: &Dims) -> String {
    split_heads(g, x, k.h, k.hd, &[0, 2, 1, 3])
}

/// (B, H, T, hd) -> (B, T, D)
fn merge(g: &mut GraphBuilder, o: &str, k: &Dims) -> String {
    merge_heads(g, o, k.d)
}

/// (B, T, H*hd) viewed as (B, T, H, hd), then permuted by `perm`: [0, 2, 1, 3] gives
/// (B, H, T, hd), [0, 2, 3, 1] the transposed keys (B, H, hd, T).
pub(super) fn split_heads(g: &mut GraphBuilder, x: &str, h: usize, hd: usize, perm: &[i64]) -> String {
    let y = g.reshape(x, &[0, 0, h as i64, hd as i64]);
    g.transpose(&y, perm)
}

/// (B, H, T, hd) -> (B, T, d)
pub(super) fn merge_heads(g: &mut GraphBuilder, o: &str, d: usize) -> String {
    let y = g.transpose(o, &[0, 2, 1, 3]);
    g.reshape(&y, &[0, 0, d as i64])
}

/// softmax(q k^T / sqrt(hd)) with `kt` = k^T (B, H, hd, L): the attention weights.
pub(super) fn attention_weights(g: &mut GraphBuilder, q: &str, kt: &str, hd: usize) -> String {
    let s = g.matmul(q, kt);
    let scale = g.scalar((hd as f64).sqrt() as f32);
    let s = g.div(&s, &scale);
    g.softmax(&s, -1)
}

/// softmax(q k^T / sqrt(hd)) v with `kt` = k^T (B, H, hd, L).
fn sdpa(g: &mut GraphBuilder, q: &str, kt: &str, v: &str, k: &Dims) -> String {
    let p = attention_weights(g, q, kt, k.hd);
    g.matmul(&p, v)
}

/// o (B, H, T, hd) * sigmoid(gate(hin)) (headwise / elementwise), before merge.
fn out_gate(g: &mut GraphBuilder, p: &str, o: &str, hin: &str, k: &Dims) -> Result<String> {
    let gp = format!("{p}.gate");
    match k.gate {
        GateType::None => Ok(o.to_string()),
        GateType::Headwise => {
            let y = linear(g, hin, &gp, k.d, k.h, true)?;
            let s = g.sigmoid(&y); // (B, T, H)
            let s = g.transpose(&s, &[0, 2, 1]);
            let s = g.unsqueeze(&s, &[3]); // (B, H, T, 1)
            Ok(g.mul(o, &s))
        }
        GateType::Elementwise => {
            let y = linear(g, hin, &gp, k.d, k.d, true)?;
            let s = g.sigmoid(&y); // (B, T, D): element j gates head j / hd, channel j % hd
            let s = heads(g, &s, k);
            Ok(g.mul(o, &s))
        }
    }
}

/// LayerNorm(D, eps 1e-6, no affine) then y * (1 + sc) + sh.
fn modulate(g: &mut GraphBuilder, x: &str, sh: &str, sc: &str, k: &Dims) -> String {
    let ones = g.constant_f32(&[k.d], &vec![1.0; k.d]);
    let y = g.layer_norm(x, &ones, None, 1e-6);
    let one = g.scalar(1.0);
    let s1 = g.add(&one, sc);
    let y = g.mul(&y, &s1);
    g.add(&y, sh)
}

fn self_attn(g: &mut GraphBuilder, p: &str, hin: &str, k: &Dims) -> Result<String> {
    let d = k.d;
    g.weight_shaped(&format!("{p}.in_proj_weight"), &[3 * d, d])?;
    let qkv = g.linear(hin, &format!("{p}.in_proj_weight"), Some(&format!("{p}.in_proj_bias")))?;
    let s = g.split(&qkv, 3, -1);
    let q = heads(g, &s[0], k);
    let kt = split_heads(g, &s[1], k.h, k.hd, &[0, 2, 3, 1]);
    let v = heads(g, &s[2], k);
    let o = sdpa(g, &q, &kt, &v, k);
    let o = out_gate(g, p, &o, hin, k)?;
    let m = merge(g, &o, k);
    linear(g, &m, &format!("{p}.out_proj"), d, d, true)
}

/// `gamma` (L, H) = sigmoid(theta[token_modality]) applied to v (B, H, L, hd).
fn cross_attn(
    g: &mut GraphBuilder,
    p: &str,
    hin: &str,
    ctx: &str,
    k: &Dims,
    token_mod: Option<(&[i64], usize)>,
) -> Result<String> {
    let d = k.d;
    let q = linear(g, hin, &format!("{p}.q"), d, d, k.qkv_bias)?;
    let kv = linear(g, ctx, &format!("{p}.kv"), d, 2 * d, k.qkv_bias)?;
    let s = g.split(&kv, 2, -1);
    let mut q = heads(g, &q, k);
    let mut kh = heads(g, &s[0], k);
    let mut v = heads(g, &s[1], k);
    if k.qk_norm {
        for (x, n) in [(&mut q, "q_norm"), (&mut kh, "k_norm")] {
            let (wn, bn) = (format!("{p}.{n}.weight"), format!("{p}.{n}.bias"));
            g.weight_shaped(&wn, &[k.hd])?;
            g.weight_shaped(&bn, &[k.hd])?;
            let (w, b) = (g.param(&wn, None)?, g.param(&bn, None)?);
            *x = g.layer_norm(x, &w, Some(&b), 1e-5);
        }
    }
    let kt = g.transpose(&kh, &[0, 1, 3, 2]);
    if let Some((idx, n_mod)) = token_mod {
        let tn = format!("{p}.modality_gate");
        g.weight_shaped(&tn, &[n_mod, k.h])?;
        let theta = g.param(&tn, None)?;
        let th = g.gather(&theta, idx, 0); // (L, H)
        let gm = g.sigmoid(&th);
        let gm = g.transpose(&gm, &[1, 0]);
        let gm = g.unsqueeze(&gm, &[2]); // (H, L, 1)
        v = g.mul(&v, &gm);
    }
    let o = sdpa(g, &q, &kt, &v, k);
    let o = out_gate(g, p, &o, hin, k)?;
    let m = merge(g, &o, k);
    linear(g, &m, &format!("{p}.proj"), d, d, true)
}

/// A source tensor (1, R, D) cut to its first `rows` rows.
fn rows_param(g: &mut GraphBuilder, name: &str, rows: usize, d: usize) -> Result<String> {
    let (s, data) = g.weight(name)?;
    ensure!(
        s.len() == 3 && s[0] == 1 && s[2] == d && s[1] >= rows,
        "weight `{name}` has shape {s:?}, need (1, >= {rows}, {d})"
    );
    if s[1] == rows {
        return g.param(name, None);
    }
    g.initializer(&format!("{name}[:{rows}]"), &[1, rows, d], &data[..rows * d])
}

/// `velocity.onnx`: (x_t, t, target_t, context) -> `velocity` (B, T, Da).
pub fn build_velocity(cfg: &Config, dims: &ObsDims, weights: &Weights) -> Result<Vec<u8>> {
    check_dims(cfg, dims)?;
    let m = &cfg.model;
    let (l, dc) = context_dims(cfg, dims);
    let (t, da, et) = (m.horizon, dims.action_dim, m.time_embed_dim);
    ensure!(da > 0, "action_dim must be > 0");
    ensure!(l >= 1, "context has no tokens");
    let k = Dims {
        d: m.n_emb,
        h: m.n_head,
        hd: m.n_emb / m.n_head,
        gate: if m.use_gate_attn { m.gate_type } else { GateType::None },
        qkv_bias: m.qkv_bias,
        qk_norm: m.qk_norm,
    };
    let d = k.d;
    let mut g = GraphBuilder::new("maniflow_velocity", weights);
    g.input("x_t", &[batch(), fixed(t), fixed(da)])?;
    g.input("t", &[batch()])?;
    g.input("target_t", &[batch()])?;
    g.input("context", &[batch(), fixed(l), fixed(dc)])?;
    let prefixed = m.prefix_d_max() > 0;
    if prefixed {
        g.input("prefix", &[batch(), fixed(t), fixed(da)])?;
        g.input("prefix_mask", &[batch(), fixed(t)])?;
    }

    // time code c = adaptor(concat[e_t, e_tt])
    let half = et / 2;
    let step = 10000f64.ln() / (half as f64 - 1.0);
    let freqs: Vec<f32> = (0..half).map(|i| (-(i as f64) * step).exp() as f32).collect();
    let freqs = g.constant_f32(&[half], &freqs);
    let e_t = time_encoder(&mut g, "model.flow_timestep_encoder", "t", &freqs, et, d)?;
    let e_tt = time_encoder(&mut g, "model.flow_target_t_encoder", "target_t", &freqs, et, d)?;
    g.set_scope("model");
    let cat = g.concat(&[&e_t, &e_tt], 1);
    let c = linear(&mut g, &cat, "model.timestep_target_t_adaptor", 2 * d, d, true)?;
    let c_act = g.silu(&c);

    // action tokens (with a prefix: x_t * (1 - m) + prefix * m, plus m * prefix_emb) and context
    let mut x = if prefixed {
        let m3 = g.unsqueeze("prefix_mask", &[2]);
        let one = g.scalar(1.0);
        let keep = g.sub(&one, &m3);
        let a = g.mul("x_t", &keep);
        let b = g.mul("prefix", &m3);
        let x_in = g.add(&a, &b);
        let x = linear(&mut g, &x_in, "model.input_emb", da, d, true)?;
        let pos = rows_param(&mut g, "model.pos_emb", t, d)?;
        let x = g.add(&x, &pos);
        g.weight_shaped("model.prefix_emb", &[d])?;
        let e = g.param("model.prefix_emb", None)?;
        let me = g.mul(&m3, &e);
        g.add(&x, &me)
    } else {
        let x = linear(&mut g, "x_t", "model.input_emb", da, d, true)?;
        let pos = rows_param(&mut g, "model.pos_emb", t, d)?;
        g.add(&x, &pos)
    };
    let ctx = linear(&mut g, "context", "model.vis_cond_obs_emb", dc, d, true)?;
    let cpos = rows_param(&mut g, "model.vis_cond_pos_embed", l, d)
        .context("context tokens L exceed model.visual_cond_len * n_obs_steps")?;
    let ctx = g.add(&ctx, &cpos);

    let map = modality_map(cfg, dims);
    let token_mod: Vec<i64> = map
        .iter()
        .enumerate()
        .flat_map(|(i, (_, s, e))| std::iter::repeat_n(i as i64, e - s))
        .collect();
    let use_mod = m.use_gate_attn && m.fusion.has_tokens() && !map.is_empty();

    for i in 0..m.n_layer {
        let p = format!("model.blocks.{i}");
        g.set_scope(&p);
        let mo = linear(&mut g, &c_act, &format!("{p}.adaLN_modulation.1"), d, 9 * d, true)?;
        let ch: Vec<String> = g.split(&mo, 9, 1).iter().map(|s| g.unsqueeze(s, &[1])).collect();
        let h = modulate(&mut g, &x, &ch[0], &ch[1], &k);
        let y = self_attn(&mut g, &format!("{p}.self_attn"), &h, &k)?;
        let y = g.mul(&ch[2], &y);
        x = g.add(&x, &y);
        let h = modulate(&mut g, &x, &ch[3], &ch[4], &k);
        let tm = use_mod.then_some((token_mod.as_slice(), map.len()));
        let y = cross_attn(&mut g, &format!("{p}.cross_attn"), &h, &ctx, &k, tm)?;
        let y = g.mul(&ch[5], &y);
        x = g.add(&x, &y);
        let h = modulate(&mut g, &x, &ch[6], &ch[7], &k);
        let y = linear(&mut g, &h, &format!("{p}.mlp.fc1"), d, 4 * d, true)?;
        let y = g.gelu_tanh(&y);
        let y = linear(&mut g, &y, &format!("{p}.mlp.fc2"), 4 * d, d, true)?;
        let y = g.mul(&ch[8], &y);
        x = g.add(&x, &y);
    }

    // final layer: RMSNorm -> fc1 -> GELU(tanh) -> fc2
    g.set_scope("model.final_layer");
    let x2 = g.mul(&x, &x);
    let ms = g.reduce_mean(&x2, &[-1], true);
    let eps = g.scalar(1e-6);
    let ms = g.add(&ms, &eps);
    let rms = g.sqrt(&ms);
    let r = g.op("Reciprocal", &[&rms], vec![]);
    let y = g.mul(&x, &r);
    g.weight_shaped("model.final_layer.norm_final.weight", &[d])?;
    let nw = g.param("model.final_layer.norm_final.weight", None)?;
    let y = g.mul(&y, &nw);
    let v = match m.experts {
        0 => {
            let y = linear(&mut g, &y, "model.final_layer.ffn_final.fc1", d, d, true)?;
            let y = g.gelu_tanh(&y);
            linear(&mut g, &y, "model.final_layer.ffn_final.fc2", d, da, true)?
        }
        e => super::experts::expert_heads(&mut g, &y, &ctx, d, da, e, m.router().temperature)?,
    };
    g.output(&v, "velocity", &[batch(), fixed(t), fixed(da)]);
    check_all_used(&g, weights, "model.")?;
    g.to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::path::PathBuf;
    use std::process::Command;
    use std::time::Instant;

    /// The Python with torch, onnx and onnxruntime: env `MANIFLOW_PYTHON`, else the repo's venv.
    use crate::bench::venv_python;

    /// trainer/ (configs, tests/reference): env `MANIFLOW_TRAINER_DIR`, else this crate.
    fn trainer_dir() -> PathBuf {
        std::env::var_os("MANIFLOW_TRAINER_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
    }

    /// A preset, parsed without `Config::validate` (the graphs do not depend on the
    /// train-time checks; upstream-image has n_action_steps = horizon).
    fn preset(name: &str) -> Config {
        let path = trainer_dir().join("configs").join(format!("{name}.toml"));
        let text = std::fs::read_to_string(&path).unwrap();
        toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn python<S: AsRef<OsStr>>(args: &[S]) -> String {
        let out = Command::new(venv_python())
            .args(args)
            .output()
            .expect("cannot start the venv python");
        let (so, se) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "python failed ({}):\n{so}\n{se}", out.status);
        so.into_owned()
    }

    const PARITY_PY: &str = r#"
import sys, numpy as np, onnx, onnxruntime as ort
from safetensors.numpy import load_file
d = sys.argv[1]
inp, ref = load_file(d + "/in.safetensors"), load_file(d + "/ref.safetensors")
def run(name, feeds):
    onnx.checker.check_model(d + "/" + name, full_check=True)
    so = ort.SessionOptions(); so.intra_op_num_threads = 2
    s = ort.InferenceSession(d + "/" + name, so, providers=["CPUExecutionProvider"])
    return s.run(None, {i.name: feeds[i.name] for i in s.get_inputs()})[0]
ctx = run("encoder.onnx", inp)
vel = run("velocity.onnx", {**inp, "context": ref["context"]})
assert ctx.shape == ref["context"].shape, (ctx.shape, ref["context"].shape)
assert vel.shape == ref["velocity"].shape, (vel.shape, ref["velocity"].shape)
print("PARITY %.3e %.3e %.3e" % (np.abs(ctx - ref["context"]).max(), np.abs(vel - ref["velocity"]).max(),
      np.abs(ref["velocity"]).mean()))
"#;

    /// make-case (batch 2) + reference forward in Python, both graphs in Rust, ORT vs reference.
    fn parity(case: &str, cfg: Config, tol: f32) {
        let dir = std::env::temp_dir().join(format!("maniflow-onnx-{case}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cfg_path, w_path, in_path) = (
            dir.join("config.toml"),
            dir.join("w.safetensors"),
            dir.join("in.safetensors"),
        );
        std::fs::write(&cfg_path, cfg.to_toml()).unwrap();
        let script = trainer_dir().join("tests/reference/maniflow_ref.py");
        let made = python(&[
            script.as_os_str(),
            "make-case".as_ref(),
            "--config".as_ref(),
            cfg_path.as_os_str(),
            "--seed".as_ref(),
            "11".as_ref(),
            "--batch".as_ref(),
            "2".as_ref(),
            "--out-weights".as_ref(),
            w_path.as_os_str(),
            "--out-inputs".as_ref(),
            in_path.as_os_str(),
        ]);
        python(&[
            script.as_os_str(),
            "forward".as_ref(),
            "--config".as_ref(),
            cfg_path.as_os_str(),
            "--weights".as_ref(),
            w_path.as_os_str(),
            "--inputs".as_ref(),
            in_path.as_os_str(),
            "--out".as_ref(),
            dir.join("ref.safetensors").as_os_str(),
        ]);
        let taxels = (cfg.encoder.tactile == TactileKind::Taxels).then_some(32);
        let dims = ObsDims::from_config(&cfg, 6, taxels, 6);

        // the reference's modality map and context dims agree with ours
        let field = |key: &str| {
            made.lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or("")
                .trim()
                .to_string()
        };
        let map: Vec<String> = modality_map(&cfg, &dims)
            .iter()
            .map(|(n, s, e)| format!("{n} {s} {e}"))
            .collect();
        assert_eq!(map.join(";"), field("modality_map"), "{case}: modality map");
        let (l, dc) = context_dims(&cfg, &dims);
        assert_eq!(format!("{l} {dc}"), field("context_dims"), "{case}: context dims");

        let t0 = Instant::now();
        let w = Weights::from_safetensors(&w_path).unwrap();
        let t_load = t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let enc = build_encoder(&cfg, &dims, &w).unwrap();
        let t_enc = t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let vel = build_velocity(&cfg, &dims, &w).unwrap();
        let t_vel = t0.elapsed().as_secs_f64();
        std::fs::write(dir.join("encoder.onnx"), &enc).unwrap();
        std::fs::write(dir.join("velocity.onnx"), &vel).unwrap();
        eprintln!(
            "[{case}] weights {} tensors, load {t_load:.2}s; encoder.onnx {:.2} MB built in {t_enc:.2}s; \
             velocity.onnx {:.2} MB built in {t_vel:.2}s",
            w.len(),
            enc.len() as f64 / 1e6,
            vel.len() as f64 / 1e6
        );
        drop((enc, vel, w));

        let out = python(&["-c".as_ref(), PARITY_PY.as_ref(), dir.as_os_str()]);
        let line = out
            .lines()
            .find_map(|l| l.strip_prefix("PARITY "))
            .expect("no PARITY line");
        let e: Vec<f32> = line.split_whitespace().map(|s| s.parse().unwrap()).collect();
        eprintln!(
            "[{case}] max abs err: context {:.3e}, velocity {:.3e} (mean |velocity| {:.3})",
            e[0], e[1], e[2]
        );
        assert!(e[0] <= tol && e[1] <= tol, "{case}: parity errors {e:?} over {tol:e}");
        assert!(e[2] > 0.01, "{case}: velocity is ~0, the case does not test much");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn parity_so101_cpu_headwise() {
        parity("so101-headwise", preset("so101-cpu"), 1e-5);
    }

    #[test]
    fn parity_so101_cpu_elementwise() {
        let mut cfg = preset("so101-cpu");
        cfg.model.gate_type = GateType::Elementwise;
        parity("so101-elementwise", cfg, 1e-5);
    }

    #[test]
    fn parity_so101_cpu_no_gates() {
        let mut cfg = preset("so101-cpu");
        cfg.model.use_gate_attn = false;
        parity("so101-nogate", cfg, 1e-5);
    }

    #[test]
    fn parity_so101_cpu_concat_no_tactile() {
        let mut cfg = preset("so101-cpu");
        cfg.model.fusion = Fusion::Concat;
        cfg.encoder.tactile = TactileKind::None;
        parity("so101-concat", cfg, 1e-5);
    }

    #[test]
    fn parity_upstream_image() {
        parity("upstream-image", preset("upstream-image"), 1e-4);
    }

    #[test]
    fn missing_and_extra_weights_are_named() {
        let cfg = preset("so101-cpu");
        let dims = ObsDims::from_config(&cfg, 6, Some(32), 6);
        let err = build_velocity(&cfg, &dims, &Weights::new()).unwrap_err().to_string();
        assert!(
            err.contains("`model.flow_timestep_encoder.1.weight`") && err.contains("missing"),
            "{err}"
        );
        let err = build_encoder(&cfg, &dims, &Weights::new()).unwrap_err().to_string();
        assert!(err.contains("`obs_encoder.head.backbone.conv1.weight`"), "{err}");
        let mut w = Weights::new();
        w.insert("model.extra", vec![1], vec![0.0]).unwrap();
        w.insert("model.flow_timestep_encoder.1.weight", vec![3, 3], vec![0.0; 9])
            .unwrap();
        let err = build_velocity(&cfg, &dims, &w).unwrap_err().to_string();
        assert!(err.contains("[256, 64]") && err.contains("[3, 3]"), "{err}");
    }

    #[test]
    fn context_dims_of_presets() {
        let so = preset("so101-cpu");
        let dims = ObsDims::from_config(&so, 6, Some(32), 6);
        assert_eq!(context_dims(&so, &dims), (40, 128));
        let map = modality_map(&so, &dims);
        let names: Vec<&str> = map.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(names, ["head", "wrist", "tactile", "proprio"]);
        let up = preset("upstream-image");
        let dims = ObsDims::from_config(&up, 14, Some(32), 14);
        assert_eq!(context_dims(&up, &dims), (1, 1052)); // upstream robotwin: To 2 x (512 head + 14 state)
        assert!(modality_map(&up, &dims).is_empty());
        assert_eq!((feature_size(96), feature_size(224)), (3, 7));
    }
}
