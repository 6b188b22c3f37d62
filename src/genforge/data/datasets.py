"""In-memory datasets the trainer draws batches from: random items (images) or random windows (text).

Batches are drawn with ``torch.randint`` from a CPU ``torch.Generator`` the caller owns, so a seed
fixes the whole sequence of batches and a resumed run can continue it. Tensors come back on the CPU.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from genforge.errors import DataError

Indices = int | slice | Sequence[int] | np.ndarray | torch.Tensor


class ImageDataset:
    """uint8 images (N, C, H, W) and optional int64 labels; batches are float32 in [-1, 1]."""

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

    def batch(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``batch_size`` items drawn uniformly with replacement: {"x": (B, C, H, W) float32, "y": (B,) int64}."""
        if len(self) == 0:
            raise DataError(f"{self.name} has no images to draw a batch from")
        return self.get(torch.randint(len(self), (batch_size,), generator=generator))

    def get(self, indices: Indices) -> dict[str, torch.Tensor]:
        """Chosen items in batch form (for evaluation and reconstruction); "y" only when there are labels."""
        idx = _as_index(indices)
        out = {"x": to_float(self.images[idx])}
        if self.labels is not None:
            out["y"] = self.labels[idx]
        return out


class TextDataset:
    """A token stream (typically a read-only memmap); batches are random windows of ``block_size`` tokens."""

    def __init__(self, tokens: np.ndarray, block_size: int, name: str = "text", hint: str = "more text",
                 fim_rate: float = 0.0, fim_ids=None):
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
        if not self.fim_rate:
            return self.get(starts)
        from genforge.data.fim import apply_fim

        windows = apply_fim(self._windows(starts), self.fim_rate, self.fim_ids, generator)
        return {"x": windows[:, :-1].contiguous(), "y": windows[:, 1:].contiguous()}

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
