//! The expert heads of `model.experts` in `velocity.onnx` (the tch side is
//! `model/experts.rs`): alpha = Softmax(router(ReduceMean over the context tokens) x
//! 1/temperature), velocity = sum_i alpha_i fc2_i(GELU(fc1_i(y))).

use super::builder::GraphBuilder;
use super::maniflow::linear;
use anyhow::Result;

/// `y` (B, T, D) after the final norm, `ctx` the embedded context (B, L, D): the mixed
/// velocity (B, T, Da). `temperature` is baked in (the exported step's stage).
pub(super) fn expert_heads(g: &mut GraphBuilder, y: &str, ctx: &str, d: usize, da: usize, experts: usize, temperature: f64) -> Result<String> {
    let p = "model.final_layer";
    let pooled = g.reduce_mean(ctx, &[1], false); // (B, D)
    let logits = linear(g, &pooled, &format!("{p}.router"), d, experts, true)?;
    let inv_t = g.scalar((1.0 / temperature) as f32);
    let logits = g.mul(&logits, &inv_t);
    let alpha = g.softmax(&logits, -1); // (B, E)
    let mut out: Option<String> = None;
    for i in 0..experts {
        let e = format!("{p}.experts.{i}");
        let h = linear(g, y, &format!("{e}.fc1"), d, d, true)?;
        let h = g.gelu_tanh(&h);
        let v = linear(g, &h, &format!("{e}.fc2"), d, da, true)?;
        let a = g.slice(&alpha, &[i as i64], &[i as i64 + 1], &[1]); // (B, 1)
        let a = g.unsqueeze(&a, &[2]); // (B, 1, 1)
        let term = g.mul(&v, &a);
        out = Some(match out {
            None => term,
            Some(o) => g.add(&o, &term),
        });
    }
    anyhow::ensure!(experts >= 2, "model.experts = {experts}: the router needs at least 2 experts");
    Ok(out.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use crate::config::{Fusion, RouterConfig};
    use crate::model::ObsDims;
    use crate::onnx::fusion::tests::{export_parity, so101_cpu};
    use tch::Kind;

    /// concat, tokens and cross-attention fusion with 4 experts: tch and ONNX Runtime agree
    /// on the context and the velocity (weights moved off their initial values, so the
    /// zero-initialised expert outputs and a flat router hide nothing); alpha sums to 1.
    #[test]
    fn expert_heads_export_with_parity_in_every_fusion() {
        let _rng = crate::tch_rng_lock();
        for fusion in [Fusion::Concat, Fusion::CrossAttention, Fusion::Tokens] {
            let mut cfg = so101_cpu(fusion);
            cfg.model.experts = 4;
            cfg.model.router = Some(RouterConfig { load_balance: 0.01, temperature: 0.7 });
            cfg.validate().unwrap();
            let dims = ObsDims::from_config(&cfg, 6, Some(32), 6);
            let p = export_parity(&cfg, &dims, 11);
            let h = p.net.ditx.experts().expect("experts built");
            assert_eq!((h.n_experts(), h.temperature()), (4, 0.7));
            let (ec, ev, mag) = (p.context_err, p.velocity_err, p.velocity_mean_abs);
            eprintln!("{fusion:?} + 4 experts: context {ec:.3e}, velocity {ev:.3e} (mean |velocity| {mag:.3})");
            assert!(ec < 1e-4 && ev < 1e-4 && mag > 1e-2, "{fusion:?}: context {ec}, velocity {ev} (mean |v| {mag})");
            let alpha = p.alpha.expect("router alpha");
            assert_eq!(alpha.size(), [2, 4]);
            let sums = alpha.sum_dim_intlist(-1, false, Kind::Float);
            assert!((sums - 1.0).abs().max().double_value(&[]) < 1e-5);
        }
    }
}
