//! Round trips with real LeRobot 0.6.1 (installed in `.venv` by `make bootstrap`,
//! patched for Python 3.11 by `tests/lerobot/patch_py311.py`), hub offline.
//!
//! (a) A dataset we write (`maniflow-train synth-dataset`, PNG images and AV1
//!     video) loads in `lerobot.datasets.lerobot_dataset.LeRobotDataset`, and every
//!     frame equals what the writer was given: the synthetic episodes are
//!     regenerated here with the same generator and seed and dumped for
//!     `tests/lerobot/read_ours.py` (vectors bit-exact, PNG exact, video within
//!     `VIDEO_MAX_MAE` grey levels mean absolute error per frame, episodes, tasks,
//!     meta and stats).
//! (b) A dataset LeRobot records itself (`tests/lerobot/write_so101.py`:
//!     `LeRobotDataset.create` / `add_frame` / `save_episode` / `finalize`, its own
//!     AV1 encoder) reads here: vectors bit-exact; video frames within
//!     `SAME_DECODE_MAX_MAE` of LeRobot's own PyAV decode of the same files (in
//!     practice identical) and within `VIDEO_MAX_MAE` on average of what LeRobot's
//!     encoder was given (single inter frames of LeRobot's g=2 encode lose up to
//!     ~8 grey levels on the fast gripper). Then it trains with `maniflow-train
//!     train` (so101-cpu, 20 steps, batch 8: finite losses) and exports
//!     (`maniflow-train export` runs its parity gate).
//!
//! Each Python step prints what it compared; run with `--nocapture` to see it.

mod common;
use common::*;

use maniflow_runtime::dataset::synth::{self, Episode, SynthConfig};
use maniflow_runtime::dataset::{LeRobotDataset, OpenOptions};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Video tolerance: mean absolute error of a decoded frame against the frame the
/// encoder was given, grey levels over all pixels and channels (AV1, CRF 30,
/// yuv420p on 96x96 synthetic scenes with hard colour edges).
const VIDEO_MAX_MAE: f64 = 4.0;
/// Our decode of a LeRobot-written video against LeRobot's own decode (PyAV):
/// per-frame mean absolute error, grey levels (YUV -> RGB rounding only).
const SAME_DECODE_MAX_MAE: f64 = 0.5;
const EPISODES: usize = 3;
const FRAMES: usize = 30;
const SEED: u64 = 5;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `tests/lerobot/<script>` in the venv, hub and datasets offline, caches in `dir`.
fn lerobot_py(dir: &Path, script: &str, args: &[&str]) -> String {
    let hf = dir.join("hf-home");
    let t0 = Instant::now();
    let out = Command::new(python())
        .arg(repo().join("tests/lerobot").join(script))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_DATASETS_OFFLINE", "1")
        .env("HF_HOME", &hf)
        .env("HF_LEROBOT_HOME", hf.join("lerobot"))
        .output()
        .expect("spawn the venv python");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{script} {args:?} failed (is lerobot installed? `make bootstrap`):\n{}",
        text(&out)
    );
    eprintln!("{}[{script}: {:.1}s]", stdout, t0.elapsed().as_secs_f64());
    stdout
}

fn last_json(stdout: &str) -> Value {
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .expect("last line of the script is JSON")
}

fn write_raw(
    dir: &Path,
    arrays: &mut serde_json::Map<String, Value>,
    key: &str,
    dtype: &str,
    shape: &[usize],
    bytes: &[u8],
) {
    let file = format!("{key}.bin");
    std::fs::write(dir.join(&file), bytes).unwrap();
    arrays.insert(
        key.into(),
        json!({"dtype": dtype, "shape": shape, "file": file}),
    );
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// What `synth-dataset --episodes e --frames f --seed seed` gives its writer,
/// regenerated with the generator `write_synthetic` uses, in the exchange format
/// of `tests/lerobot/expected.py`. Returns the state vectors for the cross-check.
fn dump_synth_expected(
    dir: &Path,
    episodes: usize,
    frames: usize,
    seed: u64,
    video: bool,
) -> Vec<[f32; 6]> {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = SynthConfig {
        episodes,
        frames_per_episode: frames,
        seed,
        ..Default::default()
    };
    let n = cfg.image_size;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut head, mut wrist, mut state, mut tactile, mut action) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut states = vec![];
    for _ in 0..episodes {
        let ep = Episode::generate(&mut rng, &cfg);
        for t in 0..frames {
            head.extend(synth::render_head(n, &ep.target, &ep.states[t]));
            let contact = ep.tactile[t].iter().cloned().fold(0.0, f32::max);
            wrist.extend(synth::render_wrist(n, &ep.states[t], contact));
            state.extend(ep.states[t]);
            tactile.extend(&ep.tactile[t]);
            action.extend(ep.actions[t]);
            states.push(ep.states[t]);
        }
    }
    let total = episodes * frames;
    let mut arrays = serde_json::Map::new();
    write_raw(
        dir,
        &mut arrays,
        synth::HEAD,
        "uint8",
        &[total, n, n, 3],
        &head,
    );
    write_raw(
        dir,
        &mut arrays,
        synth::WRIST,
        "uint8",
        &[total, n, n, 3],
        &wrist,
    );
    write_raw(
        dir,
        &mut arrays,
        synth::STATE,
        "float32",
        &[total, 6],
        &f32_bytes(&state),
    );
    write_raw(
        dir,
        &mut arrays,
        synth::TACTILE,
        "float32",
        &[total, cfg.taxels],
        &f32_bytes(&tactile),
    );
    write_raw(
        dir,
        &mut arrays,
        synth::ACTION,
        "float32",
        &[total, 6],
        &f32_bytes(&action),
    );
    let cam = json!({"dtype": if video { "video" } else { "image" }, "shape": [n, n, 3], "names": ["height", "width", "channels"]});
    let taxels: Vec<String> = (0..cfg.taxels).map(|i| format!("taxel_{i}")).collect();
    let man = json!({
        "fps": cfg.fps,
        "robot_type": "so101_follower",
        "video": video,
        "episodes": (0..episodes).map(|_| json!({"length": frames, "task": cfg.task})).collect::<Vec<_>>(),
        "features": {
            synth::HEAD: cam,
            synth::WRIST: cam,
            synth::STATE: {"dtype": "float32", "shape": [6], "names": synth::JOINT_NAMES},
            synth::TACTILE: {"dtype": "float32", "shape": [cfg.taxels], "names": taxels},
            synth::ACTION: {"dtype": "float32", "shape": [6], "names": synth::JOINT_NAMES},
        },
        "arrays": arrays,
    });
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_string_pretty(&man).unwrap(),
    )
    .unwrap();
    states
}

/// (a) for one storage kind.
fn lerobot_reads_ours(video: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ours");
    let mut args = vec![
        "synth-dataset".to_string(),
        "--out".into(),
        s(&root).into(),
        "--episodes".into(),
        EPISODES.to_string(),
        "--frames".into(),
        FRAMES.to_string(),
        "--seed".into(),
        SEED.to_string(),
    ];
    if let Some(v) = video {
        args.extend(["--video".to_string(), v.to_string()]);
    }
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let exp = dir.path().join("expected");
    let states = dump_synth_expected(&exp, EPISODES, FRAMES, SEED, video.is_some());
    // The regeneration is what the writer wrote (else a failure below would be
    // the test's, not LeRobot's): our own reader agrees on every state vector.
    let ours =
        LeRobotDataset::open(&root, &OpenOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ours.num_frames(), states.len());
    for (i, st) in states.iter().enumerate() {
        assert_eq!(
            ours.vector(synth::STATE, i),
            &st[..],
            "regenerated state of frame {i} differs from the dataset"
        );
    }
    let out = lerobot_py(
        dir.path(),
        "read_ours.py",
        &[
            "--root",
            s(&root),
            "--expected",
            s(&exp),
            "--max-mae",
            &VIDEO_MAX_MAE.to_string(),
        ],
    );
    let m = last_json(&out);
    assert_eq!(m["frames"], (EPISODES * FRAMES) as u64);
    assert_eq!(m["episodes"], EPISODES as u64);
    for k in [synth::STATE, synth::TACTILE, synth::ACTION] {
        assert_eq!(m[format!("{k}_mismatches")], 0, "{k}");
    }
    for k in [synth::HEAD, synth::WRIST] {
        let mae = m[format!("{k}_max_mae")].as_f64().unwrap();
        let abs = m[format!("{k}_max_abs_err")].as_u64().unwrap();
        eprintln!(
            "{}: {k}: {} frames, max per-frame MAE {mae:.3} grey levels (tolerance {}), max |error| {abs}",
            video.unwrap_or("png"),
            EPISODES * FRAMES,
            if video.is_some() { VIDEO_MAX_MAE } else { 0.0 }
        );
        if video.is_none() {
            assert_eq!((mae, abs), (0.0, 0), "{k}: PNG frames must be exact");
        } else {
            assert!(mae <= VIDEO_MAX_MAE, "{k}: {mae}");
        }
    }
    assert!(
        m["self_test"].as_u64().unwrap() >= 9,
        "the comparison's self-test did not run"
    );
}

#[test]
fn lerobot_reads_our_png_dataset() {
    lerobot_reads_ours(None);
}

#[test]
fn lerobot_reads_our_av1_dataset() {
    lerobot_reads_ours(Some("av1"));
}

struct Raw {
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn read_expected(dir: &Path) -> (Value, std::collections::HashMap<String, Raw>) {
    let man: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let mut arrays = std::collections::HashMap::new();
    for (k, a) in man["arrays"].as_object().unwrap() {
        let shape = a["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        let bytes = std::fs::read(dir.join(a["file"].as_str().unwrap())).unwrap();
        arrays.insert(k.clone(), Raw { shape, bytes });
    }
    (man, arrays)
}

/// (b) LeRobot records, we read, train and export.
#[test]
fn we_train_on_a_dataset_lerobot_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let root: PathBuf = dir.path().join("lerobot-so101");
    let exp = dir.path().join("expected");
    let (episodes, frames) = (4usize, 40usize);
    lerobot_py(
        dir.path(),
        "write_so101.py",
        &[
            "--root",
            s(&root),
            "--expected",
            s(&exp),
            "--episodes",
            &episodes.to_string(),
            "--frames",
            &frames.to_string(),
        ],
    );

    // Our reader sees what LeRobot was given.
    let (man, arrays) = read_expected(&exp);
    let ds = LeRobotDataset::open(&root, &OpenOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let n = episodes * frames;
    assert_eq!(
        (ds.num_episodes(), ds.num_frames(), ds.fps()),
        (episodes, n, 30)
    );
    for e in 0..episodes {
        assert_eq!(ds.episode_range(e), e * frames..(e + 1) * frames);
        assert_eq!(
            ds.task_of(e * frames),
            man["episodes"][e]["task"].as_str().unwrap()
        );
    }
    for k in ["observation.state", "observation.tactile", "action"] {
        let a = &arrays[k];
        assert_eq!(a.shape[0], n);
        let want: Vec<f32> = a
            .bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let dim = a.shape[1];
        for i in 0..n {
            let got = ds.vector(k, i);
            let w = &want[i * dim..(i + 1) * dim];
            assert!(
                got.iter().zip(w).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{k} frame {i}: ours {got:?}, LeRobot was given {w:?}"
            );
        }
        eprintln!("lerobot->ours: {k}: {n} frames x {dim} bit-exact");
    }
    // Images: against LeRobot's own decode of the same videos (PyAV), which is
    // what our decoder must reproduce, and against what LeRobot's encoder was
    // given (its loss, not ours: reported, bounded on average).
    for k in ["observation.images.head", "observation.images.wrist"] {
        let px = arrays[k].shape[1..].iter().product::<usize>();
        for (reference, what) in [
            (format!("lerobot_decoded/{k}"), "LeRobot's decode"),
            (k.to_string(), "the frames LeRobot was given"),
        ] {
            let a = &arrays[&reference];
            assert_eq!(a.shape[0], n);
            let (mut max_mae, mut sum_mae, mut max_abs) = (0f64, 0f64, 0u8);
            for i in 0..n {
                let got = ds.image(k, i);
                assert_eq!(got.len(), px, "{k} frame {i} size");
                let w = &a.bytes[i * px..(i + 1) * px];
                let tot: u64 = got.iter().zip(w).map(|(x, y)| x.abs_diff(*y) as u64).sum();
                max_abs = max_abs.max(
                    got.iter()
                        .zip(w)
                        .map(|(x, y)| x.abs_diff(*y))
                        .max()
                        .unwrap(),
                );
                let mae = tot as f64 / px as f64;
                max_mae = max_mae.max(mae);
                sum_mae += mae;
            }
            let mean_mae = sum_mae / n as f64;
            eprintln!(
                "lerobot->ours: {k} vs {what}: {n} frames, per-frame MAE max {max_mae:.3} mean {mean_mae:.3} grey levels, max |error| {max_abs}"
            );
            if reference == k {
                assert!(mean_mae <= VIDEO_MAX_MAE, "{k}: frames decode {mean_mae:.3} grey levels (mean) from what LeRobot was given");
            } else {
                assert!(
                    max_mae <= SAME_DECODE_MAX_MAE,
                    "{k}: our decode differs from LeRobot's by {max_mae:.3} grey levels (a frame)"
                );
            }
        }
    }

    // Train (the so101-cpu model; short schedule for 2 CPU cores) and export.
    let cfg = config_with(
        dir.path(),
        "so101.toml",
        &[
            ("batch_size", "8"),
            ("log_every", "5"),
            ("val_every", "20"),
            ("sample_every", "20"),
            ("attn_every", "20"),
            ("checkpoint_every", "20"),
        ],
    );
    let run = dir.path().join("run");
    let t0 = Instant::now();
    let out = ok(&[
        "train",
        "--config",
        s(&cfg),
        "--dataset",
        s(&root),
        "--out",
        s(&run),
        "--steps",
        "20",
        "--quiet",
    ]);
    eprintln!(
        "{out}\ntrain: 20 steps in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    let m = read_metrics(&run);
    let mut losses = 0;
    for r in &m {
        for k in ["train_loss", "loss_flow", "loss_ct", "val_loss"] {
            if let Some(v) = r.get(k) {
                let x = v.as_f64().unwrap_or_else(|| {
                    panic!("step {}: {k} = {v} is not a finite number", r["step"])
                });
                assert!(x.is_finite(), "step {}: {k} = {x}", r["step"]);
                losses += 1;
            }
        }
    }
    assert!(
        m.iter()
            .any(|r| r["step"] == 20 && r.get("train_loss").is_some()),
        "no train_loss logged at step 20"
    );
    assert!(
        m.iter().any(|r| r.get("val_loss").is_some()),
        "no val_loss logged"
    );
    eprintln!("train: {losses} loss values in metrics.jsonl, all finite");
    let pkg = dir.path().join("pkg");
    let t0 = Instant::now();
    let out = ok(&["export", s(&run), "--out", s(&pkg)]);
    eprintln!("{out}export: {:.1}s", t0.elapsed().as_secs_f64());
    for f in ["policy.toml", "encoder.onnx", "velocity.onnx"] {
        assert!(pkg.join(f).is_file(), "{f} missing from the package");
    }
}
