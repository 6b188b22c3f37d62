"""Device and precision choice: ``auto`` picks CUDA, then MPS, then CPU."""

from __future__ import annotations

import contextlib
import os

import torch

from genforge.config import TRAIN_CHOICES
from genforge.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU. Under torchrun, "auto" and "cuda" mean this process's own GPU
    (``LOCAL_RANK``), so N processes on one machine use N GPUs."""
    local_rank = os.environ.get("LOCAL_RANK")
    if name in ("auto", "cuda") and local_rank is not None and torch.cuda.is_available():
        return torch.device("cuda", int(local_rank) % torch.cuda.device_count())
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}'; expected auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' requested but CUDA is not available here; use --device cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device '{name}' requested but MPS is not available here; use --device cpu or auto")
    return device


def check_choice(name: str, value: str) -> None:
    """A one-line ConfigError unless ``value`` is one of train.``name``'s choices (``config.TRAIN_CHOICES``)."""
    if value not in TRAIN_CHOICES[name]:
        raise ConfigError(f"unknown train.{name} '{value}'; expected one of: {', '.join(TRAIN_CHOICES[name])}")


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for this device, or None for plain fp32."""
    check_choice("precision", precision)
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if device.type == "cuda" else None


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def use_channels_last(device: torch.device, memory_format: str = "auto") -> bool:
    """Whether image batches and convolution weights go NHWC (``train.memory_format``): cuDNN's convolutions
    (and tensor cores) run fastest in that layout; "auto" picks it on CUDA only (on a CPU, nets choose their
    own layout: nets/unet.py)."""
    check_choice("memory_format", memory_format)
    return memory_format == "channels_last" or (memory_format == "auto" and device.type == "cuda")


def to_device(t: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """``t`` on ``device``: to a GPU through pinned host memory, without waiting (the copy overlaps the work
    queued before it); images in NHWC with ``channels_last``."""
    if device.type == "cuda":
        t = t.pin_memory().to(device, non_blocking=True)
    else:
        t = t.to(device)
    if channels_last and t.dim() == 4 and t.is_floating_point():
        t = t.contiguous(memory_format=torch.channels_last)
    return t


def configure_backends(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
