"""Trainer state in one safetensors file: raw and EMA weights and optimizer tensors as tensors,
counters and optimizer hyper-parameters as JSON metadata. One file, written atomically, so a kill
at any moment leaves the previous state loadable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from genforge.errors import RunError
from genforge.io import load_module, load_tensors, read_metadata, save_tensors, unique_state

__all__ = ["save_state", "load_state", "load_module", "unique_state"]


def save_state(path: Path, model, ema_model, optimizers: dict[str, torch.optim.Optimizer], info: dict[str, Any]) -> None:
    tensors: dict[str, torch.Tensor] = {}
    for k, v in unique_state(model).items():
        tensors[f"model/{k}"] = v
    if ema_model is not None:
        for k, v in unique_state(ema_model).items():
            tensors[f"ema/{k}"] = v
    optim_meta = {}
    for name, opt in optimizers.items():
        sd = opt.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for idx, state in sd["state"].items():
            for key, value in state.items():
                if torch.is_tensor(value):
                    tensors[f"opt/{name}/{idx}/{key}"] = value
                else:
                    scalars.setdefault(str(idx), {})[key] = value
        optim_meta[name] = {"param_groups": sd["param_groups"], "scalars": scalars}
    meta = {"info": json.dumps(info), "optimizers": json.dumps(optim_meta)}
    save_tensors(tensors, path, metadata=meta)


def load_state(path: Path, model, ema_model, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, Any]:
    tensors = load_tensors(path)
    meta = read_metadata(path)
    try:
        info = json.loads(meta["info"])
        optim_meta = json.loads(meta["optimizers"])
    except (KeyError, json.JSONDecodeError):
        raise RunError(f"{path} is not a genforge trainer state (metadata missing)") from None

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    load_module(model, part("model/"), path)
    if ema_model is not None:
        load_module(ema_model, part("ema/"), path)
    for name, opt in optimizers.items():
        if name not in optim_meta:
            raise RunError(f"{path} has no state for optimizer '{name}'")
        state: dict[int, dict[str, Any]] = {}
        for k, v in part(f"opt/{name}/").items():
            idx, key = k.split("/", 1)
            state.setdefault(int(idx), {})[key] = v
        for idx, scalars in optim_meta[name]["scalars"].items():
            state.setdefault(int(idx), {}).update(scalars)
        opt.load_state_dict({"state": state, "param_groups": optim_meta[name]["param_groups"]})
    return info
