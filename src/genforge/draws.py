"""The random draws of a training step, made so that they do not depend on how its batch is split.

A step's batch may be split into parts: micro-batches (``train.grad_accum``) and processes (torchrun). Each
part draws the noise of the whole batch from the same random state and keeps its own rows, so the parts
together see exactly the noise one unsplit batch would: two processes with batch 4, one process
accumulating two micro-batches of 4 and one process with batch 8 draw the same numbers for the same
items. With one part (the usual case) a draw is the plain ``torch`` call it replaces.

    with draws.part(index, count):        # the trainer, around one part's work
        noise = draws.randn_like(x)       # a family, in its training step
"""

from __future__ import annotations

import contextlib

import torch

_PART = (0, 1, 0)  # (index, count, micro): which part of the step's batch, and which micro-batch of this process
STEP_SEED_MULTIPLIER = 0x9E3779B1  # spreads (seed, step) pairs over the generator's seed space


def step_seed(seed: int, step: int) -> int:
    """The seed of step ``step``'s random state (its batch, noise and dropout): a function of ``(seed, step)``
    alone, so a resumed run draws what an uninterrupted one does. Here, below the data layer, so datasets
    can seed their own draws the way the trainer does."""
    return (seed * STEP_SEED_MULTIPLIER + step) % (2**63)


@contextlib.contextmanager
def part(index: int, count: int, micro: int = 0):
    """Draws inside are this part's rows of the whole batch's (``count`` parts of equal size); ``micro`` is the
    part's micro-batch number in this process (``train.grad_accum``)."""
    global _PART
    previous, _PART = _PART, (int(index), int(count), int(micro))
    try:
        yield
    finally:
        _PART = previous


def first_micro_batch() -> bool:
    """Whether this is the process's first micro-batch of the step: where a family counts its updates (once
    per optimizer step, however the batch is split)."""
    return _PART[2] == 0


def _rows(n: int, draw) -> torch.Tensor:
    index, count, _ = _PART
    if count == 1:
        return draw(n)
    return draw(n * count)[index * n:(index + 1) * n]


def randn(n: int, *shape: int, device=None, dtype=None) -> torch.Tensor:
    """Standard normal (n, *shape): this part's rows."""
    return _rows(n, lambda rows: torch.randn(rows, *shape, device=device, dtype=dtype))


def randn_like(x: torch.Tensor) -> torch.Tensor:
    return randn(x.shape[0], *x.shape[1:], device=x.device, dtype=x.dtype)


def rand(n: int, *shape: int, device=None, dtype=None) -> torch.Tensor:
    """Uniform [0, 1) (n, *shape): this part's rows."""
    return _rows(n, lambda rows: torch.rand(rows, *shape, device=device, dtype=dtype))


def randint(low: int, high: int, n: int, device=None) -> torch.Tensor:
    """Integers in [low, high) (n,): this part's rows."""
    return _rows(n, lambda rows: torch.randint(low, high, (rows,), device=device))
