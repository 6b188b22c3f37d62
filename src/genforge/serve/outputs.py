"""Outputs into the gallery: files a model wrote, each stored as an item with its run, mode, settings and parent.

Whatever a run's codec writes (one PNG or TXT per item, one CSV for a table's rows, ...) is stored as it
is, one gallery item per file; a PNG's text chunk is rewritten to carry the item's own parameters (its
index in the batch, its parent), so a downloaded image says how to make it again.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image

from genforge.data.codecs import png_bytes, read_png_params

TEXT_PREVIEW = 20_000  # characters of a text item kept in the gallery's row


class Outputs:
    """Where one job's results go: a scratch folder for the codec, then the gallery."""

    def __init__(self, gallery, scratch: Path, model, run_id: str, mode: str, parent_id: str | None,
                 job_id: str, on_item: Callable[[dict], None] | None = None):
        self.gallery, self.model, self.run_id, self.mode = gallery, model, run_id, mode
        self.parent_id, self.job_id, self.on_item = parent_id, job_id, on_item
        self.folder = Path(tempfile.mkdtemp(prefix=f"{job_id[:8]}-", dir=scratch))
        self.items: list[dict] = []

    def __enter__(self) -> "Outputs":
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def store_files(self, paths: list[Path], params: dict[str, Any]) -> list[dict]:
        """Each distinct file the codec wrote (in order) as an item; ``params`` are the settings of them all."""
        files = list(dict.fromkeys(Path(p) for p in paths))
        for index, path in enumerate(files):
            extra = {"index": index} if len(files) > 1 else {}
            self._add(path, {**params, **extra})
        return self.items

    def store_images(self, images: torch.Tensor, params: dict[str, Any], first_index: int = 0) -> list[dict]:
        """Image tensors (n, C, H, W) in [-1, 1], one item each."""
        for i in range(images.shape[0]):
            item_params = {**params, "index": first_index + i}
            path = self.model.codec.write_items(images[i:i + 1].cpu(), self.folder, item_params, len(self.items))[0]
            self._add(path, item_params)
        return self.items

    def store_text(self, text: str, params: dict[str, Any]) -> dict:
        path = self.folder / f"{len(self.items):06d}.txt"
        path.write_text(text, encoding="utf-8")
        return self._add(path, params)

    def _add(self, path: Path, params: dict[str, Any]) -> dict:
        params = {**params, "mode": self.mode, "run": self.run_id, **({"parent": self.parent_id} if self.parent_id else {})}
        data = path.read_bytes()
        text = None
        if path.suffix == ".png":  # the item's own parameters in its text chunk
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                data = png_bytes(img, {**read_png_params(path), **params})
        elif path.suffix in (".txt", ".csv", ".json"):
            text = data.decode("utf-8", errors="replace")[:TEXT_PREVIEW]
        item = self.gallery.add(data=data, suffix=path.suffix.lower(), run_id=self.run_id,
                                family=self.model.run.config.family, modality=self.model.spec.modality,
                                mode=self.mode, params=params, parent_id=self.parent_id, job_id=self.job_id, text=text)
        self.items.append(item)
        if self.on_item is not None:
            self.on_item(item)
        return item
