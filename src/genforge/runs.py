"""Run directories: everything needed to rebuild a model, and nothing from outside.

    RUN/config.yaml              family, data, train and model configuration
    RUN/spec.json                the DataSpec the model was built for
    RUN/tokenizer.json           text runs: the tokenizer; table runs: the table transform (data/table_transform.py)
    RUN/model.safetensors        weights used for sampling (the EMA weights where EMA is on)
    RUN/trainer_state.safetensors  raw weights, EMA, optimizer states and counters, for --resume
    RUN/metrics.jsonl            one JSON line per logged step
    RUN/tb/                      TensorBoard events
    RUN/samples/                 sample grids written during training
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
import yaml

from genforge.config import RunConfig, build_dataclass, check_types
from genforge.data.spec import DataSpec
from genforge.errors import GenforgeError, RunError
from genforge.families import get_family
from genforge.families.base import Family
from genforge.io import atomic_write_json, atomic_write_text, load_module, load_tensors, read_metadata


class Run:
    def __init__(self, path: str | Path, config: RunConfig, spec: DataSpec):
        self.path = Path(path)
        self.config = config
        self.spec = spec

    # files
    @property
    def model_path(self) -> Path:
        return self.path / "model.safetensors"

    @property
    def state_path(self) -> Path:
        return self.path / "trainer_state.safetensors"

    @property
    def tokenizer_path(self) -> Path:
        return self.path / "tokenizer.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def samples_dir(self) -> Path:
        return self.path / "samples"

    @staticmethod
    def check_free(path: str | Path) -> None:
        """A one-line RunError when a new run cannot be created at ``path``: a file is there, or a run."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise RunError(f"--out {path} is a file; expected a directory for the run")
        if (path / "config.yaml").exists():
            raise RunError(f"run directory {path} already holds a run; pass --resume to continue it or choose another --out")

    @classmethod
    def create(cls, path: str | Path, config: RunConfig, spec: DataSpec, tokenizer=None) -> "Run":
        path = Path(path)
        cls.check_free(path)
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path, config, spec)
        if tokenizer is not None:
            tokenizer.save(run.tokenizer_path)
        atomic_write_json(path / "spec.json", spec.to_dict())
        atomic_write_text(path / "config.yaml", config.to_yaml())  # written last: marks a complete run
        return run

    @classmethod
    def open(cls, path: str | Path) -> "Run":
        path = Path(path)
        if not path.is_dir():
            raise RunError(f"run directory {path} does not exist; expected a directory made by `genforge train`")
        cfg_path = path / "config.yaml"
        if not cfg_path.is_file():
            raise RunError(f"{path} is not a genforge run: config.yaml is missing")
        try:
            config = RunConfig.from_dict(yaml.safe_load(cfg_path.read_text(encoding="utf-8")))
            spec = DataSpec.from_dict(json.loads((path / "spec.json").read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise RunError(f"{path} is not a complete genforge run: spec.json is missing") from None
        except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError, TypeError, KeyError) as e:
            raise RunError(f"{path} has an unreadable config.yaml or spec.json ({type(e).__name__}); expected files written by genforge") from None
        return cls(path, config, spec)

    def _metric_lines(self) -> list[tuple[str, dict | None]]:
        """Each line of metrics.jsonl with its record; None for a line that is not one (cut short by a kill)."""
        if not self.metrics_path.is_file():
            return []
        out = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                rec = None
            out.append((line, rec if isinstance(rec, dict) and isinstance(rec.get("step"), int) else None))
        return out

    def read_metrics(self) -> list[dict]:
        """metrics.jsonl records, oldest first; a line cut short by a kill is skipped."""
        return [rec for _, rec in self._metric_lines() if rec is not None]

    def trim_metrics(self, step: int) -> None:
        """Keep only the metrics.jsonl records up to ``step`` (training restarts there: what a killed process
        logged after its last checkpoint goes), so the file reads as one uninterrupted run."""
        lines = self._metric_lines()
        kept = [line for line, rec in lines if rec is not None and rec["step"] <= step]
        if len(kept) != len(lines):
            atomic_write_text(self.metrics_path, "".join(line + "\n" for line in kept))

    def model_step(self) -> int | None:
        """The training step model.safetensors was saved at; None when it is missing or unreadable."""
        try:
            return int(read_metadata(self.model_path).get("step", ""))
        except (GenforgeError, ValueError):
            return None

    def save_config(self) -> None:
        atomic_write_text(self.path / "config.yaml", self.config.to_yaml())

    def build_family(self, seed: int | None = None) -> Family:
        """A freshly initialised family; with ``seed``, the initialisation is reproducible."""
        if seed is not None:
            torch.manual_seed(seed)
        return build_family(self.config, self.spec)

    def num_parameters(self) -> int:
        """The model's parameter count, from a family built on the meta device (no memory, no init)."""
        with torch.device("meta"):
            return sum(p.numel() for p in build_family(self.config, self.spec).parameters())

    def load_family(self, device=None) -> Family:
        """The family with the sampling weights (model.safetensors), in eval mode."""
        family = self.build_family()
        load_module(family, load_tensors(self.model_path), self.model_path)
        if device is not None:
            family.to(device)
        return family.eval()


def family_config(config: RunConfig, kind: str | None = None):
    """The family's model config from ``config.model``, for data of ``kind`` (DataSpec.kind)."""
    family_cls = get_family(config.family, kind)
    model_cfg = build_dataclass(family_cls.Config, config.model, "model")
    check_types(model_cfg, "model")
    return model_cfg


def build_family(config: RunConfig, spec: DataSpec) -> Family:
    family_cls = get_family(config.family, spec.kind)
    return family_cls(family_config(config, spec.kind), spec)


def complete_model_config(config: RunConfig, kind: str | None = None) -> None:
    """Fill config.model with every field of the family's Config (for data of ``kind``), so config.yaml
    records all choices."""
    config.model = asdict(family_config(config, kind))

