//! The acceptance run: 300 steps of `so101-cpu` on the synthetic
//! dataset reduce loss_flow and loss_ct >= 3x; every METRICS.md ManiFlow name is
//! in metrics.jsonl and in the TensorBoard events (read back with tbparse); the
//! exported package passes parity and runs in `maniflow bench`; `health`
//! prints its verdicts and writes plots.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

const NAMES: &[&str] = &[
    "train_loss",
    "loss_flow",
    "loss_ct",
    "bc_loss",
    "v_flow_pred_magnitude",
    "v_ct_pred_magnitude",
    "lr",
    "global_step",
    "epoch",
    "grad_norm",
    "val_loss",
    "train_action_mse_error",
    "gate/mean_activation",
    "gate/std_activation",
    "gate/saturation_high_ratio",
    "gate/saturation_low_ratio",
    "gate/layer_variance",
    "gate/early_layers_mean",
    "gate/late_layers_mean",
    "gate/early_vs_late_diff",
    "gate/modality_head_mean",
    "gate/modality_head_std",
    "gate/modality_wrist_mean",
    "gate/modality_wrist_std",
    "gate/modality_tactile_mean",
    "gate/modality_tactile_std",
    "gate/modality_proprio_mean",
    "gate/modality_proprio_std",
    "correlation/loss_vs_tactile_gate",
    "correlation/loss_vs_proprio_gate",
    "attn/entropy",
    "attn/entropy_diff",
    "attn/modality_head",
    "attn/modality_wrist",
    "attn/modality_tactile",
    "attn/modality_proprio",
    "attn/modality_rgb",
];

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn so101_cpu_300_steps_learn_log_export_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let ds = synth(dir.path(), 40, 60, 11);
    let cfg = config_with(dir.path(), "so101.toml", &[("checkpoint_every", "100"), ("steps", "300")]);
    let run = dir.path().join("run");
    let t0 = std::time::Instant::now();
    let out = ok(&["train", "--config", s(&cfg), "--dataset", s(&ds), "--out", s(&run), "--quiet"]);
    eprintln!("{out}\n300 steps took {:.0}s", t0.elapsed().as_secs_f64());

    let m = read_metrics(&run);
    let series = |k: &str| -> Vec<f64> { m.iter().filter_map(|r| r[k].as_f64()).collect() };
    for name in NAMES {
        assert!(!series(name).is_empty(), "metric {name} missing from metrics.jsonl");
    }
    for k in ["loss_flow", "loss_ct"] {
        let v = series(k);
        let first = v[0];
        let tail: f64 = v[v.len() - 3..].iter().sum::<f64>() / 3.0;
        eprintln!("{k}: first {first:.4}, mean of last 3 logs {tail:.4}, ratio {:.1}x", first / tail);
        assert!(first / tail >= 3.0, "{k} fell only {:.2}x ({first} -> {tail})", first / tail);
    }

    // TensorBoard events, read with the PyPI packages
    let py = format!(
        "import sys,json\nfrom tbparse import SummaryReader\ndf = SummaryReader(sys.argv[1]).scalars\nprint(json.dumps(sorted(set(df['tag']))))\n"
    );
    let o = Command::new(python()).args(["-c", &py, s(&run.join("tb"))]).output().unwrap();
    assert!(o.status.success(), "tbparse failed: {}", String::from_utf8_lossy(&o.stderr));
    let tags: Vec<String> = serde_json::from_slice(&o.stdout).unwrap();
    for name in NAMES {
        assert!(tags.iter().any(|t| t == name), "TensorBoard events lack {name}; have {tags:?}");
    }

    // export (EMA) with parity, then the runtime's bench
    let pkg = dir.path().join("pkg");
    let o = ok(&["export", s(&run), "--out", s(&pkg), "--ema"]);
    eprintln!("{o}");
    let manifest = std::fs::read_to_string(pkg.join("policy.toml")).unwrap();
    let err: f64 = manifest
        .lines()
        .find_map(|l| l.strip_prefix("parity_max_abs_err = "))
        .expect("parity in manifest")
        .trim()
        .parse()
        .unwrap();
    assert!(err <= 1e-4, "parity {err}");
    let maniflow = train_bin().with_file_name("maniflow");
    assert!(maniflow.exists(), "{} not built (cargo test --workspace builds it)", maniflow.display());
    for steps in ["1", "2"] {
        let o = Command::new(&maniflow).args(["bench", s(&pkg), "--steps", steps, "--iters", "20"]).output().unwrap();
        assert!(o.status.success(), "maniflow bench failed: {}", String::from_utf8_lossy(&o.stderr));
        eprintln!("{}", String::from_utf8_lossy(&o.stdout));
    }

    // health: verdict per rule, plots, health.json
    let o = ok(&["health", s(&run)]);
    eprintln!("{o}");
    assert!(run.join("health.json").exists());
    let plots: Vec<_> = std::fs::read_dir(run.join("plots")).unwrap().flatten().collect();
    assert!(plots.len() >= 4, "plots: {plots:?}");
}

/// Training-time real-time chunking end to end: a prefix-conditioned run logs
/// `loss_prefix_next`, its export carries `prefix` / `prefix_mask` in velocity.onnx
/// (parity of the graph and of the runtime's whole pipeline with a prefix given),
/// and the manifest says how long a prefix the policy continues.
#[test]
fn prefix_conditioned_run_exports_prefix_inputs_with_parity() {
    let dir = tempfile::tempdir().unwrap();
    let ds = synth(dir.path(), 6, 40, 5);
    let cfg = config_with(dir.path(), "so101.toml", &[("steps", "20"), ("batch_size", "16"), ("log_every", "5")]);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("\n[model.prefix]\nd_max = 3\n");
    std::fs::write(&cfg, text).unwrap();
    let run = dir.path().join("run");
    ok(&["train", "--config", s(&cfg), "--dataset", s(&ds), "--out", s(&run), "--quiet"]);
    let m = read_metrics(&run);
    let lpn: Vec<f64> = m.iter().filter_map(|r| r["loss_prefix_next"].as_f64()).collect();
    assert!(!lpn.is_empty() && lpn.iter().all(|v| v.is_finite() && *v >= 0.0), "loss_prefix_next: {lpn:?}");

    let pkg = dir.path().join("pkg");
    let o = ok(&["export", s(&run), "--out", s(&pkg), "--ema"]);
    eprintln!("{o}");
    let manifest = std::fs::read_to_string(pkg.join("policy.toml")).unwrap();
    assert!(manifest.contains("prefix_d_max = 3"), "{manifest}");
    // The graph's inputs, read back with onnxruntime from PyPI.
    let py = "import sys,json,onnxruntime as o\ns=o.InferenceSession(sys.argv[1])\nprint(json.dumps({i.name: i.shape for i in s.get_inputs()}))";
    let out = Command::new(python()).args(["-c", py, s(&pkg.join("velocity.onnx"))]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let inputs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(inputs["prefix"].as_array().map(|a| a.len()), Some(3), "{inputs}");
    assert_eq!(inputs["prefix_mask"][1], 16, "{inputs}");
    // A package whose manifest hides the prefix is refused, naming the input.
    let bad = dir.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    for f in ["encoder.onnx", "velocity.onnx"] {
        std::fs::copy(pkg.join(f), bad.join(f)).unwrap();
    }
    std::fs::write(bad.join("policy.toml"), manifest.replace("prefix_d_max = 3\n", "")).unwrap();
    let maniflow = train_bin().with_file_name("maniflow");
    let o = Command::new(&maniflow).args(["inspect", s(&bad)]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("prefix"), "inspect accepted a hidden prefix input: {err}");
}
