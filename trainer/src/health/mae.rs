//! Seed 001's health rules for tactile MAE pretraining runs (METRICS.md
//! "Tactile MAE"), on the epoch metrics:
//! - `mae_loss_ratio` (rule): `epoch/loss_ratio` outside 0.5..1.5 (above: the
//!   dynamic task is too easy, raise beta; below: the static one, raise alpha);
//! - `mae_contribution` (rule): `epoch/actual_static_contribution` outside
//!   0.3..0.7 (the dynamic one is its complement);
//! - `mae_loss_rising` (rule): `epoch/train_loss`, `epoch/loss_static` or
//!   `epoch/loss_dynamic` higher than at the epoch before;
//! - NaN/Inf and spike events: the rules every run gets;
//! - informational: `epoch/loss_ratio` moving by more than 30 % between epochs,
//!   and the static contribution outside 0.4..0.6 (seed 001's "within 20 % of
//!   the expected 0.5").

use super::{has, make_check, obs, series, single, stability_checks, Check, CheckKind, Meta, Obs, SpikeEvent};
use crate::metrics::Record;

/// A tactile MAE run logs `batch/loss_total`.
pub fn is_mae_run(recs: &[Record]) -> bool {
    has(recs, "batch/loss_total")
}

const NO_EPOCH: &str = "no epoch metrics yet (an epoch has not ended)";

/// Epoch-over-epoch observations of `name`: `bad(previous, value)`.
fn epoch_changes(recs: &[Record], name: &str, bad: impl Fn(f64, f64) -> bool, short: &str) -> Vec<Obs> {
    let pts: Vec<(u64, f64)> = series(recs, name, 0).collect();
    pts.windows(2)
        .map(|w| {
            let ((_, prev), (s, v)) = (w[0], w[1]);
            Obs { label: format!("{short} "), ..obs(s, v, (v - prev) / prev.abs().max(1e-12), bad(prev, v)) }
        })
        .collect()
}

pub fn checks(recs: &[Record], events: &[SpikeEvent]) -> Vec<Check> {
    let have_epochs = has(recs, "epoch/loss_ratio");
    let mut checks = vec![
        make_check(
            Meta { id: "mae_loss_ratio", kind: CheckKind::Rule, description: "epoch/loss_ratio: static vs dynamic balance", threshold: "outside 0.5..1.5" },
            single(recs, "epoch/loss_ratio", 0, |v| !(0.5..=1.5).contains(&v), |v| (v.ln()).abs()),
            NO_EPOCH.into(),
        ),
        make_check(
            Meta { id: "mae_contribution", kind: CheckKind::Rule, description: "epoch/actual_static_contribution (dynamic = 1 - static)", threshold: "outside 0.3..0.7" },
            single(recs, "epoch/actual_static_contribution", 0, |v| !(0.3..=0.7).contains(&v), |v| (v - 0.5).abs()),
            NO_EPOCH.into(),
        ),
    ];
    let rising = have_epochs.then(|| {
        [("epoch/train_loss", "train_loss"), ("epoch/loss_static", "loss_static"), ("epoch/loss_dynamic", "loss_dynamic")]
            .iter()
            .flat_map(|(n, short)| epoch_changes(recs, n, |prev, v| v > prev, short))
            .collect()
    });
    checks.push(make_check(
        Meta { id: "mae_loss_rising", kind: CheckKind::Rule, description: "an epoch loss above the epoch before", threshold: "any rise" },
        rising,
        NO_EPOCH.into(),
    ));
    checks.extend(stability_checks(recs, events));
    checks.push(make_check(
        Meta { id: "mae_ratio_stable", kind: CheckKind::Healthy, description: "epoch/loss_ratio steady between epochs", threshold: "change < 30%" },
        have_epochs.then(|| epoch_changes(recs, "epoch/loss_ratio", |prev, v| (v - prev).abs() > 0.3 * prev.abs(), "loss_ratio")),
        NO_EPOCH.into(),
    ));
    checks.push(make_check(
        Meta { id: "mae_contribution_near_half", kind: CheckKind::Healthy, description: "epoch/actual_static_contribution near 0.5", threshold: "in 0.4..0.6" },
        single(recs, "epoch/actual_static_contribution", 0, |v| !(0.4..=0.6).contains(&v), |v| (v - 0.5).abs()),
        NO_EPOCH.into(),
    ));
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{analyse_records, Verdict};

    /// Batch records at every step and an epoch record every 10 steps, from
    /// per-epoch (train_loss, static, dynamic, ratio, static share).
    fn run(epochs: &[(f64, f64, f64, f64, f64)]) -> Vec<Record> {
        let mut out = Vec::new();
        for (e, &(tl, st, dy, ratio, share)) in epochs.iter().enumerate() {
            for i in 1..=10u64 {
                let step = e as u64 * 10 + i;
                let mut scalars: std::collections::BTreeMap<String, f64> =
                    [("batch/loss_total", tl), ("batch/loss_static", st), ("batch/loss_dynamic", dy)].iter().map(|(k, v)| (k.to_string(), *v)).collect();
                if i == 10 {
                    for (k, v) in [("epoch/train_loss", tl), ("epoch/loss_static", st), ("epoch/loss_dynamic", dy), ("epoch/loss_ratio", ratio), ("epoch/actual_static_contribution", share)] {
                        scalars.insert(k.into(), v);
                    }
                }
                out.push(Record { step, epoch: e as u64, wall_time: 0.0, scalars });
            }
        }
        out
    }

    fn verdict(recs: &[Record], id: &str) -> (Verdict, Vec<u64>) {
        let r = analyse_records(std::path::Path::new("run"), recs, vec![]);
        let c = r.check(id).unwrap_or_else(|| panic!("no check {id}"));
        (c.verdict.clone(), c.offending_steps.clone())
    }

    #[test]
    fn seed_001_rules_fire_on_their_conditions_only() {
        let healthy = run(&[(1.0, 0.9, 1.0, 0.9, 0.47), (0.8, 0.7, 0.85, 0.82, 0.45), (0.6, 0.5, 0.62, 0.8, 0.45)]);
        let r = analyse_records(std::path::Path::new("run"), &healthy, vec![]);
        assert!(r.is_healthy(), "{}", r.render());
        assert!(r.check("gate_saturation_high").is_none(), "ManiFlow rules on an MAE run");
        // loss_ratio 1.8 at epoch 1 (step 20), 0.4 at epoch 2 (step 30).
        let skewed = run(&[(1.0, 0.9, 1.0, 0.9, 0.47), (0.8, 1.1, 0.6, 1.8, 0.5), (0.6, 0.2, 0.5, 0.4, 0.5)]);
        assert_eq!(verdict(&skewed, "mae_loss_ratio"), (Verdict::Warn, vec![20, 30]));
        assert_eq!(verdict(&skewed, "mae_ratio_stable").0, Verdict::Info);
        // Contribution 0.75 at epoch 1; 0.35 is inside the rule but outside the healthy band.
        let share = run(&[(1.0, 0.9, 1.0, 0.9, 0.35), (0.8, 0.7, 0.8, 0.9, 0.75), (0.6, 0.5, 0.6, 0.9, 0.5)]);
        assert_eq!(verdict(&share, "mae_contribution"), (Verdict::Warn, vec![20]));
        assert_eq!(verdict(&share, "mae_contribution_near_half"), (Verdict::Info, vec![10, 20]));
        // loss_dynamic rises at epoch 2 while the total falls.
        let rising = run(&[(1.0, 0.9, 1.0, 0.9, 0.47), (0.8, 0.7, 0.8, 0.9, 0.47), (0.7, 0.5, 0.81, 0.9, 0.47)]);
        assert_eq!(verdict(&rising, "mae_loss_rising"), (Verdict::Warn, vec![30]));
        // NaN in a batch metric.
        let mut nan = healthy.clone();
        nan[4].scalars.insert("batch/loss_static".into(), f64::NAN);
        assert_eq!(verdict(&nan, "nonfinite"), (Verdict::Warn, vec![5]));
        // Before the first epoch ends, the epoch rules are not applicable.
        let early = &healthy[..5];
        assert!(matches!(verdict(early, "mae_loss_ratio").0, Verdict::NotApplicable(_)));
        assert!(matches!(verdict(early, "mae_loss_rising").0, Verdict::NotApplicable(_)));
    }
}
