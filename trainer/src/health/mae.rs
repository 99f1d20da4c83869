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
