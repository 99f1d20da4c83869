//! `maniflow-train health RUN_DIR`: the health rules of METRICS.md (seed 000's
//! checklist) applied to a run's `metrics.jsonl`, printed as a verdict table,
//! written to `health.json`, with plots in `plots/`. Tactile MAE pretraining
//! runs (they log `batch/loss_total`) get seed 001's rules instead ([`mae`]).
//!
//! Choices where METRICS.md leaves room:
//! - Records sharing a step are merged first ([`crate::metrics::merge_by_step`]).
//! - Warm-up: the ratio rules (`flow_ct_ratio`, `velocity_imbalance`) and all
//!   informational "healthy range" checks ignore steps before
//!   `first + 5% x (last - first)` (losses and magnitudes are noisy and tiny at
//!   the start); absolute thresholds and NaN/Inf apply from the first step.
//! - "val_loss much above train_loss": `val_loss > 2 x` the mean of the finite
//!   `train_loss` values logged at steps in `[s - 10% x (s - first), s]`, where
//!   `s` is the val step (the most recent train_loss at or before `s` when that
//!   window holds none). "train/val close" (informational) is `val <= 1.5 x` that
//!   same reference.
//! - Comparisons are strict (`> 0.4` warns, `0.4` does not). Non-finite values
//!   are only reported by the `nonfinite` rule.
//! - Loss spikes: `events.jsonl` lines whose `event` starts with `spike` or
//!   `nonfinite` are listed, and any of them makes the `loss_spikes` rule warn.
//! - Verdicts: a rule gives OK / WARN / N/A (metric not logged, with the reason);
//!   a healthy-range check gives OK / INFO / N/A and never changes the overall
//!   verdict, which is HEALTHY or `WARN (n rules)`.

pub mod mae;
pub mod plots;
pub mod router;

use crate::metrics::{merge_by_step, read_json_lines, read_jsonl, Record};
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Offending steps kept per check (the count is always exact).
pub const MAX_LISTED_STEPS: usize = 20;
/// Steps shown in the printed table per check.
const PRINTED_STEPS: usize = 8;
/// Leading fraction of the run skipped by ratio rules and healthy checks.
pub const WARMUP_FRACTION: f64 = 0.05;
/// Trailing fraction of steps (up to the val step) averaged for the train reference.
pub const VAL_WINDOW_FRACTION: f64 = 0.10;

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Ok,
    /// A warning rule fired.
    Warn,
    /// A healthy-range check is outside its range (informational).
    Info,
    /// The metrics the check needs were not logged.
    NotApplicable(String),
}

impl Verdict {
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::Warn => "WARN",
            Verdict::Info => "INFO",
            Verdict::NotApplicable(_) => "N/A",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CheckKind {
    /// A warning rule (counts in the overall verdict).
    Rule,
    /// A "healthy range" check (informational only).
    Healthy,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub id: &'static str,
    pub kind: CheckKind,
    pub description: &'static str,
    pub threshold: String,
    pub verdict: Verdict,
    /// First [`MAX_LISTED_STEPS`] offending steps, ascending.
    pub offending_steps: Vec<u64>,
    /// Number of offending steps in all.
    pub offending_count: usize,
    /// Worst value and where, or the observed range, or the N/A reason.
    pub detail: String,
}

/// A `spike...` / `nonfinite...` line of events.jsonl.
#[derive(Debug, Clone, PartialEq)]
pub struct SpikeEvent {
    pub step: u64,
    pub event: String,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub run_dir: PathBuf,
    /// Records after merging by step.
    pub n_records: usize,
    pub first_step: Option<u64>,
    pub last_step: Option<u64>,
    pub checks: Vec<Check>,
    pub events: Vec<SpikeEvent>,
}

/// Read `run_dir/metrics.jsonl` (and `events.jsonl` when present) and apply the rules.
pub fn analyse(run_dir: impl AsRef<Path>) -> Result<Report> {
    let run_dir = run_dir.as_ref();
    let path = run_dir.join("metrics.jsonl");
    anyhow::ensure!(
        path.exists(),
        "no metrics.jsonl in {} (is this a run directory?)",
        run_dir.display()
    );
    let records = read_jsonl(&path)?;
    let ev_path = run_dir.join("events.jsonl");
    let events = if ev_path.exists() {
        read_spike_events(&ev_path)?
    } else {
        Vec::new()
    };
    Ok(analyse_records(run_dir, &records, events))
}

/// What `maniflow-train health RUN_DIR` does: analyse, print the table, write
/// `health.json` and the plots (their paths are printed).
pub fn run(run_dir: impl AsRef<Path>) -> Result<Report> {
    let run_dir = run_dir.as_ref();
    let report = analyse(run_dir)?;
    report.print();
    let json_path = run_dir.join("health.json");
    report.write_json(&json_path)?;
    println!("wrote {}", json_path.display());
    let records = merge_by_step(&read_jsonl(run_dir.join("metrics.jsonl"))?);
    for p in plots::write_all(run_dir, &records)? {
        println!("wrote {}", p.display());
    }
    Ok(report)
}

/// Events whose text starts with `spike` or `nonfinite` (other events and a
/// truncated last line are ignored).
pub fn read_spike_events(path: &Path) -> Result<Vec<SpikeEvent>> {
    let mut out = Vec::new();
    for (_, map) in read_json_lines(path)? {
        let (Some(step), Some(ev)) = (
            map.get("step").and_then(|v| v.as_u64()),
            map.get("event").and_then(|v| v.as_str()),
        ) else {
            continue;
        };
        if ev.starts_with("spike") || ev.starts_with("nonfinite") {
            out.push(SpikeEvent {
                step,
                event: ev.to_string(),
            });
        }
    }
    Ok(out)
}

/// One evaluated value of a check at a step.
struct Obs {
    step: u64,
    value: f64,
    /// Larger = worse (picks the value shown as "worst").
    score: f64,
    bad: bool,
    label: String,
}

fn obs(step: u64, value: f64, score: f64, bad: bool) -> Obs {
    Obs {
        step,
        value,
        score,
        bad,
        label: String::new(),
    }
}

struct Meta {
    id: &'static str,
    kind: CheckKind,
    description: &'static str,
    threshold: &'static str,
}

fn make_check(meta: Meta, observations: Option<Vec<Obs>>, na_reason: String) -> Check {
    let base = |verdict, steps: Vec<u64>, count, detail| Check {
        id: meta.id,
        kind: meta.kind,
        description: meta.description,
        threshold: meta.threshold.to_string(),
        verdict,
        offending_steps: steps,
        offending_count: count,
        detail,
    };
    let Some(obs) = observations else {
        return base(
            Verdict::NotApplicable(na_reason.clone()),
            Vec::new(),
            0,
            na_reason,
        );
    };
    let bad_steps: BTreeSet<u64> = obs.iter().filter(|o| o.bad).map(|o| o.step).collect();
    let detail = if let Some(w) = obs
        .iter()
        .filter(|o| o.bad)
        .max_by(|a, b| a.score.total_cmp(&b.score))
    {
        format!("worst {}{} at step {}", w.label, fmt_val(w.value), w.step)
    } else if obs.is_empty() {
        "no values after warm-up".to_string()
    } else {
        let lo = obs.iter().map(|o| o.value).fold(f64::INFINITY, f64::min);
        let hi = obs
            .iter()
            .map(|o| o.value)
            .fold(f64::NEG_INFINITY, f64::max);
        format!(
            "range {}..{} over {} values",
            fmt_val(lo),
            fmt_val(hi),
            obs.len()
        )
    };
    let verdict = match (bad_steps.is_empty(), meta.kind) {
        (true, _) => Verdict::Ok,
        (false, CheckKind::Rule) => Verdict::Warn,
        (false, CheckKind::Healthy) => Verdict::Info,
    };
    let count = bad_steps.len();
    base(
        verdict,
        bad_steps.into_iter().take(MAX_LISTED_STEPS).collect(),
        count,
        detail,
    )
}

fn fmt_val(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
    }
}

fn has(records: &[Record], name: &str) -> bool {
    records.iter().any(|r| r.scalars.contains_key(name))
}

/// Finite values of `name` at steps >= `from`.
fn series<'a>(
    records: &'a [Record],
    name: &str,
    from: u64,
) -> impl Iterator<Item = (u64, f64)> + 'a {
    let name = name.to_string();
    records
        .iter()
        .filter(move |r| r.step >= from)
        .filter_map(move |r| r.get(&name).filter(|v| v.is_finite()).map(|v| (r.step, v)))
}

/// Observations of a single metric with a predicate; None when never logged.
fn single(
    records: &[Record],
    name: &str,
    from: u64,
    bad: impl Fn(f64) -> bool,
    score: impl Fn(f64) -> f64,
) -> Option<Vec<Obs>> {
    has(records, name).then(|| {
        series(records, name, from)
            .map(|(s, v)| obs(s, v, score(v), bad(v)))
            .collect()
    })
}

fn not_logged(names: &str) -> String {
    format!("{names} not logged")
}

/// Names of the `gate/modality_*_mean` metrics present.
fn modality_mean_keys(records: &[Record]) -> Vec<String> {
    let keys: BTreeSet<&String> = records
        .iter()
        .flat_map(|r| r.scalars.keys())
        .filter(|k| k.starts_with("gate/modality_") && k.ends_with("_mean"))
        .collect();
    keys.into_iter().cloned().collect()
}

fn modality_obs(
    records: &[Record],
    keys: &[String],
    from: u64,
    bad: impl Fn(f64) -> bool,
    score: impl Fn(f64) -> f64,
) -> Option<Vec<Obs>> {
    if keys.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for r in records.iter().filter(|r| r.step >= from) {
        for k in keys {
            if let Some(v) = r.get(k).filter(|v| v.is_finite()) {
                let name = k
                    .trim_start_matches("gate/modality_")
                    .trim_end_matches("_mean");
                out.push(Obs {
                    label: format!("{name}="),
                    ..obs(r.step, v, score(v), bad(v))
                });
            }
        }
    }
    Some(out)
}

/// (step, val/train_ref) for every finite val_loss with a train reference.
fn val_train_ratios(records: &[Record], first: u64) -> Vec<(u64, f64)> {
    // prefix sums over records (sorted by step) of finite train_loss
    let steps: Vec<u64> = records.iter().map(|r| r.step).collect();
    let mut cum_sum = vec![0.0; records.len() + 1];
    let mut cum_cnt = vec![0usize; records.len() + 1];
    for (i, r) in records.iter().enumerate() {
        let t = r.get("train_loss").filter(|v| v.is_finite());
        cum_sum[i + 1] = cum_sum[i] + t.unwrap_or(0.0);
        cum_cnt[i + 1] = cum_cnt[i] + t.is_some() as usize;
    }
    let mut out = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let Some(val) = r.get("val_loss").filter(|v| v.is_finite()) else {
            continue;
        };
        let s = r.step;
        let lower = s as f64 - VAL_WINDOW_FRACTION * (s - first) as f64;
        let lo = steps.partition_point(|&x| (x as f64) < lower);
        let hi = i + 1;
        let reference = if cum_cnt[hi] > cum_cnt[lo] {
            Some((cum_sum[hi] - cum_sum[lo]) / (cum_cnt[hi] - cum_cnt[lo]) as f64)
        } else {
            records[..hi]
                .iter()
                .rev()
                .find_map(|r| r.get("train_loss").filter(|v| v.is_finite()))
        };
        if let Some(t) = reference {
            let ratio = if t > 0.0 {
                val / t
            } else if val > 0.0 {
                f64::INFINITY
            } else {
                1.0
            };
            out.push((s, ratio));
        }
    }
    out
}

/// Apply every rule to `records` (any order; merged by step here).
#[allow(clippy::vec_init_then_push)]
/// The rules every run gets: NaN/Inf in any metric, spike and non-finite events.
fn stability_checks(recs: &[Record], events: &[SpikeEvent]) -> Vec<Check> {
    let mut checks = Vec::new();
    let nonfinite: Vec<Obs> = recs
        .iter()
        .filter_map(|r| {
            let bad: Vec<&str> = r
                .scalars
                .iter()
                .filter(|(_, v)| !v.is_finite())
                .map(|(k, _)| k.as_str())
                .collect();
            (!bad.is_empty()).then(|| Obs {
                step: r.step,
                value: f64::NAN,
                score: bad.len() as f64,
                bad: true,
                label: format!("{} = ", bad.join(",")),
            })
        })
        .collect();
    let mut nf_check = make_check(
        Meta {
            id: "nonfinite",
            kind: CheckKind::Rule,
            description: "NaN/Inf in any metric",
            threshold: "any",
        },
        (!recs.is_empty()).then_some(nonfinite),
        "no records".into(),
    );
    if nf_check.verdict == Verdict::Ok {
        nf_check.detail = "all values finite".into();
    } else if nf_check.verdict == Verdict::Warn {
        let names: BTreeSet<&str> = recs
            .iter()
            .flat_map(|r| {
                r.scalars
                    .iter()
                    .filter(|(_, v)| !v.is_finite())
                    .map(|(k, _)| k.as_str())
            })
            .collect();
        nf_check.detail = format!("in {}", names.into_iter().collect::<Vec<_>>().join(", "));
    }
    checks.push(nf_check);
    let spike_steps: BTreeSet<u64> = events.iter().map(|e| e.step).collect();
    checks.push(Check {
        id: "loss_spikes",
        kind: CheckKind::Rule,
        description: "spike / nonfinite events in events.jsonl",
        threshold: "any".to_string(),
        verdict: if events.is_empty() {
            Verdict::Ok
        } else {
            Verdict::Warn
        },
        offending_count: spike_steps.len(),
        offending_steps: spike_steps.into_iter().take(MAX_LISTED_STEPS).collect(),
        detail: if events.is_empty() {
            "none recorded".into()
        } else {
            format!("{} events", events.len())
        },
    });
    checks
}

pub fn analyse_records(run_dir: &Path, records: &[Record], events: Vec<SpikeEvent>) -> Report {
    let records = merge_by_step(records);
    let recs = &records[..];
    let first = recs.first().map(|r| r.step);
    let last = recs.last().map(|r| r.step);
    let (f, l) = (first.unwrap_or(0), last.unwrap_or(0));
    let warm = f + (WARMUP_FRACTION * (l - f) as f64).ceil() as u64;
    let gate_reason = |m: &str| format!("{m} not logged (use_gate_attn off?)");
    if mae::is_mae_run(recs) {
        return Report {
            run_dir: run_dir.to_path_buf(),
            n_records: recs.len(),
            first_step: first,
            last_step: last,
            checks: mae::checks(recs, &events),
            events,
        };
    }
    let attn_reason =
        "attn/entropy not logged (attention stats off or not yet recorded)".to_string();
    let mod_keys = modality_mean_keys(recs);
    let mut checks = Vec::new();

    // ---- warning rules
    checks.push(make_check(
        Meta {
            id: "gate_saturation_high",
            kind: CheckKind::Rule,
            description: "gate/saturation_high_ratio: some modality over-relied",
            threshold: "> 0.4",
        },
        single(recs, "gate/saturation_high_ratio", 0, |v| v > 0.4, |v| v),
        gate_reason("gate/saturation_high_ratio"),
    ));
    checks.push(make_check(
        Meta {
            id: "gate_saturation_low",
            kind: CheckKind::Rule,
            description: "gate/saturation_low_ratio: some modality ignored",
            threshold: "> 0.4",
        },
        single(recs, "gate/saturation_low_ratio", 0, |v| v > 0.4, |v| v),
        gate_reason("gate/saturation_low_ratio"),
    ));
    checks.push(make_check(
        Meta {
            id: "modality_gate_ignored",
            kind: CheckKind::Rule,
            description: "a gate/modality_*_mean: modality ignored",
            threshold: "< 0.1",
        },
        modality_obs(recs, &mod_keys, 0, |v| v < 0.1, |v| -v),
        gate_reason("gate/modality_*_mean"),
    ));
    checks.push(make_check(
        Meta {
            id: "modality_gate_over_relied",
            kind: CheckKind::Rule,
            description: "a gate/modality_*_mean: modality over-relied",
            threshold: "> 0.9",
        },
        modality_obs(recs, &mod_keys, 0, |v| v > 0.9, |v| v),
        gate_reason("gate/modality_*_mean"),
    ));
    checks.push(make_check(
        Meta {
            id: "attn_collapse",
            kind: CheckKind::Rule,
            description: "attn/entropy: attention collapse",
            threshold: "< 0.3",
        },
        single(recs, "attn/entropy", 0, |v| v < 0.3, |v| -v),
        attn_reason.clone(),
    ));
    let flow_ct = (has(recs, "loss_flow") && has(recs, "loss_ct")).then(|| {
        recs.iter()
            .filter(|r| r.step >= warm)
            .filter_map(|r| {
                let (a, b) = (r.get("loss_flow")?, r.get("loss_ct")?);
                if !(a.is_finite() && b.is_finite()) || (a == 0.0 && b == 0.0) {
                    return None;
                }
                let ratio = if b > 0.0 { a / b } else { f64::INFINITY };
                Some(Obs {
                    label: "flow/ct=".into(),
                    ..obs(
                        r.step,
                        ratio,
                        ratio.ln().abs(),
                        !(1.0 / 3.0..=3.0).contains(&ratio),
                    )
                })
            })
            .collect()
    });
    checks.push(make_check(
        Meta {
            id: "flow_ct_ratio",
            kind: CheckKind::Rule,
            description: "loss_flow / loss_ct: flow vs consistency imbalance (after warm-up)",
            threshold: "> 3 or < 1/3",
        },
        flow_ct,
        not_logged("loss_flow / loss_ct"),
    ));
    let v_names = ["v_flow_pred_magnitude", "v_ct_pred_magnitude"];
    let v_mag = v_names.iter().any(|n| has(recs, n)).then(|| {
        v_names
            .iter()
            .flat_map(|n| {
                let short = if n.starts_with("v_flow") {
                    "v_flow="
                } else {
                    "v_ct="
                };
                series(recs, n, 0).map(move |(s, v)| Obs {
                    label: short.into(),
                    ..obs(s, v, v, v > 10.0)
                })
            })
            .collect()
    });
    checks.push(make_check(
        Meta {
            id: "velocity_magnitude",
            kind: CheckKind::Rule,
            description: "v_flow/v_ct_pred_magnitude: velocity too large",
            threshold: "> 10",
        },
        v_mag,
        not_logged("v_flow_pred_magnitude / v_ct_pred_magnitude"),
    ));
    let v_ratio = v_names.iter().all(|n| has(recs, n)).then(|| {
        recs.iter()
            .filter(|r| r.step >= warm)
            .filter_map(|r| {
                let (a, b) = (r.get(v_names[0])?, r.get(v_names[1])?);
                if !(a.is_finite() && b.is_finite()) || (a == 0.0 && b == 0.0) {
                    return None;
                }
                let (hi, lo) = (a.abs().max(b.abs()), a.abs().min(b.abs()));
                let ratio = if lo > 0.0 { hi / lo } else { f64::INFINITY };
                Some(Obs {
                    label: "max/min=".into(),
                    ..obs(r.step, ratio, ratio, ratio > 2.0)
                })
            })
            .collect()
    });
    checks.push(make_check(
        Meta {
            id: "velocity_imbalance",
            kind: CheckKind::Rule,
            description: "v_flow vs v_ct magnitude differ (after warm-up)",
            threshold: "ratio > 2",
        },
        v_ratio,
        not_logged("v_flow_pred_magnitude and v_ct_pred_magnitude"),
    ));
    let have_val = has(recs, "val_loss") && has(recs, "train_loss");
    let ratios = if have_val {
        val_train_ratios(recs, f)
    } else {
        Vec::new()
    };
    let val_reason = not_logged("val_loss / train_loss");
    checks.push(make_check(
        Meta {
            id: "val_above_train",
            kind: CheckKind::Rule,
            description: "val_loss / mean train_loss over the last 10% of steps: overfitting",
            threshold: "> 2",
        },
        have_val.then(|| {
            ratios
                .iter()
                .map(|&(s, r)| Obs {
                    label: "val/train=".into(),
                    ..obs(s, r, r, r > 2.0)
                })
                .collect()
        }),
        val_reason.clone(),
    ));
    checks.extend(router::checks(recs, warm));
    checks.extend(stability_checks(recs, &events));

    // ---- healthy ranges (informational)
    checks.push(make_check(
        Meta {
            id: "train_val_close",
            kind: CheckKind::Healthy,
            description: "val_loss close to train_loss (ratio as in val_above_train)",
            threshold: "val/train <= 1.5",
        },
        have_val.then(|| {
            ratios
                .iter()
                .filter(|(s, _)| *s >= warm)
                .map(|&(s, r)| Obs {
                    label: "val/train=".into(),
                    ..obs(s, r, r, r > 1.5)
                })
                .collect()
        }),
        val_reason,
    ));
    checks.push(make_check(
        Meta {
            id: "gate_mean_balanced",
            kind: CheckKind::Healthy,
            description: "gate/mean_activation ~0.5",
            threshold: "in 0.3..0.7",
        },
        single(
            recs,
            "gate/mean_activation",
            warm,
            |v| !(0.3..=0.7).contains(&v),
            |v| (v - 0.5).abs(),
        ),
        gate_reason("gate/mean_activation"),
    ));
    let sat_names = ["gate/saturation_high_ratio", "gate/saturation_low_ratio"];
    let sat = sat_names.iter().any(|n| has(recs, n)).then(|| {
        sat_names
            .iter()
            .flat_map(|n| {
                let short = if n.contains("high") { "high=" } else { "low=" };
                series(recs, n, warm).map(move |(s, v)| Obs {
                    label: short.into(),
                    ..obs(s, v, v, v >= 0.2)
                })
            })
            .collect()
    });
    checks.push(make_check(
        Meta {
            id: "gate_saturation_healthy",
            kind: CheckKind::Healthy,
            description: "gate saturation ratios small",
            threshold: "both < 0.2",
        },
        sat,
        gate_reason("gate/saturation_*_ratio"),
    ));
    checks.push(make_check(
        Meta {
            id: "modality_gates_balanced",
            kind: CheckKind::Healthy,
            description: "every gate/modality_*_mean used",
            threshold: "in 0.2..0.8",
        },
        modality_obs(
            recs,
            &mod_keys,
            warm,
            |v| !(0.2..=0.8).contains(&v),
            |v| (v - 0.5).abs(),
        ),
        gate_reason("gate/modality_*_mean"),
    ));
    checks.push(make_check(
        Meta {
            id: "attn_entropy_healthy",
            kind: CheckKind::Healthy,
            description: "attn/entropy spread",
            threshold: "> 0.6",
        },
        single(recs, "attn/entropy", warm, |v| v <= 0.6, |v| -v),
        attn_reason,
    ));

    Report {
        run_dir: run_dir.to_path_buf(),
        n_records: recs.len(),
        first_step: first,
        last_step: last,
        checks,
        events,
    }
}

impl Check {
    /// "n: s1, s2, ... (+k more)" or "-".
    pub fn steps_summary(&self, max: usize) -> String {
        if self.offending_count == 0 {
            return "-".into();
        }
        let shown: Vec<String> = self
            .offending_steps
            .iter()
            .take(max)
            .map(|s| s.to_string())
            .collect();
        let more = self.offending_count - shown.len();
        let mut s = format!("{}: {}", self.offending_count, shown.join(","));
        if more > 0 {
            s.push_str(&format!(" (+{more} more)"));
        }
        s
    }
}

impl Report {
    /// Warning rules that fired.
    pub fn warned(&self) -> Vec<&Check> {
        self.checks
            .iter()
            .filter(|c| c.verdict == Verdict::Warn)
            .collect()
    }

    pub fn is_healthy(&self) -> bool {
        self.warned().is_empty()
    }

    pub fn check(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }

    /// `HEALTHY` or `WARN (n rules: a, b)`.
    pub fn verdict_line(&self) -> String {
        let w = self.warned();
        if w.is_empty() {
            "HEALTHY".into()
        } else {
            let ids: Vec<&str> = w.iter().map(|c| c.id).collect();
            format!(
                "WARN ({} rule{}: {})",
                w.len(),
                if w.len() == 1 { "" } else { "s" },
                ids.join(", ")
            )
        }
    }

    /// The printed report.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let span = match (self.first_step, self.last_step) {
            (Some(a), Some(b)) => format!("steps {a}..{b}"),
            _ => "no steps".into(),
        };
        out.push_str(&format!(
            "Health report for {} ({} records, {span})\n",
            self.run_dir.display(),
            self.n_records
        ));
        let rows = |kind: CheckKind| -> Vec<[String; 5]> {
            self.checks
                .iter()
                .filter(|c| c.kind == kind)
                .map(|c| {
                    [
                        c.id.to_string(),
                        c.verdict.label().to_string(),
                        c.threshold.clone(),
                        c.steps_summary(PRINTED_STEPS),
                        c.detail.clone(),
                    ]
                })
                .collect()
        };
        let sections = [
            ("Warning rules", rows(CheckKind::Rule)),
            ("Healthy ranges (informational)", rows(CheckKind::Healthy)),
        ];
        let header = [
            "check".to_string(),
            "verdict".into(),
            "threshold".into(),
            "offending steps".into(),
            "detail".into(),
        ];
        let mut widths = header.clone().map(|h| h.chars().count());
        for (_, rs) in &sections {
            for r in rs {
                for (w, cell) in widths.iter_mut().zip(r) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let fmt_row = |r: &[String; 5]| -> String {
            let mut line = String::new();
            for (i, (cell, w)) in r.iter().zip(widths).enumerate() {
                if i + 1 == r.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<w$}  "));
                }
            }
            line.trim_end().to_string() + "\n"
        };
        for (title, rs) in &sections {
            out.push_str(&format!("\n{title}\n"));
            out.push_str(&fmt_row(&header));
            let total: usize = widths.iter().sum::<usize>() + 8;
            out.push_str(&"-".repeat(total.min(160)));
            out.push('\n');
            for r in rs {
                out.push_str(&fmt_row(r));
            }
        }
        if !self.events.is_empty() {
            out.push_str(&format!(
                "\nLoss spike / non-finite events ({}):\n",
                self.events.len()
            ));
            for e in self.events.iter().take(MAX_LISTED_STEPS) {
                out.push_str(&format!("  step {}: {}\n", e.step, e.event));
            }
            if self.events.len() > MAX_LISTED_STEPS {
                out.push_str(&format!(
                    "  ... (+{} more)\n",
                    self.events.len() - MAX_LISTED_STEPS
                ));
            }
        }
        out.push_str(&format!("\nOverall: {}\n", self.verdict_line()));
        out
    }

    pub fn print(&self) {
        print!("{}", self.render());
    }

    /// The report as pretty-printed JSON (what `health.json` holds).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.to_json_value()).expect("JSON value serialises") + "\n"
    }

    pub fn to_json_value(&self) -> serde_json::Value {
        use serde_json::json;
        let checks: Vec<serde_json::Value> = self
            .checks
            .iter()
            .map(|c| {
                let mut v = json!({
                    "id": c.id,
                    "kind": match c.kind { CheckKind::Rule => "rule", CheckKind::Healthy => "healthy" },
                    "description": c.description,
                    "threshold": c.threshold,
                    "verdict": c.verdict.label(),
                    "offending_count": c.offending_count,
                    "offending_steps": c.offending_steps,
                    "detail": c.detail,
                });
                if let Verdict::NotApplicable(reason) = &c.verdict {
                    v["reason"] = json!(reason);
                }
                v
            })
            .collect();
        json!({
            "run_dir": self.run_dir.display().to_string(),
            "records": self.n_records,
            "first_step": self.first_step,
            "last_step": self.last_step,
            "verdict": if self.is_healthy() { "HEALTHY" } else { "WARN" },
            "verdict_line": self.verdict_line(),
            "warn_rules": self.warned().iter().map(|c| c.id).collect::<Vec<_>>(),
            "checks": checks,
            "events": self.events.iter().map(|e| json!({"step": e.step, "event": e.event})).collect::<Vec<_>>(),
        })
    }

    pub fn write_json(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.to_json()).with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// A healthy ManiFlow run: 200 records at steps 0,10,..,1990; val every 100
    /// steps, attention stats every 500.
    pub(crate) fn healthy_lines() -> Vec<serde_json::Map<String, serde_json::Value>> {
        let mut out = Vec::new();
        for i in 0..200u64 {
            let step = i * 10;
            let x = i as f64 / 199.0;
            let loss = 1.0 * (1.0 - x) + 0.1 * x;
            let mut m = serde_json::Map::new();
            let mut put = |k: &str, v: f64| {
                m.insert(k.to_string(), serde_json::json!(v));
            };
            put("step", step as f64);
            put("epoch", (i / 50) as f64);
            put("wall_time", 1.7e9 + step as f64);
            put("train_loss", loss);
            put("loss_flow", loss * 0.5);
            put("loss_ct", loss * 0.5);
            put("bc_loss", loss);
            put("v_flow_pred_magnitude", 1.0 + 0.1 * x);
            put("v_ct_pred_magnitude", 1.1);
            put("lr", 1e-4 * (1.0 - x));
            put("grad_norm", 2.0 - x);
            put("global_step", step as f64);
            put("gate/mean_activation", 0.5);
            put("gate/std_activation", 0.15);
            put("gate/saturation_high_ratio", 0.05);
            put("gate/saturation_low_ratio", 0.05);
            put("gate/layer_variance", 0.03);
            put("gate/early_layers_mean", 0.45);
            put("gate/late_layers_mean", 0.55);
            put("gate/early_vs_late_diff", 0.1);
            for (j, md) in ["head", "wrist", "tactile", "proprio"].iter().enumerate() {
                put(&format!("gate/modality_{md}_mean"), 0.35 + 0.1 * j as f64);
                put(&format!("gate/modality_{md}_std"), 0.1);
            }
            put("correlation/loss_vs_tactile_gate", loss * 0.55);
            put("correlation/loss_vs_proprio_gate", loss * 0.65);
            // 4 experts specialising: entropy 0.9 ln 4 at the start to 0.6 ln 4
            put("router/alpha_entropy_norm", 0.9 - 0.3 * x);
            put("router/alpha_entropy", (0.9 - 0.3 * x) * 4f64.ln());
            for (j, u) in [0.3, 0.3, 0.2, 0.2].iter().enumerate() {
                put(&format!("router/expert_usage_{j}"), *u);
            }
            if step % 100 == 0 {
                put("val_loss", loss * 1.1);
            }
            if step % 500 == 0 {
                put("attn/entropy", 0.8);
                put("attn/entropy_diff", 0.05);
                put("attn/modality_head", 0.3);
                put("attn/modality_wrist", 0.3);
                put("attn/modality_tactile", 0.2);
                put("attn/modality_proprio", 0.2);
                put("attn/modality_rgb", 0.6);
            }
            out.push(m);
        }
        out
    }

    fn write_run(dir: &Path, lines: &[serde_json::Map<String, serde_json::Value>]) {
        let mut f = std::fs::File::create(dir.join("metrics.jsonl")).unwrap();
        for l in lines {
            let mut s = serde_json::to_string(l).unwrap();
            s.push('\n');
            f.write_all(s.as_bytes()).unwrap();
        }
    }

    fn set(
        lines: &mut [serde_json::Map<String, serde_json::Value>],
        step: u64,
        k: &str,
        v: serde_json::Value,
    ) {
        let l = lines
            .iter_mut()
            .find(|l| l["step"].as_f64() == Some(step as f64))
            .unwrap();
        l.insert(k.to_string(), v);
    }

    fn analyse_lines(lines: &[serde_json::Map<String, serde_json::Value>]) -> Report {
        let dir = tempfile::tempdir().unwrap();
        write_run(dir.path(), lines);
        analyse(dir.path()).unwrap()
    }

    fn warned_ids(r: &Report) -> Vec<&'static str> {
        r.warned().iter().map(|c| c.id).collect()
    }

    #[test]
    fn healthy_run_triggers_nothing() {
        let r = analyse_lines(&healthy_lines());
        assert!(r.is_healthy(), "{}", r.render());
        for c in &r.checks {
            assert_eq!(c.verdict, Verdict::Ok, "{}: {}", c.id, r.render());
        }
        assert_eq!(r.verdict_line(), "HEALTHY");
        assert_eq!(
            (r.n_records, r.first_step, r.last_step),
            (200, Some(0), Some(1990))
        );
        let text = r.render();
        assert!(text.contains("Overall: HEALTHY"), "{text}");
        assert!(text.contains("gate_saturation_high"));
    }

    #[test]
    fn gate_saturation_rules() {
        let mut l = healthy_lines();
        set(&mut l, 100, "gate/saturation_high_ratio", 0.41.into());
        set(&mut l, 300, "gate/saturation_high_ratio", 0.7.into());
        set(&mut l, 200, "gate/saturation_low_ratio", 0.5.into());
        set(&mut l, 210, "gate/saturation_low_ratio", 0.4.into()); // not > 0.4
        let r = analyse_lines(&l);
        assert_eq!(
            warned_ids(&r),
            ["gate_saturation_high", "gate_saturation_low"]
        );
        let hi = r.check("gate_saturation_high").unwrap();
        assert_eq!(hi.offending_steps, [100, 300]);
        assert!(
            hi.detail.contains("0.7000") && hi.detail.contains("300"),
            "{}",
            hi.detail
        );
        assert_eq!(
            r.check("gate_saturation_low").unwrap().offending_steps,
            [200]
        );
        // informational check also flags them (and 210, where 0.4 >= 0.2)
        let h = r.check("gate_saturation_healthy").unwrap();
        assert_eq!(h.verdict, Verdict::Info);
        assert_eq!(h.offending_steps, [100, 200, 210, 300]);
        assert_eq!(
            r.verdict_line(),
            "WARN (2 rules: gate_saturation_high, gate_saturation_low)"
        );
    }

    #[test]
    fn router_rules_start_after_the_warm_up() {
        // Experts unspecialised (entropy 0.99 of ln E) up to step 190, then as healthy_lines;
        // without stages the warm-up is the first 5 % (steps < 100), so 100..=190 warn.
        let mut l = healthy_lines();
        for step in (0..200).step_by(10) {
            set(&mut l, step, "router/alpha_entropy_norm", 0.99.into());
        }
        let r = analyse_lines(&l);
        let u = r.check("router_unspecialised").unwrap();
        assert_eq!(u.verdict, Verdict::Warn, "{}", r.render());
        assert_eq!(u.offending_steps.first(), Some(&100), "the warm-up (first 5 %) is not judged");
        assert_eq!(u.offending_count, 10, "{:?}", u.offending_steps);
        // A staged run: the first stage is the warm-up, judged from the first `stage` >= 1.
        let mut staged = l.clone();
        for m in staged.iter_mut() {
            let step = m["step"].as_f64().unwrap();
            m.insert("stage".into(), (if step < 300.0 { 0.0 } else { 1.0 }).into());
        }
        let r = analyse_lines(&staged);
        assert_eq!(r.check("router_unspecialised").unwrap().verdict, Verdict::Ok, "{}", r.render());
        assert!(r.is_healthy(), "{}", r.render());
        // Collapse: one expert above 0.9 after the warm-up.
        set(&mut staged, 1500, "router/expert_usage_2", 0.93.into());
        set(&mut staged, 200, "router/expert_usage_1", 0.97.into()); // inside the warm-up stage
        let r = analyse_lines(&staged);
        assert_eq!(warned_ids(&r), ["router_collapsed"]);
        let c = r.check("router_collapsed").unwrap();
        assert_eq!(c.offending_steps, [1500]);
        assert!(c.detail.contains("expert 2=0.93"), "{}", c.detail);
    }

    #[test]
    fn modality_gate_rules() {
        let mut l = healthy_lines();
        set(&mut l, 500, "gate/modality_tactile_mean", 0.05.into());
        set(&mut l, 600, "gate/modality_head_mean", 0.95.into());
        set(&mut l, 610, "gate/modality_proprio_mean", 0.92.into());
        let r = analyse_lines(&l);
        assert_eq!(
            warned_ids(&r),
            ["modality_gate_ignored", "modality_gate_over_relied"]
        );
        let ig = r.check("modality_gate_ignored").unwrap();
        assert_eq!(ig.offending_steps, [500]);
        assert!(ig.detail.contains("tactile="), "{}", ig.detail);
        let ov = r.check("modality_gate_over_relied").unwrap();
        assert_eq!(ov.offending_steps, [600, 610]);
        assert!(ov.detail.contains("head=0.95"), "{}", ov.detail);
        assert_eq!(
            r.check("modality_gates_balanced").unwrap().offending_steps,
            [500, 600, 610]
        );
    }

    #[test]
    fn attention_collapse_rule() {
        let mut l = healthy_lines();
        set(&mut l, 1000, "attn/entropy", 0.25.into());
        set(&mut l, 1500, "attn/entropy", 0.5.into());
        let r = analyse_lines(&l);
        assert_eq!(warned_ids(&r), ["attn_collapse"]);
        assert_eq!(r.check("attn_collapse").unwrap().offending_steps, [1000]);
        assert_eq!(
            r.check("attn_entropy_healthy").unwrap().offending_steps,
            [1000, 1500]
        );
    }

    #[test]
    fn flow_ct_ratio_rule_skips_warmup() {
        let mut l = healthy_lines();
        // warm-up = first 5% of 0..1990 -> steps < 100 are skipped
        set(&mut l, 50, "loss_flow", 10.0.into());
        set(&mut l, 400, "loss_flow", 1.6.into()); // ct = .4*.. ~0.41 -> ratio ~3.9
        set(&mut l, 800, "loss_ct", 5.0.into()); // ratio < 1/3
        set(&mut l, 900, "loss_ct", 0.0.into()); // ratio inf
        let r = analyse_lines(&l);
        assert_eq!(warned_ids(&r), ["flow_ct_ratio"]);
        assert_eq!(
            r.check("flow_ct_ratio").unwrap().offending_steps,
            [400, 800, 900]
        );
    }

    #[test]
    fn velocity_rules() {
        let mut l = healthy_lines();
        set(&mut l, 20, "v_ct_pred_magnitude", 12.0.into()); // > 10 counts even in warm-up; ratio skipped there
        set(&mut l, 700, "v_flow_pred_magnitude", 3.0.into()); // 3.0 / 1.1 > 2
        set(&mut l, 710, "v_flow_pred_magnitude", 2.1.into()); // 1.9x: not > 2
        let r = analyse_lines(&l);
        assert_eq!(warned_ids(&r), ["velocity_magnitude", "velocity_imbalance"]);
        assert_eq!(r.check("velocity_magnitude").unwrap().offending_steps, [20]);
        assert_eq!(
            r.check("velocity_imbalance").unwrap().offending_steps,
            [700]
        );
    }

    #[test]
    fn val_above_train_rule() {
        let mut l = healthy_lines();
        // train_loss around step 1000 is ~0.55; mean over steps 900..1000 is ~0.57
        set(&mut l, 1000, "val_loss", 1.3.into()); // > 2x
        set(&mut l, 1500, "val_loss", 0.75.into()); // ~2.1x of ~0.36
        set(&mut l, 1600, "val_loss", 0.4.into()); // ~1.4x: close enough, not a warning
        let r = analyse_lines(&l);
        assert_eq!(warned_ids(&r), ["val_above_train"]);
        assert_eq!(
            r.check("val_above_train").unwrap().offending_steps,
            [1000, 1500]
        );
        assert_eq!(
            r.check("train_val_close").unwrap().offending_steps,
            [1000, 1500]
        );
        // the reference is the window mean: steps 1350..1500 -> mean train_loss
        let ratios = val_train_ratios(&merge_by_step(&read_back(&l)), 0);
        let (_, ratio) = ratios.iter().find(|(s, _)| *s == 1500).unwrap();
        let window: Vec<f64> = (135..=150).map(|i| 1.0 - 0.9 * i as f64 / 199.0).collect();
        let mean = window.iter().sum::<f64>() / window.len() as f64;
        assert!(
            (ratio - 0.75 / mean).abs() < 1e-9,
            "{ratio} vs {}",
            0.75 / mean
        );
    }

    fn read_back(lines: &[serde_json::Map<String, serde_json::Value>]) -> Vec<Record> {
        let dir = tempfile::tempdir().unwrap();
        write_run(dir.path(), lines);
        read_jsonl(dir.path().join("metrics.jsonl")).unwrap()
    }

    #[test]
    fn nonfinite_rule_and_spike_events() {
        let mut l = healthy_lines();
        set(&mut l, 300, "train_loss", "NaN".into());
        set(&mut l, 310, "grad_norm", "Infinity".into());
        let dir = tempfile::tempdir().unwrap();
        write_run(dir.path(), &l);
        std::fs::write(
            dir.path().join("events.jsonl"),
            "{\"step\":300,\"event\":\"nonfinite loss, step skipped\"}\n\
             {\"step\":120,\"event\":\"spike loss 95.1 > 5 x median 3.2 (batch 4, episodes [3, 9])\"}\n\
             {\"step\":130,\"event\":\"checkpoint saved\"}\n\
             {\"step\":140,\"ev",
        )
        .unwrap();
        let r = analyse(dir.path()).unwrap();
        assert_eq!(warned_ids(&r), ["nonfinite", "loss_spikes"]);
        let nf = r.check("nonfinite").unwrap();
        assert_eq!(nf.offending_steps, [300, 310]);
        assert!(
            nf.detail.contains("grad_norm") && nf.detail.contains("train_loss"),
            "{}",
            nf.detail
        );
        let sp = r.check("loss_spikes").unwrap();
        assert_eq!(sp.offending_steps, [120, 300]);
        assert_eq!(r.events.len(), 2);
        let text = r.render();
        assert!(text.contains("spike loss 95.1"), "{text}");
        assert!(
            text.contains("Overall: WARN (2 rules: nonfinite, loss_spikes)"),
            "{text}"
        );
    }

    #[test]
    fn absent_metrics_are_not_applicable() {
        // a plain run: no gates, no attention, no velocities, no val
        let lines: Vec<_> = healthy_lines()
            .into_iter()
            .map(|m| {
                m.into_iter()
                    .filter(|(k, _)| {
                        [
                            "step",
                            "epoch",
                            "wall_time",
                            "train_loss",
                            "lr",
                            "grad_norm",
                        ]
                        .contains(&k.as_str())
                    })
                    .collect()
            })
            .collect();
        let r = analyse_lines(&lines);
        assert!(r.is_healthy());
        for id in [
            "gate_saturation_high",
            "modality_gate_ignored",
            "attn_collapse",
            "flow_ct_ratio",
            "velocity_magnitude",
            "velocity_imbalance",
            "val_above_train",
            "train_val_close",
            "gate_mean_balanced",
            "attn_entropy_healthy",
            "router_unspecialised",
            "router_collapsed",
        ] {
            let c = r.check(id).unwrap();
            assert!(
                matches!(c.verdict, Verdict::NotApplicable(_)),
                "{id}: {:?}",
                c.verdict
            );
        }
        assert_eq!(r.check("nonfinite").unwrap().verdict, Verdict::Ok);
        assert!(r.render().contains("N/A"));
    }

    #[test]
    fn offending_steps_truncate_with_count() {
        let mut l = healthy_lines();
        for i in 0..50u64 {
            set(&mut l, 1000 + i * 10, "attn/entropy", 0.1.into());
        }
        let r = analyse_lines(&l);
        let c = r.check("attn_collapse").unwrap();
        assert_eq!(c.offending_count, 50);
        assert_eq!(c.offending_steps.len(), MAX_LISTED_STEPS);
        assert_eq!(c.offending_steps[0], 1000);
        assert!(
            c.steps_summary(8).ends_with("(+42 more)"),
            "{}",
            c.steps_summary(8)
        );
    }

    #[test]
    fn json_report_and_run() {
        let mut l = healthy_lines();
        set(&mut l, 100, "gate/saturation_high_ratio", 0.6.into());
        let dir = tempfile::tempdir().unwrap();
        write_run(dir.path(), &l);
        let r = run(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join("health.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["verdict"], "WARN");
        assert_eq!(v["warn_rules"], serde_json::json!(["gate_saturation_high"]));
        let c = v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == "gate_saturation_high")
            .unwrap();
        assert_eq!(c["offending_steps"], serde_json::json!([100]));
        assert_eq!(c["verdict"], "WARN");
        assert_eq!(v["checks"].as_array().unwrap().len(), r.checks.len());
        assert!(dir.path().join("plots/losses.png").exists());
    }

    #[test]
    fn missing_metrics_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = analyse(dir.path()).unwrap_err().to_string();
        assert!(e.contains("metrics.jsonl"), "{e}");
    }
}
