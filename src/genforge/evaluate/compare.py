"""`genforge compare`: runs side by side in one self-contained HTML page.

Each run is scored (or its kept score in eval.json reused, when it was made at the same step, n and
extractor); image runs and text runs each get a metrics table headed by what the scores were measured
on, with real held-out data as the reference row, then sample grids or texts, training curves, speeds
and sizes (``report.py`` draws the page).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Callable, Sequence

from genforge.errors import ConfigError
from genforge.evaluate.report import MetricsTable, ReportRun, write_report
from genforge.evaluate.results import check_comparable, describe, find_result

COLUMNS = {
    "image": ["fd", "kid", "kid_se", "precision", "recall", "density", "coverage", "memorisation",
              "nll_bound_nats", "bits_per_dim"],
    "text": ["val_loss", "perplexity", "bits_per_byte", "distinct_1", "distinct_2", "distinct_3", "self_bleu",
             "parse_share"],
}
LOWER_IS_BETTER = {"fd", "kid", "kid_se", "memorisation", "nll_bound_nats", "bits_per_dim", "val_loss", "perplexity",
                   "bits_per_byte", "self_bleu"}
NOTES = {
    "image": [
        "fd: Fréchet distance between Gaussians fitted to the features; kid: kernel inception distance "
        "(unbiased MMD², cubic kernel), kid_se its standard error over subsets.",
        "precision/recall: share of samples inside the real data's k-NN manifold, and of real data inside the "
        "samples' (k=3); density/coverage: Naeem et al. (k=5).",
        "memorisation: share of samples nearer to a training image than that image is to its nearest training "
        "neighbour. nll_bound_nats/bits_per_dim: the family's likelihood bound on held-out data, where it has one.",
        "The reference row scores real held-out images exactly like samples: the best a model can expect.",
    ],
    "text": [
        "val_loss (nats/token), perplexity and bits_per_byte on held-out text; distinct_n: unique word n-grams "
        "over all n-grams of the samples; self_bleu: BLEU-4 of each sample against the others (lower = more "
        "varied); parse_share: share of code samples Python's ast parses (the unfinished last line dropped).",
        "The reference row scores real held-out snippets of the same length as the samples.",
    ],
}


def extractor_name(run, features: str) -> str:
    from genforge.evaluate.extractors import resolve_name

    if run.spec.modality != "image":
        return "text"
    return resolve_name(features, run.spec.num_classes is not None)


def compare(runs: Sequence[str | Path], out: str | Path, *, n: int | None = None, n_text: int | None = None,
            features: str = "auto",
            weights: str | Path | None = None, seed: int = 0, device: str = "auto", progress: bool = True,
            title: str = "genforge report", subtitle: str | None = None,
            log: Callable[[str], None] = lambda _: None, likelihood_samples: int | None = None) -> Path:
    """Evaluate what is missing and write the report to ``out``; returns its path. ``n`` samples per
    image run and ``n_text`` per text run (defaults: ``evaluator.DEFAULT_N``); ``likelihood_samples``
    per image for likelihood bounds (default: each family's reporting default)."""
    from genforge.data import prepare
    from genforge.evaluate.evaluator import DEFAULT_N, Evaluator, evaluate
    from genforge.runs import Run
    from genforge.train.device import resolve_device

    if not runs:
        raise ConfigError("compare needs at least one run directory")
    if Path(out).is_dir():
        raise ConfigError(f"--out {out} is a directory; expected the HTML file to write, e.g. {Path(out) / 'report.html'}")
    opened = [Run.open(r) for r in runs]
    names = [r.path.name for r in opened]
    if len(set(names)) != len(names):
        raise ConfigError(f"runs must have distinct directory names to be told apart; got {', '.join(names)}")
    results = []
    for run in opened:
        chosen = n if run.spec.modality == "image" else n_text
        want_n = chosen if chosen is not None else DEFAULT_N[run.spec.modality]
        result = find_result(run.path, extractor_name(run, features), want_n)
        if (result is None or result.get("step") != run.model_step()
                or result.get("likelihood_samples", likelihood_samples) != likelihood_samples):
            log(f"evaluating {run.path} ({want_n} samples)")
            result = evaluate(run.path, n=want_n, features=_features_for(run, features), weights=weights, seed=seed,
                              device=device, progress=progress, likelihood_samples=likelihood_samples)
        results.append(result)

    tables = []
    for modality in ("image", "text"):
        group = [r for r in results if r["modality"] == modality]
        if not group:
            continue
        check_comparable(group)
        first_run = next(run for run in opened if run.spec.modality == modality)
        prepared = prepare(first_run.config.data.source, first_run.config.data, progress=progress)
        evaluator = Evaluator(first_run, prepared, features=_features_for(first_run, features),
                              weights=weights if modality == "image" else None, n=group[0]["n"], seed=seed,
                              device=resolve_device(device), progress=progress)
        floor = evaluator.reference_result()
        tables.append(metrics_table(modality, group, floor))
    report_runs = [report_run(run, result) for run, result in zip(opened, results)]
    return write_report(out, report_runs, tables, title=title, subtitle=subtitle)


def _features_for(run, features: str) -> str:
    """--features names an image extractor; text runs are scored without one."""
    return features if run.spec.modality == "image" else "auto"


def metrics_table(modality: str, group: list[dict], floor: dict | None) -> MetricsTable:
    present = {k for r in group for k in r["metrics"]}
    columns = [c for c in COLUMNS[modality] if c in present]
    rows = [(r["name"], dict(r["metrics"])) for r in group]
    notes = list(NOTES[modality])
    reference_rows = set()
    if floor is not None:
        rows.append((floor["name"], dict(floor["metrics"])))
        reference_rows.add(floor["name"])
    elif modality == "image":
        notes.append(f"No reference row: the held-out split has fewer than n = {group[0]['n']:,} items "
                     f"(evaluate with a smaller --n to get one).")
    kind = "Images" if modality == "image" else "Text"
    return MetricsTable(title=f"{kind}: {describe(group[0])}", columns=columns, rows=rows, notes=notes,
                        lower_is_better=LOWER_IS_BETTER & set(columns), reference_rows=reference_rows)


def report_run(run, result: dict) -> ReportRun:
    records = run.read_metrics()
    curves: dict[str, list[tuple[int, float]]] = {}
    for rec in records:
        for key, value in rec.items():
            if (key.endswith("/loss") or key.startswith("eval/")) and isinstance(value, (int, float)):
                curves.setdefault(key, []).append((int(rec["step"]), float(value)))
    speeds = [rec["items_per_s"] for rec in records if isinstance(rec.get("items_per_s"), (int, float))]
    sampling = result.get("sampling") or {}
    return ReportRun(
        name=run.path.name, family=run.config.family, data=run.config.data.source, modality=run.spec.modality,
        parameters=run.num_parameters(), steps=max(result.get("step", 0), 0),
        train_items_per_s=statistics.median(speeds) if speeds else None,
        sample_items_per_s=sampling.get("items_per_s"), unit="img" if run.spec.modality == "image" else "tok",
        grid_png=latest_grid(run.samples_dir) if run.spec.modality == "image" else None,
        text_samples=list(result.get("examples") or []), curves=curves,
    )


def latest_grid(samples_dir: Path) -> bytes | None:
    grids = sorted(samples_dir.glob("step_*.png"))
    return grids[-1].read_bytes() if grids else None

