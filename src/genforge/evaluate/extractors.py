"""Feature extractors: images -> vectors that the distribution metrics compare.

Distances between generated and real images are measured in a feature space, never in pixels. The
usual choice, Inception-v3 trained on ImageNet, must be downloaded and knows nothing about the user's
data, so genforge trains its own small extractors on the dataset itself, offline, and records which
one produced every score:

    classifier    a small CNN trained on the dataset's labels; features are its penultimate layer
                  (the "auto" choice when the data has labels)
    autoencoder   the same trunk trained without labels to reconstruct images through a 64-d code
                  (the "auto" choice otherwise)
    random        the same trunk with seeded random weights: a second, training-free view
    dinov2        DINOv2 weights the user supplies (see ``dinov2.py``)

Trained extractors are cached per dataset and seed under $GENFORGE_CACHE/extractors, so every run on
the same data is scored with the very same weights (their fingerprint is recorded with each score).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from genforge.errors import ConfigError, RunError
from genforge.io import load_tensors, read_metadata, save_tensors

EXTRACTORS = ("auto", "classifier", "autoencoder", "random", "dinov2")
RECIPE_VERSION = "1"  # bump when a trunk or its training changes: cached weights are then rebuilt
TRAIN_STEPS = 600
BATCH_SIZE = 128
CODE_DIM = 64


class Trunk(nn.Module):
    """Three conv stages and a 2x2 adaptive pool: any image size -> 256 features, ~25k weights."""

    dim = 256

    def __init__(self, channels: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Classifier(nn.Module):
    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.trunk = Trunk(channels)
        self.embed = nn.Sequential(nn.Linear(Trunk.dim, 128), nn.ReLU())
        self.head = nn.Linear(128, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.trunk(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Autoencoder(nn.Module):
    def __init__(self, shape: tuple[int, int, int]):
        from genforge.nets.conv import ConvDecoder

        super().__init__()
        self.trunk = Trunk(shape[0])
        self.code = nn.Linear(Trunk.dim, CODE_DIM)
        self.decoder = ConvDecoder(CODE_DIM, shape, width=16, norm="batch")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.code(self.trunk(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.decoder(self.features(x)))


class RandomFeatures(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.trunk = Trunk(channels)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)


@dataclass
class Extractor:
    """A frozen network and what identifies it; ``extractor(images)`` -> (N, dim) float32 CPU features."""

    name: str
    net: nn.Module
    dim: int
    fingerprint: str  # of the exact weights: results made with different weights never compare
    detail: str  # one line for reports, e.g. "CNN trained on mnist's labels (val accuracy 98.4%)"
    shape: tuple[int, ...]
    device: torch.device
    batch_size: int = 256

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape[1:]) != tuple(self.shape):
            raise ConfigError(f"the {self.name} extractor expects images of shape {tuple(self.shape)}, "
                              f"got {tuple(images.shape[1:])}")
        self.net.eval()
        out = [self.net.features(images[i:i + self.batch_size].to(self.device).float()).float().cpu()
               for i in range(0, len(images), self.batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.dim)

    def info(self) -> dict:
        return {"name": self.name, "fingerprint": self.fingerprint, "dim": self.dim, "detail": self.detail}


def resolve_name(name: str, has_labels: bool) -> str:
    if name not in EXTRACTORS:
        raise ConfigError(f"unknown feature extractor '{name}'; expected one of: {', '.join(EXTRACTORS)}")
    if name == "auto":
        return "classifier" if has_labels else "autoencoder"
    return name


def get_extractor(name: str, prepared, *, seed: int = 0, weights: str | Path | None = None,
                  device: torch.device | str = "cpu", progress: bool = True) -> Extractor:
    """The extractor ``name`` for the image dataset ``prepared`` (a ``genforge.data.Prepared``),
    trained on its training split on first use and cached."""
    from genforge.data.cache import cache_dir

    if prepared.spec.kind != "image":
        raise ConfigError("feature extractors apply to image data")
    device = torch.device(device)
    name = resolve_name(name, prepared.spec.num_classes is not None)
    shape = tuple(prepared.spec.shape)
    if name == "dinov2":
        from genforge.evaluate.dinov2 import load_dinov2

        dino = load_dinov2(weights, device=device)
        return Extractor("dinov2", _DinoAdapter(dino), dino.dim, dino.fingerprint,
                         f"DINOv2 ({dino.dim}-d) from user-supplied weights", shape, device)
    if weights is not None:
        raise ConfigError("--weights applies to --features dinov2 only")
    if name == "classifier" and prepared.spec.num_classes is None:
        raise ConfigError(f"the classifier extractor needs labelled data; {prepared.manifest.get('source', 'this data')} "
                          "has none (use --features autoencoder or random)")
    if name == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = RandomFeatures(shape[0])
        fingerprint = _fingerprint(net)
        return Extractor(name, net.to(device), Trunk.dim, fingerprint,
                         f"randomly initialised CNN (seed {seed})", shape, device)
    path = cache_dir() / "extractors" / f"{name}-{prepared.path.name}-seed{seed}-v{RECIPE_VERSION}.safetensors"
    with torch.random.fork_rng(devices=[]):  # the weights depend on the seed alone, and the caller's RNG is kept
        torch.manual_seed(seed)
        net = Classifier(shape[0], prepared.spec.num_classes) if name == "classifier" else Autoencoder(shape)
        meta = _load_cached(path, net)
        if meta is None:
            meta = _train(name, net, prepared, seed, device, progress)
            save_tensors({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, path, metadata=meta)
    source = prepared.manifest.get("source", "the data")
    if name == "classifier":
        detail = f"CNN trained on {source}'s labels (val accuracy {float(meta['val_accuracy']):.1%})"
        dim = 128
    else:
        detail = f"autoencoder trained on {source} ({CODE_DIM}-d code, val MSE {float(meta['val_mse']):.4f})"
        dim = CODE_DIM
    return Extractor(name, net.to(device).eval(), dim, _fingerprint(net), detail, shape, device)


class _DinoAdapter(nn.Module):
    def __init__(self, dino):
        super().__init__()
        self.dino = dino

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.dino(x)


def _fingerprint(net: nn.Module) -> str:
    h = hashlib.sha256()
    for key, value in sorted(net.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def _load_cached(path: Path, net: nn.Module) -> dict | None:
    if not path.is_file():
        return None
    try:
        meta = read_metadata(path)
        if meta.get("steps") != str(TRAIN_STEPS):
            return None  # trained for another number of steps: rebuilt, so the weights match the recipe
        net.load_state_dict(load_tensors(path))
        return meta
    except (RunError, RuntimeError, KeyError):
        return None  # a stale or damaged cache file is rebuilt


def _train(name: str, net: nn.Module, prepared, seed: int, device: torch.device, progress: bool) -> dict:
    """Adam with light random shifts; a few hundred steps suffice for small images."""
    torch.manual_seed(seed)
    net.to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(seed)
    for step in tqdm(range(TRAIN_STEPS), desc=f"training the {name} extractor", disable=not progress, leave=False):
        for group in opt.param_groups:  # cosine decay to 10%
            group["lr"] = 2e-3 * (0.1 + 0.45 * (1 + math.cos(math.pi * step / TRAIN_STEPS)))
        batch = {k: v.to(device) for k, v in prepared.train.batch(BATCH_SIZE, generator).items()}
        if name == "classifier":
            loss = F.cross_entropy(net(_shift(batch["x"], generator)), batch["y"])
        else:
            loss = F.mse_loss(net(batch["x"]), batch["x"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    meta = {"recipe": RECIPE_VERSION, "kind": name, "seed": str(seed), "steps": str(TRAIN_STEPS)}
    val = prepared.val if len(prepared.val) else prepared.train
    with torch.no_grad():
        correct, err, count = 0, 0.0, 0
        for i in range(0, len(val), 512):
            b = val.get(slice(i, i + 512))
            x = b["x"].to(device)
            if name == "classifier":
                correct += int((net(x).argmax(1).cpu() == b["y"]).sum())
            else:
                err += float(F.mse_loss(net(x), x, reduction="sum"))
            count += len(x)
    if name == "classifier":
        meta["val_accuracy"] = str(correct / max(count, 1))
    else:
        meta["val_mse"] = str(err / max(count * x[0].numel(), 1))
    return meta


def _shift(x: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Roll the whole batch by one random offset of up to ``max_shift`` pixels (cheap augmentation)."""
    dy, dx = (torch.randint(-max_shift, max_shift + 1, (2,), generator=generator)).tolist()
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))
