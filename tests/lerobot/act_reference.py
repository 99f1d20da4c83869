#!/usr/bin/env python3
"""LeRobot's own per-tick ACT inference over a stream of observations: the reference
the runtime's whole pipeline is checked against (runtime/tests/act_lerobot.rs).

    .venv/bin/python tests/lerobot/act_reference.py PRETRAINED_DIR OUT.npz --ticks 200 [--seed S]

Loads the checkpoint strictly (`ACTPolicy.from_pretrained(..., strict=True)`, the
backbone's torchvision weights never fetched) and its processors
(`make_pre_post_processors(cfg, pretrained_path=...)`), calls `policy.reset()`, then
for each tick builds a robot observation (uint8 HWC RGB frames per camera that vary
smoothly from tick to tick, float32 SO-101-like joint angles in degrees) and runs
`lerobot.common.control_utils.predict_action` (uint8 -> f32 / 255 -> CHW ->
preprocessor -> policy.select_action -> postprocessor), exactly what lerobot-record
does with a policy. Queue or temporal ensembling follows the checkpoint's config.

OUT.npz (uncompressed):
  observation.images.<name>  uint8   (ticks, H, W, 3)  RGB, per camera
  observation.state          float32 (ticks, Ds)       degrees / percent
  action                     float32 (ticks, Da)       unnormalised action of each tick
  inferred                   uint8   (ticks,)          1 where the model ran that tick
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

# The exporter's config loader (it works around LeRobot 0.6.1's temp-file leak).
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "models" / "export"))
from lerobot_act import lerobot_config  # noqa: E402


def frame(tick: int, cam: int, h: int, w: int) -> np.ndarray:
    """A smooth colour pattern that drifts with the tick (and differs per camera)."""
    y = np.arange(h, dtype=np.float64)[:, None, None] / h
    x = np.arange(w, dtype=np.float64)[None, :, None] / w
    c = np.arange(3, dtype=np.float64)[None, None, :]
    ph = 0.03 * tick + 0.7 * cam
    v = (0.5 + 0.3 * np.sin(2 * np.pi * (1.3 * x + 0.4 * y + ph + c / 3))
         + 0.2 * np.cos(2 * np.pi * (0.5 * x - 1.1 * y - 0.5 * ph + c / 5)))
    # a bright blob that moves across the frame
    bx, by = 0.5 + 0.35 * np.sin(0.05 * tick + cam), 0.5 + 0.35 * np.cos(0.04 * tick)
    v += 0.5 * np.exp(-((x - bx) ** 2 + (y - by) ** 2) / 0.02)
    return np.clip(np.rint(255 * v), 0, 255).astype(np.uint8)


def state(tick: int, ds: int) -> np.ndarray:
    mean = np.array([0.0, -10.0, 15.0, 5.0, 0.0, 30.0] + [0.0] * max(0, ds - 6))[:ds]
    amp = np.array([40.0, 30.0, 35.0, 25.0, 60.0, 30.0] + [10.0] * max(0, ds - 6))[:ds]
    k = np.arange(ds)
    return (mean + amp * np.sin(0.07 * tick * (1 + 0.1 * k) + k)).astype(np.float32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pretrained_dir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--ticks", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)

    from lerobot.common.control_utils import predict_action
    from lerobot.configs import FeatureType
    from lerobot.policies.act.modeling_act import ACTPolicy
    from lerobot.policies.factory import make_pre_post_processors

    torch.manual_seed(a.seed)
    cfg = lerobot_config(a.pretrained_dir)
    cfg.pretrained_backbone_weights = None  # the checkpoint holds the backbone
    cfg.device = "cpu"
    policy = ACTPolicy.from_pretrained(a.pretrained_dir, config=cfg, strict=True,
                                       local_files_only=True)
    pre, post = make_pre_post_processors(cfg, pretrained_path=str(a.pretrained_dir))
    policy.reset()
    pre.reset()
    post.reset()

    cams = [k for k, f in cfg.input_features.items() if f.type == FeatureType.VISUAL]
    ds = cfg.input_features["observation.state"].shape[0]
    ensemble = cfg.temporal_ensemble_coeff is not None
    rec: dict[str, list] = {k: [] for k in cams + ["observation.state", "action", "inferred"]}
    device = torch.device("cpu")
    for t in range(a.ticks):
        obs = {"observation.state": state(t, ds)}
        for i, k in enumerate(cams):
            _, h, w = cfg.input_features[k].shape
            obs[k] = frame(t, i, h, w)
        inferred = ensemble or len(policy._action_queue) == 0
        act = predict_action(dict(obs), policy, device, pre, post, use_amp=False)
        for k, v in obs.items():
            rec[k].append(v)
        rec["action"].append(act.reshape(-1).numpy().astype(np.float32))
        rec["inferred"].append(np.uint8(inferred))
    arrays = {k: np.stack(v) for k, v in rec.items()}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(a.out, **arrays)
    print(f"act_reference: {a.ticks} ticks, {int(arrays['inferred'].sum())} inferences "
          f"({'temporal ensembling' if ensemble else f'queue of {cfg.n_action_steps}'}), "
          f"action range [{arrays['action'].min():.1f}, {arrays['action'].max():.1f}] -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
