"""Helpers of the table family tests: a small patients CSV, and the sampled rows of a run checked against it."""

from __future__ import annotations

import csv
from pathlib import Path

HEADER = ["age", "smoker", "cost"]
TINY_TABLE_VAE = ["model.latent_dim=8", "model.hidden=[32,32]", "train.sample_every=0"]  # trains in a second


def patients_csv(folder: Path, rows: int = 200) -> Path:
    """An integer, a yes/no (1 in 4 yes) and a two-decimal column."""
    path = folder / "patients.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        for i in range(rows):
            writer.writerow([20 + (i * 7) % 50, "yes" if i % 4 == 0 else "no", round(100 + 3.5 * (i % 40), 2)])
    return path


def check_sampled_patients(model, out: Path, n: int = 50) -> None:
    """``n`` rows sampled from ``model`` into ``out/rows.csv``: the original header, known categories, and
    integer ages within the column's bounds."""
    model.save_samples(n, out, seed=0, progress=False)
    with open(out / "rows.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == HEADER and len(table) == n + 1
    assert {row[1] for row in table[1:]} <= {"yes", "no"}
    ages = [int(row[0]) for row in table[1:]]
    assert min(ages) >= 20 and max(ages) <= 69
