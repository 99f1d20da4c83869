//! Feature normalisation, per element, in the form the hot path wants:
//!
//! ```text
//! normalise:   y = (x - sub) * mul + add
//! unnormalise: x = (y - add) * inv + sub
//! ```
//!
//! | mode | sub | mul | add | inv |
//! |---|---|---|---|---|
//! | identity | 0 | 1 | 0 | 1 |
//! | mean_std (LeRobot) | mean | 1 / (std + eps) | 0 | std (no eps, as LeRobot) |
//! | min_max (LeRobot) | min | 2 / d, d = max - min or eps where d == 0 | -1 | d / 2 |
//! | quantiles / quantile10 | q01 / q10 | as min_max with q99 / q90 | -1 | d / 2 |
//! | limits (ManiFlow) | min | 2 / r, r = max - min; 1 where r < 1e-4 | -1; 0 where r < 1e-4 | r / 2; 1 |

use crate::policy::manifest::Normalization;

/// Range below which a `limits` dimension counts as constant (diffusion-policy's `range_eps`).
pub const LIMITS_RANGE_EPS: f32 = 1e-4;

#[derive(Debug, Clone)]
pub struct Normalizer {
    sub: Vec<f32>,
    mul: Vec<f32>,
    add: Vec<f32>,
    inv: Vec<f32>,
}

impl Normalizer {
    /// Build from validated manifest statistics for a feature of `len` values.
    pub fn new(norm: &Normalization, len: usize) -> Normalizer {
        let mut n = Normalizer {
            sub: vec![0.0; len],
            mul: vec![1.0; len],
            add: vec![0.0; len],
            inv: vec![1.0; len],
        };
        let lerobot_minmax = |n: &mut Normalizer, lo: &[f32], hi: &[f32], eps: f32| {
            for i in 0..len {
                let mut d = hi[i] - lo[i];
                if d == 0.0 {
                    d = eps;
                }
                n.sub[i] = lo[i];
                n.mul[i] = 2.0 / d;
                n.add[i] = -1.0;
                n.inv[i] = d / 2.0;
            }
        };
        match norm {
            Normalization::Identity => {}
            Normalization::MeanStd { mean, std, eps } => {
                for i in 0..len {
                    n.sub[i] = mean[i];
                    n.mul[i] = 1.0 / (std[i] + eps);
                    n.inv[i] = std[i];
                }
            }
            Normalization::MinMax { min, max, eps } => lerobot_minmax(&mut n, min, max, *eps),
            Normalization::Quantiles { q01, q99, eps } => lerobot_minmax(&mut n, q01, q99, *eps),
            Normalization::Quantile10 { q10, q90, eps } => lerobot_minmax(&mut n, q10, q90, *eps),
            Normalization::Limits { min, max } => {
                for i in 0..len {
                    let r = max[i] - min[i];
                    n.sub[i] = min[i];
                    if r < LIMITS_RANGE_EPS {
                        n.mul[i] = 1.0;
                        n.add[i] = 0.0;
                        n.inv[i] = 1.0;
                    } else {
                        n.mul[i] = 2.0 / r;
                        n.add[i] = -1.0;
                        n.inv[i] = r / 2.0;
                    }
                }
            }
        }
        n
    }

    pub fn len(&self) -> usize {
        self.sub.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sub.is_empty()
    }

    /// Normalise one value of element `i`.
    #[inline]
    pub fn normalize_one(&self, i: usize, x: f32) -> f32 {
        (x - self.sub[i]) * self.mul[i] + self.add[i]
    }

    /// Normalise a row `(len,)` into `out`.
    #[inline]
    pub fn normalize(&self, x: &[f32], out: &mut [f32]) {
        for (i, (o, v)) in out.iter_mut().zip(x).enumerate() {
            *o = (v - self.sub[i]) * self.mul[i] + self.add[i];
        }
    }

    /// Unnormalise a row `(len,)` into `out`.
    #[inline]
    pub fn unnormalize(&self, y: &[f32], out: &mut [f32]) {
        for (i, (o, v)) in out.iter_mut().zip(y).enumerate() {
            *o = (v - self.add[i]) * self.inv[i] + self.sub[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f32) {
        assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{a} vs {b}");
    }

    #[test]
    fn mean_std_follows_lerobot_eps_rules() {
        let n = Normalizer::new(
            &Normalization::MeanStd {
                mean: vec![1.0, -2.0],
                std: vec![2.0, 0.0],
                eps: 1e-8,
            },
            2,
        );
        let mut y = [0.0; 2];
        n.normalize(&[5.0, -2.0], &mut y);
        close(y[0], 2.0); // (5 - 1) / (2 + 1e-8)
        close(y[1], 0.0); // std 0: (x - mean) / 1e-8 = 0 at the mean
        let mut x = [0.0; 2];
        n.unnormalize(&[1.5, 3.0], &mut x);
        close(x[0], 4.0); // 1.5 * 2 + 1, no eps on the way back
        close(x[1], -2.0); // 3 * 0 - 2
    }

    #[test]
    fn min_max_and_quantiles() {
        let n = Normalizer::new(
            &Normalization::MinMax {
                min: vec![0.0, 3.0],
                max: vec![10.0, 3.0],
                eps: 1e-8,
            },
            2,
        );
        let mut y = [0.0; 2];
        n.normalize(&[2.5, 3.0], &mut y);
        close(y[0], -0.5); // 2 * 2.5 / 10 - 1
        close(y[1], -1.0); // d == 0 -> eps: 2 * 0 / eps - 1
        let mut x = [0.0; 2];
        n.unnormalize(&[0.0, 0.0], &mut x);
        close(x[0], 5.0);
        close(x[1], 3.0 + 0.5e-8);
        let q = Normalizer::new(
            &Normalization::Quantiles {
                q01: vec![-1.0],
                q99: vec![1.0],
                eps: 1e-8,
            },
            1,
        );
        let mut y = [0.0];
        q.normalize(&[0.5], &mut y);
        close(y[0], 0.5);
    }

    #[test]
    fn limits_maps_constant_dims_to_zero() {
        let n = Normalizer::new(
            &Normalization::Limits {
                min: vec![-90.0, 7.0],
                max: vec![90.0, 7.0],
            },
            2,
        );
        let mut y = [0.0; 2];
        n.normalize(&[45.0, 7.0], &mut y);
        close(y[0], 0.5);
        close(y[1], 0.0);
        let mut x = [0.0; 2];
        n.unnormalize(&[-1.0, 0.25], &mut x);
        close(x[0], -90.0);
        close(x[1], 7.25);
    }
}
