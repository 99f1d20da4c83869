#!/usr/bin/env python3
"""Upstream ManiFlow checkpoints for the import tests, written the way upstream writes them.

Upstream's code (geyan21/ManiFlow_Policy) is not installable here and is not copied: this
script rebuilds, from a reading of it, the module tree whose `state_dict()` upstream saves for
`ManiFlowTransformerImagePolicy`:
- `obs_encoder` = TimmObsEncoder with model_name r3m, pretrained false, use_group_norm: per rgb
  key `key_model_map.<key>` = R3M (a torchvision ResNet-18 in `convnet`, fc = Identity, every
  BatchNorm2d replaced by GroupNorm(C // 16 if C % 16 == 0 else C // 8, C)), input in [0, 1]
  normalised with the ImageNet mean/std inside R3M; `key_transform_map.<key>` holds parameter-free
  transforms; features: each rgb key (sorted) `(B*To, 512) -> (B, To*512)`, then each low_dim key
  `(B, To, D) -> (B, To*D)`, concatenated, as ONE context token of width Do;
- `model` = DiTX (the reference DiTX of maniflow_ref.py has upstream's module names);
- `normalizer` = LinearNormalizer: `params_dict.<field>.{scale, offset, input_stats.{min, max,
  mean, std}}`, action fitted in `limits` mode (output [-1, 1], range_eps 1e-4), head_cam and
  agent_pos identity (`create_identity`: one-element tensors).
The `.ckpt` is `torch.save(payload, f, pickle_module=dill)` with payload = {"cfg": the hydra
DictConfig, "state_dicts": {"model", "ema_model", "optimizer"}, "pickles": {"global_step",
"epoch", "_output_dir"} as dill.dumps bytes}, as upstream's workspace `save_checkpoint` does.

    upstream_ckpt.py write  --config YAML --out DIR [--small] [--so101] [--seed S] [--gaussian-state] [--drop NAME]
    upstream_ckpt.py shapes --config YAML --out shapes.json
    upstream_ckpt.py check  --ckpt DIR/latest.ckpt --package PKG [--seed S]
"""
import argparse
import copy
import json
import math
import sys
import tomllib
from pathlib import Path

import dill
import torch
import torch.nn as nn
import torchvision
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "reference"))
import maniflow_ref as ref  # noqa: E402

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def register():
    if not OmegaConf.has_resolver("eval"):
        OmegaConf.register_new_resolver("eval", lambda e: eval(e, {"__builtins__": {}}))  # noqa: S307 - test fixture
    if not OmegaConf.has_resolver("now"):
        OmegaConf.register_new_resolver("now", lambda fmt="": "now")


def load_cfg(path, small, so101=False):
    register()
    cfg = OmegaConf.load(path)
    if small:  # a network the size of a unit test, same structure
        cfg.policy.n_layer, cfg.policy.n_head, cfg.policy.n_emb = 2, 4, 64
        cfg.policy.visual_cond_len = 8
        cfg.policy.diffusion_timestep_embed_dim = cfg.policy.diffusion_target_t_embed_dim = 32
        cfg.robotwin_task.shape_meta.obs.head_cam.shape = [3, 64, 64]
    if so101:  # a task with an SO-101's shapes (6 joints, 96 x 96 head camera), batch 8
        sm = cfg.robotwin_task.shape_meta
        sm.obs.head_cam.shape = [3, 96, 96]
        sm.obs.agent_pos.shape = [6]
        sm.action.shape = [6]
        cfg.dataloader.batch_size = 8
    return cfg


# ----------------------------------------------------------------------------- upstream's module tree
class R3M(nn.Module):
    def __init__(self):
        super().__init__()
        self.convnet = torchvision.models.resnet18(weights=None)
        self.convnet.fc = nn.Identity()
        self.normlayer = torchvision.transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)

    def forward(self, x):  # [0, 1] -> (N, 512)
        return self.convnet(self.normlayer(x))


def group_norm_everywhere(module):
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            c = child.num_features
            setattr(module, name, nn.GroupNorm(c // 16 if c % 16 == 0 else c // 8, c))
        else:
            group_norm_everywhere(child)
    return module


class TimmObsEncoder(nn.Module):
    def __init__(self, shape_meta):
        super().__init__()
        obs = shape_meta["obs"]
        self.rgb_keys = sorted(k for k, a in obs.items() if a.get("type", "low_dim") == "rgb")
        self.low_dim_keys = sorted(k for k, a in obs.items() if a.get("type", "low_dim") == "low_dim")
        self.key_model_map = nn.ModuleDict({k: group_norm_everywhere(R3M()) for k in self.rgb_keys})
        self.key_transform_map = nn.ModuleDict({k: nn.Identity() for k in self.rgb_keys})

    def forward(self, obs):
        feats = []
        b = obs[self.low_dim_keys[0]].shape[0]
        for k in self.rgb_keys:
            img = obs[k]
            feats.append(self.key_model_map[k](img.reshape(-1, *img.shape[2:])).reshape(b, -1))
        for k in self.low_dim_keys:
            feats.append(obs[k].reshape(b, -1))
        return torch.cat(feats, -1)


def field(scale, offset, lo, hi, mean, std):
    p = lambda x: nn.Parameter(torch.as_tensor(x, dtype=torch.float32), requires_grad=False)  # noqa: E731
    return nn.ParameterDict({"scale": p(scale), "offset": p(offset), "input_stats": nn.ParameterDict(
        {"min": p(lo), "max": p(hi), "mean": p(mean), "std": p(std)})})


def fit_limits(x, range_eps=1e-4):
    lo, hi = x.min(0).values, x.max(0).values
    r = hi - lo
    ignore = r < range_eps
    r = torch.where(ignore, torch.full_like(r, 2.0), r)
    scale = 2.0 / r
    offset = -1.0 - scale * lo
    offset = torch.where(ignore, -lo, offset)
    return field(scale, offset, lo, hi, x.mean(0), x.std(0))


def fit_gaussian(x, range_eps=1e-4):
    std = x.std(0)
    scale = 1.0 / torch.where(std < range_eps, torch.ones_like(std), std)
    return field(scale, -x.mean(0) * scale, x.min(0).values, x.max(0).values, x.mean(0), std)


def identity():
    return field([1.0], [0.0], [-1.0], [1.0], [0.0], [1.0])


class LinearNormalizer(nn.Module):
    def __init__(self):
        super().__init__()
        self.params_dict = nn.ParameterDict()


class Policy(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        p = cfg.policy
        sm = OmegaConf.to_container(cfg.shape_meta, resolve=True)
        self.obs_encoder = TimmObsEncoder(sm)
        to = cfg.n_obs_steps
        da = sm["action"]["shape"][0]
        do = sum(512 * to for _ in self.obs_encoder.rgb_keys) + sum(sm["obs"][k]["shape"][0] * to for k in self.obs_encoder.low_dim_keys)
        m = {"n_emb": p.n_emb, "horizon": cfg.horizon, "time_embed_dim": p.diffusion_timestep_embed_dim,
             "n_obs_steps": to, "gate_type": "none", "use_gate_attn": False, "fusion": "concat",
             "visual_cond_len": p.visual_cond_len, "n_layer": p.n_layer, "n_head": p.n_head,
             "qkv_bias": p.qkv_bias, "qk_norm": p.qk_norm, "p_drop_attn": 0.1}
        self.model = ref.DiTX({"model": m}, da, do, [])
        self.normalizer = LinearNormalizer()
        self.to_, self.da, self.do = to, da, do


# ----------------------------------------------------------------------------- commands
@torch.no_grad()
def randomise(policy, seed):
    ref.random_weights(policy.obs_encoder, seed)
    ref.random_weights(policy.model, seed + 1)


def cmd_write(a):
    cfg = load_cfg(a.config, a.small, a.so101)
    torch.manual_seed(a.seed)
    policy = Policy(cfg)
    randomise(policy, a.seed)
    ema = copy.deepcopy(policy)
    randomise(ema, a.seed + 10)  # the EMA model differs from the online one: the importer must pick it
    g = torch.Generator().manual_seed(a.seed + 2)
    sm = OmegaConf.to_container(cfg.shape_meta, resolve=True)
    actions = torch.randn(500, policy.da, generator=g) * torch.linspace(0.2, 3.0, policy.da) + 0.5
    actions[:, 3] = 0.25  # a constant dimension: upstream shifts it without scaling
    state = torch.randn(500, sm["obs"]["agent_pos"]["shape"][0], generator=g) * 2 + 1
    for pol in (policy, ema):
        pd = pol.normalizer.params_dict
        pd["action"] = fit_limits(actions)
        pd["head_cam"] = identity()
        pd["agent_pos"] = fit_gaussian(state) if a.gaussian_state else identity()
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.optimizer.lr)
    payload = {
        "cfg": cfg,
        "state_dicts": {"model": policy.state_dict(), "ema_model": ema.state_dict(), "optimizer": opt.state_dict()},
        "pickles": {"global_step": dill.dumps(1234), "epoch": dill.dumps(56), "_output_dir": dill.dumps("data/outputs/x")},
    }
    out = Path(a.out)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    with open(out / "checkpoints" / "latest.ckpt", "wb") as f:
        torch.save(payload, f, pickle_module=dill)
    # the bare form: the EMA policy's state dict + upstream's hydra config next to it
    from safetensors.torch import save_file
    bare = {k: v.contiguous() for k, v in ema.state_dict().items() if k not in (a.drop or [])}
    save_file(bare, str(out / "policy.safetensors"))
    (out / "policy.yaml").write_text(OmegaConf.to_yaml(cfg))
    print(json.dumps({"tensors": len(policy.state_dict()), "context_width": policy.do}))


def cmd_shapes(a):
    cfg = load_cfg(a.config, False)
    with torch.device("meta"):
        policy = Policy(cfg)
    p = cfg.policy
    shapes = {k: list(v.shape) for k, v in policy.state_dict().items() if not k.startswith("normalizer.")}
    to, horizon = int(cfg.n_obs_steps), int(cfg.horizon)
    settings = {
        "horizon": horizon, "n_obs_steps": to,
        "n_action_steps": min(int(cfg.n_action_steps), horizon - (to - 1)),
        "lr": float(cfg.optimizer.lr), "betas": [float(x) for x in cfg.optimizer.betas],
        "eps": float(cfg.optimizer.eps), "weight_decay": float(cfg.optimizer.weight_decay),
        "warmup_steps": int(cfg.training.lr_warmup_steps), "flow_batch_ratio": float(p.flow_batch_ratio),
        "time_sampler": str(p.sample_t_mode_flow), "target_t": str(p.sample_target_t_mode),
        "ct_discrete_steps": int(p.denoise_timesteps), "sample_steps": int(p.num_inference_steps),
        "ema_max_decay": float(cfg.ema.max_value), "context_width": policy.do,
        "image_size": list(OmegaConf.to_container(cfg.shape_meta, resolve=True)["obs"]["head_cam"]["shape"][1:]),
    }
    Path(a.out).write_text(json.dumps({"shapes": shapes, "settings": settings}, indent=1))


def run_onnx(path, feeds):
    import onnxruntime as ort
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in s.get_inputs()}
    return s.run(None, {k: v.numpy() for k, v in feeds.items() if k in names})[0]


@torch.no_grad()
def cmd_check(a):
    """Upstream's forward with the checkpoint's EMA weights against the imported package."""
    with open(a.ckpt, "rb") as f:
        payload = torch.load(f, map_location="cpu", weights_only=False, pickle_module=dill)
    register()
    cfg = payload["cfg"]
    policy = Policy(cfg)
    policy.normalizer.params_dict.update({k: identity() for k in ("action", "head_cam", "agent_pos")})
    sd = payload["state_dicts"]["ema_model"]
    for k in ("action", "agent_pos"):  # shapes of the fitted fields
        pre = f"normalizer.params_dict.{k}."
        policy.normalizer.params_dict[k] = field(*(sd[pre + n] for n in ("scale", "offset", "input_stats.min", "input_stats.max", "input_stats.mean", "input_stats.std")))
    policy.load_state_dict(sd, strict=True)
    policy.eval()
    sm = OmegaConf.to_container(cfg.shape_meta, resolve=True)
    _, h, w = sm["obs"]["head_cam"]["shape"]
    g = torch.Generator().manual_seed(a.seed)
    b, to, t = 2, policy.to_, int(cfg.horizon)
    img = torch.rand(b, to, 3, h, w, generator=g)
    state = torch.randn(b, to, 14, generator=g) * 2 + 1
    x_t = torch.randn(b, t, policy.da, generator=g)
    tt, target = torch.rand(b, generator=g), torch.rand(b, generator=g)

    def norm(name, x):
        pd = policy.normalizer.params_dict[name]
        return x * pd["scale"] + pd["offset"]

    feats = policy.obs_encoder({"head_cam": img, "agent_pos": norm("agent_pos", state)})
    vis = feats.reshape(b, -1, policy.do)
    vel = policy.model(x_t, tt, target, vis)

    pkg = Path(a.package)
    manifest = tomllib.loads((pkg / "policy.toml").read_text())
    # the runtime normalises the state with the manifest's statistics before encoder.onnx
    snorm = find_norm(manifest, "observation.state")
    ctx = run_onnx(pkg / "encoder.onnx", {"observation.images.head_cam": img, "observation.state": apply_norm(snorm, state)})
    v = run_onnx(pkg / "velocity.onnx", {"x_t": x_t, "t": tt, "target_t": target, "context": torch.from_numpy(ctx)})
    # action unnormalisation: upstream (y - offset) / scale against the manifest's limits
    y = torch.randn(b, t, policy.da, generator=g)
    pd = policy.normalizer.params_dict["action"]
    up = (y - pd["offset"]) / pd["scale"]
    ours = unapply_norm(find_norm(manifest, "action"), y)
    print(json.dumps({
        "context_err": float((torch.from_numpy(ctx) - vis).abs().max()),
        "velocity_err": float((torch.from_numpy(v) - vel).abs().max()),
        "unnormalize_err": float((ours - up).abs().max()),
        "mean_abs_velocity": float(vel.abs().mean()),
        "action_mode": find_norm(manifest, "action")["mode"],
        "state_mode": snorm["mode"],
    }))


def find_norm(manifest, key):
    """`[normalization."<key>"]` of policy.toml."""
    n = manifest.get("normalization", {}).get(key)
    if n is None:
        raise SystemExit(f"policy.toml has no [normalization.{key!r}]")
    return n


def apply_norm(n, x):
    mode = n["mode"]
    if mode == "identity":
        return x
    if mode == "limits":
        lo, hi = torch.tensor(n["min"]), torch.tensor(n["max"])
        r = hi - lo
        return torch.where(r < 1e-4, x - lo, (x - lo) * 2 / r - 1)
    if mode == "mean_std":
        return (x - torch.tensor(n["mean"])) / (torch.tensor(n["std"]) + n.get("eps", 1e-8))
    raise SystemExit(f"unexpected mode {mode}")


def unapply_norm(n, y):
    mode = n["mode"]
    if mode == "limits":
        lo, hi = torch.tensor(n["min"]), torch.tensor(n["max"])
        r = hi - lo
        return torch.where(r < 1e-4, y + lo, (y + 1) * r / 2 + lo)
    raise SystemExit(f"unexpected action mode {mode}")


def main(argv=None):
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("--config", required=True)
    w.add_argument("--out", required=True)
    w.add_argument("--small", action="store_true")
    w.add_argument("--so101", action="store_true", help="6-d state and action, 96 x 96 head camera, batch 8")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--gaussian-state", action="store_true")
    w.add_argument("--drop", action="append", help="leave this tensor out of policy.safetensors (a broken export)")
    s = sub.add_parser("shapes")
    s.add_argument("--config", required=True)
    s.add_argument("--out", required=True)
    c = sub.add_parser("check")
    c.add_argument("--ckpt", required=True)
    c.add_argument("--package", required=True)
    c.add_argument("--seed", type=int, default=3)
    a = ap.parse_args(argv)
    {"write": cmd_write, "shapes": cmd_shapes, "check": cmd_check}[a.cmd](a)


if __name__ == "__main__":
    main()
