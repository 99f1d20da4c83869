#!/usr/bin/env python3
"""LeRobot ACT on this CPU: PyTorch (LeRobot 0.6.1) vs the runtime (`maniflow bench`),
same checkpoints, same run.

    .venv/bin/python tests/lerobot/bench_act.py [--threads 1] [--iters 30] [--iters-large 8]
        [--maniflow target/debug/maniflow] [--keep DIR]
    make bench-act

For 2 cameras at 96x96 and at 640x480: a random default ACT (ResNet-18, dim_model
512, chunk 100) made with LeRobot's own classes (tests/lerobot/act_random.py) with
n_action_steps = 1, so the model runs on every tick, exported by
models/export/lerobot_act.py. Then, per size:
- LeRobot tick: `predict_action` (uint8 HWC frames -> f32 CHW -> preprocessor ->
  policy.select_action -> postprocessor), what lerobot-record runs per tick;
- LeRobot model: `policy.predict_action_chunk` on an already normalised batch;
- maniflow whole: `maniflow bench` whole path (preprocess + act.onnx + unnormalise);
- maniflow raw: the bare ONNX Runtime session, same tensors (from the same bench).
Latencies are p50 / p99 in ms over the iterations; ratios are LeRobot / maniflow.
Same thread count for both (`--threads`, default 1: the runtime's default).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[2]


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def pct(xs: list[float]) -> tuple[float, float]:
    import numpy as np
    a = np.asarray(xs) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def bench_lerobot(ckpt: Path, iters: int, warmup: int, exporter) -> dict:
    import numpy as np
    import torch
    from lerobot.common.control_utils import predict_action
    from lerobot.configs import FeatureType
    from lerobot.policies.act.modeling_act import ACTPolicy
    from lerobot.policies.factory import make_pre_post_processors

    cfg = exporter.lerobot_config(ckpt)
    cfg.pretrained_backbone_weights = None
    cfg.device = "cpu"
    policy = ACTPolicy.from_pretrained(ckpt, config=cfg, strict=True, local_files_only=True)
    pre, post = make_pre_post_processors(cfg, pretrained_path=str(ckpt))
    policy.reset()
    cams = [k for k, f in cfg.input_features.items() if f.type == FeatureType.VISUAL]
    rng = np.random.default_rng(0)
    ticks = []
    for it in range(warmup + iters):
        obs = {"observation.state": rng.normal(0, 30, 6).astype(np.float32)}
        for k in cams:
            _, h, w = cfg.input_features[k].shape
            obs[k] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        t0 = time.perf_counter()
        predict_action(obs, policy, torch.device("cpu"), pre, post, use_amp=False)
        if it >= warmup:
            ticks.append(time.perf_counter() - t0)
    batch = {"observation.state": torch.randn(1, 6)}
    for k in cams:
        _, h, w = cfg.input_features[k].shape
        batch[k] = torch.randn(1, 3, h, w)
    model = []
    with torch.inference_mode():
        for it in range(warmup + iters):
            t0 = time.perf_counter()
            policy.predict_action_chunk(batch)
            if it >= warmup:
                model.append(time.perf_counter() - t0)
    return {"tick": pct(ticks), "model": pct(model)}


def bench_maniflow(exe: Path, pkg: Path, iters: int, warmup: int, threads: int) -> dict:
    cmd = [str(exe), "bench", str(pkg), "--iters", str(iters), "--warmup", str(warmup),
           "--threads", str(threads), "--json"]
    o = subprocess.run(cmd, capture_output=True, text=True)
    if o.returncode != 0:
        raise SystemExit(f"bench_act: {' '.join(cmd)} failed:\n{o.stderr}")
    r = json.loads(o.stdout)
    ms = lambda blk: (r[blk]["p50_us"] / 1e3, r[blk]["p99_us"] / 1e3)  # noqa: E731
    return {"whole": ms("whole"), "raw": ms("raw_total"), "rss": r["peak_rss_mb"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=30, help="iterations at 96x96")
    ap.add_argument("--iters-large", type=int, default=8, help="iterations at 640x480")
    ap.add_argument("--maniflow", type=Path, default=ROOT / "target/debug/maniflow")
    ap.add_argument("--keep", type=Path, default=None, help="keep checkpoints and packages here")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    a = ap.parse_args(argv)
    if not a.maniflow.is_file():
        print(f"bench_act: {a.maniflow} is missing (cargo build --bin maniflow)", file=sys.stderr)
        return 1
    import torch
    torch.set_num_threads(a.threads)
    os.environ["OMP_NUM_THREADS"] = str(a.threads)

    random = load(ROOT / "tests/lerobot/act_random.py", "act_random")
    exporter = load(ROOT / "models/export/lerobot_act.py", "lerobot_act")
    work = a.keep or Path(tempfile.mkdtemp(prefix="bench-act-"))
    rows = []
    try:
        for label, h, w, iters in [("96x96", 96, 96, a.iters), ("640x480", 480, 640, a.iters_large)]:
            ckpt, pkg = work / f"ckpt-{label}", work / f"act-{label}"
            if not (pkg / "policy.toml").is_file():
                random.build(ckpt, h, w, ["head", "wrist"], 1, 100, None, 0, False, "MEAN_STD")
                if exporter.main([str(ckpt), str(pkg), "--force"]) != 0:
                    return 1
            warmup = max(2, iters // 10)
            print(f"bench_act: {label}: LeRobot, {iters} iterations ...", flush=True)
            lr = bench_lerobot(ckpt, iters, warmup, exporter)
            print(f"bench_act: {label}: maniflow bench, {iters} iterations ...", flush=True)
            mf = bench_maniflow(a.maniflow, pkg, iters, warmup, a.threads)
            rows.append((label, iters, lr, mf))
    finally:
        if a.keep is None:
            import shutil
            shutil.rmtree(work, ignore_errors=True)

    print(f"\nACT, 2 cameras, default architecture (ResNet-18, dim_model 512, chunk 100), "
          f"{a.threads} thread(s), torch {torch.__version__}; p50 / p99 ms")
    hdr = ("| frames | iters | LeRobot tick | LeRobot model | maniflow whole | maniflow raw ORT "
           "| tick / whole (p50) | model / raw (p50) | tick / whole (p99) |")
    print(hdr)
    print("|---" * 9 + "|")
    out = []
    for label, iters, lr, mf in rows:
        f = lambda p: f"{p[0]:.1f} / {p[1]:.1f}"  # noqa: E731
        print(f"| {label} | {iters} | {f(lr['tick'])} | {f(lr['model'])} | {f(mf['whole'])} | "
              f"{f(mf['raw'])} | {lr['tick'][0] / mf['whole'][0]:.2f}x | "
              f"{lr['model'][0] / mf['raw'][0]:.2f}x | {lr['tick'][1] / mf['whole'][1]:.2f}x |")
        out.append({"frames": label, "iters": iters, "threads": a.threads,
                    "lerobot_tick_ms": lr["tick"], "lerobot_model_ms": lr["model"],
                    "maniflow_whole_ms": mf["whole"], "maniflow_raw_ms": mf["raw"],
                    "maniflow_peak_rss_mb": mf["rss"]})
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
