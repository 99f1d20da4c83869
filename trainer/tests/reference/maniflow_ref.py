#!/usr/bin/env python3
"""Independent plain-PyTorch reference of the trainer's ManiFlow model.

Written from trainer/docs/MODEL.md (the exact contract) and shared/design/MANIFLOW.md
(section 4, the training objective). State-dict names equal the safetensors keys:
`model.` + upstream DiTX keys, `obs_encoder.` for the observation encoder.

    maniflow_ref.py forward   --config X.toml --weights W.safetensors --inputs IN.safetensors --out OUT.safetensors
    maniflow_ref.py make-case --config X.toml --seed S --batch B --out-weights W --out-inputs IN
    maniflow_ref.py bench     --config X.toml --batch B --steps N [--threads 2] [--device cuda] [--autocast bf16]
    maniflow_ref.py infer-bench --config X.toml --steps N [--iters K] [--device cuda]
"""
import argparse
import copy
import json
import math
import resource
import sys
import time
import tomllib

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------- config helpers
def load_config(path):
    with open(path, "rb") as f:
        return tomllib.load(f)


def camera_modality(key):
    return key.rsplit(".", 1)[-1]


def feature_size(n):
    """Stride-32 ResNet arithmetic: conv1 (7, s2, p3), maxpool (3, s2, p1), 3 stride-2 stages."""
    n = (n + 6 - 7) // 2 + 1
    for _ in range(4):
        n = (n + 2 - 3) // 2 + 1
    return n


def uses_tactile(cfg, taxels):
    return cfg["encoder"]["tactile"] == "taxels" and taxels > 0


def modality_map(cfg, taxels):
    """[(modality, start, end)] over context tokens; empty in `concat` fusion (one fused token)."""
    m, e = cfg["model"], cfg["encoder"]
    if m["fusion"] != "tokens":
        return []
    to, (h, w) = m["n_obs_steps"], (feature_size(s) for s in e["image_size"])
    out, n = [], 0
    entries = [(camera_modality(k), to * h * w) for k in e["cameras"]]
    entries += [("tactile", to)] if uses_tactile(cfg, taxels) else []
    entries += [("proprio", to)]
    for name, count in entries:
        out.append((name, n, n + count))
        n += count
    return out


def context_dims(cfg, state_dim, taxels):
    m, e = cfg["model"], cfg["encoder"]
    if m["fusion"] == "tokens":
        return modality_map(cfg, taxels)[-1][2], e["cond_dim"]
    per_step = 8 * e["resnet_width"] * len(e["cameras"]) + (taxels if uses_tactile(cfg, taxels) else 0) + state_dim
    return 1, m["n_obs_steps"] * per_step


# ----------------------------------------------------------------------------- observation encoder
def gn(c):
    return nn.GroupNorm(c // 16, c, eps=1e-5, affine=True)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), gn(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), gn(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), gn(cout))

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNetGN(nn.Module):
    def __init__(self, width, blocks):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, width, 7, 2, 3, bias=False), gn(width)
        cin = width
        for s, nb in enumerate(blocks):
            cout = width * 2**s
            layer = [BasicBlock(cin if b == 0 else cout, cout, 2 if (s > 0 and b == 0) else 1) for b in range(nb)]
            self.add_module(f"layer{s + 1}", nn.Sequential(*layer))
            cin = cout
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x):  # (N, 3, H, W) in [0, 1] -> (N, 8w, h, w')
        x = (x - self.mean) / self.std
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class Part(nn.Module):
    """Holder so that names read `obs_encoder.<m>.backbone.*` / `obs_encoder.<m>.proj.*`."""

    def __init__(self, **mods):
        super().__init__()
        for k, v in mods.items():
            if v is not None:
                self.add_module(k, v)


class ObsEncoder(nn.Module):
    def __init__(self, cfg, state_dim, taxels):
        super().__init__()
        e, m = cfg["encoder"], cfg["model"]
        self.cams, self.state_key, self.tactile_key = list(e["cameras"]), e["state_key"], e["tactile_key"]
        self.tokens, self.use_tactile = m["fusion"] == "tokens", uses_tactile(cfg, taxels)
        c, dc = 8 * e["resnet_width"], e["cond_dim"]
        lin = (lambda n: nn.Linear(n, dc)) if self.tokens else (lambda n: None)
        for key in self.cams:
            name = camera_modality(key)
            assert name not in ("tactile", "proprio"), f"camera modality name {name!r} is reserved"
            self.add_module(name, Part(backbone=ResNetGN(e["resnet_width"], e["resnet_blocks"]), proj=lin(c)))
        if self.tokens:
            if self.use_tactile:
                self.tactile = Part(proj=lin(taxels))
            self.proprio = Part(proj=lin(state_dim))

    def forward(self, obs):
        state = obs[self.state_key]
        b, to = state.shape[:2]
        parts = []
        for key in self.cams:
            cam = getattr(self, camera_modality(key))
            f = cam.backbone(obs[key].flatten(0, 1))  # (B*To, C, h, w)
            n, c = f.shape[:2]
            if self.tokens:  # cells row-major, step-major tokens
                parts.append(cam.proj(f.flatten(2).transpose(1, 2).reshape(b, -1, c)))
            else:
                parts.append(f.mean((2, 3)).reshape(b, to, c))
        if self.tokens:
            if self.use_tactile:
                parts.append(self.tactile.proj(obs[self.tactile_key]))
            parts.append(self.proprio.proj(state))
            return torch.cat(parts, 1)
        if self.use_tactile:
            parts.append(obs[self.tactile_key])
        parts.append(state)
        # upstream TimmObsEncoder: each key's (B, To, d) flattened to (B, To*d), keys concatenated
        return torch.cat([x.reshape(b, 1, -1) for x in parts], -1)


# ----------------------------------------------------------------------------- DiTX
class SinEmb(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, s):
        half = self.dim // 2
        f = torch.exp(-torch.arange(half, dtype=torch.float64) * (math.log(10000.0) / (half - 1))).to(s)
        a = s[:, None] * f[None]
        return torch.cat([a.sin(), a.cos()], -1)


def time_encoder(et, d):
    return nn.Sequential(SinEmb(et), nn.Linear(et, 4 * et), nn.Mish(), nn.Linear(4 * et, d))


def heads(x, h):  # (B, T, D) -> (B, H, T, hd)
    b, t, d = x.shape
    return x.reshape(b, t, h, d // h).transpose(1, 2)


def merge(o):  # (B, H, T, hd) -> (B, T, D)
    b, h, t, hd = o.shape
    return o.transpose(1, 2).reshape(b, t, h * hd)


def attend(q, k, v, p, training):
    prob = torch.softmax((q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1]), -1)
    return F.dropout(prob, p, training) @ v


def out_gate(d, h, gate_type):
    return {"none": None, "headwise": nn.Linear(d, h), "elementwise": nn.Linear(d, d)}[gate_type]


def apply_gate(o, gate, gate_type, hin):
    if gate is None:
        return o
    g = torch.sigmoid(gate(hin))
    if gate_type == "headwise":  # (B, T, H) broadcast over hd
        return o * g.transpose(1, 2)[..., None]
    b, t, h, hd = o.shape[0], o.shape[2], o.shape[1], o.shape[3]
    return o * g.reshape(b, t, h, hd).transpose(1, 2)  # element j gates head j // hd, channel j % hd


class SelfAttn(nn.Module):
    def __init__(self, d, h, gate_type, p):
        super().__init__()
        self.h, self.p, self.gate_type = h, p, gate_type
        self.in_proj_weight = nn.Parameter(nn.init.xavier_uniform_(torch.empty(3 * d, d)))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d))
        self.out_proj = nn.Linear(d, d)
        self.gate = out_gate(d, h, gate_type)

    def forward(self, hin):
        q, k, v = (heads(z, self.h) for z in F.linear(hin, self.in_proj_weight, self.in_proj_bias).chunk(3, -1))
        o = apply_gate(attend(q, k, v, self.p, self.training), self.gate, self.gate_type, hin)
        return self.out_proj(merge(o))


class CrossAttn(nn.Module):
    def __init__(self, d, h, qkv_bias, qk_norm, gate_type, n_modalities, p):
        super().__init__()
        self.h, self.p, self.gate_type = h, p, gate_type
        self.q, self.kv, self.proj = nn.Linear(d, d, qkv_bias), nn.Linear(d, 2 * d, qkv_bias), nn.Linear(d, d)
        self.q_norm = nn.LayerNorm(d // h, eps=1e-5) if qk_norm else None
        self.k_norm = nn.LayerNorm(d // h, eps=1e-5) if qk_norm else None
        self.gate = out_gate(d, h, gate_type)
        self.modality_gate = nn.Parameter(torch.zeros(n_modalities, h)) if n_modalities else None

    def forward(self, hin, ctx, token_modality):
        q = heads(self.q(hin), self.h)
        k, v = (heads(z, self.h) for z in self.kv(ctx).chunk(2, -1))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.modality_gate is not None:  # gamma (L, H) -> (1, H, L, 1)
            v = v * torch.sigmoid(self.modality_gate[token_modality]).t()[None, :, :, None]
        o = apply_gate(attend(q, k, v, self.p, self.training), self.gate, self.gate_type, hin)
        return self.proj(merge(o))


class Mlp(nn.Module):
    def __init__(self, din, dh, dout):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(din, dh), nn.Linear(dh, dout)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def modulate(y, sh, sc):
    return y * (1 + sc) + sh


class Block(nn.Module):
    def __init__(self, m, gate_type, n_modalities):
        super().__init__()
        d, h, p = m["n_emb"], m["n_head"], m["p_drop_attn"]
        self.self_attn = SelfAttn(d, h, gate_type, p)
        self.cross_attn = CrossAttn(d, h, m["qkv_bias"], m["qk_norm"], gate_type, n_modalities, p)
        self.mlp = Mlp(d, 4 * d, d)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 9 * d))

    def forward(self, x, c, ctx, token_modality):
        sh1, sc1, g1, sh2, sc2, g2, sh3, sc3, g3 = self.adaLN_modulation(c)[:, None].chunk(9, -1)
        ln = lambda y: F.layer_norm(y, y.shape[-1:], eps=1e-6)
        x = x + g1 * self.self_attn(modulate(ln(x), sh1, sc1))
        x = x + g2 * self.cross_attn(modulate(ln(x), sh2, sc2), ctx, token_modality)
        return x + g3 * self.mlp(modulate(ln(x), sh3, sc3))


class RMSNorm(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class FinalLayer(nn.Module):
    def __init__(self, d, da):
        super().__init__()
        self.norm_final, self.ffn_final = RMSNorm(d), Mlp(d, d, da)

    def forward(self, x):
        return self.ffn_final(self.norm_final(x))


class DiTX(nn.Module):
    def __init__(self, cfg, action_dim, ctx_dim, mmap):
        super().__init__()
        m = cfg["model"]
        d, t, et, to = m["n_emb"], m["horizon"], m["time_embed_dim"], m["n_obs_steps"]
        gate_type = m["gate_type"] if m["use_gate_attn"] else "none"
        n_mod = len(mmap) if (m["use_gate_attn"] and m["fusion"] == "tokens") else 0
        self.input_emb = nn.Linear(action_dim, d)
        self.pos_emb = nn.Parameter(torch.zeros(1, t, d))
        self.vis_cond_obs_emb = nn.Linear(ctx_dim, d)
        self.vis_cond_pos_embed = nn.Parameter(torch.zeros(1, m["visual_cond_len"] * to, d))
        self.flow_timestep_encoder = time_encoder(et, d)
        self.flow_target_t_encoder = time_encoder(et, d)
        self.timestep_target_t_adaptor = nn.Linear(2 * d, d)
        self.blocks = nn.ModuleList(Block(m, gate_type, n_mod) for _ in range(m["n_layer"]))
        self.final_layer = FinalLayer(d, action_dim)
        idx = [i for i, (_, s, e) in enumerate(mmap) for _ in range(s, e)]
        self.register_buffer("token_modality", torch.tensor(idx, dtype=torch.long), persistent=False)

    def cond(self, context):
        return self.vis_cond_obs_emb(context) + self.vis_cond_pos_embed[:, : context.shape[1]]

    def forward(self, x_t, t, target_t, context):
        c = self.timestep_target_t_adaptor(
            torch.cat([self.flow_timestep_encoder(t), self.flow_target_t_encoder(target_t)], -1))
        x = self.input_emb(x_t) + self.pos_emb[:, : x_t.shape[1]]
        ctx = self.cond(context)
        for blk in self.blocks:
            x = blk(x, c, ctx, self.token_modality)
        return self.final_layer(x)


class ManiFlow(nn.Module):
    def __init__(self, cfg, action_dim, state_dim, taxels, mmap):
        super().__init__()
        self.cfg, self.mmap = cfg, mmap
        self.obs_encoder = ObsEncoder(cfg, state_dim, taxels)
        self.model = DiTX(cfg, action_dim, context_dims(cfg, state_dim, taxels)[1], mmap)

    def encode(self, obs):
        return self.obs_encoder(obs)

    def velocity(self, x_t, t, target_t, context):
        return self.model(x_t, t, target_t, context)


# ----------------------------------------------------------------------------- API
def build(cfg, action_dim, state_dim, taxels, mmap=None):
    taxels = taxels if uses_tactile(cfg, taxels) else 0
    return ManiFlow(cfg, action_dim, state_dim, taxels, modality_map(cfg, taxels) if mmap is None else mmap)


@torch.no_grad()
def random_weights(module, seed, scale=1.0):
    """Every tensor random (zero-init ones included) with a scale that keeps activations O(1)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        r = torch.randn(p.shape, generator=g) * scale
        leaf = name.rsplit(".", 1)[-1]
        if "modality_gate" in leaf:
            v = r
        elif leaf in ("pos_emb", "vis_cond_pos_embed"):
            v = 0.5 * r
        elif p.dim() == 1:  # norm affine weight ~ 1, biases ~ 0.2
            v = 1 + 0.2 * r if leaf == "weight" else 0.2 * r
        elif p.dim() == 4:  # conv (kaiming fan_in)
            v = r * math.sqrt(2.0 / p[0].numel())
        else:  # linear (out, in)
            v = r / math.sqrt(p.shape[1])
        p.copy_(v)
    return module


def save(module, path):
    save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, path)


def load(path, module=None):
    sd = load_file(path)
    if module is not None:
        module.load_state_dict(sd, strict=True)
    return sd


# ----------------------------------------------------------------------------- training (MANIFLOW.md section 4)
def sample_t(n, sampler, g):
    u = torch.rand(n, generator=g)
    if sampler == "beta":  # 0.999 * Beta(1, 1.5) by inversion
        return 0.999 * (1 - u ** (2.0 / 3.0))
    if sampler == "uniform":
        return u
    raise NotImplementedError(f"time_sampler {sampler!r} (reference has beta, uniform)")


def training_loss(net, ema, obs, actions, cfg, g):
    tr, b = cfg["train"], actions.shape[0]
    absolute = tr["target_t"] == "absolute"
    nf, nc = int(math.floor(tr["flow_batch_ratio"] * b)), int(math.floor((1 - tr["flow_batch_ratio"]) * b))
    nc = min(nc, b - nf)
    ctx = net.encode(obs)
    loss = actions.new_zeros(())
    if nf > 0:
        x1 = actions[:nf]
        x0 = torch.randn(x1.shape, generator=g)
        t = sample_t(nf, tr["time_sampler"], g)
        x_t = (1 - t)[:, None, None] * x0 + t[:, None, None] * x1
        pred = net.velocity(x_t, t, t if absolute else torch.zeros_like(t), ctx[:nf])
        loss = loss + F.mse_loss(pred, x1 - x0)
    if nc > 0:
        x1, cctx = actions[nf:nf + nc], ctx[nf:nf + nc]
        x0 = torch.randn(x1.shape, generator=g)
        t = torch.randint(0, tr["ct_discrete_steps"], (nc,), generator=g).float() / tr["ct_discrete_steps"]
        dt = torch.rand(nc, generator=g)
        t2 = torch.clamp(t + dt, max=1.0)
        e = lambda s: s[:, None, None]
        x_t, x_t2 = (1 - e(t)) * x0 + e(t) * x1, (1 - e(t2)) * x0 + e(t2) * x1
        with torch.no_grad():
            v_e = ema.velocity(x_t2, t2, t2 + dt if absolute else dt, cctx.detach())
            target = (x_t2 + (1 - e(t2)) * v_e - x_t) / (1 - e(t))
        pred = net.velocity(x_t, t, t + dt if absolute else dt, cctx)
        loss = loss + F.mse_loss(pred, target)
    return loss


def ema_decay(k, max_decay):
    s = max(0, k - 1)
    return min(max(1 - (1 + s) ** -0.75, 0.0), max_decay)


@torch.no_grad()
def ema_update(ema, net, k, max_decay):
    d = ema_decay(k, max_decay)
    torch._foreach_lerp_(list(ema.parameters()), list(net.parameters()), 1 - d)
    for be, bn in zip(ema.buffers(), net.buffers()):
        be.copy_(bn)


# ----------------------------------------------------------------------------- CLI
def random_inputs(cfg, batch, action_dim, state_dim, taxels, seed):
    g = torch.Generator().manual_seed(seed)
    m, e = cfg["model"], cfg["encoder"]
    to, (hh, ww) = m["n_obs_steps"], e["image_size"]
    inp = {k: torch.rand(batch, to, 3, hh, ww, generator=g) for k in e["cameras"]}
    inp[e["state_key"]] = torch.randn(batch, to, state_dim, generator=g)
    if uses_tactile(cfg, taxels):
        inp[e["tactile_key"]] = torch.randn(batch, to, taxels, generator=g)
    inp["x_t"] = torch.randn(batch, m["horizon"], action_dim, generator=g)
    inp["t"] = torch.rand(batch, generator=g)
    inp["target_t"] = torch.rand(batch, generator=g)
    return inp


def cmd_make_case(a):
    cfg = load_config(a.config)
    da = a.action_dim or cfg["model"].get("action_dim", 0) or 6
    net = random_weights(build(cfg, da, a.state_dim, a.taxels), a.seed, a.scale)
    save(net, a.out_weights)
    save_file(random_inputs(cfg, a.batch, da, a.state_dim, a.taxels, a.seed + 1), a.out_inputs)
    taxels = a.taxels if uses_tactile(cfg, a.taxels) else 0
    print("modality_map " + ";".join(f"{n} {s} {e}" for n, s, e in net.mmap))
    print("context_dims %d %d" % context_dims(cfg, a.state_dim, taxels))


def cmd_forward(a):
    cfg = load_config(a.config)
    e = cfg["encoder"]
    inp = load_file(a.inputs)
    taxels = inp[e["tactile_key"]].shape[-1] if e["tactile"] == "taxels" else 0
    net = build(cfg, inp["x_t"].shape[-1], inp[e["state_key"]].shape[-1], taxels)
    load(a.weights, net)
    net.eval()
    with torch.no_grad():
        ctx = net.encode(inp)
        vel = net.velocity(inp["x_t"], inp["t"], inp["target_t"], ctx)
    save_file({"context": ctx.contiguous(), "velocity": vel.contiguous()}, a.out)


def cmd_bench(a):
    """Training steps/s of this reference in PyTorch eager on `--device`, the same
    step as `maniflow-train bench` (random data, flow + consistency loss with the
    EMA target, backward, clip, AdamW, EMA update); `--autocast bf16` wraps the
    forward and loss in torch.autocast(dtype=bfloat16) on CUDA."""
    cfg = load_config(a.config)
    tr = cfg["train"]
    da = cfg["model"].get("action_dim", 0) or 6
    dev = torch.device(a.device)
    torch.manual_seed(tr["seed"])
    net = random_weights(build(cfg, da, 6, 32), tr["seed"], 0.5).to(dev)
    net.train()
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    decay, no_decay = [], []
    for n, p in net.named_parameters():
        plain = p.dim() < 2 or "pos_emb" in n or "pos_embed" in n
        (no_decay if tr.get("no_decay_norm_bias") and plain else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tr["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=tr["lr"], betas=tuple(tr["betas"]), eps=tr["eps"])
    inp = random_inputs(cfg, a.batch, da, 6, 32, tr["seed"] + 2)
    obs = {k: v.to(dev) for k, v in inp.items() if k not in ("x_t", "t", "target_t")}
    g = torch.Generator(device=dev).manual_seed(tr["seed"] + 1)
    torch.set_default_device(dev)
    actions = torch.rand(a.batch, cfg["model"]["horizon"], da, generator=g) * 2 - 1
    use_amp = a.autocast == "bf16" and dev.type == "cuda"

    # Upstream's TimmObsEncoder applies its torchvision transforms to each camera's (B*To, 3, H, W)
    # batch in every forward (one random draw per call): crop 95 % + resize back, rotation +-5 deg,
    # colour jitter. Timed here when the config augments, as the trainer's step augments too.
    augment = None
    if cfg["encoder"].get("augment", False):
        import torchvision.transforms as T
        h = cfg["encoder"]["image_size"][0]
        augment = nn.Sequential(T.RandomCrop(int(h * 0.95)), T.Resize(h, antialias=True),
                                T.RandomRotation((-5.0, 5.0)), T.ColorJitter(0.3, 0.4, 0.5, 0.08))
    prof = [0.0] * 5
    clock = [time.perf_counter()]

    def lap(i):
        if a.profile:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            prof[i] += now - clock[0]
            clock[0] = now

    def step(k):
        clock[0] = time.perf_counter()
        o = obs
        if augment is not None:
            o = dict(obs)
            for key in cfg["encoder"]["cameras"]:
                x = obs[key]
                o[key] = augment(x.flatten(0, 1)).view(x.shape)
        lap(0)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
            loss = training_loss(net, ema, o, actions, cfg, g)
        lap(1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        lap(2)
        if tr.get("grad_clip", 0) > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), tr["grad_clip"])
        opt.step()
        lap(3)
        ema_update(ema, net, k, tr["ema_max_decay"])
        lap(4)
        return loss.item()

    for k in (1, 2):
        step(k)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    prof[:] = [0.0] * len(prof)  # the warm-up steps are not profiled
    t0 = time.perf_counter()
    for k in range(3, 3 + a.steps):
        loss = step(k)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    assert math.isfinite(loss), f"non-finite loss {loss}"
    if a.profile:
        names = ["augmentation", "forward (encoder + loss)", "backward", "clip + AdamW", "EMA update"]
        total = sum(prof)
        print(f"reference profile of one step ({a.steps} steps, mean):", file=sys.stderr)
        for n, v in zip(names, prof):
            print(f"  {1e3 * v / a.steps:8.1f} ms  {100 * v / max(total, 1e-12):5.1f} %  {n}", file=sys.stderr)
        print(f"  {1e3 * total / a.steps:8.1f} ms  total", file=sys.stderr)
    print(json.dumps({"steps_per_s": a.steps / dt, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "batch": a.batch, "config": cfg.get("name") or a.config, "threads": torch.get_num_threads(),
                      "device": str(dev), "autocast": a.autocast if use_amp else "off"}))


def cmd_infer_bench(a):
    """Inference latency of this reference in PyTorch eager on `--device`:
    batch 1, the encoder once and `--steps` Euler steps of the velocity net
    (what the runtime's engine does per chunk, minus image preprocessing),
    p50/p99 over `--iters` chunks after a warm-up."""
    cfg = load_config(a.config)
    da = cfg["model"].get("action_dim", 0) or 6
    dev = torch.device(a.device)
    net = random_weights(build(cfg, da, 6, 32), 0, 0.5).to(dev).eval()
    inp = random_inputs(cfg, 1, da, 6, 32, 1)
    obs = {k: v.to(dev) for k, v in inp.items() if k not in ("x_t", "t", "target_t")}
    absolute = cfg["train"]["target_t"] == "absolute"
    times = []
    with torch.no_grad():
        for it in range(a.warmup + a.iters):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            ctx = net.encode(obs)
            x = torch.randn(1, cfg["model"]["horizon"], da, device=dev)
            dt = 1.0 / a.steps
            for i in range(a.steps):
                t = torch.full((1,), i * dt, device=dev)
                tt = t + dt if absolute else torch.full((1,), dt, device=dev)
                x = x + dt * net.velocity(x, t, tt, ctx)
            x.cpu()
            if it >= a.warmup:
                times.append(time.perf_counter() - t0)
    times.sort()
    q = lambda f: times[min(len(times) - 1, int(f * len(times)))] * 1e3
    print(json.dumps({"impl": "PyTorch eager", "device": str(dev), "steps": a.steps, "p50_ms": q(0.5), "p99_ms": q(0.99),
                      "iters": a.iters, "config": cfg.get("name") or a.config}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("forward")
    for k in ("config", "weights", "inputs", "out"):
        f.add_argument(f"--{k}", required=True)
    c = sub.add_parser("make-case")
    for k in ("config", "out-weights", "out-inputs"):
        c.add_argument(f"--{k}", required=True)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--batch", type=int, default=2)
    c.add_argument("--action-dim", type=int, default=0, help="default: config's action_dim, else 6")
    c.add_argument("--state-dim", type=int, default=6)
    c.add_argument("--taxels", type=int, default=32)
    c.add_argument("--scale", type=float, default=1.0)
    b = sub.add_parser("bench")
    b.add_argument("--config", required=True)
    b.add_argument("--batch", type=int, default=None)
    b.add_argument("--steps", type=int, default=10)
    b.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    b.add_argument("--autocast", default="off", choices=("off", "bf16"))
    b.add_argument("--profile", action="store_true", help="time each phase of the step (stderr)")
    ib = sub.add_parser("infer-bench")
    ib.add_argument("--config", required=True)
    ib.add_argument("--steps", type=int, default=1)
    ib.add_argument("--iters", type=int, default=100)
    ib.add_argument("--warmup", type=int, default=10)
    ib.add_argument("--device", default="cpu")
    for q in (f, c, b, ib):
        q.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.cmd == "bench" and a.batch is None:
        a.batch = load_config(a.config)["train"]["batch_size"]
    {"forward": cmd_forward, "make-case": cmd_make_case, "bench": cmd_bench, "infer-bench": cmd_infer_bench}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
