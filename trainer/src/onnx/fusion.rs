//! `fusion = "cross_attention"` in `encoder.onnx`: the graph of
//! [`crate::model::fusion::SparseCrossAttention`] (TopK for the sparse gate's threshold).

use super::builder::{attr_i, GraphBuilder};
use super::maniflow::{attention_weights, linear, merge_heads, split_heads};
use anyhow::Result;

/// `queries` (B, Lq, D) over `cams` (B, Lv, D) -> (B, Lq, D); each query and head keeps its
/// `keep` largest weights (and ties with the smallest of them), renormalised.
pub fn sparse_cross_attention(g: &mut GraphBuilder, p: &str, queries: &str, cams: &str, d: usize, heads: usize, keep: usize) -> Result<String> {
    g.set_scope(p);
    let hd = d / heads;
    let q = linear(g, queries, &format!("{p}.q"), d, d, true)?;
    let q = split_heads(g, &q, heads, hd, &[0, 2, 1, 3]); // (B, H, Lq, hd)
    let kv = linear(g, cams, &format!("{p}.kv"), d, 2 * d, true)?;
    let s = g.split(&kv, 2, -1);
    let kt = split_heads(g, &s[0], heads, hd, &[0, 2, 3, 1]); // (B, H, hd, Lv)
    let v = split_heads(g, &s[1], heads, hd, &[0, 2, 1, 3]);
    let a = attention_weights(g, &q, &kt, hd);
    // sparse gate: threshold = the keep-th largest weight of the row
    let k = g.constant_i64(&[keep as i64]);
    let top = g.node("TopK", &[&a, &k], 2, vec![attr_i("axis", -1), attr_i("largest", 1), attr_i("sorted", 1)]);
    let thresh = g.slice(&top[0], &[keep as i64 - 1], &[keep as i64], &[-1]);
    let mask = g.op("GreaterOrEqual", &[&a, &thresh], vec![]);
    let mask = g.op("Cast", &[&mask], vec![attr_i("to", 1)]); // FLOAT
    let kept = g.mul(&a, &mask);
    let axes = g.constant_i64(&[-1]);
    let sum = g.op("ReduceSum", &[&kept, &axes], vec![attr_i("keepdims", 1)]);
    let gated = g.div(&kept, &sum);
    let o = g.matmul(&gated, &v);
    let o = merge_heads(g, &o, d);
    linear(g, &o, &format!("{p}.out"), d, d, true)
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::config::{Config, CrossAttentionConfig, Fusion};
    use crate::export::{max_abs, obs_inputs, ort_run, random_obs, session};
    use crate::model::{ManiFlowNet, ObsDims};
    use crate::onnx::maniflow::{build_encoder, build_velocity, context_dims, modality_map, Weights};
    use tch::nn::VarStore;
    use tch::{Device, Kind, Tensor};

    /// so101-cpu with `fusion`.
    pub(crate) fn so101_cpu(fusion: Fusion) -> Config {
        let text = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/so101-cpu.toml")).unwrap();
        let mut cfg: Config = toml::from_str(&text).unwrap();
        cfg.model.fusion = fusion;
        if fusion == Fusion::CrossAttention {
            cfg.encoder.cross_attention = Some(CrossAttentionConfig { heads: 4, top_k: 0.3 });
        }
        cfg.validate().unwrap();
        cfg
    }

    /// What [`export_parity`] measured.
    pub(crate) struct Parity {
        pub context_err: f64,
        pub velocity_err: f64,
        pub velocity_mean_abs: f64,
        pub net: ManiFlowNet,
        /// The router weights of the tch network on the parity context (with experts).
        pub alpha: Option<Tensor>,
    }

    /// The network of `cfg` on weights moved off their initial values, its encoder and
    /// velocity graphs run by ONNX Runtime against tch on random observations (B = 2).
    pub(crate) fn export_parity(cfg: &Config, dims: &ObsDims, seed: i64) -> Parity {
        tch::manual_seed(seed);
        let to = cfg.model.n_obs_steps;
        let vs = VarStore::new(Device::Cpu);
        let net = ManiFlowNet::new(&vs.root(), cfg, dims).unwrap();
        let mut w = Weights::new();
        tch::no_grad(|| {
            for (name, mut t) in vs.variables() {
                let _ = t.g_add_(&(Tensor::randn_like(&t) * 0.05));
                w.insert(&name, t.size().iter().map(|&d| d as usize).collect(), Vec::try_from(t.flatten(0, -1)).unwrap()).unwrap();
            }
        });
        let env = maniflow_runtime::policy::ortlib::environment().unwrap();
        let mut enc = session(&env, &build_encoder(cfg, dims, &w).unwrap()).unwrap();
        let mut vel = session(&env, &build_velocity(cfg, dims, &w).unwrap()).unwrap();
        let _g = tch::no_grad_guard();
        let obs = random_obs(dims, to as i64, 2);
        let ctx = net.encode(&obs);
        let ctx_ort = ort_run(&mut enc, obs_inputs(dims, &obs), "context").unwrap();
        let (t, da) = (cfg.model.horizon as i64, dims.action_dim as i64);
        let x = Tensor::randn([2, t, da], (Kind::Float, Device::Cpu));
        let (tt, tg) = (Tensor::rand([2], (Kind::Float, Device::Cpu)), Tensor::rand([2], (Kind::Float, Device::Cpu)));
        let v = net.velocity(&x, &tt, &tg, &ctx, false, None);
        let inputs = vec![("x_t".into(), x), ("t".into(), tt), ("target_t".into(), tg), ("context".into(), ctx.shallow_clone())];
        let v_ort = ort_run(&mut vel, inputs, "velocity").unwrap();
        let alpha = net.router_alpha(&ctx);
        Parity {
            context_err: max_abs(&ctx, &ctx_ort),
            velocity_err: max_abs(&v, &v_ort),
            velocity_mean_abs: v.abs().mean(Kind::Float).double_value(&[]),
            net,
            alpha,
        }
    }

    /// `cross_attention` fusion: the compact context's map and the encoder and velocity
    /// graphs against tch (ONNX Runtime) on weights moved off their initial values.
    #[test]
    fn cross_attention_fusion_exports_with_parity() {
        let _rng = crate::tch_rng_lock();
        let cfg = so101_cpu(Fusion::CrossAttention);
        let dims = ObsDims::from_config(&cfg, 6, Some(32), 6);
        let to = cfg.model.n_obs_steps;
        // vision (one per proprio and tactile token), tactile, proprio
        let map = modality_map(&cfg, &dims);
        assert_eq!(map, [("vision".to_string(), 0, 2 * to), ("tactile".into(), 2 * to, 3 * to), ("proprio".into(), 3 * to, 4 * to)]);
        assert_eq!(context_dims(&cfg, &dims), (4 * to, cfg.encoder.cond_dim));
        let p = export_parity(&cfg, &dims, 8);
        let names: Vec<(String, usize, usize)> = p.net.encoder.modality_map.iter().map(|m| (m.modality.clone(), m.start, m.end)).collect();
        assert_eq!(names, map, "tch and ONNX maps agree");
        let (ec, ev) = (p.context_err, p.velocity_err);
        eprintln!("cross_attention fusion parity: context {ec:.3e}, velocity {ev:.3e} (mean |velocity| {:.3})", p.velocity_mean_abs);
        assert!(ec < 1e-4 && ev < 1e-4, "context {ec}, velocity {ev}");
        assert!(p.velocity_mean_abs > 0.01, "velocity ~0: the case tests little");
    }
}
