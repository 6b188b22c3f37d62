"""Evaluation results: what each score was measured on, where it is kept, and which ones compare.

A result is a plain JSON-able dict:

    {"format": "genforge-eval-1", "name": "gan", "run": "runs/gan", "family": "gan", "data": "mnist",
     "modality": "image", "step": 1898, "n": 5000, "seed": 0,
     "reference": {"data": "mnist", "split": "train", "n": 4500, "entry": "..."},
     "extractor": {"name": "classifier", "fingerprint": "...", "dim": 128, "detail": "..."},
     "metrics": {"fd": ..., "kid": ..., ...}, "sampling": {"items_per_s": ..., "unit": "img"},
     "seconds": ..., "created": "2026-11-26T12:00:00Z"}

Scores depend on the number of samples, the reference data and the feature extractor (FD is biased by
n; features from two extractors live in different spaces), so results that differ in any of these are
refused side by side rather than silently compared. A run keeps its latest result per extractor and n
in ``RUN/eval.json``, and the figures that result's evaluation drew (table runs: column histograms and the
pair-trend heat map) as PNG files in ``RUN/eval_figures/SCORER-nN/``, listed in the result:

    "figures": [{"file": "eval_figures/table-n1000/columns.png", "caption": "Columns, real vs synthetic: ..."}]
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from genforge.errors import ConfigError
from genforge.io import atomic_write_json

FORMAT = "genforge-eval-1"
EVAL_FILE = "eval.json"
FIGURES_DIR = "eval_figures"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def new_result(run, *, n: int, seed: int, reference: dict, extractor: dict | None, metrics: dict,
               sampling: dict | None, seconds: float, name: str | None = None,
               examples: list[str] | None = None, modality: str | None = None) -> dict:
    step = run.model_step()
    return {
        "format": FORMAT, "name": name or run.path.name, "run": str(run.path), "family": run.config.family,
        "data": run.config.data.source, "modality": modality or run.spec.modality, "step": -1 if step is None else step, "n": n, "seed": seed,
        "reference": reference, "extractor": extractor, "metrics": {k: float(v) for k, v in metrics.items()},
        "sampling": sampling, "examples": list(examples or []), "seconds": seconds, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def scored_by(result: dict) -> str:
    """What measured a result: its feature extractor's name, else its scorer's ("text" for results that
    predate the field)."""
    return result["extractor"]["name"] if result.get("extractor") else result.get("scorer", "text")


def result_key(result: dict) -> str:
    """Where a result is kept in eval.json: one entry per extractor (or scorer) and sample count."""
    return f"{scored_by(result)}/n={result['n']}"


def comparison_key(result: dict) -> tuple:
    extractor = result.get("extractor") or {}
    ref = result["reference"]
    return (result["modality"], ref.get("entry"), ref.get("split"), ref.get("n", ref.get("tokens")), result["n"],
            extractor.get("name"), extractor.get("fingerprint"))


def describe(result: dict) -> str:
    """One line saying what a result was measured on, for tables and errors."""
    ref = result["reference"]
    size = f"{ref['n']:,} items" if "n" in ref else f"{ref.get('tokens', 0):,} tokens"
    text = f"{result['n']:,} samples vs the {ref['split']} split of {ref['data']} ({size})"
    if result.get("extractor"):
        ex = result["extractor"]
        text += f", features: {ex['name']} [{ex['fingerprint']}] - {ex['detail']}"
    return text


def check_comparable(results: list[dict]) -> None:
    """Raise a one-line ConfigError naming the first pair of results that measured different things."""
    if not results:
        return
    first = results[0]
    for other in results[1:]:
        if comparison_key(other) != comparison_key(first):
            raise ConfigError(
                f"cannot compare '{first['name']}' ({describe(first)}) with '{other['name']}' ({describe(other)}): "
                "scores compare only at the same n, reference data and feature extractor; "
                "evaluate them with the same --n and --features"
            )


def load_results(run_path: str | Path) -> dict[str, dict]:
    """The results kept in a run's eval.json ({} when there are none or the file is unreadable)."""
    path = Path(run_path) / EVAL_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("results"), dict):
        return {}
    return data["results"]


def save_result(run_path: str | Path, result: dict) -> Path:
    """Add (or replace) ``result`` in the run's eval.json, atomically; other entries are kept."""
    results = load_results(run_path)
    stored = {k: v for k, v in result.items() if k != "reference_result"}
    if result.get("reference_result"):  # the real data's scores beside it (a model card shows them as the floor)
        stored["reference_metrics"] = result["reference_result"]["metrics"]
    results[result_key(stored)] = stored
    path = Path(run_path) / EVAL_FILE
    atomic_write_json(path, {"format": FORMAT, "latest": result_key(stored), "results": results})
    return path


def figures_folder(result: dict) -> str:
    """Where a result's figures are kept, relative to the run: one folder per entry of eval.json."""
    return f"{FIGURES_DIR}/{scored_by(result)}-n{result['n']}"


def save_figures(run_path: str | Path, result: dict, figures: list) -> list[dict]:
    """Write ``figures`` (``evaluate.figures.Figure``) as PNG files in the result's folder, atomically, removing
    the PNGs an earlier evaluation left there; returns the entries the result lists them by."""
    from genforge.io import atomic_write_bytes

    folder = figures_folder(result)
    entries = [{"file": f"{folder}/{figure.name}.png", "caption": figure.caption} for figure in figures]
    for figure, entry in zip(figures, entries):
        atomic_write_bytes(Path(run_path) / entry["file"], figure.png)
    kept = {Path(e["file"]).name for e in entries}
    for stale in (Path(run_path) / folder).glob("*.png"):
        if stale.name not in kept:
            stale.unlink(missing_ok=True)
    return entries


def load_figures(run_path: str | Path, result: dict) -> list[tuple[str, bytes]]:
    """(caption, PNG bytes) of the figures a result lists that are still there. Only PNG files inside the run's
    figures folder are read: an eval.json is data, not a licence to put any file of the machine in a report."""
    root = (Path(run_path) / FIGURES_DIR).resolve()
    out = []
    for entry in result.get("figures") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            continue
        path = (Path(run_path) / entry["file"]).resolve()
        if path.suffix != ".png" or not path.is_relative_to(root) or not path.is_file():
            continue
        data = path.read_bytes()
        if data.startswith(PNG_SIGNATURE):
            out.append((str(entry.get("caption", "")), data))
    return out


def has_figures(run_path: str | Path, result: dict) -> bool:
    """Whether every figure a result lists is still there (False for results kept before figures were drawn)."""
    listed = result.get("figures")
    return isinstance(listed, list) and len(load_figures(run_path, result)) == len(listed)


def find_result(run_path: str | Path, extractor: str, n: int | None) -> dict | None:
    """The kept result made with ``extractor`` ("text" for text runs) and ``n`` samples (None: any n),
    the most recent first."""
    matches = [r for r in load_results(run_path).values()
               if (n is None or r.get("n") == n) and scored_by(r) == extractor]
    return max(matches, key=lambda r: r.get("created", "")) if matches else None


def latest_result(run_path: str | Path) -> dict | None:
    """The most recent result kept in the run's eval.json, whatever its extractor and n."""
    results = load_results(run_path).values()
    return max(results, key=lambda r: r.get("created", "")) if results else None
