//! Seed 004's V4 fusion (`model.fusion = "cross_attention"`): the proprio (and tactile)
//! tokens query the camera tokens through multi-head cross-attention whose weights pass
//! a sparse gate (each query and head keeps its top-k fraction of the camera tokens,
//! renormalised). Variables under `obs_encoder.fusion` (`q`, `kv`, `out`).

use super::layers::{LinInit, Linear};
use crate::config::CrossAttentionConfig;
use tch::nn::Path;
use tch::{Kind, Tensor};

/// Softmax weights `(.., Lv)` -> the `keep` largest of each row, renormalised to sum to 1
/// (ties with the k-th largest are kept too).
pub fn sparse_gate(attn: &Tensor, keep: i64) -> Tensor {
    let (top, _) = attn.topk(keep, -1, true, true);
    let thresh = top.narrow(-1, keep - 1, 1);
    let kept = attn * attn.ge_tensor(&thresh).to_kind(attn.kind());
    let sum = kept.sum_dim_intlist(-1, true, attn.kind());
    kept / sum
}

#[derive(Debug)]
pub struct SparseCrossAttention {
    q: Linear,
    kv: Linear,
    out: Linear,
    heads: i64,
    cfg: CrossAttentionConfig,
}

impl SparseCrossAttention {
    pub fn new(p: &Path, dc: i64, cfg: CrossAttentionConfig) -> Self {
        SparseCrossAttention {
            q: Linear::new(p, "q", dc, dc, true, LinInit::Xavier),
            kv: Linear::new(p, "kv", dc, 2 * dc, true, LinInit::Xavier),
            out: Linear::new(p, "out", dc, dc, true, LinInit::Xavier),
            heads: cfg.heads as i64,
            cfg,
        }
    }

    /// `(B, Lq, D)` queries over `(B, Lv, D)` camera tokens -> `(B, Lq, D)`, and the gated
    /// weights `(B, H, Lq, Lv)`.
    pub fn forward(&self, queries: &Tensor, cams: &Tensor) -> (Tensor, Tensor) {
        let (b, lq, d) = (queries.size()[0], queries.size()[1], queries.size()[2]);
        let lv = cams.size()[1];
        let hd = d / self.heads;
        let split = |x: &Tensor, l: i64| x.view([b, l, self.heads, hd]).transpose(1, 2);
        let q = split(&self.q.forward(queries), lq);
        let kv = self.kv.forward(cams);
        let (k, v) = (split(&kv.narrow(-1, 0, d), lv), split(&kv.narrow(-1, d, d), lv));
        let attn = (q.matmul(&k.transpose(-2, -1)) / (hd as f64).sqrt()).softmax(-1, Kind::Float);
        let gated = sparse_gate(&attn, self.cfg.keep(lv as usize) as i64);
        let o = gated.matmul(&v).transpose(1, 2).reshape([b, lq, d]);
        (self.out.forward(&o), gated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::VarStore;
    use tch::Device;

    #[test]
    fn sparse_gate_keeps_exactly_the_top_fraction() {
        let _rng = crate::tch_rng_lock();
        tch::manual_seed(3);
        let cfg = CrossAttentionConfig { heads: 4, top_k: 0.3 };
        assert_eq!((cfg.keep(18), cfg.keep(10), cfg.keep(1), CrossAttentionConfig { heads: 1, top_k: 1.0 }.keep(7)), (6, 3, 1, 7));
        let attn = Tensor::rand([2, 4, 3, 18], (Kind::Float, Device::Cpu)).softmax(-1, Kind::Float);
        let g = sparse_gate(&attn, cfg.keep(18) as i64);
        let nonzero = g.ne(0.0).sum_dim_intlist(-1, false, Kind::Int64);
        assert_eq!(Vec::<i64>::try_from(nonzero.flatten(0, -1)).unwrap(), vec![6; 24], "6 of 18 kept in every row");
        let sums = Vec::<f32>::try_from(g.sum_dim_intlist(-1, false, Kind::Float).flatten(0, -1)).unwrap();
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-6), "{sums:?}");
        // The kept ones are the largest, in the same proportions as before.
        let a: Vec<f32> = Vec::try_from(attn.get(1).get(2).get(0)).unwrap();
        let k: Vec<f32> = Vec::try_from(g.get(1).get(2).get(0)).unwrap();
        let mut sorted = a.clone();
        sorted.sort_by(|x, y| y.total_cmp(x));
        let kept_sum: f32 = sorted[..6].iter().sum();
        for (x, y) in a.iter().zip(&k) {
            if *x >= sorted[5] {
                assert!((y - x / kept_sum).abs() < 1e-6);
            } else {
                assert_eq!(*y, 0.0);
            }
        }
        // The module: shapes, and every weight row gated.
        let vs = VarStore::new(Device::Cpu);
        let m = SparseCrossAttention::new(&vs.root(), 16, cfg);
        let (o, w) = m.forward(&Tensor::randn([2, 3, 16], (Kind::Float, Device::Cpu)), &Tensor::randn([2, 10, 16], (Kind::Float, Device::Cpu)));
        assert_eq!((o.size(), w.size()), (vec![2, 3, 16], vec![2, 4, 3, 10]));
        assert_eq!(w.ne(0.0).sum(Kind::Int64).int64_value(&[]), 2 * 4 * 3 * 3);
    }
}
