//! Checkpoints, bit-exact resume, crash safety and the stability guards, with
//! the real `maniflow-train` binary on a synthetic LeRobot v3 dataset.

mod common;
use common::*;
use std::path::Path;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn ckpt(run: &Path, step: u64) -> std::path::PathBuf {
    run.join("checkpoints").join(format!("step-{step:08}"))
}

#[test]
fn resume_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let ds = synth(dir.path(), 6, 30, 1);
    let cfg = tiny_config(dir.path(), "c.toml", &[]);
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    ok(&["train", "--config", s(&cfg), "--dataset", s(&ds), "--out", s(&a), "--steps", "12", "--quiet"]);
    ok(&["train", "--config", s(&cfg), "--dataset", s(&ds), "--out", s(&b), "--steps", "8", "--quiet"]);
    // a second start without --resume must refuse
    let again = run_env(&["train", "--config", s(&cfg), "--dataset", s(&ds), "--out", s(&b), "--steps", "8"], &[]);
    assert!(!again.status.success());
    assert!(text(&again).contains("--resume"), "{}", text(&again));
    let out = ok(&["train", "--config", s(&cfg), "--dataset", s(&ds), "--out", s(&b), "--steps", "12", "--resume", "--quiet"]);
    assert!(out.contains("resumed from"), "{out}");
    for f in ["model.safetensors", "ema.safetensors", "optimizer.safetensors"] {
        let x = std::fs::read(ckpt(&a, 12).join(f)).unwrap();
        let y = std::fs::read(ckpt(&b, 12).join(f)).unwrap();
        assert!(x == y, "{f} differs between the straight run and the resumed run");
    }
    // and the logged metrics of the last step agree exactly
    let la = read_metrics(&a);
    let lb = read_metrics(&b);
    let last = |v: &[serde_json::Value]| v.iter().rev().find(|r| r["step"] == 12).cloned().unwrap();
    let (ra, rb) = (last(&la), last(&lb));
    for k in ["train_loss", "loss_flow", "loss_ct", "grad_norm", "lr"] {
        assert_eq!(ra[k], rb[k], "{k} at step 12 differs: {} vs {}", ra[k], rb[k]);
    }
}

#[test]
fn crash_inside_checkpoint_write_keeps_last_good() {
    let dir = tempfile::tempdir().unwrap();
    let ds = synth(dir.path(), 6, 30, 2);
    let cfg = tiny_config(dir.path(), "c.toml", &[]);
    let run = dir.path().join("run");
    let out = run_env(
        &["train", "--config", s(&cfg), "--dataset", s(&ds), "--out", s(&run), "--steps", "12", "--quiet"],
        &[("MANIFLOW_TEST_CRASH_CHECKPOINT", "8")],
    );
    assert!(!out.status.success(), "the crash hook did not fire:\n{}", text(&out));
    let latest = std::fs::read_to_string(run.join("checkpoints/latest")).unwrap();
    assert_eq!(latest.trim(), "step-00000004", "latest must still name the last complete checkpoint");
    assert!(run.join("checkpoints/.tmp-step-00000008").exists(), "the half-written checkpoint should be a temp dir");
    assert!(!ckpt(&run, 8).exists());
    // resume continues from step 4 and finishes; the stale temp dir is cleaned
    let o = ok(&["train", "--config", s(&cfg), "--dataset", s(&ds), "--out", s(&run), "--steps", "12", "--resume", "--quiet"]);
    assert!(o.contains("step 4"), "{o}");
    assert!(ckpt(&run, 12).join("model.safetensors").exists());
    assert!(!run.join("checkpoints/.tmp-step-00000008").exists());
}

#[test]
fn sigkill_at_any_time_leaves_a_loadable_checkpoint() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let ds = synth(dir.path(), 6, 30, 3);
    let cfg = tiny_config(dir.path(), "c.toml", &[("checkpoint_every", "1")]);
    for (i, delay_ms) in [1500u64, 2600].into_iter().enumerate() {
        let run = dir.path().join(format!("run{i}"));
        let mut child = Command::new(train_bin())
            .args(["train", "--config", s(&cfg), "--dataset", s(&ds), "--out", s(&run), "--steps", "400", "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // wait for the first checkpoint, then kill at an arbitrary moment
        let t0 = std::time::Instant::now();
        while !run.join("checkpoints/latest").exists() && t0.elapsed().as_secs() < 120 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let o = ok(&["train", "--config", s(&cfg), "--dataset", s(&ds), "--out", s(&run), "--steps", "2", "--resume", "--quiet"]);
        assert!(o.contains("resumed from"), "{o}");
    }
}

#[test]
fn nonfinite_steps_are_skipped_then_abort_after_k() {
    let dir = tempfile::tempdir().unwrap();
    let ds = synth(dir.path(), 6, 30, 4);
    let cfg = tiny_config(dir.path(), "c.toml", &[("max_consecutive_nonfinite", "3")]);
    let run = dir.path().join("run");
    // one NaN step is skipped and training goes on
    let out = run_env(
        &["train", "--config", s(&cfg), "--dataset", s(&ds), "--out", s(&run), "--steps", "6", "--quiet"],
        &[("MANIFLOW_TEST_INJECT", "nan@3")],
    );
    assert!(out.status.success(), "{}", text(&out));
    let ev = events(&run);
    assert!(ev.iter().any(|e| e.starts_with("nonfinite step 3")), "{ev:?}");
    // three in a row abort with a clear message; the last good checkpoint survives
    let run2 = dir.path().join("run2");
    let out = run_env(
        &["train", "--config", s(&cfg), "--dataset", s(&ds), "--out", s(&run2), "--steps", "20", "--quiet"],
        &[("MANIFLOW_TEST_INJECT", "nan@6,nan@7,nan@8")],
    );
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains("3 consecutive non-finite steps") && t.contains("step 8"), "{t}");
    assert_eq!(std::fs::read_to_string(run2.join("checkpoints/latest")).unwrap().trim(), "step-00000004");
    let ev = events(&run2);
    assert_eq!(ev.iter().filter(|e| e.starts_with("nonfinite")).count(), 3, "{ev:?}");
}

#[test]
fn loss_spike_is_logged_with_batch_and_episodes() {
    let dir = tempfile::tempdir().unwrap();
    let ds = synth(dir.path(), 6, 30, 5);
    let cfg = tiny_config(dir.path(), "c.toml", &[("spike_window", "10"), ("spike_skip_update", "true")]);
    let run = dir.path().join("run");
    let out = run_env(
        &["train", "--config", s(&cfg), "--dataset", s(&ds), "--out", s(&run), "--steps", "16", "--quiet"],
        &[("MANIFLOW_TEST_INJECT", "spike@14")],
    );
    assert!(out.status.success(), "{}", text(&out));
    let ev = events(&run);
    let spike = ev.iter().find(|e| e.starts_with("spike step 14")).unwrap_or_else(|| panic!("no spike event: {ev:?}"));
    assert!(spike.contains("episodes [") && spike.contains("windows [") && spike.contains("update skipped"), "{spike}");
    assert_eq!(ev.iter().filter(|e| e.starts_with("spike")).count(), 1, "only the injected step is a spike: {ev:?}");
}

#[test]
fn config_and_dataset_errors_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = config_with(dir.path(), "bad.toml", &[("n_head", "3")]);
    let ds = synth(dir.path(), 3, 20, 6);
    let out = fails(&["train", "--config", s(&bad), "--dataset", s(&ds), "--out", s(&dir.path().join("r"))]);
    assert!(out.contains("model.n_emb") && out.contains("n_head"), "{out}");
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, std::fs::read_to_string(repo().join("trainer/configs/so101-cpu.toml")).unwrap().replace("n_layer", "n_layers")).unwrap();
    let out = fails(&["train", "--config", s(&typo), "--dataset", s(&ds), "--out", s(&dir.path().join("r"))]);
    assert!(out.contains("n_layers"), "{out}");
    let out = fails(&["train", "--config", "so101-cpu", "--dataset", s(&dir.path().join("nope")), "--out", s(&dir.path().join("r"))]);
    assert!(out.contains("nope"), "{out}");
}

#[test]
fn upstream_named_weights_load_and_our_checkpoints_load_in_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let ds = synth(dir.path(), 4, 30, 7);
    let cfg = tiny_config(dir.path(), "c.toml", &[]);
    let w = dir.path().join("ref.safetensors");
    let i = dir.path().join("in.safetensors");
    // random weights with the reference's (upstream) names, DiTX keys stripped of `model.`
    let script = repo().join("trainer/tests/reference/maniflow_ref.py");
    let o = std::process::Command::new(python())
        .arg(&script)
        .args(["make-case", "--config", s(&cfg), "--out-weights", s(&w), "--out-inputs", s(&i)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let strip = format!(
        "import sys\nfrom safetensors.torch import load_file, save_file\nd = load_file(sys.argv[1])\nsave_file({{(k[6:] if k.startswith('model.') else k): v for k, v in d.items()}}, sys.argv[2])\nprint(len(d))\n"
    );
    let up = dir.path().join("upstream.safetensors");
    let o = std::process::Command::new(python()).args(["-c", &strip, s(&w), s(&up)]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let n: usize = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    let run = dir.path().join("run");
    let out = ok(&["train", "--config", s(&cfg), "--dataset", s(&ds), "--out", s(&run), "--steps", "4", "--quiet", "--init", s(&up)]);
    assert!(out.contains(&format!("initialised {n} tensors")), "{out}");
    // our checkpoint loads strictly into the PyTorch reference
    let load = format!(
        "import sys, importlib.util\nspec = importlib.util.spec_from_file_location('r', sys.argv[1]); r = importlib.util.module_from_spec(spec); spec.loader.exec_module(r)\ncfg = r.load_config(sys.argv[2])\nnet = r.build(cfg, 6, 6, 32)\nr.load(sys.argv[3], net)\nprint('ok', sum(p.numel() for p in net.parameters()))\n"
    );
    let ck = run.join("checkpoints/step-00000004/ema.safetensors");
    let o = std::process::Command::new(python()).args(["-c", &load, s(&script), s(&cfg), s(&ck)]).output().unwrap();
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).starts_with("ok"), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A recorded simulator dataset with the pads' pressure images (PNG cameras).
fn tactile_dataset(dir: &Path, episodes: usize) -> std::path::PathBuf {
    use maniflow_runtime::node::record::{record_sim_expert_in_process, InProcessOptions, TACTILE_IMAGE};
    let root = dir.join(format!("tactile-{episodes}"));
    let opts = InProcessOptions { episodes, video: None, tactile_image_key: Some(TACTILE_IMAGE.into()), ..Default::default() };
    record_sim_expert_in_process(&root, &opts, &mut |_| {}).unwrap();
    root
}

/// Every tensor of a safetensors file as (name, raw bytes).
fn safetensors_map(p: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let bytes = std::fs::read(p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.iter().map(|(n, v)| (n.to_string(), v.data().to_vec())).collect()
}

fn num(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or_else(|| panic!("{k} missing or not a number in {v}"))
}

const MAE_BATCH: [&str; 16] = [
    "batch/loss_total", "batch/lr", "batch/epoch", "batch/iteration", "batch/loss_static", "batch/loss_dynamic",
    "batch/loss_recon", "batch/loss_pred", "batch/loss_ratio", "batch/weighted_static", "batch/weighted_dynamic",
    "batch/alpha", "batch/beta", "batch/static_contribution", "batch/dynamic_contribution", "batch/mode",
];
const MAE_EPOCH: [&str; 10] = [
    "epoch/train_loss", "epoch/lr", "epoch/best_loss_so_far", "epoch/loss_static", "epoch/loss_dynamic",
    "epoch/loss_ratio", "epoch/weighted_static", "epoch/weighted_dynamic",
    "epoch/actual_static_contribution", "epoch/actual_dynamic_contribution",
];

/// Checks seed 001's names and identities in a pretraining run's metrics.jsonl;
/// returns the epoch records.
fn check_mae_metrics(run: &Path, alpha: f64, beta: f64) -> Vec<serde_json::Value> {
    let recs = read_metrics(run);
    let batches: Vec<&serde_json::Value> = recs.iter().filter(|r| r.get("batch/loss_total").is_some()).collect();
    let epochs: Vec<serde_json::Value> = recs.iter().filter(|r| r.get("epoch/train_loss").is_some()).cloned().collect();
    assert!(!batches.is_empty() && !epochs.is_empty());
    for b in &batches {
        for k in MAE_BATCH {
            num(b, k);
        }
        // Exact identities, read back from the JSON text.
        assert_eq!(num(b, "batch/loss_dynamic"), num(b, "batch/loss_recon") + num(b, "batch/loss_pred"), "{b}");
        assert_eq!(num(b, "batch/loss_total"), num(b, "batch/weighted_static") + num(b, "batch/weighted_dynamic"), "{b}");
        assert_eq!(num(b, "batch/weighted_static"), alpha * num(b, "batch/loss_static"));
        assert!((num(b, "batch/static_contribution") + num(b, "batch/dynamic_contribution") - 1.0).abs() < 1e-15);
        assert_eq!(num(b, "batch/loss_ratio"), num(b, "batch/loss_static") / num(b, "batch/loss_dynamic"));
        assert_eq!((num(b, "batch/alpha"), num(b, "batch/beta"), num(b, "batch/mode")), (alpha, beta, 2.0));
        assert_eq!(num(b, "batch/iteration"), b["step"].as_f64().unwrap());
        assert_eq!(num(b, "batch/epoch"), b["epoch"].as_f64().unwrap());
    }
    let mut best = f64::INFINITY;
    for e in &epochs {
        for k in MAE_EPOCH {
            num(e, k);
        }
        // epoch/train_loss is the mean of the epoch's batch losses.
        let ep = e["epoch"].as_u64().unwrap();
        let of: Vec<f64> = batches.iter().filter(|b| b["epoch"].as_u64() == Some(ep)).map(|b| num(b, "batch/loss_total")).collect();
        let mean = of.iter().sum::<f64>() / of.len() as f64;
        assert!((num(e, "epoch/train_loss") - mean).abs() <= 1e-12 * mean, "epoch {ep}: {e} vs batch mean {mean}");
        let (s, d) = (alpha * num(e, "epoch/loss_static"), beta * num(e, "epoch/loss_dynamic"));
        assert_eq!(num(e, "epoch/actual_static_contribution"), s / (s + d));
        assert!((num(e, "epoch/actual_static_contribution") + num(e, "epoch/actual_dynamic_contribution") - 1.0).abs() < 1e-15);
        best = best.min(num(e, "epoch/train_loss"));
        assert_eq!(num(e, "epoch/best_loss_so_far"), best);
    }
    let last = recs.iter().rev().find(|r| r.get("summary/best_loss").is_some()).expect("summary record");
    assert_eq!(num(last, "summary/best_loss"), best);
    let be = num(last, "summary/best_epoch") as u64;
    assert_eq!(epochs.iter().find(|e| e["epoch"].as_u64() == Some(be)).map(|e| num(e, "epoch/train_loss")), Some(best));
    assert!(num(last, "summary/total_time_seconds") > 0.0);
    epochs
}

#[test]
fn tactile_pretraining_logs_seed_001_and_resumes_bit_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let ds = tactile_dataset(dir.path(), 6);
    let cfg = dir.path().join("mae.toml");
    std::fs::write(&cfg, "[tactile_mae]\nwidth = 32\ndecoder_width = 16\n[pretrain]\nbatch_size = 32\nepochs = 3\nwarmup_epochs = 1.0\nalpha = 0.7\nbeta = 0.5\n").unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let base = ["pretrain-tactile", "--config", s(&cfg), "--dataset", s(&ds), "--quiet"];
    let out = ok(&[&base[..], &["--out", s(&a)]].concat());
    assert!(out.contains("pretrained") && out.contains("best epoch"), "{out}");
    let epochs = check_mae_metrics(&a, 0.7, 0.5);
    assert_eq!(epochs.len(), 3);
    // The MAE learns: every epoch loss falls from the first epoch to the last.
    for k in ["epoch/train_loss", "epoch/loss_static", "epoch/loss_dynamic"] {
        assert!(num(&epochs[2], k) < num(&epochs[0], k), "{k}: {} -> {}", epochs[0][k], epochs[2][k]);
    }
    // TensorBoard, plots, summary, and the health verdict on seed 001's rules.
    assert!(std::fs::read_dir(a.join("tb")).unwrap().count() > 0);
    for p in ["mae_losses.png", "mae_epochs.png", "mae_balance.png", "lr.png"] {
        assert!(a.join("plots").join(p).is_file(), "{p}");
    }
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(a.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["steps"], read_metrics(&a).iter().filter(|r| r.get("batch/loss_total").is_some()).count());
    let health = ok(&["health", s(&a)]);
    for id in ["mae_loss_ratio", "mae_contribution", "mae_loss_rising", "nonfinite", "loss_spikes", "Overall:"] {
        assert!(health.contains(id), "{id} missing from:\n{health}");
    }
    assert!(!health.contains("gate_saturation_high"), "ManiFlow rules on an MAE run:\n{health}");

    // A crash inside the second epoch's checkpoint, then --resume from the first
    // one: the same weights bit for bit as the straight run.
    let spe = read_metrics(&a).iter().filter(|r| r.get("batch/loss_total").is_some() && r["epoch"] == 0).count();
    let crash = (2 * spe).to_string();
    let out = run_env(&[&base[..], &["--out", s(&b)]].concat(), &[("MANIFLOW_TEST_CRASH_CHECKPOINT", &crash)]);
    assert!(!out.status.success(), "{}", text(&out));
    let again = run_env(&[&base[..], &["--out", s(&b)]].concat(), &[]);
    assert!(!again.status.success() && text(&again).contains("--resume"), "{}", text(&again));
    let out = ok(&[&base[..], &["--out", s(&b), "--resume"]].concat());
    assert!(out.contains(&format!("resumed from {}", ckpt(&b, spe as u64).display())), "{out}");
    let last = |run: &Path| std::fs::read(std::fs::read_dir(run.join("checkpoints")).unwrap().flatten()
        .map(|e| e.path()).filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("step-")).max().unwrap()
        .join("model.safetensors")).unwrap();
    assert!(last(&a) == last(&b), "resumed weights differ");
    check_mae_metrics(&b, 0.7, 0.5);

    // A NaN step is skipped, logged and judged; K in a row abort with the checkpoint kept.
    let c = dir.path().join("c");
    let out = run_env(&[&base[..], &["--out", s(&c), "--epochs", "1"]].concat(), &[("MANIFLOW_TEST_INJECT", "nan@2")]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(events(&c).iter().any(|e| e.starts_with("nonfinite step 2")), "{:?}", events(&c));
    let h = run_env(&["health", s(&c)], &[]);
    assert!(text(&h).contains("nonfinite") && text(&h).contains("WARN"), "{}", text(&h));

    // Errors name the problem.
    let synth_ds = synth(dir.path(), 2, 10, 1);
    let e = fails(&["pretrain-tactile", "--dataset", s(&synth_ds), "--out", s(&dir.path().join("d"))]);
    assert!(e.contains("no feature observation.tactile_image"), "{e}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[tactile_mae]\nimage = [16, 16]\n").unwrap();
    let e = fails(&["pretrain-tactile", "--config", s(&bad), "--dataset", s(&ds), "--out", s(&dir.path().join("e"))]);
    assert!(e.contains("32 x 16") && e.contains("tactile_mae.image"), "{e}");
}

/// Pressure images in a policy, both ways: as a 2 x 16 x 16 vector into the linear
/// tactile projection, and through a tactile MAE pretrained on them (frozen, then
/// fine-tuned). Each is exported with its parity gates (the MAE's ViT inside
/// `encoder.onnx`); the MAE policy is driven by the node on the slip task, its tactile
/// input fed by the simulator's `tactile/image` stream (32FC1).
#[test]
fn pressure_image_policies_export_and_run_in_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let ds = tactile_dataset(dir.path(), 2);
    let edits = [("tactile_key", "\"observation.tactile_image\""), ("image_size", "[96, 96]"), ("resnet_width", "16"), ("resnet_blocks", "[1, 1, 1, 1]"), ("augment", "false")];
    let cfg = tiny_config(dir.path(), "p.toml", &[&edits[..], &[("tactile", "\"taxels\"")]].concat());
    let (lin, lin_pkg) = (dir.path().join("lin"), dir.path().join("lin-pkg"));
    ok(&["train", "--config", s(&cfg), "--dataset", s(&ds), "--out", s(&lin), "--steps", "2", "--quiet"]);
    ok(&["export", s(&lin), "--out", s(&lin_pkg), "--name", "pressure"]);
    let manifest = std::fs::read_to_string(lin_pkg.join("policy.toml")).unwrap();
    assert!(manifest.contains("observation.tactile_image") && manifest.contains("512"), "{manifest}");

    // The MAE: one short pretraining epoch on the same pressure images.
    let mae = dir.path().join("mae");
    let mae_cfg = dir.path().join("mae.toml");
    std::fs::write(&mae_cfg, "[tactile_mae]\nwidth = 32\ndecoder_width = 16\n[pretrain]\nbatch_size = 16\nepochs = 1\nwarmup_epochs = 0.5\n").unwrap();
    ok(&["pretrain-tactile", "--config", s(&mae_cfg), "--dataset", s(&ds), "--out", s(&mae), "--quiet"]);
    let mae_cfg_for = |name: &str, freeze: bool| {
        let p = tiny_config(dir.path(), name, &[&edits[..], &[("tactile", "\"mae\"")]].concat());
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, format!("{text}\n[encoder.tactile_mae]\nrun = {:?}\nfreeze = {freeze}\nlr_scale = 0.5\n", s(&mae))).unwrap();
        p
    };
    let mae_ckpt = std::fs::read_to_string(mae.join("checkpoints/latest")).unwrap();
    let pretrained = safetensors_map(&mae.join("checkpoints").join(mae_ckpt.trim()).join("model.safetensors"));
    let encoder_of = |run: &Path, file: &str| {
        let m = safetensors_map(&ckpt(run, 4).join(file));
        m.into_iter().filter_map(|(k, v)| k.strip_prefix("obs_encoder.tactile.mae.").map(|r| (format!("encoder.{r}"), v))).collect::<std::collections::BTreeMap<_, _>>()
    };
    let pretrained_encoder: std::collections::BTreeMap<_, _> = pretrained.into_iter().filter(|(k, _)| k.starts_with("encoder.")).collect();
    assert!(pretrained_encoder.len() > 10);

    // Frozen: the policy's encoder is the pretrained one, bit for bit, after training.
    let (run, pkg) = (dir.path().join("run"), dir.path().join("pkg"));
    // (4 steps: DiTX's zero-initialised output layers pass no gradient upstream at first)
    let out = ok(&["train", "--config", s(&mae_cfg_for("m.toml", true)), "--dataset", s(&ds), "--out", s(&run), "--steps", "4", "--quiet"]);
    assert!(out.contains("tactile encoder:") && out.contains("frozen"), "{out}");
    for f in ["model.safetensors", "ema.safetensors"] {
        assert!(encoder_of(&run, f) == pretrained_encoder, "{f}: the frozen encoder changed");
    }
    let data: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("data.json")).unwrap()).unwrap();
    let mae_data: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(mae.join("data.json")).unwrap()).unwrap();
    let norm = &data["normalization"]["observation.tactile_image"];
    assert_eq!(norm["mean"].as_array().unwrap().len(), 512, "{norm}");
    assert_eq!(norm["mean"][17].as_f64().unwrap() as f32, mae_data["mean"].as_f64().unwrap() as f32, "the pretraining's normalisation");
    assert_eq!(norm["std"][300].as_f64().unwrap() as f32, mae_data["std"].as_f64().unwrap() as f32);
    assert_eq!(data["dims"]["tactile_mae"]["width"], 32, "{}", data["dims"]);
    // The MAE's tactile token is a modality like the taxels': its gate and attention are reported.
    let recs = read_metrics(&run);
    for k in ["gate/modality_tactile_mean", "attn/modality_tactile", "correlation/loss_vs_tactile_gate"] {
        assert!(recs.iter().any(|r| r.get(k).is_some_and(|v| v.is_number())), "{k} not logged");
    }
    let exported = ok(&["export", s(&run), "--out", s(&pkg), "--name", "pressure-mae"]);
    eprintln!("{exported}");
    let manifest = std::fs::read_to_string(pkg.join("policy.toml")).unwrap();
    assert!(manifest.contains("tactile MAE"), "{manifest}");
    // The ViT is inside encoder.onnx.
    let enc = std::fs::read(pkg.join("encoder.onnx")).unwrap();
    assert!(enc.windows(b"Erf".len()).any(|w| w == b"Erf") && enc.windows(b"obs_encoder.tactile.mae.blocks.1.attn.qkv".len()).any(|w| w == b"obs_encoder.tactile.mae.blocks.1.attn.qkv"));

    // Fine-tuned: the encoder moves with the policy.
    let tuned = dir.path().join("tuned");
    let out = ok(&["train", "--config", s(&mae_cfg_for("t.toml", false)), "--dataset", s(&ds), "--out", s(&tuned), "--steps", "4", "--quiet"]);
    assert!(out.contains("fine-tuned"), "{out}");
    let moved = encoder_of(&tuned, "model.safetensors");
    assert_eq!(moved.len(), pretrained_encoder.len());
    let changed: Vec<&String> = moved.iter().filter(|(k, v)| **v != pretrained_encoder[*k]).map(|(k, _)| k).collect();
    assert!(changed.len() * 2 > moved.len() && changed.iter().any(|k| *k == "encoder.patch_embed.weight"), "a fine-tuned encoder changes: {changed:?}");

    // A wrong run directory is named.
    let bad = tiny_config(dir.path(), "bad.toml", &[&edits[..], &[("tactile", "\"mae\"")]].concat());
    let text = std::fs::read_to_string(&bad).unwrap();
    std::fs::write(&bad, format!("{text}\n[encoder.tactile_mae]\nrun = {:?}\n", s(&lin))).unwrap();
    let e = fails(&["train", "--config", s(&bad), "--dataset", s(&ds), "--out", s(&dir.path().join("bad")), "--steps", "2"]);
    assert!(e.contains("not a `maniflow-train pretrain-tactile` run") || e.contains("tactile_mae"), "{e}");
    // The bundled node config with the tactile stream switched to the pressure images.
    let base = std::fs::read_to_string(repo().join("launch/so101.toml")).unwrap();
    let node = base.replace(
        "topic = \"tactile\"       # std_msgs/Float32MultiArray of taxels\ntype = \"taxels\"",
        "topic = \"tactile/image\"\ntype = \"pressure_image\"",
    );
    assert_ne!(node, base, "launch/so101.toml's tactile stream changed: update this test");
    let node_cfg = dir.path().join("node.toml");
    std::fs::write(&node_cfg, node.replace("path = \"../models/so101-sim-pick\"", &format!("path = {:?}", s(&pkg)))).unwrap();
    let report = dir.path().join("eval.json");
    let maniflow = train_bin().with_file_name("maniflow");
    let o = std::process::Command::new(&maniflow)
        .args(["eval", "--policy", s(&pkg), "--config", s(&node_cfg), "--task", "pick-slip", "--episodes", "1", "--episode-s", "3", "--json", s(&report)])
        .output()
        .unwrap();
    assert!(o.status.success(), "eval failed: {}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    // Every chunk needs the tactile input: chunks produced mean the images arrived and
    // fit (a 2-step policy's chunks are then mostly refused by the safety filter).
    assert!(r["chunks"]["produced"].as_u64().unwrap() > 10, "{}", r["chunks"]);
    assert_eq!(r["chunks"]["engine_errors"], 0, "{}", r["chunks"]);
}

/// Seed 004's staged schedule with the expert router, end to end: each stage's frozen
/// parameters stay bit for bit, its lr and router temperature are the ones used and
/// logged (`stage`, `lr`, `router/*`), the stage changes are events, `health` judges the
/// router, and the export bakes the last stage's temperature into `velocity.onnx`.
#[test]
fn staged_expert_run_freezes_logs_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    let ds = synth(dir.path(), 6, 30, 4);
    let stages = "\n[model.router]\nload_balance = 0.05\n\n\
        [[train.stages]]\nname = \"warm-up\"\nuntil = 4\nrouter_temperature = 2.0\n\n\
        [[train.stages]]\nname = \"transition\"\nuntil = 8\nlr = 1e-3\nfrozen = [\"obs_encoder\", \"model.final_layer.router\"]\n\n\
        [[train.stages]]\nname = \"fine-tune\"\nlr = 1e-4\nrouter_temperature = 0.5\n";
    let edits = [("fusion", "\"cross_attention\"\nexperts = 4"), ("warmup_steps", "0"), ("checkpoint_every", "4"), ("log_every", "1")];
    let cfg = tiny_config(dir.path(), "e.toml", &edits);
    let text0 = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{text0}{stages}")).unwrap();
    let (run, pkg) = (dir.path().join("run"), dir.path().join("pkg"));
    let out = ok(&["train", "--config", s(&cfg), "--dataset", s(&ds), "--out", s(&run), "--steps", "12", "--quiet"]);
    let events = std::fs::read_to_string(run.join("events.jsonl")).unwrap();
    for want in ["stage 0 \\\"warm-up\\\" from step 1 to step 4", "stage 1 \\\"transition\\\" from step 5 to step 8", "stage 2 \\\"fine-tune\\\" from step 9 to the end"] {
        assert!(events.contains(want), "{want} not in events.jsonl:\n{events}\n{out}");
    }
    // Frozen in steps 5-8: the encoder and the router do not move; the experts and DiTX do.
    let (at4, at8, at12) = (safetensors_map(&ckpt(&run, 4).join("model.safetensors")), safetensors_map(&ckpt(&run, 8).join("model.safetensors")), safetensors_map(&ckpt(&run, 12).join("model.safetensors")));
    let moved = |a: &std::collections::BTreeMap<String, Vec<u8>>, b: &std::collections::BTreeMap<String, Vec<u8>>, prefix: &str| {
        let names: Vec<&String> = a.keys().filter(|k| k.starts_with(prefix)).collect();
        assert!(!names.is_empty(), "no tensor under {prefix}");
        names.iter().filter(|k| a[**k] != b[**k]).count() as f64 / names.len() as f64
    };
    assert_eq!(moved(&at4, &at8, "obs_encoder."), 0.0, "the encoder moved while frozen");
    assert_eq!(moved(&at4, &at8, "model.final_layer.router."), 0.0, "the router moved while frozen");
    assert!(moved(&at4, &at8, "model.final_layer.experts.") > 0.5 && moved(&at4, &at8, "model.blocks.") > 0.5);
    assert!(moved(&at8, &at12, "obs_encoder.") > 0.5, "the encoder must train again after its stage");
    assert_eq!(moved(&at8, &at12, "model.final_layer.router."), 1.0, "the router must train again after its stage");
    // Logged: stage, the stage's base lr under the run's cosine, temperature, router stats.
    let recs = read_metrics(&run);
    let at = |step: u64| recs.iter().rev().find(|r| r["step"] == step && r.get("stage").is_some()).cloned().unwrap_or_else(|| panic!("no record at step {step}"));
    for (step, stage, base, tau) in [(2u64, 0.0, 3e-4, 2.0), (6, 1.0, 1e-3, 1.0), (10, 2.0, 1e-4, 0.5)] {
        let r = at(step);
        assert_eq!(num(&r, "stage"), stage, "stage at step {step}");
        let want = base * 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / 12.0).cos());
        assert!((num(&r, "lr") - want).abs() < 1e-12 * want.max(1.0), "lr at step {step}: {} vs {want}", num(&r, "lr"));
        assert_eq!(num(&r, "router/temperature"), tau, "temperature at step {step}");
        let usage: f64 = (0..4).map(|i| num(&r, &format!("router/expert_usage_{i}"))).sum();
        assert!((usage - 1.0).abs() < 1e-5, "usages sum to {usage}");
        let h = num(&r, "router/alpha_entropy");
        assert!(h > 0.0 && h <= 4f64.ln() + 1e-9 && (num(&r, "router/alpha_entropy_norm") - h / 4f64.ln()).abs() < 1e-9);
        let lb = num(&r, "router/load_balance");
        assert!((1.0 - 1e-6..=4.0).contains(&lb), "load balance {lb}");
    }
    let health = ok(&["health", s(&run)]);
    assert!(health.contains("router_unspecialised") && health.contains("router_collapsed"), "{health}");
    // Export: the last stage's temperature (0.5) inside velocity.onnx, parity-checked.
    let exported = ok(&["export", s(&run), "--out", s(&pkg), "--name", "experts"]);
    let manifest = std::fs::read_to_string(pkg.join("policy.toml")).unwrap();
    assert!(manifest.contains("4 expert heads mixed by a router (temperature 0.5)"), "{manifest}\n{exported}");
    let vel = std::fs::read(pkg.join("velocity.onnx")).unwrap();
    assert!(vel.windows(b"model.final_layer.experts.3.fc2".len()).any(|w| w == b"model.final_layer.experts.3.fc2"));
    // A frozen prefix that names nothing is refused before training, naming the stage.
    std::fs::write(&cfg, format!("{text0}{}", stages.replace("\"model.final_layer.router\"", "\"model.final_layer.routr\""))).unwrap();
    let e = fails(&["train", "--config", s(&cfg), "--dataset", s(&ds), "--out", s(&dir.path().join("bad")), "--steps", "2"]);
    assert!(e.contains("\"model.final_layer.routr\" names no parameter") && e.contains("stage \"transition\""), "{e}");
}
