//! The pretrained tactile MAE encoder inside `encoder.onnx` (`encoder.tactile = "mae"`):
//! the graph of [`crate::tactile_mae::model::MaeEncoder::features`] on every frame.

use super::builder::GraphBuilder;
use super::maniflow::{attention_weights, linear, merge_heads, split_heads};
use crate::tactile_mae::model::{MaeConfig, FRAMES};
use anyhow::Result;

/// `x` (B, To, H*W*C) pressures, normalised -> (B, To, width): per frame, patches, linear
/// embedding + position + frame-0 embeddings, pre-norm blocks, LayerNorm, mean over patches.
/// Weights under `p` (`obs_encoder.tactile.mae`).
pub fn features(g: &mut GraphBuilder, p: &str, x: &str, m: &MaeConfig, to: usize) -> Result<String> {
    g.set_scope(p);
    let (l, w, pd) = (m.patches() as usize, m.width as usize, m.patch_dim() as usize);
    let (gh, gw) = (m.image.0 / m.patch, m.image.1 / m.patch);
    // patchify: (N, C, gh, p, gw, p) -> (N, gh, gw, p, p, C) -> (N, L, p*p*C)
    let y = g.reshape(x, &[-1, m.channels, gh, m.patch, gw, m.patch]);
    let y = g.transpose(&y, &[0, 2, 4, 3, 5, 1]);
    let y = g.reshape(&y, &[-1, l as i64, pd as i64]);
    let y = linear(g, &y, &format!("{p}.patch_embed"), pd, w, true)?;
    let pos = format!("{p}.pos_embed");
    g.weight_shaped(&pos, &[1, l, w])?;
    let pos = g.param(&pos, None)?;
    let frame = format!("{p}.frame_embed");
    g.weight_shaped(&frame, &[FRAMES as usize, w])?;
    let frame = g.param(&frame, None)?;
    let f0 = g.gather(&frame, &[0], 0); // (1, W)
    let y = g.add(&y, &pos);
    let mut y = g.add(&y, &f0);
    for i in 0..m.depth {
        y = block(g, &format!("{p}.blocks.{i}"), &y, w, m.heads as usize)?;
    }
    let y = layer_norm(g, &format!("{p}.norm"), &y, w)?;
    let y = g.reduce_mean(&y, &[1], false); // (N, W)
    Ok(g.reshape(&y, &[-1, to as i64, w as i64]))
}

/// LayerNorm with weight and bias, eps 1e-6.
fn layer_norm(g: &mut GraphBuilder, p: &str, x: &str, w: usize) -> Result<String> {
    let (wn, bn) = (format!("{p}.weight"), format!("{p}.bias"));
    g.weight_shaped(&wn, &[w])?;
    g.weight_shaped(&bn, &[w])?;
    let (a, b) = (g.param(&wn, None)?, g.param(&bn, None)?);
    Ok(g.layer_norm(x, &a, Some(&b), 1e-6))
}

/// Pre-norm block: x + proj(attention(norm1 x)), then x + fc2(gelu(fc1(norm2 x))).
fn block(g: &mut GraphBuilder, p: &str, x: &str, w: usize, heads: usize) -> Result<String> {
    let hd = w / heads;
    let h = layer_norm(g, &format!("{p}.norm1"), x, w)?;
    let qkv = linear(g, &h, &format!("{p}.attn.qkv"), w, 3 * w, true)?;
    // the 3W axis is (3, heads, hd): q, k, v are its equal thirds
    let s = g.split(&qkv, 3, -1);
    let q = split_heads(g, &s[0], heads, hd, &[0, 2, 1, 3]); // (N, H, L, hd)
    let kt = split_heads(g, &s[1], heads, hd, &[0, 2, 3, 1]); // (N, H, hd, L)
    let v = split_heads(g, &s[2], heads, hd, &[0, 2, 1, 3]);
    let a = attention_weights(g, &q, &kt, hd);
    let o = g.matmul(&a, &v);
    let o = merge_heads(g, &o, w);
    let o = linear(g, &o, &format!("{p}.attn.proj"), w, w, true)?;
    let x = g.add(x, &o);
    let h = layer_norm(g, &format!("{p}.norm2"), &x, w)?;
    let y = linear(g, &h, &format!("{p}.mlp.fc1"), w, 4 * w, true)?;
    let y = g.gelu_erf(&y);
    let y = linear(g, &y, &format!("{p}.mlp.fc2"), 4 * w, w, true)?;
    Ok(g.add(&x, &y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::{max_abs, ort_run, session};
    use crate::onnx::builder::{batch, fixed};
    use crate::onnx::maniflow::Weights;
    use crate::tactile_mae::model::MaeEncoder;
    use tch::nn::VarStore;
    use tch::{Device, Kind, Tensor};

    /// The graph against the tch encoder on random weights (LayerNorm affines and
    /// embeddings far from their initial values) and pressures well beyond [-1, 1].
    #[test]
    fn mae_graph_matches_the_tch_encoder() {
        let _rng = crate::tch_rng_lock();
        tch::manual_seed(5);
        let m = MaeConfig { image: (8, 12), channels: 2, patch: 4, width: 24, depth: 2, heads: 3, decoder_width: 24, ..MaeConfig::default() };
        let vs = VarStore::new(Device::Cpu);
        let enc = MaeEncoder::new(&(vs.root() / "mae"), &m).unwrap();
        let mut w = Weights::new();
        tch::no_grad(|| {
            for (name, mut t) in vs.variables() {
                let _ = t.copy_(&(Tensor::randn_like(&t) * 0.3 + if name.ends_with("norm1.weight") { 1.0 } else { 0.0 }));
                let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
                w.insert(&name, shape, Vec::try_from(t.flatten(0, -1)).unwrap()).unwrap();
            }
        });
        let (b, to, cells) = (3i64, 2i64, 8 * 12 * 2);
        let x = Tensor::randn([b, to, cells], (Kind::Float, Device::Cpu)) * 5.0;
        let want = tch::no_grad(|| enc.features(&x.reshape([b * to, 2, 8, 12])).reshape([b, to, -1]));
        let mut g = GraphBuilder::new("mae", &w);
        g.input("tactile", &[batch(), fixed(to as usize), fixed(cells as usize)]).unwrap();
        let y = features(&mut g, "mae", "tactile", &m, to as usize).unwrap();
        g.output(&y, "features", &[batch(), fixed(to as usize), fixed(24)]);
        assert_eq!(g.used().len(), w.len(), "every encoder tensor is in the graph");
        let env = maniflow_runtime::policy::ortlib::environment().unwrap();
        let mut s = session(&env, &g.to_bytes().unwrap()).unwrap();
        let got = ort_run(&mut s, vec![("tactile".into(), x)], "features").unwrap();
        assert_eq!(got.size(), [b, to, 24]);
        let err = max_abs(&want, &got);
        let scale = want.abs().max().double_value(&[]);
        eprintln!("MAE encoder graph: max abs err {err:.3e} (max |feature| {scale:.2})");
        assert!(scale > 0.5 && err < 1e-5, "err {err}, scale {scale}");
    }
}
