#!/usr/bin/env python3
"""LeRobot side of the trainer's ACT parity tests (trainer/tests/act_lerobot.rs).

    lerobot_ref.py make OUT_DIR [--seed S] [--height H --width W]
        A random LeRobot ACT (LeRobot 0.6.1 classes, VAE on, dropout 0 so the
        training path is deterministic up to the latent noise) saved with
        `save_pretrained` into OUT_DIR/pretrained, and OUT_DIR/io.safetensors:
        normalised inputs (state, one image per camera, action chunk, is_pad) and
        LeRobot's outputs: `actions_eval` (inference path, latent 0) and
        `mu`, `log_sigma_x2` (VAE posterior of the training path).

    lerobot_ref.py check PRETRAINED_DIR IO.safetensors
        Loads PRETRAINED_DIR with ACTPolicy.from_pretrained(strict=True), runs the
        inference path on IO's inputs and compares with IO's `actions_rust`;
        prints the max abs error and exits 1 above 1e-4.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from safetensors.torch import load_file, save_file

CAMERAS = ["observation.images.head", "observation.images.wrist"]


def make(out: Path, seed: int, h: int, w: int) -> None:
    from lerobot.configs import FeatureType, PolicyFeature
    from lerobot.policies.act.configuration_act import ACTConfig
    from lerobot.policies.act.modeling_act import ACTPolicy

    torch.manual_seed(seed)
    inputs = {"observation.state": PolicyFeature(type=FeatureType.STATE, shape=(6,))}
    for c in CAMERAS:
        inputs[c] = PolicyFeature(type=FeatureType.VISUAL, shape=(3, h, w))
    cfg = ACTConfig(
        input_features=inputs,
        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(6,))},
        chunk_size=10, n_action_steps=10, dim_model=64, n_heads=4, dim_feedforward=128,
        n_encoder_layers=2, n_decoder_layers=1, n_vae_encoder_layers=2, latent_dim=8,
        dropout=0.0, pretrained_backbone_weights=None, device="cpu",
    )
    policy = ACTPolicy(cfg)
    # Give the frozen BatchNorm buffers non-trivial values so folding is exercised.
    with torch.no_grad():
        for name, buf in policy.named_buffers():
            if "backbone" in name and name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
            elif "backbone" in name and name.endswith("running_mean"):
                buf.normal_(0.0, 0.1)
            elif "backbone" in name and (name.endswith(".weight") or name.endswith(".bias")):
                buf.normal_(1.0 if name.endswith(".weight") else 0.0, 0.1)
    policy.save_pretrained(out / "pretrained")
    b = 2
    io = {"state": torch.randn(b, 6), "action": torch.randn(b, 10, 6)}
    pad = torch.zeros(b, 10, dtype=torch.bool)
    pad[0, 7:] = True
    pad[1, 3:] = True
    io["is_pad"] = pad.to(torch.uint8)
    for i, _ in enumerate(CAMERAS):
        io[f"image{i}"] = torch.randn(b, 3, h, w)
    batch = {"observation.state": io["state"], "observation.images": [io[f"image{i}"] for i in range(len(CAMERAS))],
             "action": io["action"], "action_is_pad": pad}
    model = policy.model
    model.eval()
    with torch.no_grad():
        io["actions_eval"], _ = model(batch)
        model.train()
        _, (mu, lsx2) = model(batch)
    io["mu"], io["log_sigma_x2"] = mu, lsx2
    save_file({k: v.contiguous() for k, v in io.items()}, str(out / "io.safetensors"))
    print(f"lerobot_ref make: {out} ({sum(p.numel() for p in policy.parameters())} params)")


def check(pretrained: Path, io_path: Path) -> int:
    from lerobot.policies.act.modeling_act import ACTPolicy

    policy = ACTPolicy.from_pretrained(str(pretrained), strict=True)
    policy.eval()
    io = load_file(str(io_path))
    n_cam = len(policy.config.image_features)
    batch = {"observation.state": io["state"], "observation.images": [io[f"image{i}"] for i in range(n_cam)]}
    with torch.no_grad():
        actions, _ = policy.model(batch)
    err = (actions - io["actions_rust"]).abs().max().item()
    print(f"lerobot_ref check: LeRobot loaded {pretrained} strictly; max abs error vs the Rust forward {err:.3e}")
    return 0 if err <= 1e-4 else 1


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("out", type=Path)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--height", type=int, default=64)
    m.add_argument("--width", type=int, default=96)
    c = sub.add_parser("check")
    c.add_argument("pretrained", type=Path)
    c.add_argument("io", type=Path)
    a = ap.parse_args()
    if a.cmd == "make":
        make(a.out, a.seed, a.height, a.width)
        return 0
    return check(a.pretrained, a.io)


if __name__ == "__main__":
    sys.exit(main())
