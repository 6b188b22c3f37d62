"""Will it fit? A model's size and a batch's, estimated before anything is allocated.

A model built from absurd options (``--set model.n_embd=100000``) or a batch of a billion items must be
refused with the estimate and the device's capacity, not end in an allocator traceback (or in the
kernel's out-of-memory killer) minutes later. The family is built on the meta device: shapes only,
no memory, no initialisation.
"""

from __future__ import annotations

import math
import os

import torch

from genforge.errors import ConfigError, GenforgeError

GIB = 1024**3
# fp32 weights, their gradients, AdamW's two moments, and the EMA copy
TRAINING_BYTES_PER_PARAMETER = 4 + 4 + 8 + 4
# the share of a device's memory one run may plan to use for what is estimated here (activations come on top)
USABLE_SHARE = 0.9


def device_memory(device: torch.device) -> int | None:
    """Bytes of memory on ``device`` (the machine's RAM for CPU and MPS); None when unknown."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def parameter_count(config, spec) -> int:
    """Parameters and buffers of the family ``config`` describes, counted on the meta device."""
    from genforge.runs import build_family

    try:
        with torch.device("meta"):
            family = build_family(config, spec)
    except GenforgeError:
        raise
    except (RuntimeError, ValueError, TypeError, OverflowError, ZeroDivisionError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"the {config.family} model cannot be built from its model options ({first}); "
                          f"check the model.* values") from None
    return sum(t.numel() for t in family.parameters()) + sum(b.numel() for b in family.buffers())


def describe_bytes(n: float) -> str:
    return f"{n / GIB:,.1f} GiB" if n >= 0.1 * GIB else f"{n / 1024**2:,.1f} MiB"


def check_training_fits(config, spec, device: torch.device, shards: int = 1) -> None:
    """A ``ConfigError`` when the weights, optimizer state and one input batch cannot fit on ``device``; with
    ``shards`` > 1 (FSDP) the device holds that share of the weights, gradients, optimizer and EMA state."""
    params = parameter_count(config, spec)
    model_bytes = params * TRAINING_BYTES_PER_PARAMETER / shards
    batch_bytes = config.train.batch_size * math.prod(spec.shape) * 8  # inputs as float32 or int64 ids, with a copy
    capacity = device_memory(device)
    if capacity is None:
        return
    usable = capacity * USABLE_SHARE
    if model_bytes > usable:
        raise ConfigError(
            f"the {config.family} model has {params:,} parameters and needs about {describe_bytes(model_bytes)} for its "
            f"weights, gradients, optimizer and EMA state{f' per process (1/{shards} of it)' if shards > 1 else ''}, "
            f"more than the {describe_bytes(capacity)} of the {device.type} device; choose smaller model.* options"
            f"{_fsdp_hint(config.family, spec.kind) if shards == 1 else ''}")
    if batch_bytes > usable - model_bytes:
        raise ConfigError(
            f"train.batch_size {config.train.batch_size:,} of {' x '.join(map(str, spec.shape))} items needs about "
            f"{describe_bytes(batch_bytes)} for the inputs alone, more than the {describe_bytes(capacity)} of the "
            f"{device.type} device; choose a smaller --batch-size")


def _fsdp_hint(family: str, kind: str) -> str:
    from genforge.families import get_family

    return ", or shard it over several processes (train.fsdp)" if get_family(family, kind).fsdp_units else ""


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocator's out-of-memory failure (CUDA, MPS or CPU)."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())
