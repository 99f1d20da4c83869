//! The tch model against an independent PyTorch reference
//! (`tests/reference/maniflow_ref.py`, written from MANIFLOW.md): the same
//! random upstream-named weights (safetensors) and inputs, eval mode; the
//! context and velocity must agree within 1e-4 (max abs).

mod common;
use common::*;
use maniflow_trainer::config::Config;
use maniflow_trainer::model::{ManiFlowNet, Obs, ObsDims};
use maniflow_trainer::train::copy_vars;
use std::path::Path;
use std::process::Command;
use tch::nn::VarStore;
use tch::{Device, Tensor};

fn refpy(args: &[&str]) {
    let script = repo().join("trainer/tests/reference/maniflow_ref.py");
    let o = Command::new(python()).arg(&script).args(args).output().unwrap();
    assert!(o.status.success(), "maniflow_ref.py {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

fn case(dir: &Path, cfg_path: &Path) -> (f64, f64, f64) {
    let cfg = Config::load(cfg_path).unwrap();
    let w = dir.join("w.safetensors");
    let i = dir.join("in.safetensors");
    let o = dir.join("out.safetensors");
    let c = cfg_path.to_str().unwrap();
    refpy(&["make-case", "--config", c, "--seed", "7", "--batch", "2", "--out-weights", w.to_str().unwrap(), "--out-inputs", i.to_str().unwrap()]);
    refpy(&["forward", "--config", c, "--weights", w.to_str().unwrap(), "--inputs", i.to_str().unwrap(), "--out", o.to_str().unwrap()]);
    let inputs: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&i).unwrap().into_iter().collect();
    let outputs: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&o).unwrap().into_iter().collect();
    let e = &cfg.encoder;
    let tactile = inputs.get(&e.tactile_key).map(|t| (e.tactile_key.clone(), t.size()[2] as usize));
    let dims = ObsDims {
        cameras: e.cameras.iter().map(|k| (k.clone(), e.image_size[0], e.image_size[1])).collect(),
        state_key: e.state_key.clone(),
        state_dim: inputs[&e.state_key].size()[2] as usize,
        tactile: tactile.clone(),
        tactile_mae: None,
        action_dim: inputs["x_t"].size()[2] as usize,
    };
    let mut vs = VarStore::new(Device::Cpu);
    let net = ManiFlowNet::new(&vs.root(), &cfg, &dims).unwrap();
    let weights = Tensor::read_safetensors(&w).unwrap();
    assert_eq!(weights.len(), vs.variables().len(), "reference and tch models have different tensor sets");
    copy_vars(&mut vs, &weights, "reference weights").unwrap();
    let obs = Obs {
        images: e.cameras.iter().map(|k| inputs[k].shallow_clone()).collect(),
        state: inputs[&e.state_key].shallow_clone(),
        tactile: tactile.map(|(k, _)| inputs[&k].shallow_clone()),
    };
    let _g = tch::no_grad_guard();
    let ctx = net.encode(&obs);
    let vel = net.velocity(&inputs["x_t"], &inputs["t"], &inputs["target_t"], &ctx, false, None);
    let ec = (&ctx - &outputs["context"]).abs().max().double_value(&[]);
    let ev = (&vel - &outputs["velocity"]).abs().max().double_value(&[]);
    let mag = outputs["velocity"].abs().mean(tch::Kind::Float).double_value(&[]);
    (ec, ev, mag)
}

#[test]
fn upstream_image_matches_pytorch_reference() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = repo().join("trainer/configs/upstream-image.toml");
    let (ec, ev, mag) = case(dir.path(), &cfg);
    eprintln!("upstream-image (gate_type none): context max abs err {ec:.3e}, velocity {ev:.3e} (mean |v| {mag:.3})");
    assert!(mag > 0.05, "velocity is trivially small ({mag}); the random weights do not exercise the network");
    assert!(ec <= 1e-4 && ev <= 1e-4);
}

#[test]
fn so101_cpu_gate_variants_match_pytorch_reference() {
    let dir = tempfile::tempdir().unwrap();
    for (name, edits) in [
        ("headwise", vec![]),
        ("elementwise", vec![("gate_type", "\"elementwise\"")]),
        ("no-gates", vec![("use_gate_attn", "false"), ("gate_type", "\"none\"")]),
        ("concat", vec![("fusion", "\"concat\""), ("qk_norm", "false"), ("qkv_bias", "false")]),
    ] {
        let cfg = config_with(dir.path(), &format!("{name}.toml"), &edits);
        let (ec, ev, mag) = case(dir.path(), &cfg);
        eprintln!("so101-cpu {name}: context {ec:.3e}, velocity {ev:.3e} (mean |v| {mag:.3})");
        assert!(mag > 0.05, "{name}: velocity trivially small");
        assert!(ec <= 1e-4 && ev <= 1e-4, "{name}: context {ec}, velocity {ev}");
    }
}

// ----------------------------------------------------------------------------- upstream checkpoints
// `tests/upstream/upstream_ckpt.py` writes checkpoints in upstream ManiFlow's exact layout (module
// tree, state-dict names, normaliser, dill-pickled workspace payload) from a reading of its code.

fn upstream_py(args: &[&str]) -> String {
    let script = repo().join("trainer/tests/upstream/upstream_ckpt.py");
    let o = Command::new(python()).arg(&script).args(args).output().unwrap();
    assert!(o.status.success(), "upstream_ckpt.py {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn upstream_fixture() -> String {
    repo().join("trainer/tests/upstream/robotwin_image.yaml").display().to_string()
}

/// The package's graphs against upstream's own forward on the checkpoint's EMA weights.
fn check_package(ckpt: &Path, pkg: &Path) -> serde_json::Value {
    let out = upstream_py(&["check", "--ckpt", ckpt.to_str().unwrap(), "--package", pkg.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    eprintln!("{}: {v}", pkg.display());
    assert!(v["mean_abs_velocity"].as_f64().unwrap() > 0.05, "velocity trivially small: {v}");
    for k in ["context_err", "velocity_err", "unnormalize_err"] {
        assert!(v[k].as_f64().unwrap() <= 1e-4, "{k}: {v}");
    }
    v
}

#[test]
fn upstream_checkpoint_becomes_a_package_with_upstream_parity() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let up = d.join("upstream");
    upstream_py(&["write", "--config", &upstream_fixture(), "--out", up.to_str().unwrap(), "--small", "--seed", "4"]);
    let ckpt = up.join("checkpoints/latest.ckpt");

    // 1. the workspace .ckpt -> run + package in one command
    let (run, pkg) = (d.join("run"), d.join("pkg"));
    let out = ok(&["import", ckpt.to_str().unwrap(), "--out", run.to_str().unwrap(), "--package", pkg.to_str().unwrap()]);
    eprintln!("{out}");
    assert!(out.contains("ema_model weights, upstream step 1234, task block_hammer_beat_image"), "{out}");
    assert!(out.contains("parity (ONNX Runtime vs tch"), "{out}");
    assert!(run.join("config.toml").is_file() && run.join("data.json").is_file() && run.join("import.json").is_file());
    let cfg = Config::load(&run.join("config.toml")).unwrap();
    assert_eq!((cfg.model.n_layer, cfg.model.n_head, cfg.model.n_emb, cfg.model.visual_cond_len), (2, 4, 64, 8));
    assert_eq!((cfg.model.horizon, cfg.model.n_obs_steps, cfg.model.n_action_steps, cfg.model.time_embed_dim), (16, 2, 15, 32));
    assert_eq!(cfg.encoder.cameras, vec!["observation.images.head_cam".to_string()]);
    assert_eq!(cfg.train.batch_size, 128);
    let v = check_package(&ckpt, &pkg);
    assert_eq!((v["action_mode"].as_str(), v["state_mode"].as_str()), (Some("limits"), Some("identity")));
    // the run can be exported again (a real step-0 checkpoint) and refuses a second import
    ok(&["export", run.to_str().unwrap(), "--out", d.join("pkg2").to_str().unwrap(), "--ema"]);
    check_package(&ckpt, &d.join("pkg2"));
    let again = fails(&["import", ckpt.to_str().unwrap(), "--out", run.to_str().unwrap()]);
    assert!(again.contains("already holds a training run"), "{again}");

    // 2. the bare safetensors state dict (the EMA policy) with its hydra config.yaml next to it
    let pkg3 = d.join("pkg3");
    let out = ok(&["import", up.join("policy.safetensors").to_str().unwrap(), "--out", d.join("run3").to_str().unwrap(), "--package", pkg3.to_str().unwrap()]);
    assert!(out.contains("policy.safetensors (normalizer.params_dict.*)"), "{out}");
    check_package(&ckpt, &pkg3);

    // 3. a gaussian-normalised state maps to mean_std exactly
    let up4 = d.join("upstream4");
    upstream_py(&["write", "--config", &upstream_fixture(), "--out", up4.to_str().unwrap(), "--small", "--seed", "5", "--gaussian-state"]);
    let ckpt4 = up4.join("checkpoints/latest.ckpt");
    let pkg4 = d.join("pkg4");
    ok(&["import", ckpt4.to_str().unwrap(), "--out", d.join("run4").to_str().unwrap(), "--package", pkg4.to_str().unwrap()]);
    assert_eq!(check_package(&ckpt4, &pkg4)["state_mode"].as_str(), Some("mean_std"));
}

/// An imported run trains on: `import --camera` gives upstream's camera the dataset's key,
/// `train --resume` continues from the step-0 checkpoint on an SO-101 LeRobot dataset with
/// the checkpoint's normalisation, and the result exports with its parity gates.
#[test]
fn imported_run_continues_training_on_a_lerobot_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let up = d.join("upstream");
    upstream_py(&["write", "--config", &upstream_fixture(), "--out", up.to_str().unwrap(), "--small", "--so101", "--seed", "6"]);
    let ckpt = up.join("checkpoints/latest.ckpt");
    let ckpt = ckpt.to_str().unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let e = fails(&["import", ckpt, "--out", &s(&d.join("bad")), "--camera", "wrist_cam=observation.images.wrist"]);
    assert!(e.contains("no rgb key `wrist_cam`") && e.contains("head_cam"), "{e}");
    let e = fails(&["import", ckpt, "--out", &s(&d.join("bad")), "--camera", "head_cam=head"]);
    assert!(e.contains("observation.images.<name>"), "{e}");
    assert!(!d.join("bad").join("checkpoints").exists());

    let run = d.join("run");
    ok(&["import", ckpt, "--out", &s(&run), "--camera", "head_cam=observation.images.head"]);
    let cfg = Config::load(&run.join("config.toml")).unwrap();
    assert_eq!(cfg.encoder.cameras, vec!["observation.images.head".to_string()]);
    assert_eq!(cfg.train.batch_size, 8);
    let data_json = std::fs::read_to_string(run.join("data.json")).unwrap();
    let ds = synth(d, 3, 30, 2);
    let out = ok(&["train", "--config", &s(&run.join("config.toml")), "--dataset", &s(&ds), "--out", &s(&run), "--steps", "3", "--resume", "--quiet"]);
    eprintln!("{out}");
    let latest = std::fs::read_to_string(run.join("checkpoints/latest")).unwrap();
    assert_eq!(latest.trim(), "step-00000003", "{out}");
    // the checkpoint's normalisation, not the dataset's
    assert_eq!(std::fs::read_to_string(run.join("data.json")).unwrap(), data_json);
    let m = read_metrics(&run);
    let last = m.iter().rev().find(|r| r["step"] == 3).unwrap_or_else(|| panic!("no step 3 in metrics: {m:?}"));
    let loss = last["train_loss"].as_f64().unwrap();
    assert!(loss.is_finite() && loss > 0.0, "{last}");
    ok(&["export", &s(&run), "--out", &s(&d.join("pkg")), "--ema"]);
    assert!(d.join("pkg/policy.toml").is_file());
}

#[test]
fn upstream_checkpoint_mismatches_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let up = d.join("upstream");
    upstream_py(&["write", "--config", &upstream_fixture(), "--out", up.to_str().unwrap(), "--small", "--drop", "model.blocks.1.mlp.fc2.bias"]);
    let st = up.join("policy.safetensors");
    let run = |name: &str, extra: &[&str]| {
        let mut args = vec!["import", st.to_str().unwrap(), "--out"];
        let out = d.join(name);
        let out = out.to_str().unwrap().to_string();
        args.push(&out);
        args.extend_from_slice(extra);
        let e = fails(&args);
        assert!(!d.join(name).join("checkpoints").exists(), "a failed import left a checkpoint");
        e
    };
    // a tensor the model needs is missing from the state dict
    let e = run("a", &[]);
    assert!(e.contains("missing") && e.contains("model.blocks.1.mlp.fc2.bias"), "{e}");
    // the config disagrees with the tensors: heads (q_norm width), state size (context width)
    let yaml = std::fs::read_to_string(up.join("policy.yaml")).unwrap();
    let heads = d.join("heads.yaml");
    std::fs::write(&heads, yaml.replacen("n_head: 4", "n_head: 8", 1)).unwrap();
    let e = run("b", &["--config", heads.to_str().unwrap()]);
    assert!(e.contains("q_norm has 16 values but n_emb / n_head = 8"), "{e}");
    let state = d.join("state.yaml");
    std::fs::write(&state, yaml.replacen("shape:\n        - 14", "shape:\n        - 12", 1)).unwrap();
    let e = run("c", &["--config", state.to_str().unwrap()]);
    assert!(e.contains("model.vis_cond_obs_emb.weight takes 1052 inputs") && e.contains("= 1048"), "{e}");
    // no side file at all
    std::fs::remove_file(up.join("policy.yaml")).unwrap();
    let e = run("d", &[]);
    assert!(e.contains("needs its config: pass --config"), "{e}");
}

/// The `upstream-image` preset builds, for RoboTwin's shapes (head camera 224 x 224, 14-d state and
/// action), exactly the tensors of upstream's robotwin image policy, with its settings.
#[test]
fn upstream_image_preset_matches_upstream_robotwin_config() {
    let dir = tempfile::tempdir().unwrap();
    let shapes_path = dir.path().join("shapes.json");
    upstream_py(&["shapes", "--config", &upstream_fixture(), "--out", shapes_path.to_str().unwrap()]);
    let j: serde_json::Value = serde_json::from_slice(&std::fs::read(&shapes_path).unwrap()).unwrap();
    let cfg = maniflow_trainer::presets::load("upstream-image").unwrap();
    let s = &j["settings"];
    let e = &cfg.encoder;
    assert_eq!(e.cameras.len(), 1, "upstream's robotwin image configs use the head camera alone");
    let dims = ObsDims {
        cameras: vec![(e.cameras[0].clone(), e.image_size[0], e.image_size[1])],
        state_key: e.state_key.clone(),
        state_dim: 14,
        tactile: None,
        tactile_mae: None,
        action_dim: 14,
    };
    assert_eq!(serde_json::json!(e.image_size), s["image_size"]);
    let (m, t) = (&cfg.model, &cfg.train);
    assert_eq!((m.horizon, m.n_obs_steps, m.n_action_steps), (s["horizon"].as_u64().unwrap() as usize, s["n_obs_steps"].as_u64().unwrap() as usize, s["n_action_steps"].as_u64().unwrap() as usize));
    assert_eq!((t.lr, t.eps, t.weight_decay, t.flow_batch_ratio, t.ema_max_decay), (s["lr"].as_f64().unwrap(), s["eps"].as_f64().unwrap(), s["weight_decay"].as_f64().unwrap(), s["flow_batch_ratio"].as_f64().unwrap(), s["ema_max_decay"].as_f64().unwrap()));
    assert_eq!(serde_json::json!(t.betas), s["betas"]);
    assert_eq!((t.warmup_steps, t.ct_discrete_steps as u64, t.sample_steps as u64), (s["warmup_steps"].as_u64().unwrap(), s["ct_discrete_steps"].as_u64().unwrap(), s["sample_steps"].as_u64().unwrap()));
    assert_eq!(serde_json::json!(t.time_sampler), s["time_sampler"]);
    assert_eq!(serde_json::json!(t.target_t), s["target_t"]);
    let vs = VarStore::new(Device::Cpu);
    let net = ManiFlowNet::new(&vs.root(), &cfg, &dims).unwrap();
    assert_eq!(net.encoder.context_dim as u64, s["context_width"].as_u64().unwrap());
    let modality = e.cameras[0].rsplit('.').next().unwrap();
    let ours: std::collections::BTreeMap<String, Vec<i64>> = vs
        .variables()
        .into_iter()
        .map(|(k, v)| (k.replace(&format!("obs_encoder.{modality}.backbone."), "obs_encoder.key_model_map.head_cam.convnet."), v.size()))
        .collect();
    let theirs: std::collections::BTreeMap<String, Vec<i64>> = serde_json::from_value(j["shapes"].clone()).unwrap();
    let only_ours: Vec<_> = ours.keys().filter(|k| !theirs.contains_key(*k)).collect();
    let only_theirs: Vec<_> = theirs.keys().filter(|k| !ours.contains_key(*k)).collect();
    assert!(only_ours.is_empty() && only_theirs.is_empty(), "only in the preset: {only_ours:?}; only upstream: {only_theirs:?}");
    for (k, v) in &ours {
        assert_eq!(v, &theirs[k], "{k}");
    }
    eprintln!("upstream-image preset: {} tensors, context width {}, all shapes equal to upstream's", ours.len(), net.encoder.context_dim);
}
