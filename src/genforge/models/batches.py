"""How many samples are made at once, and the seed of each batch."""

from __future__ import annotations

import torch

from genforge.train.trainer import step_seed

SAMPLE_BATCH = 256  # items generated at once: memory stays bounded whatever the number of samples
MAX_SAMPLES = 999_999  # per call: sample files are numbered 000000 to 999999
MAX_REFINE = 1024  # results of one refine call, held in memory together
MAX_GRID_SIDE = 64  # an interpolation grid between 4 seeds is at most this many images on a side
GRID_MAX = 256  # grid.png shows at most this many images (the first ones)
IN_MEMORY_SHARE = 0.25  # of the machine's memory that samples returned together may take


def sample_batches(n: int, seed: int, size: int | None = None) -> list[tuple[int, int, int]]:
    """``(start, size, seed)`` of each batch of ``n`` samples. The first batch uses ``seed`` itself, so
    up to ``SAMPLE_BATCH`` samples are exactly what one call with that seed draws; later batches use
    seeds derived from it (and from their index), so every sample is reproducible."""
    size = size or SAMPLE_BATCH
    return [(start, min(size, n - start), seed if start == 0 else step_seed(seed, start // size))
            for start in range(0, n, size)]


def concat(parts: list):
    """Batches joined: one tensor, one list of items, or one table (DataFrames, as tables decode)."""
    if isinstance(parts[0], list):
        return [item for part in parts for item in part]
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts)
    import pandas as pd  # only table runs get here

    return pd.concat(parts, ignore_index=True)
