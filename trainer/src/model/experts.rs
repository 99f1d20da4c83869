//! Seed 004's expert router on DiTX's final layer: E expert heads (each upstream's
//! `ffn_final`: fc1, GELU(tanh), fc2) mixed per observation by
//! `alpha = softmax(router(mean of the embedded context tokens) / temperature)`.
//! Variables: `model.final_layer.router.*`, `model.final_layer.experts.<i>.fc{1,2}.*`.

use super::layers::{LinInit, Linear};
use std::cell::Cell;
use tch::nn::Path;
use tch::{Kind, Tensor};

#[derive(Debug)]
pub struct ExpertHeads {
    router: Linear,
    experts: Vec<(Linear, Linear)>,
    /// Softmax temperature; the trainer sets it per stage, export to the exported step's.
    temperature: Cell<f64>,
}

impl ExpertHeads {
    /// `p` = the final layer's path, `d` = DiTX width, `da` = action dim, `e` experts.
    pub fn new(p: &Path, d: i64, da: i64, e: usize, temperature: f64) -> Self {
        let router = Linear::new(p, "router", d, e as i64, true, LinInit::Normal002);
        let experts = (0..e)
            .map(|i| {
                let ep = p / "experts" / i;
                // as ffn_final: fc2 starts at zero (adaLN-Zero style), fc1 random per expert
                (Linear::new(&ep, "fc1", d, d, true, LinInit::Xavier), Linear::new(&ep, "fc2", d, da, true, LinInit::Zero))
            })
            .collect();
        ExpertHeads { router, experts, temperature: Cell::new(temperature) }
    }

    pub fn n_experts(&self) -> usize {
        self.experts.len()
    }

    pub fn set_temperature(&self, t: f64) {
        self.temperature.set(t);
    }

    pub fn temperature(&self) -> f64 {
        self.temperature.get()
    }

    /// Router weights (B, E) from the embedded context (B, L, D); each row sums to 1.
    pub fn alpha(&self, ctx: &Tensor) -> Tensor {
        let pooled = ctx.mean_dim(1, false, Kind::Float);
        (self.router.forward(&pooled) / self.temperature.get()).softmax(-1, Kind::Float)
    }

    /// sum_i alpha_i expert_i(y): (B, T, D) normed tokens -> (B, T, Da).
    pub fn forward(&self, y: &Tensor, alpha: &Tensor) -> Tensor {
        let mut out: Option<Tensor> = None;
        for (i, (fc1, fc2)) in self.experts.iter().enumerate() {
            let v = fc2.forward(&fc1.forward(y).gelu("tanh"));
            let a = alpha.narrow(1, i as i64, 1).unsqueeze(-1); // (B, 1, 1)
            let term = v * a;
            out = Some(match out {
                None => term,
                Some(o) => o + term,
            });
        }
        out.unwrap_or_else(|| y.zeros_like())
    }
}

/// Mean over the batch of the entropy of alpha (nats): ln E when the router does not
/// choose, 0 when every observation picks one expert.
pub fn alpha_entropy(alpha: &Tensor) -> Tensor {
    -(alpha * alpha.clamp_min(1e-12).log()).sum_dim_intlist(-1, false, Kind::Float).mean(Kind::Float)
}

/// Expert usage (E,): the batch mean of alpha.
pub fn usage(alpha: &Tensor) -> Tensor {
    alpha.mean_dim(0, false, Kind::Float)
}

/// `E * sum_i usage_i^2`: 1 when the batch uses every expert equally, E when one expert
/// takes everything (the load-balancing loss, differentiable).
pub fn load_balance(alpha: &Tensor) -> Tensor {
    let e = alpha.size()[1] as f64;
    usage(alpha).square().sum(Kind::Float) * e
}

/// The `router/*` metrics of one batch's alpha (B, E).
pub fn router_metrics(alpha: &Tensor, temperature: f64) -> Vec<(String, f64)> {
    let a = alpha.detach().to_device(tch::Device::Cpu).to_kind(Kind::Float);
    let e = a.size()[1];
    let h = alpha_entropy(&a).double_value(&[]);
    let mut out = vec![
        ("router/alpha_entropy".to_string(), h),
        ("router/alpha_entropy_norm".to_string(), h / (e as f64).ln()),
        ("router/load_balance".to_string(), load_balance(&a).double_value(&[])),
        ("router/temperature".to_string(), temperature),
    ];
    let u = Vec::<f64>::try_from(usage(&a).to_kind(Kind::Double)).unwrap_or_default();
    out.extend(u.iter().enumerate().map(|(i, v)| (format!("router/expert_usage_{i}"), *v)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::VarStore;
    use tch::Device;

    #[test]
    fn alpha_sums_to_one_and_entropy_matches_a_hand_computation() {
        let _rng = crate::tch_rng_lock();
        tch::manual_seed(3);
        let vs = VarStore::new(Device::Cpu);
        let heads = ExpertHeads::new(&vs.root(), 16, 3, 4, 0.5);
        // Router weights large enough that alpha is far from uniform.
        tch::no_grad(|| {
            for (_, mut v) in vs.variables() {
                let r = v.randn_like() * 0.8;
                v.copy_(&r);
            }
        });
        let ctx = Tensor::randn([5, 7, 16], (Kind::Float, Device::Cpu));
        let alpha = heads.alpha(&ctx);
        assert_eq!(alpha.size(), [5, 4]);
        let sums = Vec::<f64>::try_from(alpha.sum_dim_intlist(-1, false, Kind::Double)).unwrap();
        for s in &sums {
            assert!((s - 1.0).abs() < 1e-6, "alpha rows must sum to 1: {sums:?}");
        }
        let rows: Vec<Vec<f64>> = (0..5).map(|b| Vec::<f64>::try_from(alpha.get(b).to_kind(Kind::Double)).unwrap()).collect();
        assert!(rows.iter().all(|r| r.iter().all(|&a| a > 0.0)));
        // By hand: H = -sum a ln a per row, mean over rows.
        let hand: f64 = rows.iter().map(|r| -r.iter().map(|a| a * a.ln()).sum::<f64>()).sum::<f64>() / 5.0;
        let h = alpha_entropy(&alpha).double_value(&[]);
        assert!((h - hand).abs() < 1e-5, "entropy {h} vs hand {hand}");
        assert!(h > 0.0 && h < 4f64.ln() - 0.01, "alpha should be non-uniform here: H = {h}");
        // Uniform alpha: H = ln E exactly; one-hot: 0; load balance 1 and E.
        let uni = Tensor::full([3, 4], 0.25, (Kind::Float, Device::Cpu));
        assert!((alpha_entropy(&uni).double_value(&[]) - 4f64.ln()).abs() < 1e-6);
        assert!((load_balance(&uni).double_value(&[]) - 1.0).abs() < 1e-6);
        let one = Tensor::from_slice(&[0f32, 1.0, 0.0, 0.0]).view([1, 4]).repeat([3, 1]);
        assert!(alpha_entropy(&one).double_value(&[]).abs() < 1e-6);
        assert!((load_balance(&one).double_value(&[]) - 4.0).abs() < 1e-6);
        // Metrics: usages are the column means and sum to 1; normalised entropy = H / ln 4.
        let m: std::collections::HashMap<String, f64> = router_metrics(&alpha, 0.5).into_iter().collect();
        let u0: f64 = rows.iter().map(|r| r[0]).sum::<f64>() / 5.0;
        assert!((m["router/expert_usage_0"] - u0).abs() < 1e-6);
        let usum: f64 = (0..4).map(|i| m[&format!("router/expert_usage_{i}")]).sum();
        assert!((usum - 1.0).abs() < 1e-6);
        assert!((m["router/alpha_entropy_norm"] - hand / 4f64.ln()).abs() < 1e-5);
        assert_eq!(m["router/temperature"], 0.5);
        // Temperature: alpha = softmax(logits / tau), so a lower tau sharpens.
        heads.set_temperature(0.1);
        let sharp = alpha_entropy(&heads.alpha(&ctx)).double_value(&[]);
        assert!(sharp < h, "temperature 0.1 must sharpen alpha: {sharp} vs {h}");
    }

    #[test]
    fn mixture_is_the_alpha_weighted_sum_of_the_experts() {
        let _rng = crate::tch_rng_lock();
        tch::manual_seed(5);
        let vs = VarStore::new(Device::Cpu);
        let heads = ExpertHeads::new(&vs.root(), 8, 2, 3, 1.0);
        tch::no_grad(|| {
            for (_, mut v) in vs.variables() {
                let r = v.randn_like() * 0.5;
                v.copy_(&r);
            }
        });
        let y = Tensor::randn([2, 4, 8], (Kind::Float, Device::Cpu));
        // One-hot alpha picks one expert exactly.
        let pick = Tensor::from_slice(&[0f32, 0.0, 1.0, 1.0, 0.0, 0.0]).view([2, 3]);
        let out = heads.forward(&y, &pick);
        let (fc1, fc2) = &heads.experts[2];
        let e2 = fc2.forward(&fc1.forward(&y.get(0)).gelu("tanh"));
        assert!((out.get(0) - e2).abs().max().double_value(&[]) < 1e-6);
        let (fc1, fc2) = &heads.experts[0];
        let e0 = fc2.forward(&fc1.forward(&y.get(1)).gelu("tanh"));
        assert!((out.get(1) - e0).abs().max().double_value(&[]) < 1e-6);
    }
}
