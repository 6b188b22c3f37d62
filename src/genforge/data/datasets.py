"""In-memory datasets the trainer draws batches from: images and table rows in epoch order, random windows of text.

The trainer asks for each step's global batch with ``step_batch(dataset, seed, step, n)``, a function of
those four alone, so a resumed run continues it and N processes with batch n / N (each taking its slice)
see what one process with batch n does. Images and table rows come in epoch order (``EpochDataset.step_batch``):
every item once per epoch, in a new order each epoch. Any other dataset, a plug-in's too, needs only
``batch(n, generator)`` and ``__len__``: it draws from a CPU ``torch.Generator`` seeded from ``(seed, step)``,
which for text is a random window per row. Tensors come back on the CPU.
"""

from __future__ import annotations

import abc
from typing import Protocol, Sequence

import numpy as np
import torch

from genforge.draws import step_seed
from genforge.errors import DataError

Indices = int | slice | Sequence[int] | np.ndarray | torch.Tensor
Batch = dict[str, torch.Tensor]
EPOCH_SEED_SALT = 0x5851F42D4C957F2D  # keeps epoch e's order apart from step e's draws, which share step_seed


class Batches(Protocol):
    """What the trainer draws from: all a plug-in modality's dataset has to have."""

    def __len__(self) -> int: ...

    def batch(self, batch_size: int, generator: torch.Generator) -> Batch: ...


class Dataset(abc.ABC):
    """The datasets here: ``step_batch`` is the step's global batch, which a subclass may order its own way."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """The number of items (text: of windows)."""

    @abc.abstractmethod
    def batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        """``batch_size`` items drawn with ``generator``."""

    def step_batch(self, seed: int, step: int, n: int) -> Batch:
        """Step ``step``'s global batch of ``n`` items: by default ``batch`` with the step's generator."""
        return self.batch(n, step_generator(seed, step))


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator a step's batch is drawn from."""
    return torch.Generator().manual_seed(step_seed(seed, step))


def step_batch(dataset: Batches, seed: int, step: int, n: int) -> Batch:
    """Step ``step``'s global batch of ``n`` items, a function of ``(seed, step, n)`` alone: the trainer's one
    way to draw. A plug-in dataset needs no base class: it draws with the step's generator."""
    if isinstance(dataset, Dataset):
        return dataset.step_batch(seed, step, n)
    return dataset.batch(n, step_generator(seed, step))


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """Epoch ``epoch``'s order of ``0..n-1``: a permutation seeded from ``(seed, epoch)`` alone."""
    generator = torch.Generator().manual_seed(step_seed(seed, epoch) ^ EPOCH_SEED_SALT)
    return torch.randperm(n, generator=generator)


class EpochDataset(Dataset):
    """Items read in epoch order: a subclass has ``__len__``, ``get(indices)``, ``name`` and ``items`` (what
    they are called in errors)."""

    items = "items"
    _order: tuple[int, int, torch.Tensor] | None = None  # (seed, epoch, order): the epoch being read

    @abc.abstractmethod
    def get(self, indices: Indices) -> Batch:
        """Chosen items in batch form."""

    def batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        """``batch_size`` items drawn uniformly with replacement. For looks at the data (feature statistics,
        reconstructions); training reads ``step_batch``."""
        self._require_items()
        return self.get(torch.randint(len(self), (batch_size,), generator=generator))

    def step_batch(self, seed: int, step: int, n: int) -> Batch:
        """Positions ``[step * n, (step + 1) * n)`` of the training sequence, the epoch orders one after
        another (``epoch_order``): every item once per epoch, a new order each epoch. A batch may cross
        into the next epoch, or span several when there are fewer than ``n`` items."""
        return self.get(self.step_indices(seed, step, n))

    def step_indices(self, seed: int, step: int, n: int) -> torch.Tensor:
        """The item indices of ``step_batch``: (n,) int64."""
        self._require_items()
        parts, position, end = [], step * n, (step + 1) * n
        while position < end:
            epoch, offset = divmod(position, len(self))
            take = min(len(self) - offset, end - position)
            parts.append(self._epoch_order(seed, epoch)[offset:offset + take])
            position += take
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)

    def _epoch_order(self, seed: int, epoch: int) -> torch.Tensor:
        # steps read an epoch's order one after another: draw it once, not once per step
        if self._order is None or self._order[:2] != (seed, epoch):
            self._order = (seed, epoch, epoch_order(len(self), seed, epoch))
        return self._order[2]

    def _require_items(self) -> None:
        if len(self) == 0:
            raise DataError(f"{self.name} has no {self.items} to draw a batch from")


class ImageDataset(EpochDataset):
    """uint8 images (N, C, H, W) and optional int64 labels; batches are float32 in [-1, 1]."""

    items = "images"

    def __init__(self, images: np.ndarray, labels: np.ndarray | None = None, class_names: list[str] | None = None,
                 name: str = "images"):
        if images.dtype != np.uint8 or images.ndim != 4:
            raise DataError(f"{name}: expected uint8 images of shape (N, C, H, W), got {images.dtype} {images.shape}")
        if labels is not None and labels.shape != (len(images),):
            raise DataError(f"{name}: {len(images)} images but labels of shape {labels.shape}")
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = None if labels is None else torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
        self.class_names = list(class_names or [])
        self.name = name

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def get(self, indices: Indices) -> dict[str, torch.Tensor]:
        """Chosen items in batch form, {"x": (B, C, H, W) float32, "y": (B,) int64} (for evaluation and
        reconstruction); "y" only when there are labels."""
        idx = _as_index(indices)
        out = {"x": to_float(self.images[idx])}
        if self.labels is not None:
            out["y"] = self.labels[idx]
        return out


class WaveDataset(EpochDataset):
    """16-bit PCM clips (N, C, L) int16 and optional int64 labels; batches are float32 in [-1, 1)."""

    items = "clips"

    def __init__(self, waves: np.ndarray, labels: np.ndarray | None = None, class_names: list[str] | None = None,
                 name: str = "clips"):
        if waves.dtype != np.int16 or waves.ndim != 3:
            raise DataError(f"{name}: expected int16 clips of shape (N, C, L), got {waves.dtype} {waves.shape}")
        if labels is not None and labels.shape != (len(waves),):
            raise DataError(f"{name}: {len(waves)} clips but labels of shape {labels.shape}")
        self.waves = torch.from_numpy(np.ascontiguousarray(waves))
        self.labels = None if labels is None else torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
        self.class_names = list(class_names or [])
        self.name = name

    def __len__(self) -> int:
        return self.waves.shape[0]

    def get(self, indices: Indices) -> Batch:
        """{"x": (B, C, L) float32 in [-1, 1), "y": (B,) int64} ("y" only when there are labels)."""
        idx = _as_index(indices)
        out = {"x": self.waves[idx].float().div_(32768.0)}
        if self.labels is not None:
            out["y"] = self.labels[idx]
        return out


class TableDataset(EpochDataset):
    """Encoded table rows (N, D) float32 (``table_transform``); batches are {"x": (B, D) float32}."""

    items = "rows"

    def __init__(self, rows: np.ndarray, name: str = "table"):
        if rows.dtype != np.float32 or rows.ndim != 2:
            raise DataError(f"{name}: expected float32 rows of shape (N, D), got {rows.dtype} {rows.shape}")
        self.rows = torch.from_numpy(np.ascontiguousarray(rows))
        self.name = name

    def __len__(self) -> int:
        return self.rows.shape[0]

    def get(self, indices: Indices) -> Batch:
        return {"x": self.rows[_as_index(indices)]}


class TextDataset(Dataset):
    """A token stream (typically a read-only memmap); batches are random windows of ``block_size`` tokens."""

    def __init__(self, tokens: np.ndarray, block_size: int, name: str = "text", hint: str = "more text",
                 fim_rate: float = 0.0, fim_ids=None, doc_starts: float = 0.0, eot_id: int | None = None):
        if block_size < 1:
            raise DataError(f"block_size must be at least 1, got {block_size}")
        if len(tokens) < block_size + 1:
            raise DataError(
                f"{name} has {len(tokens)} tokens, fewer than data.block_size + 1 = {block_size + 1}; "
                f"use a smaller data.block_size (at most {max(len(tokens) - 1, 1)}) or {hint}"
            )
        self.tokens = tokens
        self.block_size = block_size
        self.name = name
        self._offsets = np.arange(block_size + 1)
        self.fim_rate, self.fim_ids = fim_rate, fim_ids  # fill-in-the-middle for training batches (fim.py)
        # that share of training windows starts at an end-of-text token: the model sees how documents open
        self.doc_starts, self.eot_id = (doc_starts, eot_id) if eot_id is not None else (0.0, None)
        self._eot_offsets: np.ndarray | None = None

    def __len__(self) -> int:
        """The number of distinct windows (start offsets)."""
        return len(self.tokens) - self.block_size

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    def batch(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """{"x": (B, T) int64, "y": (B, T) int64} where y is x shifted left by one token; with a FIM rate,
        that share of the windows comes in prefix-suffix-middle order."""
        starts = torch.randint(len(self), (batch_size,), generator=generator)
        if self.doc_starts:
            starts = self._at_doc_starts(starts, generator)
        if not self.fim_rate:
            return self.get(starts)
        from genforge.data.fim import apply_fim

        windows = apply_fim(self._windows(starts), self.fim_rate, self.fim_ids, generator)
        return {"x": windows[:, :-1].contiguous(), "y": windows[:, 1:].contiguous()}

    def eot_offsets(self) -> np.ndarray:
        """Offsets of the end-of-text tokens a window can start at (found once, on first use)."""
        if self._eot_offsets is None:
            found = np.flatnonzero(np.asarray(self.tokens) == self.eot_id)
            self._eot_offsets = found[found < len(self)]
        return self._eot_offsets

    def _at_doc_starts(self, starts: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``starts`` with a ``doc_starts`` share moved onto randomly chosen end-of-text tokens (none when the
        stream has no document boundary); the draws come from ``generator`` alone, whatever the share."""
        picked = torch.rand(starts.shape, generator=generator) < self.doc_starts
        which = torch.randint(2**62, starts.shape, generator=generator)
        offsets = self.eot_offsets()
        if not len(offsets):
            return starts
        return torch.where(picked, torch.from_numpy(offsets)[which % len(offsets)], starts)

    def get(self, starts: Indices) -> dict[str, torch.Tensor]:
        """Windows beginning at the given token offsets, in batch form."""
        windows = self._windows(starts)
        # two contiguous tensors, so losses may .view(-1) them
        return {"x": windows[:, :-1].contiguous(), "y": windows[:, 1:].contiguous()}

    def _windows(self, starts: Indices) -> torch.Tensor:
        """(B, block_size + 1) int64 token windows."""
        if isinstance(starts, slice):
            starts = np.arange(len(self))[starts]
        elif isinstance(starts, torch.Tensor):
            starts = starts.cpu().numpy()
        starts = np.asarray(starts, dtype=np.int64).reshape(-1)
        if starts.size and (starts.min() < 0 or starts.max() >= len(self)):
            raise DataError(f"{self.name}: window starts must be in 0..{len(self) - 1}")
        return torch.from_numpy(np.asarray(self.tokens[starts[:, None] + self._offsets], dtype=np.int64))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


def _as_index(indices: Indices):
    if isinstance(indices, (int, slice)):
        return [indices] if isinstance(indices, int) else indices
    if isinstance(indices, torch.Tensor):
        return indices.to("cpu", torch.long).reshape(-1)
    return torch.as_tensor(np.asarray(indices, dtype=np.int64).reshape(-1))
