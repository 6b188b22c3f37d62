"""Encoded table rows (N, D) -> one CSV file with the table's own header, through its ``TableTransform``.

    TableCodec(transform).save(x, "out/", {"seed": 0})     rows.csv settings.json

The codec protocol of ``codecs.py``: ``decode`` gives a DataFrame; ``write_items`` appends rows to the one
file (samples come in batches; the rows collect in a hidden partial file that ``finish`` renames to rows.csv,
so rows.csv only ever appears whole); ``grid`` writes a training preview as a CSV of the rows it is given
(``samples/step_XXXXXXX.csv``; the step is in its name, the settings are not in the file: it stays plain CSV).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from genforge.data.codecs import _plain
from genforge.data.spec import DataSpec
from genforge.data.table_transform import TableTransform
from genforge.errors import DataError
from genforge.io import atomic_write_json, atomic_write_text, ensure_dir, storage_error

ROWS_FILE = "rows.csv"
PARTIAL = ".rows.csv.partial"


class TableCodec:
    """Encoded rows <-> a CSV file."""

    suffix = ".csv"

    def __init__(self, transform: TableTransform):
        self.transform = transform

    def decode(self, x: torch.Tensor | np.ndarray) -> pd.DataFrame:
        rows = x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        return self.transform.decode(rows)

    def item_shape(self, spec: DataSpec) -> tuple[int, ...]:
        return tuple(spec.shape)

    def write_items(self, rows: pd.DataFrame, out_dir: str | os.PathLike, params: dict[str, Any],
                    start: int = 0) -> list[Path]:
        """Add ``rows`` to the output (the header first, when ``start`` is 0); every row's file is rows.csv."""
        out_dir = ensure_dir(out_dir, "output folder")
        partial = out_dir / PARTIAL
        if start > 0 and not partial.is_file():
            raise DataError(f"{out_dir}: rows from {start} on have no earlier rows to follow; write from row 0")
        try:
            with open(partial, "w" if start == 0 else "a", encoding="utf-8", newline="") as f:
                rows.to_csv(f, index=False, header=start == 0)
        except OSError as e:
            raise storage_error(partial, e) from None
        return [out_dir / ROWS_FILE] * len(rows)

    def finish(self, first_rows: pd.DataFrame, out_dir: str | os.PathLike, params: dict[str, Any]) -> None:
        """rows.csv, once every row is written, and settings.json."""
        out_dir = ensure_dir(out_dir, "output folder")
        partial = out_dir / PARTIAL
        if partial.is_file():
            try:
                with open(partial, "rb+") as f:
                    os.fsync(f.fileno())
                os.replace(partial, out_dir / ROWS_FILE)
            except OSError as e:
                raise storage_error(out_dir / ROWS_FILE, e) from None
        atomic_write_json(out_dir / "settings.json", _plain(params))

    def save(self, x: torch.Tensor | np.ndarray, out_dir: str | os.PathLike, params: dict[str, Any]) -> list[Path]:
        """Write rows.csv and settings.json; returns rows.csv once per row."""
        rows = self.decode(x)
        paths = self.write_items(rows, out_dir, params)
        self.finish(rows, out_dir, params)
        return paths

    def grid(self, x: torch.Tensor | np.ndarray, path: str | os.PathLike, params: dict[str, Any]) -> Path:
        """The rows of ``x`` as one CSV file (a training preview)."""
        path = Path(path)
        atomic_write_text(path, self.decode(x).to_csv(index=False))
        return path
