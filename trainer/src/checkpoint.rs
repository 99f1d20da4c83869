//! Checkpoints: atomic directory writes and bit-exact resume.
//!
//! Layout: `RUN_DIR/checkpoints/step-00000500/{model,ema,optimizer}.safetensors`
//! (no `ema` for runs without one)
//! + `state.json`, and `RUN_DIR/checkpoints/latest` naming the last complete one.
//! A checkpoint is written into `.tmp-step-...`, every file is fsynced, the
//! directory is renamed into place, and only then is `latest` replaced
//! (temp file + rename). A crash at any point leaves the previous checkpoint
//! and `latest` intact; stale `.tmp-*` directories are removed on the next write.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use tch::Tensor;

/// Everything besides tensors that a bit-exact resume needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// Optimiser steps taken (the next step is `step + 1`).
    pub step: u64,
    pub epoch: u64,
    /// Consecutive non-finite steps at save time.
    pub nonfinite_run: u32,
    pub nonfinite_total: u64,
    pub spikes_total: u64,
    /// Loss history window of the spike detector.
    pub spike_window: Vec<f64>,
    /// sha256 of the resolved config, to refuse resuming with another config.
    pub config_sha256: String,
    pub seed: u64,
    /// Run-specific values a resume continues from (tactile MAE pretraining:
    /// best loss and epoch, seconds trained).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub extra: std::collections::BTreeMap<String, f64>,
}

impl TrainState {
    /// A run at step 0 of the config with digest `config_sha256`.
    pub fn new(config_sha256: String, seed: u64) -> TrainState {
        TrainState {
            step: 0,
            epoch: 0,
            nonfinite_run: 0,
            nonfinite_total: 0,
            spikes_total: 0,
            spike_window: Vec::new(),
            config_sha256,
            seed,
            extra: Default::default(),
        }
    }
}

pub const KEEP: usize = 3;

fn fsync_file(path: &Path) -> Result<()> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("fsync {}", path.display()))
}

fn fsync_dir(path: &Path) {
    if let Ok(d) = fs::File::open(path) {
        let _ = d.sync_all();
    }
}

pub fn checkpoints_dir(run: &Path) -> PathBuf {
    run.join("checkpoints")
}

/// Test hook: `MANIFLOW_TEST_CRASH_CHECKPOINT=<step>` aborts the process after the
/// first tensor file of that step's checkpoint is written (to test atomicity).
fn crash_hook(step: u64) {
    if let Ok(v) = std::env::var("MANIFLOW_TEST_CRASH_CHECKPOINT") {
        if v.trim().parse::<u64>().ok() == Some(step) {
            eprintln!("MANIFLOW_TEST_CRASH_CHECKPOINT: aborting inside the checkpoint write of step {step}");
            std::process::abort();
        }
    }
}

pub struct Saved<'a> {
    pub model: &'a [(String, Tensor)],
    /// EMA weights (runs without an EMA write none).
    pub ema: Option<&'a [(String, Tensor)]>,
    pub optimizer: &'a [(String, Tensor)],
    pub state: &'a TrainState,
}

pub fn save(run: &Path, s: &Saved) -> Result<PathBuf> {
    let dir = checkpoints_dir(run);
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    // remove stale temporaries of earlier crashes
    if let Ok(rd) = fs::read_dir(&dir) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    let name = format!("step-{:08}", s.state.step);
    let tmp = dir.join(format!(".tmp-{name}"));
    fs::create_dir_all(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    let write = |file: &str, ts: &[(String, Tensor)]| -> Result<()> {
        let p = tmp.join(file);
        Tensor::write_safetensors(ts, &p).with_context(|| format!("write {}", p.display()))?;
        fsync_file(&p)
    };
    write("model.safetensors", s.model)?;
    crash_hook(s.state.step);
    if let Some(ema) = s.ema {
        write("ema.safetensors", ema)?;
    }
    write("optimizer.safetensors", s.optimizer)?;
    let sp = tmp.join("state.json");
    fs::write(&sp, serde_json::to_vec_pretty(s.state)?).with_context(|| format!("write {}", sp.display()))?;
    fsync_file(&sp)?;
    fsync_dir(&tmp);
    let final_dir = dir.join(&name);
    if final_dir.exists() {
        fs::remove_dir_all(&final_dir).with_context(|| format!("replace {}", final_dir.display()))?;
    }
    fs::rename(&tmp, &final_dir).with_context(|| format!("rename {} -> {}", tmp.display(), final_dir.display()))?;
    fsync_dir(&dir);
    let latest_tmp = dir.join(".latest.tmp");
    {
        let mut f = fs::File::create(&latest_tmp)?;
        f.write_all(name.as_bytes())?;
        f.sync_all()?;
    }
    fs::rename(&latest_tmp, dir.join("latest"))?;
    fsync_dir(&dir);
    prune(&dir, KEEP);
    Ok(final_dir)
}

fn prune(dir: &Path, keep: usize) {
    let mut steps: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("step-")))
                .collect()
        })
        .unwrap_or_default();
    steps.sort();
    let n = steps.len();
    for p in steps.into_iter().take(n.saturating_sub(keep)) {
        let _ = fs::remove_dir_all(p);
    }
}

/// The last complete checkpoint of a run, or None when there is none.
pub fn latest(run: &Path) -> Result<Option<PathBuf>> {
    let dir = checkpoints_dir(run);
    let lp = dir.join("latest");
    if !lp.exists() {
        return Ok(None);
    }
    let name = fs::read_to_string(&lp).with_context(|| format!("read {}", lp.display()))?;
    let p = dir.join(name.trim());
    for f in ["model.safetensors", "optimizer.safetensors", "state.json"] {
        if !p.join(f).is_file() {
            bail!("{}: `latest` names {} but its {f} is missing", lp.display(), p.display());
        }
    }
    Ok(Some(p))
}

pub fn read_state(ckpt: &Path) -> Result<TrainState> {
    let p = ckpt.join("state.json");
    let text = fs::read(&p).with_context(|| format!("read {}", p.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parse {}", p.display()))
}

pub fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    Tensor::read_safetensors(path).with_context(|| format!("read {}", path.display()))
}
