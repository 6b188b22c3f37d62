"""Helpers of the table family tests: a tiny encoded layout and its rows, a small patients CSV, and the sampled
rows of a run checked against it."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from genforge.data.spec import DataSpec

HEADER = ["age", "smoker", "cost"]

# a value, its 2 modes, a 3-category column, a missing flag: 7 dims
LAYOUT = {"spans": [{"column": "a", "kind": "value", "start": 0, "width": 1},
                    {"column": "a", "kind": "mode", "start": 1, "width": 2},
                    {"column": "b", "kind": "category", "start": 3, "width": 3},
                    {"column": "b", "kind": "missing", "start": 6, "width": 1}],
          "columns": []}
SPEC = DataSpec(modality="table", shape=(7,), table=LAYOUT)


def rows(values, modes, categories) -> torch.Tensor:
    """Encoded rows of LAYOUT: each row's value, mode and category, never missing."""
    x = torch.zeros(len(values), 7)
    x[:, 0] = torch.tensor(values)
    x[torch.arange(len(values)), 1 + torch.tensor(modes)] = 1
    x[torch.arange(len(values)), 3 + torch.tensor(categories)] = 1
    x[:, 6] = 1
    return x
TINY_TABLE_VAE = ["model.latent_dim=8", "model.hidden=[32,32]", "train.sample_every=0"]  # trains in a second


def fit_steps(family, x: torch.Tensor, steps: int, optimizer: torch.optim.Optimizer,
              record: str | None = None) -> list[float]:
    """Train a one-phase ``family`` on the batch ``x`` for ``steps`` steps of ``optimizer``; each step's loss,
    or its ``record`` log (e.g. "recon")."""
    losses = []
    for _ in range(steps):
        _, loss, logs = next(family.training_step({"x": x}))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(logs[record] if record else loss.detach()))
    return losses


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
