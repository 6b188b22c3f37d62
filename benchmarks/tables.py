"""genforge's table families against the `ctgan` package's CTGAN and TVAE, on the same rows, scored alike.

    pip install -e ".[bench]"                         # ctgan and sdmetrics: this script's peers only
    python benchmarks/tables.py                       # randhie, then the many-categories table (~30 min on 2 cores)
    python benchmarks/tables.py --quick               # a smoke run: a few epochs and seconds each
    python benchmarks/tables.py --parts categories    # only the many-categories speed table

Part "randhie": statsmodels' RAND health insurance experiment (20,190 rows, 10 columns), prepared by genforge
with a seeded 80/20 split (``data.val_fraction=0.2``); the four binary columns (idp, hlthg, hlthf, hlthp) are
categorical, the rest numerical. Every model fits the same 80% (genforge decodes its training split back to a
table, which is exact, and hands that frame to ctgan) and is scored against the other 20%:

- CTGAN and TVAE at their default 300 epochs; their fit time sets the budget: each genforge family fits its
  table transform and trains within TVAE's fit time (wall clock, the step count planned from a timing of its own
  step, as ``genforge demo`` does).
- quality: SDMetrics' QualityReport (column shapes and column pair trends; an independent implementation) and
  genforge's own ``quality``, both of as many synthetic rows as there are held-out rows against the held-out
  rows; the real row scores 4,038 training rows the same way.
- ML efficacy: a random forest (genforge's ``ml_efficacy``) trained on the synthetic rows predicts ``hlthg``
  from the other columns, macro-F1 on the held-out rows; the real row trains on the real training rows.
- detection (genforge's: 1 - how well a classifier tells the rows from real training rows, ROC AUC based) and
  fit and sampling seconds.

Part "categories": a transactions table with a merchant column of ``--categories`` values (Zipf-distributed
over ``--rows`` rows), an amount and a fraud flag: fit seconds per epoch (one pass over the rows) of each
model, and the width of the encoded row. CTGAN and TVAE one-hot every category; genforge binary-codes a column
above ``data.onehot_max`` categories (14 dims for 10,000). CTGAN is left out by default (``--category-peers``):
on 2 CPU cores it had not finished one epoch of the default table after 11 minutes (its critic reads packs of
10 rows, each with a 10,000-wide one-hot and a 10,000-wide conditional vector).

The Markdown report is printed and written atomically to --out after each part.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import cpu_name, csv, fmt, train_for_budget

FAMILIES = ("vae", "gan", "diffusion", "transformer")
BINARY = ("idp", "hlthg", "hlthf", "hlthp")  # randhie's yes/no columns
TARGET = "hlthg"
SEED = 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", type=csv, default=["randhie", "categories"], help="randhie, categories")
    p.add_argument("--families", type=csv, default=list(FAMILIES), help="genforge families to train")
    p.add_argument("--epochs", type=int, default=300, help="CTGAN's and TVAE's epochs (their default: 300)")
    p.add_argument("--peers", type=csv, default=["CTGAN", "TVAE"],
                   help="ctgan's models on randhie: CTGAN, TVAE or none (give --minutes when leaving TVAE out)")
    p.add_argument("--minutes", type=float, default=None,
                   help="each genforge family's training budget (default: TVAE's measured fit time)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FAMILY:KEY=VALUE",
                   help="an extra override for one genforge family, e.g. diffusion:model.timesteps=500")
    p.add_argument("--rows", type=int, default=20_000, help="rows of the many-categories table")
    p.add_argument("--category-peers", type=csv, default=["TVAE"],
                   help="ctgan's models on the many-categories table (CTGAN did not finish one epoch of the "
                        "default table in 11 minutes on 2 cores)")
    p.add_argument("--categories", type=int, default=10_000, help="merchants in the many-categories table")
    p.add_argument("--runs", type=Path, default=Path("runs/bench_tables"), help="where runs are written")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "tables.md")
    p.add_argument("--quick", action="store_true", help="a smoke run: 3 epochs, 10-second budgets, small tables")
    args = p.parse_args(argv)
    for option, names in (("--peers", args.peers), ("--category-peers", args.category_peers)):
        names[:] = [] if names == ["none"] else names
        if set(names) - {"CTGAN", "TVAE"}:
            p.error(f"{option} takes CTGAN, TVAE or none, got {','.join(names)}")
    if "randhie" in args.parts and "TVAE" not in args.peers and not args.minutes:
        p.error("--minutes is needed when TVAE is not among --peers (its fit time is the default budget)")
    if args.quick:
        args.epochs, args.minutes, args.rows, args.categories = 3, args.minutes or 1 / 6, 3_000, 1_200
    return args


# ----------------------------------------------------------------------------------------------- scoring
def sdmetrics_quality(real: pd.DataFrame, synth: pd.DataFrame, types: dict[str, str]) -> float:
    import warnings

    with warnings.catch_warnings():  # its single-table report is called deprecated in favour of a multi-table one
        warnings.simplefilter("ignore", FutureWarning)
        from sdmetrics.reports.single_table import QualityReport

    metadata = {"columns": {c: {"sdtype": "categorical" if k in ("categorical", "boolean") else "numerical"}
                            for c, k in types.items()}}
    report = QualityReport()
    report.generate(real, synth, metadata, verbose=False)
    return float(report.get_score())


def scores(synth: pd.DataFrame, train: pd.DataFrame, holdout: pd.DataFrame, types: dict[str, str]) -> dict:
    from genforge.evaluate.table_metrics import detection_auc, detection_score, ml_efficacy, quality_scores

    synth = synth[list(types)]
    return {"sdmetrics": sdmetrics_quality(holdout, synth, types),
            "quality": quality_scores(holdout, synth, types)["quality"],
            "f1": ml_efficacy(synth, holdout, types, TARGET, SEED),
            "detection": detection_score(detection_auc(train, synth, types, SEED))}


def as_ctgan_frame(frame: pd.DataFrame, types: dict[str, str]) -> pd.DataFrame:
    """ctgan reads categories as any hashable values; its numerical columns must be floats or ints."""
    return frame[[c for c in types]].copy()


def fit_peer(name: str, frame: pd.DataFrame, discrete: list[str], epochs: int):
    """(fitted model, fit seconds) of ctgan's ``name`` ("CTGAN" or "TVAE") with its defaults."""
    import ctgan

    model = getattr(ctgan, name)(epochs=epochs, verbose=False)
    start = time.perf_counter()
    model.fit(frame, discrete_columns=discrete)
    return model, time.perf_counter() - start


def timed_sample(sample, n: int) -> tuple[pd.DataFrame, float]:
    start = time.perf_counter()
    rows = sample(n)
    return rows, time.perf_counter() - start


# ----------------------------------------------------------------------------------------------- randhie
def randhie_part(args, lines: list[str]) -> None:
    import genforge
    from genforge.api import make_config
    from genforge.data.table_codec import TableCodec
    from genforge.data.table_transform import TableTransform
    from genforge.modalities import prepare

    overrides = ["data.val_fraction=0.2"] + [f"data.columns.{c}=categorical" for c in BINARY]
    config = make_config("vae", "randhie", overrides=overrides, device="cpu", seed=SEED)
    prepared = prepare("randhie", config.data, progress=False)
    codec = TableCodec(prepared.tokenizer)
    train, holdout = codec.decode(prepared.train.rows), codec.decode(prepared.val.rows)
    types = {c["name"]: c["type"] for c in prepared.tokenizer.columns}
    start = time.perf_counter()  # what preparing costs once, cold (the cache keeps it for every later run)
    TableTransform.fit(train, types, numeric=config.data.numeric, max_modes=config.data.max_modes,
                       onehot_max=config.data.onehot_max)
    prepare_s = time.perf_counter() - start
    discrete = [c for c, k in types.items() if k in ("categorical", "boolean")]
    n = len(holdout)
    print(f"randhie: {len(train):,} training rows, {n:,} held out; columns {types}", flush=True)

    rows: list[tuple[str, dict]] = []
    real = scores(train.sample(n, random_state=SEED), train, holdout, types)
    rows.append(("real rows (training split)", {**real, "fit": None, "sample": None}))
    peers_s = {}
    for name in args.peers:
        model, fit_s = fit_peer(name, as_ctgan_frame(train, types), discrete, args.epochs)
        synth, sample_s = timed_sample(model.sample, n)
        peers_s[name] = fit_s
        rows.append((f"ctgan {name} ({args.epochs} epochs)", {**scores(synth, train, holdout, types),
                                                             "fit": fit_s, "sample": sample_s}))
        print(f"[{name}] fit {fit_s:.0f} s: {rows[-1][1]}", flush=True)
        write_report(args, lines + randhie_lines(args, rows, prepare_s, n, len(train)))

    minutes = args.minutes or (peers_s["TVAE"] - prepare_s) / 60  # fitting the transform is part of the budget
    for family in args.families:
        extra = [o.split(":", 1)[1] for o in args.overrides if o.split(":", 1)[0] == family]
        run_dir = args.runs / family
        shutil.rmtree(run_dir, ignore_errors=True)
        start = time.perf_counter()
        result, planned, _, _ = train_for_budget(family, "randhie", run_dir, overrides + extra, minutes, SEED, family)
        fit_s = time.perf_counter() - start + prepare_s
        model = genforge.load(run_dir, device="cpu")
        synth, sample_s = timed_sample(lambda k: model.sample(k, seed=SEED), n)
        label = f"genforge {family} ({result.step:,} steps{', ' + ' '.join(extra) if extra else ''})"
        rows.append((label, {**scores(synth, train, holdout, types), "fit": fit_s, "sample": sample_s}))
        print(f"[{family}] fit {fit_s:.0f} s: {rows[-1][1]}", flush=True)
        write_report(args, lines + randhie_lines(args, rows, prepare_s, n, len(train)))
    lines.extend(randhie_lines(args, rows, prepare_s, n, len(train)))


def randhie_lines(args, rows, prepare_s: float, n: int, n_train: int) -> list[str]:
    out = ["## randhie: quality, ML efficacy and time", "",
           f"{n_train:,} training rows, {n:,} held-out rows; {n:,} synthetic rows per model. Fitting genforge's "
           f"table transform (a Gaussian mixture per numeric column) takes {prepare_s:.1f} s on the training rows, "
           "once (the data cache keeps it); it is counted in genforge's fit times below, as ctgan's `fit` includes "
           "fitting its own transformer.", "",
           "| model | SDMetrics quality | genforge quality | macro-F1 (hlthg) | detection | fit s | sample s |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for label, r in rows:
        out.append(f"| {label} | {fmt(r['sdmetrics'])} | {fmt(r['quality'])} | {fmt(r['f1'])} | "
                   f"{fmt(r['detection'])} | {fmt(r['fit'])} | {fmt(r['sample'])} |")
    return out + [""]


# ----------------------------------------------------------------------------------------------- categories
def transactions(rows: int, categories: int, seed: int = SEED) -> pd.DataFrame:
    """A merchant per row (Zipf over ``categories`` names, each at least once), an amount that depends on the
    merchant, and a fraud flag more likely on rare merchants."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, categories + 1) ** 1.1
    drawn = rng.choice(categories, size=rows - categories, p=weights / weights.sum())
    merchant = rng.permutation(np.concatenate([np.arange(categories), drawn]))
    amount = np.round(np.exp(rng.normal(3 + (merchant % 7) * 0.3, 0.8)), 2)
    fraud = rng.random(rows) < 0.01 + 0.05 * (merchant > categories // 2)
    return pd.DataFrame({"merchant": [f"m{m:05d}" for m in merchant], "amount": amount, "fraud": fraud})


def categories_part(args, lines: list[str]) -> None:
    import genforge
    from genforge.modalities import prepare

    frame = transactions(args.rows, args.categories)
    path = args.runs / "transactions.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    data = f"csv:{path}"
    table = ["## Many categories: fit seconds per epoch", "",
             f"{args.rows:,} rows; merchant: {args.categories:,} categories (Zipf); amount: numeric; fraud: boolean. "
             "One epoch: one pass over the rows (ctgan: `epochs=1`; genforge: rows / batch steps of its default "
             "batch). genforge's time includes preparing the data (fitting its table transform).", "",
             "| model | encoded row width | seconds per epoch | rows per second |", "| --- | --- | --- | --- |"]
    for name in args.category_peers:
        model, fit_s = fit_peer(name, frame, ["merchant", "fraud"], 1)
        encoder = getattr(model, "_transformer", None) or model.transformer  # CTGAN keeps it private, TVAE not
        width = encoder.output_dimensions
        table.append(f"| ctgan {name} | {width:,} | {fmt(fit_s)} | {fmt(args.rows / fit_s)} |")
        print(table[-1], flush=True)
        write_report(args, lines + table)
    for family in ("vae", "gan"):
        run_dir = args.runs / f"categories_{family}"
        shutil.rmtree(run_dir, ignore_errors=True)
        overrides = ["data.columns.merchant=categorical"]
        start = time.perf_counter()
        from genforge.api import make_config

        config = make_config(family, data, overrides=overrides, device="cpu", seed=SEED)
        prepared = prepare(data, config.data, progress=False)
        steps = max(1, len(prepared.train) // config.train.batch_size)
        genforge.train(family, data, run_dir, steps=steps, overrides=overrides, progress=False, device="cpu",
                       seed=SEED, sample_every=0, ckpt_every=steps)
        fit_s = time.perf_counter() - start
        table.append(f"| genforge {family} | {prepared.spec.shape[0]:,} | {fmt(fit_s)} | {fmt(args.rows / fit_s)} |")
        print(table[-1], flush=True)
        write_report(args, lines + table)
    lines.extend(table + [""])


# ----------------------------------------------------------------------------------------------- report
def header(args) -> list[str]:
    import torch

    return ["# Tables: genforge's families against ctgan's CTGAN and TVAE", "",
            "Written by `benchmarks/tables.py`.", "",
            "    python benchmarks/tables.py " + " ".join(sys.argv[1:]), "",
            f"- machine: {cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads, Python {platform.python_version()}", ""]


def write_report(args, lines: list[str]) -> None:
    from genforge.io import atomic_write_text

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    lines = header(args)
    started = time.perf_counter()
    parts = {"randhie": randhie_part, "categories": categories_part}
    for part in args.parts:
        if part not in parts:
            raise SystemExit(f"unknown part {part!r}; expected: {', '.join(parts)}")
        parts[part](args, lines)
        write_report(args, lines)
    lines.append(f"Total wall time: {(time.perf_counter() - started) / 60:.1f} min.")
    write_report(args, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
