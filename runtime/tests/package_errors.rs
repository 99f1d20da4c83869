//! Every refusal of a bad package is one clear error naming the file and field.

use std::path::{Path, PathBuf};

use maniflow_runtime::policy::engine::Engine;
use maniflow_runtime::policy::options::EngineOptions;
use maniflow_runtime::policy::package::sha256_hex;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/fixtures")
        .join(name)
}

/// A private copy of a fixture package.
fn copy(name: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fixture(name)).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, d.path().join(p.file_name().unwrap())).unwrap();
    }
    d
}

fn edit_manifest(dir: &Path, f: impl FnOnce(String) -> String) {
    let p = dir.join("policy.toml");
    let s = std::fs::read_to_string(&p).unwrap();
    let t = f(s.clone());
    assert_ne!(s, t, "the edit must change the manifest");
    std::fs::write(p, t).unwrap();
}

fn load_err(dir: &Path) -> String {
    maniflow_runtime::policy::ortlib::init().expect("ONNX Runtime (run `make bootstrap`)");
    match Engine::load(dir, &EngineOptions::default()) {
        Ok(_) => panic!(
            "package at {} loaded but should have been refused",
            dir.display()
        ),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_fixtures_load() {
    maniflow_runtime::policy::ortlib::init().unwrap();
    Engine::load(&fixture("tiny-maniflow"), &EngineOptions::default()).unwrap();
    Engine::load(&fixture("tiny-act"), &EngineOptions::default()).unwrap();
}

#[test]
fn wrong_checksum_names_the_graph_and_both_hashes() {
    let d = copy("tiny-act");
    edit_manifest(d.path(), |s| s.replace("sha256 = \"dcc", "sha256 = \"0cc"));
    let e = load_err(d.path());
    assert!(
        e.contains("act.onnx") && e.contains("graphs.act.sha256") && e.contains("dcced869"),
        "{e}"
    );
}

#[test]
fn corrupt_graph_with_matching_checksum_is_refused_by_onnx_runtime() {
    let d = copy("tiny-act");
    let g = d.path().join("act.onnx");
    let mut bytes = std::fs::read(&g).unwrap();
    bytes.truncate(bytes.len() / 3);
    std::fs::write(&g, &bytes).unwrap();
    let sum = sha256_hex(&bytes);
    edit_manifest(d.path(), |s| {
        let start = s.find("sha256 = \"").unwrap() + 10;
        format!("{}{}{}", &s[..start], sum, &s[start + 64..])
    });
    let e = load_err(d.path());
    assert!(
        e.contains("act.onnx") && e.contains("cannot load this graph"),
        "{e}"
    );
}

#[test]
fn corrupt_graph_with_its_old_checksum_is_caught_by_the_checksum() {
    let d = copy("tiny-maniflow");
    let g = d.path().join("velocity.onnx");
    let mut bytes = std::fs::read(&g).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&g, &bytes).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("velocity.onnx") && e.contains("sha256"), "{e}");
}

#[test]
fn manifest_and_graph_shape_mismatch_names_the_tensor() {
    let d = copy("tiny-maniflow");
    edit_manifest(d.path(), |s| s.replacen("height = 96", "height = 64", 1));
    let e = load_err(d.path());
    assert!(
        e.contains("encoder.onnx") && e.contains("observation.images.head") && e.contains("shape"),
        "{e}"
    );

    let d = copy("tiny-maniflow");
    edit_manifest(d.path(), |s| s.replace("horizon = 16", "horizon = 12"));
    let e = load_err(d.path());
    assert!(e.contains("velocity.onnx") && e.contains("x_t"), "{e}");

    let d = copy("tiny-act");
    edit_manifest(d.path(), |s| {
        s.replace(
            "key = \"observation.state\"",
            "key = \"observation.joints\"",
        )
        .replace(
            "[normalization.\"observation.state\"]",
            "[normalization.\"observation.joints\"]",
        )
    });
    let e = load_err(d.path());
    assert!(
        e.contains("observation.joints") && e.contains("no such input"),
        "{e}"
    );
}

#[test]
fn unknown_manifest_key_is_named() {
    let d = copy("tiny-act");
    edit_manifest(d.path(), |s| {
        s.replace("n_obs_steps = 1", "n_obs_steps = 1\nchunk_size = 10")
    });
    let e = load_err(d.path());
    assert!(
        e.contains("policy.toml") && e.contains("unknown field") && e.contains("chunk_size"),
        "{e}"
    );
    let d = copy("tiny-act");
    edit_manifest(d.path(), |s| {
        s.replace("resize = \"none\"", "resize = \"none\"\ninterp = 1")
    });
    let e = load_err(d.path());
    assert!(e.contains("interp"), "{e}");
}

#[test]
fn nan_in_stats_is_named_with_its_index() {
    let d = copy("tiny-act");
    edit_manifest(d.path(), |s| {
        s.replace("std = [30.0, 28.0", "std = [30.0, nan")
    });
    let e = load_err(d.path());
    assert!(
        e.contains("normalization.\"action\".std[1]") && e.contains("NaN"),
        "{e}"
    );
}

#[test]
fn stats_of_the_wrong_length_and_missing_normalisation_are_named() {
    let d = copy("tiny-act");
    edit_manifest(d.path(), |s| {
        s.replace(
            "mean = [2.0, -12.0, 18.0, 4.0, -1.0, 35.0]",
            "mean = [2.0, -12.0]",
        )
    });
    let e = load_err(d.path());
    assert!(
        e.contains("normalization.\"action\".mean") && e.contains("2 values"),
        "{e}"
    );
    let d = copy("tiny-act");
    edit_manifest(d.path(), |s| {
        s.replace(
            "[normalization.\"observation.state\"]",
            "[normalization.\"observation.other\"]",
        )
    });
    let e = load_err(d.path());
    assert!(
        e.contains("normalization.\"observation.state\"") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn missing_package_files_are_named() {
    let d = copy("tiny-maniflow");
    std::fs::remove_file(d.path().join("encoder.onnx")).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("encoder.onnx"), "{e}");
    let e = load_err(Path::new("/nonexistent/policy"));
    assert!(e.contains("/nonexistent/policy/policy.toml"), "{e}");
}

#[test]
fn inconsistent_action_slicing_is_refused() {
    let d = copy("tiny-maniflow");
    edit_manifest(d.path(), |s| {
        s.replace("n_action_steps = 8", "n_action_steps = 16")
    });
    let e = load_err(d.path());
    assert!(
        e.contains("outputs.action") && e.contains("exceeds horizon"),
        "{e}"
    );
}

/// `--device cuda` on a machine without a CUDA driver: one line naming the
/// missing library and the ways out; with the CPU fallback allowed, a warning
/// and exactly the CPU engine's chunks.
#[test]
fn cuda_without_a_driver_refuses_or_falls_back_to_the_identical_cpu_path() {
    use maniflow_runtime::cli::synthetic::SyntheticObservation;
    use maniflow_runtime::policy::options::ExecutionProvider;
    if maniflow_runtime::policy::gpu::probe::load_driver().is_ok() {
        eprintln!("a CUDA driver is present: this test is for machines without one");
        return;
    }
    maniflow_runtime::policy::ortlib::init().unwrap();
    let cuda: ExecutionProvider = "cuda:0"
        .parse()
        .expect("the cuda feature is built by default");
    let strict = EngineOptions {
        provider: cuda,
        ..Default::default()
    };
    let e = match Engine::load(&fixture("tiny-maniflow"), &strict) {
        Ok(_) => panic!("loaded on cuda without a driver"),
        Err(e) => e.to_string(),
    };
    assert!(!e.contains('\n'), "{e}");
    assert!(
        e.contains("libcuda.so.1") && e.contains("--cpu-fallback"),
        "{e}"
    );

    let lenient = EngineOptions {
        provider: cuda,
        error_on_failure: false,
        ..Default::default()
    };
    let mut fell_back = Engine::load(&fixture("tiny-maniflow"), &lenient).unwrap();
    assert!(fell_back.gpu().is_none());
    let mut cpu = Engine::load(&fixture("tiny-maniflow"), &EngineOptions::default()).unwrap();
    let mut obs = SyntheticObservation::new(&cpu.package().manifest, Some((64, 48)));
    let x0: Vec<f32> = (0..cpu.package().manifest.outputs.action.horizon * cpu.action_dim())
        .map(|i| ((i * 37 % 11) as f32 - 5.0) / 5.0)
        .collect();
    for k in 0..3 {
        obs.update(k);
        obs.apply(&mut cpu).unwrap();
        obs.apply(&mut fell_back).unwrap();
        let a = cpu.infer_with_noise(&x0).unwrap().to_vec();
        let b = fell_back.infer_with_noise(&x0).unwrap().to_vec();
        assert_eq!(a, b, "the fallback must be the CPU path itself");
    }
}
