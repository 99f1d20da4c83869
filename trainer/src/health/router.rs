//! Seed 004's router rules (METRICS.md "Expert router"), for runs with `model.experts`:
//! - `router_unspecialised` (rule): `router/alpha_entropy_norm` (entropy of alpha / ln E)
//!   above 0.95 after the warm-up: the router still mixes the experts almost evenly;
//! - `router_collapsed` (rule): one `router/expert_usage_<i>` above 0.9 after the warm-up:
//!   one expert does (nearly) everything.
//!
//! The warm-up is the first stage of a staged run (the first step logged with `stage` >= 1
//! starts the rest), else the first 5 % of the steps as for the other ratio rules.

use super::{has, make_check, obs, single, Check, CheckKind, Meta, Obs};
use crate::metrics::Record;
use std::collections::BTreeSet;

const NO_ROUTER: &str = "router/alpha_entropy_norm not logged (no model.experts)";

/// First step after the warm-up: the first logged `stage` >= 1, else `fallback`.
fn warm_up_end(recs: &[Record], fallback: u64) -> u64 {
    let staged = recs.iter().find(|r| r.get("stage").is_some_and(|s| s >= 1.0)).map(|r| r.step);
    match staged {
        Some(s) => s,
        // a staged run still in its first stage: everything so far is warm-up
        None if has(recs, "stage") => u64::MAX,
        None => fallback,
    }
}

fn usage_keys(recs: &[Record]) -> Vec<String> {
    let keys: BTreeSet<&String> = recs.iter().flat_map(|r| r.scalars.keys()).filter(|k| k.starts_with("router/expert_usage_")).collect();
    keys.into_iter().cloned().collect()
}

pub fn checks(recs: &[Record], warm_fallback: u64) -> Vec<Check> {
    let from = warm_up_end(recs, warm_fallback);
    let unspecialised = make_check(
        Meta {
            id: "router_unspecialised",
            kind: CheckKind::Rule,
            description: "router/alpha_entropy_norm after warm-up: experts not specialised",
            threshold: "> 0.95 (of ln E)",
        },
        single(recs, "router/alpha_entropy_norm", from, |v| v > 0.95, |v| v),
        NO_ROUTER.into(),
    );
    let keys = usage_keys(recs);
    let usage = (!keys.is_empty()).then(|| {
        let mut out = Vec::new();
        for r in recs.iter().filter(|r| r.step >= from) {
            for k in &keys {
                if let Some(v) = r.get(k).filter(|v| v.is_finite()) {
                    let label = format!("expert {}=", k.trim_start_matches("router/expert_usage_"));
                    out.push(Obs { label, ..obs(r.step, v, v, v > 0.9) });
                }
            }
        }
        out
    });
    let collapsed = make_check(
        Meta {
            id: "router_collapsed",
            kind: CheckKind::Rule,
            description: "a router/expert_usage_<i> after warm-up: one expert does everything",
            threshold: "> 0.9",
        },
        usage,
        "router/expert_usage_* not logged (no model.experts)".into(),
    );
    vec![unspecialised, collapsed]
}
