#!/usr/bin/env python3
"""A randomly initialised LeRobot ACT checkpoint, saved the way LeRobot saves one.

    .venv/bin/python tests/lerobot/act_random.py OUT_DIR --height H --width W \
        [--cameras head,wrist] [--n-action-steps K] [--chunk-size T] \
        [--temporal-ensemble-coeff C] [--seed S] [--small] [--norm-mode MEAN_STD]

Builds `ACTPolicy(ACTConfig(...))` with LeRobot 0.6.1's own classes (no
pretrained backbone weights: ResNet-18 randomly initialised), SO-101 6-dim
state and action, one `observation.images.<name>` (3, H, W) per camera in the
given order, and realistic dataset statistics (SO-101 joint angles in degrees,
gripper 0..100; ImageNet mean/std for the cameras). Writes OUT_DIR as a
`pretrained_model/` directory: `policy.save_pretrained` (config.json,
model.safetensors) and the processors of `make_pre_post_processors(cfg,
dataset_stats=...)` (policy_preprocessor*.json/.safetensors,
policy_postprocessor*.json/.safetensors).

`--small` shrinks the transformer (dim_model 64, 2 heads, FFN 128, 1 encoder
layer, no VAE encoder) for fast many-tick tests; the backbone stays ResNet-18
(LeRobot only takes ResNets). `--norm-mode` sets STATE and ACTION
normalisation (MEAN_STD, MIN_MAX, QUANTILES, QUANTILE10, IDENTITY); the
statistics hold every kind, so any mode works. Everything is local: nothing
is downloaded.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

JOINTS = ["shoulder_pan.pos", "shoulder_lift.pos", "elbow_flex.pos",
          "wrist_flex.pos", "wrist_roll.pos", "gripper.pos"]
# SO-101 in LeRobot units: degrees from the calibration midpoint, gripper 0..100.
STATE_MEAN = [0.0, -10.0, 15.0, 5.0, 0.0, 30.0]
STATE_STD = [35.0, 30.0, 30.0, 25.0, 60.0, 25.0]
ACTION_MEAN = [2.0, -12.0, 18.0, 4.0, -1.0, 35.0]
ACTION_STD = [30.0, 28.0, 32.0, 22.0, 55.0, 30.0]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def vector_stats(mean, std) -> dict[str, np.ndarray]:
    """Every statistic LeRobot computes, consistent with a roughly normal feature."""
    m = np.asarray(mean, np.float32)
    s = np.asarray(std, np.float32)
    return {
        "mean": m, "std": s,
        "min": m - 3.0 * s, "max": m + 3.0 * s,
        "q01": m - 2.33 * s, "q99": m + 2.33 * s,
        "q10": m - 1.28 * s, "q90": m + 1.28 * s,
        "count": np.array([10000], np.int64),
    }


def image_stats() -> dict[str, np.ndarray]:
    m = np.asarray(IMAGENET_MEAN, np.float32).reshape(3, 1, 1)
    s = np.asarray(IMAGENET_STD, np.float32).reshape(3, 1, 1)
    return {
        "mean": m, "std": s,
        "min": np.zeros((3, 1, 1), np.float32), "max": np.ones((3, 1, 1), np.float32),
        "q01": np.full((3, 1, 1), 0.01, np.float32), "q99": np.full((3, 1, 1), 0.99, np.float32),
        "q10": np.full((3, 1, 1), 0.1, np.float32), "q90": np.full((3, 1, 1), 0.9, np.float32),
        "count": np.array([10000], np.int64),
    }


def build(out: Path, height: int, width: int, cameras: list[str], n_action_steps: int | None,
          chunk_size: int, coeff: float | None, seed: int, small: bool, norm_mode: str) -> None:
    from lerobot.configs import FeatureType, NormalizationMode, PolicyFeature
    from lerobot.policies.act.configuration_act import ACTConfig
    from lerobot.policies.act.modeling_act import ACTPolicy
    from lerobot.policies.factory import make_pre_post_processors

    torch.manual_seed(seed)
    inputs = {"observation.state": PolicyFeature(type=FeatureType.STATE, shape=(6,))}
    for cam in cameras:
        inputs[f"observation.images.{cam}"] = PolicyFeature(type=FeatureType.VISUAL,
                                                            shape=(3, height, width))
    outputs = {"action": PolicyFeature(type=FeatureType.ACTION, shape=(6,))}
    if n_action_steps is None:
        n_action_steps = 1 if coeff is not None else chunk_size
    mode = NormalizationMode(norm_mode)
    kw = dict(
        input_features=inputs,
        output_features=outputs,
        chunk_size=chunk_size,
        n_action_steps=n_action_steps,
        temporal_ensemble_coeff=coeff,
        pretrained_backbone_weights=None,
        device="cpu",
        normalization_mapping={"VISUAL": NormalizationMode.MEAN_STD, "STATE": mode, "ACTION": mode},
    )
    if small:
        kw.update(dim_model=64, n_heads=2, dim_feedforward=128, n_encoder_layers=1,
                  n_decoder_layers=1, use_vae=False, latent_dim=8)
    cfg = ACTConfig(**kw)
    policy = ACTPolicy(cfg)
    policy.eval()
    stats = {"observation.state": vector_stats(STATE_MEAN, STATE_STD),
             "action": vector_stats(ACTION_MEAN, ACTION_STD)}
    for cam in cameras:
        stats[f"observation.images.{cam}"] = image_stats()
    out.mkdir(parents=True, exist_ok=True)
    policy.save_pretrained(out)
    pre, post = make_pre_post_processors(cfg, dataset_stats=stats)
    pre.save_pretrained(out)
    post.save_pretrained(out)
    n = sum(p.numel() for p in policy.parameters())
    print(f"act_random: {out} ({n / 1e6:.1f} M params, cameras {cameras} at {height}x{width}, "
          f"chunk {chunk_size}, n_action_steps {n_action_steps}, temporal_ensemble_coeff {coeff}, "
          f"{'small' if small else 'default'} transformer, {norm_mode})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--height", type=int, required=True)
    ap.add_argument("--width", type=int, required=True)
    ap.add_argument("--cameras", default="head,wrist")
    ap.add_argument("--n-action-steps", type=int, default=None,
                    help="default: chunk size, or 1 with temporal ensembling")
    ap.add_argument("--chunk-size", type=int, default=100)
    ap.add_argument("--temporal-ensemble-coeff", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--small", action="store_true", help="small transformer (tests)")
    ap.add_argument("--norm-mode", default="MEAN_STD",
                    choices=["MEAN_STD", "MIN_MAX", "QUANTILES", "QUANTILE10", "IDENTITY"])
    a = ap.parse_args(argv)
    cameras = [c for c in a.cameras.split(",") if c]
    if not cameras:
        print("act_random: --cameras names no camera (ACT needs at least one)", file=sys.stderr)
        return 1
    build(a.out, a.height, a.width, cameras, a.n_action_steps, a.chunk_size,
          a.temporal_ensemble_coeff, a.seed, a.small, a.norm_mode)
    return 0


if __name__ == "__main__":
    sys.exit(main())
