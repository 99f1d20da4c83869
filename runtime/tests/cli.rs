//! The real `maniflow` binary: inspect, infer, bench, and its one-line errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/fixtures")
        .join(name)
}

fn maniflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_maniflow"))
        .args(args)
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// A failed run prints exactly one line on stderr, no panic, no backtrace.
fn assert_one_line_error(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "expected failure, got success: {}",
        text(&o.stdout)
    );
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected:\n{err}"
    );
    assert!(err.starts_with("maniflow: error: "), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    err
}

#[test]
fn inspect_shows_inputs_outputs_normalisation_sampler_graphs() {
    let o = maniflow(&["inspect", fixture("tiny-maniflow").to_str().unwrap()]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{}", text(&o.stderr));
    for needle in [
        "observation.images.head",
        "96x96x3",
        "observation.tactile",
        "32 taxels",
        "horizon 16, n_action_steps 8, start_index 1",
        "limits",
        "mean_std",
        "sampler  steps 2, target_t Relative",
        "head [0, 18)",
        "dd9381e02c7dd658ef4a81d3e4ba83851d0d6c0789ddf07dedb43287b07941cf",
        "parameters 105646",
    ] {
        assert!(out.contains(needle), "missing `{needle}` in:\n{out}");
    }
    let o = maniflow(&["inspect", "--json", fixture("tiny-act").to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["manifest"]["kind"], "act");
    assert_eq!(v["graphs"][0]["name"], "act");
    assert!(v["parameters"].as_u64().unwrap() > 10_000);
}

#[test]
fn infer_writes_the_reference_chunk() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out.npz");
    let expected = fixture("tiny-maniflow").join("expected.npz");
    let o = maniflow(&[
        "infer",
        fixture("tiny-maniflow").to_str().unwrap(),
        "--input",
        expected.to_str().unwrap(),
        "--noise",
        expected.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--steps",
        "10",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let mut r = ndarray_npy::NpzReader::new(std::fs::File::open(&out).unwrap()).unwrap();
    let action: ndarray::ArrayD<f32> = r.by_name("action").unwrap();
    let chunk: ndarray::ArrayD<f32> = r.by_name("action_chunk").unwrap();
    assert_eq!(action.shape(), &[8, 6]);
    assert_eq!(chunk.shape(), &[15, 6]);
    let mut e = ndarray_npy::NpzReader::new(std::fs::File::open(&expected).unwrap()).unwrap();
    let want: ndarray::ArrayD<f32> = e.by_name("action_n10").unwrap();
    let err = chunk
        .iter()
        .zip(want.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(err <= 1e-3, "max abs err {err}");
    assert_eq!(action.as_slice().unwrap(), &chunk.as_slice().unwrap()[..48]);
}

#[test]
fn infer_refuses_an_observation_missing_an_input() {
    let d = tempfile::tempdir().unwrap();
    let obs = d.path().join("obs.npz");
    let mut w = ndarray_npy::NpzWriter::new(std::fs::File::create(&obs).unwrap());
    w.add_array("observation.state", &ndarray::Array1::<f32>::zeros(6))
        .unwrap();
    w.finish().unwrap();
    let o = maniflow(&[
        "infer",
        fixture("tiny-act").to_str().unwrap(),
        "--input",
        obs.to_str().unwrap(),
        "--output",
        d.path().join("o.npz").to_str().unwrap(),
    ]);
    let err = assert_one_line_error(&o);
    assert!(
        err.contains("observation.images.head") && err.contains("obs.npz"),
        "{err}"
    );
}

#[test]
fn bench_json_has_the_documented_keys() {
    let o = maniflow(&[
        "bench",
        fixture("tiny-maniflow").to_str().unwrap(),
        "--iters",
        "10",
        "--warmup",
        "2",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for k in [
        "preprocess",
        "encoder",
        "velocity_step",
        "whole",
        "raw_encoder",
        "raw_velocity_step",
        "raw_total",
    ] {
        for p in ["p50_us", "p99_us", "p999_us", "max_us"] {
            let x = v[k][p]
                .as_f64()
                .unwrap_or_else(|| panic!("{k}.{p} missing"));
            assert!(x > 0.0, "{k}.{p} = {x}");
        }
        // one sample per iteration; the raw velocity step is timed per step (N = 2)
        let want = if k == "raw_velocity_step" { 20 } else { 10 };
        assert_eq!(v[k]["count"], want, "{k}");
    }
    assert_eq!(v["steps"], 2);
    let r = v["overhead_ratio"].as_f64().unwrap();
    assert!(r.is_finite() && r > 0.5, "overhead_ratio {r}");
    assert!(v["peak_rss_mb"].as_f64().unwrap() > 1.0);
}

#[test]
fn missing_onnx_runtime_is_one_clear_line() {
    let o = Command::new(env!("CARGO_BIN_EXE_maniflow"))
        .args(["inspect", fixture("tiny-act").to_str().unwrap()])
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .output()
        .unwrap();
    let err = assert_one_line_error(&o);
    assert!(
        err.contains("ONNX Runtime not found")
            && err.contains("/nonexistent/libonnxruntime.so")
            && err.contains("make bootstrap"),
        "{err}"
    );
}

#[test]
fn a_library_that_is_not_onnx_runtime_is_one_clear_line() {
    // Any shared library that is not ONNX Runtime: the C library itself.
    let libc = [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/libc.so.6",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("a libc.so.6 to stand in for a wrong library");
    let o = Command::new(env!("CARGO_BIN_EXE_maniflow"))
        .args(["bench", fixture("tiny-act").to_str().unwrap()])
        .env("ORT_DYLIB_PATH", libc)
        .output()
        .unwrap();
    let err = assert_one_line_error(&o);
    assert!(
        err.contains("cannot be used") && err.contains(libc) && err.contains("OrtGetApiBase"),
        "{err}"
    );
}

#[test]
fn a_bad_package_is_one_clear_line() {
    let o = maniflow(&["bench", "/nonexistent/pkg"]);
    let err = assert_one_line_error(&o);
    assert!(err.contains("/nonexistent/pkg/policy.toml"), "{err}");
}

#[test]
fn an_onnx_runtime_that_is_too_old_is_one_clear_line() {
    // Installed by `make bootstrap` beside the venv, on no search path.
    let capi = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../.cache/onnxruntime-too-old/onnxruntime/capi");
    let old = std::fs::read_dir(&capi)
        .unwrap_or_else(|e| panic!("{}: {e} (run `make bootstrap`)", capi.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("libonnxruntime.so.1.22")
        })
        .expect("onnxruntime 1.22 library (run `make bootstrap`)");
    let o = Command::new(env!("CARGO_BIN_EXE_maniflow"))
        .args(["inspect", fixture("tiny-act").to_str().unwrap()])
        .env("ORT_DYLIB_PATH", &old)
        .output()
        .unwrap();
    let err = assert_one_line_error(&o);
    assert!(
        err.contains("cannot be used") && err.contains("1.22.1") && err.contains("1.31"),
        "{err}"
    );
}

#[test]
fn cuda_without_a_driver_is_one_line_and_the_fallback_is_explicit() {
    if maniflow_runtime::policy::gpu::probe::load_driver().is_ok() {
        eprintln!("a CUDA driver is present: this test is for machines without one");
        return;
    }
    let pkg = fixture("tiny-maniflow");
    let pkg = pkg.to_str().unwrap();
    let o = maniflow(&[
        "bench", pkg, "--device", "cuda:0", "--iters", "5", "--warmup", "1",
    ]);
    let err = assert_one_line_error(&o);
    assert!(
        err.contains("no CUDA driver") && err.contains("libcuda.so.1"),
        "{err}"
    );
    let o = maniflow(&[
        "bench",
        pkg,
        "--device",
        "cuda:0",
        "--cpu-fallback",
        "--iters",
        "5",
        "--warmup",
        "1",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("warning") && err.contains("running on the CPU instead"),
        "{err}"
    );
    let o = maniflow(&["gpu-check"]);
    let err = assert_one_line_error(&o);
    assert!(err.contains("no CUDA driver"), "{err}");
}

/// `maniflow calibrate` on the STS3215 emulator: a full calibration answered
/// on stdin while the joints move, and a cancel (EOF) that leaves the motors
/// as they were.
#[test]
fn calibrate_writes_lerobots_file_and_a_cancel_restores_the_motors() {
    use maniflow_bridge::feetech::emulator::{Emulator, PtyEmulator};
    use maniflow_bridge::feetech::so101::Calibration;
    use maniflow_bridge::feetech::table;
    use std::io::Write;
    use std::process::Stdio;
    use std::time::Duration;

    let e = PtyEmulator::start(
        Emulator::new(&[2100.0, 1900.0, 2300.0, 2000.0, 2048.0, 2200.0]),
        None,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "calibrate",
        "--port",
        &e.path,
        "--id",
        "arm",
        "--calibration-dir",
        dir.path().to_str().unwrap(),
    ];
    // EOF at the first prompt: cancelled, one line, nothing on the motors.
    let o = Command::new(env!("CARGO_BIN_EXE_maniflow"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = assert_one_line_error(&o);
    assert!(
        err.contains("cancelled") && err.contains("restored"),
        "{err}"
    );
    assert_eq!(
        e.emu
            .lock()
            .unwrap()
            .servo(1)
            .unwrap()
            .get(table::HOMING_OFFSET),
        0
    );
    assert!(!dir.path().join("arm.json").exists());

    let mut child = Command::new(env!("CARGO_BIN_EXE_maniflow"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"\n").unwrap();
    let t0 = std::time::Instant::now();
    while e.emu.lock().unwrap().counts.sync_read < 3 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "calibrate never started recording"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let home: Vec<f64> = e
        .emu
        .lock()
        .unwrap()
        .servos
        .iter()
        .map(|s| s.actual)
        .collect();
    for k in 0..=20 {
        let ph = k as f64 / 20.0 * std::f64::consts::TAU;
        let mut em = e.emu.lock().unwrap();
        for (i, s) in em.servos.iter_mut().enumerate() {
            s.actual = home[i] + 250.0 * ph.sin();
        }
        em.step(0.0);
        drop(em);
        std::thread::sleep(Duration::from_millis(40));
    }
    stdin.write_all(b"\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let cal = Calibration::load(&dir.path().join("arm.json")).unwrap();
    for (i, c) in cal.0.iter().enumerate() {
        assert_eq!(c.homing_offset, home[i] as i32 - 2047);
        if i != 4 {
            assert_eq!(
                (c.range_min, c.range_max),
                (2047 - 250, 2047 + 250),
                "joint {i}"
            );
        }
    }
    assert_eq!(
        e.emu
            .lock()
            .unwrap()
            .servo(2)
            .unwrap()
            .get(table::MIN_POSITION_LIMIT),
        2047 - 250
    );
}

// `maniflow transport-bench` between two processes, briefly: rows come back
// with samples, our image subscriber gets them through shared memory, and a
// missing Python peer is a skipped row with its reason, not an error. No
// timing is asserted (numbers are for the benchmark, not the test).
#[test]
fn transport_bench_two_processes_shm_and_skipped_peer() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let o = Command::new(env!("CARGO_BIN_EXE_maniflow"))
        .args([
            "transport-bench",
            "--transports",
            "zenoh-shm,python-zenoh",
            "--images",
            "5",
            "--joints",
            "10",
            "--port",
            "17971",
            "--python",
            "/nonexistent/python",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = v["rows"].as_array().unwrap();
    let ours: Vec<_> = rows
        .iter()
        .filter(|r| r["path"] == "maniflow -> maniflow")
        .collect();
    assert_eq!(ours.len(), 2, "{rows:?}");
    for r in &ours {
        assert!(r["skipped"].is_null(), "{r}");
        assert!(r["received"].as_u64().unwrap() > 0, "{r}");
    }
    let img = ours
        .iter()
        .find(|r| r["message"] == "Image 640x480 rgb8")
        .unwrap();
    assert_eq!(img["bytes"], 921_652);
    // Images go out from loaned buffers: the publish call's three parts are reported.
    for k in ["loan_us", "fill_us", "put_us"] {
        assert_eq!(img[k]["count"].as_u64(), Some(5), "{k}: {img}");
    }
    // "N of M samples in shm": on Linux the same-host subscriber maps the buffers.
    let shm = img["shm"].as_str().unwrap();
    if std::path::Path::new("/dev/shm").is_dir() {
        assert!(!shm.starts_with("0 of"), "{shm}");
    }
    let py: Vec<_> = rows
        .iter()
        .filter(|r| r["path"] == "python -> python")
        .collect();
    assert_eq!(py.len(), 2, "{rows:?}");
    for r in py {
        assert!(
            r["skipped"]
                .as_str()
                .unwrap()
                .contains("/nonexistent/python"),
            "{r}"
        );
    }
    assert!(out.contains("skipped"), "{out}");
}
