//! The joint static + dynamic MAE objective of seed 001 and its batch metrics.
//!
//! - Images are cut into `p x p` patches ([`patchify`], MAE's order: patch rows, patch
//!   columns, then `p x p x C` values).
//! - [`random_masking`] hides `round(ratio * L)` patches per sample (75 % by default): the
//!   encoder sees the rest.
//! - `loss_static`: per-patch mean squared error of the reconstructed frame 1, averaged over
//!   its masked patches only ([`masked_patch_mse`]).
//! - `loss_recon`: the same over frames 1-3 (their masked patches); `loss_pred`: frame 4
//!   predicted from frames 1-3, mean squared error over the whole frame ([`frame_mse`]).
//! - `loss_dynamic = loss_recon + loss_pred`, `loss_total = alpha loss_static + beta
//!   loss_dynamic` ([`joint`]); the metrics ([`JointScalars`]) are derived on the host from
//!   the same values, so `batch/loss_dynamic == batch/loss_recon + batch/loss_pred` holds
//!   exactly in what is logged, and the contributions sum to 1.

use tch::{Device, Kind, Tensor};

/// `(N, C, H, W)` -> `(N, L, p * p * C)` with `L = (H / p) * (W / p)`.
pub fn patchify(x: &Tensor, p: i64) -> Tensor {
    let s = x.size();
    let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
    let (gh, gw) = (h / p, w / p);
    x.reshape([n, c, gh, p, gw, p]).permute([0, 2, 4, 3, 5, 1]).reshape([n, gh * gw, p * p * c])
}

/// The inverse of [`patchify`] for `c` channels and a `gh x gw` patch grid.
pub fn unpatchify(x: &Tensor, p: i64, c: i64, gh: i64, gw: i64) -> Tensor {
    let n = x.size()[0];
    x.reshape([n, gh, gw, p, p, c]).permute([0, 5, 1, 3, 2, 4]).reshape([n, c, gh * p, gw * p])
}

/// Which patches the encoder sees.
#[derive(Debug)]
pub struct Masking {
    /// `(N, L_keep)` indices of the visible patches, ascending in noise order.
    pub keep: Tensor,
    /// `(N, L)`, 1 where a patch is hidden (the loss is taken there), 0 where visible.
    pub mask: Tensor,
    /// `(N, L)`: gathers the decoder's `[visible, mask tokens]` back into patch order.
    pub restore: Tensor,
}

/// Patches kept visible out of `l` at masking `ratio` (at least one).
pub fn visible_count(l: i64, ratio: f64) -> i64 {
    ((l as f64 * (1.0 - ratio)).round() as i64).clamp(1, l)
}

/// Per-sample random masking from the uniform draws `noise` `(N, L)` (MAE's argsort
/// shuffle): the `visible_count` patches with the smallest noise stay visible.
pub fn masking_from_noise(noise: &Tensor, ratio: f64) -> Masking {
    let s = noise.size();
    let (n, l) = (s[0], s[1]);
    let k = visible_count(l, ratio);
    let shuffle = noise.argsort(1, false);
    let restore = shuffle.argsort(1, false);
    let keep = shuffle.narrow(1, 0, k);
    let ones = Tensor::ones([n, l], (Kind::Float, noise.device()));
    let mask = ones.index_fill(1, &Tensor::arange(k, (Kind::Int64, noise.device())), 0.0).gather(1, &restore, false);
    Masking { keep, mask, restore }
}

/// [`masking_from_noise`] with fresh uniform draws.
pub fn random_masking(n: i64, l: i64, ratio: f64, device: Device) -> Masking {
    masking_from_noise(&crate::rng::rand(&[n, l], (Kind::Float, device)), ratio)
}

/// Mean over hidden patches of each patch's mean squared error: `pred`, `target` `(N, L, D)`,
/// `mask` `(N, L)` with 1 = hidden.
pub fn masked_patch_mse(pred: &Tensor, target: &Tensor, mask: &Tensor) -> Tensor {
    let per_patch = (pred - target).square().mean_dim(-1, false, Kind::Float);
    (per_patch * mask).sum(Kind::Float) / mask.sum(Kind::Float)
}

/// Mean squared error over every value (frame 4's prediction).
pub fn frame_mse(pred: &Tensor, target: &Tensor) -> Tensor {
    (pred - target).square().mean(Kind::Float)
}

/// The three losses of one batch and their weighted sum (the tensor to differentiate).
pub struct JointLoss {
    pub total: Tensor,
    pub loss_static: Tensor,
    pub loss_recon: Tensor,
    pub loss_pred: Tensor,
    pub alpha: f64,
    pub beta: f64,
}

/// `loss_total = alpha loss_static + beta (loss_recon + loss_pred)`.
pub fn joint(loss_static: Tensor, loss_recon: Tensor, loss_pred: Tensor, alpha: f64, beta: f64) -> JointLoss {
    let dynamic = &loss_recon + &loss_pred;
    let total = &loss_static * alpha + dynamic * beta;
    JointLoss { total, loss_static, loss_recon, loss_pred, alpha, beta }
}

/// Seed 001's batch scalars of one step (host values).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JointScalars {
    pub loss_total: f64,
    pub loss_static: f64,
    pub loss_dynamic: f64,
    pub loss_recon: f64,
    pub loss_pred: f64,
    pub loss_ratio: f64,
    pub weighted_static: f64,
    pub weighted_dynamic: f64,
    pub alpha: f64,
    pub beta: f64,
    pub static_contribution: f64,
    pub dynamic_contribution: f64,
}

/// Training mode 2 (joint static + dynamic), as seed 001 logs it.
pub const MODE_JOINT: f64 = 2.0;

impl JointLoss {
    /// The host scalars, each derived from the three losses as read back (one sync).
    pub fn scalars(&self) -> JointScalars {
        let v = Tensor::stack(&[self.loss_static.detach(), self.loss_recon.detach(), self.loss_pred.detach()], 0).to_kind(Kind::Double);
        let v: Vec<f64> = Vec::try_from(v.to_device(Device::Cpu)).unwrap_or_else(|_| vec![f64::NAN; 3]);
        JointScalars::from_losses(v[0], v[1], v[2], self.alpha, self.beta)
    }
}

impl JointScalars {
    pub fn from_losses(loss_static: f64, loss_recon: f64, loss_pred: f64, alpha: f64, beta: f64) -> JointScalars {
        let loss_dynamic = loss_recon + loss_pred;
        let weighted_static = alpha * loss_static;
        let weighted_dynamic = beta * loss_dynamic;
        let loss_total = weighted_static + weighted_dynamic;
        let static_contribution = weighted_static / loss_total;
        JointScalars {
            loss_total,
            loss_static,
            loss_dynamic,
            loss_recon,
            loss_pred,
            loss_ratio: loss_static / loss_dynamic,
            weighted_static,
            weighted_dynamic,
            alpha,
            beta,
            static_contribution,
            dynamic_contribution: weighted_dynamic / loss_total,
        }
    }

    /// `(name, value)` with seed 001's batch metric names (lr, epoch and iteration are
    /// the training loop's).
    pub fn batch_metrics(&self) -> [(&'static str, f64); 13] {
        [
            ("batch/loss_total", self.loss_total),
            ("batch/loss_static", self.loss_static),
            ("batch/loss_dynamic", self.loss_dynamic),
            ("batch/loss_recon", self.loss_recon),
            ("batch/loss_pred", self.loss_pred),
            ("batch/loss_ratio", self.loss_ratio),
            ("batch/weighted_static", self.weighted_static),
            ("batch/weighted_dynamic", self.weighted_dynamic),
            ("batch/alpha", self.alpha),
            ("batch/beta", self.beta),
            ("batch/static_contribution", self.static_contribution),
            ("batch/dynamic_contribution", self.dynamic_contribution),
            ("batch/mode", MODE_JOINT),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32], shape: &[i64]) -> Tensor {
        Tensor::from_slice(v).reshape(shape)
    }

    #[test]
    fn patches_follow_mae_order_and_invert() {
        // One 1-channel 4x4 image, values 0..16, 2x2 patches.
        let x = t(&(0..16).map(|v| v as f32).collect::<Vec<_>>(), &[1, 1, 4, 4]);
        let p = patchify(&x, 2);
        assert_eq!(p.size(), [1, 4, 4]);
        let got: Vec<f32> = Vec::try_from(p.flatten(0, -1)).unwrap();
        assert_eq!(got, vec![0., 1., 4., 5., 2., 3., 6., 7., 8., 9., 12., 13., 10., 11., 14., 15.]);
        // Two channels: each patch holds p x p x C values, channels last.
        let x2 = Tensor::arange(2 * 16, (Kind::Float, Device::Cpu)).reshape([1, 2, 4, 4]);
        let p2 = patchify(&x2, 2);
        let first: Vec<f32> = Vec::try_from(p2.get(0).get(0)).unwrap();
        assert_eq!(first, vec![0., 16., 1., 17., 4., 20., 5., 21.]);
        assert!(unpatchify(&p2, 2, 2, 2, 2).equal(&x2));
    }

    #[test]
    fn masking_hides_exactly_the_ratio_and_restores_order() {
        assert_eq!(visible_count(64, 0.75), 16);
        assert_eq!(visible_count(4, 0.75), 1);
        assert_eq!(visible_count(3, 0.99), 1);
        let noise = t(&[0.9, 0.1, 0.5, 0.3, 0.2, 0.8, 0.7, 0.4], &[2, 4]);
        let m = masking_from_noise(&noise, 0.5);
        let keep: Vec<i64> = Vec::try_from(m.keep.flatten(0, -1)).unwrap();
        assert_eq!(keep, vec![1, 3, 0, 3]); // the two smallest draws per sample
        let mask: Vec<f32> = Vec::try_from(m.mask.flatten(0, -1)).unwrap();
        assert_eq!(mask, vec![1., 0., 1., 0., 0., 1., 1., 0.]);
        // Decoder input [visible, hidden] gathered by `restore` is back in patch order.
        let shuffled = noise.argsort(1, false);
        let back = shuffled.gather(1, &m.restore, false);
        let order: Vec<i64> = Vec::try_from(back.flatten(0, -1)).unwrap();
        assert_eq!(order, vec![0, 1, 2, 3, 0, 1, 2, 3]);
        let r = random_masking(3, 64, 0.75, Device::Cpu);
        let hidden: Vec<f32> = Vec::try_from(r.mask.sum_dim_intlist(1, false, Kind::Float)).unwrap();
        assert_eq!(hidden, vec![48.0; 3]);
    }

    #[test]
    fn losses_on_hand_built_tensors() {
        // Two patches of two values; patch 0 off by (1, 3) (patch MSE 5), patch 1 off by (2, 0) (MSE 2).
        let target = t(&[0., 0., 0., 0.], &[1, 2, 2]);
        let pred = t(&[1., 3., 2., 0.], &[1, 2, 2]);
        let only_first = t(&[1., 0.], &[1, 2]);
        let both = t(&[1., 1.], &[1, 2]);
        assert_eq!(masked_patch_mse(&pred, &target, &only_first).double_value(&[]), 5.0);
        assert_eq!(masked_patch_mse(&pred, &target, &both).double_value(&[]), 3.5);
        assert_eq!(frame_mse(&pred, &target).double_value(&[]), 3.5);
        let j = joint(Tensor::from(0.5f32), Tensor::from(0.25f32), Tensor::from(0.125f32), 1.0, 2.0);
        assert_eq!(j.total.double_value(&[]), 0.5 + 2.0 * 0.375);
        let s = j.scalars();
        assert_eq!(s.loss_dynamic, s.loss_recon + s.loss_pred);
        assert_eq!((s.loss_dynamic, s.weighted_static, s.weighted_dynamic, s.loss_total), (0.375, 0.5, 0.75, 1.25));
        assert_eq!((s.static_contribution, s.dynamic_contribution), (0.4, 0.6));
        assert_eq!(s.loss_ratio, 0.5 / 0.375);
    }

    #[test]
    fn batch_metrics_have_seed_001_names_and_identities() {
        let names: Vec<&str> = JointScalars::from_losses(0.3, 0.2, 0.1, 1.0, 1.0).batch_metrics().iter().map(|m| m.0).collect();
        for want in [
            "batch/loss_total", "batch/loss_static", "batch/loss_dynamic", "batch/loss_recon", "batch/loss_pred",
            "batch/loss_ratio", "batch/weighted_static", "batch/weighted_dynamic", "batch/alpha", "batch/beta",
            "batch/static_contribution", "batch/dynamic_contribution", "batch/mode",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        // Identities on awkward values: the logged dynamic loss is exactly recon + pred.
        for (st, rc, pr, a, b) in [(0.1f32, 0.2f32, 0.3f32, 0.7, 1.3), (1e-7, 3.3, 1e-9, 1.0, 0.5), (7.1, 0.01, 2.2, 0.25, 4.0)] {
            let s = joint(Tensor::from(st), Tensor::from(rc), Tensor::from(pr), a, b).scalars();
            let m: std::collections::HashMap<_, _> = s.batch_metrics().into_iter().collect();
            assert_eq!(m["batch/loss_dynamic"], m["batch/loss_recon"] + m["batch/loss_pred"]);
            assert!((m["batch/static_contribution"] + m["batch/dynamic_contribution"] - 1.0).abs() < 1e-15);
            assert_eq!(m["batch/loss_total"], m["batch/weighted_static"] + m["batch/weighted_dynamic"]);
            assert_eq!(m["batch/mode"], 2.0);
        }
    }
}
