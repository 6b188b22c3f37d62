"""The periodic work around ``Trainer.step()``: logs and the progress bar, sample grids, checkpoints,
evaluations, stop signals, the time budget and the caller's callback, one small hook each.

``Trainer.fit`` runs ``start`` on every hook, then, step after step, ``Trainer.step()`` followed by each
hook's ``after_step`` (in list order), then ``end`` once training finished normally; ``close`` always
runs last, after an error too. A hook asks the loop to stop with ``trainer.request_stop(reason)``.
Multi-process training decides here, in one place, which process does which periodic work.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

Trainer = Any  # genforge.train.trainer.Trainer (which imports this module)


@dataclass
class StepOutcome:
    """What one ``Trainer.step()`` did."""

    ok: bool  # False: a loss or gradient was NaN/inf and the update was skipped
    logs: dict[str, torch.Tensor]  # "<optimizer>/loss", "<optimizer>/grad_norm" and the family's own logs
    lr_factor: float  # the schedule's factor on every learning rate this step
    seconds: float  # the step's own time (what items/s counts)
    items: int  # images, or tokens, the step trained on


class Hook:
    def start(self, trainer: Trainer) -> None:
        """Before the first step of ``fit``."""

    def after_step(self, trainer: Trainer, outcome: StepOutcome) -> None:
        """After each step (``trainer.global_step`` already counts it)."""

    def end(self, trainer: Trainer) -> None:
        """After the last step, when training ended normally (done, a stop signal, the time budget)."""

    def close(self, trainer: Trainer) -> None:
        """Always, last: release what ``start`` took."""


class StopSignals(Hook):
    """Ctrl-C and SIGTERM ask for a stop after the current step (then a checkpoint); a second one stops now."""

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}

    def start(self, trainer: Trainer) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum, frame):
            if trainer.stop_reason is not None:  # a second signal: stop now
                signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
                raise KeyboardInterrupt
            trainer.request_stop("interrupted")

        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, handler)

    def close(self, trainer: Trainer) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}


class TimeBudget(Hook):
    """``train.max_minutes``: stop once this much time has passed since ``fit`` began."""

    def __init__(self, minutes: float | None) -> None:
        self.seconds = minutes * 60 if minutes else math.inf
        self._start = 0.0

    def start(self, trainer: Trainer) -> None:
        self._start = time.perf_counter()

    def after_step(self, trainer: Trainer, outcome: StepOutcome) -> None:
        if time.perf_counter() - self._start > self.seconds:
            trainer.request_stop("time budget")


class ProgressLog(Hook):
    """The progress bar, and every ``train.log_every`` steps a record in metrics.jsonl and TensorBoard:
    losses, learning-rate factor, items/s over the window (training steps only), health warnings."""

    def __init__(self, show: bool, unit: str) -> None:
        self.show, self.unit = show, unit
        self.bar = None
        self._window_seconds, self._window_items, self._start = 0.0, 0, 0.0

    def start(self, trainer: Trainer) -> None:
        self._start = time.perf_counter()
        self.bar = tqdm(total=trainer.cfg.steps, initial=trainer.global_step, disable=not self.show,
                        desc=trainer.run.config.family, dynamic_ncols=True, leave=True)

    def after_step(self, trainer: Trainer, outcome: StepOutcome) -> None:
        cfg, step = trainer.cfg, trainer.global_step
        self._window_seconds += outcome.seconds
        self._window_items += outcome.items
        self.bar.update(1)
        if step % cfg.log_every and step != cfg.steps:
            return
        rate = self._window_items / max(self._window_seconds, 1e-9)
        self._window_seconds, self._window_items = 0.0, 0
        trainer.last_losses = {k: float(v) for k, v in outcome.logs.items()}
        record = {"step": step, "lr_factor": outcome.lr_factor, "items_per_s": rate,
                  "bad_steps": trainer.bad_steps_total, "elapsed_s": time.perf_counter() - self._start,
                  **trainer.last_losses}
        if trainer.peak_flops:  # rate is tokens/s: flops_per_token exists for text families only
            from genforge.train.flops import mfu

            record["mfu"] = mfu(rate, trainer.flops_per_token, trainer.peak_flops)
        warnings = trainer.health_warnings(record)
        if warnings:
            record["warnings"] = warnings
        trainer.log(record)
        shown = {k.replace("/loss", ""): f"{v:.4f}" for k, v in trainer.last_losses.items() if k.endswith("/loss")}
        self.bar.set_postfix({**shown, self.unit: f"{rate:,.0f}"}, refresh=False)

    def close(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()


class SampleGrids(Hook):
    """A sample grid every ``train.sample_every`` steps, and one of the final weights."""

    def after_step(self, trainer: Trainer, outcome: StepOutcome) -> None:
        if trainer.cfg.sample_every and trainer.global_step % trainer.cfg.sample_every == 0:
            trainer.write_sample_grid()

    def end(self, trainer: Trainer) -> None:
        if trainer.last_grid_step != trainer.global_step:
            trainer.write_sample_grid()


class Checkpoints(Hook):
    """A checkpoint every ``train.ckpt_every`` steps, or once ``train.ckpt_minutes`` have passed since the
    last one, and one at the end (after a stop signal or the time budget too)."""

    def start(self, trainer: Trainer) -> None:
        trainer.last_checkpoint_time = time.perf_counter()

    def after_step(self, trainer: Trainer, outcome: StepOutcome) -> None:
        cfg = trainer.cfg
        by_steps = cfg.ckpt_every and trainer.global_step % cfg.ckpt_every == 0
        by_time = cfg.ckpt_minutes and time.perf_counter() - trainer.last_checkpoint_time >= cfg.ckpt_minutes * 60
        if trainer.sharded and cfg.ckpt_minutes:  # every process takes part in a sharded checkpoint: agree when
            by_time = trainer.dist.any(bool(by_time), trainer.device)
        if by_steps or by_time:
            trainer.save_checkpoint()

    def end(self, trainer: Trainer) -> None:
        trainer.save_checkpoint()


class Evaluations(Hook):
    """``train.eval_every``: score the sampling weights (logged as eval/*)."""

    def after_step(self, trainer: Trainer, outcome: StepOutcome) -> None:
        if trainer.cfg.eval_every and trainer.global_step % trainer.cfg.eval_every == 0:
            trainer.evaluate()


class Callback(Hook):
    """The caller's ``on_step(trainer, step)``, after everything else of the step."""

    def __init__(self, on_step: Callable[[Trainer, int], None]) -> None:
        self.on_step = on_step

    def after_step(self, trainer: Trainer, outcome: StepOutcome) -> None:
        self.on_step(trainer, trainer.global_step)


def default_hooks(trainer: Trainer, on_step: Callable[[Trainer, int], None] | None = None) -> list[Hook]:
    """What ``genforge train`` does around the steps, in this order after each step (and at the end: the
    final checkpoint before the final grid)."""
    if not trainer.dist.main:  # another process of a multi-process run: rank 0 writes, every rank may stop
        if trainer.sharded:  # ... and takes part in gathering checkpoints and in sharded forward passes
            return [StopSignals(), TimeBudget(trainer.cfg.max_minutes), Checkpoints(), SampleGrids(), Evaluations()]
        return [StopSignals(), TimeBudget(trainer.cfg.max_minutes)]
    hooks: list[Hook] = [StopSignals(), TimeBudget(trainer.cfg.max_minutes),
                         ProgressLog(trainer.progress, trainer.rate_unit), Checkpoints(), SampleGrids(), Evaluations()]
    if on_step is not None:
        hooks.append(Callback(on_step))
    return hooks
