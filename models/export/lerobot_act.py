#!/usr/bin/env python3
"""Export a LeRobot ACT checkpoint to a ManiFlow policy package (kind = "act").

    .venv/bin/python models/export/lerobot_act.py PRETRAINED_DIR OUT_POLICY_DIR \
        [--name N] [--opset 17] [--atol 1e-4] [--dataset-root DIR] [--force]

PRETRAINED_DIR is what LeRobot writes as `pretrained_model/`: config.json
("type": "act"), model.safetensors, and the processor files
policy_{pre,post}processor.json with their
`policy_preprocessor_step_*_normalizer_processor.safetensors` /
`policy_postprocessor_step_*_unnormalizer_processor.safetensors` statistics
(older checkpoints: `normalize_inputs.buffer_*` / `unnormalize_outputs.buffer_*`
tensors inside model.safetensors). Only local files are read (HF_HUB_OFFLINE).

Steps, each stopping with one clear line (exit 1) on a problem:
1. config.json: type "act", n_obs_steps 1, inputs = observation.state + cameras
   (3, H, W), output = action; environment state is refused (the package format
   has no input for it).
2. model.safetensors is loaded strictly into LeRobot's own ACTPolicy: a missing,
   unexpected or mis-shaped tensor is named with the file.
3. act.onnx: a wrapper that reruns ACT.forward's inference branch (latent =
   zeros, no VAE encoder) on LeRobot's submodules, with the per-token list/stack
   replaced by reshapes and the 2D sinusoidal image position embedding (constant
   for a fixed H, W) precomputed as a buffer; torch.onnx.export(dynamo=False),
   eval mode, batch fixed at 1. Inputs `observation.state` (1, Ds) and one
   `observation.images.<name>` (1, 3, H, W) per camera (normalised), output
   `action` (1, chunk_size, Da) (normalised).
4. Parity: random normalised inputs through LeRobot's `predict_action_chunk`
   (eval) and through ONNX Runtime on the written act.onnx; the max abs error
   must be <= --atol.
5. policy.toml (format v1): cameras in config.json's input_features order,
   resize "none" (LeRobot does not resize), color_order "rgb", horizon =
   chunk_size, n_action_steps from the config, start_index 0, normalisation per
   feature from the processors (mode per config normalization_mapping).

The package is written into a temporary directory next to OUT_POLICY_DIR and
renamed into place only when every step passed. The last stdout line is a JSON
summary (parity, cameras, ...).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PRODUCER = "models/export/lerobot_act.py"
PRODUCER_VERSION = "1"

SO101_JOINTS = ["shoulder_pan.pos", "shoulder_lift.pos", "elbow_flex.pos",
                "wrist_flex.pos", "wrist_roll.pos", "gripper.pos"]
SO101_UNITS = ["deg", "deg", "deg", "deg", "deg", "percent"]

STATE = "observation.state"
ENV_STATE = "observation.environment_state"
ACTION = "action"
LEGACY_PREFIXES = ("normalize_inputs.", "normalize_targets.", "unnormalize_outputs.")
# LeRobot NormalizationMode -> (manifest mode, statistic names)
MODES = {
    "MEAN_STD": ("mean_std", ("mean", "std")),
    "MIN_MAX": ("min_max", ("min", "max")),
    "QUANTILES": ("quantiles", ("q01", "q99")),
    "QUANTILE10": ("quantile10", ("q10", "q90")),
    "IDENTITY": ("identity", ()),
}


class ExportError(Exception):
    """One line for the user: what is wrong and where."""


# --------------------------------------------------------------------------- checkpoint

def read_json(path: Path) -> dict:
    if not path.is_file():
        raise ExportError(f"{path}: missing")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ExportError(f"{path}: not valid JSON: {e}") from None


def check_config(src: Path, raw: dict) -> tuple[list[str], list[tuple[int, int]], int, int]:
    """Validate config.json; returns camera keys (in order), their (H, W), Ds, Da."""
    cfg_path = src / "config.json"
    if raw.get("type") != "act":
        raise ExportError(f'{cfg_path}: "type" is {raw.get("type")!r}, this exporter takes "act"')
    if raw.get("n_obs_steps", 1) != 1:
        raise ExportError(f"{cfg_path}: n_obs_steps is {raw.get('n_obs_steps')}, "
                          "ACT packages take exactly 1")
    if "input_features" not in raw or "output_features" not in raw:
        raise ExportError(f"{cfg_path}: no input_features/output_features (a pre-2025 config "
                          "format?); re-save the checkpoint with LeRobot >= 0.3")
    cams, sizes, ds = [], [], None
    for key, f in raw["input_features"].items():
        ftype, shape = f.get("type"), list(f.get("shape", []))
        if ftype == "VISUAL":
            if len(shape) != 3 or shape[0] != 3:
                raise ExportError(f"{cfg_path}: input_features.{key}.shape is {shape}, "
                                  "expected [3, H, W] (colour cameras only)")
            cams.append(key)
            sizes.append((int(shape[1]), int(shape[2])))
        elif ftype == "STATE" and key == STATE:
            if len(shape) != 1:
                raise ExportError(f"{cfg_path}: input_features.{key}.shape is {shape}, expected [Ds]")
            ds = int(shape[0])
        elif ftype == "ENV" or key == ENV_STATE:
            raise ExportError(f"{cfg_path}: input_features.{key} (environment state) is not "
                              "supported: the policy package format has no environment-state input")
        else:
            raise ExportError(f"{cfg_path}: input_features.{key} (type {ftype}) is not supported "
                              f"(ACT inputs: {STATE} and cameras)")
    if not cams:
        raise ExportError(f"{cfg_path}: input_features has no camera (VISUAL feature)")
    if ds is None:
        raise ExportError(f"{cfg_path}: input_features has no {STATE} "
                          "(LeRobot's ACT inference needs it too)")
    outs = raw["output_features"]
    if list(outs) != [ACTION] or outs[ACTION].get("type") != "ACTION" \
            or len(outs[ACTION].get("shape", [])) != 1:
        raise ExportError(f"{cfg_path}: output_features must be exactly {{\"action\": "
                          f"{{type ACTION, shape [Da]}}}}, got {outs}")
    da = int(outs[ACTION]["shape"][0])
    return cams, sizes, ds, da


def lerobot_config(src: Path):
    """`PreTrainedConfig.from_pretrained` on a local directory. LeRobot 0.6.1 writes a
    NamedTemporaryFile(delete=False) per call and never removes it: give it a private
    temporary directory and remove that."""
    from lerobot.configs import PreTrainedConfig

    private = tempfile.mkdtemp(prefix="lerobot-config-")
    saved = tempfile.tempdir
    tempfile.tempdir = private
    try:
        return PreTrainedConfig.from_pretrained(src, local_files_only=True)
    finally:
        tempfile.tempdir = saved
        shutil.rmtree(private, ignore_errors=True)


def load_policy(src: Path):
    """LeRobot's ACTPolicy with model.safetensors loaded strictly; also the raw tensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from lerobot.policies.act.modeling_act import ACTPolicy

    wpath = src / "model.safetensors"
    if not wpath.is_file():
        raise ExportError(f"{wpath}: missing")
    try:
        cfg = lerobot_config(src)
    except Exception as e:  # draccus errors are long; keep the first line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"{src / 'config.json'}: LeRobot cannot parse it: {msg}") from None
    # The checkpoint holds the backbone weights: never fetch torchvision's.
    cfg.pretrained_backbone_weights = None
    cfg.device = "cpu"
    policy = ACTPolicy(cfg)
    try:
        tensors = load_file(str(wpath))
    except (SafetensorError, OSError, ValueError) as e:
        raise ExportError(f"{wpath}: cannot read: {e}") from None
    legacy = {k: v for k, v in tensors.items() if k.startswith(LEGACY_PREFIXES)}
    weights = {k: v for k, v in tensors.items() if not k.startswith(LEGACY_PREFIXES)}
    want = policy.state_dict()
    missing = [k for k in want if k not in weights]
    unexpected = [k for k in weights if k not in want]

    def names(ks):
        return ", ".join(ks[:5]) + (f" (and {len(ks) - 5} more)" if len(ks) > 5 else "")

    if missing:
        raise ExportError(f"{wpath}: {len(missing)} tensor(s) missing for LeRobot's ACTPolicy "
                          f"with this config.json: {names(missing)}")
    if unexpected:
        raise ExportError(f"{wpath}: {len(unexpected)} unexpected tensor(s) for this config.json: "
                          f"{names(unexpected)}")
    for k, v in want.items():
        if tuple(weights[k].shape) != tuple(v.shape):
            raise ExportError(f"{wpath}: tensor {k} has shape {list(weights[k].shape)}, "
                              f"config.json implies {list(v.shape)}")
    policy.load_state_dict(weights, strict=True)
    policy.eval()
    return policy, cfg, legacy


def processor_stats(src: Path, kind: str, legacy: dict, raw_cfg: dict):
    """(stats {feature: {stat: np.ndarray}}, eps, norm_map {TYPE: MODE}, origin) for the
    pre- (`normalizer_processor`) or post-processor (`unnormalizer_processor`)."""
    from safetensors.numpy import load_file

    pipe = "policy_preprocessor" if kind == "normalizer_processor" else "policy_postprocessor"
    jpath = src / f"{pipe}.json"
    state_file, eps, norm_map = None, 1e-8, None
    if jpath.is_file():
        steps = read_json(jpath).get("steps", [])
        step = next((s for s in steps if s.get("registry_name") == kind), None)
        if step is None:
            raise ExportError(f"{jpath}: has no {kind} step")
        c = step.get("config", {})
        eps = float(c.get("eps", eps))
        norm_map = c.get("norm_map")
        if step.get("state_file"):
            state_file = src / step["state_file"]
    else:
        found = sorted(src.glob(f"{pipe}_step_*_{kind}.safetensors"))
        if found:
            state_file = found[0]
    if norm_map is None:
        norm_map = raw_cfg.get("normalization_mapping") or {}
    if state_file is not None:
        if not state_file.is_file():
            raise ExportError(f"{state_file}: missing (named by {jpath.name})")
        flat = load_file(str(state_file))
        origin = state_file
    else:
        # Older checkpoints: normalize_inputs.buffer_<key with _>.<stat> in model.safetensors.
        prefixes = ("normalize_inputs.",) if kind == "normalizer_processor" else \
            ("unnormalize_outputs.", "normalize_targets.")
        flat = {}
        for k, v in legacy.items():
            for p in prefixes:
                if k.startswith(p + "buffer_"):
                    flat.setdefault(k[len(p + "buffer_"):], v.numpy())
        if not flat:
            raise ExportError(
                f"{src}: no normalisation statistics: expected {pipe}.json with "
                f"{pipe}_step_*_{kind}.safetensors, or {prefixes[0]}buffer_* tensors "
                "in model.safetensors")
        origin = src / "model.safetensors"
        eps = 1e-8
    stats: dict[str, dict] = {}
    features = list(raw_cfg["input_features"]) + [ACTION]
    for k, v in flat.items():
        for f in features:
            for spelled in (f, f.replace(".", "_")):
                if k.startswith(spelled + ".") and k.count(".") == spelled.count(".") + 1:
                    stats.setdefault(f, {})[k[len(spelled) + 1:]] = v.reshape(-1).astype("float64")
    return stats, eps, norm_map, origin


def normalization_entry(key: str, ftype: str, length: int, stats, eps: float, norm_map: dict,
                        origin: Path, notes: list[str]) -> dict:
    mode = norm_map.get(ftype, "IDENTITY")
    if mode not in MODES:
        raise ExportError(f"{origin}: normalisation mode {mode!r} for {ftype} features is not "
                          f"supported (supported: {', '.join(MODES)})")
    name, needed = MODES[mode]
    if mode != "IDENTITY" and key not in stats:
        # LeRobot's normaliser passes a feature without statistics through unchanged.
        notes.append(f"{key}: no statistics in {origin.name}, identity (as LeRobot does)")
        return {"mode": "identity"}
    entry: dict = {"mode": name}
    for s in needed:
        if s not in stats[key]:
            raise ExportError(f"{origin}: {key}.{s} is missing ({mode} needs {' and '.join(needed)})")
        v = stats[key][s]
        if v.size != length:
            raise ExportError(f"{origin}: {key}.{s} has {v.size} values, the feature has {length}")
        if not all(math.isfinite(x) for x in v):
            raise ExportError(f"{origin}: {key}.{s} holds NaN or Inf")
        entry[s] = [float(x) for x in v.astype("float32")]
    if needed:
        entry["eps"] = eps
    return entry


def joint_names(key: str, dim: int, dataset_root: Path | None, notes: list[str]):
    if dataset_root is not None:
        info = read_json(dataset_root / "meta" / "info.json")
        names = info.get("features", {}).get(key, {}).get("names")
        if isinstance(names, dict):  # older datasets: {"motors": [...]}
            names = next(iter(names.values()), None)
        if not (isinstance(names, list) and len(names) == dim):
            raise ExportError(f"{dataset_root / 'meta/info.json'}: features.{key}.names is "
                              f"{names!r}, expected {dim} names")
        names = [str(n) for n in names]
        if names == SO101_JOINTS:
            return names, list(SO101_UNITS)
        return names, ["deg"] * dim  # LeRobot position units
    if dim == len(SO101_JOINTS):
        notes.append(f"{key}: names assumed SO-101 (6 dims; pass --dataset-root to read them)")
        return list(SO101_JOINTS), list(SO101_UNITS)
    return [f"joint_{i}" for i in range(dim)], ["unknown"] * dim


# --------------------------------------------------------------------------- export

def make_wrapper(policy, cams: list[str], sizes: list[tuple[int, int]]):
    import torch
    from torch import nn

    act = policy.model
    cfg = policy.config

    class ACTInference(nn.Module):
        """ACT.forward's inference branch (latent = zeros) on LeRobot's submodules,
        with the token list/stack replaced by reshapes and a constant position
        embedding. Inputs: state (1, Ds), then one (1, 3, H, W) per camera."""

        def __init__(self):
            super().__init__()
            self.act = act
            d = cfg.dim_model
            with torch.no_grad():
                pos = [act.encoder_1d_feature_pos_embed.weight.unsqueeze(1)]  # (n1d, 1, D)
                for (h, w) in sizes:
                    fmap = act.backbone(torch.zeros(1, 3, h, w))["feature_map"]
                    pe = act.encoder_cam_feat_pos_embed(fmap).to(fmap.dtype)  # (1, D, h', w')
                    pos.append(pe.flatten(2).permute(2, 0, 1))  # (h'w', 1, D), "(h w) b c"
                self.register_buffer("pos", torch.cat(pos, 0).clone(), persistent=False)
                self.register_buffer("latent", torch.zeros(1, cfg.latent_dim), persistent=False)
                self.register_buffer("decoder_in", torch.zeros(cfg.chunk_size, 1, d),
                                     persistent=False)

        def forward(self, state, *images):
            a = self.act
            tokens = [a.encoder_latent_input_proj(self.latent).unsqueeze(0),      # (1, 1, D)
                      a.encoder_robot_state_input_proj(state).unsqueeze(0)]       # (1, 1, D)
            for img in images:
                f = a.backbone(img)["feature_map"]
                f = a.encoder_img_feat_input_proj(f)                             # (1, D, h, w)
                tokens.append(f.flatten(2).permute(2, 0, 1))                     # (hw, 1, D)
            x = torch.cat(tokens, 0)
            enc = a.encoder(x, pos_embed=self.pos)
            dec = a.decoder(self.decoder_in, enc, encoder_pos_embed=self.pos,
                            decoder_pos_embed=a.decoder_pos_embed.weight.unsqueeze(1))
            return a.action_head(dec.transpose(0, 1))                            # (1, T, Da)

    w = ACTInference()
    w.eval()
    return w


def export_onnx(wrapper, args, names, path: Path, opset: int) -> None:
    import onnx
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy exporter on purpose
        torch.onnx.export(wrapper, args, str(path), dynamo=False, opset_version=opset,
                          input_names=names, output_names=[ACTION], do_constant_folding=True)
    onnx.checker.check_model(str(path))


def parity(policy, onnx_path: Path, cams, sizes, ds: int, seed: int, trials: int) -> float:
    import numpy as np
    import onnxruntime as ort
    import torch

    so = ort.SessionOptions()
    so.intra_op_num_threads = torch.get_num_threads()  # as many as PyTorch (OMP_NUM_THREADS)
    sess = ort.InferenceSession(str(onnx_path), sess_options=so, providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    for _ in range(trials):
        batch = {STATE: torch.randn(1, ds, generator=g)}
        for k, (h, w) in zip(cams, sizes):
            batch[k] = torch.randn(1, 3, h, w, generator=g)
        with torch.no_grad():
            ref = policy.predict_action_chunk(batch).numpy()
        got = sess.run([ACTION], {k: v.numpy() for k, v in batch.items()})[0]
        if got.shape != ref.shape:
            raise ExportError(f"{onnx_path.name}: output shape {got.shape}, LeRobot gives {ref.shape}")
        err = float(np.abs(got.astype(np.float64) - ref).max())
        if not math.isfinite(err):
            raise ExportError(f"{onnx_path.name}: non-finite output (LeRobot or ONNX Runtime)")
        worst = max(worst, err)
    return worst


# --------------------------------------------------------------------------- manifest

def toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def toml_val(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        r = repr(v)
        return r if ("." in r or "e" in r or "inf" in r or "nan" in r) else r + ".0"
    if isinstance(v, str):
        return toml_str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_val(x) for x in v) + "]"
    raise TypeError(type(v))


def table(header: str, kv: dict) -> str:
    return f"[{header}]\n" + "".join(f"{k} = {toml_val(v)}\n" for k, v in kv.items())


def manifest(name: str, description: str, cams, sizes, state_names, state_units, action_names,
             action_units, chunk: int, n_action_steps: int, norms: dict, sha: str, notes: str,
             parity_err: float) -> str:
    parts = ["# Written by models/export/lerobot_act.py from a LeRobot ACT checkpoint.\n"
             f"format_version = 1\nkind = \"act\"\nname = {toml_str(name)}\n"
             f"description = {toml_str(description)}\nn_obs_steps = 1\n"]
    for key, (h, w) in zip(cams, sizes):
        parts.append(f"[[inputs.cameras]]\nkey = {toml_str(key)}\nheight = {h}\nwidth = {w}\n"
                     "channels = 3\ncolor_order = \"rgb\"\nresize = \"none\"\n")
    parts.append(table("inputs.state", {"key": STATE, "names": state_names, "units": state_units}))
    parts.append(table("outputs.action", {"key": ACTION, "names": action_names,
                                          "units": action_units, "horizon": chunk,
                                          "n_action_steps": n_action_steps, "start_index": 0}))
    for key, entry in norms.items():
        parts.append(table(f"normalization.{toml_str(key)}", entry))
    parts.append(table("graphs.act", {"file": "act.onnx", "sha256": sha}))
    parts.append(table("producer", {"name": PRODUCER, "version": PRODUCER_VERSION, "notes": notes,
                                    "parity_max_abs_err": float(parity_err)}))
    return "\n".join(parts)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- main

def export(a) -> dict:
    t0 = time.time()
    src: Path = a.pretrained_dir
    if not src.is_dir():
        raise ExportError(f"{src}: not a directory (expected a LeRobot pretrained_model/ directory)")
    raw = read_json(src / "config.json")
    cams, sizes, ds, da = check_config(src, raw)
    if not (src / "model.safetensors").is_file():
        raise ExportError(f"{src / 'model.safetensors'}: missing")
    out: Path = a.out_dir
    if out.exists() and not a.force and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out}: exists and is not empty (pass --force to replace it)")

    import lerobot
    import torch

    policy, cfg, legacy = load_policy(src)
    notes: list[str] = []
    in_stats, in_eps, in_map, in_origin = processor_stats(src, "normalizer_processor", legacy, raw)
    out_stats, out_eps, out_map, out_origin = processor_stats(src, "unnormalizer_processor",
                                                              legacy, raw)
    norms = {}
    for key in cams:
        norms[key] = normalization_entry(key, "VISUAL", 3, in_stats, in_eps, in_map, in_origin, notes)
    norms[STATE] = normalization_entry(STATE, "STATE", ds, in_stats, in_eps, in_map, in_origin, notes)
    norms[ACTION] = normalization_entry(ACTION, "ACTION", da, out_stats, out_eps, out_map,
                                        out_origin, notes)
    state_names, state_units = joint_names(STATE, ds, a.dataset_root, notes)
    action_names, action_units = joint_names(ACTION, da, a.dataset_root, notes)

    chunk, n_exec = int(cfg.chunk_size), int(cfg.n_action_steps)
    coeff = cfg.temporal_ensemble_coeff
    if coeff is not None:
        notes.append(f"temporal_ensemble_coeff {coeff}: run with control.executor = \"ensemble\", "
                     f"control.ensemble_coeff = {coeff} (the manifest has no field for it)")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; the package is an ordinary directory
    try:
        wrapper = make_wrapper(policy, cams, sizes)
        g = torch.Generator().manual_seed(0)
        args = (torch.randn(1, ds, generator=g),) + tuple(
            torch.randn(1, 3, h, w, generator=g) for (h, w) in sizes)
        t1 = time.time()
        export_onnx(wrapper, args, [STATE] + cams, tmp / "act.onnx", a.opset)
        t_export = time.time() - t1
        err = parity(policy, tmp / "act.onnx", cams, sizes, ds, seed=a.seed, trials=a.trials)
        print(f"lerobot_act: parity vs LeRobot predict_action_chunk (normalised actions): "
              f"max abs err {err:.3e} (atol {a.atol:.1e})")
        if not err <= a.atol:
            raise ExportError(f"{src}: exported act.onnx differs from LeRobot by {err:.3e} "
                              f"(max abs, > --atol {a.atol:.1e}); no package written to {out}")
        name = a.name or out.name
        notes_str = "; ".join(
            [f"LeRobot {lerobot.__version__} ACT from {src.resolve()}",
             f"torch {torch.__version__}, opset {a.opset}, batch fixed at 1, latent zeros"] + notes)
        desc = (f"LeRobot ACT ({len(cams)} camera(s) {', '.join(cams)}; chunk {chunk}, "
                f"dim_model {cfg.dim_model}, {cfg.vision_backbone}) exported by {PRODUCER}")
        text = manifest(name, desc, cams, sizes, state_names, state_units, action_names,
                        action_units, chunk, n_exec, norms, sha256(tmp / "act.onnx"), notes_str, err)
        (tmp / "policy.toml").write_text(text)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for n in notes:
        print(f"lerobot_act: note: {n}")
    summary = {"out": str(out), "parity_max_abs_err": err, "atol": a.atol, "cameras": cams,
               "sizes": [list(s) for s in sizes], "chunk_size": chunk,
               "n_action_steps": n_exec, "temporal_ensemble_coeff": coeff,
               "export_s": round(t_export, 2), "total_s": round(time.time() - t0, 2)}
    print(json.dumps(summary))
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pretrained_dir", type=Path, help="LeRobot pretrained_model/ directory")
    ap.add_argument("out_dir", type=Path, help="policy package directory to write")
    ap.add_argument("--name", default=None, help="package name (default: OUT_POLICY_DIR's name)")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--atol", type=float, default=1e-4,
                    help="max abs parity error (normalised actions) to accept")
    ap.add_argument("--seed", type=int, default=0, help="seed of the parity inputs")
    ap.add_argument("--trials", type=int, default=1, help="random parity inputs to try")
    ap.add_argument("--dataset-root", type=Path, default=None,
                    help="LeRobot dataset root: state/action names from meta/info.json")
    ap.add_argument("--force", action="store_true", help="replace OUT_POLICY_DIR if it exists")
    a = ap.parse_args(argv)
    if a.opset < 17:
        print(f"lerobot_act: --opset {a.opset}: needs 17 or later (LayerNormalization)",
              file=sys.stderr)
        return 1
    try:
        export(a)
    except ExportError as e:
        print(f"lerobot_act: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
