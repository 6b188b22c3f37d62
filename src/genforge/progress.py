"""Progress of long loops (sampling steps, tokens, inversion steps), reported to whoever asked, and a way to stop them.

A loop calls ``tick(done, total)`` after each unit of its work; a caller that wants to follow the work (the
studio's job queue) runs it inside ``reporting(callback)``, and the callback gets every tick made inside, in the
thread that makes it. Outside any reporting block a tick costs one context-variable read. The callback may raise
(``Cancelled``, to stop a job): the exception leaves the loop untouched, through the sampler, to the caller.

    with progress.reporting(job.tick):        # the studio, around a job's work
        model.sample(16, generator=g)
    progress.tick(i + 1, steps)               # a loop, after each step
    denoise = progress.counted(denoise, n)    # a dispatcher: each call of the denoiser is one of n ticks

The callback lives in a ``ContextVar``, so a block covers its own thread (or asyncio task) only: work another
thread runs at the same time reports to that thread's block, if any. Stdlib only, below every other layer.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

Callback = Callable[[int, int], None]  # callback(done, total)
P = ParamSpec("P")
R = TypeVar("R")

_CALLBACK: contextvars.ContextVar[Callback | None] = contextvars.ContextVar("genforge_progress", default=None)


class Cancelled(Exception):
    """Raised by a progress callback to stop the work it follows (a studio job cancelled by its user).

    Loops do not catch it: it reaches whoever started the work, which treats it as a cancellation, not a failure.
    Stdlib only like the rest of this module, hence not a ``GenforgeError``."""


@contextlib.contextmanager
def reporting(callback: Callback | None) -> Iterator[None]:
    """Ticks inside this block (this thread or task only) call ``callback(done, total)``; an inner block replaces
    an outer one for its duration, and ``None`` silences the ticks inside."""
    token = _CALLBACK.set(callback)
    try:
        yield
    finally:
        _CALLBACK.reset(token)


def tick(done: int, total: int) -> None:
    """``done`` units of ``total`` are finished: tell the current reporting block's callback, if any. Whatever the
    callback raises propagates to the loop's caller."""
    callback = _CALLBACK.get()
    if callback is not None:
        callback(done, total)


def counted(fn: Callable[P, R], total: int) -> Callable[P, R]:
    """``fn`` whose k-th call, once it returns, ticks (k, total): wrap a denoiser once where its calls are known."""
    calls = 0

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        nonlocal calls
        out = fn(*args, **kwargs)
        calls += 1
        tick(calls, total)
        return out

    return wrapper


@contextlib.contextmanager
def summed(total: int) -> Iterator[None]:
    """Several loops run one after the other as one job of ``total`` units: the current callback sees their ticks
    added up, (units of every loop so far, total). A loop counts from 1 up, so a tick below or equal to the
    previous one starts the next loop (RePaint runs the sampler once per pass of every step)."""
    outer = _CALLBACK.get()
    if outer is None:
        yield
        return
    done = last = 0

    def add(inner: int, _inner_total: int) -> None:
        nonlocal done, last
        done += inner - last if inner > last else inner
        last = inner
        outer(done, total)

    with reporting(add):
        yield
