//! LeRobot's ACT in `tch`, with LeRobot's state-dict names (`model.backbone.*`,
//! `model.encoder.layers.N.self_attn.in_proj_weight`, ...), so a LeRobot
//! `model.safetensors` loads here and ours loads in LeRobot (strictly).
//!
//! Layout follows `lerobot/policies/act/modeling_act.py` (0.6.x): ResNet
//! backbone with frozen BatchNorm (layer4 feature map), 1x1 input projection,
//! transformer encoder over [latent, robot_state, camera cells...], decoder of
//! `chunk_size` zero queries with learned positions, linear action head; the
//! VAE encoder over [cls, robot_state, actions] during training. Tensors are
//! batch-first here (LeRobot is sequence-first; the math is the same).
//! Attention is written out (not torch's fused MHA) so the decoder's
//! cross-attention probabilities are kept per head for seed 002's regulariser.

use super::config::ActModelConfig;
use tch::nn::{self, Init, Module, Path};
use tch::{Kind, Tensor};

fn uniform(b: f64) -> Init {
    Init::Uniform { lo: -b, up: b }
}

/// nn.Linear with PyTorch's default init, or Xavier-uniform weights (what
/// LeRobot's `_reset_parameters` gives the encoder and decoder).
fn linear(p: Path, din: i64, dout: i64, xavier: bool) -> nn::Linear {
    let b = 1.0 / (din as f64).sqrt();
    let ws = if xavier {
        uniform((6.0 / (din + dout) as f64).sqrt())
    } else {
        uniform(b)
    };
    nn::linear(
        p,
        din,
        dout,
        nn::LinearConfig {
            ws_init: ws,
            bs_init: Some(uniform(b)),
            bias: true,
        },
    )
}

/// torchvision `FrozenBatchNorm2d` (all four are buffers; eps 1e-5).
pub struct FrozenBn {
    w: Tensor,
    b: Tensor,
    rm: Tensor,
    rv: Tensor,
}

impl FrozenBn {
    fn new(p: Path, c: i64) -> Self {
        FrozenBn {
            w: p.ones_no_train("weight", &[c]),
            b: p.zeros_no_train("bias", &[c]),
            rm: p.zeros_no_train("running_mean", &[c]),
            rv: p.ones_no_train("running_var", &[c]),
        }
    }
    /// (scale, shift) per channel.
    pub fn affine(&self) -> (Tensor, Tensor) {
        let scale = &self.w * (&self.rv + 1e-5).rsqrt();
        let shift = &self.b - &self.rm * &scale;
        (scale, shift)
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        let (s, t) = self.affine();
        x * s.view([1, -1, 1, 1]) + t.view([1, -1, 1, 1])
    }
}

fn conv_w(p: &Path, name: &str, co: i64, ci: i64, k: i64) -> Tensor {
    // torchvision ResNet init: kaiming_normal_(mode="fan_out", nonlinearity="relu").
    p.var(
        name,
        &[co, ci, k, k],
        Init::Randn {
            mean: 0.0,
            stdev: (2.0 / (co * k * k) as f64).sqrt(),
        },
    )
}

struct BasicBlock {
    conv1: Tensor,
    bn1: FrozenBn,
    conv2: Tensor,
    bn2: FrozenBn,
    down: Option<(Tensor, FrozenBn)>,
    stride: i64,
}

impl BasicBlock {
    fn forward(&self, x: &Tensor) -> Tensor {
        let y = x.conv2d(
            &self.conv1,
            None::<Tensor>,
            [self.stride, self.stride],
            [1, 1],
            [1, 1],
            1,
        );
        let y = self.bn1.forward(&y).relu();
        let y = y.conv2d(&self.conv2, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1);
        let y = self.bn2.forward(&y);
        let idn = match &self.down {
            Some((w, bn)) => bn.forward(&x.conv2d(
                w,
                None::<Tensor>,
                [self.stride, self.stride],
                [0, 0],
                [1, 1],
                1,
            )),
            None => x.shallow_clone(),
        };
        (y + idn).relu()
    }
}

/// torchvision ResNet-18/34 up to layer4 (IntermediateLayerGetter), frozen BN.
pub struct Backbone {
    conv1: Tensor,
    bn1: FrozenBn,
    layers: Vec<Vec<BasicBlock>>,
}

pub fn backbone_blocks(name: &str) -> [usize; 4] {
    if name == "resnet34" {
        [3, 4, 6, 3]
    } else {
        [2, 2, 2, 2]
    }
}

impl Backbone {
    fn new(p: &Path, name: &str) -> Self {
        let conv1 = conv_w(&(p / "conv1"), "weight", 64, 3, 7);
        let bn1 = FrozenBn::new(p / "bn1", 64);
        let mut layers = Vec::new();
        let mut cin = 64;
        for (s, &nb) in backbone_blocks(name).iter().enumerate() {
            let cout = 64i64 << s;
            let mut blocks = Vec::new();
            for b in 0..nb {
                let q = p / format!("layer{}", s + 1) / b.to_string();
                let stride = if s > 0 && b == 0 { 2 } else { 1 };
                let down = (stride != 1 || cin != cout).then(|| {
                    let d = &q / "downsample";
                    (
                        conv_w(&(&d / "0"), "weight", cout, cin, 1),
                        FrozenBn::new(&d / "1", cout),
                    )
                });
                blocks.push(BasicBlock {
                    conv1: conv_w(&(&q / "conv1"), "weight", cout, cin, 3),
                    bn1: FrozenBn::new(&q / "bn1", cout),
                    conv2: conv_w(&(&q / "conv2"), "weight", cout, cout, 3),
                    bn2: FrozenBn::new(&q / "bn2", cout),
                    down,
                    stride,
                });
                cin = cout;
            }
            layers.push(blocks);
        }
        Backbone { conv1, bn1, layers }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let y = x.conv2d(&self.conv1, None::<Tensor>, [2, 2], [3, 3], [1, 1], 1);
        let mut y = self
            .bn1
            .forward(&y)
            .relu()
            .max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        for l in &self.layers {
            for b in l {
                y = b.forward(&y);
            }
        }
        y
    }
}

/// nn.MultiheadAttention's parameters (`in_proj_weight`, `in_proj_bias`, `out_proj`).
pub struct Mha {
    in_w: Tensor,
    in_b: Tensor,
    out: nn::Linear,
    heads: i64,
    d: i64,
}

impl Mha {
    fn new(p: &Path, d: i64, heads: i64, xavier_out: bool) -> Self {
        Mha {
            in_w: p.var(
                "in_proj_weight",
                &[3 * d, d],
                uniform((6.0 / (4 * d) as f64).sqrt()),
            ),
            in_b: p.var("in_proj_bias", &[3 * d], Init::Const(0.0)),
            out: {
                let l = linear(p / "out_proj", d, d, xavier_out);
                tch::no_grad(|| {
                    if let Some(b) = &l.bs {
                        let _ = b.shallow_clone().zero_();
                    }
                });
                l
            },
            heads,
            d,
        }
    }

    /// q (B, Lq, D), k and v (B, Lk, D); `pad` (B, Lk) true = ignore that key.
    /// Returns the output (B, Lq, D) and the probabilities (B, H, Lq, Lk) before dropout.
    fn forward(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        pad: Option<&Tensor>,
        dropout: f64,
        train: bool,
    ) -> (Tensor, Tensor) {
        let (d, h) = (self.d, self.heads);
        let hd = d / h;
        let proj = |x: &Tensor, i: i64| {
            let y = x.linear(
                &self.in_w.narrow(0, i * d, d),
                Some(&self.in_b.narrow(0, i * d, d)),
            );
            let s = y.size();
            y.view([s[0], s[1], h, hd]).transpose(1, 2)
        };
        let (qh, kh, vh) = (proj(q, 0), proj(k, 1), proj(v, 2));
        let mut scores = (qh / (hd as f64).sqrt()).matmul(&kh.transpose(-2, -1));
        if let Some(m) = pad {
            let s = m.size();
            scores = scores.masked_fill(&m.view([s[0], 1, 1, s[1]]), f64::NEG_INFINITY);
        }
        let p = scores.softmax(-1, Kind::Float);
        let o = p.dropout(dropout, train).matmul(&vh);
        let s = o.size();
        let o = o.transpose(1, 2).contiguous().view([s[0], s[2], d]);
        (self.out.forward(&o), p)
    }
}

fn activation(x: &Tensor, gelu: bool) -> Tensor {
    if gelu {
        x.gelu("none")
    } else {
        x.relu()
    }
}

/// `ACTEncoderLayer`.
struct EncLayer {
    attn: Mha,
    l1: nn::Linear,
    l2: nn::Linear,
    n1: nn::LayerNorm,
    n2: nn::LayerNorm,
}

/// `ACTDecoderLayer`.
struct DecLayer {
    self_attn: Mha,
    cross: Mha,
    l1: nn::Linear,
    l2: nn::Linear,
    n1: nn::LayerNorm,
    n2: nn::LayerNorm,
    n3: nn::LayerNorm,
}

fn ln(p: Path, d: i64) -> nn::LayerNorm {
    nn::layer_norm(p, vec![d], Default::default())
}

pub struct Act {
    pub cfg: ActModelConfig,
    pub state_dim: i64,
    pub action_dim: i64,
    pub n_cameras: usize,
    backbone: Backbone,
    encoder: Vec<EncLayer>,
    encoder_norm: Option<nn::LayerNorm>,
    decoder: Vec<DecLayer>,
    decoder_norm: nn::LayerNorm,
    vae: Option<Vae>,
    state_proj: nn::Linear,
    latent_proj: nn::Linear,
    img_proj: nn::Conv2D,
    pos_1d: Tensor,
    decoder_pos: Tensor,
    action_head: nn::Linear,
}

struct Vae {
    layers: Vec<EncLayer>,
    norm: Option<nn::LayerNorm>,
    cls: Tensor,
    state_proj: nn::Linear,
    action_proj: nn::Linear,
    latent_out: nn::Linear,
    pos: Tensor,
}

/// Inputs of one forward (normalised).
pub struct ActInput<'a> {
    /// (B, Ds)
    pub state: &'a Tensor,
    /// One (B, 3, H, W) per camera, normalised.
    pub images: &'a [Tensor],
    /// (B, chunk, Da) and (B, chunk) bool: the VAE's inputs (training only).
    pub action: Option<(&'a Tensor, &'a Tensor)>,
}

pub struct ActOutput {
    /// (B, chunk, Da) normalised.
    pub actions: Tensor,
    /// (mu, log_sigma_x2) of the VAE posterior when it ran.
    pub posterior: Option<(Tensor, Tensor)>,
    /// Decoder cross-attention probabilities per layer, (B, H, chunk, S).
    pub cross_attn: Vec<Tensor>,
    /// Encoder tokens: `n_1d` leading 1-D tokens (latent, robot_state), then camera cells.
    pub n_1d: usize,
    pub n_tokens: usize,
}

/// `create_sinusoidal_pos_embedding` (float64 table cast to float32).
pub fn sinusoid_1d(n: usize, d: usize) -> Vec<f32> {
    let mut t = vec![0f32; n * d];
    for p in 0..n {
        for j in 0..d {
            let a = p as f64 / 10000f64.powf(2.0 * (j / 2) as f64 / d as f64);
            t[p * d + j] = if j % 2 == 0 { a.sin() } else { a.cos() } as f32;
        }
    }
    t
}

/// `ACTSinusoidalPositionEmbedding2d(dim_model // 2)` for an (h, w) feature map,
/// as (h*w, dim_model) rows in (h, w) order, computed with the same float32 ops.
pub fn sinusoid_2d(h: i64, w: i64, dim_model: i64) -> Tensor {
    let dim = dim_model / 2;
    let opts = (Kind::Float, tch::Device::Cpu);
    let two_pi = 2.0 * std::f64::consts::PI;
    let not_mask = Tensor::ones([1, h, w], opts);
    let y = not_mask.cumsum(1, Kind::Float);
    let x = not_mask.cumsum(2, Kind::Float);
    let y = &y / (y.narrow(1, h - 1, 1) + 1e-6) * two_pi;
    let x = &x / (x.narrow(2, w - 1, 1) + 1e-6) * two_pi;
    let expo = Tensor::arange(dim, opts).floor_divide_scalar(2) * 2.0 / dim as f64;
    let inv = Tensor::from(10000f32).pow(&expo);
    let xr = x.unsqueeze(-1) / &inv;
    let yr = y.unsqueeze(-1) / &inv;
    let inter = |r: &Tensor| {
        let s = r.slice(3, 0, dim, 2).sin();
        let c = r.slice(3, 1, dim, 2).cos();
        Tensor::stack(&[s, c], -1).flatten(3, -1)
    };
    let pe = Tensor::cat(&[inter(&yr), inter(&xr)], 3); // (1, h, w, D)
    pe.view([h * w, dim_model])
}

impl Act {
    /// Builds the model under `root` (pass `vs.root() / "model"` for LeRobot names).
    pub fn new(
        root: &Path,
        cfg: &ActModelConfig,
        state_dim: usize,
        action_dim: usize,
        n_cameras: usize,
    ) -> Act {
        let d = cfg.dim_model as i64;
        let h = cfg.n_heads as i64;
        let ff = cfg.dim_feedforward as i64;
        let enc_layer = |p: Path, xavier: bool| EncLayer {
            attn: Mha::new(&(&p / "self_attn"), d, h, xavier),
            l1: linear(&p / "linear1", d, ff, xavier),
            l2: linear(&p / "linear2", ff, d, xavier),
            n1: ln(&p / "norm1", d),
            n2: ln(&p / "norm2", d),
        };
        let encoder = (0..cfg.n_encoder_layers)
            .map(|i| enc_layer(root / "encoder" / "layers" / i.to_string(), true))
            .collect();
        let decoder = (0..cfg.n_decoder_layers)
            .map(|i| {
                let p = root / "decoder" / "layers" / i.to_string();
                DecLayer {
                    self_attn: Mha::new(&(&p / "self_attn"), d, h, true),
                    cross: Mha::new(&(&p / "multihead_attn"), d, h, true),
                    l1: linear(&p / "linear1", d, ff, true),
                    l2: linear(&p / "linear2", ff, d, true),
                    n1: ln(&p / "norm1", d),
                    n2: ln(&p / "norm2", d),
                    n3: ln(&p / "norm3", d),
                }
            })
            .collect();
        let (sd, ad, ld) = (state_dim as i64, action_dim as i64, cfg.latent_dim as i64);
        let vae = cfg.use_vae.then(|| {
            let n = cfg.chunk_size + 2;
            let pos = root.zeros_no_train("vae_encoder_pos_enc", &[1, n as i64, d]);
            tch::no_grad(|| {
                let _ = pos.shallow_clone().copy_(
                    &Tensor::from_slice(&sinusoid_1d(n, cfg.dim_model)).view([1, n as i64, d]),
                );
            });
            Vae {
                layers: (0..cfg.n_vae_encoder_layers)
                    .map(|i| enc_layer(root / "vae_encoder" / "layers" / i.to_string(), false))
                    .collect(),
                norm: cfg.pre_norm.then(|| ln(root / "vae_encoder" / "norm", d)),
                cls: (root / "vae_encoder_cls_embed").var(
                    "weight",
                    &[1, d],
                    Init::Randn {
                        mean: 0.0,
                        stdev: 1.0,
                    },
                ),
                state_proj: linear(root / "vae_encoder_robot_state_input_proj", sd, d, false),
                action_proj: linear(root / "vae_encoder_action_input_proj", ad, d, false),
                latent_out: linear(root / "vae_encoder_latent_output_proj", d, 2 * ld, false),
                pos,
            }
        });
        Act {
            cfg: cfg.clone(),
            state_dim: sd,
            action_dim: ad,
            n_cameras,
            backbone: Backbone::new(&(root / "backbone"), &cfg.vision_backbone),
            encoder,
            encoder_norm: cfg.pre_norm.then(|| ln(root / "encoder" / "norm", d)),
            decoder,
            decoder_norm: ln(root / "decoder" / "norm", d),
            vae,
            state_proj: linear(root / "encoder_robot_state_input_proj", sd, d, false),
            latent_proj: linear(root / "encoder_latent_input_proj", ld, d, false),
            img_proj: nn::conv2d(
                root / "encoder_img_feat_input_proj",
                512,
                d,
                1,
                Default::default(),
            ),
            pos_1d: (root / "encoder_1d_feature_pos_embed").var(
                "weight",
                &[2, d],
                Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            ),
            decoder_pos: (root / "decoder_pos_embed").var(
                "weight",
                &[cfg.chunk_size as i64, d],
                Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            ),
            action_head: linear(root / "action_head", d, ad, false),
        }
    }

    /// One residual sub-layer as LeRobot arranges it: pre-norm `x + drop(f(norm(x)))`,
    /// post-norm `norm(x + drop(f(x)))`; `f` may return a side value (attention probabilities).
    fn sublayer<T>(
        &self,
        x: &Tensor,
        norm: &nn::LayerNorm,
        train: bool,
        f: impl FnOnce(&Tensor) -> (Tensor, T),
    ) -> (Tensor, T) {
        let p = self.cfg.dropout;
        if self.cfg.pre_norm {
            let (y, t) = f(&norm.forward(x));
            (x + y.dropout(p, train), t)
        } else {
            let (y, t) = f(x);
            (norm.forward(&(x + y.dropout(p, train))), t)
        }
    }

    /// linear2(dropout(activation(linear1(x)))).
    fn ffn(&self, l1: &nn::Linear, l2: &nn::Linear, x: &Tensor, train: bool) -> Tensor {
        let gelu = self.cfg.feedforward_activation == "gelu";
        l2.forward(&activation(&l1.forward(x), gelu).dropout(self.cfg.dropout, train))
    }

    /// `ACTEncoderLayer`: self-attention (q = k = x + pos, v = x), then the FFN.
    fn enc_layer(
        &self,
        l: &EncLayer,
        x: &Tensor,
        pos: &Tensor,
        pad: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        let p = self.cfg.dropout;
        let (x, _) = self.sublayer(x, &l.n1, train, |h| {
            let qk = h + pos;
            l.attn.forward(&qk, &qk, h, pad, p, train)
        });
        self.sublayer(&x, &l.n2, train, |h| (self.ffn(&l.l1, &l.l2, h, train), ()))
            .0
    }

    /// `ACTDecoderLayer`: self-attention, cross-attention to the encoder output
    /// (whose probabilities are returned), then the FFN.
    fn dec_layer(
        &self,
        l: &DecLayer,
        x: &Tensor,
        mem: &Tensor,
        dpos: &Tensor,
        epos: &Tensor,
        train: bool,
    ) -> (Tensor, Tensor) {
        let p = self.cfg.dropout;
        let (x, _) = self.sublayer(x, &l.n1, train, |h| {
            let qk = h + dpos;
            l.self_attn.forward(&qk, &qk, h, None, p, train)
        });
        let (x, probs) = self.sublayer(&x, &l.n2, train, |h| {
            l.cross
                .forward(&(h + dpos), &(mem + epos), mem, None, p, train)
        });
        let (x, _) = self.sublayer(&x, &l.n3, train, |h| (self.ffn(&l.l1, &l.l2, h, train), ()));
        (x, probs)
    }

    /// The latent: the VAE posterior sample in training (with actions), zeros otherwise.
    fn latent(&self, inp: &ActInput, b: i64, train: bool) -> (Tensor, Option<(Tensor, Tensor)>) {
        let ld = self.cfg.latent_dim as i64;
        let dev = inp.state.device();
        match (&self.vae, inp.action, train) {
            (Some(v), Some((act, is_pad)), true) => {
                let d = self.cfg.dim_model as i64;
                let cls = v.cls.unsqueeze(0).expand([b, 1, d], false);
                let st = v.state_proj.forward(inp.state).unsqueeze(1);
                let ac = v.action_proj.forward(act);
                let mut x = Tensor::cat(&[cls, st, ac], 1);
                let pad = Tensor::cat(
                    &[
                        Tensor::zeros([b, 2], (Kind::Bool, dev)),
                        is_pad.to_kind(Kind::Bool),
                    ],
                    1,
                );
                let pos = v.pos.detach();
                for l in &v.layers {
                    x = self.enc_layer(l, &x, &pos, Some(&pad), train);
                }
                if let Some(n) = &v.norm {
                    x = n.forward(&x);
                }
                let params = v.latent_out.forward(&x.select(1, 0));
                let mu = params.narrow(1, 0, ld);
                let lsx2 = params.narrow(1, ld, ld);
                let z = &mu + (&lsx2 / 2.0).exp() * mu.randn_like();
                (z, Some((mu, lsx2)))
            }
            _ => (Tensor::zeros([b, ld], (Kind::Float, dev)), None),
        }
    }

    pub fn forward(&self, inp: &ActInput, train: bool) -> ActOutput {
        let b = inp.state.size()[0];
        let d = self.cfg.dim_model as i64;
        let (z, posterior) = self.latent(inp, b, train);
        let mut tokens = vec![
            self.latent_proj.forward(&z).unsqueeze(1),
            self.state_proj.forward(inp.state).unsqueeze(1),
        ];
        let mut pos = vec![self.pos_1d.shallow_clone()];
        for img in inp.images {
            let f = self.backbone.forward(img);
            let s = f.size();
            let (fh, fw) = (s[2], s[3]);
            let pe = sinusoid_2d(fh, fw, d).to_device(f.device());
            let f = self.img_proj.forward(&f); // (B, D, h, w)
            tokens.push(f.flatten(2, 3).transpose(1, 2)); // (B, h*w, D)
            pos.push(pe);
        }
        let mut x = Tensor::cat(&tokens, 1);
        let n_tokens = x.size()[1] as usize;
        let epos = Tensor::cat(&pos, 0).unsqueeze(0);
        for l in &self.encoder {
            x = self.enc_layer(l, &x, &epos, None, train);
        }
        if let Some(n) = &self.encoder_norm {
            x = n.forward(&x);
        }
        let c = self.cfg.chunk_size as i64;
        let mut y = Tensor::zeros([b, c, d], (Kind::Float, x.device()));
        let dpos = self.decoder_pos.unsqueeze(0);
        let mut cross = Vec::new();
        for l in &self.decoder {
            let (o, p) = self.dec_layer(l, &y, &x, &dpos, &epos, train);
            y = o;
            cross.push(p);
        }
        let y = self.decoder_norm.forward(&y);
        ActOutput {
            actions: self.action_head.forward(&y),
            posterior,
            cross_attn: cross,
            n_1d: 2,
            n_tokens,
        }
    }
}

/// LeRobot's loss: L1 masked by `action_is_pad` (mean over every element) and
/// the VAE's KL divergence (sum over the latent, mean over the batch).
pub fn l1_kld(out: &ActOutput, target: &Tensor, is_pad: &Tensor) -> (Tensor, Option<Tensor>) {
    let keep = is_pad.logical_not().unsqueeze(-1).to_kind(Kind::Float);
    let l1 = ((&out.actions - target).abs() * keep).mean(Kind::Float);
    let kld = out.posterior.as_ref().map(|(mu, lsx2)| {
        ((lsx2 + 1.0 - mu.square() - lsx2.exp()) * -0.5)
            .sum_dim_intlist(-1, false, Kind::Float)
            .mean(Kind::Float)
    });
    (l1, kld)
}
