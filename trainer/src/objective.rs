//! Consistency flow training objective (MANIFLOW.md section 4).

use crate::config::{TargetTMode, TimeSampler, TrainConfig};
use crate::model::ditx::{PrefixCond, Recorder};
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
    /// Flow-branch squared error on the first generated row (the row right after
    /// the prefix; row `To - 1` when there is none), mean over examples and joints.
    pub loss_prefix_next: f64,
}

/// Entries of [`Loss::scalars`].
pub const N_PARTS: usize = 5;

pub struct Loss {
    /// bc_loss = loss_flow + loss_ct (a scalar tensor with grad).
    pub total: Tensor,
    /// [loss_flow, loss_ct, v_flow_rms, v_ct_rms, loss_prefix_next] on the training device (0 for
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
    /// From [loss_flow, loss_ct, v_flow_rms, v_ct_rms, loss_prefix_next].
    pub fn from_slice(v: &[f64]) -> LossParts {
        let g = |i: usize| v.get(i).copied().unwrap_or(f64::NAN);
        LossParts { loss_flow: g(0), loss_ct: g(1), v_flow_rms: g(2), v_ct_rms: g(3), loss_prefix_next: g(4) }
    }
}

/// Per-example prefixes for a branch of `n` examples: d ~ U{0..=d_max}, the chunk's
/// executed rows `first..first + d` given clean. Returns the condition and the
/// (n, T, 1) weights of the rows that count in the loss (1 - mask) and of the first
/// generated row.
fn draw_prefix(x1: &Tensor, d_max: usize, first: i64) -> (PrefixCond, Tensor, Tensor) {
    let s = x1.size();
    let (n, t) = (s[0], s[1]);
    let dev = x1.device();
    let d = crate::rng::randint(0, d_max as i64 + 1, &[n], dev).view([n, 1]);
    let rows = Tensor::arange(t, (Kind::Int64, dev)).view([1, t]);
    let below: Tensor = rows.lt_tensor(&(&d + first));
    let mask: Tensor = rows.ge(first).logical_and(&below).to_kind(Kind::Float);
    let next = rows.eq_tensor(&(&d + first)).to_kind(Kind::Float).unsqueeze(-1);
    let keep: Tensor = (mask.ones_like() - &mask).unsqueeze(-1);
    (PrefixCond { actions: x1.shallow_clone(), mask }, keep, next)
}

/// Mean of `sq` (n, T, Da) over the rows weighted by `w` (n, T, 1).
fn masked_mean(sq: &Tensor, w: &Tensor) -> Tensor {
    let da = sq.size()[2] as f64;
    (sq * w).sum(Kind::Float) / (w.sum(Kind::Float) * da).clamp_min(1.0)
}

/// `context` = encoder output of the whole batch (with grad when training),
/// `x1` = normalised action chunks (B, T, Da). `ema` is the target network
/// (eval mode, no grad). Split: first floor(r B) flow, the rest consistency.
/// With `prefix_d_max > 0` (and a prefix-conditioned `net`), each example continues a
/// clean prefix of d ~ U{0..=d_max} rows from row `n_obs_steps - 1`, and those rows
/// are left out of both losses; the EMA target sees the same prefix.
#[allow(clippy::too_many_arguments)]
pub fn consistency_flow_loss(
    net: &ManiFlowNet,
    ema: &ManiFlowNet,
    context: &Tensor,
    x1: &Tensor,
    tc: &TrainConfig,
    (n_obs_steps, prefix_d_max): (usize, usize),
    train: bool,
    rec: Option<&mut Recorder>,
) -> Loss {
    let b = x1.size()[0];
    let opts = (Kind::Float, x1.device());
    let nf = ((b as f64) * tc.flow_batch_ratio).floor() as i64;
    let nc = b - nf;
    let absolute = tc.target_t == TargetTMode::Absolute;
    let d_max = net.ditx.has_prefix().then_some(prefix_d_max).unwrap_or(0);
    let first = n_obs_steps.saturating_sub(1) as i64;
    let mut terms: Vec<Tensor> = Vec::new();
    let zero = || Tensor::zeros([], opts);
    let (mut lf, mut lc, mut rf, mut rc, mut lpn) = (zero(), zero(), zero(), zero(), zero());
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
        if d_max == 0 {
            let pred = net.velocity(&xt, &t, &tt, &cf, train, rec.as_deref_mut());
            let diff: Tensor = &pred - &target;
            let sq = diff.square();
            let l = sq.mean(Kind::Float);
            lpn = sq.detach().narrow(1, first, 1).mean(Kind::Float);
            lf = l.detach();
            rf = pred.detach().square().mean(Kind::Float).sqrt();
            terms.push(l);
        } else {
            let (cond, keep, next) = draw_prefix(&x1f, d_max, first);
            let pred = net.velocity_with_prefix(&xt, &t, &tt, &cf, Some(&cond), train, rec.as_deref_mut());
            let sq = (&pred - &target).square();
            let l = masked_mean(&sq, &keep);
            lpn = masked_mean(&sq.detach(), &next);
            lf = l.detach();
            rf = masked_mean(&pred.detach().square(), &keep).sqrt();
            terms.push(l);
        }
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
        let prefix = (d_max > 0).then(|| draw_prefix(&x1c, d_max, first));
        let cond = prefix.as_ref().map(|(c, _, _)| c);
        let target = tch::no_grad(|| {
            let ve = ema.velocity_with_prefix(&xt2, &t2, &tt_e, &cc.detach(), cond, false, None);
            let x1_hat = &xt2 + (1.0 - &t2b) * ve;
            (x1_hat - &xt) / (1.0 - &tb)
        });
        let pred = net.velocity_with_prefix(&xt, &t, &tt, &cc, cond, train, None);
        let diff: Tensor = &pred - &target;
        let (l, r) = match &prefix {
            None => (diff.square().mean(Kind::Float), pred.detach().square().mean(Kind::Float).sqrt()),
            Some((_, keep, _)) => (masked_mean(&diff.square(), keep), masked_mean(&pred.detach().square(), keep).sqrt()),
        };
        lc = l.detach();
        rc = r;
        terms.push(l);
    }
    let total = match terms.len() {
        0 => Tensor::zeros([], opts),
        1 => terms.remove(0),
        _ => &terms[0] + &terms[1],
    };
    Loss { total, scalars: Tensor::stack(&[lf, lc, rf, rc, lpn], 0) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::BenchModel;
    use crate::config::{Config, PrefixConfig};
    use crate::cuda::Autocast;
    use crate::model::ditx::PrefixCond;
    use tch::Device;

    /// A small so101-cpu: 1 layer x 32, horizon 8, one 32x32 camera, 2-d actions.
    fn tiny(d_max: Option<usize>) -> Config {
        let mut c = crate::presets::load("so101-cpu").unwrap();
        let m = &mut c.model;
        (m.horizon, m.n_obs_steps, m.n_action_steps, m.action_dim) = (8, 1, 4, 2);
        (m.n_layer, m.n_head, m.n_emb, m.time_embed_dim) = (1, 2, 32, 16);
        m.p_drop_attn = 0.0;
        m.prefix = d_max.map(|d| PrefixConfig { d_max: Some(d), control_hz: 30.0, inference_ms: 15.0 });
        c.encoder.cameras.truncate(1);
        c.encoder.image_size = [32, 32];
        c.encoder.cond_dim = 32;
        c.train.batch_size = 64;
        c.train.lr = 3e-3;
        c.validate().unwrap();
        c
    }

    /// (B, T, 2) constant rows at a random level per example and dimension: nothing in
    /// the observation tells the level, one given row does.
    fn levels(b: i64, t: i64) -> Tensor {
        ((Tensor::rand([b, 1, 2], (Kind::Float, Device::Cpu)) - 0.5) * 1.6).expand([b, t, 2], true).contiguous()
    }

    fn prefix_of(x1: &Tensor, d: i64) -> PrefixCond {
        let s = x1.size();
        let rows = Tensor::arange(s[1], (Kind::Int64, Device::Cpu)).view([1, s[1]]);
        let mask = rows.lt(d).to_kind(Kind::Float).expand([s[0], s[1]], true).contiguous();
        PrefixCond { actions: x1.shallow_clone(), mask }
    }

    #[test]
    fn prefix_conditioned_toy_policy_continues_the_given_prefix() {
        let _rng = crate::tch_rng_lock();
        tch::manual_seed(0);
        let cfg = tiny(Some(3));
        let mut bm = BenchModel::new(&cfg, Device::Cpu).unwrap();
        assert!(bm.net.ditx.has_prefix());
        for _ in 0..500 {
            bm.x1 = levels(64, 8);
            let (loss, _) = bm.step(Autocast::Off);
            assert!(loss.is_finite());
        }
        let _g = tch::no_grad_guard();
        tch::manual_seed(7);
        let x1 = levels(64, 8);
        let ctx = bm.ema.encode(&bm.obs);
        let noise = x1.randn_like();
        let err = |d: i64, steps: usize| -> f64 {
            let p = prefix_of(&x1, d);
            let x = bm.ema.sample_with_prefix(&ctx, &noise, (d > 0).then_some(&p), steps, false);
            let gen = x.narrow(1, d, 8 - d);
            let truth = x1.narrow(1, d, 8 - d);
            if d > 0 {
                // the prefix rows are returned exactly
                assert_eq!(x.narrow(1, 0, d), x1.narrow(1, 0, d));
            }
            (gen - truth).square().mean(Kind::Float).double_value(&[])
        };
        let (free, one, three, two_steps) = (err(0, 1), err(1, 1), err(3, 1), err(3, 2));
        eprintln!("MSE of the generated rows: no prefix {free:.5}; 1-row prefix {one:.5}; 3-row prefix {three:.5} (1 step), {two_steps:.5} (2 steps)");
        // Without a prefix the level is unknown (MSE ~ its variance, 0.21); given rows
        // fix it, and the generated rows must continue them.
        assert!(free > 0.1, "no-prefix error {free} is suspiciously small");
        for (what, e) in [("1 row", one), ("3 rows", three), ("3 rows, 2 steps", two_steps)] {
            assert!(e < 0.05 * free, "prefix of {what} not continued: MSE {e} (no prefix {free})");
        }
    }

    #[test]
    fn zero_length_prefix_is_bit_identical_to_no_prefix() {
        let _rng = crate::tch_rng_lock();
        tch::manual_seed(0);
        let cfg = tiny(Some(3));
        let bm = BenchModel::new(&cfg, Device::Cpu).unwrap();
        let _g = tch::no_grad_guard();
        // Non-zero prefix embedding and output layer, so a leak would show.
        for (n, mut v) in bm.vs.variables() {
            if n.ends_with("prefix_emb") || n.contains("final_layer.ffn_final.fc2") || n.contains("adaLN") {
                v.copy_(&(v.randn_like() * 0.5));
            }
        }
        let x1 = levels(4, 8);
        let x = x1.randn_like();
        let t = Tensor::rand([4], (Kind::Float, Device::Cpu));
        let ctx = bm.net.encode(&bm.obs.narrow(0, 4));
        let plain = bm.net.velocity(&x, &t, &t, &ctx, false, None);
        let d0 = bm.net.velocity_with_prefix(&x, &t, &t, &ctx, Some(&prefix_of(&(x1 * 1e3), 0)), false, None);
        assert!(plain.abs().sum(Kind::Float).double_value(&[]) > 0.0);
        assert_eq!(plain, d0, "d = 0 must reproduce the outputs without a prefix bit for bit");
        let d2 = bm.net.velocity_with_prefix(&x, &t, &t, &ctx, Some(&prefix_of(&x, 2)), false, None);
        assert_ne!(plain, d2, "the prefix flag must change the outputs");
    }

    #[test]
    fn no_prefix_config_builds_todays_network() {
        let _rng = crate::tch_rng_lock();
        // d_max = 0 (no [model.prefix]) adds no parameter, and the prefix parameter of a
        // prefix config does not shift the initial values of the others.
        let cfg = tiny(None);
        let bm = BenchModel::new(&cfg, Device::Cpu).unwrap();
        assert!(!bm.net.ditx.has_prefix());
        assert!(bm.vs.variables().keys().all(|k| !k.contains("prefix")));
        let with = BenchModel::new(&tiny(Some(2)), Device::Cpu).unwrap();
        assert_eq!(with.vs.variables().len(), bm.vs.variables().len() + 1);
        // Shared parameters start from the same values (prefix_emb is created last).
        let (a, b) = (bm.vs.variables(), with.vs.variables());
        for (k, v) in &a {
            assert_eq!(v, &b[k], "{k} differs between the configs with and without prefix");
        }
    }
}
