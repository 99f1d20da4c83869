//! LeRobot ACT end to end, against LeRobot 0.6.1 itself (the bootstrap's venv):
//! random ACT checkpoints made with LeRobot's own classes
//! (`tests/lerobot/act_random.py`), exported by `models/export/lerobot_act.py`,
//! loaded by the runtime (real ONNX Runtime), and run tick by tick through the
//! runtime's control step (preprocessing of uint8 RGB frames, normalisation, the
//! engine's ORT call, the executor, unnormalisation) next to LeRobot's
//! `predict_action` (preprocessor -> `select_action` -> postprocessor) on the same
//! observations (`tests/lerobot/act_reference.py`).
//!
//! The Python jobs of a test run in one interpreter (`tests/lerobot/run_jobs.py`):
//! importing torch + LeRobot costs about 10 s of CPU on the 2-core CI machine.
//! Without the venv the tests fail with a message saying so (no silent skip).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use maniflow_runtime::control::executor::{ExecutorConfig, ExecutorMode};
use maniflow_runtime::control::safety::CommandVerdict;
use maniflow_runtime::control::{so101_safety, Controller};
use maniflow_runtime::policy::engine::{Engine, ObservationStep};
use maniflow_runtime::policy::manifest::{ColorOrder, Manifest};
use maniflow_runtime::policy::options::EngineOptions;
use maniflow_runtime::policy::preprocess::Frame;
use ndarray::ArrayD;
use ndarray_npy::NpzReader;

/// Max abs error allowed, unnormalised actions (degrees / percent) and exporter parity.
const ATOL: f64 = 1e-4;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn venv_python() -> PathBuf {
    let py = root().join(".venv/bin/python");
    assert!(
        py.is_file(),
        "{} is missing: the LeRobot ACT tests need the bootstrap's venv with LeRobot 0.6.1 \
         (run `make bootstrap`)",
        py.display()
    );
    py
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

struct Job {
    name: &'static str,
    script: &'static str,
    argv: Vec<String>,
}

fn job(name: &'static str, script: &'static str, argv: &[&str]) -> Job {
    Job {
        name,
        script,
        argv: argv.iter().map(|a| a.to_string()).collect(),
    }
}

/// Per job: exit code and log (stdout + stderr).
struct JobOut {
    rc: i64,
    log: String,
    seconds: f64,
}

/// Runs the jobs in one Python interpreter; panics with the runner's output if it
/// could not run at all (no venv, no torch, ...).
fn run_jobs(dir: &Path, jobs: &[Job]) -> HashMap<&'static str, JobOut> {
    let py = venv_python();
    let spec: Vec<serde_json::Value> = jobs
        .iter()
        .map(|j| {
            serde_json::json!({
                "name": j.name,
                "script": s(&root().join(j.script)),
                "argv": j.argv,
                "log": s(&dir.join(format!("{}.log", j.name))),
            })
        })
        .collect();
    let spec_path = dir.join("jobs.json");
    std::fs::write(&spec_path, serde_json::to_string(&spec).unwrap()).unwrap();
    let t0 = Instant::now();
    let o = Command::new(&py)
        .arg(root().join("tests/lerobot/run_jobs.py"))
        .arg(&spec_path)
        .current_dir(root())
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_DATASETS_OFFLINE", "1")
        // One thread, like the runtime's engine: the tests run side by side on 2
        // cores, and PyTorch's OpenMP pool is many times slower when oversubscribed.
        .env("OMP_NUM_THREADS", "1")
        // Anything a library leaves in the temporary directory goes with the test's.
        .env("TMPDIR", dir)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run `make bootstrap`)", py.display()));
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "tests/lerobot/run_jobs.py failed (is LeRobot 0.6.1 in {}? run `make bootstrap`):\n{stdout}\n{}",
        py.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let mut out = HashMap::new();
    for line in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("run_jobs.py printed `{line}`: {e}"));
        let name = jobs
            .iter()
            .find(|j| j.name == v["name"].as_str().unwrap())
            .unwrap()
            .name;
        let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
        out.insert(
            name,
            JobOut {
                rc: v["rc"].as_i64().unwrap(),
                log,
                seconds: v["seconds"].as_f64().unwrap(),
            },
        );
    }
    for j in jobs {
        assert!(
            out.contains_key(j.name),
            "job {} did not run:\n{stdout}",
            j.name
        );
    }
    println!(
        "python jobs: {:.1} s in all ({})",
        t0.elapsed().as_secs_f64(),
        jobs.iter()
            .map(|j| format!("{} {:.1} s", j.name, out[j.name].seconds))
            .collect::<Vec<_>>()
            .join(", ")
    );
    out
}

fn ok<'a>(out: &'a HashMap<&'static str, JobOut>, name: &str) -> &'a JobOut {
    let j = &out[name];
    assert_eq!(j.rc, 0, "job {name} failed:\n{}", j.log);
    j
}

/// The exporter's JSON summary (its last stdout line).
fn export_summary(out: &HashMap<&'static str, JobOut>, name: &str) -> serde_json::Value {
    let j = ok(out, name);
    let last = j.log.trim().lines().last().unwrap_or("");
    serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "job {name}: last line is not the JSON summary ({e}):\n{}",
            j.log
        )
    })
}

/// Camera keys of config.json's input_features in file order (serde_json's map is
/// sorted, so the order is read from the text).
fn config_cameras(ckpt: &Path) -> (Vec<String>, Vec<(usize, usize)>, serde_json::Value) {
    let text = std::fs::read_to_string(ckpt.join("config.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let feats = v["input_features"].as_object().unwrap();
    let mut cams: Vec<(usize, String, (usize, usize))> = feats
        .iter()
        .filter(|(_, f)| f["type"] == "VISUAL")
        .map(|(k, f)| {
            let shape: Vec<usize> = f["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as usize)
                .collect();
            let pos = text.find(&format!("\"{k}\"")).unwrap();
            (pos, k.clone(), (shape[1], shape[2]))
        })
        .collect();
    cams.sort();
    (
        cams.iter().map(|c| c.1.clone()).collect(),
        cams.iter().map(|c| c.2).collect(),
        v,
    )
}

fn manifest(pkg: &Path) -> Manifest {
    let p = pkg.join("policy.toml");
    Manifest::from_toml(&std::fs::read_to_string(&p).unwrap(), &s(&p)).unwrap()
}

/// The package loads in the runtime (checksums, ORT session, graph interface,
/// warm-up run) and its manifest follows config.json.
fn check_package(ckpt: &Path, pkg: &Path, summary: &serde_json::Value) {
    let parity = summary["parity_max_abs_err"].as_f64().unwrap();
    assert!(
        parity <= ATOL,
        "{}: exporter parity {parity:e} > {ATOL:e}",
        pkg.display()
    );
    let m = manifest(pkg);
    let recorded = m.producer.parity_max_abs_err.unwrap_or(f64::NAN);
    assert!(
        (recorded - parity).abs() <= 1e-9 * parity,
        "policy.toml producer.parity_max_abs_err {recorded:e}, exporter printed {parity:e}"
    );
    let (cams, sizes, cfg) = config_cameras(ckpt);
    let got: Vec<String> = m.inputs.cameras.iter().map(|c| c.key.clone()).collect();
    assert_eq!(
        got, cams,
        "policy.toml camera order must be config.json's input_features order"
    );
    for (c, (h, w)) in m.inputs.cameras.iter().zip(&sizes) {
        assert_eq!((c.height, c.width), (*h, *w), "{}", c.key);
        assert_eq!(c.color_order, ColorOrder::Rgb);
    }
    let a = &m.outputs.action;
    assert_eq!(a.horizon as u64, cfg["chunk_size"].as_u64().unwrap());
    assert_eq!(
        a.n_action_steps as u64,
        cfg["n_action_steps"].as_u64().unwrap()
    );
    assert_eq!(a.start_index, 0);
    let t0 = Instant::now();
    let engine = Engine::load(pkg, &EngineOptions::default())
        .unwrap_or_else(|e| panic!("{}: the runtime refused the package: {e}", pkg.display()));
    assert_eq!(engine.chunk_len(), a.horizon);
    println!(
        "{}: cameras {cams:?} at {sizes:?}, exporter parity {parity:.2e} (export {} s), runtime load + warm-up {:.2} s",
        pkg.file_name().unwrap().to_string_lossy(),
        summary["export_s"],
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn exported_act_matches_lerobot_keeps_camera_order_and_refuses_a_corrupt_checkpoint() {
    maniflow_runtime::policy::ortlib::init().expect("ONNX Runtime (run `make bootstrap`)");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (c96, c640, bad) = (
        d.join("ckpt-96"),
        d.join("ckpt-640x480"),
        d.join("ckpt-bad"),
    );
    let (p96, p640, pbad) = (d.join("act-96"), d.join("act-640x480"), d.join("act-bad"));
    // Default architecture (ResNet-18, dim_model 512, 4 + 1 layers, chunk 100).
    // The 640x480 cameras are listed wrist first: alphabetical order would be wrong.
    let random = "tests/lerobot/act_random.py";
    let export = "models/export/lerobot_act.py";
    let jobs = [
        job(
            "random-96",
            random,
            &[
                &s(&c96),
                "--height",
                "96",
                "--width",
                "96",
                "--cameras",
                "head,wrist",
                "--seed",
                "1",
            ],
        ),
        job(
            "random-640x480",
            random,
            &[
                &s(&c640),
                "--height",
                "480",
                "--width",
                "640",
                "--cameras",
                "wrist,front",
                "--seed",
                "2",
            ],
        ),
        job("export-96", export, &[&s(&c96), &s(&p96)]),
        job("export-640x480", export, &[&s(&c640), &s(&p640)]),
        job(
            "drop-tensor",
            "tests/lerobot/drop_tensor.py",
            &[&s(&c96), &s(&bad), "model.decoder_pos_embed.weight"],
        ),
        job("export-bad", export, &[&s(&bad), &s(&pbad)]),
    ];
    let out = run_jobs(d, &jobs);
    ok(&out, "random-96");
    ok(&out, "random-640x480");
    check_package(&c96, &p96, &export_summary(&out, "export-96"));
    check_package(&c640, &p640, &export_summary(&out, "export-640x480"));

    // A checkpoint with a tensor missing: refused, the file and the key named, nothing written.
    ok(&out, "drop-tensor");
    let j = &out["export-bad"];
    assert_eq!(
        j.rc, 1,
        "the exporter accepted a corrupt checkpoint:\n{}",
        j.log
    );
    let err = j.log.trim();
    assert!(
        err.contains("model.decoder_pos_embed.weight")
            && err.contains(&s(&bad.join("model.safetensors"))),
        "the error must name the file and the key:\n{err}"
    );
    assert!(
        !pbad.exists(),
        "a package was written for a corrupt checkpoint"
    );
    let leftovers: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "half-written directories left: {leftovers:?}"
    );
}

/// One control tick per recorded LeRobot tick through the runtime's control step;
/// returns (max abs error, ticks where the model ran).
fn replay(pkg: &Path, reference: &Path, mode: ExecutorMode) -> (f64, usize, f64) {
    let engine = Engine::load(pkg, &EngineOptions::default()).unwrap();
    let m = engine.package().manifest.clone();
    let mut npz = NpzReader::new(File::open(reference).unwrap()).unwrap();
    let cams: Vec<ArrayD<u8>> = m
        .inputs
        .cameras
        .iter()
        .map(|c| npz.by_name(&c.key).unwrap())
        .collect();
    let state: ArrayD<f32> = npz.by_name("observation.state").unwrap();
    let action: ArrayD<f32> = npz.by_name("action").unwrap();
    let inferred: ArrayD<u8> = npz.by_name("inferred").unwrap();
    let ticks = action.shape()[0];
    let da = action.shape()[1];
    // Pass-through safety: the random policy's commands are not robot commands; the
    // filter still runs and must leave every command as it is.
    let mut safety = so101_safety(30.0);
    safety.joint_min.iter_mut().for_each(|x| *x = -1e6);
    safety.joint_max.iter_mut().for_each(|x| *x = 1e6);
    safety.max_step.iter_mut().for_each(|x| *x = 1e6);
    safety.max_first_jump.iter_mut().for_each(|x| *x = 1e6);
    safety.max_velocity.iter_mut().for_each(|x| *x = 1e12);
    safety.max_jerk.iter_mut().for_each(|x| *x = 1e30);
    safety.ramp_ticks = 0;
    let mut ctl = Controller::new(
        engine,
        ExecutorConfig {
            mode,
            interpolation_multiplier: 1,
        },
        safety,
    )
    .unwrap();
    let state = state.as_slice().unwrap();
    let action = action.as_slice().unwrap();
    let mut cmd = vec![0.0f32; da];
    let (mut worst, mut at, mut n_inf) = (0.0f64, (0, 0), 0);
    let t0 = Instant::now();
    for t in 0..ticks {
        let frames: Vec<Frame<'_>> = cams
            .iter()
            .map(|a| {
                let (h, w) = (a.shape()[1], a.shape()[2]);
                let n = h * w * 3;
                Frame {
                    data: &a.as_slice().unwrap()[t * n..(t + 1) * n],
                    width: w,
                    height: h,
                    order: ColorOrder::Rgb,
                }
            })
            .collect();
        let st = &state[t * 6..(t + 1) * 6];
        let obs = ObservationStep {
            cameras: &frames,
            state: Some(st),
            tactile: None,
        };
        let r = ctl
            .step(|e| e.set_observation(0, &obs), st, &mut cmd)
            .unwrap();
        assert_eq!(r.verdict, CommandVerdict::Passed, "tick {t}: {r:?}");
        assert_eq!(r.timestep, Some(t as u64), "tick {t}: {r:?}");
        assert_eq!(
            r.inferred,
            inferred[t] == 1,
            "tick {t}: the runtime {} the model, LeRobot {}",
            if r.inferred { "ran" } else { "did not run" },
            if inferred[t] == 1 { "did" } else { "did not" }
        );
        n_inf += r.inferred as usize;
        for (j, (g, e)) in cmd.iter().zip(&action[t * da..(t + 1) * da]).enumerate() {
            let err = (*g as f64 - *e as f64).abs();
            if err > worst || err.is_nan() {
                worst = if err.is_nan() { f64::INFINITY } else { err };
                at = (t, j);
            }
        }
    }
    let ms = t0.elapsed().as_secs_f64() * 1e3 / ticks as f64;
    let c = ctl.safety.counters();
    assert_eq!(
        c.chunk_first_jump + c.chunk_velocity + c.chunk_jerk + c.chunk_nonfinite,
        0,
        "{c:?}"
    );
    println!(
        "{}: {ticks} ticks, {n_inf} inferences, max abs error {worst:.3e} (tick {}, joint {}), {ms:.2} ms/tick",
        pkg.file_name().unwrap().to_string_lossy(),
        at.0,
        at.1
    );
    (worst, n_inf, ms)
}

#[test]
fn runtime_matches_lerobot_select_action_over_200_ticks_in_queue_and_ensemble_modes() {
    maniflow_runtime::policy::ortlib::init().expect("ONNX Runtime (run `make bootstrap`)");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (cq, ce) = (d.join("ckpt-queue"), d.join("ckpt-ensemble"));
    let (pq, pe) = (d.join("act-queue"), d.join("act-ensemble"));
    let (rq, re) = (d.join("ref-queue.npz"), d.join("ref-ensemble.npz"));
    // Small transformer (ResNet-18 backbone kept: LeRobot takes only ResNets), chunk
    // 100, non-square frames (a transposed H/W would not load): a queue of 10 at
    // 64x96 (20 refills) and temporal ensembling with the ACT paper's 0.01 at 32x64
    // (a model call every tick; PyTorch takes ~50 ms per call here even that small).
    let random = "tests/lerobot/act_random.py";
    let export = "models/export/lerobot_act.py";
    let reference = "tests/lerobot/act_reference.py";
    let argv = |ck: &Path, extra: &[&str]| -> Vec<String> {
        let mut v = vec![s(ck), "--small".into(), "--chunk-size".into(), "100".into()];
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let jobs = [
        Job {
            name: "random-queue",
            script: random,
            argv: argv(
                &cq,
                &[
                    "--height",
                    "64",
                    "--width",
                    "96",
                    "--cameras",
                    "head,wrist",
                    "--n-action-steps",
                    "10",
                    "--seed",
                    "11",
                ],
            ),
        },
        Job {
            name: "random-ensemble",
            script: random,
            argv: argv(
                &ce,
                &[
                    "--height",
                    "32",
                    "--width",
                    "64",
                    "--cameras",
                    "wrist,head",
                    "--temporal-ensemble-coeff",
                    "0.01",
                    "--seed",
                    "12",
                ],
            ),
        },
        job("export-queue", export, &[&s(&cq), &s(&pq)]),
        job("export-ensemble", export, &[&s(&ce), &s(&pe)]),
        job(
            "reference-queue",
            reference,
            &[&s(&cq), &s(&rq), "--ticks", "200", "--seed", "0"],
        ),
        job(
            "reference-ensemble",
            reference,
            &[&s(&ce), &s(&re), "--ticks", "200", "--seed", "0"],
        ),
    ];
    let out = run_jobs(d, &jobs);
    for name in [
        "random-queue",
        "random-ensemble",
        "reference-queue",
        "reference-ensemble",
    ] {
        ok(&out, name);
    }
    check_package(&cq, &pq, &export_summary(&out, "export-queue"));
    let se = export_summary(&out, "export-ensemble");
    check_package(&ce, &pe, &se);
    // The manifest has no temporal-ensembling field: the node takes the coefficient
    // from its config (control.ensemble_coeff); here from the checkpoint's config.json.
    let coeff = config_cameras(&ce).2["temporal_ensemble_coeff"]
        .as_f64()
        .unwrap() as f32;
    assert_eq!(
        se["temporal_ensemble_coeff"].as_f64().map(|c| c as f32),
        Some(coeff)
    );

    let (eq, nq, _) = replay(&pq, &rq, ExecutorMode::Queue);
    let (ee, ne, _) = replay(&pe, &re, ExecutorMode::TemporalEnsemble { coeff });
    assert_eq!(nq, 20, "queue mode: 200 ticks / 10 actions per chunk");
    assert_eq!(ne, 200, "temporal ensembling runs the model every tick");
    assert!(eq <= ATOL, "queue mode: max abs error {eq:e} > {ATOL:e}");
    assert!(
        ee <= ATOL,
        "temporal ensembling: max abs error {ee:e} > {ATOL:e}"
    );
}

/// Each refusal before any weight is read: one line on stderr naming the file and the
/// problem, exit code 1, nothing written.
#[test]
fn exporter_refuses_unsupported_checkpoints_in_one_line() {
    let py = venv_python();
    let tmp = tempfile::tempdir().unwrap();
    let act = |inputs: serde_json::Value, extra: serde_json::Value| {
        let mut v = serde_json::json!({
            "type": "act",
            "n_obs_steps": 1,
            "input_features": inputs,
            "output_features": {"action": {"type": "ACTION", "shape": [6]}},
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    let cam = serde_json::json!({"type": "VISUAL", "shape": [3, 96, 96]});
    let state = serde_json::json!({"type": "STATE", "shape": [6]});
    let cases: Vec<(&str, Option<serde_json::Value>, &str)> = vec![
        ("no-config", None, "config.json: missing"),
        (
            "diffusion",
            Some(serde_json::json!({"type": "diffusion"})),
            "\"type\" is 'diffusion'",
        ),
        (
            "two-obs-steps",
            Some(act(
                serde_json::json!({"observation.state": state, "observation.images.head": cam}),
                serde_json::json!({"n_obs_steps": 2}),
            )),
            "n_obs_steps is 2",
        ),
        (
            "env-state",
            Some(act(
                serde_json::json!({"observation.state": state, "observation.images.head": cam,
                                   "observation.environment_state": {"type": "ENV", "shape": [4]}}),
                serde_json::json!({}),
            )),
            "observation.environment_state (environment state) is not supported",
        ),
        (
            "no-state",
            Some(act(
                serde_json::json!({"observation.images.head": cam}),
                serde_json::json!({}),
            )),
            "has no observation.state",
        ),
        (
            "no-weights",
            Some(act(
                serde_json::json!({"observation.state": state, "observation.images.head": cam}),
                serde_json::json!({}),
            )),
            "model.safetensors: missing",
        ),
    ];
    for (name, config, expect) in cases {
        let ck = tmp.path().join(name);
        std::fs::create_dir_all(&ck).unwrap();
        if let Some(c) = config {
            std::fs::write(ck.join("config.json"), c.to_string()).unwrap();
        }
        let pkg = tmp.path().join(format!("pkg-{name}"));
        let o = Command::new(&py)
            .arg(root().join("models/export/lerobot_act.py"))
            .arg(&ck)
            .arg(&pkg)
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{name}: {err}");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{name}: one line expected:\n{err}"
        );
        assert!(
            err.contains(expect),
            "{name}: `{expect}` expected in: {err}"
        );
        assert!(
            err.contains(&s(&ck)),
            "{name}: the path must be named: {err}"
        );
        assert!(!pkg.exists(), "{name}: a package was written");
    }
}
