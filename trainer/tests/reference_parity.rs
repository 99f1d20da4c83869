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
        action_dim: inputs["x_t"].size()[2] as usize,
    };
    let mut vs = VarStore::new(Device::Cpu);
    let net = ManiFlowNet::new(&vs.root(), &cfg, &dims);
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
