"""Small helpers the benchmark scripts share: command-line lists, the machine's name, number cells, training for
a budget and scoring images in several feature views."""

from __future__ import annotations

import argparse
import platform
from pathlib import Path


def csv(text: str) -> list[str]:
    """An argparse type: "a,b,c" -> ["a", "b", "c"] (an empty list is an error)."""
    items = [part.strip() for part in text.split(",") if part.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def cpu_name() -> str:
    """The CPU's model name, for the machine line of a results file."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fmt(value, digits: int = 3) -> str:
    """A table cell: "-" for None, text as is, numbers to ``digits`` significant digits (thousands with commas)."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"


def train_for_budget(family: str, data: str, run_dir: Path, overrides: list[str], minutes: float, seed: int,
                     name: str) -> tuple[object, int, float, object]:
    """Train ``family`` on ``data`` for ``minutes`` of wall time on the CPU: the step count is planned from a
    timing of the model's own step (so the cosine schedule ends inside the budget, as ``genforge demo``
    does), with a hard stop at the budget. Returns (TrainResult, planned steps, CPU seconds used, the
    prepared data); TrainingDiverged propagates."""
    import time

    import genforge
    from genforge.api import make_config
    from genforge.modalities import prepare
    from genforge.demo import seconds_per_step

    config = make_config(family, data, overrides=overrides, device="cpu", seed=seed)
    prepared = prepare(config.data.source, config.data, progress=False)
    per_step = seconds_per_step(config, prepared, probes=8)
    planned = max(20, int(minutes * 60 / per_step))
    print(f"[{name}] {planned} steps planned ({1000 * per_step:.0f} ms/step)", flush=True)
    cpu_start = time.process_time()
    result = genforge.train(family, data, run_dir, steps=planned, overrides=overrides, progress=False,
                            device="cpu", seed=seed, max_minutes=minutes, sample_every=0, ckpt_every=planned)
    return result, planned, time.process_time() - cpu_start, prepared


FEATURE_VIEWS = ("classifier", "random")  # genforge's mnist classifier and a random network: two views of one draw


def view_scorers(run_dir: Path, n: int, likelihood_samples: int | None = None, views=FEATURE_VIEWS):
    """A trained image run loaded on the CPU, and one image scorer per feature view of its data (n samples,
    seed 0, as `genforge eval` draws them)."""
    import genforge
    from genforge.evaluate.evaluator import Evaluator
    from genforge.modalities import prepare

    model = genforge.load(run_dir, device="cpu")
    data = model.run.config.data
    prepared = prepare(data.source, data, progress=False)
    scorers = [Evaluator(prepared, data=data.source, features=view, n=n, seed=0, device=model.device, progress=False,
                         likelihood_samples=likelihood_samples).scorer for view in views]
    return model, dict(zip(views, scorers))


def view_scores(scorers: dict, images, keys=("fd", "kid", "precision", "recall")) -> tuple[dict, dict]:
    """The same images scored in every view: ({"KEY/VIEW": value}, the real held-out row alike). The views
    differ only in their features, so a slow sampler is paid once."""
    from genforge.evaluate.image_metrics import image_scores

    row, real = {}, {}
    for view, scorer in scorers.items():
        reference = scorer.reference_features().numpy()
        metrics = image_scores(reference, scorer.features(images).numpy(), train=reference, seed=0)
        floor = scorer.reference_metrics() or {}
        for key in keys:
            row[f"{key}/{view}"], real[f"{key}/{view}"] = metrics.get(key), floor.get(key)
    return row, real


def save_partial(out: Path, text: str, name: str, seconds: float) -> None:
    """The results so far, written atomically after each item, so that an interrupted run keeps what it
    measured; and a progress line."""
    from genforge.io import atomic_write_text

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, text)
    print(f"[{name}] done ({seconds:.0f} s so far)", flush=True)
