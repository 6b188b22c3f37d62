"""Fully sharded data parallel training (FSDP2, PyTorch's ``torch.distributed.fsdp.fully_shard``), for
transformers whose weights, gradients and optimizer state do not fit one device alongside the activations.

``train.fsdp=true`` in a run of several processes shards every unit the family declares
(``Family.fsdp_units``: each transformer block, then the net, then the family itself): each process keeps
1/N of every weight, gradient and AdamW moment, and a unit's weights are gathered just for its forward and
backward. The EMA copy is sharded the same way, so its update stays a local, exact lerp.

What changes against plain data parallelism (``distributed.py``), and why:

- **Gradients** are reduce-scattered (averaged) by FSDP itself in backward, so the trainer does not average
  them again. With gradient accumulation, every micro-batch's gradients are reduce-scattered as they come:
  keeping them unsharded until the last one would hold the whole model's gradients on every device, which
  is what FSDP is there to avoid.
- **Mixed precision**: with bf16 (``train.precision``, the default on CUDA) the gathered weights are cast to
  bf16 for compute and gradients are reduced in fp32; the sharded weights and AdamW state stay fp32.
- **Checkpoints** gather the full weights, EMA and optimizer state (every process takes part) and rank 0
  writes them in the format one process writes. So ``genforge sample`` loads an FSDP run in one process,
  and an FSDP run resumes on any number of processes, with or without FSDP.
- **Sample grids and evaluations** run forward passes of the sharded model, which need every process: all
  of them sample the same items in step (the same seed and the same gathered weights), and rank 0 writes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def shard(family: nn.Module, units: list[nn.Module], compute_dtype: torch.dtype | None) -> None:
    """Shard ``units`` (innermost first), then ``family`` itself, over the default process group."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = (MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
              if compute_dtype is not None else MixedPrecisionPolicy())
    for unit in units:
        fully_shard(unit, mp_policy=policy)
    fully_shard(family, mp_policy=policy)


def full_value(t: torch.Tensor) -> torch.Tensor:
    """A plain tensor for a sharded one (a DTensor, such as the gradient norm of sharded weights)."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def _options(**extra: Any):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **extra)


def full_model_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The whole, unsharded state dict on rank 0's CPU (empty on the other ranks). Every rank must call it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(module, options=_options(cpu_offload=True))


def full_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's whole state on rank 0's CPU, in ``Optimizer.state_dict()``'s own form (parameters
    numbered in param-group order), so one process loads it as it loads its own. Every rank must call it."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    by_name = get_optimizer_state_dict(module, optimizer, options=_options(cpu_offload=True))
    if not by_name:
        return {}
    index = {name: i for i, name in enumerate(_names_in_order(module, optimizer))}
    groups = [{**group, "params": [index[name] for name in group["params"]]} for group in by_name["param_groups"]]
    return {"state": {index[name]: state for name, state in by_name["state"].items()}, "param_groups": groups}


def load_full_model_state(module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load a whole state dict (every rank holds it) into the sharded ``module``: each rank keeps its shard."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(module, tensors, options=_options(strict=False))


def load_full_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load an ``Optimizer.state_dict()``-form state (every rank holds it) into the optimizer of sharded weights."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    names = _names_in_order(module, optimizer)
    by_name = {"state": {names[int(i)]: s for i, s in state["state"].items()},
               "param_groups": [{**g, "params": [names[int(i)] for i in g["params"]]} for g in state["param_groups"]]}
    set_optimizer_state_dict(module, optimizer, by_name, options=_options())


def _names_in_order(module: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The parameters' names in the order ``Optimizer.state_dict()`` numbers them."""
    names = {id(p): name for name, p in module.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
