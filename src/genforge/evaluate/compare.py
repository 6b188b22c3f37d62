"""The pieces of `genforge compare`'s page: a metrics table per group of results measured alike (each
modality's ``ReportStyle`` gives its columns, title and notes) and a card per run (grid or texts, the figures
its evaluation kept, curves, speeds, sizes). ``genforge.api.compare`` scores the runs; ``report.py`` draws the page.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from genforge.evaluate.report import MetricsTable, ReportRun
from genforge.evaluate.results import describe, load_figures
from genforge.modalities import Modality, ReportStyle


def metrics_table(style: ReportStyle, group: list[dict], floor: dict | None) -> MetricsTable:
    """One table of results measured alike (``results.check_comparable``), the real-data floor last."""
    present = {k for r in group for k in r["metrics"]}
    columns = [c for c in style.columns if c in present]
    rows = [(r["name"], dict(r["metrics"])) for r in group]
    notes = list(style.notes)
    reference_rows = set()
    if floor is not None:
        rows.append((floor["name"], dict(floor["metrics"])))
        reference_rows.add(floor["name"])
    else:
        notes.append(f"No reference row: the held-out split has fewer than n = {group[0]['n']:,} items "
                     f"(evaluate with a smaller --n to get one).")
    return MetricsTable(title=f"{style.title}: {describe(group[0])}", columns=columns, rows=rows, notes=notes,
                        lower_is_better=set(style.lower_is_better) & set(columns), reference_rows=reference_rows)


def report_run(run, result: dict, modality: Modality) -> ReportRun:
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
        sample_items_per_s=sampling.get("items_per_s"), unit=modality.unit, sample_unit=sampling.get("unit", modality.unit),
        grid_png=latest_grid(run.samples_dir) if modality.report.shows == "grid" else None,
        audio_wav=modality.report_audio(run.samples_dir),
        text_samples=list(result.get("examples") or []), curves=curves, figures=load_figures(run.path, result),
    )


def latest_grid(samples_dir: Path) -> bytes | None:
    grids = sorted(samples_dir.glob("step_*.png"))
    return grids[-1].read_bytes() if grids else None

