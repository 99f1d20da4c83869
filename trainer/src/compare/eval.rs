//! A `maniflow eval --json` report, as much of it as `compare` needs.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Episodes, successes, times to success and outcomes of one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalResult {
    pub path: PathBuf,
    pub episodes: u64,
    pub successes: u64,
    /// Time to success of every successful episode (s).
    pub times: Vec<f64>,
    /// Episodes per outcome (`success`, `crushed`, `dropped`, `grasped_not_lifted`, `never_grasped`).
    pub outcomes: BTreeMap<String, u64>,
}

impl EvalResult {
    /// Reads a report; every error names the file and the field.
    pub fn load(path: &Path) -> Result<EvalResult> {
        let text = std::fs::read_to_string(path).with_context(|| format!("read eval report {}", path.display()))?;
        let v: Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        EvalResult::from_json(&v).with_context(|| format!("eval report {}", path.display())).map(|mut r| {
            r.path = path.to_path_buf();
            r
        })
    }

    pub fn from_json(v: &Value) -> Result<EvalResult> {
        let count = |k: &str| v.get(k).and_then(Value::as_u64).with_context(|| format!("field `{k}` missing or not a count"));
        let (episodes, successes) = (count("episodes")?, count("successes")?);
        if episodes == 0 || successes > episodes {
            bail!("{successes} successes of {episodes} episodes");
        }
        let per = v.get("per_episode").and_then(Value::as_array).context("field `per_episode` missing or not a list")?;
        let times: Vec<f64> = per.iter().filter_map(|e| e.get("time_to_success_s").and_then(Value::as_f64)).collect();
        if times.len() as u64 != successes {
            bail!("`per_episode` has {} times to success for {successes} successes", times.len());
        }
        let mut outcomes = BTreeMap::new();
        if let Some(m) = v.get("outcomes").and_then(Value::as_object) {
            for (k, n) in m {
                outcomes.insert(k.clone(), n.as_u64().with_context(|| format!("field `outcomes.{k}` is not a count"))?);
            }
            let total: u64 = outcomes.values().sum();
            if total != episodes {
                bail!("`outcomes` count {total} episodes, the report {episodes}");
            }
        }
        Ok(EvalResult { path: PathBuf::new(), episodes, successes, times, outcomes })
    }

    pub fn success_rate(&self) -> f64 {
        self.successes as f64 / self.episodes as f64
    }

    /// Episodes with `outcome`; `None` when the report has no outcomes (older reports).
    pub fn outcome_count(&self, outcome: &str) -> Option<u64> {
        (!self.outcomes.is_empty()).then(|| self.outcomes.get(outcome).copied().unwrap_or(0))
    }

    /// Fraction of episodes with `outcome`; `None` when the report has no outcomes.
    pub fn outcome_rate(&self, outcome: &str) -> Option<f64> {
        self.outcome_count(outcome).map(|n| n as f64 / self.episodes as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_reports_and_names_bad_fields() {
        let v = serde_json::json!({"episodes": 4, "successes": 1, "per_episode": [
            {"time_to_success_s": 2.5}, {"time_to_success_s": null}, {}, {}],
            "outcomes": {"success": 1, "crushed": 2, "never_grasped": 1}});
        let r = EvalResult::from_json(&v).unwrap();
        assert_eq!((r.success_rate(), r.times.clone()), (0.25, vec![2.5]));
        assert_eq!((r.outcome_rate("crushed"), r.outcome_rate("dropped")), (Some(0.5), Some(0.0)));
        let mut bad = v.clone();
        bad["outcomes"]["crushed"] = 3.into();
        assert!(format!("{:#}", EvalResult::from_json(&bad).unwrap_err()).contains("outcomes"));
        let mut bad = v.clone();
        bad["successes"] = 2.into();
        assert!(format!("{:#}", EvalResult::from_json(&bad).unwrap_err()).contains("times to success"));
        let e = EvalResult::from_json(&serde_json::json!({"episodes": 3})).unwrap_err();
        assert!(format!("{e:#}").contains("`successes`"), "{e:#}");
    }
}
