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
    /// Every episode's return (0 to 1), in episode order; empty for reports without returns.
    pub returns: Vec<f64>,
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
        let returns = episode_returns(per, episodes)?;
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
        Ok(EvalResult { path: PathBuf::new(), episodes, successes, times, returns, outcomes })
    }

    /// Mean return of the episodes; `None` for reports without returns.
    pub fn mean_return(&self) -> Option<f64> {
        (!self.returns.is_empty()).then(|| self.returns.iter().sum::<f64>() / self.returns.len() as f64)
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

/// `per_episode[i].episode_return` of every episode, or none at all (older reports).
fn episode_returns(per: &[Value], episodes: u64) -> Result<Vec<f64>> {
    let mut returns = Vec::new();
    for (i, e) in per.iter().enumerate() {
        match e.get("episode_return") {
            None | Some(Value::Null) => {}
            Some(v) => match v.as_f64() {
                Some(r) if (0.0..=1.0).contains(&r) => returns.push(r),
                _ => bail!("field `per_episode[{i}].episode_return` is {v}, not a number from 0 to 1"),
            },
        }
    }
    if !returns.is_empty() && (returns.len() != per.len() || per.len() as u64 != episodes) {
        bail!("`per_episode` has {} returns for {} entries and {episodes} episodes", returns.len(), per.len());
    }
    Ok(returns)
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
        // Returns: none (older reports), all, or refused by field.
        assert!(r.returns.is_empty() && r.mean_return().is_none());
        let mut with = v.clone();
        for (i, x) in [1.0, 0.25, 0.5, 0.25].iter().enumerate() {
            with["per_episode"][i]["episode_return"] = (*x).into();
        }
        let rr = EvalResult::from_json(&with).unwrap();
        assert_eq!((rr.returns.clone(), rr.mean_return()), (vec![1.0, 0.25, 0.5, 0.25], Some(0.5)));
        let mut bad = with.clone();
        bad["per_episode"][2]["episode_return"] = 1.5.into();
        assert!(format!("{:#}", EvalResult::from_json(&bad).unwrap_err()).contains("per_episode[2].episode_return"));
        let mut bad = with.clone();
        bad["per_episode"][3]["episode_return"] = serde_json::Value::Null;
        assert!(format!("{:#}", EvalResult::from_json(&bad).unwrap_err()).contains("3 returns for 4 entries"));
    }
}
