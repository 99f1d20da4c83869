//! Helpers for the trainer's integration tests: the real `maniflow-train`
//! binary, the repo's venv Python, and small configs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn python() -> PathBuf {
    let p = std::env::var_os("MANIFLOW_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/python"));
    assert!(p.exists(), "{} missing: run `make bootstrap`", p.display());
    p
}

pub fn train_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_maniflow-train"))
}

pub fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(train_bin());
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("spawn maniflow-train")
}

pub fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn ok(args: &[&str]) -> String {
    let out = run_env(args, &[]);
    assert!(
        out.status.success(),
        "maniflow-train {args:?} failed:\n{}",
        text(&out)
    );
    text(&out)
}

/// Runs `maniflow-train args`, asserts that it fails, returns its output.
pub fn fails(args: &[&str]) -> String {
    let out = run_env(args, &[]);
    assert!(
        !out.status.success(),
        "maniflow-train {args:?} should fail:\n{}",
        text(&out)
    );
    text(&out)
}

/// The so101-cpu preset with `edits` applied (the first `key = ...` line of each key is replaced).
pub fn config_with(dir: &Path, name: &str, edits: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(repo().join("trainer/configs/so101-cpu.toml")).unwrap();
    for (k, v) in edits {
        let mut found = false;
        text = text
            .lines()
            .map(|l| {
                let key = l.split('=').next().unwrap_or("").trim();
                if key == *k && !found {
                    found = true;
                    format!("{k} = {v}")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert!(found, "config key {k} not in so101-cpu.toml");
    }
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A small, fast variant of so101-cpu for the mechanics tests.
pub fn tiny_config(dir: &Path, name: &str, extra: &[(&str, &str)]) -> PathBuf {
    let mut e: Vec<(&str, &str)> = vec![
        ("n_layer", "2"),
        ("n_emb", "64"),
        ("cond_dim", "64"),
        ("batch_size", "8"),
        ("threads", "1"),
        ("log_every", "2"),
        ("val_every", "4"),
        ("sample_every", "4"),
        ("attn_every", "4"),
        ("checkpoint_every", "4"),
    ];
    e.extend_from_slice(extra);
    config_with(dir, name, &e)
}

pub fn synth(dir: &Path, episodes: usize, frames: usize, seed: u64) -> PathBuf {
    let p = dir.join(format!("synth-{episodes}-{frames}-{seed}"));
    if !p.join("meta/info.json").exists() {
        ok(&[
            "synth-dataset",
            "--out",
            p.to_str().unwrap(),
            "--episodes",
            &episodes.to_string(),
            "--frames",
            &frames.to_string(),
            "--seed",
            &seed.to_string(),
        ]);
    }
    p
}

pub fn read_metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn events(run: &Path) -> Vec<String> {
    std::fs::read_to_string(run.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["event"].as_str().map(str::to_string))
        .collect()
}
