"""The "what was written" exchange format between trainer/tests/lerobot_roundtrip.rs
and the scripts here: a directory with `manifest.json` and one raw little-endian
C-order file per array (no .npy parsing needed on the Rust side).

manifest.json:
  {"fps": 30, "robot_type": "so101_follower", "video": true,
   "episodes": [{"length": 20, "task": "..."}, ...],
   "features": {key: {"dtype": "video"|"image"|"float32", "shape": [...], "names": [...]}},
   "arrays": {key: {"dtype": "uint8"|"float32", "shape": [frames, ...], "file": "<name>.bin"}}}

Arrays: every camera (frames x H x W x 3, uint8 RGB), VECTOR_KEYS
(frames x dim, float32) and every pressure image (frames x H*W, float32
pressures as our reader returns them), in dataset (global index) order.
A pressure image feature carries `"info": {"tactile.encoding": "mono16",
"tactile.pressure_per_count": s}` in the manifest, as in meta/info.json.
"""

import json
from pathlib import Path

import numpy as np

VECTOR_KEYS = ("observation.state", "observation.tactile", "action")


def pressure_scale(spec: dict):
    """The pressure per stored count of a pressure image feature, else None."""
    info = spec.get("info") or {}
    if info.get("tactile.encoding") != "mono16":
        return None
    return float(info["tactile.pressure_per_count"])


def load(d: Path):
    man = json.loads((d / "manifest.json").read_text())
    arrays = {}
    for key, a in man["arrays"].items():
        x = np.fromfile(d / a["file"], dtype=np.dtype(a["dtype"]).newbyteorder("<"))
        arrays[key] = x.reshape(a["shape"]).astype(a["dtype"])
    return man, arrays


def dump(d: Path, man: dict, arrays: dict):
    d.mkdir(parents=True, exist_ok=True)
    man = dict(man, arrays={})
    for key, x in arrays.items():
        x = np.ascontiguousarray(x)
        f = key.replace("/", "_") + ".bin"
        x.astype(x.dtype.newbyteorder("<")).tofile(d / f)
        man["arrays"][key] = {"dtype": str(x.dtype), "shape": list(x.shape), "file": f}
    (d / "manifest.json").write_text(json.dumps(man, indent=1))
