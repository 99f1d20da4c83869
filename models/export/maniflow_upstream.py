#!/usr/bin/env python3
"""Read an upstream ManiFlow image-policy checkpoint for `maniflow-train import`.

    python models/export/maniflow_upstream.py CHECKPOINT OUT_DIR [--config SIDE.yaml] [--weights ema|model]

`maniflow-train import` runs this script (embedded in the binary); it can also be run by
hand to inspect what an import would do. Upstream is geyan21/ManiFlow_Policy
(`ManiFlowTransformerImagePolicy`, `TimmObsEncoder` with the R3M ResNet, DiTX).

CHECKPOINT is one of
- a `.ckpt` as upstream's workspace writes it (`torch.save(payload, pickle_module=dill)`;
  payload = {"cfg": the hydra DictConfig, "state_dicts": {"model", "ema_model", "optimizer"},
  "pickles": {"global_step", "epoch", ...}}). A pickle runs code when loaded: import only
  checkpoints you trust.
- a `.safetensors` policy state dict (`policy.state_dict()`: `model.*`, `obs_encoder.*` and,
  optionally, `normalizer.params_dict.*`) with a side file for the config: `--config FILE`,
  else `<stem>.yaml` next to it, else `.hydra/config.yaml` of the run directory above it
  (what hydra writes). The side file may carry the normaliser as a `normalizer:` section
  ({action: {scale, offset, input_stats: {min, max, mean, std}}, agent_pos: ...}) when the
  state dict has no `normalizer.*` tensors.

OUT_DIR receives
- `weights.safetensors`: the weights to deploy (EMA model when the checkpoint has one and
  `--weights ema`, the default), renamed to the trainer's names (trainer/docs/MODEL.md);
- `online.safetensors`: the online model, for continued training (same as weights.safetensors
  when the checkpoint has only one set);
- `import.json`: the derived config, the observation dims, the normalisation in the runtime's
  manifest form, and where everything came from.

Every dimension comes from the tensors; the config gives what tensors cannot (heads, the
number of observation steps, the training settings) and is cross-checked against them. Any
problem stops with one line on stderr (exit 1) naming the file and the tensor or field.
"""
import argparse
import ast
import json
import operator
import re
import sys
from pathlib import Path


class ImportError_(Exception):
    pass


def fail(msg):
    raise ImportError_(msg)


# ---------------------------------------------------------------- loading

def safe_eval(expr):
    """Hydra's `${eval:'...'}` resolver upstream registers, restricted to arithmetic."""
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.USub: operator.neg,
           ast.Pow: operator.pow, ast.Mod: operator.mod}

    def ev(n):
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.Constant) and isinstance(n.value, (int, float)):
            return n.value
        if isinstance(n, ast.BinOp) and type(n.op) in ops:
            return ops[type(n.op)](ev(n.left), ev(n.right))
        if isinstance(n, ast.UnaryOp) and type(n.op) in ops:
            return ops[type(n.op)](ev(n.operand))
        raise ValueError(f"eval resolver: only arithmetic is supported, got {expr!r}")

    return ev(ast.parse(str(expr), mode="eval"))


def register_resolvers():
    from omegaconf import OmegaConf
    for name, fn in (("eval", safe_eval), ("now", lambda fmt="": "")):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def load_ckpt(path):
    import torch
    try:
        import dill as pickle_module
    except ModuleNotFoundError:
        import pickle as pickle_module
    try:
        with open(path, "rb") as f:
            payload = torch.load(f, map_location="cpu", weights_only=False, pickle_module=pickle_module)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is the file's
        fail(f"{path}: not a readable upstream checkpoint ({type(e).__name__}: {e})")
    if not isinstance(payload, dict):
        fail(f"{path}: payload is a {type(payload).__name__}, expected upstream's dict with cfg/state_dicts/pickles")
    for k in ("cfg", "state_dicts"):
        if k not in payload:
            fail(f"{path}: payload has no `{k}` (keys: {sorted(payload)}); not an upstream workspace checkpoint")
    sds = payload["state_dicts"]
    if "model" not in sds:
        fail(f"{path}: state_dicts has no `model` (keys: {sorted(sds)})")
    pickles = payload.get("pickles", {})

    def unpickle(key):
        if key not in pickles:
            return None
        try:
            return pickle_module.loads(pickles[key])
        except Exception:  # noqa: BLE001
            return None

    return {
        "cfg": payload["cfg"],
        "model": dict(sds["model"]),
        "ema_model": dict(sds["ema_model"]) if sds.get("ema_model") is not None else None,
        "global_step": unpickle("global_step"),
        "epoch": unpickle("epoch"),
        "side_normalizer": None,
    }


def side_file_for(path, given):
    if given:
        p = Path(given)
        if not p.is_file():
            fail(f"--config {p}: no such file")
        return p
    for c in (path.with_suffix(".yaml"), path.parent / ".hydra" / "config.yaml",
              path.parent.parent / ".hydra" / "config.yaml"):
        if c.is_file():
            return c
    fail(f"{path}: a bare state dict needs its config: pass --config FILE (upstream's hydra "
         f"config.yaml), or put it at {path.with_suffix('.yaml')}")


def load_safetensors(path, config):
    from omegaconf import OmegaConf
    from safetensors.torch import load_file
    try:
        sd = load_file(str(path))
    except Exception as e:  # noqa: BLE001
        fail(f"{path}: not a readable safetensors file ({e})")
    side = side_file_for(path, config)
    try:
        cfg = OmegaConf.load(side)
    except Exception as e:  # noqa: BLE001
        fail(f"{side}: not a readable YAML config ({e})")
    side_norm = None
    if "normalizer" in cfg:
        side_norm = OmegaConf.to_container(cfg.normalizer, resolve=True)
    return {"cfg": cfg, "model": sd, "ema_model": None, "global_step": None, "epoch": None,
            "side_normalizer": side_norm, "side_file": str(side)}


# ---------------------------------------------------------------- config

def get(cfg, dotted, origin, default=None, required=True):
    from omegaconf import OmegaConf
    cur = cfg
    for part in dotted.split("."):
        try:
            has = part in cur
        except Exception:  # noqa: BLE001
            has = False
        if not has:
            if required:
                fail(f"{origin}: config has no `{dotted}`")
            return default
        try:
            cur = cur[part]
        except Exception as e:  # noqa: BLE001 - an interpolation that does not resolve
            fail(f"{origin}: config field `{dotted}` does not resolve ({e})")
    if OmegaConf.is_config(cur):
        return OmegaConf.to_container(cur, resolve=True)
    return cur


TIME_SAMPLERS = {"beta": "beta", "uniform": "uniform", "lognorm": "logit-normal",
                 "mode": "mode", "cosmap": "cosmap"}


# ---------------------------------------------------------------- tensors

def shape(sd, key, origin):
    if key not in sd:
        fail(f"{origin}: tensor `{key}` is missing")
    return list(sd[key].shape)


def count_indexed(sd, prefix):
    idx = set()
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    for k in sd:
        m = pat.match(k)
        if m:
            idx.add(int(m.group(1)))
    n = len(idx)
    if idx and idx != set(range(n)):
        fail(f"`{prefix}N`: indices {sorted(idx)} are not 0..{n - 1}")
    return n


def camera_backbone_prefix(sd, key, origin):
    base = f"obs_encoder.key_model_map.{key}."
    for mid in ("convnet.", "module.convnet."):
        if base + mid + "conv1.weight" in sd:
            return base + mid
    if any(k.startswith(base) for k in sd):
        fail(f"{origin}: camera `{key}`: `{base}*` is not an R3M ResNet (no `{base}convnet.conv1.weight`); "
             "only obs_encoder.model_name = r3m is supported")
    fail(f"{origin}: camera `{key}` of shape_meta has no weights (`{base}convnet.*`)")


IMAGES = "observation.images."


def camera_keys(rgb, camera_map, origin):
    """The dataset key of each upstream rgb key (`observation.images.<key>` unless `--camera
    UP=KEY` says otherwise), in upstream's order, and the modality name our encoder gives it."""
    unknown = sorted(set(camera_map) - set(rgb))
    if unknown:
        fail(f"--camera {unknown[0]}=...: {origin} has no rgb key `{unknown[0]}` (its rgb keys: {', '.join(rgb)})")
    cams = [camera_map.get(k, IMAGES + k) for k in rgb]
    for k, key in zip(rgb, cams):
        name = key[len(IMAGES):]
        if not key.startswith(IMAGES) or not name or "." in name:
            fail(f"--camera {k}={key}: a camera's dataset key is {IMAGES}<name> (one name, no dots)")
    if len(set(cams)) != len(cams):
        fail(f"--camera: two upstream cameras map to one dataset key ({', '.join(cams)})")
    return cams, {k: key[len(IMAGES):] for k, key in zip(rgb, cams)}


def map_names(sd, short, origin):
    """Upstream policy state dict -> (our names -> tensor), refusing anything unknown.
    `short`: upstream rgb key -> our camera's modality name (the key's last part)."""
    out, unknown = {}, []
    prefixes = {camera_backbone_prefix(sd, k, origin): f"obs_encoder.{m}.backbone." for k, m in short.items()}
    for name, t in sd.items():
        if name.startswith("normalizer."):
            continue
        if name.startswith("model."):
            if name.startswith(("model.vis_norm.", "model.lang_", "model.language_")):
                fail(f"{origin}: `{name}`: language conditioning / pre-norm modality are not supported")
            out[name] = t
            continue
        for up, ours in prefixes.items():
            if name.startswith(up):
                rest = name[len(up):]
                if rest.endswith(("running_mean", "running_var", "num_batches_tracked")):
                    fail(f"{origin}: `{name}`: the camera backbone has BatchNorm (a pretrained R3M); "
                         "this trainer's backbone is GroupNorm (upstream's use_group_norm with pretrained: false)")
                out[ours + rest] = t
                break
        else:
            unknown.append(name)
    if unknown:
        fail(f"{origin}: {len(unknown)} tensors this importer does not know, e.g. {unknown[:5]}")
    return {k: v.detach().to("cpu").float().contiguous() for k, v in out.items()}


def resnet_layout(sd, prefix, origin):
    width = shape(sd, prefix + "conv1.weight", origin)[0]
    blocks = [count_indexed(sd, f"{prefix}layer{s}.") for s in (1, 2, 3, 4)]
    if 0 in blocks:
        fail(f"{origin}: `{prefix}layer*`: stage block counts {blocks}; every stage needs at least one block")
    if any(k.startswith(prefix) and ".conv3." in k for k in sd):
        fail(f"{origin}: `{prefix}`: Bottleneck blocks (ResNet-50) are not supported; ResNet-18/34 only")
    return width, blocks


# ---------------------------------------------------------------- normaliser

def to_list(x):
    import torch
    if isinstance(x, torch.Tensor):
        return [float(v) for v in x.detach().flatten().tolist()]
    return [float(v) for v in (x if isinstance(x, (list, tuple)) else [x])]


def normalizer_params(run, origin):
    """{field: {scale, offset, min, max, mean, std}} from the state dict or the side file."""
    sd = run["model"]
    pre = "normalizer.params_dict."
    fields = {}
    for k, v in sd.items():
        if k.startswith(pre):
            rest = k[len(pre):]
            field, _, leaf = rest.partition(".")
            leaf = leaf.replace("input_stats.", "")
            fields.setdefault(field, {})[leaf] = to_list(v)
    if fields:
        return fields, f"{origin} (normalizer.params_dict.*)"
    side = run.get("side_normalizer")
    if side:
        for field, p in side.items():
            d = {"scale": to_list(p.get("scale", [])), "offset": to_list(p.get("offset", []))}
            for s, v in (p.get("input_stats") or {}).items():
                d[s] = to_list(v)
            fields[field] = d
        return fields, f"{run['side_file']} (normalizer:)"
    fail(f"{origin}: no normaliser statistics: neither `normalizer.params_dict.*` tensors nor a "
         "`normalizer:` section in the side file")


def close(a, b):
    return all(abs(x - y) <= 1e-5 * max(1.0, abs(x), abs(y)) for x, y in zip(a, b)) and len(a) == len(b)


def to_manifest_norm(field, p, dim, where):
    """Upstream LinearNormalizer params -> the runtime's normalisation (exact, or refused)."""
    scale, offset = p.get("scale"), p.get("offset")
    if scale is None or offset is None:
        fail(f"{where}: normaliser `{field}` lacks scale/offset")
    if all(s == 1.0 for s in scale) and all(o == 0.0 for o in offset):
        return {"mode": "identity"}, "identity"
    if len(scale) != dim:
        fail(f"{where}: normaliser `{field}`.scale has {len(scale)} values, the feature has {dim}")
    lo, hi = p.get("min"), p.get("max")
    if lo and hi and len(lo) == dim:
        s2, o2 = [], []
        for a, b in zip(lo, hi):
            r = b - a
            if r < 1e-4:  # upstream's range_eps: constant dims shifted, not scaled
                s2.append(1.0)
                o2.append(-a)
            else:
                s2.append(2.0 / r)
                o2.append(-1.0 - 2.0 * a / r)
        if close(s2, scale) and close(o2, offset):
            return {"mode": "limits", "min": lo, "max": hi}, "limits"
    mean, std = p.get("mean"), p.get("std")
    if mean and std and len(mean) == dim:
        std1 = [1.0 if s < 1e-4 else s for s in std]  # upstream leaves constant dims unscaled
        if close([1.0 / s for s in std1], scale) and close([-m / s for m, s in zip(mean, std1)], offset):
            return {"mode": "mean_std", "mean": mean, "std": std1, "eps": 0.0}, "gaussian"
    fail(f"{where}: normaliser `{field}`: scale/offset match neither upstream's `limits` nor its "
         "`gaussian` fit of the stored statistics (fit_offset=False or edited?); not supported")


# ---------------------------------------------------------------- main

def derive(run, origin, weights_choice, camera_map=None):
    camera_map = camera_map or {}
    cfg = run["cfg"]
    register_resolvers()
    target = str(get(cfg, "policy._target_", origin, default="", required=False))
    if target and not target.endswith("ManiFlowTransformerImagePolicy"):
        fail(f"{origin}: policy._target_ = {target}: only the image policy "
             "(maniflow.policy.maniflow_image_policy.ManiFlowTransformerImagePolicy) is supported; "
             "the runtime has no point-cloud input")
    if get(cfg, "policy.language_conditioned", origin, default=False, required=False):
        fail(f"{origin}: policy.language_conditioned = true is not supported")
    if str(get(cfg, "policy.block_type", origin, default="DiTX", required=False)) != "DiTX":
        fail(f"{origin}: policy.block_type must be DiTX")
    enc = get(cfg, "policy.obs_encoder", origin)
    if str(enc.get("model_name")) != "r3m":
        fail(f"{origin}: policy.obs_encoder.model_name = {enc.get('model_name')!r}: only r3m is supported "
             "(upstream's robotwin/adroit image configs)")
    shape_meta = get(cfg, "shape_meta", origin)
    to = int(get(cfg, "n_obs_steps", origin))
    horizon_cfg = int(get(cfg, "horizon", origin))
    n_action_cfg = int(get(cfg, "n_action_steps", origin))
    n_head = int(get(cfg, "policy.n_head", origin))

    obs = shape_meta.get("obs", {})
    rgb = sorted(k for k, a in obs.items() if a.get("type", "low_dim") == "rgb")
    low = sorted(k for k, a in obs.items() if a.get("type", "low_dim") == "low_dim" and not a.get("ignore_by_policy", False))
    skipped = sorted(k for k in obs if k not in rgb and k not in low)
    if not rgb:
        fail(f"{origin}: shape_meta.obs has no rgb key")
    if len(low) != 1:
        fail(f"{origin}: shape_meta.obs has low_dim keys {low}; exactly one (the robot state) is supported")
    state_up = low[0]
    state_dim = int(obs[state_up]["shape"][0])
    image_shapes = {tuple(obs[k]["shape"]) for k in rgb}
    if len(image_shapes) != 1:
        fail(f"{origin}: rgb keys have different shapes {sorted(image_shapes)}")
    c, h, w = next(iter(image_shapes))
    if c != 3:
        fail(f"{origin}: rgb shape {(c, h, w)} is not 3-channel")

    sd = run["model"]
    ema = run["ema_model"]
    use = ema if (ema is not None and weights_choice == "ema") else sd
    which = "ema_model" if use is ema else "model"
    n_layer = count_indexed(use, "model.blocks.")
    _, horizon, n_emb = shape(use, "model.pos_emb", origin)
    action_dim = shape(use, "model.input_emb.weight", origin)[1]
    out_dim = shape(use, "model.final_layer.ffn_final.fc2.weight", origin)[0]
    if out_dim != action_dim:
        fail(f"{origin}: model.final_layer.ffn_final.fc2.weight outputs {out_dim}, input_emb takes {action_dim}")
    dc = shape(use, "model.vis_cond_obs_emb.weight", origin)[1]
    vcl = shape(use, "model.vis_cond_pos_embed", origin)[1]
    if vcl % to:
        fail(f"{origin}: model.vis_cond_pos_embed has {vcl} rows, not a multiple of n_obs_steps {to}")
    te = shape(use, "model.flow_timestep_encoder.1.weight", origin)[1]
    tte = shape(use, "model.flow_target_t_encoder.1.weight", origin)[1]
    if te != tte:
        fail(f"{origin}: timestep ({te}) and target-t ({tte}) embedding widths differ; the trainer has one time_embed_dim")
    if horizon != horizon_cfg:
        fail(f"{origin}: config horizon {horizon_cfg} but model.pos_emb has {horizon} rows")
    if n_emb % n_head:
        fail(f"{origin}: policy.n_head {n_head} does not divide n_emb {n_emb}")
    qkv_bias = "model.blocks.0.cross_attn.q.bias" in use
    qk_norm = "model.blocks.0.cross_attn.q_norm.weight" in use
    if qk_norm and shape(use, "model.blocks.0.cross_attn.q_norm.weight", origin)[0] != n_emb // n_head:
        fail(f"{origin}: cross_attn.q_norm has {shape(use, 'model.blocks.0.cross_attn.q_norm.weight', origin)[0]} "
             f"values but n_emb / n_head = {n_emb // n_head} (policy.n_head wrong?)")
    mlp = shape(use, "model.blocks.0.mlp.fc1.weight", origin)[0]
    if mlp != 4 * n_emb:
        fail(f"{origin}: model.blocks.0.mlp.fc1.weight is {mlp} wide; the trainer's DiTX has mlp_ratio 4 ({4 * n_emb})")
    widths = [resnet_layout(use, camera_backbone_prefix(use, k, origin), origin) for k in rgb]
    if len({(wd, tuple(b)) for wd, b in widths}) != 1:
        fail(f"{origin}: camera backbones differ in width/blocks {widths}")
    width, blocks = widths[0]
    expect_dc = to * (8 * width * len(rgb) + state_dim)
    if dc != expect_dc:
        fail(f"{origin}: model.vis_cond_obs_emb.weight takes {dc} inputs, but n_obs_steps {to} x "
             f"({8 * width} x {len(rgb)} cameras + {state_dim} state) = {expect_dc}")

    cams, short = camera_keys(rgb, camera_map, origin)
    weights = map_names(use, short, origin)
    online = map_names(sd, short, origin)

    norm_fields, where = normalizer_params(run, origin)
    if "action" not in norm_fields:
        fail(f"{where}: no normaliser for `action` (fields: {sorted(norm_fields)})")
    normalization, modes = {}, {}
    normalization["action"], modes["action"] = to_manifest_norm("action", norm_fields["action"], action_dim, where)
    if state_up in norm_fields:
        normalization["observation.state"], modes[state_up] = to_manifest_norm(state_up, norm_fields[state_up], state_dim, where)
    else:
        normalization["observation.state"], modes[state_up] = {"mode": "identity"}, "absent (identity)"
    for k, key in zip(rgb, cams):
        if k in norm_fields:
            n, m = to_manifest_norm(k, norm_fields[k], 3, where)
            if n["mode"] != "identity":
                fail(f"{where}: image normaliser `{k}` is {m}; the runtime feeds images in [0, 1] (identity) only")
        normalization[key] = {"mode": "identity"}
        modes[k] = "identity"

    def train_get(dotted, default):
        return get(cfg, dotted, origin, default=default, required=False)

    sampler = str(train_get("policy.sample_t_mode_flow", "beta"))
    if sampler not in TIME_SAMPLERS:
        fail(f"{origin}: policy.sample_t_mode_flow = {sampler!r} is not one of {sorted(TIME_SAMPLERS)}")
    notes = []
    ema_cfg = train_get("ema", {}) or {}
    if ema_cfg and (float(ema_cfg.get("power", 0.75)) != 0.75 or float(ema_cfg.get("inv_gamma", 1.0)) != 1.0):
        notes.append(f"ema power/inv_gamma {ema_cfg.get('power')}/{ema_cfg.get('inv_gamma')}: the trainer's EMA uses 0.75/1.0")
    if skipped:
        notes.append(f"shape_meta keys not used by the image policy: {skipped}")
    notes.append("upstream applies its image transforms (random crop + resize, rotation, colour jitter) at "
                 "inference too; the runtime does not (deterministic, as for our own policies)")
    n_exec = min(n_action_cfg, horizon - (to - 1))
    if n_exec != n_action_cfg:
        notes.append(f"n_action_steps {n_action_cfg} from step To-1 = {to - 1} of a {horizon}-step chunk executes {n_exec} (python slicing)")
    train = {
        "lr": float(train_get("optimizer.lr", 1e-4)),
        "betas": [float(b) for b in train_get("optimizer.betas", [0.9, 0.95])],
        "eps": float(train_get("optimizer.eps", 1e-8)),
        "weight_decay": float(train_get("optimizer.weight_decay", 1e-3)),
        "warmup_steps": int(train_get("training.lr_warmup_steps", 500)),
        "batch_size": int(train_get("dataloader.batch_size", 128)),
        "seed": int(train_get("training.seed", 0)),
        "flow_batch_ratio": float(train_get("policy.flow_batch_ratio", 0.75)),
        "time_sampler": TIME_SAMPLERS[sampler],
        "target_t": str(train_get("policy.sample_target_t_mode", "relative")),
        "ct_discrete_steps": int(train_get("policy.denoise_timesteps", 10)),
        "sample_steps": int(train_get("policy.num_inference_steps", 10)),
        "ema_max_decay": float(ema_cfg.get("max_value", 0.9999)) if ema_cfg else 0.9999,
    }
    return {
        "format": 1,
        "source": {
            "checkpoint": origin,
            "side_file": run.get("side_file"),
            "weights": which,
            "global_step": run["global_step"],
            "epoch": run["epoch"],
            "task_name": train_get("task_name", None),
            "normalizer": where,
            "normalizer_modes": modes,
            "cameras": dict(zip(rgb, cams)),
            "state": {state_up: "observation.state"},
        },
        "model": {
            "horizon": horizon, "n_obs_steps": to, "n_action_steps": n_exec, "action_dim": action_dim,
            "n_layer": n_layer, "n_head": n_head, "n_emb": n_emb, "time_embed_dim": te,
            "qkv_bias": qkv_bias, "qk_norm": qk_norm, "visual_cond_len": vcl // to,
        },
        "encoder": {"cameras": cams, "image_size": [h, w], "resnet_width": width, "resnet_blocks": blocks},
        "train": train,
        "dims": {"cameras": [[k, h, w] for k in cams], "state_key": "observation.state",
                 "state_dim": state_dim, "tactile": None, "action_dim": action_dim},
        "state_names": [f"{state_up}.{i}" for i in range(state_dim)],
        "action_names": [f"action.{i}" for i in range(action_dim)],
        "normalization": normalization,
        "notes": notes,
    }, weights, online


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("out_dir")
    ap.add_argument("--config", help="side file (upstream's hydra config.yaml) for a .safetensors state dict")
    ap.add_argument("--weights", choices=["ema", "model"], default="ema",
                    help="which weights to deploy when the checkpoint has both (default: the EMA model, as upstream evaluates)")
    ap.add_argument("--camera", action="append", default=[], metavar="UPSTREAM=KEY",
                    help="the dataset key of an upstream rgb key (default observation.images.<key>)")
    a = ap.parse_args(argv)
    path = Path(a.checkpoint)
    try:
        camera_map = {}
        for item in a.camera:
            up, sep, key = item.partition("=")
            if not sep or not up or not key:
                fail(f"--camera {item}: expected UPSTREAM=KEY, e.g. head_cam=observation.images.head")
            camera_map[up] = key
        if not path.is_file():
            fail(f"{path}: no such file")
        if path.suffix == ".safetensors":
            run = load_safetensors(path, a.config)
        else:
            run = load_ckpt(path)
        info, weights, online = derive(run, str(path), a.weights, camera_map)
        from safetensors.torch import save_file
        out = Path(a.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_file(weights, str(out / "weights.safetensors"))
        save_file(online, str(out / "online.safetensors"))
        (out / "import.json").write_text(json.dumps(info, indent=2))
    except ImportError_ as e:
        print(f"import: {e}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as e:
        print(f"import: {e.name} is missing in {sys.executable}: `make bootstrap` installs torch, omegaconf, dill "
              "and safetensors into .venv (or set MANIFLOW_PYTHON)", file=sys.stderr)
        return 1
    print(json.dumps({"out": str(a.out_dir), "weights": info["source"]["weights"], "tensors": len(weights)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
