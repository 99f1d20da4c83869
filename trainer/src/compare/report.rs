//! The comparison's rows: evaluation and training statistics of both arms, the
//! difference in percent and whether it is inside the run-to-run noise.

use super::{Arm, Run};
use serde::Serialize;

/// An arm's value of a row: over its seeds (pooled for rates) and per seed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stat {
    pub value: f64,
    pub per_seed: Vec<f64>,
}

/// Whether a difference exceeds the noise between runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Noise {
    /// Larger than the noise.
    Outside,
    /// Rates: within two standard errors of a two-proportion test; other rows: within
    /// the larger seed-to-seed range of the two arms.
    Inside,
    /// Fewer than two seeds in an arm: the seed-to-seed range is unknown.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub section: &'static str,
    pub name: String,
    pub a: Stat,
    pub b: Stat,
    /// (B - A) / |A| in percent; `None` when A is 0 or either value is missing.
    pub diff_pct: Option<f64>,
    pub noise: Noise,
    /// What the noise judgement rests on.
    pub noise_basis: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub at_step: u64,
    pub a_label: String,
    pub b_label: String,
    pub a_runs: Vec<String>,
    pub b_runs: Vec<String>,
    pub rows: Vec<Row>,
}

/// Training scalars compared when every run logged them.
const TRAIN_KEYS: [&str; 6] = ["train_loss", "loss_flow", "loss_ct", "val_loss", "train_action_mse_error", "grad_norm"];
/// Prefixes of gate, attention and router statistics compared when every run logged them.
const STAT_PREFIXES: [&str; 4] = ["gate/modality_", "attn/modality_", "router/", "gate/mean"];
/// Episode outcomes with their row names (the first is seed 004's partial success).
const OUTCOMES: [(&str, &str); 4] = [
    ("grasped_not_lifted", "partial success rate (grasped, not lifted)"),
    ("crushed", "crushed rate"),
    ("dropped", "dropped rate"),
    ("never_grasped", "never grasped rate"),
];

pub fn build(a: &Arm, b: &Arm, at: u64) -> Report {
    let mut rows = eval_rows(a, b);
    rows.extend(train_rows(a, b, at));
    let names = |arm: &Arm| arm.runs.iter().map(|r| r.dir.display().to_string()).collect();
    Report { at_step: at, a_label: a.label.clone(), b_label: b.label.clone(), a_runs: names(a), b_runs: names(b), rows }
}

fn diff_pct(a: f64, b: f64) -> Option<f64> {
    (a.is_finite() && b.is_finite() && a != 0.0).then(|| (b - a) / a.abs() * 100.0)
}

/// The seed rule: inside when |A - B| is at most the larger seed-to-seed range.
fn seed_noise(a: &Stat, b: &Stat) -> (Noise, String) {
    if !(a.value.is_finite() && b.value.is_finite()) {
        return (Noise::Unknown, "an arm has no value".into());
    }
    if a.per_seed.len() < 2 || b.per_seed.len() < 2 {
        return (Noise::Unknown, "fewer than two seeds per arm".into());
    }
    let range = |s: &Stat| {
        let (lo, hi) = s.per_seed.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
        hi - lo
    };
    let r = range(a).max(range(b));
    let d = (a.value - b.value).abs();
    let n = if d <= r { Noise::Inside } else { Noise::Outside };
    (n, format!("difference {} vs seed-to-seed range {}", fmt(d), fmt(r)))
}

/// Two-proportion test: inside when |pA - pB| < 2 standard errors of the pooled rate.
fn rate_noise(ka: u64, na: u64, kb: u64, nb: u64) -> (Noise, String) {
    let (pa, pb) = (ka as f64 / na as f64, kb as f64 / nb as f64);
    let p = (ka + kb) as f64 / (na + nb) as f64;
    let se = (p * (1.0 - p) * (1.0 / na as f64 + 1.0 / nb as f64)).sqrt();
    let d = (pa - pb).abs();
    let n = if d < 2.0 * se || d == 0.0 { Noise::Inside } else { Noise::Outside };
    (n, format!("difference {} vs 2 s.e. {} ({na} and {nb} episodes)", fmt(d), fmt(2.0 * se)))
}

fn rate_row(name: &str, a: &Arm, b: &Arm, count: impl Fn(&Run) -> Option<u64>) -> Option<Row> {
    let arm = |arm: &Arm| -> Option<(u64, u64, Vec<f64>)> {
        let mut k = 0;
        let mut n = 0;
        let mut per = Vec::new();
        for r in &arm.runs {
            let e = r.eval.as_ref()?;
            let c = count(r)?;
            k += c;
            n += e.episodes;
            per.push(c as f64 / e.episodes as f64);
        }
        Some((k, n, per))
    };
    let ((ka, na, pa), (kb, nb, pb)) = (arm(a)?, arm(b)?);
    let (sa, sb) = (Stat { value: ka as f64 / na as f64, per_seed: pa }, Stat { value: kb as f64 / nb as f64, per_seed: pb });
    let (noise, noise_basis) = rate_noise(ka, na, kb, nb);
    Some(Row { section: "eval", name: name.into(), diff_pct: diff_pct(sa.value, sb.value), a: sa, b: sb, noise, noise_basis })
}

fn eval_rows(a: &Arm, b: &Arm) -> Vec<Row> {
    let mut rows = Vec::new();
    rows.extend(rate_row("success rate", a, b, |r| r.eval.as_ref().map(|e| e.successes)));
    if let Some(ok) = rows.first().cloned() {
        let (sa, sb) = (best_seed(ok.a.per_seed.clone()), best_seed(ok.b.per_seed.clone()));
        let (noise, noise_basis) = seed_noise(&sa, &sb);
        rows.push(Row { section: "eval", name: "success rate, best seed".into(), diff_pct: diff_pct(sa.value, sb.value), a: sa, b: sb, noise, noise_basis });
        rows.extend(time_rows(a, b));
    }
    rows.extend(return_rows(a, b));
    for (outcome, name) in OUTCOMES {
        rows.extend(rate_row(name, a, b, |r| r.eval.as_ref().and_then(|e| e.outcome_count(outcome))));
    }
    rows
}

/// The largest of the per-seed values, with them.
fn best_seed(per_seed: Vec<f64>) -> Stat {
    Stat { value: per_seed.iter().cloned().fold(f64::NEG_INFINITY, f64::max), per_seed }
}

/// Mean and best (shortest) time to success, over every successful episode of the arm.
fn time_rows(a: &Arm, b: &Arm) -> Vec<Row> {
    let times = |arm: &Arm| -> (Vec<f64>, Vec<f64>) {
        let all: Vec<f64> = arm.runs.iter().flat_map(|r| r.eval.iter().flat_map(|e| e.times.iter().copied())).collect();
        let per: Vec<f64> = arm.runs.iter().filter_map(|r| r.eval.as_ref()).map(|e| mean(&e.times)).collect();
        (all, per)
    };
    let ((ta, pa), (tb, pb)) = (times(a), times(b));
    let mut rows = Vec::new();
    for (name, f) in [("time to success, mean (s)", mean as fn(&[f64]) -> f64), ("time to success, best (s)", min)] {
        let (sa, sb) = (Stat { value: f(&ta), per_seed: pa.clone() }, Stat { value: f(&tb), per_seed: pb.clone() });
        let (noise, noise_basis) = seed_noise(&sa, &sb);
        rows.push(Row { section: "eval", name: name.into(), diff_pct: diff_pct(sa.value, sb.value), a: sa, b: sb, noise, noise_basis });
    }
    rows
}

/// Mean episode return (pooled over the arm's episodes; noise by the two-sample standard
/// error) and best episode return (the arm's largest; per seed, noise by the seeds).
fn return_rows(a: &Arm, b: &Arm) -> Vec<Row> {
    let returns = |arm: &Arm| -> Option<(Vec<f64>, Vec<f64>, Vec<f64>)> {
        let (mut all, mut per_mean, mut per_best) = (Vec::new(), Vec::new(), Vec::new());
        for r in &arm.runs {
            let e = r.eval.as_ref()?;
            per_mean.push(e.mean_return()?);
            per_best.push(e.returns.iter().cloned().fold(f64::NEG_INFINITY, f64::max));
            all.extend_from_slice(&e.returns);
        }
        Some((all, per_mean, per_best))
    };
    let (Some((ra, ma, ba)), Some((rb, mb, bb))) = (returns(a), returns(b)) else { return Vec::new() };
    let (sa, sb) = (Stat { value: mean(&ra), per_seed: ma }, Stat { value: mean(&rb), per_seed: mb });
    let (noise, noise_basis) = mean_noise(&ra, &rb);
    let mut rows = vec![Row { section: "eval", name: "episode return, mean".into(), diff_pct: diff_pct(sa.value, sb.value), a: sa, b: sb, noise, noise_basis }];
    let (sa, sb) = (best_seed(ba), best_seed(bb));
    let (noise, noise_basis) = seed_noise(&sa, &sb);
    rows.push(Row { section: "eval", name: "episode return, best".into(), diff_pct: diff_pct(sa.value, sb.value), a: sa, b: sb, noise, noise_basis });
    rows
}

/// Two means of episodes: inside when |A - B| < 2 standard errors of the difference.
fn mean_noise(a: &[f64], b: &[f64]) -> (Noise, String) {
    let var = |v: &[f64]| {
        let m = mean(v);
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len().max(2) - 1) as f64
    };
    let se = (var(a) / a.len() as f64 + var(b) / b.len() as f64).sqrt();
    let d = (mean(a) - mean(b)).abs();
    let n = if d < 2.0 * se || d == 0.0 { Noise::Inside } else { Noise::Outside };
    (n, format!("difference {} vs 2 s.e. {} ({} and {} episodes)", fmt(d), fmt(2.0 * se), a.len(), b.len()))
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().cloned().fold(f64::NAN, f64::min)
}

/// Training statistics at step `at` logged by every run of both arms.
fn train_rows(a: &Arm, b: &Arm, at: u64) -> Vec<Row> {
    let runs: Vec<&Run> = a.runs.iter().chain(&b.runs).collect();
    let mut keys: Vec<String> = TRAIN_KEYS.iter().map(|k| k.to_string()).collect();
    let mut extra: Vec<String> = runs[0]
        .records
        .iter()
        .flat_map(|r| r.scalars.keys())
        .filter(|k| STAT_PREFIXES.iter().any(|p| k.starts_with(p)))
        .cloned()
        .collect();
    extra.sort();
    extra.dedup();
    keys.extend(extra);
    let mut rows = Vec::new();
    for key in keys {
        let stat = |arm: &Arm| -> Option<Stat> {
            let per: Vec<f64> = arm.runs.iter().map(|r| r.value_at(&key, at)).collect::<Option<_>>()?;
            Some(Stat { value: mean(&per), per_seed: per })
        };
        let (Some(sa), Some(sb)) = (stat(a), stat(b)) else { continue };
        let (noise, noise_basis) = seed_noise(&sa, &sb);
        let section = if TRAIN_KEYS.contains(&key.as_str()) { "training" } else { "gates and router" };
        rows.push(Row { section, name: key, diff_pct: diff_pct(sa.value, sb.value), a: sa, b: sb, noise, noise_basis });
    }
    rows
}

fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v == 0.0 || (v.abs() >= 0.01 && v.abs() < 1e4) {
        format!("{v:.4}")
    } else {
        format!("{v:.3e}")
    }
}

fn fmt_stat(s: &Stat) -> String {
    if s.per_seed.len() < 2 {
        return fmt(s.value);
    }
    let per: Vec<String> = s.per_seed.iter().map(|v| fmt(*v)).collect();
    format!("{} [{}]", fmt(s.value), per.join(", "))
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "# compare at step {}\n\n- A: {} ({})\n- B: {} ({})\n\n| | A | B | B vs A | noise |\n|---|---|---|---|---|\n",
            self.at_step,
            self.a_label,
            self.a_runs.join(", "),
            self.b_label,
            self.b_runs.join(", ")
        );
        let mut section = "";
        for r in &self.rows {
            if r.section != section {
                section = r.section;
                out.push_str(&format!("| **{section}** | | | | |\n"));
            }
            let diff = r.diff_pct.map_or("-".into(), |d| format!("{d:+.1} %"));
            let noise = match r.noise {
                Noise::Inside => format!("within noise ({})", r.noise_basis),
                Noise::Outside => format!("beyond noise ({})", r.noise_basis),
                Noise::Unknown => format!("unknown ({})", r.noise_basis),
            };
            out.push_str(&format!("| {} | {} | {} | {diff} | {noise} |\n", r.name, fmt_stat(&r.a), fmt_stat(&r.b)));
        }
        if self.rows.iter().all(|r| r.section != "eval") {
            out.push_str("\n(no eval rows: give every run its `maniflow eval --json` report, `--eval-a` / `--eval-b` or RUN/eval.json)\n");
        }
        out
    }

    pub fn row(&self, name: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{common_step, EvalResult};
    use super::*;
    use crate::metrics::Record;

    fn run(name: &str, losses: &[(u64, f64)], eval: Option<(u64, u64, Vec<f64>, &[(&str, u64)])>) -> Run {
        let records = losses
            .iter()
            .map(|&(step, l)| Record {
                step,
                epoch: 0,
                wall_time: 0.0,
                scalars: [
                    ("train_loss".to_string(), l),
                    ("gate/modality_tactile_mean".to_string(), l / 10.0),
                    ("router/alpha_entropy_norm".to_string(), 1.0 - l / 10.0),
                ]
                .into(),
            })
            .collect();
        let eval = eval.map(|(episodes, successes, times, outcomes)| EvalResult {
            path: name.into(),
            episodes,
            successes,
            times,
            // a success returns 0.8, a failure 0.1
            returns: (0..episodes).map(|i| if i < successes { 0.8 } else { 0.1 }).collect(),
            outcomes: outcomes.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
        });
        Run { dir: name.into(), records, eval }
    }

    /// Two arms with known numbers: rates, times, percent differences and both noise rules.
    #[test]
    fn report_of_known_runs() {
        let steps = |scale: f64| (1..=20).map(|s| (s * 10, scale / s as f64)).collect::<Vec<_>>();
        let a = Arm {
            label: "concat".into(),
            runs: vec![
                run("a0", &steps(1.0), Some((50, 10, vec![3.0; 10], &[("success", 10), ("grasped_not_lifted", 20), ("never_grasped", 20)]))),
                run("a1", &steps(1.2), Some((50, 14, vec![2.0; 14], &[("success", 14), ("grasped_not_lifted", 16), ("never_grasped", 20)]))),
            ],
        };
        let b = Arm {
            label: "xattn".into(),
            runs: vec![
                run("b0", &steps(2.0)[..15], Some((50, 40, vec![1.0; 40], &[("success", 40), ("crushed", 10)]))),
                run("b1", &steps(2.2), Some((50, 42, vec![1.5; 42], &[("success", 42), ("crushed", 8)]))),
            ],
        };
        // b0 stops at step 150: the common step
        assert_eq!(common_step(&a, &b, None).unwrap(), 150);
        assert!(common_step(&a, &b, Some(160)).unwrap_err().to_string().contains("b0 stops at step 150"));
        let rep = build(&a, &b, 100);
        let ok = rep.row("success rate").unwrap();
        assert_eq!((ok.a.value, ok.b.value), (24.0 / 100.0, 82.0 / 100.0));
        assert_eq!(ok.a.per_seed, [0.2, 0.28]);
        assert!((ok.diff_pct.unwrap() - (0.82 - 0.24) / 0.24 * 100.0).abs() < 1e-9);
        assert_eq!(ok.noise, Noise::Outside, "{}", ok.noise_basis);
        let best = rep.row("success rate, best seed").unwrap();
        assert_eq!((best.a.value, best.b.value), (0.28, 0.84));
        let t = rep.row("time to success, mean (s)").unwrap();
        assert!((t.a.value - (10.0 * 3.0 + 14.0 * 2.0) / 24.0).abs() < 1e-12 && (t.b.value - (40.0 + 42.0 * 1.5) / 82.0).abs() < 1e-12);
        assert_eq!(rep.row("time to success, best (s)").unwrap().a.value, 2.0);
        let partial = rep.row("partial success rate (grasped, not lifted)").unwrap();
        assert_eq!((partial.a.value, partial.b.value, partial.diff_pct), (0.36, 0.0, Some(-100.0)));
        assert_eq!(rep.row("crushed rate").unwrap().b.value, 0.18);
        // returns: A (24 x 0.8 + 76 x 0.1) / 100, B (82 x 0.8 + 18 x 0.1) / 100
        let ret = rep.row("episode return, mean").unwrap();
        assert!((ret.a.value - 0.268).abs() < 1e-12 && (ret.b.value - 0.674).abs() < 1e-12, "{ret:?}");
        assert!((ret.a.per_seed[1] - (14.0 * 0.8 + 36.0 * 0.1) / 50.0).abs() < 1e-12);
        assert_eq!(ret.noise, Noise::Outside, "{}", ret.noise_basis);
        let best = rep.row("episode return, best").unwrap();
        assert_eq!((best.a.value, best.b.value, best.noise), (0.8, 0.8, Noise::Inside));
        // training rows at step 100: the mean over steps 91..=100 (one record, step 100)
        let l = rep.row("train_loss").unwrap();
        assert_eq!(l.a.per_seed, [1.0 / 10.0, 1.2 / 10.0]);
        assert!((l.b.value - (0.2 + 0.22) / 2.0).abs() < 1e-12);
        // |A - B| = 0.1 > range 0.02: beyond the seed-to-seed noise
        assert_eq!(l.noise, Noise::Outside, "{}", l.noise_basis);
        assert_eq!(rep.row("gate/modality_tactile_mean").unwrap().section, "gates and router");
        let router = rep.row("router/alpha_entropy_norm").unwrap();
        assert_eq!(router.section, "gates and router");
        assert!((router.a.per_seed[0] - 0.99).abs() < 1e-12 && (router.a.per_seed[1] - 0.988).abs() < 1e-12, "{:?}", router.a.per_seed);
        // Equal rates are inside the noise; a small difference on 50 episodes too.
        assert_eq!(rate_noise(0, 50, 0, 50).0, Noise::Inside);
        assert_eq!(rate_noise(20, 50, 24, 50).0, Noise::Inside);
        assert_eq!(rate_noise(10, 50, 40, 50).0, Noise::Outside);
        let md = rep.markdown();
        // every table row has exactly its five cells (no stray `|` in a cell)
        for line in md.lines().filter(|l| l.starts_with("| ")) {
            assert_eq!(line.matches('|').count(), 6, "{line}");
        }
        assert!(md.contains("| success rate | 0.2400 [0.2000, 0.2800] | 0.8200 [0.8000, 0.8400] | +241.7 % | beyond noise"), "{md}");
        // One seed per arm: the noise is unknown.
        let one = build(&Arm { label: "a".into(), runs: vec![a.runs[0].clone()] }, &Arm { label: "b".into(), runs: vec![b.runs[0].clone()] }, 100);
        assert_eq!(one.row("train_loss").unwrap().noise, Noise::Unknown);
        // An arm without a success has no time to success: the noise is unknown, not "beyond".
        let none = |s: &Stat| Stat { value: f64::NAN, per_seed: s.per_seed.iter().map(|_| f64::NAN).collect() };
        assert_eq!(seed_noise(&none(&l.a), &l.b).0, Noise::Unknown);
    }

    #[test]
    fn writes_markdown_json_and_curves() {
        let dir = tempfile::tempdir().unwrap();
        let losses: Vec<(u64, f64)> = (1..=30).map(|s| (s, 1.0 / s as f64)).collect();
        let mk = |n: &str| Arm { label: n.into(), runs: vec![run(n, &losses, None)] };
        let rep = super::super::run(&mk("x"), &mk("y"), &super::super::CompareOptions { at: None, out: Some(dir.path().into()) }).unwrap();
        assert_eq!(rep.at_step, 30);
        assert!(rep.markdown().contains("no eval rows"));
        let js: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("compare.json")).unwrap()).unwrap();
        assert_eq!(js["rows"][0]["name"], "train_loss");
        assert_eq!(js["rows"][0]["diff_pct"], 0.0);
        for f in ["compare.md", "compare_train_loss.png", "compare_gate_modality_tactile_mean.png", "compare_router_alpha_entropy_norm.png"] {
            assert!(dir.path().join(f).is_file(), "{f}");
        }
        assert!(!dir.path().join("compare_loss_flow.png").exists(), "a series no run logged");
    }
}
