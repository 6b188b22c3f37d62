"""Scores of real held-out data (the floor) and of each family's demo run, for the README.

    python benchmarks/eval_baselines.py                 # trains the demo into ./demo first if it is missing
    python benchmarks/eval_baselines.py --demo demo --features classifier random

Image runs are scored on n samples against mnist's training split, in the feature space of each
extractor asked for; the first row of each table is real held-out data scored the same way. The text
run is scored on its validation bits per byte and on samples. Prints Markdown tables (and writes them
to --out).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

IMAGE_COLUMNS = ("fd", "kid", "precision", "recall", "density", "coverage", "memorisation", "bits_per_dim")
TEXT_COLUMNS = ("bits_per_byte", "distinct_2", "self_bleu", "parse_share")
FAMILIES = ("diffusion", "gan", "vae", "transformer")


def fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def table(rows: list[tuple[str, dict]], columns: tuple[str, ...]) -> list[str]:
    lines = ["| | " + " | ".join(columns) + " |", "| --- " * (len(columns) + 1) + "|"]
    for name, metrics in rows:
        lines.append(f"| {name} | " + " | ".join(fmt(metrics.get(c)) for c in columns) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    from genforge.demo import run_demo
    from genforge.evaluate import evaluate
    from genforge.evaluate.results import describe

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo", type=Path, default=Path("demo"), help="demo folder (made by `genforge demo`)")
    parser.add_argument("--minutes", type=float, default=10.0, help="demo budget when it must be trained")
    parser.add_argument("--n", type=int, default=500, help="image samples per run (mnist holds out 500)")
    parser.add_argument("--n-text", type=int, default=100, help="text samples for the transformer")
    parser.add_argument("--features", nargs="+", default=["classifier", "random"], help="extractors to score with")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/eval_baselines.md"))
    args = parser.parse_args(argv)

    runs = args.demo / "runs"
    if not all((runs / f / "model.safetensors").is_file() for f in FAMILIES):
        run_demo(args.demo, minutes=args.minutes, overwrite=True, eval_n=args.n)
    lines = [f"# Evaluation baselines on mnist ({args.demo}/runs)", ""]
    for features in args.features:
        rows, header = [], ""
        for family in FAMILIES[:3]:
            result = evaluate(runs / family, n=args.n, features=features, reference=True, progress=False)
            if not rows and result.get("reference_result"):
                rows.append(("real data (held-out)", result["reference_result"]["metrics"]))
            rows.append((f"{family} ({result['step']} steps)", result["metrics"]))
            header = describe(result)
        lines += [f"## Images, features: {features}", "", header, ""] + table(rows, IMAGE_COLUMNS) + [""]
    result = evaluate(runs / "transformer", n=args.n_text, reference=True, progress=False)
    rows = [("real data (held-out)", result["reference_result"]["metrics"]),
            (f"transformer ({result['step']} steps)", result["metrics"])]
    lines += ["## Code (pycode)", "", describe(result), ""] + table(rows, TEXT_COLUMNS) + [""]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
