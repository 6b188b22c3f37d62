"""DINOv2 (Oquab et al., 2023) as a frozen feature extractor, from weights the user supplies.

A small ViT written out in full (no ``transformers`` at run time) whose state-dict keys are those of
Hugging Face's ``Dinov2Model`` checkpoints (facebook/dinov2-small, -base, -large, -giant), so their
``model.safetensors`` loads with strict=True. Features are the CLS token after the final layernorm
(HF's ``pooler_output``). Nothing is ever downloaded and nothing is unpickled: safetensors only.

    feats = load_dinov2("~/weights/dinov2-small")   # a folder, or a .safetensors file
    feats(images)                                    # (N, C, H, W) in [-1, 1] -> (N, 384) float32
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from genforge.errors import ConfigError, DataError

SIZES = ("small", "base", "large", "giant")  # the hub cache is searched in this order
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULTS = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "mlp_ratio": 4, "patch_size": 14,
            "image_size": 224, "num_channels": 3, "layer_norm_eps": 1e-6, "layerscale_value": 1.0, "hidden_act": "gelu",
            "qkv_bias": True, "use_swiglu_ffn": False, "use_mask_token": True}  # HF Dinov2Config's defaults


class DinoV2(nn.Module):
    """The ViT. ``config`` holds HF ``Dinov2Config`` keys; those missing take its defaults."""

    def __init__(self, config: dict):
        super().__init__()
        c = self.config = _check_config(config)
        self.hidden_size, self.patch_size = c["hidden_size"], c["patch_size"]
        self.embeddings = Embeddings(c)
        self.encoder = nn.ModuleDict({"layer": nn.ModuleList(Block(c) for _ in range(c["num_hidden_layers"]))})
        self.layernorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(pixel_values)
        for block in self.encoder["layer"]:
            x = block(x)
        return self.layernorm(x[:, 0])  # the layernorm is per token: normalising the CLS token alone suffices


class Embeddings(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        d, grid = c["hidden_size"], c["image_size"] // c["patch_size"]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        if c["use_mask_token"]:
            self.mask_token = nn.Parameter(torch.zeros(1, d))  # used in pretraining only; kept so checkpoints load
        self.position_embeddings = nn.Parameter(torch.zeros(1, grid * grid + 1, d))
        conv = nn.Conv2d(c["num_channels"], d, kernel_size=c["patch_size"], stride=c["patch_size"])
        self.patch_embeddings = nn.ModuleDict({"projection": conv})

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embeddings["projection"](pixels)  # (N, D, h, w)
        h, w = x.shape[2:]
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x.flatten(2).transpose(1, 2)], dim=1)
        return x + self.interpolate_pos_encoding(h, w)

    def interpolate_pos_encoding(self, h: int, w: int) -> torch.Tensor:
        """The pretraining grid's position embeddings resized (bicubic, in float32) to an h x w grid,
        exactly as Dinov2Embeddings.interpolate_pos_encoding does in transformers 5.x."""
        pos = self.position_embeddings
        side = math.isqrt(pos.shape[1] - 1)
        if (h, w) == (side, side):
            return pos
        grid = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid.float(), size=(h, w), mode="bicubic", align_corners=False).to(pos.dtype)
        return torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)], dim=1)


class Block(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        d, eps = c["hidden_size"], c["layer_norm_eps"]
        self.norm1, self.norm2 = nn.LayerNorm(d, eps=eps), nn.LayerNorm(d, eps=eps)
        self.attention = Attention(d, c["num_attention_heads"], c["qkv_bias"])
        self.layer_scale1, self.layer_scale2 = LayerScale(d, c["layerscale_value"]), LayerScale(d, c["layerscale_value"])
        self.mlp = SwiGLU(d, c["mlp_ratio"]) if c["use_swiglu_ffn"] else Mlp(d, c["mlp_ratio"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.layer_scale1(self.attention(self.norm1(x)))
        return x + self.layer_scale2(self.mlp(self.norm2(x)))


class Attention(nn.Module):
    def __init__(self, d: int, heads: int, qkv_bias: bool):
        super().__init__()
        self.heads = heads
        self.attention = nn.ModuleDict({k: nn.Linear(d, d, bias=qkv_bias) for k in ("query", "key", "value")})
        self.output = nn.ModuleDict({"dense": nn.Linear(d, d)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = (self.attention[k](x).view(n, t, self.heads, -1).transpose(1, 2) for k in ("query", "key", "value"))
        y = F.scaled_dot_product_attention(q, k, v)
        return self.output["dense"](y.transpose(1, 2).reshape(n, t, d))


class LayerScale(nn.Module):
    def __init__(self, d: int, value: float):
        super().__init__()
        self.lambda1 = nn.Parameter(torch.full((d,), float(value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.lambda1


class Mlp(nn.Module):
    def __init__(self, d: int, ratio: float):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, int(d * ratio)), nn.Linear(int(d * ratio), d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwiGLU(nn.Module):
    """The giant model's feed-forward: two thirds of the MLP width, rounded up to a multiple of 8."""

    def __init__(self, d: int, ratio: float):
        super().__init__()
        hidden = (int(int(d * ratio) * 2 / 3) + 7) // 8 * 8
        self.weights_in, self.weights_out = nn.Linear(d, 2 * hidden), nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.weights_in(x).chunk(2, dim=-1)
        return self.weights_out(F.silu(gate) * up)


class DinoV2Features:
    """``features(images)``: (N, C, H, W) floats in [-1, 1], C = 1 or 3 -> (N, dim) float32 CPU features.
    Images are resized (bicubic, antialiased) to ``resolution`` and normalised with ImageNet statistics."""

    name = "dinov2"

    def __init__(self, model: DinoV2, fingerprint: str, *, resolution: int = 224, batch_size: int = 64,
                 device: torch.device | str = "cpu"):
        if resolution <= 0 or resolution % model.patch_size:
            raise ConfigError(f"DINOv2 resolution {resolution} is not a positive multiple of the patch size "
                              f"{model.patch_size} (224 is the usual choice)")
        if batch_size < 1:
            raise ConfigError(f"DINOv2 batch size must be at least 1, got {batch_size}")
        self.model = model.to(device).eval().requires_grad_(False)
        self.device, self.dim, self.fingerprint = torch.device(device), model.hidden_size, fingerprint
        self.resolution, self.batch_size = resolution, batch_size
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise DataError(f"DINOv2 takes images of shape (N, 1 or 3, H, W), got {tuple(images.shape)}")
        out = [self._batch(images[i:i + self.batch_size]) for i in range(0, len(images), self.batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.dim)

    def _batch(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.to(self.device, torch.float32) + 1) / 2
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[2:] != (self.resolution, self.resolution):
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bicubic", antialias=True,
                              align_corners=False).clamp(0, 1)
        return self.model((x - self.mean) / self.std).float().cpu()


def load_dinov2(path: str | Path | None = None, device: torch.device | str = "cpu", *,
                resolution: int = 224, batch_size: int = 64) -> DinoV2Features:
    """DINOv2 from ``path``: a folder with model.safetensors (+ config.json), or a .safetensors file with or
    without a config.json beside it. Without a config the architecture is read off the tensor shapes, taking
    64-dim attention heads (num_heads = hidden_size / 64), true of every published DINOv2.
    With ``path=None``: $GENFORGE_WEIGHTS/dinov2, then the Hugging Face hub cache (small, base, large, giant)."""
    weights = _find_weights() if path is None else _resolve(Path(path).expanduser())
    try:
        tensors = load_file(weights)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ConfigError(f"{weights} is not a readable safetensors file ({e}); it may be truncated: "
                          "download it again") from None
    tensors = {k: v.float() for k, v in _legacy_names(tensors).items()}
    config_file = weights.parent / "config.json"
    config = _read_json(config_file) if config_file.is_file() else _infer_config(tensors, weights)
    model = DinoV2(config)
    _check_tensors(model, tensors, weights)
    model.load_state_dict(tensors, strict=True)
    return DinoV2Features(model, _sha256(weights), resolution=resolution, batch_size=batch_size, device=device)


def _resolve(path: Path) -> Path:
    expected = "a folder with model.safetensors + config.json, or a .safetensors file"
    if not path.exists():
        raise ConfigError(f"DINOv2 weights {path} do not exist; expected {expected}")
    if path.is_dir():
        if (path / "model.safetensors").is_file():
            return path / "model.safetensors"
        if (path / "pytorch_model.bin").is_file():
            raise ConfigError(_pickle_message(path / "pytorch_model.bin"))
        raise ConfigError(f"no model.safetensors in {path}; expected {expected}")
    if path.suffix in (".bin", ".pt", ".pth", ".ckpt"):
        raise ConfigError(_pickle_message(path))
    return path


def _find_weights() -> Path:
    own = Path(os.environ.get("GENFORGE_WEIGHTS", "~/.cache/genforge/weights")).expanduser() / "dinov2"
    hf_home = os.environ.get("HF_HOME")
    hub = Path(os.environ.get("HF_HUB_CACHE") or (f"{hf_home}/hub" if hf_home else "~/.cache/huggingface/hub")).expanduser()
    pickles = []
    for size in (None, *SIZES):  # a hub folder may hold several snapshots: the newest first
        snapshots = sorted((hub / f"models--facebook--dinov2-{size}" / "snapshots").glob("*"),
                           key=lambda p: p.stat().st_mtime, reverse=True) if size else [own]
        for folder in snapshots:
            if (folder / "model.safetensors").is_file():
                return folder / "model.safetensors"
            pickles += [folder / "pytorch_model.bin"] if (folder / "pytorch_model.bin").is_file() else []
    if pickles:
        raise ConfigError(_pickle_message(pickles[0]))
    raise ConfigError(f"no DINOv2 weights found in {own} nor in {hub}/models--facebook--dinov2-{{{','.join(SIZES)}}}"
                      f"/snapshots/*; pass the path with --weights PATH or put model.safetensors + config.json in {own}")


def _pickle_message(path: Path) -> str:
    return (f"{path} is a pickle checkpoint, and genforge loads safetensors only; convert it once with "
            f"python -c \"import torch; from safetensors.torch import save_file; "
            f"save_file(torch.load('{path}', weights_only=True), '{path.with_name('model.safetensors')}')\"")


def _read_json(path: Path) -> dict:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} is not a readable JSON file: {e}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path} should hold a JSON object (a Hugging Face Dinov2Config)")
    return config


INTEGERS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "patch_size", "image_size", "num_channels")


def _check_config(config: dict) -> dict:
    c = {**DEFAULTS, **{k: v for k, v in config.items() if k in DEFAULTS}}
    problem = None
    if config.get("model_type", "dinov2") != "dinov2":
        problem = f"model_type '{config['model_type']}' (expected 'dinov2')"
    elif c["hidden_act"] != "gelu":
        problem = f"hidden_act '{c['hidden_act']}' (expected 'gelu')"
    elif not all(isinstance(c[k], int) and c[k] > 0 for k in INTEGERS):
        problem = f"{', '.join(INTEGERS)} must be positive integers"
    elif not all(isinstance(c[k], (int, float)) and c[k] > 0 for k in ("mlp_ratio", "layer_norm_eps")):
        problem = "mlp_ratio and layer_norm_eps must be positive numbers"
    elif c["hidden_size"] % c["num_attention_heads"]:
        problem = f"hidden_size {c['hidden_size']} not divisible by num_attention_heads {c['num_attention_heads']}"
    if problem:
        raise ConfigError(f"unsupported DINOv2 config: {problem}")
    return c


def _legacy_names(tensors: dict) -> dict:
    """A state dict saved from a transformers 5 ``Dinov2Model`` in memory -> the checkpoint (hub) names."""
    if not any(".attention.q_proj." in k for k in tensors):
        return tensors
    renames = {".attention.q_proj.": ".attention.attention.query.", ".attention.k_proj.": ".attention.attention.key.",
               ".attention.v_proj.": ".attention.attention.value.", ".attention.o_proj.": ".attention.output.dense.",
               ".mlp.down_proj.": ".mlp.weights_out."}
    out = {}
    for key, value in tensors.items():
        if ".mlp.up_proj." in key:
            continue
        if ".mlp.gate_proj." in key:
            key, value = key.replace("gate_proj", "weights_in"), torch.cat([value, tensors[key.replace("gate", "up")]])
        for old, new in renames.items():
            key = key.replace(old, new)
        out[key] = value
    return out


def _infer_config(t: dict, source: Path) -> dict:
    try:
        hidden = t["embeddings.cls_token"].shape[-1]
        patch = t["embeddings.patch_embeddings.projection.weight"]
        swiglu = "encoder.layer.0.mlp.weights_in.weight" in t
        width = t["encoder.layer.0.mlp." + ("weights_out" if swiglu else "fc1") + ".weight"].shape[1 if swiglu else 0]
        positions = t["embeddings.position_embeddings"].shape[1] - 1
    except KeyError as e:
        raise ConfigError(f"{source} does not hold DINOv2 weights (Hugging Face Dinov2Model names): "
                          f"no tensor {e}") from None
    if hidden % 64 or math.isqrt(positions) ** 2 != positions:
        raise ConfigError(f"cannot infer the DINOv2 architecture of {source} (hidden size {hidden} is not a "
                          f"multiple of the 64-dim heads, or {positions} positions are no square grid); "
                          "put its config.json beside it")
    layers = {k.split(".")[2] for k in t if k.startswith("encoder.layer.")}
    return {"hidden_size": hidden, "num_hidden_layers": len(layers), "num_attention_heads": hidden // 64,
            "patch_size": patch.shape[-1], "num_channels": patch.shape[1], "use_swiglu_ffn": swiglu,
            "image_size": math.isqrt(positions) * patch.shape[-1], "mlp_ratio": width * (1.5 if swiglu else 1) / hidden,
            "qkv_bias": "encoder.layer.0.attention.attention.query.bias" in t, "use_mask_token": "embeddings.mask_token" in t}


def _check_tensors(model: nn.Module, tensors: dict, source: Path) -> None:
    expected = model.state_dict()
    missing, unexpected = sorted(expected.keys() - tensors.keys()), sorted(tensors.keys() - expected.keys())
    if missing or unexpected:
        raise ConfigError(f"{source} does not match DINOv2 (Hugging Face Dinov2Model) weights: {len(missing)} missing "
                          f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})")
    for key, value in expected.items():
        if value.shape != tensors[key].shape:
            raise ConfigError(f"{source}: {key} has shape {tuple(tensors[key].shape)}, but its config expects "
                              f"{tuple(value.shape)}; config.json does not belong to these weights")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]
