//! `maniflow-train compare A B [--at STEP]` (seed 004): two arms side by side at equal
//! training progress. An arm is one run directory or several (seeds); each run may come
//! with its `maniflow eval --json` report. The report: success rate (pooled and best seed),
//! time to success (mean, best), the rate of every episode outcome (partial success =
//! grasped but not lifted), training losses, gate and router statistics at the same step,
//! differences in percent and whether a difference is inside the run-to-run noise;
//! markdown, JSON and PNG curves of both arms on the same axes.

mod eval;
mod report;

pub use eval::EvalResult;
pub use report::{Report, Row, Stat};

use crate::metrics::{read_jsonl, Record};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// One training run (a seed of an arm) and its evaluation.
#[derive(Debug, Clone)]
pub struct Run {
    pub dir: PathBuf,
    pub records: Vec<Record>,
    pub eval: Option<EvalResult>,
}

impl Run {
    /// `dir/metrics.jsonl` and the eval report `eval` (or `dir/eval.json` when present).
    pub fn load(dir: &Path, eval: Option<&Path>) -> Result<Run> {
        let records = read_jsonl(dir.join("metrics.jsonl")).with_context(|| format!("run {}", dir.display()))?;
        let default = dir.join("eval.json");
        let eval = match eval {
            Some(p) => Some(EvalResult::load(p)?),
            None if default.is_file() => Some(EvalResult::load(&default)?),
            None => None,
        };
        Ok(Run { dir: dir.to_path_buf(), records, eval })
    }

    /// The last optimiser step the run logged (`train_loss`).
    pub fn last_step(&self) -> Option<u64> {
        self.records.iter().filter(|r| r.get("train_loss").is_some()).map(|r| r.step).max()
    }

    pub fn name(&self) -> String {
        self.dir.file_name().map_or_else(|| self.dir.display().to_string(), |n| n.to_string_lossy().into_owned())
    }

    /// `key` at step `at`: the mean of its finite values logged in the last tenth of the
    /// steps up to `at` (smooths batch noise alike in both arms), else its last value.
    pub fn value_at(&self, key: &str, at: u64) -> Option<f64> {
        let window = (at / 10).max(1);
        let near: Vec<f64> = self
            .records
            .iter()
            .filter(|r| r.step <= at && r.step + window > at)
            .filter_map(|r| r.get(key))
            .filter(|v| v.is_finite())
            .collect();
        if !near.is_empty() {
            return Some(near.iter().sum::<f64>() / near.len() as f64);
        }
        self.records.iter().rev().filter(|r| r.step <= at).find_map(|r| r.get(key).filter(|v| v.is_finite()))
    }
}

/// An arm of the comparison: its label and runs (seeds).
#[derive(Debug, Clone)]
pub struct Arm {
    pub label: String,
    pub runs: Vec<Run>,
}

impl Arm {
    /// Runs `dirs` with eval reports `evals` (empty, or one per run in the same order).
    pub fn load(which: &str, label: Option<&str>, dirs: &[PathBuf], evals: &[PathBuf]) -> Result<Arm> {
        if dirs.is_empty() {
            bail!("arm {which}: no run directory");
        }
        if !evals.is_empty() && evals.len() != dirs.len() {
            bail!("arm {which}: {} eval reports for {} runs (give one per run, in the same order)", evals.len(), dirs.len());
        }
        let runs = dirs.iter().enumerate().map(|(i, d)| Run::load(d, evals.get(i).map(PathBuf::as_path))).collect::<Result<Vec<_>>>()?;
        let label = label.map(str::to_string).unwrap_or_else(|| runs.iter().map(Run::name).collect::<Vec<_>>().join("+"));
        Ok(Arm { label, runs })
    }
}

/// What `compare` was asked for.
#[derive(Debug, Clone, Default)]
pub struct CompareOptions {
    pub at: Option<u64>,
    /// Write compare.md, compare.json and the PNG curves here.
    pub out: Option<PathBuf>,
}

/// The step both arms reached: `at` if every run logged it, else the smallest last step.
pub fn common_step(a: &Arm, b: &Arm, at: Option<u64>) -> Result<u64> {
    let mut lowest: Option<u64> = None;
    for r in a.runs.iter().chain(&b.runs) {
        let last = r.last_step().with_context(|| format!("{}: metrics.jsonl has no train_loss (not a training run?)", r.dir.display()))?;
        if let Some(s) = at {
            if s > last {
                bail!("--at {s}: {} stops at step {last}", r.dir.display());
            }
        }
        lowest = Some(lowest.map_or(last, |l| l.min(last)));
    }
    match (at, lowest) {
        (Some(0), _) => bail!("--at 0: nothing is trained at step 0"),
        (Some(s), _) => Ok(s),
        (None, Some(l)) => Ok(l),
        (None, None) => bail!("no runs"),
    }
}

/// Builds the report, prints its markdown and writes the files of `opts.out`.
pub fn run(a: &Arm, b: &Arm, opts: &CompareOptions) -> Result<Report> {
    let at = common_step(a, b, opts.at)?;
    let rep = report::build(a, b, at);
    print!("{}", rep.markdown());
    if let Some(dir) = &opts.out {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let md = dir.join("compare.md");
        std::fs::write(&md, rep.markdown()).with_context(|| format!("write {}", md.display()))?;
        let js = dir.join("compare.json");
        std::fs::write(&js, serde_json::to_vec_pretty(&rep)?).with_context(|| format!("write {}", js.display()))?;
        for p in curves(a, b, at, dir)? {
            eprintln!("wrote {}", p.display());
        }
    }
    Ok(rep)
}

/// Series logged by every run of both arms that are plotted together.
const CURVES: [(&str, &str); 6] = [
    ("train_loss", "train_loss"),
    ("loss_flow", "loss_flow"),
    ("loss_ct", "loss_ct"),
    ("val_loss", "val_loss"),
    ("gate/modality_tactile_mean", "tactile modality gate"),
    ("router/alpha_entropy_norm", "router entropy / ln E"),
];

/// `compare_<name>.png`: one line per run of each arm, up to step `at`.
fn curves(a: &Arm, b: &Arm, at: u64, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (key, title) in CURVES {
        let mut records = Vec::new();
        let mut names = Vec::new();
        for (tag, arm) in [("A", a), ("B", b)] {
            for r in &arm.runs {
                let name = format!("{tag} {}: {}", arm.label, r.name());
                let pts: Vec<Record> = r
                    .records
                    .iter()
                    .filter(|x| x.step <= at)
                    .filter_map(|x| x.get(key).map(|v| Record { step: x.step, epoch: x.epoch, wall_time: x.wall_time, scalars: [(name.clone(), v)].into() }))
                    .collect();
                if !pts.is_empty() {
                    names.push(name);
                    records.extend(pts);
                }
            }
        }
        if names.len() < a.runs.len() + b.runs.len() {
            continue; // not logged by every run
        }
        records.sort_by_key(|r| r.step);
        let path = dir.join(format!("compare_{}.png", key.replace('/', "_")));
        crate::health::plots::draw_lines(&records, names, title, key_label(key), &path).with_context(|| format!("plot {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn key_label(key: &str) -> &'static str {
    if key.starts_with("gate/") {
        "gate"
    } else if key.starts_with("router/") {
        "entropy / ln E"
    } else {
        "loss"
    }
}
