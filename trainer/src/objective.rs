//! Consistency flow training objective (MANIFLOW.md section 4).

use crate::config::{TargetTMode, TimeSampler, TrainConfig};
use crate::model::ditx::Recorder;
use crate::model::ManiFlowNet;
use tch::{Kind, Tensor};

/// Flow-branch time samples in [0, 1).
pub fn sample_t(sampler: TimeSampler, n: i64, opts: (Kind, tch::Device)) -> Tensor {
    let u = || crate::rng::rand(&[n], opts);
    let t = match sampler {
        // 0.999 * Beta(1, 1.5) sampled as 1 - V^(2/3)
        TimeSampler::Beta => return (1.0 - u().pow_tensor_scalar(2.0 / 3.0)) * 0.999,
        TimeSampler::Uniform => u(),
        // cosmap (rectified-flow "cosmap"): t = 1 - 1 / (tan(pi/2 u) + 1)
        TimeSampler::Cosmap => {
            let v = u() * (std::f64::consts::FRAC_PI_2 * 0.999);
            1.0 - 1.0 / (v.tan() + 1.0)
        }
        // logit-normal, m = 0, s = 1
        TimeSampler::LogitNormal => crate::rng::randn(&[n], opts).sigmoid(),
        // mode sampling (SD3), s = 1.29: t = 1 - u - s (cos^2(pi u / 2) - 1 + u)
        TimeSampler::Mode => {
            let v = u();
            let c = (&v * std::f64::consts::FRAC_PI_2).cos().square();
            let f: Tensor = v.ones_like() - &v - (c - 1.0 + &v) * 1.29;
            f.clamp(0.0, 1.0)
        }
    };
    t.clamp(0.0, 0.999)
}

/// Per-step scalar outputs of the objective.
#[derive(Debug, Clone, Copy, Default)]
pub struct LossParts {
    pub loss_flow: f64,
    pub loss_ct: f64,
    pub v_flow_rms: f64,
    pub v_ct_rms: f64,
}

pub struct Loss {
    /// bc_loss = loss_flow + loss_ct (a scalar tensor with grad).
    pub total: Tensor,
    /// [loss_flow, loss_ct, v_flow_rms, v_ct_rms] on the training device (0 for
    /// an empty branch), read back together with the step's other scalars.
    pub scalars: Tensor,
}

impl Loss {
    /// The scalars on the host (one copy).
    pub fn parts(&self) -> LossParts {
        let v = Vec::<f64>::try_from(self.scalars.to_kind(Kind::Double).to_device(tch::Device::Cpu)).unwrap_or_default();
        LossParts::from_slice(&v)
    }
}

impl LossParts {
    /// From [loss_flow, loss_ct, v_flow_rms, v_ct_rms].
    pub fn from_slice(v: &[f64]) -> LossParts {
        let g = |i: usize| v.get(i).copied().unwrap_or(f64::NAN);
        LossParts { loss_flow: g(0), loss_ct: g(1), v_flow_rms: g(2), v_ct_rms: g(3) }
    }
}

/// `context` = encoder output of the whole batch (with grad when training),
/// `x1` = normalised action chunks (B, T, Da). `ema` is the target network
/// (eval mode, no grad). Split: first floor(r B) flow, the rest consistency.
pub fn consistency_flow_loss(
    net: &ManiFlowNet,
    ema: &ManiFlowNet,
    context: &Tensor,
    x1: &Tensor,
    tc: &TrainConfig,
    train: bool,
    rec: Option<&mut Recorder>,
) -> Loss {
    let b = x1.size()[0];
    let opts = (Kind::Float, x1.device());
    let nf = ((b as f64) * tc.flow_batch_ratio).floor() as i64;
    let nc = b - nf;
    let absolute = tc.target_t == TargetTMode::Absolute;
    let mut terms: Vec<Tensor> = Vec::new();
    let zero = || Tensor::zeros([], opts);
    let (mut lf, mut lc, mut rf, mut rc) = (zero(), zero(), zero(), zero());
    let mut rec = rec;
    if nf > 0 {
        let x1f = x1.narrow(0, 0, nf);
        let cf = context.narrow(0, 0, nf);
        let t = sample_t(tc.time_sampler, nf, opts);
        let x0 = crate::rng::randn_like(&x1f);
        let tb = t.view([nf, 1, 1]);
        let xt = (1.0 - &tb) * &x0 + &tb * &x1f;
        let target = &x1f - &x0;
        let tt = if absolute { t.shallow_clone() } else { Tensor::zeros([nf], opts) };
        let pred = net.velocity(&xt, &t, &tt, &cf, train, rec.as_deref_mut());
        let diff: Tensor = &pred - &target;
        let l = diff.square().mean(Kind::Float);
        lf = l.detach();
        rf = pred.detach().square().mean(Kind::Float).sqrt();
        terms.push(l);
    }
    if nc > 0 {
        let x1c = x1.narrow(0, nf, nc);
        let cc = context.narrow(0, nf, nc);
        let k = crate::rng::randint(0, tc.ct_discrete_steps as i64, &[nc], x1.device());
        let t = k.to_kind(Kind::Float) / tc.ct_discrete_steps as f64;
        let dt = crate::rng::rand(&[nc], opts);
        let t2 = (&t + &dt).clamp_max(1.0);
        let x0 = crate::rng::randn_like(&x1c);
        let tb = t.view([nc, 1, 1]);
        let t2b = t2.view([nc, 1, 1]);
        let xt = (1.0 - &tb) * &x0 + &tb * &x1c;
        let xt2 = (1.0 - &t2b) * &x0 + &t2b * &x1c;
        let (tt_e, tt) = if absolute { (&t2 + &dt, &t + &dt) } else { (dt.shallow_clone(), dt.shallow_clone()) };
        let target = tch::no_grad(|| {
            let ve = ema.velocity(&xt2, &t2, &tt_e, &cc.detach(), false, None);
            let x1_hat = &xt2 + (1.0 - &t2b) * ve;
            (x1_hat - &xt) / (1.0 - &tb)
        });
        let pred = net.velocity(&xt, &t, &tt, &cc, train, None);
        let diff: Tensor = &pred - &target;
        let l = diff.square().mean(Kind::Float);
        lc = l.detach();
        rc = pred.detach().square().mean(Kind::Float).sqrt();
        terms.push(l);
    }
    let total = match terms.len() {
        0 => Tensor::zeros([], opts),
        1 => terms.remove(0),
        _ => &terms[0] + &terms[1],
    };
    Loss { total, scalars: Tensor::stack(&[lf, lc, rf, rc], 0) }
}
