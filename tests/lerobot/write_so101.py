#!/usr/bin/env python3
"""Direction (b): real LeRobot 0.6.1 records an SO-101-like dataset, with video
(its own encoder: libsvtav1 through PyAV), for maniflow-train to train on.

Usage: write_so101.py --root DATASET --expected DIR [--episodes E] [--frames F]

Features as a LeRobot SO-101 follower with two 96x96 cameras and a tactile pad:
observation.images.head / observation.images.wrist (video), observation.state
(6, <joint>.pos), observation.tactile (32 float32), action (6). Frames are a
deterministic function of (episode, frame); `LeRobotDataset.create`,
`add_frame`, `save_episode`, `finalize`. What was given to `add_frame` is dumped
to DIR (format: expected.py) so the Rust side can compare its reader's frames,
together with the frames LeRobot itself decodes from its videos (PyAV backend),
under `lerobot_decoded/<camera>`.
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from expected import dump  # noqa: E402

JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
STATE_NAMES = [f"{j}.pos" for j in JOINTS]
TAXELS = 32
SIZE = 96
FPS = 30
CAM = {"dtype": "video", "shape": [SIZE, SIZE, 3], "names": ["height", "width", "channels"]}
FEATURES = {
    "observation.images.head": CAM,
    "observation.images.wrist": CAM,
    "observation.state": {"dtype": "float32", "shape": [6], "names": STATE_NAMES},
    "observation.tactile": {"dtype": "float32", "shape": [TAXELS], "names": [f"taxel_{i}" for i in range(TAXELS)]},
    "action": {"dtype": "float32", "shape": [6], "names": STATE_NAMES},
}


def episode(e: int, frames: int):
    """One episode: joints ease toward a per-episode target, the action leads the
    state by one frame, the gripper closes in the second half (tactile bump)."""
    rng = np.random.default_rng(1000 + e)
    target = rng.uniform(-60, 60, 5).astype(np.float32)
    s = np.zeros(6, np.float32)
    s[5] = 90.0
    centre = rng.uniform(8, 24)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    out = []
    for t in range(frames):
        closing = t >= frames // 2
        a = s.copy()
        a[:5] += np.float32(0.15) * (target - s[:5])
        a[5] += np.float32(0.1) * ((np.float32(5.0) if closing else np.float32(90.0)) - s[5])
        contact = np.float32(np.clip((70.0 - s[5]) / 50.0, 0.0, 1.0))
        tact = (contact * np.exp(-0.5 * ((np.arange(TAXELS) - centre) / 4.0) ** 2)).astype(np.float32)
        tact += rng.normal(0, 0.01, TAXELS).astype(np.float32)
        head = np.empty((SIZE, SIZE, 3), np.uint8)
        head[:] = (20 + 30 * yy[..., None] / SIZE).astype(np.uint8)
        cx, cy = 48 + target[0] * 0.5, 48 + target[1] * 0.5
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 < 100
        head[disc] = [int(128 + target[2]), int(128 + target[4]), int(128 - target[2])]
        mx, my = int(48 + s[0] * 0.5), int(48 + s[1] * 0.5)
        head[max(my - 2, 0) : my + 3, max(mx - 2, 0) : mx + 3] = 255
        wrist = np.full((SIZE, SIZE, 3), 60, np.uint8)
        gap = int(s[5] / 100 * 60)
        red = int(200 * (1 - contact))
        wrist[30:90, max(48 - gap // 2 - 8, 0) : 48 - gap // 2] = [200, red, red]
        wrist[30:90, 48 + gap // 2 : 48 + gap // 2 + 8] = [200, red, red]
        out.append({"head": head, "wrist": wrist, "state": s.copy(), "tactile": tact, "action": a.copy()})
        s = a + rng.normal(0, 0.1, 6).astype(np.float32)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--expected", type=Path, required=True)
    ap.add_argument("--episodes", type=int, default=4)
    ap.add_argument("--frames", type=int, default=40)
    a = ap.parse_args()

    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    t0 = time.time()
    ds = LeRobotDataset.create(
        repo_id="local/so101-lerobot",
        fps=FPS,
        features={k: dict(v, shape=tuple(v["shape"])) for k, v in FEATURES.items()},
        root=a.root,
        robot_type="so101_follower",
        use_videos=True,
    )
    tasks = [f"Pick the cube ({'left' if e % 2 == 0 else 'right'} side)." for e in range(a.episodes)]
    arrays = {k: [] for k in FEATURES}
    for e in range(a.episodes):
        for f in episode(e, a.frames):
            frame = {
                "observation.images.head": f["head"],
                "observation.images.wrist": f["wrist"],
                "observation.state": f["state"],
                "observation.tactile": f["tactile"],
                "action": f["action"],
                "task": tasks[e],
            }
            ds.add_frame(frame)
            for k in FEATURES:
                arrays[k].append(frame[k])
        ds.save_episode(parallel_encoding=False)
    ds.finalize()
    codec = ds.meta.features["observation.images.head"]["info"]["video.codec"]
    print(
        f"write_so101: LeRobot wrote {ds.meta.total_episodes} episodes, {ds.meta.total_frames} frames "
        f"({codec} video) to {a.root} in {time.time() - t0:.1f}s"
    )
    # LeRobot's own decode of its videos (a reference for our decoder).
    back = LeRobotDataset("local/so101-lerobot", root=a.root, video_backend="pyav", return_uint8=True)
    for k, v in FEATURES.items():
        if v["dtype"] == "video":
            arrays[f"lerobot_decoded/{k}"] = [back[i][k].numpy().transpose(1, 2, 0) for i in range(len(back))]
    man = {
        "fps": FPS,
        "robot_type": "so101_follower",
        "video": True,
        "episodes": [{"length": a.frames, "task": t} for t in tasks],
        "features": FEATURES,
    }
    dump(a.expected, man, {k: np.stack(v) for k, v in arrays.items()})


if __name__ == "__main__":
    main()
