//! The attention regulariser of seed 002 (METRICS.md "ACT"), shared by ACT's
//! decoder cross-attention and DiTX's cross-attention.
//!
//! Given cross-attention probabilities `P` (B, H, Q, L) of one or more layers
//! (kept per head, never averaged) and which keys are "state" and which are
//! "vision":
//!
//! - `state_ratio  = sum(P[..., state]) / sum(P)`, `vision_ratio` likewise
//!   (they sum to 1 when every key is one or the other);
//! - ratio penalty: `ReLU(state_ratio - tau)` (`mode = "hard"`) or smooth-L1
//!   with `beta` beyond tau (`mode = "smooth_l1"`), zero below tau;
//! - optional lower bound: `+ lower_bound_weight * ReLU(min_state_ratio - state_ratio)`,
//!   which pushes the ratio back up when it falls under `min_state_ratio`. (The
//!   seed's sketch writes this term with a minus sign, which would push the
//!   ratio further down; we use the sign that does what the seed says it wants.)
//! - entropy bonus: `- entropy_weight * H(P_vision) / ln(n_vision)`, where
//!   `P_vision` is the vision part of each query's row renormalised to sum 1;
//! - the loss is averaged over layers and enters the objective as
//!   `lambda(step) * attention_loss`, lambda ramping linearly from 0 over
//!   `warmup_steps` after `start_step`.

use serde::{Deserialize, Serialize};
use std::ops::Range;
use tch::{Kind, Tensor};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RatioMode {
    /// ReLU(state_ratio - tau).
    #[default]
    Hard,
    /// smooth_l1(state_ratio, tau; beta) when state_ratio > tau, else 0.
    SmoothL1,
}

/// `[attention_loss]` in a training config. Off by default.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AttnRegConfig {
    #[serde(default)]
    pub enabled: bool,
    /// lambda: weight of `attention_loss` in the total loss.
    #[serde(default = "d_weight")]
    pub weight: f64,
    /// tau: the state-attention share above which the ratio is penalised.
    #[serde(default = "d_tau")]
    pub tau: f64,
    #[serde(default)]
    pub mode: RatioMode,
    /// beta of the smooth-L1 mode.
    #[serde(default = "d_beta")]
    pub smooth_beta: f64,
    /// alpha: weight of the (normalised) vision-attention entropy bonus.
    #[serde(default = "d_entropy")]
    pub entropy_weight: f64,
    /// Lower bound on the state share (0 = off).
    #[serde(default)]
    pub min_state_ratio: f64,
    /// Weight of the lower-bound penalty (the seed uses 0.5).
    #[serde(default = "d_lower")]
    pub lower_bound_weight: f64,
    /// lambda is 0 before this step ...
    #[serde(default)]
    pub start_step: u64,
    /// ... then ramps linearly to `weight` over this many steps (0 = at once).
    #[serde(default)]
    pub warmup_steps: u64,
}

fn d_weight() -> f64 {
    0.01
}
fn d_tau() -> f64 {
    0.3
}
fn d_beta() -> f64 {
    0.1
}
fn d_entropy() -> f64 {
    0.5
}
fn d_lower() -> f64 {
    0.5
}

impl Default for AttnRegConfig {
    fn default() -> Self {
        AttnRegConfig {
            enabled: false,
            weight: d_weight(),
            tau: d_tau(),
            mode: RatioMode::Hard,
            smooth_beta: d_beta(),
            entropy_weight: d_entropy(),
            min_state_ratio: 0.0,
            lower_bound_weight: d_lower(),
            start_step: 0,
            warmup_steps: 0,
        }
    }
}

impl AttnRegConfig {
    pub fn validate(&self) -> Result<(), String> {
        let err = |f: &str, m: &str| Err(format!("field `attention_loss.{f}` {m}"));
        if !(self.weight.is_finite() && self.weight >= 0.0) {
            return err("weight", "must be a finite number >= 0");
        }
        if !(0.0..=1.0).contains(&self.tau) {
            return err("tau", "must be in [0, 1]");
        }
        if !(0.0..=1.0).contains(&self.min_state_ratio)
            || (self.min_state_ratio > 0.0 && self.min_state_ratio >= self.tau)
        {
            return err("min_state_ratio", "must be in [0, tau)");
        }
        if !(self.smooth_beta > 0.0) {
            return err("smooth_beta", "must be > 0");
        }
        if !(self.entropy_weight.is_finite() && self.entropy_weight >= 0.0) {
            return err("entropy_weight", "must be a finite number >= 0");
        }
        Ok(())
    }

    /// lambda at optimiser step `step` (1-based).
    pub fn lambda(&self, step: u64) -> f64 {
        if !self.enabled || step < self.start_step {
            return 0.0;
        }
        if self.warmup_steps == 0 {
            return self.weight;
        }
        let k = (step - self.start_step) as f64 / self.warmup_steps as f64;
        self.weight * k.min(1.0)
    }
}

/// The regulariser's value and the monitored ratios of one forward.
pub struct AttnReg {
    /// The (unweighted) attention loss, with grad. Zero when there are no layers.
    pub loss: Tensor,
    pub state_ratio: f64,
    pub vision_ratio: f64,
    /// Mean normalised entropy of the renormalised vision attention (0..1).
    pub vision_entropy: f64,
}

fn mass(p: &Tensor, keys: &[Range<usize>]) -> Tensor {
    let mut m: Option<Tensor> = None;
    for r in keys {
        if r.end > r.start {
            let s = p
                .narrow(-1, r.start as i64, (r.end - r.start) as i64)
                .sum(Kind::Float);
            m = Some(match m {
                Some(a) => a + s,
                None => s,
            });
        }
    }
    m.unwrap_or_else(|| Tensor::zeros([], (Kind::Float, p.device())))
}

/// Regulariser over layers' probabilities `probs` (each (B, H, Q, L)), with the
/// key ranges that count as state and as vision.
pub fn attention_regularizer(
    probs: &[Tensor],
    state: &[Range<usize>],
    vision: &[Range<usize>],
    cfg: &AttnRegConfig,
) -> AttnReg {
    let n = probs.len();
    if n == 0 {
        return AttnReg {
            loss: Tensor::zeros([], (Kind::Float, tch::Device::Cpu)),
            state_ratio: f64::NAN,
            vision_ratio: f64::NAN,
            vision_entropy: f64::NAN,
        };
    }
    let mut loss: Option<Tensor> = None;
    let (mut sr, mut vr, mut ent) = (0.0, 0.0, 0.0);
    for p in probs {
        let total = p.sum(Kind::Float);
        let s_ratio = mass(p, state) / &total;
        let v_ratio = mass(p, vision) / &total;
        let ratio_loss = match cfg.mode {
            RatioMode::Hard => (&s_ratio - cfg.tau).relu(),
            RatioMode::SmoothL1 => {
                let d = (&s_ratio - cfg.tau).relu();
                // smooth-L1 of a non-negative excess d: 0.5 d^2 / beta below beta, d - beta/2 above.
                let quad = d.square() * (0.5 / cfg.smooth_beta);
                let lin = &d - 0.5 * cfg.smooth_beta;
                quad.where_self(&d.lt(cfg.smooth_beta), &lin)
            }
        };
        let mut l = ratio_loss;
        if cfg.min_state_ratio > 0.0 {
            l = l + (cfg.min_state_ratio - &s_ratio).relu() * cfg.lower_bound_weight;
        }
        // Entropy of the vision part, renormalised per query row, / ln(n_vision).
        let nv: usize = vision.iter().map(|r| r.end.saturating_sub(r.start)).sum();
        let mut h_norm = Tensor::zeros([], (Kind::Float, p.device()));
        if nv > 1 {
            let parts: Vec<Tensor> = vision
                .iter()
                .filter(|r| r.end > r.start)
                .map(|r| p.narrow(-1, r.start as i64, (r.end - r.start) as i64))
                .collect();
            let v = Tensor::cat(&parts, -1);
            let vn = &v / (v.sum_dim_intlist(-1, true, Kind::Float) + 1e-8);
            let h = -(&vn * (&vn + 1e-8).log())
                .sum_dim_intlist(-1, false, Kind::Float)
                .mean(Kind::Float);
            h_norm = h / (nv as f64).ln();
        }
        l = l - &h_norm * cfg.entropy_weight;
        sr += s_ratio.double_value(&[]);
        vr += v_ratio.double_value(&[]);
        ent += h_norm.double_value(&[]);
        loss = Some(match loss {
            Some(a) => a + l,
            None => l,
        });
    }
    let k = n as f64;
    AttnReg {
        loss: loss
            .map(|l| l / k)
            .unwrap_or_else(|| Tensor::zeros([], (Kind::Float, tch::Device::Cpu))),
        state_ratio: sr / k,
        vision_ratio: vr / k,
        vision_entropy: ent / k,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probs(state_share: f64) -> Tensor {
        // 2 state keys, 4 vision keys, uniform inside each group.
        let s = state_share / 2.0;
        let v = (1.0 - state_share) / 4.0;
        Tensor::from_slice(&[s as f32, s as f32, v as f32, v as f32, v as f32, v as f32])
            .view([1, 1, 1, 6])
            .repeat([2, 3, 4, 1])
    }

    #[test]
    fn ratios_penalty_and_entropy() {
        let cfg = AttnRegConfig {
            enabled: true,
            entropy_weight: 0.0,
            ..Default::default()
        };
        let r = attention_regularizer(&[probs(0.7)], &[0..2], &[2..6], &cfg);
        assert!((r.state_ratio - 0.7).abs() < 1e-6);
        assert!((r.vision_ratio - 0.3).abs() < 1e-6);
        assert!(
            (r.loss.double_value(&[]) - 0.4).abs() < 1e-6,
            "hard penalty 0.7 - 0.3"
        );
        assert!(
            (r.vision_entropy - 1.0).abs() < 1e-5,
            "uniform vision attention has normalised entropy 1"
        );
        // Below tau: no penalty; the entropy bonus is negative loss.
        let cfg2 = AttnRegConfig {
            enabled: true,
            entropy_weight: 0.5,
            ..Default::default()
        };
        let r2 = attention_regularizer(&[probs(0.2)], &[0..2], &[2..6], &cfg2);
        assert!((r2.loss.double_value(&[]) + 0.5).abs() < 1e-5);
        // Smooth-L1 beyond tau: 0.1 excess with beta 0.1 -> 0.5 * 0.01 / 0.1 = 0.05 ... at the knee, linear after.
        let cfg3 = AttnRegConfig {
            enabled: true,
            entropy_weight: 0.0,
            mode: RatioMode::SmoothL1,
            ..Default::default()
        };
        let r3 = attention_regularizer(&[probs(0.35)], &[0..2], &[2..6], &cfg3);
        assert!((r3.loss.double_value(&[]) - 0.5 * 0.05 * 0.05 / 0.1).abs() < 1e-6);
        let r4 = attention_regularizer(&[probs(0.7)], &[0..2], &[2..6], &cfg3);
        assert!((r4.loss.double_value(&[]) - (0.4 - 0.05)).abs() < 1e-6);
        // Lower bound pushes back up: loss grows as the ratio falls below min.
        let cfg5 = AttnRegConfig {
            enabled: true,
            entropy_weight: 0.0,
            min_state_ratio: 0.1,
            ..Default::default()
        };
        let r5 = attention_regularizer(&[probs(0.04)], &[0..2], &[2..6], &cfg5);
        assert!((r5.loss.double_value(&[]) - 0.5 * 0.06).abs() < 1e-6);
    }

    #[test]
    fn gradient_lowers_state_share() {
        // Logits with grad; one step of gradient descent on the loss must lower the state share.
        let logits = Tensor::from_slice(&[2.0f32, 2.0, 0.0, 0.0, 0.0, 0.0])
            .view([1, 1, 1, 6])
            .set_requires_grad(true);
        let cfg = AttnRegConfig {
            enabled: true,
            entropy_weight: 0.0,
            ..Default::default()
        };
        let p = logits.softmax(-1, Kind::Float);
        let r = attention_regularizer(&[p], &[0..2], &[2..6], &cfg);
        assert!(r.state_ratio > 0.3);
        r.loss.backward();
        let g = logits.grad();
        let g: Vec<f32> = Vec::try_from(g.flatten(0, -1)).unwrap();
        assert!(
            g[0] > 0.0 && g[1] > 0.0,
            "state logits get a positive gradient (descent lowers them): {g:?}"
        );
        assert!(g[2] < 0.0, "vision logits get a negative gradient: {g:?}");
    }

    #[test]
    fn lambda_schedule() {
        let c = AttnRegConfig {
            enabled: true,
            weight: 0.02,
            start_step: 10,
            warmup_steps: 10,
            ..Default::default()
        };
        assert_eq!(c.lambda(5), 0.0);
        assert!((c.lambda(15) - 0.01).abs() < 1e-12);
        assert!((c.lambda(100) - 0.02).abs() < 1e-12);
        assert_eq!(AttnRegConfig::default().lambda(100), 0.0, "off by default");
        assert!(AttnRegConfig {
            min_state_ratio: 0.4,
            ..Default::default()
        }
        .validate()
        .is_err());
    }
}
