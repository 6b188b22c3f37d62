"""Codecs: model outputs (tensors) -> files, and back. They know nothing about models.

    ImageCodec().save(x, "out/", {"seed": 0})      000000.png ... grid.png settings.json
    TextCodec(tokenizer).save(tokens, "out/", {})   000000.txt ... settings.json

Every codec speaks the same small protocol, which is what the API and the trainer use (a modality
picks the codec, ``Modality.codec``): ``decode(tensors)`` gives the items users get (images, texts);
``write_items(items, out, params, start)`` writes them one file each, numbered from ``start``;
``finish(first_items, out, params)`` writes what goes beside them once (a preview grid, settings.json);
``grid(tensors, path, params)`` writes one preview file (training sample grids; the codec's ``suffix``);
``item_shape(spec)`` is the shape of one decoded item held in memory (None for texts).

Every PNG carries the generation parameters as JSON in a text chunk named "genforge"
(``read_png_params`` reads it back); ``settings.json`` beside the files records them too.
All files are written atomically.
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, PngImagePlugin

from genforge.data.datasets import to_float
from genforge.data.images import read_image, to_array, to_pil
from genforge.data.spec import DataSpec
from genforge.errors import DataError
from genforge.io import atomic_write_bytes, atomic_write_json, atomic_write_text, ensure_dir

PNG_KEY = "genforge"
GRID_PADDING = 2  # pixels between and around grid cells
GRID_FILL = 255  # white separators, visible between dark MNIST cells and photos alike
TEXT_DIVIDER = "=" * 24


def _json(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=str)  # default=str: a Path or dtype is still recorded


def _plain(params: dict) -> dict:
    return json.loads(_json(params))


class ImageCodec:
    """Images in [-1, 1], (n, C, H, W) with C = 1 or 3 <-> PNG files."""

    suffix = ".png"

    def save(self, x: torch.Tensor, out_dir: str | os.PathLike, params: dict[str, Any]) -> list[Path]:
        """Write 000000.png, 000001.png, ..., grid.png and settings.json; returns the per-item paths."""
        paths = self.write_items(x, out_dir, params)
        self.finish(x, out_dir, params)
        return paths

    def write_items(self, x: torch.Tensor, out_dir: str | os.PathLike, params: dict[str, Any], start: int = 0) -> list[Path]:
        """One PNG per item, numbered from ``start`` (samples written batch by batch)."""
        out_dir = ensure_dir(out_dir, "output folder")
        paths = []
        for i, item in enumerate(to_uint8(x), start):
            path = out_dir / f"{i:06d}.png"
            atomic_write_bytes(path, png_bytes(to_pil(item), params))
            paths.append(path)
        return paths

    def finish(self, x: torch.Tensor, out_dir: str | os.PathLike, params: dict[str, Any]) -> None:
        """grid.png of ``x`` (the first items) and settings.json."""
        out_dir = ensure_dir(out_dir, "output folder")
        atomic_write_bytes(out_dir / "grid.png", png_bytes(to_pil(make_grid(to_uint8(x))), params))
        atomic_write_json(out_dir / "settings.json", _plain(params))

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def item_shape(self, spec: DataSpec) -> tuple[int, ...]:
        return tuple(spec.shape)

    def grid(self, x: torch.Tensor, path: str | os.PathLike, params: dict[str, Any], columns: int | None = None) -> Path:
        """One grid PNG of all items, near-square unless ``columns`` is given (training sample grids, strips)."""
        path = Path(path)
        atomic_write_bytes(path, png_bytes(to_pil(make_grid(to_uint8(x), columns=columns)), params))
        return path

    def load(self, path: str | os.PathLike, shape: tuple[int, ...]) -> torch.Tensor:
        """An image file as a (1, C, H, W) float tensor in [-1, 1], fitted to ``shape`` (for img2img, inpainting)."""
        c, h, w = shape
        if h != w:
            raise DataError(f"only square image shapes can be loaded, got {h}x{w}")
        try:
            img, _ = read_image(path, h, "L" if c == 1 else "RGB")
        except FileNotFoundError:
            raise DataError(f"image {path} does not exist") from None
        except Exception as e:  # Pillow raises many kinds on a bad file
            raise DataError(f"image {path} cannot be read ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                            "expected a file Pillow reads (.png, .jpg, ...)") from None
        return to_float(torch.from_numpy(to_array(img)))[None]


def content_end(ids: np.ndarray, prompt_len: int, eot: int) -> int:
    """Where a sampled row ends: at the first end-of-text token that follows generated content (end-of-text
    tokens right after the prompt, before any content, are skipped); the prompt alone when nothing follows."""
    generated = ids[prompt_len:]
    content = np.flatnonzero(generated != eot)
    if content.size == 0:
        return min(prompt_len, len(ids))
    after = np.flatnonzero(generated[content[0]:] == eot)
    return prompt_len + content[0] + after[0] if after.size else len(ids)


class TextCodec:
    """Token ids (n, T) <-> .txt files, through the run's tokenizer."""

    suffix = ".txt"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def decode_one(self, ids: torch.Tensor | np.ndarray | list[int], prompt_len: int = 0) -> str:
        """The prompt plus the generated text up to its end: the first end-of-text token that follows
        generated content (end-of-text tokens right after the prompt, before any content, are skipped)."""
        ids = np.asarray(ids.detach().cpu() if isinstance(ids, torch.Tensor) else ids, dtype=np.int64).reshape(-1)
        return self.tokenizer.decode(ids[:content_end(ids, prompt_len, self.tokenizer.eot_id)])

    def decode_all(self, tokens: torch.Tensor, prompt_len: int = 0) -> list[str]:
        return [self.decode_one(row, prompt_len) for row in _rows(tokens)]

    def decode(self, tokens: torch.Tensor) -> list[str]:
        return self.decode_all(tokens)

    def item_shape(self, spec: DataSpec) -> None:
        return None  # texts are small: no memory estimate needed

    def write_items(self, texts: list[str], out_dir: str | os.PathLike, params: dict[str, Any], start: int = 0) -> list[Path]:
        return self.save_texts(texts, out_dir, params, start, settings=False)

    def finish(self, texts: list[str], out_dir: str | os.PathLike, params: dict[str, Any]) -> None:
        """settings.json, once every sample is written."""
        atomic_write_json(ensure_dir(out_dir, "output folder") / "settings.json", _plain(params))

    def save(self, tokens: torch.Tensor, out_dir: str | os.PathLike, params: dict[str, Any], prompt_len: int = 0) -> list[Path]:
        """Write 000000.txt, 000001.txt, ... and settings.json; returns the per-item paths."""
        return self.save_texts(self.decode_all(tokens, prompt_len), out_dir, params)

    def save_texts(self, texts: list[str], out_dir: str | os.PathLike, params: dict[str, Any], start: int = 0,
                   settings: bool = True) -> list[Path]:
        """``save`` for texts already decoded (and cut at stop strings), numbered from ``start``;
        ``settings=False`` leaves settings.json for the last batch."""
        out_dir = ensure_dir(out_dir, "output folder")
        paths = []
        for i, text in enumerate(texts, start):
            path = out_dir / f"{i:06d}.txt"
            atomic_write_text(path, text)
            paths.append(path)
        if settings:
            self.finish(texts, out_dir, params)
        return paths

    def grid(self, tokens: torch.Tensor, path: str | os.PathLike, params: dict[str, Any], prompt_len: int = 0) -> Path:
        """All samples in one .txt: a parameters line, then each sample under a divider line."""
        path = Path(path)
        parts = [f"# {PNG_KEY} {_json(params)}"]
        for i, text in enumerate(self.decode_all(tokens, prompt_len)):
            parts.append(f"{TEXT_DIVIDER} sample {i} {TEXT_DIVIDER}\n{text}")
        atomic_write_text(path, "\n".join(parts) + "\n")
        return path


def pixel_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image file, read from its header; a one-line error when it cannot be read."""
    try:
        with Image.open(path) as img:
            return img.size
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist") from None
    except Exception as e:  # Pillow raises many kinds on a bad file
        raise DataError(f"image {path} cannot be read ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                        "expected a file Pillow reads (.png, .jpg, ...)") from None


def read_png_params(path: str | os.PathLike) -> dict:
    """The parameters a genforge PNG carries; {} for a PNG without them."""
    try:
        with Image.open(path) as img:
            raw = getattr(img, "text", {}).get(PNG_KEY)
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist") from None
    except Exception as e:
        raise DataError(f"{path} is not a readable PNG ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if raw is None:
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise DataError(f"{path}: the '{PNG_KEY}' text chunk is not valid JSON") from None


# ---- helpers -----------------------------------------------------------------------------------
def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(n, C, H, W) in [-1, 1] -> uint8 array; out-of-range values are clipped, NaN becomes black."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise DataError(f"images must be a (n, C, H, W) tensor with C = 1 or 3, got shape {tuple(x.shape)}")
    x = torch.nan_to_num(x.detach().float().cpu(), nan=-1.0)
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def grid_shape(n: int, columns: int | None = None) -> tuple[int, int]:
    """(rows, cols) of a grid holding n items: near-square, or ``columns`` wide."""
    cols = columns or max(1, math.ceil(math.sqrt(n)))
    return max(1, math.ceil(n / cols)), cols


def make_grid(pixels: np.ndarray, padding: int = GRID_PADDING, fill: int = GRID_FILL,
              columns: int | None = None) -> np.ndarray:
    """uint8 (n, C, H, W) -> one uint8 (C, rows*(H+p)+p, cols*(W+p)+p) image, row-major."""
    n, c, h, w = pixels.shape
    rows, cols = grid_shape(n, columns)
    out = np.full((c, rows * (h + padding) + padding, cols * (w + padding) + padding), fill, dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        y, x = padding + r * (h + padding), padding + k * (w + padding)
        out[:, y : y + h, x : x + w] = pixels[i]
    return out


def png_bytes(img: Image.Image, params: dict) -> bytes:
    info = PngImagePlugin.PngInfo()
    # iTXt keeps any Unicode in params (prompts, paths) intact; tEXt is Latin-1 only
    info.add_itxt(PNG_KEY, _json(params))
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def _rows(tokens) -> list:
    if isinstance(tokens, torch.Tensor):
        tokens = tokens.detach().cpu()
        return list(tokens if tokens.ndim == 2 else tokens[None])
    return list(tokens)
