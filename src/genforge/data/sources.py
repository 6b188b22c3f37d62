"""A data source as named on the command line: a built-in name, or ``kind:PATH``. Which kinds exist and
how each is read belongs to the modalities (``genforge.modalities``); this is the shared record."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Source:
    kind: str  # a built-in name, or a path form's kind ("folder", "text", "codes", ...)
    modality: str  # the name of the modality that reads it
    path: Path | None = None  # absolute, for the path forms

    @property
    def canonical(self) -> str:
        """The source as written in a manifest and hashed into the cache key."""
        return self.kind if self.path is None else f"{self.kind}:{self.path}"

    @property
    def slug(self) -> str:
        """A readable prefix for the cache folder name."""
        if self.path is None:
            return self.kind
        return f"{self.kind}-" + (re.sub(r"[^A-Za-z0-9._-]+", "_", self.path.name).strip("._") or "root")


def files_under(root: Path, suffixes) -> list[Path]:
    """Files under ``root`` whose lower-case suffix is one of ``suffixes``: a folder's files sorted, then its
    sub-folders in sorted order; hidden files and folders skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in suffixes:
                found.append(Path(dirpath) / name)
    return found


def folder_labels(relative: list[str]):
    """Labels from the first-level sub-folder of each file ("cat/1.png"): (int64 labels, sorted class names)
    when every file sits in a sub-folder and there are at least two of them, else (None, [])."""
    import numpy as np

    parts = [rel.split("/") for rel in relative]
    if not parts or not all(len(p) >= 2 for p in parts):
        return None, []
    class_names = sorted({p[0] for p in parts})
    if len(class_names) < 2:
        return None, []
    index = {name: i for i, name in enumerate(class_names)}
    return np.array([index[p[0]] for p in parts], dtype=np.int64), class_names
