//! Integration tests of the dataset module: round trips (images, H.264, AV1),
//! schema compatibility with pyarrow / pandas in both directions, corruption
//! errors, crash atomicity, windows on a real dataset, and learnability of the
//! synthetic task.
//!
//! Needs ffmpeg and a Python with pyarrow, pandas and pillow (`make bootstrap`,
//! or `MANIFLOW_FFMPEG` / `MANIFLOW_PYTHON`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::synth::{self, Episode, SynthConfig, ACTION, HEAD, STATE, TACTILE, WRIST};
use super::*;

fn hints() -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR"))];
    if let Ok(c) = std::env::current_dir() {
        v.push(c);
    }
    v
}

fn ffmpeg() -> PathBuf {
    let h = hints();
    let refs: Vec<&Path> = h.iter().map(PathBuf::as_path).collect();
    video::find_ffmpeg(&refs).unwrap_or_else(|e| panic!("{e}"))
}

/// Python with pyarrow, pandas, pillow: $MANIFLOW_PYTHON, else the workspace `.venv`.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("MANIFLOW_PYTHON") {
        return PathBuf::from(p);
    }
    for start in hints() {
        for d in start.ancestors() {
            let p = d.join(".venv/bin/python");
            if p.is_file() {
                return p;
            }
        }
    }
    panic!("no Python with pyarrow: run `make bootstrap` or set MANIFLOW_PYTHON");
}

fn run_python(script: &str, args: &[&Path]) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cfg(episodes: usize, frames: usize, video: Option<VideoCodec>, seed: u64) -> SynthConfig {
    SynthConfig {
        episodes,
        frames_per_episode: frames,
        seed,
        video,
        ffmpeg: video.map(|_| ffmpeg()),
        ..Default::default()
    }
}

fn expected(cfg: &SynthConfig) -> Vec<Episode> {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    (0..cfg.episodes)
        .map(|_| Episode::generate(&mut rng, cfg))
        .collect()
}

fn open(root: &Path) -> Result<LeRobotDataset, DatasetError> {
    let h = hints();
    let refs: Vec<&Path> = h.iter().map(PathBuf::as_path).collect();
    LeRobotDataset::open(
        root,
        &OpenOptions {
            ffmpeg: video::find_ffmpeg(&refs).ok(),
            ..Default::default()
        },
    )
}

fn check_vectors_exact(ds: &LeRobotDataset, cfg: &SynthConfig) {
    let eps = expected(cfg);
    assert_eq!(ds.num_episodes(), cfg.episodes);
    assert_eq!(ds.num_frames(), cfg.episodes * cfg.frames_per_episode);
    for (e, ep) in eps.iter().enumerate() {
        let r = ds.episode_range(e);
        assert_eq!(
            r,
            e * cfg.frames_per_episode..(e + 1) * cfg.frames_per_episode
        );
        for (t, g) in r.enumerate() {
            assert_eq!(ds.vector(STATE, g), &ep.states[t][..]);
            assert_eq!(ds.vector(ACTION, g), &ep.actions[t][..]);
            assert_eq!(ds.vector(TACTILE, g), &ep.tactile[t][..]);
            assert_eq!(ds.episode_of(g), e);
            assert_eq!(ds.frame_index(g), t);
            assert_eq!(ds.task_of(g), cfg.task);
            assert!((ds.timestamp(g) - t as f32 / cfg.fps as f32).abs() < 1e-6);
        }
    }
}

/// Mean absolute error (grey levels) of every decoded camera frame vs the rendering.
fn camera_mae(ds: &LeRobotDataset, cfg: &SynthConfig) -> (f64, f64) {
    let eps = expected(cfg);
    let (mut head, mut wrist, mut n) = (0f64, 0f64, 0f64);
    for (e, ep) in eps.iter().enumerate() {
        for (t, g) in ds.episode_range(e).enumerate() {
            let contact = ep.tactile[t].iter().cloned().fold(0.0, f32::max);
            let h = synth::render_head(cfg.image_size, &ep.target, &ep.states[t]);
            let w = synth::render_wrist(cfg.image_size, &ep.states[t], contact);
            let mae = |a: &[u8], b: &[u8]| {
                a.iter()
                    .zip(b)
                    .map(|(x, y)| (*x as f64 - *y as f64).abs())
                    .sum::<f64>()
                    / a.len() as f64
            };
            head += mae(ds.image(HEAD, g), &h);
            wrist += mae(ds.image(WRIST, g), &w);
            n += 1.0;
        }
    }
    (head / n, wrist / n)
}

fn check_stats(ds: &LeRobotDataset) {
    let stats = ds.stats.as_ref().expect("stats.json written");
    for key in [
        STATE,
        ACTION,
        TACTILE,
        HEAD,
        WRIST,
        "timestamp",
        "frame_index",
        "episode_index",
        "index",
        "task_index",
    ] {
        let s = stats.get(key).unwrap_or_else(|| panic!("stats for {key}"));
        let d = s.mean.len();
        assert!(d > 0);
        for i in 0..d {
            assert!(s.min[i] <= s.mean[i] && s.mean[i] <= s.max[i], "{key}[{i}]");
            assert!(s.std[i] >= 0.0);
            let q = |n: &str| s.quantiles[n][i];
            assert!(
                q("q01") <= q("q10") + 1e-9
                    && q("q10") <= q("q50") + 1e-9
                    && q("q50") <= q("q90") + 1e-9
                    && q("q90") <= q("q99") + 1e-9,
                "{key}"
            );
            assert!(
                s.min[i] - 1e-6 <= q("q01") && q("q99") <= s.max[i] + 1e-6,
                "{key}"
            );
        }
    }
    assert_eq!(stats.get(HEAD).unwrap().shape, vec![3, 1, 1]);
    assert!(stats.get(HEAD).unwrap().max.iter().all(|&v| v <= 1.0));
    assert_eq!(stats.get(STATE).unwrap().count as usize, ds.num_frames());
    assert_eq!(
        stats.get("index").unwrap().max[0] as usize,
        ds.num_frames() - 1
    );
}

#[test]
fn image_dataset_round_trips_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ds");
    let c = cfg(3, 20, None, 1);
    let summary = synth::write_synthetic(&root, &c).unwrap();
    assert_eq!(summary.frames, 60);
    let ds = open(&root).unwrap();
    check_vectors_exact(&ds, &c);
    assert_eq!(camera_mae(&ds, &c), (0.0, 0.0), "PNG images are lossless");
    assert_eq!(ds.image_shape(HEAD), Some((96, 96, 3)));
    assert_eq!(ds.info.robot_type.as_deref(), Some("so101_follower"));
    assert_eq!(ds.info.features.get(HEAD).unwrap().dtype, "image");
    assert_eq!(ds.info.video_path, None);
    assert_eq!(ds.info.splits.get("train").map(String::as_str), Some("0:3"));
    check_stats(&ds);
    // Only some cameras, and the memory guard.
    let only_head = LeRobotDataset::open(
        &root,
        &OpenOptions {
            image_keys: Some(vec![HEAD.into()]),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(only_head.image_keys(), vec![HEAD]);
    assert!(only_head.try_image(WRIST, 0).is_none());
    let err = LeRobotDataset::open(
        &root,
        &OpenOptions {
            max_image_bytes: 1000,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("max_image_bytes"), "{err}");
}

/// Frame times of a video file, from ffmpeg's showinfo filter.
fn frame_times(path: &Path) -> Vec<f64> {
    let out = Command::new(ffmpeg())
        .args(["-hide_banner", "-nostdin", "-i"])
        .arg(path)
        .args(["-vf", "showinfo", "-f", "null", "-"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    text.split("pts_time:")
        .skip(1)
        .filter_map(|s| s.split_whitespace().next()?.parse().ok())
        .collect()
}

fn video_round_trip(codec: VideoCodec) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ds");
    let c = cfg(3, 30, Some(codec), 2);
    let t0 = Instant::now();
    synth::write_synthetic(&root, &c).unwrap();
    let write_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let ds = open(&root).unwrap();
    let open_s = t1.elapsed().as_secs_f64();
    check_vectors_exact(&ds, &c);
    check_stats(&ds);
    let (head, wrist) = camera_mae(&ds, &c);
    eprintln!(
        "{codec:?}: 2 cameras x {} frames 96x96: write+encode {write_s:.2} s, open+decode {open_s:.2} s ({:.0} frames/s); MAE head {head:.2}, wrist {wrist:.2} grey levels",
        ds.num_frames(),
        (2 * ds.num_frames()) as f64 / open_s
    );
    assert!(
        head < 3.0 && wrist < 3.0,
        "video MAE too high: head {head}, wrist {wrist}"
    );
    // Episodes share one mp4 per camera, back to back.
    for key in [HEAD, WRIST] {
        let f = ds.info.features.get(key).unwrap();
        assert_eq!(f.dtype, "video");
        let info = f.info.as_ref().expect("video info block");
        assert_eq!(info["video.codec"], codec.codec_name());
        assert_eq!(info["video.fps"], 30);
        for (e, em) in ds.episodes.iter().enumerate() {
            let v = &em.videos[key];
            assert_eq!((v.chunk_index, v.file_index), (0, 0));
            assert!((v.from_timestamp - e as f64).abs() < 1e-9, "{v:?}");
            assert!((v.to_timestamp - (e + 1) as f64).abs() < 1e-9, "{v:?}");
        }
        let path = root.join(ds.info.video_file(key, 0, 0).unwrap());
        let times = frame_times(&path);
        assert_eq!(times.len(), 90, "{}", path.display());
        for (k, t) in times.iter().enumerate() {
            assert!((t - k as f64 / 30.0).abs() < 1e-4, "frame {k} at {t}");
        }
    }
    // No temporary files left behind.
    let leftovers: Vec<_> = walk(&root)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn h264_video_round_trips_within_tolerance() {
    video_round_trip(VideoCodec::H264);
}

#[test]
fn av1_video_round_trips_within_tolerance() {
    video_round_trip(VideoCodec::Av1);
}

const PY_INSPECT: &str = r#"
import sys, json, glob
import pyarrow.parquet as pq, pandas as pd
root = sys.argv[1]
out = {}
t = pq.read_table(glob.glob(root + "/data/*/*.parquet")[0])
out["data"] = {f.name: str(f.type) for f in t.schema}
out["hf"] = json.loads(t.schema.metadata[b"huggingface"])
out["row_groups"] = pq.ParquetFile(glob.glob(root + "/data/*/*.parquet")[0]).num_row_groups
out["compression"] = pq.read_metadata(glob.glob(root + "/data/*/*.parquet")[0]).row_group(0).column(0).compression
out["state0"] = t.column("observation.state")[0].as_py()
img = t.column("observation.images.head")[0].as_py()
from PIL import Image; import io
im = Image.open(io.BytesIO(img["bytes"]))
out["img"] = [im.mode, im.size[0], im.size[1], img["path"]]
e = pq.read_table(root + "/meta/episodes/chunk-000/file-000.parquet")
out["episodes"] = {f.name: str(f.type) for f in e.schema}
out["ep_rows"] = e.select(["episode_index", "length", "dataset_from_index", "dataset_to_index", "tasks"]).to_pylist()
tasks = pd.read_parquet(root + "/meta/tasks.parquet")
out["tasks_index_name"] = tasks.index.name
out["task0"] = int(tasks.loc[tasks.index[0]].task_index)
out["task_name"] = tasks.index[0]
info = json.load(open(root + "/meta/info.json"))
out["info_keys"] = list(info.keys())
stats = json.load(open(root + "/meta/stats.json"))
import numpy as np
out["stat_shapes"] = {k: list(np.array(v["mean"]).shape) for k, v in stats.items()}
out["count"] = stats["observation.state"]["count"]
print(json.dumps(out))
"#;

#[test]
fn pyarrow_reads_our_files_with_lerobot_types() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ds");
    let c = cfg(2, 10, None, 3);
    synth::write_synthetic(&root, &c).unwrap();
    let out: serde_json::Value = serde_json::from_str(&run_python(PY_INSPECT, &[&root])).unwrap();
    let data = &out["data"];
    assert_eq!(data["observation.state"], "fixed_size_list<item: float>[6]");
    assert_eq!(
        data["observation.tactile"],
        "fixed_size_list<item: float>[32]"
    );
    assert_eq!(data["action"], "fixed_size_list<item: float>[6]");
    assert_eq!(
        data["observation.images.head"],
        "struct<bytes: binary, path: string>"
    );
    assert_eq!(data["timestamp"], "float");
    for k in ["frame_index", "episode_index", "index", "task_index"] {
        assert_eq!(data[k], "int64", "{k}");
    }
    let order: Vec<&str> = data
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(order.len(), 10);
    assert_eq!(
        out["hf"]["info"]["features"]["observation.state"],
        serde_json::json!({"feature": {"dtype": "float32", "_type": "Value"}, "length": 6, "_type": "List"})
    );
    assert_eq!(
        out["hf"]["info"]["features"]["observation.images.head"],
        serde_json::json!({"_type": "Image"})
    );
    assert_eq!(out["row_groups"], 2, "one row group per episode");
    assert_eq!(out["compression"], "SNAPPY");
    let ep0 = expected(&c).remove(0);
    let s0: Vec<f32> = serde_json::from_value(out["state0"].clone()).unwrap();
    assert_eq!(s0, ep0.states[0]);
    assert_eq!(
        out["img"],
        serde_json::json!(["RGB", 96, 96, "frame-000000.png"])
    );
    let eps = &out["episodes"];
    assert_eq!(eps["episode_index"], "int64");
    assert_eq!(eps["tasks"], "list<item: string>");
    assert_eq!(eps["data/chunk_index"], "int64");
    assert_eq!(eps["dataset_to_index"], "int64");
    assert_eq!(eps["stats/observation.state/mean"], "list<item: double>");
    assert_eq!(eps["stats/observation.state/count"], "list<item: int64>");
    assert_eq!(
        eps["stats/observation.images.head/mean"],
        "list<item: list<item: list<item: double>>>"
    );
    assert_eq!(eps["stats/timestamp/q99"], "list<item: double>");
    assert_eq!(eps["meta/episodes/file_index"], "int64");
    assert_eq!(
        out["ep_rows"][1],
        serde_json::json!({"episode_index": 1, "length": 10, "dataset_from_index": 10, "dataset_to_index": 20, "tasks": [c.task]})
    );
    assert_eq!(out["tasks_index_name"], "task");
    assert_eq!(out["task0"], 0);
    assert_eq!(out["task_name"], c.task);
    assert_eq!(
        out["info_keys"],
        serde_json::json!([
            "codebase_version",
            "fps",
            "features",
            "total_episodes",
            "total_frames",
            "total_tasks",
            "chunks_size",
            "data_files_size_in_mb",
            "video_files_size_in_mb",
            "data_path",
            "video_path",
            "robot_type",
            "splits"
        ])
    );
    assert_eq!(
        out["stat_shapes"]["observation.images.head"],
        serde_json::json!([3, 1, 1])
    );
    assert_eq!(
        out["stat_shapes"]["observation.state"],
        serde_json::json!([6])
    );
    assert_eq!(out["stat_shapes"]["timestamp"], serde_json::json!([1]));
    assert_eq!(out["count"], serde_json::json!([20]));
}

/// A dataset written the way LeRobot writes it (pyarrow / pandas / PIL), with the
/// variants the reader must accept: `list<float>` (not fixed-size) vectors, a
/// float64 scalar, pandas-3 large strings in tasks, two tasks, two data files.
const PY_WRITE: &str = r#"
import sys, json, io, os
import numpy as np, pyarrow as pa, pyarrow.parquet as pq, pandas as pd
from PIL import Image
root = sys.argv[1]
os.makedirs(root + "/meta/episodes/chunk-000", exist_ok=True)
os.makedirs(root + "/data/chunk-000", exist_ok=True)
lens = [5, 7]
tasks = ["pick", "place"]
feats = {
  "observation.state": {"dtype": "float32", "shape": [3], "names": ["a", "b", "c"]},
  "observation.images.top": {"dtype": "image", "shape": [4, 6, 3], "names": ["height", "width", "channels"]},
  "next.reward": {"dtype": "float64", "shape": [1], "names": None},
  "timestamp": {"dtype": "float32", "shape": [1], "names": None},
  "frame_index": {"dtype": "int64", "shape": [1], "names": None},
  "episode_index": {"dtype": "int64", "shape": [1], "names": None},
  "index": {"dtype": "int64", "shape": [1], "names": None},
  "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
g = 0
eps = []
for e, n in enumerate(lens):
    rows = {k: [] for k in ["observation.state", "observation.images.top", "next.reward", "timestamp", "frame_index", "episode_index", "index", "task_index"]}
    for t in range(n):
        rows["observation.state"].append([g * 1.0, g + 0.5, -g * 1.0])
        img = np.full((4, 6, 3), g * 10 % 256, dtype=np.uint8); img[0, 0] = [1, 2, 3]
        b = io.BytesIO(); Image.fromarray(img).save(b, format="PNG")
        rows["observation.images.top"].append({"bytes": b.getvalue(), "path": f"frame-{t:06d}.png"})
        rows["next.reward"].append(float(t == n - 1))
        rows["timestamp"].append(t / 10.0)
        rows["frame_index"].append(t); rows["episode_index"].append(e); rows["index"].append(g); rows["task_index"].append(e)
        g += 1
    schema = pa.schema([("observation.state", pa.list_(pa.float32())), ("observation.images.top", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("next.reward", pa.float64()), ("timestamp", pa.float32()), ("frame_index", pa.int64()), ("episode_index", pa.int64()), ("index", pa.int64()), ("task_index", pa.int64())])
    pq.write_table(pa.Table.from_pydict(rows, schema=schema), f"{root}/data/chunk-000/file-{e:03d}.parquet")
    eps.append({"episode_index": e, "tasks": [tasks[e]], "length": n, "data/chunk_index": 0, "data/file_index": e,
                "dataset_from_index": g - n, "dataset_to_index": g, "stats/next.reward/mean": [0.1], "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
pq.write_table(pa.Table.from_pylist(eps), root + "/meta/episodes/chunk-000/file-000.parquet")
pd.DataFrame({"task_index": range(2)}, index=pd.Index(tasks, name="task")).to_parquet(root + "/meta/tasks.parquet")
info = {"codebase_version": "v3.0", "fps": 10, "features": feats, "total_episodes": 2, "total_frames": g, "total_tasks": 2,
        "chunks_size": 1000, "data_files_size_in_mb": 100, "video_files_size_in_mb": 200,
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet", "video_path": None,
        "robot_type": "koch", "splits": {"train": "0:2"}, "total_videos": 0}
json.dump(info, open(root + "/meta/info.json", "w"), indent=4)
json.dump({"observation.state": {"min": [0, 0.5, -11], "max": [11, 11.5, 0], "mean": [5.5, 6, -5.5], "std": [1, 1, 1], "count": [12]}}, open(root + "/meta/stats.json", "w"))
"#;

#[test]
fn reads_a_dataset_written_by_pyarrow() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("py");
    run_python(PY_WRITE, &[&root]);
    let ds = LeRobotDataset::open(&root, &OpenOptions::default()).unwrap();
    assert_eq!(ds.num_episodes(), 2);
    assert_eq!(ds.num_frames(), 12);
    assert_eq!(ds.episode_range(1), 5..12);
    assert_eq!(ds.tasks, vec!["pick", "place"]);
    assert_eq!(ds.task_of(4), "pick");
    assert_eq!(ds.task_of(5), "place");
    assert_eq!(ds.vector("observation.state", 7), &[7.0, 7.5, -7.0]);
    assert_eq!(ds.vector("next.reward", 11), &[1.0]);
    assert_eq!(ds.vector("next.reward", 10), &[0.0]);
    assert_eq!(ds.image_shape("observation.images.top"), Some((4, 6, 3)));
    let img = ds.image("observation.images.top", 3);
    assert_eq!(&img[..3], &[1, 2, 3]);
    assert_eq!(&img[3..6], &[30, 30, 30]);
    assert_eq!(
        ds.info.extra.get("total_videos"),
        Some(&serde_json::json!(0)),
        "unknown fields kept"
    );
    assert_eq!(
        ds.stats
            .as_ref()
            .unwrap()
            .get("observation.state")
            .unwrap()
            .count,
        12
    );
    assert_eq!(ds.episodes[1].data_file_index, 1);
}

// ------------------------------------------------------------------ corruption

fn small_image_dataset(root: &Path) -> SynthConfig {
    let c = cfg(2, 8, None, 4);
    synth::write_synthetic(root, &c).unwrap();
    c
}

fn data_file(root: &Path) -> PathBuf {
    root.join("data/chunk-000/file-000.parquet")
}

fn err_text(root: &Path) -> String {
    match open(root) {
        Ok(_) => panic!("open of {} must fail", root.display()),
        Err(e) => {
            eprintln!("error: {e}");
            e.to_string()
        }
    }
}

#[test]
fn truncated_parquet_is_reported_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ds");
    small_image_dataset(&root);
    let f = data_file(&root);
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    let msg = err_text(&root);
    assert!(
        msg.contains("data/chunk-000/file-000.parquet") && msg.contains("truncated or corrupt"),
        "{msg}"
    );
    // Garbage in the middle of an otherwise whole file.
    let mut bad = bytes.clone();
    let mid = bad.len() / 3;
    bad[mid..mid + 64].fill(0xAB);
    std::fs::write(&f, &bad).unwrap();
    let msg = err_text(&root);
    assert!(msg.contains("file-000.parquet"), "{msg}");
}

#[test]
fn nan_in_state_names_column_row_and_episode() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ds");
    small_image_dataset(&root);
    let f = data_file(&root);
    let (schema, batches) = parquet_io::read_parquet(&f).unwrap();
    // Poison episode 1, frame 2, joint 4 (global index 10).
    let mut out = Vec::new();
    let mut offset = 0;
    for b in batches.iter() {
        let mut cols = b.columns().to_vec();
        let rows = b.num_rows();
        if (offset..offset + rows).contains(&10) {
            let row = 10 - offset;
            use arrow_array::cast::AsArray;
            use arrow_array::Array;
            let idx = schema.index_of(STATE).unwrap();
            let l = cols[idx].as_fixed_size_list().clone();
            let mut v: Vec<f32> = l
                .values()
                .as_primitive::<arrow_array::types::Float32Type>()
                .values()
                .to_vec();
            v[row * 6 + 4] = f32::NAN;
            let (field, size) = match l.data_type() {
                arrow_schema::DataType::FixedSizeList(f, s) => (f.clone(), *s),
                _ => unreachable!(),
            };
            cols[idx] = std::sync::Arc::new(
                arrow_array::FixedSizeListArray::try_new(
                    field,
                    size,
                    std::sync::Arc::new(arrow_array::Float32Array::from(v)),
                    None,
                )
                .unwrap(),
            );
        }
        offset += rows;
        out.push(arrow_array::RecordBatch::try_new(schema.clone(), cols).unwrap());
    }
    parquet_io::write_parquet(&f, schema, &out).unwrap();
    let msg = err_text(&root);
    assert!(msg.contains("file-000.parquet"), "{msg}");
    assert!(
        msg.contains("observation.state")
            && msg.contains("episode 1")
            && msg.contains("frame 2")
            && msg.contains("NaN"),
        "{msg}"
    );
}

fn edit_info(root: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = root.join("meta/info.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn metadata_errors_name_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ds");
    small_image_dataset(&root);
    let info = std::fs::read_to_string(root.join("meta/info.json")).unwrap();

    edit_info(&root, |v| {
        v["features"][STATE]["shape"] = serde_json::json!([7])
    });
    let msg = err_text(&root);
    assert!(
        msg.contains("file-000.parquet")
            && msg.contains("observation.state")
            && msg.contains("shape"),
        "{msg}"
    );

    std::fs::write(root.join("meta/info.json"), &info).unwrap();
    edit_info(&root, |v| {
        v["features"][HEAD]["shape"] = serde_json::json!([96, 64, 3])
    });
    let msg = err_text(&root);
    assert!(msg.contains(HEAD) && msg.contains("96x96"), "{msg}");

    std::fs::write(root.join("meta/info.json"), &info).unwrap();
    edit_info(&root, |v| v["codebase_version"] = "v2.1".into());
    let msg = err_text(&root);
    assert!(
        msg.contains("meta/info.json") && msg.contains("v2.1") && msg.contains("convert"),
        "{msg}"
    );

    std::fs::write(root.join("meta/info.json"), &info).unwrap();
    edit_info(&root, |v| v["total_frames"] = 17.into());
    let msg = err_text(&root);
    assert!(msg.contains("total_frames") && msg.contains("16"), "{msg}");

    std::fs::write(root.join("meta/info.json"), &info).unwrap();
    edit_info(&root, |v| v["total_episodes"] = 3.into());
    let msg = err_text(&root);
    assert!(
        msg.contains("meta/episodes") && msg.contains("total_episodes"),
        "{msg}"
    );

    std::fs::write(root.join("meta/info.json"), &info).unwrap();
    std::fs::remove_file(root.join("meta/tasks.parquet")).unwrap();
    let msg = err_text(&root);
    assert!(
        msg.contains("meta/tasks.parquet") && msg.contains("missing"),
        "{msg}"
    );

    std::fs::remove_file(root.join("meta/info.json")).unwrap();
    let msg = err_text(&root);
    assert!(
        msg.contains("meta/info.json") && msg.contains("missing"),
        "{msg}"
    );
}

#[test]
fn episode_ranges_must_match_the_data_rows() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ds");
    small_image_dataset(&root);
    // Rewrite the episodes table with episode 0 one frame shorter and episode 1 one longer.
    let info = Info::load(&root).unwrap();
    let mut eps = parquet_io::read_episodes(&root, &info.features).unwrap();
    eps[0].length = 7;
    eps[0].dataset_to_index = 7;
    eps[1].dataset_from_index = 7;
    eps[1].length = 9;
    parquet_io::write_episodes(
        &root,
        "meta/episodes/chunk-000/file-000.parquet",
        &info.features,
        &eps,
        &[],
    )
    .unwrap();
    let msg = err_text(&root);
    assert!(
        msg.contains("file-000.parquet")
            && (msg.contains("episode") || msg.contains("frame_index")),
        "{msg}"
    );
}

#[test]
fn missing_and_short_videos_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ds");
    let c = cfg(2, 10, Some(VideoCodec::H264), 5);
    synth::write_synthetic(&root, &c).unwrap();
    let head = root
        .join("videos")
        .join(HEAD)
        .join("chunk-000/file-000.mp4");
    // Too short: replace the 2-episode file by the first episode only.
    let short_root = dir.path().join("short");
    synth::write_synthetic(&short_root, &cfg(1, 10, Some(VideoCodec::H264), 5)).unwrap();
    let saved = std::fs::read(&head).unwrap();
    std::fs::copy(
        short_root
            .join("videos")
            .join(HEAD)
            .join("chunk-000/file-000.mp4"),
        &head,
    )
    .unwrap();
    let msg = err_text(&root);
    assert!(
        msg.contains("file-000.mp4") && msg.contains("shorter than episode 1"),
        "{msg}"
    );
    // Missing.
    std::fs::remove_file(&head).unwrap();
    let msg = err_text(&root);
    assert!(
        msg.contains("videos/observation.images.head/chunk-000/file-000.mp4")
            && msg.contains("missing"),
        "{msg}"
    );
    // Not a video.
    std::fs::write(&head, b"not an mp4").unwrap();
    let msg = err_text(&root);
    assert!(msg.contains("file-000.mp4"), "{msg}");
    // Restored, and loading only the wrist camera does not even look at it.
    std::fs::write(&head, &saved).unwrap();
    assert!(open(&root).is_ok());
    std::fs::remove_file(&head).unwrap();
    let ds = LeRobotDataset::open(
        &root,
        &OpenOptions {
            image_keys: Some(vec![WRIST.into()]),
            ffmpeg: Some(ffmpeg()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(ds.image_keys(), vec![WRIST]);
}

// ------------------------------------------------------------------ writer and atomicity

fn frame(c: &SynthConfig, ep: &Episode, t: usize) -> Frame {
    let contact = ep.tactile[t].iter().cloned().fold(0.0, f32::max);
    Frame::new(c.task.clone())
        .image(
            HEAD,
            synth::render_head(c.image_size, &ep.target, &ep.states[t]),
        )
        .image(
            WRIST,
            synth::render_wrist(c.image_size, &ep.states[t], contact),
        )
        .vector(STATE, ep.states[t].to_vec())
        .vector(TACTILE, ep.tactile[t].clone())
        .vector(ACTION, ep.actions[t].to_vec())
}

fn crash_mid_episode(video: Option<VideoCodec>) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ds");
    let c = cfg(3, 12, video, 6);
    let eps = expected(&c);
    let opts = WriterOptions {
        ffmpeg: video.map(|_| ffmpeg()),
        ..Default::default()
    };
    let mut w = DatasetWriter::create_with(
        &root,
        30,
        "so101_follower",
        &synth::so101_features(96, 32),
        video,
        opts,
    )
    .unwrap();
    for ep in &eps[..2] {
        for t in 0..12 {
            w.add_frame(frame(&c, ep, t)).unwrap();
        }
        let r = w.save_episode().unwrap();
        assert_eq!(r.length, 12);
    }
    for t in 0..5 {
        w.add_frame(frame(&c, &eps[2], t)).unwrap();
    }
    drop(w); // crash: the third episode is never saved
             // Leftovers a killed process could leave: garbage temporary files everywhere.
    for p in [
        "data/chunk-000/.file-000.parquet.tmp-99999-0",
        "meta/.info.json.tmp-99999-1",
        "meta/episodes/chunk-000/.file-000.parquet.tmp-99999-2",
        "meta/.stats.json.tmp-99999-3",
    ] {
        std::fs::write(root.join(p), b"\x00garbage").unwrap();
    }
    let ds = open(&root).unwrap();
    assert_eq!(ds.num_episodes(), 2);
    assert_eq!(ds.num_frames(), 24);
    assert_eq!(ds.vector(STATE, 23), &eps[1].states[11][..]);
    if video.is_some() {
        // The killed encoder's partial file was removed.
        let tmp: Vec<_> = walk(&root.join("videos"))
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(tmp.is_empty(), "{tmp:?}");
    }
}

#[test]
fn writer_dropped_mid_episode_keeps_saved_episodes() {
    crash_mid_episode(None);
}

#[test]
fn writer_dropped_mid_episode_keeps_saved_episodes_video() {
    crash_mid_episode(Some(VideoCodec::H264));
}

#[test]
fn crash_before_the_info_commit_leaves_previous_episodes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ds");
    let c = cfg(3, 10, None, 7);
    let eps = expected(&c);
    let mut w = DatasetWriter::create(
        &root,
        30,
        "so101_follower",
        &synth::so101_features(96, 32),
        None,
    )
    .unwrap();
    for ep in &eps[..2] {
        for t in 0..10 {
            w.add_frame(frame(&c, ep, t)).unwrap();
        }
        w.save_episode().unwrap();
    }
    let info_before = std::fs::read(root.join("meta/info.json")).unwrap();
    for t in 0..10 {
        w.add_frame(frame(&c, &eps[2], t)).unwrap();
    }
    w.save_episode().unwrap();
    // The process died after writing data, tasks, episodes and stats but before info.json.
    std::fs::write(root.join("meta/info.json"), &info_before).unwrap();
    let ds = open(&root).unwrap();
    assert_eq!(ds.num_episodes(), 2);
    assert_eq!(ds.num_frames(), 20);
    assert_eq!(ds.orphan_rows, 10);
}

#[test]
fn writer_rejects_bad_frames_and_usage() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ds");
    let c = cfg(1, 4, None, 8);
    let ep = &expected(&c)[0];
    let mut w = DatasetWriter::create(
        &root,
        30,
        "so101_follower",
        &synth::so101_features(96, 32),
        None,
    )
    .unwrap();
    assert!(w
        .save_episode()
        .unwrap_err()
        .to_string()
        .contains("no frames"));
    let mut f = frame(&c, ep, 0);
    f.vectors.get_mut(STATE).unwrap()[3] = f32::INFINITY;
    let e = w.add_frame(f).unwrap_err().to_string();
    assert!(e.contains(STATE) && e.contains("inf"), "{e}");
    let mut f = frame(&c, ep, 0);
    f.vectors.remove(ACTION);
    assert!(w.add_frame(f).unwrap_err().to_string().contains(ACTION));
    let mut f = frame(&c, ep, 0);
    f.images.get_mut(HEAD).unwrap().pop();
    assert!(w.add_frame(f).unwrap_err().to_string().contains(HEAD));
    let f = frame(&c, ep, 0).vector("observation.extra", vec![1.0]);
    assert!(w
        .add_frame(f)
        .unwrap_err()
        .to_string()
        .contains("unknown feature"));
    assert_eq!(w.pending_frames(), 0);
    w.add_frame(frame(&c, ep, 0)).unwrap();
    assert!(w.finalize().is_err(), "unsaved frames");
    w.clear_episode();
    w.add_frame(frame(&c, ep, 1).clone()).unwrap();
    let mut f2 = frame(&c, ep, 2);
    f2.task = "another task".into();
    w.add_frame(f2).unwrap();
    w.save_episode().unwrap();
    w.finalize().unwrap();
    let ds = open(&root).unwrap();
    assert_eq!(ds.num_frames(), 2);
    assert_eq!(ds.vector(STATE, 0), &ep.states[1][..]);
    assert_eq!(ds.tasks.len(), 2);
    assert_eq!(ds.task_of(1), "another task");
    assert_eq!(ds.episodes[0].tasks.len(), 2);
    // Creating over an existing dataset is refused.
    assert!(DatasetWriter::create(&root, 30, "x", &synth::so101_features(96, 32), None).is_err());
}

#[test]
fn data_and_video_files_roll_over_at_the_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ds");
    let c = cfg(3, 6, Some(VideoCodec::H264), 9);
    let eps = expected(&c);
    let opts = WriterOptions {
        data_files_size_in_mb: 1,
        video_files_size_in_mb: 1,
        chunks_size: 2,
        ffmpeg: Some(ffmpeg()),
    };
    // 1 MB limits are far above these files: everything in file 0. Then force tiny limits
    // by writing a dataset with a 96x96 image feature of noise (incompressible PNG).
    let mut w = DatasetWriter::create_with(
        &root,
        30,
        "so101_follower",
        &synth::so101_features(96, 32),
        c.video,
        opts,
    )
    .unwrap();
    for ep in &eps {
        for t in 0..6 {
            w.add_frame(frame(&c, ep, t)).unwrap();
        }
        w.save_episode().unwrap();
    }
    let ds = open(&root).unwrap();
    assert!(ds
        .episodes
        .iter()
        .all(|e| e.data_file_index == 0 && e.videos[HEAD].file_index == 0));

    let root2 = dir.path().join("noise");
    let mut feats = Features::default();
    feats.insert("observation.images.noise", FeatureSpec::camera(256, 256));
    feats.insert("action", FeatureSpec::vector_len(2));
    let opts = WriterOptions {
        data_files_size_in_mb: 1,
        video_files_size_in_mb: 1,
        chunks_size: 2,
        ffmpeg: None,
    };
    let mut w = DatasetWriter::create_with(&root2, 10, "noise", &feats, None, opts).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut frames = Vec::new();
    for e in 0..3 {
        for t in 0..6 {
            let img: Vec<u8> = (0..256 * 256 * 3)
                .map(|_| rand::Rng::random::<u8>(&mut rng))
                .collect();
            frames.push(img.clone());
            w.add_frame(
                Frame::new("noise")
                    .image("observation.images.noise", img)
                    .vector("action", vec![e as f32, t as f32]),
            )
            .unwrap();
        }
        w.save_episode().unwrap(); // ~1.2 MB per episode: one file each
    }
    let ds = LeRobotDataset::open(&root2, &OpenOptions::default()).unwrap();
    let files: Vec<(i64, i64)> = ds
        .episodes
        .iter()
        .map(|e| (e.data_chunk_index, e.data_file_index))
        .collect();
    assert_eq!(
        files,
        vec![(0, 0), (0, 1), (1, 0)],
        "chunks_size 2: third file opens chunk 1"
    );
    assert!(root2.join("data/chunk-001/file-000.parquet").is_file());
    for (g, img) in frames.iter().enumerate() {
        assert_eq!(ds.image("observation.images.noise", g), &img[..]);
    }
    assert_eq!(ds.vector("action", 17), &[2.0, 5.0]);
}

// ------------------------------------------------------------------ windows and learnability

#[test]
fn windows_on_a_dataset_and_split() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ds");
    let c = cfg(5, 20, None, 10);
    synth::write_synthetic(&root, &c).unwrap();
    let ds = LeRobotDataset::open(
        &root,
        &OpenOptions {
            image_keys: Some(vec![]),
            ..Default::default()
        },
    )
    .unwrap();
    let (train, val) = split_episodes(ds.num_episodes(), 0.2, 42);
    assert_eq!(val.len(), 1);
    assert_eq!(train.len(), 4);
    let spec = WindowSpec {
        n_obs_steps: 2,
        horizon: 16,
        n_action_steps: 8,
    };
    let w = Windows::new(&ds, &train, spec);
    // per episode: -1 ..= 20 - 16 + 7 = 11 -> 13 windows
    assert_eq!(w.len(), 4 * 13);
    for i in 0..w.len() {
        let s = w.sample(i);
        assert!(train.contains(&s.episode));
        let r = ds.episode_range(s.episode);
        assert!(s
            .action_frames
            .iter()
            .chain(&s.obs_frames)
            .all(|f| r.contains(f)));
        assert_eq!(s.obs_frames.len(), 2);
        assert_eq!(s.action_frames.len(), 16);
    }
    let first = w.sample(0);
    assert!(first.action_is_pad[0]);
    assert_eq!(first.obs_frames[0], first.obs_frames[1]);
    let last = w.sample(12);
    assert_eq!(last.action_is_pad.iter().filter(|p| **p).count(), 7);
    let wv = Windows::new(&ds, &val, spec);
    assert_eq!(wv.len(), 13);
    assert!(wv.sample(0).episode == val[0]);
}

/// Reads the target (pan, lift) back from the head image: centroid of the disc.
fn decode_target(img: &[u8], size: usize) -> (f32, f32) {
    let (mut sx, mut sy, mut n) = (0f32, 0f32, 0f32);
    for y in 0..size {
        for x in 0..size {
            let p = &img[(y * size + x) * 3..(y * size + x) * 3 + 3];
            let bg = (20.0 + 30.0 * y as f32 / size as f32) as i32;
            let far =
                (p[0] as i32 - bg).abs() + (p[1] as i32 - bg).abs() + (p[2] as i32 - bg - 10).abs()
                    > 60;
            let white = p.iter().all(|&v| v > 235);
            if far && !white {
                sx += x as f32 + 0.5;
                sy += y as f32 + 0.5;
                n += 1.0;
            }
        }
    }
    (
        synth::px_to_angle(sx / n, size),
        synth::px_to_angle(sy / n, size),
    )
}

#[test]
fn synthetic_task_is_learnable_from_images_and_state() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ds");
    let c = cfg(6, 60, None, 11);
    let summary = synth::write_synthetic(&root, &c).unwrap();
    let ds = open(&root).unwrap();
    let horizon = 16;
    let mean_action: Vec<f64> = ds.stats.as_ref().unwrap().get(ACTION).unwrap().mean.clone();
    let (mut err_oracle, mut err_const, mut n) = (0f64, 0f64, 0f64);
    let mut close_frames = Vec::new();
    for e in 0..ds.num_episodes() {
        let r = ds.episode_range(e);
        let (pan, lift) = decode_target(ds.image(HEAD, r.start), c.image_size);
        let truth = summary.targets[e];
        assert!(
            (pan - truth[0]).abs() < 3.0 && (lift - truth[1]).abs() < 3.0,
            "decoded ({pan}, {lift}) vs {truth:?}"
        );
        // Closing starts around the middle of the episode.
        let close = r
            .clone()
            .find(|&g| ds.vector(ACTION, g)[5] < ds.vector(STATE, g)[5] - 1.0)
            .unwrap()
            - r.start;
        close_frames.push(close);
        // Oracle policy: the image tells the target (pan/lift decoded, the rest from
        // colour/size, taken exactly here), the state tells where the arm is.
        for g in r.clone().step_by(5) {
            let mut s: [f32; 6] = ds.vector(STATE, g).try_into().unwrap();
            let mut target = truth;
            target[0] = pan;
            target[1] = lift;
            let mut closing = ds.vector(STATE, g)[5] < 80.0;
            for k in 0..horizon.min(r.end - g) {
                closing = synth::should_close(&s, &target, closing);
                let a = synth::leader_step(&s, &target, closing);
                let truth_a = ds.vector(ACTION, g + k);
                for j in 0..6 {
                    err_oracle += ((a[j] - truth_a[j]) as f64).powi(2);
                    err_const += (mean_action[j] - truth_a[j] as f64).powi(2);
                    n += 1.0;
                }
                s = a;
            }
        }
    }
    let (rmse_oracle, rmse_const) = ((err_oracle / n).sqrt(), (err_const / n).sqrt());
    eprintln!("chunk RMSE: image+state oracle {rmse_oracle:.2} deg, constant policy {rmse_const:.2} deg; gripper closes at frames {close_frames:?}");
    assert!(
        rmse_oracle * 5.0 < rmse_const,
        "oracle {rmse_oracle} vs constant {rmse_const}"
    );
    assert!(
        close_frames.iter().all(|&f| (15..50).contains(&f)),
        "{close_frames:?}"
    );
    // Tactile rises when the gripper closes.
    let r = ds.episode_range(0);
    let peak = |g: usize| {
        ds.vector(TACTILE, g)
            .iter()
            .cloned()
            .fold(f32::MIN, f32::max)
    };
    assert!(peak(r.start) < 0.1 && peak(r.end - 1) > 0.8);
    // Deterministic in the seed.
    let root2 = dir.path().join("again");
    synth::write_synthetic(&root2, &c).unwrap();
    assert_eq!(
        std::fs::read(data_file(&root)).unwrap(),
        std::fs::read(data_file(&root2)).unwrap()
    );
}

// ------------------------------------------------------------------ golden fixture

/// A dataset recorded by LeRobot 0.6.1 itself (AV1 via PyAV); see fixtures/README.md.
#[test]
fn reads_a_dataset_recorded_by_lerobot() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/dataset/fixtures/lerobot-0.6.1-av1");
    let root = if root.is_dir() {
        root
    } else {
        Path::new(file!())
            .parent()
            .unwrap()
            .join("fixtures/lerobot-0.6.1-av1")
    };
    let ds = open(&root).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ds.num_episodes(), 2);
    assert_eq!(ds.num_frames(), 56);
    assert_eq!(ds.episode_range(1), 25..56);
    assert_eq!(ds.tasks, vec!["task 0", "task 1"]);
    assert_eq!(
        ds.info
            .features
            .get("observation.images.front")
            .unwrap()
            .info
            .as_ref()
            .unwrap()["video.codec"],
        "av1"
    );
    let v = &ds.episodes[1].videos["observation.images.front"];
    assert!((v.from_timestamp - 25.0 / 30.0).abs() < 1e-9);
    let key = "observation.images.front";
    assert_eq!(ds.image_shape(key), Some((64, 80, 3)));
    let mut worst = 0f64;
    for g in 0..56 {
        let e = ds.episode_of(g);
        let t = ds.frame_index(g);
        assert_eq!(ds.task_of(g), format!("task {e}"));
        assert_eq!(ds.vector("observation.state", g), &[g as f32; 6]);
        let a: Vec<f32> = (0..6).map(|i| (i + g) as f32).collect();
        assert_eq!(ds.vector("action", g), &a[..]);
        let mut img = vec![0u8; 64 * 80 * 3];
        for y in 0..64 {
            for x in 0..80 {
                let p = (y * 80 + x) * 3;
                let white = (10..30).contains(&y) && (5 + t..25 + t).contains(&x);
                let c = if white {
                    [255, 255, 255]
                } else {
                    [((g * 3) % 256) as u8, 100, (200 - e * 50) as u8]
                };
                img[p..p + 3].copy_from_slice(&c);
            }
        }
        let mae = ds
            .image(key, g)
            .iter()
            .zip(&img)
            .map(|(a, b)| (*a as f64 - *b as f64).abs())
            .sum::<f64>()
            / img.len() as f64;
        worst = worst.max(mae);
    }
    assert!(worst < 4.0, "worst frame MAE {worst}");
    let s = ds.stats.as_ref().unwrap();
    assert_eq!(s.get("observation.state").unwrap().count, 56);
    assert_eq!(s.get(key).unwrap().shape, vec![3, 1, 1]);
}

#[test]
fn pressure_images_round_trip_as_16_bit_png_and_refuse_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ds");
    let key = "observation.tactile_image";
    let mut feats = Features::default();
    feats.insert(STATE, FeatureSpec::vector(&["a", "b"]));
    feats.insert(key, FeatureSpec::pressure_image(2, 3, 1e-3));
    let mut w = DatasetWriter::create(&root, 30, "x", &feats, Some(VideoCodec::H264)).unwrap();
    // Stays a PNG image feature when cameras become video; not a camera.
    assert_eq!(w.info().features.get(key).unwrap().dtype, "image");
    assert!(w.info().features.camera_keys().is_empty());
    let cells = |k: f32| vec![0.0, 0.0015 * k, 1.0, 2.5, -0.2, 70.0];
    let frame = |k: f32| {
        Frame::new("t")
            .vector(STATE, vec![k, 0.0])
            .vector(key, cells(k))
    };
    for k in 0..3 {
        w.add_frame(frame(k as f32)).unwrap();
    }
    // Wrong size and NaN are refused by name, and the episode keeps its frames.
    let e = w
        .add_frame(
            Frame::new("t")
                .vector(STATE, vec![0.0, 0.0])
                .vector(key, vec![0.0; 5]),
        )
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("pressure image observation.tactile_image: 5 values, expected 2 x 3"),
        "{e}"
    );
    let mut nan = cells(0.0);
    nan[3] = f32::NAN;
    let e = w
        .add_frame(
            Frame::new("t")
                .vector(STATE, vec![0.0, 0.0])
                .vector(key, nan),
        )
        .unwrap_err();
    assert!(e.to_string().contains("cell 3 is NaN"), "{e}");
    assert_eq!(w.pending_frames(), 3);
    w.save_episode().unwrap();
    w.finalize().unwrap();

    let ds = open(&root).unwrap();
    assert!(ds.image_keys().is_empty());
    for k in 0..3 {
        // Quantised to 1/1000: rounded, negatives read 0, above 65.535 saturates.
        let want = [
            0.0,
            (0.0015f64 * k as f64 / 1e-3).round() * 1e-3,
            1.0,
            2.5,
            0.0,
            65.535,
        ];
        let got = ds.vector(key, k);
        for (g, w) in got.iter().zip(want) {
            assert_eq!(*g, w as f32, "frame {k}: {got:?}");
        }
    }
    // Stats in stored counts over every cell (LeRobot's units for uint16 images).
    let st = ds.stats.as_ref().unwrap().get(key).unwrap();
    assert_eq!(
        (st.shape.clone(), st.min[0], st.max[0]),
        (vec![1, 1, 1], 0.0, 65535.0)
    );
    // A PNG of the wrong depth is refused with the file, feature and row.
    let info_path = root.join("meta/info.json");
    let text = std::fs::read_to_string(&info_path).unwrap();
    std::fs::write(
        &info_path,
        text.replace(
            "\"tactile.pressure_per_count\": 0.001",
            "\"tactile.pressure_per_count\": -1.0",
        ),
    )
    .unwrap();
    let e = open(&root).unwrap_err().to_string();
    assert!(
        e.contains("features.observation.tactile_image") && e.contains("positive"),
        "{e}"
    );
    std::fs::write(&info_path, text).unwrap();
    let mut pixels = vec![0u8; 6];
    pixels[0] = 1;
    let png8 = {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, 3, 2);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header()
            .unwrap()
            .write_image_data(&pixels)
            .unwrap();
        out
    };
    let mut dst = vec![0f32; 6];
    let e = reader::decode_pressure_png(&png8, 2, 3, 1e-3, &mut dst).unwrap_err();
    assert!(e.contains("expected 16-bit grey"), "{e}");
    let e = reader::decode_pressure_png(b"\x89PNG garbage", 2, 3, 1e-3, &mut dst).unwrap_err();
    assert!(e.contains("corrupt PNG"), "{e}");
}
