"""One Trainer for every family.

The family's ``training_step`` yields ``(optimizer_name, loss, logs)`` phases; ``Trainer.step()`` runs
one optimisation step: the step's seeds and learning rate, a batch, backward, gradient clipping and the
optimizer step between yields, then the EMA update. ``Trainer.fit()`` repeats it, with the periodic
work (logs, sample grids, checkpoints, evaluations, stop signals, the time budget) as hooks around it
(``hooks.py``). Every step's randomness (batch choice, noise, dropout) is seeded from ``(seed, step)``,
so ``--resume`` continues exactly where a run stopped.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from genforge import draws
from genforge.data.datasets import step_batch
from genforge.draws import step_seed  # its home is below the data layer; still importable from here
from genforge.errors import RunError, TrainingDiverged
from genforge.families.base import Family
from genforge.io import save_tensors, storage_error, unique_tensors
from genforge.modalities import get_modality
from genforge.runs import Run
from genforge.train import fsdp, sync_batchnorm
from genforge.train.checkpoint import TrainerState, load_state, read_state, save_state
from genforge.train.device import (autocast, autocast_dtype, configure_backends, resolve_device, to_device,
                                   use_channels_last)
from genforge.train.distributed import Distributed
from genforge.train.ema import EMA
from genforge.train.flops import peak_flops
from genforge.train.hooks import Hook, StepOutcome, default_hooks
from genforge.train.schedule import lr_factor

@dataclass
class TrainResult:
    run: Run
    step: int
    stopped_by: str  # "done" | "interrupted" | "time budget"
    seconds: float
    items_per_s: float  # mean over the steps this call ran, sample grids and checkpoints excluded
    last_losses: dict[str, float] = field(default_factory=dict)
    bad_steps: int = 0
    warnings: list[str] = field(default_factory=list)  # training-health warnings, as they were shown
    main_process: bool = True  # False in the other processes of a multi-process run (rank 0 reports)


class Trainer:
    """Trains ``family`` on ``data.train`` into ``run``. Library code: no printing except the progress bar."""

    def __init__(
        self,
        run: Run,
        family: Family,
        data,
        *,
        progress: bool = True,
        on_step: Callable[["Trainer", int], None] | None = None,
        hooks: list[Hook] | None = None,
        dist: Distributed | None = None,
    ):
        """``hooks`` replace the default periodic work (``hooks.default_hooks``); ``on_step(trainer, step)``
        is called after each step of ``fit`` with the defaults. ``dist``: this process's place among several
        (``distributed.py``); alone by default."""
        self.dist = dist if dist is not None else Distributed()
        self.run = run
        self.cfg = run.config.train
        self.data = data
        self.modality = get_modality(data.spec.modality)
        self.progress = progress
        self._evaluator = None
        self.device = resolve_device(self.cfg.device)
        configure_backends(self.device)
        self.amp_dtype = autocast_dtype(self.device, self.cfg.precision)
        self.family = family.to(self.device)
        self.channels_last = use_channels_last(self.device, self.cfg.memory_format)
        if self.channels_last:  # convolution weights NHWC, as the batches are (_batch)
            self.family.to(memory_format=torch.channels_last)
        if self.cfg.sync_batchnorm and self.dist.active:  # BatchNorm over the global batch; before EMA copies it
            self.family = sync_batchnorm.convert(self.family, self.device)
        if self.cfg.activation_checkpointing:
            self.family.set_activation_checkpointing(True)
        self.ema = EMA(self.family, self.cfg.ema_decay, self.cfg.ema_gamma) if self.cfg.ema_decay > 0 else None
        # FSDP: weights, gradients and optimizer state sharded over the processes (fsdp.py); alone, nothing to shard
        self.sharded = self.cfg.fsdp and self.dist.active
        if self.sharded:
            units = self.family.fsdp_modules()
            fsdp.shard(self.family, units, self.amp_dtype)
            if self.ema is not None:
                fsdp.shard(self.ema.shadow, self.ema.shadow.fsdp_modules(), self.amp_dtype)
        self.optimizers = self._build_optimizers()
        self.base_lrs = {name: [g["lr"] for g in opt.param_groups] for name, opt in self.optimizers.items()}
        self.global_step = 0  # optimisation steps taken (skipped non-finite ones included), resumed ones too
        self.bad_steps_total = 0
        self._consecutive_bad = 0
        self.warnings: list[str] = []
        self.last_losses: dict[str, float] = {}  # at the last logged step
        self.items_seen = 0
        self.stop_reason: str | None = None
        self._codec = None
        self._writer = None
        self.last_grid_step = -1
        self.last_checkpoint_time = time.perf_counter()
        self.flops_per_token, self.peak_flops = self._mfu_terms()
        self.hooks = hooks if hooks is not None else default_hooks(self, on_step)

    @property
    def items_per_step(self) -> int:
        """Items one step trains on (over all processes), counted as the modality counts them: images, or
        tokens for token streams."""
        return self.modality.items_per_step(self.run.spec, self.cfg.batch_size) * self.cfg.grad_accum * self.dist.world

    @property
    def rate_unit(self) -> str:
        return f"{self.modality.unit}/s"

    # ---- set-up -------------------------------------------------------------------------------
    def _build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        optimizers = {}
        fused = self.device.type == "cuda"
        for name, group in self.family.optimizer_groups().items():
            lr = group.lr if group.lr is not None else self.cfg.lr
            betas = tuple(group.betas if group.betas is not None else self.cfg.betas)
            wd = group.weight_decay if group.weight_decay is not None else self.cfg.weight_decay
            param_groups = [{"params": list(group.params), "weight_decay": wd}]
            if group.no_decay:
                param_groups.append({"params": list(group.no_decay), "weight_decay": 0.0})
            kwargs = {"fused": True} if fused else {}
            optimizers[name] = torch.optim.AdamW(param_groups, lr=lr, betas=betas, **kwargs)
        return optimizers

    def compile(self) -> None:
        """``torch.compile`` each network of the family in place (state-dict keys unchanged).

        The family's own ``training_step`` is a generator and stays eager; its networks do the work.
        """
        for child in self.family.children():
            child.compile()

    @property
    def sampling_model(self) -> Family:
        return self.ema.shadow if self.ema is not None else self.family

    def _mfu_terms(self) -> tuple[float | None, float | None]:
        """(training FLOPs per token, the device's peak FLOP/s) when MFU can be logged, else (None, None):
        only on CUDA, for a device in train/flops.py's table and a family that counts its FLOPs."""
        count = getattr(self.family, "flops_per_token", None)
        if self.device.type != "cuda" or count is None:
            return None, None
        peak = peak_flops(torch.cuda.get_device_name(self.device))
        return (float(count()), peak) if peak else (None, None)

    # ---- checkpoints --------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """The trainer state and the sampling weights, written by rank 0 (every process calls this: a sharded
        run gathers the whole state first)."""
        self.last_checkpoint_time = time.perf_counter()
        info = {"step": self.global_step, "bad_steps": self.bad_steps_total, "items_seen": self.items_seen,
                "ema_updates": self.ema.updates if self.ema else 0}
        shadow = self.ema.shadow if self.ema else None
        if self.sharded:
            state = TrainerState(fsdp.full_model_state(self.family),
                                 fsdp.full_model_state(shadow) if shadow is not None else None,
                                 {name: fsdp.full_optimizer_state(self.family, opt) for name, opt in self.optimizers.items()},
                                 info)
        elif self.dist.main:
            state = TrainerState.of(self.family, shadow, self.optimizers, info)
        if not self.dist.main:
            return
        save_state(self.run.state_path, state)
        meta = {"family": self.run.config.family, "step": str(self.global_step), "format": "genforge-model-1"}
        save_tensors(unique_tensors(state.ema if state.ema is not None else state.model), self.run.model_path, metadata=meta)

    def load_checkpoint(self) -> None:
        if not self.run.state_path.is_file():
            raise RunError(f"nothing to resume in {self.run.path}: trainer_state.safetensors is missing")
        shadow = self.ema.shadow if self.ema else None
        if self.sharded:
            state = read_state(self.run.state_path, self.optimizers)
            fsdp.load_full_model_state(self.family, state.model)
            if shadow is not None:
                fsdp.load_full_model_state(shadow, state.ema or {})
            for name, opt in self.optimizers.items():
                fsdp.load_full_optimizer_state(self.family, opt, state.optimizers[name])
            info = state.info
        else:
            info = load_state(self.run.state_path, self.family, shadow, self.optimizers)
        self.global_step = int(info["step"])
        self.bad_steps_total = int(info.get("bad_steps", 0))
        self.items_seen = int(info.get("items_seen", 0))
        if self.ema is not None:
            self.ema.updates = int(info.get("ema_updates", 0))

    # ---- logging ------------------------------------------------------------------------------
    def log(self, record: dict[str, Any]) -> None:
        """Append ``record`` to metrics.jsonl and its numbers to TensorBoard."""
        try:
            with open(self.run.metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise storage_error(self.run.metrics_path, e) from None
        try:
            if self._writer is None:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(log_dir=str(self.run.path / "tb"))
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._writer.add_scalar(k, v, record["step"])
            self._writer.flush()
        except OSError as e:
            raise storage_error(self.run.path / "tb", e) from None

    def health_warnings(self, record: dict[str, Any]) -> list[str]:
        """The family's training-health warnings for this record (GAN collapse, say), shown above the
        progress bar and kept in the record, so metrics.jsonl says when they appeared."""
        check = getattr(self.family, "health_warnings", None)
        warnings = list(check(record)) if check is not None else []
        for message in warnings:
            tqdm.write(f"warning: step {record['step']}: {message}", file=sys.stderr)
        self.warnings.extend(warnings)
        return warnings

    def write_sample_grid(self) -> Path | None:
        """A grid of samples of the sampling weights, written by rank 0 (a sharded run's processes all sample:
        its forward passes need every one); returns its path (None in the other processes)."""
        if self._codec is None:
            self._codec = self.modality.codec(self.run.spec, self.data.tokenizer)
        model = self.sampling_model
        was_training = model.training
        model.eval()
        n = self.modality.grid_items(self.cfg.grid_size)
        generator = torch.Generator(device=self.device).manual_seed(self.cfg.seed)
        with autocast(self.device, self.amp_dtype):
            items = model.sample(n, generator=generator, **self.modality.sample_options(self.run.spec, self.data.tokenizer))
        model.train(was_training)
        self.last_grid_step = self.global_step
        if not self.dist.main:
            return None
        path = self.run.samples_dir / f"step_{self.global_step:07d}{self._codec.suffix}"
        self._codec.grid(items.float() if items.is_floating_point() else items, path,
                         {"family": self.run.config.family, "run": str(self.run.path), "step": self.global_step,
                          "seed": self.cfg.seed})
        return path

    def evaluate(self) -> dict:
        """Score the sampling weights now (``genforge eval``'s metrics) and log them as eval/* (rank 0; a sharded
        run's processes all evaluate, in step)."""
        from genforge.evaluate.evaluator import QUICK_LIKELIHOOD_SAMPLES, Evaluator
        from genforge.families.base import eval_mode

        if self._evaluator is None:
            n = self.cfg.eval_n or self.modality.training_eval_n
            self._evaluator = Evaluator(self.data, data=self.run.config.data.source, features=self.cfg.eval_features, n=n,
                                        seed=self.cfg.seed, device=self.device, progress=self.progress,
                                        likelihood_samples=QUICK_LIKELIHOOD_SAMPLES)
        with eval_mode(self.sampling_model):
            result = self._evaluator(self.sampling_model, self.amp_dtype)  # {"metrics", "sampling", ...}
        record = {"step": self.global_step, **{f"eval/{k}": v for k, v in result["metrics"].items()}}
        if self.dist.main:
            self.log(record)
        return result

    # ---- stopping -----------------------------------------------------------------------------
    def request_stop(self, reason: str = "interrupted") -> None:
        """Stop ``fit`` after the current step (a checkpoint and a grid are still written)."""
        self.stop_reason = reason

    # ---- the loop -----------------------------------------------------------------------------
    def _set_lr(self) -> float:
        factor = lr_factor(self.global_step, self.cfg.steps, self.cfg.warmup_steps, self.cfg.min_lr_ratio)
        for name, opt in self.optimizers.items():
            for group, base in zip(opt.param_groups, self.base_lrs[name]):
                group["lr"] = base * factor
        return factor

    def _run_phases(self, micro_batches: list[dict[str, torch.Tensor]]) -> tuple[bool, dict[str, torch.Tensor]]:
        """Every phase the family yields: for each, every micro-batch's loss and its backward (each divided by
        their number, so the gradients add up to the mean over the whole batch; one micro-batch's activations
        are alive at a time), the gradients averaged over the processes, clipping and the optimizer step. A
        GAN's generator phase is computed after the discriminator's step, micro-batch by micro-batch, as with
        one batch. Returns (finite, logs)."""
        logs: dict[str, torch.Tensor] = {}
        k = len(micro_batches)
        streams = [self.family.training_step(micro) for micro in micro_batches]
        # each micro-batch's draws start from the step's random state and are its rows of the whole batch's
        # (genforge.draws): the parts together draw what one unsplit batch would
        parts = [(self.dist.rank * k + i, self.dist.world * k, i) for i in range(k)]
        states = [_rng_state(self.device)] * k if k > 1 else None
        try:
            while True:
                phase = self._backward_phase(streams, parts, states)
                if phase is None:
                    break
                name, losses, phase_logs, finite = phase
                opt = self.optimizers[name]
                if self.dist.any(not finite, self.device):  # skipped by every process
                    opt.zero_grad(set_to_none=True)
                    return False, logs
                params = [p for g in opt.param_groups for p in g["params"]]
                if not self.sharded:  # FSDP has averaged them already, in backward
                    self.dist.average_gradients(params)
                if self.cfg.grad_clip > 0:
                    norm = fsdp.full_value(torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip))
                    if not bool(torch.isfinite(norm)):
                        opt.zero_grad(set_to_none=True)
                        return False, logs
                else:  # logged all the same (no sync here: it is read at the next log)
                    norm = fsdp.full_value(torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None]))
                logs[f"{name}/grad_norm"] = norm.detach()
                opt.step()
                opt.zero_grad(set_to_none=True)
                logs[f"{name}/loss"] = torch.stack(losses).mean()
                for key in phase_logs[0]:
                    values = [_as_tensor(one[key]) for one in phase_logs]
                    logs[f"{name}/{key}"] = values[0] if k == 1 else torch.stack(values).float().mean()
        finally:
            for stream in streams:
                stream.close()
        return True, logs

    def _backward_phase(self, streams: list, parts: list[tuple[int, int, int]],
                        states: list | None) -> tuple[str, list[torch.Tensor], list[dict], bool] | None:
        """The next phase of every micro-batch's training step, each loss backwarded as soon as it is computed:
        (optimizer name, detached losses, logs, whether all were finite); None at the end. Stream i draws as
        part ``parts[i]``, from its own random state ``states[i]`` (kept up to date) when there are several."""
        names, losses, logs, finite = [], [], [], True
        k = len(streams)
        for i, stream in enumerate(streams):
            if states is not None:
                _set_rng_state(self.device, states[i])
            with autocast(self.device, self.amp_dtype), draws.part(*parts[i]):
                try:
                    name, loss, phase_logs = next(stream)
                except StopIteration:
                    return None
            if states is not None:
                states[i] = _rng_state(self.device)
            if bool(torch.isfinite(loss.detach())):
                (loss / k if k > 1 else loss).backward()
            else:
                finite = False  # no backward: the step is skipped (by every process)
            names.append(name)
            losses.append(loss.detach())
            logs.append(phase_logs)
        if len(set(names)) != 1:
            raise RunError(f"the {self.run.config.family} family yielded different phases for micro-batches of one step "
                           f"({', '.join(names)}); gradient accumulation needs the same phases for each")
        return names[0], losses, logs, finite

    def _batch(self) -> list[dict[str, torch.Tensor]]:
        """This step's micro-batches: the global batch of every process and micro-batch, a function of the seed,
        step and its size (``step_batch``: images in epoch order), so what one process with the combined batch
        draws; this process's slice of it, cut into ``train.grad_accum`` micro-batches of ``train.batch_size``."""
        b, k = self.cfg.batch_size, self.cfg.grad_accum
        batch = step_batch(self.data.train, self.cfg.seed, self.global_step, b * k * self.dist.world)
        start = self.dist.rank * b * k
        return [{key: to_device(v[start + i * b:start + (i + 1) * b], self.device, self.channels_last)
                 for key, v in batch.items()} for i in range(k)]

    def step(self) -> StepOutcome:
        """One optimisation step, EMA included, with this step's seeds, learning rate and batch.

        A step whose loss or gradient is NaN/inf updates nothing and is counted as bad; more than
        ``train.max_bad_steps`` in a row save a checkpoint of the last good weights and raise
        ``TrainingDiverged``."""
        start = time.perf_counter()
        # the step's noise, dropout and latents: the same on resume, and in every process (each keeps its rows)
        torch.manual_seed(step_seed(self.cfg.seed, self.global_step) ^ 0x5DEECE66D)
        factor = self._set_lr()
        ok, logs = self._run_phases(self._batch())
        self.dist.broadcast_buffers(self.family)  # BatchNorm statistics, EMA codebooks: rank 0's everywhere
        if ok:
            self._consecutive_bad = 0
            if self.ema is not None:
                self.ema.update(self.family)
        else:
            self.bad_steps_total += 1
            self._consecutive_bad += 1
            if self._consecutive_bad > self.cfg.max_bad_steps:
                self.save_checkpoint()
                raise TrainingDiverged(
                    f"loss was NaN/inf for {self._consecutive_bad} consecutive steps at step {self.global_step}; "
                    f"lower train.lr (now {self.cfg.lr}) or check the data"
                )
        seconds = time.perf_counter() - start
        self.global_step += 1
        self.items_seen += self.items_per_step
        return StepOutcome(ok, logs, factor, seconds, self.items_per_step)

    def fit(self, resume: bool = False) -> TrainResult:
        """Train up to ``train.steps`` (from the checkpoint with ``resume``), running the hooks around each step."""
        if resume and self.run.state_path.is_file():  # without one (killed before it), start from step 0
            self.load_checkpoint()
        if resume and self.dist.main:  # the checkpoint loaded: the config may record new settings (--steps, ...)
            self.run.save_config()
            self.run.trim_metrics(self.global_step)
        if self.cfg.compile:
            self.compile()
        start = time.perf_counter()
        # speeds count training steps only: time spent on sample grids and checkpoints is left out
        step_seconds, steps_run = 0.0, 0
        self.family.train()
        stopped_by = "done"
        try:
            for hook in self.hooks:
                hook.start(self)
            while self.global_step < self.cfg.steps:
                if self.dist.any(self.stop_reason is not None, self.device):  # every process stops together
                    stopped_by = self.stop_reason or "interrupted"
                    break
                outcome = self.step()
                step_seconds += outcome.seconds
                steps_run += 1
                for hook in self.hooks:
                    hook.after_step(self, outcome)
            if not self.sharded:  # (a sharded run holds one copy of each weight: nothing can drift apart)
                self.dist.check_in_step(self.family)  # every process holds the same weights (both GAN players)
            for hook in self.hooks:
                hook.end(self)
        finally:
            for hook in self.hooks:
                hook.close(self)
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        seconds = time.perf_counter() - start
        mean_rate = steps_run * self.items_per_step / step_seconds if step_seconds > 0 else 0.0
        return TrainResult(self.run, self.global_step, stopped_by, seconds, mean_rate, dict(self.last_losses),
                           self.bad_steps_total, list(self.warnings), self.dist.main)


def _as_tensor(value) -> torch.Tensor:
    return value.detach() if torch.is_tensor(value) else torch.tensor(float(value))


def _rng_state(device: torch.device) -> tuple:
    """The global random state draws on ``device`` use (the CPU's, and the GPU's on CUDA)."""
    return (torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


def _set_rng_state(device: torch.device, state: tuple) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)
