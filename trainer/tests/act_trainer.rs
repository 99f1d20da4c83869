//! The trainer's ACT against real LeRobot 0.6.1 (in `.venv`): the tch model with
//! LeRobot's state-dict names loads a LeRobot checkpoint strictly and matches its
//! forward (inference path and VAE posterior); our weights load back into LeRobot
//! strictly and give the same actions; an ACT run (regulariser + modality
//! dropout on) logs LeRobot's and seed 002's metrics, writes LeRobot-loadable
//! checkpoints, and exports a package that the runtime runs.

mod common;

use common::*;
use maniflow_trainer::act::lerobot::{load_pretrained, load_weights, read_config};
use maniflow_trainer::act::model::{l1_kld, ActInput};
use maniflow_trainer::train::sorted_vars;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use tch::{Device, Kind, Tensor};

fn py(args: &[&str]) -> std::process::Output {
    let out = Command::new(python())
        .arg(repo().join("trainer/tests/act/lerobot_ref.py"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("spawn the venv python");
    out
}

/// LeRobot loads `dir` strictly and reproduces the `actions_rust` stored in `io` (within 1e-4).
fn lerobot_reproduces(dir: &Path, io: &Path) {
    let out = py(&["check", dir.to_str().unwrap(), io.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "LeRobot does not load {} or reproduce our actions:\n{}",
        dir.display(),
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("loaded"),
        "{}",
        text(&out)
    );
}

fn io(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .collect()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

/// Rust forward of `dir` on `io`'s inputs, written as `actions_rust` with the inputs.
fn write_rust_io(dir: &Path, inputs: &HashMap<String, Tensor>, out: &Path) -> Tensor {
    let (_vs, act, lc) = load_pretrained(dir, Device::Cpu).unwrap();
    let images: Vec<Tensor> = (0..lc.cameras.len())
        .map(|i| inputs[&format!("image{i}")].shallow_clone())
        .collect();
    let a = tch::no_grad(|| {
        act.forward(
            &ActInput {
                state: &inputs["state"],
                images: &images,
                action: None,
            },
            false,
        )
        .actions
    });
    let mut v: Vec<(String, Tensor)> = inputs
        .iter()
        .map(|(k, t)| (k.clone(), t.shallow_clone()))
        .collect();
    v.push(("actions_rust".into(), a.shallow_clone()));
    Tensor::write_safetensors(&v, out).unwrap();
    a
}

#[test]
fn tch_act_matches_lerobot_both_ways() {
    let tmp = tempfile::tempdir().unwrap();
    let out = py(&["make", tmp.path().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "lerobot_ref make failed:\n{}",
        text(&out)
    );
    let pre = tmp.path().join("pretrained");
    let lc = read_config(&pre.join("config.json")).unwrap();
    let cams: Vec<&str> = lc.cameras.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(
        cams,
        ["observation.images.head", "observation.images.wrist"],
        "camera order is config.json's input_features order"
    );
    let (mut vs, act, _) = load_pretrained(&pre, Device::Cpu).unwrap();
    let t = io(&tmp.path().join("io.safetensors"));
    let images = vec![t["image0"].shallow_clone(), t["image1"].shallow_clone()];
    let is_pad = t["is_pad"].to_kind(Kind::Bool);
    let _g = tch::no_grad_guard();
    // Inference path (latent = 0).
    let o = act.forward(
        &ActInput {
            state: &t["state"],
            images: &images,
            action: None,
        },
        false,
    );
    let e_eval = max_abs(&o.actions, &t["actions_eval"]);
    // Training path: the VAE posterior is deterministic (dropout 0 in this config).
    let o2 = act.forward(
        &ActInput {
            state: &t["state"],
            images: &images,
            action: Some((&t["action"], &is_pad)),
        },
        true,
    );
    let (mu, lsx2) = o2.posterior.as_ref().expect("the VAE ran");
    let e_mu = max_abs(mu, &t["mu"]);
    let e_ls = max_abs(lsx2, &t["log_sigma_x2"]);
    println!("tch vs LeRobot: actions {e_eval:.3e}, mu {e_mu:.3e}, log_sigma_x2 {e_ls:.3e}");
    assert!(
        e_eval <= 1e-4 && e_mu <= 1e-4 && e_ls <= 1e-4,
        "tch ACT differs from LeRobot: {e_eval:.3e} {e_mu:.3e} {e_ls:.3e}"
    );
    assert!(
        t["actions_eval"].abs().max().double_value(&[]) > 1e-2,
        "reference actions are not trivially zero"
    );
    let (l1, kld) = l1_kld(&o2, &t["action"], &is_pad);
    assert!(l1.double_value(&[]).is_finite() && kld.unwrap().double_value(&[]) >= 0.0);
    // Cross-attention kept per head: (B, H, chunk, 2 + cells).
    let p = &o2.cross_attn[0];
    assert_eq!(p.size()[..3], [2, 4, 10]);
    assert_eq!(p.size()[3] as usize, o2.n_tokens);

    // Our weights back into LeRobot: perturb every trainable tensor, save, load strictly there.
    for v in vs.trainable_variables() {
        let _ = v.shallow_clone().g_add_(&(v.randn_like() * 0.02));
    }
    let back = tmp.path().join("back");
    std::fs::create_dir_all(&back).unwrap();
    Tensor::write_safetensors(&sorted_vars(&vs), back.join("model.safetensors")).unwrap();
    std::fs::copy(pre.join("config.json"), back.join("config.json")).unwrap();
    let before = o.actions.shallow_clone();
    let ours = write_rust_io(&back, &t, &tmp.path().join("io2.safetensors"));
    assert!(
        max_abs(&ours, &before) > 1e-3,
        "the perturbation changed the actions"
    );
    lerobot_reproduces(&back, &tmp.path().join("io2.safetensors"));

    // A state dict missing a key is refused, naming it.
    let mut partial: Vec<(String, Tensor)> = sorted_vars(&vs);
    partial.retain(|(n, _)| n != "model.action_head.bias");
    let bad = tmp.path().join("partial.safetensors");
    Tensor::write_safetensors(&partial, &bad).unwrap();
    let e = load_weights(&mut vs, &bad).unwrap_err().to_string();
    assert!(
        e.contains("model.action_head.bias") && e.contains("1 missing"),
        "{e}"
    );
}

fn act_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let p = dir.join("act.toml");
    std::fs::write(
        &p,
        format!(
            r#"policy = "act"
name = "act-test"
[model]
chunk_size = 8
n_action_steps = 8
dim_model = 32
n_heads = 4
dim_feedforward = 64
n_encoder_layers = 1
n_vae_encoder_layers = 1
latent_dim = 4
[data]
cameras = ["observation.images.head", "observation.images.wrist"]
val_ratio = 0.2
[train]
batch_size = 4
steps = 6
lr = 1e-4
lr_backbone = 1e-5
log_every = 2
val_every = 2
checkpoint_every = 3
threads = 1
{extra}
"#
        ),
    )
    .unwrap();
    p
}

#[test]
fn act_run_logs_checkpoints_and_exports() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = synth(tmp.path(), 6, 24, 3);
    let cfg = act_config(
        tmp.path(),
        "[attention_loss]\nenabled = true\nweight = 0.1\ntau = 0.3\nmin_state_ratio = 0.05\nwarmup_steps = 4\n[modality_dropout]\np = 0.5\n",
    );
    let run = tmp.path().join("run");
    let s = ok(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--dataset",
        ds.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(
        s.contains("trained 6 steps") && s.contains("state_attention_ratio"),
        "{s}"
    );
    let m = read_metrics(&run);
    let last = m
        .iter()
        .rev()
        .find(|r| r.get("l1_loss").is_some())
        .expect("l1_loss logged");
    for k in [
        "loss",
        "l1_loss",
        "kld_loss",
        "grad_norm",
        "lr",
        "update_s",
        "dataloading_s",
        "attention_loss",
        "state_attention_ratio",
        "vision_attention_ratio",
        "val_l1_loss",
    ] {
        assert!(
            last.get(k)
                .and_then(|v| v.as_f64())
                .is_some_and(f64::is_finite),
            "metric `{k}` missing or not finite in {last}"
        );
    }
    let (sr, vr) = (
        last["state_attention_ratio"].as_f64().unwrap(),
        last["vision_attention_ratio"].as_f64().unwrap(),
    );
    assert!(
        (sr + vr - 1.0).abs() < 1e-4,
        "state + vision shares sum to 1: {sr} + {vr}"
    );
    // lambda ramps over the warm-up: 0.025 at step 2 ... 0.1 from step 4.
    let w: Vec<f64> = m
        .iter()
        .filter_map(|r| r.get("attention_loss_weight").and_then(|v| v.as_f64()))
        .collect();
    assert!(
        w.len() >= 3 && (w[1] - 0.05).abs() < 1e-9 && (w[w.len() - 1] - 0.1).abs() < 1e-9,
        "{w:?}"
    );

    // The checkpoint is a LeRobot pretrained directory.
    let ck = run.join("checkpoints/step-00000006");
    assert!(ck.join("config.json").is_file());
    let lc = read_config(&ck.join("config.json")).unwrap();
    assert_eq!(lc.model.chunk_size, 8);
    // Inputs for LeRobot's check: random normalised observations at the dataset's 96x96.
    let mut inputs = HashMap::new();
    inputs.insert(
        "state".to_string(),
        Tensor::randn([2, 6], (Kind::Float, Device::Cpu)),
    );
    for i in 0..2 {
        inputs.insert(
            format!("image{i}"),
            Tensor::randn([2, 3, 96, 96], (Kind::Float, Device::Cpu)),
        );
    }
    let _ = write_rust_io(&ck, &inputs, &tmp.path().join("io.safetensors"));
    lerobot_reproduces(&ck, &tmp.path().join("io.safetensors"));

    // Export through our ONNX writer; the runtime loads and runs the package.
    let pkg = tmp.path().join("pkg");
    let e = ok(&[
        "export",
        run.to_str().unwrap(),
        "--out",
        pkg.to_str().unwrap(),
    ]);
    assert!(
        e.contains("parity") && e.contains("runtime pipeline"),
        "{e}"
    );
    let toml = std::fs::read_to_string(pkg.join("policy.toml")).unwrap();
    assert!(
        toml.contains("kind = \"act\"") && toml.contains("horizon = 8"),
        "{toml}"
    );
    let head = toml.find("observation.images.head").unwrap();
    let wrist = toml.find("observation.images.wrist").unwrap();
    assert!(head < wrist, "camera order kept");
    let eng = maniflow_runtime::policy::engine::Engine::load(&pkg, &Default::default()).unwrap();
    assert_eq!(eng.chunk_len(), 8);
    let bad = fails(&[
        "export",
        run.to_str().unwrap(),
        "--out",
        tmp.path().join("p2").to_str().unwrap(),
        "--ema",
    ]);
    assert!(bad.contains("EMA"), "{bad}");
}

#[test]
fn ditx_attention_regulariser_trains_through_cross_attention() {
    // The same regulariser on ManiFlow's DiTX: state = proprio tokens, vision = camera
    // tokens of the modality map. With tau = 0 and a large weight it must pull the
    // proprio share down within a few steps.
    let tmp = tempfile::tempdir().unwrap();
    let ds = synth(tmp.path(), 6, 30, 1);
    let cfg = tiny_config(
        tmp.path(),
        "c.toml",
        &[("log_every", "1"), ("lr", "1e-3"), ("warmup_steps", "0")],
    );
    let mut text_cfg = std::fs::read_to_string(&cfg).unwrap();
    text_cfg.push_str(
        "\n[attention_loss]\nenabled = true\nweight = 20.0\ntau = 0.0\nentropy_weight = 0.0\n",
    );
    std::fs::write(&cfg, text_cfg).unwrap();
    let run = tmp.path().join("run");
    ok(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--dataset",
        ds.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--steps",
        "15",
        "--quiet",
    ]);
    let m = read_metrics(&run);
    let r: Vec<f64> = m
        .iter()
        .filter_map(|x| x.get("state_attention_ratio").and_then(|v| v.as_f64()))
        .collect();
    let v: Vec<f64> = m
        .iter()
        .filter_map(|x| x.get("vision_attention_ratio").and_then(|v| v.as_f64()))
        .collect();
    assert!(
        r.len() >= 10 && m.iter().any(|x| x.get("attention_loss").is_some()),
        "regulariser metrics logged: {r:?}"
    );
    println!(
        "DiTX proprio share {:.4} -> {:.4}, camera share {:.4} -> {:.4}",
        r[0],
        r[r.len() - 1],
        v[0],
        v[v.len() - 1]
    );
    assert!(
        r[r.len() - 1] < 0.5 * r[0],
        "the regulariser lowers the proprio share: {r:?}"
    );
    assert!(v[v.len() - 1] > v[0], "and raises the camera share: {v:?}");
    // Concat fusion has no modality tokens: a clear config error.
    let bad = tiny_config(tmp.path(), "bad.toml", &[("fusion", "\"concat\"")]);
    let mut t = std::fs::read_to_string(&bad).unwrap();
    t.push_str("\n[attention_loss]\nenabled = true\n");
    std::fs::write(&bad, t).unwrap();
    let e = fails(&[
        "train",
        "--config",
        bad.to_str().unwrap(),
        "--dataset",
        ds.to_str().unwrap(),
        "--out",
        tmp.path().join("r2").to_str().unwrap(),
    ]);
    assert!(
        e.contains("attention_loss.enabled") && e.contains("tokens"),
        "{e}"
    );
}
