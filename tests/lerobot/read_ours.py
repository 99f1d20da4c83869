#!/usr/bin/env python3
"""Direction (a): a dataset written by maniflow (Rust) loads in real LeRobot 0.6.1.

Usage: read_ours.py --root DATASET --expected DIR [--max-mae GREY]

DIR is what the writer was given, dumped by trainer/tests/lerobot_roundtrip.rs
(see `expected.py`). The dataset is opened with
`lerobot.datasets.lerobot_dataset.LeRobotDataset(repo_id="local/x", root=...)`
(local only, hub offline, PyAV video backend) and every frame is compared:

- vectors (state, tactile, action): bit-exact float32;
- frame_index / episode_index / index / task_index / task exact, timestamp
  = frame_index / fps within 1e-6;
- pressure images (16-bit grey PNG): LeRobot's float32 counts times the
  feature's `tactile.pressure_per_count` bit-exact against our reader's
  pressures, stats min/max in counts exact;
- images: PNG features exact; video features within `--max-mae` mean absolute
  error (grey levels, per frame over all pixels and channels), and in each
  episode the decoded frames must match their own source frames better than
  the source shifted by one frame either way (mean abs error);
- episodes (count, lengths, tasks, index ranges), meta fps, robot_type,
  features (dtype, shape, names), camera/video keys, stats (min/max exact,
  mean/std to 1e-5 relative).

Then a self-test corrupts the expectation (one float32 ulp, one pixel, one task,
one episode length) and checks the comparison catches each one.
Prints a summary and, last, one JSON line; exit status 1 on any mismatch.
"""

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from expected import VECTOR_KEYS, load, pressure_scale  # noqa: E402

BASE_KEYS = ("timestamp", "frame_index", "episode_index", "index", "task_index")


def to_hwc_u8(t) -> np.ndarray:
    """A LeRobot image item (CHW uint8, or CHW float in [0, 1]) as HWC uint8."""
    a = t.numpy()
    if a.dtype != np.uint8:
        scaled = a.astype(np.float64) * 255.0
        r = np.rint(scaled)
        if a.min() < 0 or a.max() > 1 or np.abs(scaled - r).max() > 1e-3:
            raise AssertionError(f"image values are not k/255 in [0, 1] (dtype {a.dtype})")
        a = r.astype(np.uint8)
    return np.ascontiguousarray(a.transpose(1, 2, 0))


def pressure_keys(ds) -> dict:
    """{key: pressure_per_count} of the pressure image features in LeRobot's meta."""
    out = {}
    for k, f in ds.meta.features.items():
        s = pressure_scale(f)
        if s is not None:
            out[k] = s
    return out


def load_lerobot(root: Path):
    """Every frame of the dataset through LeRobotDataset.__getitem__."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    t0 = time.time()
    ds = LeRobotDataset("local/x", root=root, video_backend="pyav", return_uint8=True)
    t_open = time.time() - t0
    press = pressure_keys(ds)
    cams = [k for k in ds.meta.camera_keys if k not in press]
    got = {k: [] for k in (*VECTOR_KEYS, *cams, *press, *BASE_KEYS, "task")}
    for i in range(len(ds)):
        item = ds[i]
        for k in VECTOR_KEYS:
            got[k].append(item[k].numpy())
        for k in cams:
            got[k].append(to_hwc_u8(item[k]))
        for k, scale in press.items():
            counts = item[k].numpy()
            if counts.dtype != np.float32 or counts.ndim != 3 or counts.shape[0] != 1:
                raise AssertionError(f"{k}: LeRobot returned {counts.dtype}{counts.shape}, expected float32 (1, H, W)")
            got[k].append((counts.reshape(-1).astype(np.float64) * scale).astype(np.float32))
            got.setdefault(k + "#counts", []).append(counts.reshape(-1))
        for k in BASE_KEYS:
            got[k].append(item[k].item())
        got["task"].append(item["task"])
    out = {k: (v if k == "task" else np.stack(v)) for k, v in got.items() if v}
    return ds, out, t_open, time.time() - t0 - t_open


def compare(ds, got, exp, video: bool, max_mae: float):
    """Returns (failures, measurements)."""
    fail, meas = [], {}
    man, arr = exp
    fps = man["fps"]
    lengths = [e["length"] for e in man["episodes"]]
    n = sum(lengths)
    ep_of = np.repeat(np.arange(len(lengths)), lengths)
    start = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int)
    fidx = np.arange(n) - start[ep_of]
    tasks = [man["episodes"][e]["task"] for e in ep_of]

    # Sizes and episodes.
    if len(ds) != n or ds.num_frames != n:
        fail.append(f"frames: lerobot {len(ds)}/{ds.num_frames}, wrote {n}")
    if ds.num_episodes != len(lengths):
        fail.append(f"episodes: lerobot {ds.num_episodes}, wrote {len(lengths)}")
    eps = ds.meta.episodes
    got_len = [int(x) for x in eps["length"]]
    if got_len != lengths:
        fail.append(f"episode lengths: lerobot {got_len}, wrote {lengths}")
    got_tasks = [list(x) for x in eps["tasks"]]
    want_tasks = [[e["task"]] for e in man["episodes"]]
    if got_tasks != want_tasks:
        fail.append(f"episode tasks: lerobot {got_tasks}, wrote {want_tasks}")
    ranges = [(int(a), int(b)) for a, b in zip(eps["dataset_from_index"], eps["dataset_to_index"])]
    want_ranges = [(int(s), int(s + l)) for s, l in zip(start, lengths)]
    if ranges != want_ranges:
        fail.append(f"episode ranges: lerobot {ranges}, wrote {want_ranges}")
    if [int(x) for x in eps["episode_index"]] != list(range(len(lengths))):
        fail.append("episode_index column of meta/episodes")
    if len(got["index"]) != n:
        fail.append(f"iterated {len(got['index'])} frames, wrote {n}")
        return fail, meas

    # Meta.
    m = ds.meta
    if m.fps != fps:
        fail.append(f"fps: lerobot {m.fps}, wrote {fps}")
    if m.robot_type != man["robot_type"]:
        fail.append(f"robot_type: lerobot {m.robot_type!r}, wrote {man['robot_type']!r}")
    for key, spec in man["features"].items():
        f = m.features.get(key)
        if f is None:
            fail.append(f"feature {key} missing in meta")
            continue
        for field in ("dtype", "shape", "names"):
            g, w = f.get(field), spec[field]
            g = list(g) if isinstance(g, (list, tuple)) else g
            if g != w:
                fail.append(f"feature {key}.{field}: lerobot {g!r}, wrote {w!r}")
    all_cams = [k for k, s in man["features"].items() if s["dtype"] in ("image", "video")]
    if list(m.camera_keys) != all_cams:
        fail.append(f"camera_keys: lerobot {list(m.camera_keys)}, wrote {all_cams}")
    press = {k: pressure_scale(s) for k, s in man["features"].items() if pressure_scale(s) is not None}
    cams = [k for k in all_cams if k not in press]
    want_video = cams if video else []
    if list(m.video_keys) != want_video:
        fail.append(f"video_keys: lerobot {list(m.video_keys)}, expected {want_video}")
    if video:
        for k in cams:
            codec = (m.features[k].get("info") or {}).get("video.codec")
            if codec != "av1":
                fail.append(f"{k} video.codec {codec!r}, expected 'av1'")

    # Frame bookkeeping.
    for k, want in (("index", np.arange(n)), ("episode_index", ep_of), ("frame_index", fidx)):
        if not np.array_equal(got[k], want):
            fail.append(f"{k}: first mismatch at frame {int(np.argmax(got[k] != want))}")
    want_ti = [m.get_task_index(t) for t in tasks]
    if not np.array_equal(got["task_index"], [-1 if x is None else x for x in want_ti]):
        fail.append("task_index does not name each frame's task")
    if got["task"] != tasks:
        bad = next(i for i, (a, b) in enumerate(zip(got["task"], tasks)) if a != b)
        fail.append(f"task of frame {bad}: lerobot {got['task'][bad]!r}, wrote {tasks[bad]!r}")
    ts_err = float(np.abs(got["timestamp"] - fidx / fps).max())
    meas["timestamp_max_err"] = ts_err
    if ts_err > 1e-6:
        fail.append(f"timestamp: max error {ts_err}")

    # Vectors: bit-exact float32.
    for k in VECTOR_KEYS:
        g, w = got[k], arr[k]
        if g.dtype != np.float32 or g.shape != w.shape:
            fail.append(f"{k}: lerobot {g.dtype}{g.shape}, wrote {w.dtype}{w.shape}")
            continue
        bad = g.view(np.uint32) != w.view(np.uint32)
        meas[f"{k}_mismatches"] = int(bad.sum())
        meas[f"{k}_max_abs_err"] = float(np.abs(g.astype(np.float64) - w).max())
        if bad.any():
            f, j = np.argwhere(bad)[0]
            fail.append(f"{k}: {int(bad.sum())} values differ, first frame {f} [{j}]: {g[f, j]!r} vs {w[f, j]!r}")
        st = (m.stats or {}).get(k)
        if st is None:
            fail.append(f"stats for {k} missing")
            continue
        w64 = w.astype(np.float64)
        for name, want, exact in (
            ("min", w.min(0), True),
            ("max", w.max(0), True),
            ("mean", w64.mean(0), False),
            ("std", w64.std(0), False),
        ):
            gs = np.asarray(st[name], dtype=np.float64).reshape(-1)
            err = np.abs(gs - want)
            if (err > 0).any() if exact else (err > 1e-5 * (1 + np.abs(want))).any():
                fail.append(f"stats {k}.{name}: max error {err.max():.3g}")

    # Pressure images: bit-exact pressures, stats in counts.
    for k, scale in press.items():
        g, w = got.get(k), arr[k]
        if g is None or g.shape != w.shape:
            fail.append(f"{k}: lerobot {None if g is None else g.shape}, wrote {w.shape}")
            continue
        bad = g.view(np.uint32) != w.view(np.uint32)
        meas[f"{k}_mismatches"] = int(bad.sum())
        meas[f"{k}_max_pressure"] = float(w.max())
        if bad.any():
            f, j = np.argwhere(bad)[0]
            fail.append(f"{k}: {int(bad.sum())} cells differ, first frame {f} [{j}]: {g[f, j]!r} vs {w[f, j]!r}")
        st = (m.stats or {}).get(k)
        counts = got[k + "#counts"]
        if st is None:
            fail.append(f"stats for {k} missing")
            continue
        for name, want in (("min", counts.min()), ("max", counts.max())):
            gs = float(np.asarray(st[name]).reshape(-1)[0])
            if gs != float(want):
                fail.append(f"stats {k}.{name}: {gs} in meta, {want} in the frames")

    # Images.
    for k in cams:
        g, w = got[k].astype(np.int16), arr[k].astype(np.int16)
        if g.shape != w.shape:
            fail.append(f"{k}: lerobot shape {g.shape}, wrote {w.shape}")
            continue
        d = np.abs(g - w)
        mae = d.reshape(n, -1).mean(1)
        meas[f"{k}_max_abs_err"] = int(d.max())
        meas[f"{k}_max_mae"] = float(mae.max())
        meas[f"{k}_mean_mae"] = float(mae.mean())
        if not video:
            if d.any():
                f = int(np.argmax(d.reshape(n, -1).max(1) > 0))
                fail.append(f"{k}: PNG frames not exact, {int((d.reshape(n, -1).max(1) > 0).sum())} differ (first {f})")
            continue
        if mae.max() > max_mae:
            f = int(mae.argmax())
            fail.append(f"{k}: frame {f} mean abs error {mae.max():.3f} > {max_mae} grey levels")
        # Alignment: within each episode, decoded frames i against source frames
        # i + o (o = -1, 0, +1, mean MAE over the overlap); o = 0 must be best.
        margin = np.inf
        for e, (s, l) in enumerate(zip(start, lengths)):
            ge, we = g[s : s + l], w[s : s + l]
            err = {o: np.abs(ge[max(0, -o) : l - max(0, o)] - we[max(0, o) : l - max(0, -o)]).mean() for o in (-1, 0, 1)}
            if not err[0] < min(err[-1], err[1]):
                fail.append(f"{k}: episode {e} aligns better with a frame offset: {err}")
            margin = min(margin, min(err[-1], err[1]) - err[0])
        meas[f"{k}_offset_margin"] = float(margin)
    return fail, meas


def self_test(ds, got, exp, video, max_mae):
    """Each corruption of the expectation must be caught."""
    man, arr = exp
    press = [k for k, s in man["features"].items() if pressure_scale(s) is not None]
    cams = [k for k, s in man["features"].items() if s["dtype"] in ("image", "video") and k not in press]
    n = len(got["index"])

    def ulp(a):
        a = a.copy()
        a[n // 2, 1] = np.nextafter(a[n // 2, 1], np.float32(np.inf))
        return a

    def pixel(a):
        a = a.copy()
        if video:  # shift one whole frame well past the tolerance
            a[n - 1] = np.clip(a[n - 1].astype(int) + int(3 * max_mae) + 10, 0, 255).astype(np.uint8)
        else:
            a[n - 1, 5, 7, 2] ^= 1
        return a

    def shift(a):  # episode 0's frames one step late (an off-by-one in time)
        a, l = a.copy(), man["episodes"][0]["length"]
        a[1:l] = a[0 : l - 1].copy()
        return a

    cases = [(f"{k} +1 ulp", k, ulp) for k in (*VECTOR_KEYS, *press)] + [(f"{k} pixel", k, pixel) for k in cams]
    cases += [(f"{k} frame shift", k, shift) for k in cams]
    caught = 0
    for name, key, fn in cases:
        a2 = dict(arr)
        a2[key] = fn(arr[key])
        if not compare(ds, got, (man, a2), video, max_mae)[0]:
            raise AssertionError(f"self-test: corruption '{name}' was not detected")
        caught += 1
    for name, edit in (
        ("task", lambda m: m["episodes"][-1].__setitem__("task", m["episodes"][-1]["task"] + "!")),
        ("length", lambda m: (m["episodes"][0].__setitem__("length", m["episodes"][0]["length"] + 1),
                              m["episodes"][1].__setitem__("length", m["episodes"][1]["length"] - 1))),
    ):
        m2 = copy.deepcopy(man)
        edit(m2)
        if not compare(ds, got, (m2, arr), video, max_mae)[0]:
            raise AssertionError(f"self-test: corruption '{name}' was not detected")
        caught += 1
    return caught


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--expected", type=Path, required=True)
    ap.add_argument("--max-mae", type=float, default=2.0)
    a = ap.parse_args()
    exp = load(a.expected)
    video = exp[0]["video"]
    ds, got, t_open, t_iter = load_lerobot(a.root)
    fail, meas = compare(ds, got, exp, video, a.max_mae)
    kind = "video (AV1)" if video else "PNG images"
    print(f"read_ours: {a.root} [{kind}] opened by LeRobot in {t_open:.1f}s, {len(ds)} frames read in {t_iter:.1f}s")
    print(f"read_ours: {ds.num_episodes} episodes, lengths {[int(x) for x in ds.meta.episodes['length']]}, fps {ds.meta.fps}")
    for k, v in meas.items():
        print(f"read_ours:   {k} = {v}")
    if fail:
        print("read_ours: MISMATCH\n  " + "\n  ".join(fail[:40]))
        sys.exit(1)
    caught = self_test(ds, got, exp, video, a.max_mae)
    print(f"read_ours: all frames match; self-test: {caught} corruptions detected")
    meas.update(frames=len(ds), episodes=ds.num_episodes, video=video, max_mae_tol=a.max_mae, self_test=caught)
    print(json.dumps(meas))


if __name__ == "__main__":
    main()
