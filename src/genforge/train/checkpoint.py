"""Trainer state in one safetensors file: raw and EMA weights and optimizer tensors as tensors,
counters and optimizer hyper-parameters as JSON metadata. One file, written atomically, so a kill
at any moment leaves the previous state loadable.

The file holds whole (unsharded) tensors whichever way the run trained: a sharded (FSDP) run gathers
them first (``fsdp.py``), so any run resumes on any number of processes and loads in one for sampling."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genforge.errors import RunError
from genforge.io import load_module, load_tensors, read_metadata, save_tensors, unique_state, unique_tensors

__all__ = ["TrainerState", "save_state", "read_state", "load_state", "load_module", "unique_state"]


@dataclass
class TrainerState:
    """What a checkpoint holds: state dicts of the raw and EMA weights, ``Optimizer.state_dict()`` of each
    optimizer by name, and the trainer's counters."""

    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] | None
    optimizers: dict[str, dict[str, Any]]
    info: dict[str, Any]

    @classmethod
    def of(cls, model, ema_model, optimizers: dict[str, torch.optim.Optimizer], info: dict[str, Any]) -> "TrainerState":
        """The state of modules and optimizers held whole in this process."""
        return cls(unique_state(model), unique_state(ema_model) if ema_model is not None else None,
                   {name: opt.state_dict() for name, opt in optimizers.items()}, info)


def save_state(path: Path, state: TrainerState) -> None:
    tensors: dict[str, torch.Tensor] = {}
    for k, v in unique_tensors(state.model).items():
        tensors[f"model/{k}"] = v
    if state.ema is not None:
        for k, v in unique_tensors(state.ema).items():
            tensors[f"ema/{k}"] = v
    optim_meta = {}
    for name, sd in state.optimizers.items():
        scalars: dict[str, dict[str, Any]] = {}
        for idx, param_state in sd["state"].items():
            for key, value in param_state.items():
                if torch.is_tensor(value):
                    tensors[f"opt/{name}/{idx}/{key}"] = value
                else:
                    scalars.setdefault(str(idx), {})[key] = value
        optim_meta[name] = {"param_groups": sd["param_groups"], "scalars": scalars}
    meta = {"info": json.dumps(state.info), "optimizers": json.dumps(optim_meta)}
    save_tensors(tensors, path, metadata=meta)


def read_state(path: Path, optimizer_names) -> TrainerState:
    """The state in ``path``, with the optimizers named (each must be there)."""
    tensors = load_tensors(path)
    meta = read_metadata(path)
    try:
        info = json.loads(meta["info"])
        optim_meta = json.loads(meta["optimizers"])
    except (KeyError, json.JSONDecodeError):
        raise RunError(f"{path} is not a genforge trainer state (metadata missing)") from None

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    optimizers = {}
    for name in optimizer_names:
        if name not in optim_meta:
            raise RunError(f"{path} has no state for optimizer '{name}'")
        state: dict[int, dict[str, Any]] = {}
        for k, v in part(f"opt/{name}/").items():
            idx, key = k.split("/", 1)
            state.setdefault(int(idx), {})[key] = v
        for idx, scalars in optim_meta[name]["scalars"].items():
            state.setdefault(int(idx), {}).update(scalars)
        optimizers[name] = {"state": state, "param_groups": optim_meta[name]["param_groups"]}
    ema = part("ema/")
    return TrainerState(part("model/"), ema or None, optimizers, info)


def load_state(path: Path, model, ema_model, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, Any]:
    """Load ``path`` into modules and optimizers held whole in this process; returns the trainer's counters."""
    state = read_state(path, optimizers)
    load_module(model, state.model, path)
    if ema_model is not None:
        load_module(ema_model, state.ema or {}, path)
    for name, opt in optimizers.items():
        opt.load_state_dict(state.optimizers[name])
    return state.info
