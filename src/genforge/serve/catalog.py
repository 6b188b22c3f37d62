"""The runs a studio serves: the run folders directly under its runs directory, addressed by their names.

A client names a run by its ID (the folder's name, checked against ``RUN_ID``), never by a path: an ID
that is not a plain name, or names no run there, is a ``RunNotFound``. Loaded models are kept (a few, the
most recently used) and reloaded when a run's weights change, for example while it trains.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from genforge.errors import GenforgeError, RunError
from genforge.runs import Run

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
GRID_FILE = re.compile(r"^step_(\d{7})\.[a-z0-9]{1,8}$")
STUDIO_DIR = ".studio"  # the gallery, job logs and reports, beside the runs
MODELS_KEPT = 4


class RunNotFound(GenforgeError):
    """No run has this ID under the studio's runs directory."""


class Catalog:
    def __init__(self, root: Path, device: str = "auto"):
        self.root, self.device = Path(root), device
        self._models: OrderedDict[str, tuple[tuple, Any, threading.Lock]] = OrderedDict()
        self._lock = threading.Lock()

    # ---- addressing ----------------------------------------------------------------------------------
    def path(self, run_id: Any) -> Path:
        """The folder a new run of this ID would have (the ID checked, nothing else)."""
        if not isinstance(run_id, str) or not RUN_ID.match(run_id) or run_id == STUDIO_DIR:
            raise RunNotFound(f"bad run id {run_id!r}; expected a run folder's name: letters, digits, '.', '_', '-' "
                              f"(at most 100, not starting with '.')")
        return self.root / run_id

    def open(self, run_id: Any) -> Run:
        path = self.path(run_id)
        try:
            return Run.open(path)
        except RunError:
            raise RunNotFound(f"no run '{run_id}' in the studio's runs folder; list them with GET /api/runs") from None

    # ---- what the run list shows ---------------------------------------------------------------------------
    def list(self) -> list[dict[str, Any]]:
        out = []
        if not self.root.is_dir():
            return out
        for path in sorted(self.root.iterdir(), key=lambda p: p.name):
            if not path.is_dir() or not RUN_ID.match(path.name) or not (path / "config.yaml").is_file():
                continue
            try:
                out.append(self.summary(Run.open(path)))
            except GenforgeError:
                continue  # a half-made or foreign folder is not a run to show
        return out

    def summary(self, run: Run) -> dict[str, Any]:
        """The run list's row: family, data, progress, the latest scores; no weights are loaded."""
        from genforge.evaluate.results import latest_result

        latest = latest_result(run.path)
        return {"id": run.path.name, "family": run.config.family, "data": run.config.data.source,
                "modality": run.spec.modality, "step": run.model_step(), "steps": run.config.train.steps,
                "ready": run.model_path.is_file(),
                "metrics": (latest or {}).get("metrics"), "modified": _modified(run)}

    def curves(self, run_id: str, since: int = 0) -> list[dict[str, Any]]:
        """Training records (``metrics.jsonl``) after step ``since``: the losses and speeds the page plots."""
        run = self.open(run_id)
        return [rec for rec in run.read_metrics() if rec["step"] > since]

    def grids(self, run_id: str) -> list[dict[str, Any]]:
        """The sample grids written while training (``samples/step_XXXXXXX.*``), oldest first."""
        run = self.open(run_id)
        if not run.samples_dir.is_dir():
            return []
        found = [(int(m.group(1)), p.name) for p in run.samples_dir.iterdir() if (m := GRID_FILE.match(p.name))]
        return [{"step": step, "file": name} for step, name in sorted(found)]

    def grid_path(self, run_id: str, name: str) -> Path:
        run = self.open(run_id)
        if not isinstance(name, str) or not GRID_FILE.match(name) or not (run.samples_dir / name).is_file():
            raise RunNotFound(f"run '{run_id}' has no sample grid {name!r}; list them with GET /api/runs/{run_id}/grids")
        return run.samples_dir / name

    # ---- loaded models ---------------------------------------------------------------------------
    def model(self, run_id: str):
        """(model, lock) for a run with weights: loaded once, again when its weights changed; the lock keeps
        one job at a time on a model (its modules switch modes while sampling)."""
        from genforge.api import load

        run = self.open(run_id)
        try:
            stat = run.model_path.stat()
        except FileNotFoundError:
            raise RunError(f"run '{run_id}' has no weights yet (model.safetensors is written at its first "
                           f"checkpoint); wait for it, or train it") from None
        key = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            kept = self._models.get(run_id)
            if kept is not None and kept[0] == key:
                self._models.move_to_end(run_id)
                return kept[1], kept[2]
        model = load(run.path, device=self.device)
        with self._lock:
            self._models[run_id] = (key, model, threading.Lock())
            self._models.move_to_end(run_id)
            while len(self._models) > MODELS_KEPT:
                self._models.popitem(last=False)
            return model, self._models[run_id][2]

    def forget(self, run_id: str) -> None:
        with self._lock:
            self._models.pop(run_id, None)


def _modified(run: Run) -> float | None:
    try:
        return max(p.stat().st_mtime for p in (run.path / "config.yaml", run.metrics_path) if p.exists())
    except OSError:
        return None
