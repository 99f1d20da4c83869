//! Small building blocks on raw `tch` tensors, with the initialisations of
//! docs/MODEL.md. Parameter names are the PyTorch ones (`weight`, `bias`).

use tch::nn::{Init, Path};
use tch::Tensor;

pub fn xavier(fan_in: i64, fan_out: i64) -> Init {
    let a = (6.0 / (fan_in + fan_out) as f64).sqrt();
    Init::Uniform { lo: -a, up: a }
}

pub const N002: Init = Init::Randn { mean: 0.0, stdev: 0.02 };

#[derive(Debug)]
pub struct Linear {
    pub w: Tensor,
    pub b: Option<Tensor>,
}

#[derive(Clone, Copy)]
pub enum LinInit {
    Xavier,
    Normal002,
    Zero,
}

impl Linear {
    pub fn new(p: &Path, name: &str, din: i64, dout: i64, bias: bool, init: LinInit) -> Linear {
        let p = p / name;
        let wi = match init {
            LinInit::Xavier => xavier(din, dout),
            LinInit::Normal002 => N002,
            LinInit::Zero => Init::Const(0.0),
        };
        let w = p.var("weight", &[dout, din], wi);
        let b = bias.then(|| {
            let bi = match init {
                LinInit::Normal002 => N002,
                _ => Init::Const(0.0),
            };
            p.var("bias", &[dout], bi)
        });
        Linear { w, b }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.w, self.b.as_ref())
    }
}

/// Conv2d without bias (ResNet), kaiming normal fan_out / relu.
#[derive(Debug)]
pub struct Conv {
    pub w: Tensor,
    pub stride: i64,
    pub pad: i64,
}

impl Conv {
    pub fn new(p: &Path, name: &str, cin: i64, cout: i64, k: i64, stride: i64, pad: i64) -> Conv {
        let fan_out = (cout * k * k) as f64;
        let std = (2.0 / fan_out).sqrt();
        let w = (p / name).var("weight", &[cout, cin, k, k], Init::Randn { mean: 0.0, stdev: std });
        Conv { w, stride, pad }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.conv2d(&self.w, None::<&Tensor>, [self.stride, self.stride], [self.pad, self.pad], [1, 1], 1)
    }
}

/// GroupNorm with C/16 groups, eps 1e-5, affine.
#[derive(Debug)]
pub struct GroupNorm {
    pub w: Tensor,
    pub b: Tensor,
    pub groups: i64,
}

impl GroupNorm {
    pub fn new(p: &Path, name: &str, c: i64) -> GroupNorm {
        let p = p / name;
        GroupNorm {
            w: p.var("weight", &[c], Init::Const(1.0)),
            b: p.var("bias", &[c], Init::Const(0.0)),
            groups: (c / 16).max(1),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.group_norm(self.groups, Some(&self.w), Some(&self.b), 1e-5, false)
    }
}

/// LayerNorm with affine parameters (qk norm, eps 1e-5).
#[derive(Debug)]
pub struct AffineLayerNorm {
    pub w: Tensor,
    pub b: Tensor,
    pub dim: i64,
    pub eps: f64,
}

impl AffineLayerNorm {
    pub fn new(p: &Path, name: &str, dim: i64, eps: f64) -> Self {
        let p = p / name;
        AffineLayerNorm {
            w: p.var("weight", &[dim], Init::Const(1.0)),
            b: p.var("bias", &[dim], Init::Const(0.0)),
            dim,
            eps,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.layer_norm([self.dim], Some(&self.w), Some(&self.b), self.eps, false)
    }
}

/// LayerNorm without affine parameters (adaLN blocks, eps 1e-6).
pub fn ln_plain(x: &Tensor, dim: i64) -> Tensor {
    x.layer_norm([dim], None::<&Tensor>, None::<&Tensor>, 1e-6, false)
}

/// Sinusoidal embedding of docs/MODEL.md: [sin(s f), cos(s f)], f_k = exp(-k ln(1e4)/(half-1)).
pub fn sin_emb(s: &Tensor, dim: i64) -> Tensor {
    let half = dim / 2;
    let k = Tensor::arange(half, (tch::Kind::Float, s.device()));
    let f = (k * (-(10000f64.ln()) / (half - 1) as f64)).exp();
    let arg = s.unsqueeze(-1) * f.unsqueeze(0);
    Tensor::cat(&[arg.sin(), arg.cos()], -1)
}
