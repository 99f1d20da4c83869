//! DiTX with adaLN-Zero, gated attention and modality gates (docs/MODEL.md).
//! Variable names are upstream's state-dict keys.

use super::experts::ExpertHeads;
use super::layers::{ln_plain, sin_emb, xavier, AffineLayerNorm, LinInit, Linear, N002};
use super::ModalityRange;
use crate::config::{GateType, ModelConfig};
use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

/// A given prefix of the chunk (training-time real-time chunking): `actions`
/// (B, T, Da) normalised, used where `mask` (B, T) is 1 (the prefix rows); x_t is
/// ignored there.
pub struct PrefixCond {
    pub actions: Tensor,
    pub mask: Tensor,
}

/// What one forward records for the metrics (detached tensors).
#[derive(Default)]
pub struct Recorder {
    /// Output-gate values per layer (self and cross, flattened).
    pub gates: Vec<Vec<Tensor>>,
    /// Cross-attention probabilities per layer, (B, H, T, L); only when `want_attn`.
    pub attn: Vec<Tensor>,
    pub want_attn: bool,
    /// Keep the graph on the recorded probabilities (the attention regulariser
    /// trains through them); otherwise they are detached.
    pub attn_grad: bool,
}

#[derive(Debug)]
struct TimeEncoder {
    l1: Linear,
    l3: Linear,
    et: i64,
}

impl TimeEncoder {
    fn new(p: &Path, et: i64, d: i64) -> Self {
        TimeEncoder {
            l1: Linear::new(p, "1", et, 4 * et, true, LinInit::Normal002),
            l3: Linear::new(p, "3", 4 * et, d, true, LinInit::Normal002),
            et,
        }
    }
    fn forward(&self, t: &Tensor) -> Tensor {
        self.l3.forward(&self.l1.forward(&sin_emb(t, self.et)).mish())
    }
}

#[derive(Debug)]
struct SelfAttn {
    in_w: Tensor,
    in_b: Tensor,
    out: Linear,
    gate: Option<Linear>,
}

#[derive(Debug)]
struct CrossAttn {
    q: Linear,
    kv: Linear,
    q_norm: Option<AffineLayerNorm>,
    k_norm: Option<AffineLayerNorm>,
    proj: Linear,
    gate: Option<Linear>,
    modality_gate: Option<Tensor>,
}

#[derive(Debug)]
struct Block {
    ada: Linear,
    sa: SelfAttn,
    ca: CrossAttn,
    fc1: Linear,
    fc2: Linear,
}

/// The output head after the final RMSNorm: upstream's `ffn_final`, or E expert heads
/// mixed by a router (`model.experts`).
#[derive(Debug)]
enum FinalHead {
    Single { fc1: Linear, fc2: Linear },
    Experts(ExpertHeads),
}

#[derive(Debug)]
pub struct DiTX {
    input_emb: Linear,
    pos_emb: Tensor,
    t_enc: TimeEncoder,
    tt_enc: TimeEncoder,
    adaptor: Linear,
    cond_emb: Linear,
    cond_pos: Tensor,
    blocks: Vec<Block>,
    norm_final: Tensor,
    head: FinalHead,
    d: i64,
    h: i64,
    p_drop: f64,
    gate_type: GateType,
    /// Per context token: its modality index (for modality gates), on the device.
    token_modality: Option<Tensor>,
    /// Added to the action tokens of prefix rows (`prefix_emb`, ours; absent without
    /// prefix conditioning).
    prefix_emb: Option<Tensor>,
}

fn gate_layer(p: &Path, cfg: &ModelConfig, d: i64) -> Option<Linear> {
    if !cfg.use_gate_attn {
        return None;
    }
    match cfg.gate_type {
        GateType::None => None,
        GateType::Headwise => Some(Linear::new(p, "gate", d, cfg.n_head as i64, true, LinInit::Xavier)),
        GateType::Elementwise => Some(Linear::new(p, "gate", d, d, true, LinInit::Xavier)),
    }
}

impl DiTX {
    /// `ctx_dim` = Dc, `map` = the encoder's modality map (token ranges).
    pub fn new(p: &Path, cfg: &ModelConfig, action_dim: i64, ctx_dim: i64, map: &[ModalityRange]) -> Self {
        let d = cfg.n_emb as i64;
        let h = cfg.n_head as i64;
        let hd = d / h;
        let et = cfg.time_embed_dim as i64;
        let t = cfg.horizon as i64;
        let modality_gates = cfg.use_gate_attn && cfg.fusion.has_tokens() && !map.is_empty();
        let blocks = (0..cfg.n_layer)
            .map(|i| {
                let bp = p / "blocks" / i;
                let sp = &bp / "self_attn";
                let cp = &bp / "cross_attn";
                let sa = SelfAttn {
                    in_w: sp.var("in_proj_weight", &[3 * d, d], xavier(d, 3 * d)),
                    in_b: sp.var("in_proj_bias", &[3 * d], Init::Const(0.0)),
                    out: Linear::new(&sp, "out_proj", d, d, true, LinInit::Xavier),
                    gate: gate_layer(&sp, cfg, d),
                };
                let ca = CrossAttn {
                    q: Linear::new(&cp, "q", d, d, cfg.qkv_bias, LinInit::Xavier),
                    kv: Linear::new(&cp, "kv", d, 2 * d, cfg.qkv_bias, LinInit::Xavier),
                    q_norm: cfg.qk_norm.then(|| AffineLayerNorm::new(&cp, "q_norm", hd, 1e-5)),
                    k_norm: cfg.qk_norm.then(|| AffineLayerNorm::new(&cp, "k_norm", hd, 1e-5)),
                    proj: Linear::new(&cp, "proj", d, d, true, LinInit::Xavier),
                    gate: gate_layer(&cp, cfg, d),
                    modality_gate: modality_gates
                        .then(|| cp.var("modality_gate", &[map.len() as i64, h], Init::Const(0.0))),
                };
                let mp = &bp / "mlp";
                Block {
                    ada: Linear::new(&(&bp / "adaLN_modulation"), "1", d, 9 * d, true, LinInit::Zero),
                    sa,
                    ca,
                    fc1: Linear::new(&mp, "fc1", d, 4 * d, true, LinInit::Xavier),
                    fc2: Linear::new(&mp, "fc2", 4 * d, d, true, LinInit::Xavier),
                }
            })
            .collect();
        let fp = p / "final_layer";
        let ffn = &fp / "ffn_final";
        let token_modality = modality_gates.then(|| {
            let mut idx = Vec::new();
            for (m, r) in map.iter().enumerate() {
                idx.extend(std::iter::repeat_n(m as i64, r.end - r.start));
            }
            Tensor::from_slice(&idx).to_device(p.device())
        });
        DiTX {
            input_emb: Linear::new(p, "input_emb", action_dim, d, true, LinInit::Normal002),
            pos_emb: p.var("pos_emb", &[1, t, d], N002),
            t_enc: TimeEncoder::new(&(p / "flow_timestep_encoder"), et, d),
            tt_enc: TimeEncoder::new(&(p / "flow_target_t_encoder"), et, d),
            adaptor: Linear::new(p, "timestep_target_t_adaptor", 2 * d, d, true, LinInit::Normal002),
            cond_emb: Linear::new(p, "vis_cond_obs_emb", ctx_dim, d, true, LinInit::Normal002),
            cond_pos: p.var(
                "vis_cond_pos_embed",
                &[1, (cfg.visual_cond_len * cfg.n_obs_steps) as i64, d],
                Init::Const(0.0),
            ),
            blocks,
            norm_final: (&fp / "norm_final").var("weight", &[d], Init::Const(1.0)),
            head: match cfg.experts {
                0 => FinalHead::Single {
                    fc1: Linear::new(&ffn, "fc1", d, d, true, LinInit::Xavier),
                    fc2: Linear::new(&ffn, "fc2", d, action_dim, true, LinInit::Zero),
                },
                e => FinalHead::Experts(ExpertHeads::new(&fp, d, action_dim, e, cfg.router().temperature)),
            },
            d,
            h,
            p_drop: cfg.p_drop_attn,
            gate_type: if cfg.use_gate_attn { cfg.gate_type } else { GateType::None },
            token_modality,
            // Created last: the other parameters' initial values do not depend on it.
            prefix_emb: (cfg.prefix_d_max() > 0).then(|| p.var("prefix_emb", &[d], N002)),
        }
    }

    /// (B, N, D) -> (B, H, N, hd)
    fn heads(&self, x: &Tensor) -> Tensor {
        let s = x.size();
        x.view([s[0], s[1], self.h, self.d / self.h]).transpose(1, 2)
    }

    fn merge(&self, o: &Tensor) -> Tensor {
        let s = o.size();
        o.transpose(1, 2).reshape([s[0], s[2], self.d])
    }

    /// Apply an output gate to o (B,H,T,hd) from the query-side input h (B,T,D).
    fn apply_gate(&self, o: Tensor, gate: &Option<Linear>, h: &Tensor, rec: &mut Option<&mut Recorder>, layer: usize) -> Tensor {
        let Some(g) = gate else { return o };
        let gv = g.forward(h).sigmoid(); // (B,T,H) or (B,T,D)
        if let Some(r) = rec.as_deref_mut() {
            r.gates[layer].push(gv.detach().flatten(0, -1));
        }
        let s = o.size();
        let g4 = match self.gate_type {
            GateType::Headwise => gv.transpose(1, 2).unsqueeze(-1), // (B,H,T,1)
            _ => gv.view([s[0], s[2], self.h, s[3]]).transpose(1, 2), // (B,H,T,hd)
        };
        o * g4
    }

    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, train: bool) -> (Tensor, Tensor) {
        let hd = (self.d / self.h) as f64;
        let p = (q.matmul(&k.transpose(-2, -1)) / hd.sqrt()).softmax(-1, Kind::Float);
        let pd = if train && self.p_drop > 0.0 { crate::rng::dropout(&p, self.p_drop) } else { p.shallow_clone() };
        (pd.matmul(v), p)
    }

    /// Context projection, computed once per observation: (B, L, Dc) -> (B, L, D).
    pub fn embed_context(&self, context: &Tensor) -> Tensor {
        let l = context.size()[1];
        self.cond_emb.forward(context) + self.cond_pos.narrow(1, 0, l)
    }

    /// Whether the network was built with prefix conditioning.
    pub fn has_prefix(&self) -> bool {
        self.prefix_emb.is_some()
    }

    /// Action tokens: `input_emb(x) + pos_emb`; with a prefix, x takes the given rows and
    /// those rows' tokens get `prefix_emb` (the `velocity.onnx` graph does the same).
    fn action_tokens(&self, x_t: &Tensor, prefix: Option<&PrefixCond>) -> Tensor {
        match (prefix, &self.prefix_emb) {
            (Some(p), Some(e)) => {
                let m = p.mask.unsqueeze(-1);
                let x = x_t * (1.0 - &m) + &p.actions * &m;
                self.input_emb.forward(&x) + &self.pos_emb + m * e
            }
            _ => self.input_emb.forward(x_t) + &self.pos_emb,
        }
    }

    /// Velocity for (B,T,Da) x_t, (B,) t, (B,) target_t and the embedded context (B,L,D).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(&self, x_t: &Tensor, t: &Tensor, target_t: &Tensor, ctx: &Tensor, prefix: Option<&PrefixCond>, train: bool, mut rec: Option<&mut Recorder>) -> Tensor {
        let c = self.adaptor.forward(&Tensor::cat(&[self.t_enc.forward(t), self.tt_enc.forward(target_t)], -1));
        let sc = c.silu();
        let mut x = self.action_tokens(x_t, prefix);
        let d = self.d;
        if let Some(r) = rec.as_deref_mut() {
            r.gates = (0..self.blocks.len()).map(|_| Vec::new()).collect();
            r.attn.clear();
        }
        for (i, b) in self.blocks.iter().enumerate() {
            let m = b.ada.forward(&sc).unsqueeze(1).chunk(9, -1);
            let modulate = |y: &Tensor, sh: &Tensor, scl: &Tensor| y * (scl + 1.0) + sh;
            // self-attention
            let h = modulate(&ln_plain(&x, d), &m[0], &m[1]);
            let qkv = h.linear(&b.sa.in_w, Some(&b.sa.in_b)).chunk(3, -1);
            let (o, _) = self.attend(&self.heads(&qkv[0]), &self.heads(&qkv[1]), &self.heads(&qkv[2]), train);
            let o = self.apply_gate(o, &b.sa.gate, &h, &mut rec, i);
            x = x + &m[2] * b.sa.out.forward(&self.merge(&o));
            // cross-attention
            let h = modulate(&ln_plain(&x, d), &m[3], &m[4]);
            let mut q = self.heads(&b.ca.q.forward(&h));
            let kv = b.ca.kv.forward(ctx).chunk(2, -1);
            let mut k = self.heads(&kv[0]);
            let mut v = self.heads(&kv[1]);
            if let (Some(qn), Some(kn)) = (&b.ca.q_norm, &b.ca.k_norm) {
                q = qn.forward(&q);
                k = kn.forward(&k);
            }
            if let (Some(theta), Some(idx)) = (&b.ca.modality_gate, &self.token_modality) {
                // (L, H) -> (1, H, L, 1)
                let g = theta.sigmoid().index_select(0, idx).transpose(0, 1).unsqueeze(0).unsqueeze(-1);
                v = v * g;
            }
            let (o, p) = self.attend(&q, &k, &v, train);
            if let Some(r) = rec.as_deref_mut() {
                if r.want_attn {
                    r.attn.push(if r.attn_grad { p.shallow_clone() } else { p.detach() });
                }
            }
            let o = self.apply_gate(o, &b.ca.gate, &h, &mut rec, i);
            x = x + &m[5] * b.ca.proj.forward(&self.merge(&o));
            // MLP
            let h = modulate(&ln_plain(&x, d), &m[6], &m[7]);
            x = x + &m[8] * b.fc2.forward(&b.fc1.forward(&h).gelu("tanh"));
        }
        let y = x.rms_norm([d], Some(&self.norm_final), 1e-6);
        match &self.head {
            FinalHead::Single { fc1, fc2 } => fc2.forward(&fc1.forward(&y).gelu("tanh")),
            FinalHead::Experts(h) => h.forward(&y, &h.alpha(ctx)),
        }
    }

    /// The expert router, when the network has one (`model.experts`).
    pub fn experts(&self) -> Option<&ExpertHeads> {
        match &self.head {
            FinalHead::Experts(h) => Some(h),
            FinalHead::Single { .. } => None,
        }
    }

    /// Modality gates gamma[layer][modality][head] (empty when absent).
    pub fn modality_gates(&self) -> Vec<Vec<Vec<f32>>> {
        self.blocks
            .iter()
            .filter_map(|b| b.ca.modality_gate.as_ref())
            .map(|th| {
                let g = th.detach().sigmoid().to_device(tch::Device::Cpu);
                let s = g.size();
                let flat: Vec<f32> = Vec::try_from(g.flatten(0, -1)).unwrap_or_default();
                flat.chunks(s[1] as usize).map(|c| c.to_vec()).collect()
            })
            .collect()
    }
}
