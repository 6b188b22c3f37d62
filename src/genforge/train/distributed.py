"""Several processes training one model, on PyTorch's own engine: ``torchrun`` starts them and sets RANK,
WORLD_SIZE, LOCAL_RANK and the rendezvous; this module joins them (NCCL on GPUs, gloo on CPUs) and
gives the trainer the few collective operations it needs.

How genforge splits the work (the same on one machine or several):

- **Data.** Each step takes one global batch G of ``world x train.grad_accum x train.batch_size`` items, a
  function of the seed, the step and that size alone, exactly as one process with that batch would, and
  each rank trains on its slice. Images come in epoch order, as a DistributedSampler that shuffles every
  epoch gives: step s takes positions [s x G, (s + 1) x G) of the epochs' permutations one after another,
  each seeded from (seed, epoch), so every image is seen once per epoch; text takes a random window per
  row from the step's seed (``data/datasets.py``). So N processes with batch B train on the very batches
  one process with batch N x B does, and a run resumes on any number of processes with the same global
  batch: the data position is the step count, nothing else.
- **Gradients.** After each phase's backward (both GAN players), gradients are averaged over the ranks
  in one flat all-reduce, before clipping and the optimizer step; every rank then holds the same
  weights, and so the same EMA.
  With ``train.fsdp`` (transformers, ``fsdp.py``) each rank holds a shard of every weight instead, and FSDP
  reduce-scatters the gradients in backward.
- **Noise.** Every rank starts the step from the same random state, and the families draw their noise,
  timesteps and latents for the whole batch and keep their rows (``genforge.draws``): the ranks together
  draw what one process with the combined batch does, so the weights are the same too (dropout masks,
  off by default, are each rank's own).
- **Decisions.** A skipped non-finite step, a stop signal and the time budget are agreed by all ranks
  (any rank's reason stops all), so no rank waits in a collective another has left.
- **Writes.** Rank 0 alone writes checkpoints, metrics, grids and evaluations.
- **BatchNorm** (GAN and VAE nets) normalises over each rank's slice by default: the batch statistics a
  network sees are those of ``train.batch_size`` items, as in one process with that batch, at no cost in
  communication. With ``train.sync_batchnorm`` it normalises over the global batch instead
  (``sync_batchnorm.py``: torch's SyncBatchNorm on CUDA, an all-reduce of each channel's sums elsewhere), as
  in one process with the combined batch, for one all-reduce per BatchNorm layer forward and backward: pick
  it when the per-process batch is small (a few items per GPU) and its statistics too noisy. Other
  statistics of a batch stay each rank's own (the GAN discriminator's minibatch spread feature).
- **Buffers** (BatchNorm running statistics) are rank 0's, broadcast after every step, as
  DistributedDataParallel does by default. A VQ-VAE's EMA codebook statistics are summed over the ranks
  by the quantizer itself (``nets/quantize.py``), so its codebook is the whole batch's.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Distributed:
    """This process's place among the training processes; one process alone is rank 0 of 1."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Every parameter's gradient averaged over the ranks, in one flat all-reduce."""
        if not self.active:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(self.world)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics, ...) copied to every rank, one flat broadcast per
        dtype, as DistributedDataParallel does by default: buffers change outside the gradients, so without
        this each rank's would drift apart."""
        if not self.active:
            return
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for buffer in module.buffers():
            by_dtype.setdefault(buffer.dtype, []).append(buffer)
        for buffers in by_dtype.values():
            flat = torch.cat([b.detach().reshape(-1) for b in buffers])
            dist.broadcast(flat, src=0)
            offset = 0
            for b in buffers:
                b.data.copy_(flat[offset:offset + b.numel()].view_as(b))
                offset += b.numel()

    def any(self, flag: bool, device: torch.device | None = None) -> bool:
        """True on every rank when it is true on any."""
        if not self.active:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=device or _collective_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def check_in_step(self, module: torch.nn.Module) -> None:
        """Raise ``RunError`` unless every rank holds the same parameters and buffers (a fingerprint compared by
        all-reduce): what gradient averaging and buffer broadcasts guarantee, checked at the end of training."""
        if not self.active:
            return
        with torch.no_grad():
            parts = [t.detach().double().reshape(-1) for t in [*module.parameters(), *module.buffers()]
                     if t.is_floating_point()]
            flat = torch.cat(parts) if parts else torch.zeros(1, dtype=torch.float64)
            weights = torch.arange(1, flat.numel() + 1, dtype=torch.float64, device=flat.device).remainder_(97).add_(1)
            mine = torch.stack([flat.sum(), (flat * weights).sum()]).to(_collective_device())
        low, high = mine.clone(), mine.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        if not torch.equal(low, high):
            from genforge.errors import RunError

            raise RunError("the training processes ended with different weights; this is a bug in genforge's "
                           "multi-process training: please report it with the command you ran")

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def launched() -> bool:
    """Whether torchrun (or another launcher) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> Distributed:
    """Join the other processes torchrun started (once per process); one process alone gets rank 0 of 1."""
    if not launched():
        return Distributed()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend)
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def shutdown_and_exit(code: int) -> None:
    """End a process that trained among several: leave the group, flush, and exit at once. With torch 2.13
    a rank that exits the interpreter normally after its work may abort ("terminate called without an
    active exception"), which torchrun would count as a failure; ``os._exit`` once everything is written
    avoids it. A process that trained alone returns, to exit as usual."""
    import sys

    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@contextlib.contextmanager
def main_first(d: Distributed):
    """Rank 0 does the work inside first (building a cache entry, creating the run); the others wait for it,
    then do theirs (which then only reads)."""
    if not d.main:
        d.barrier()
    yield
    if d.main:
        d.barrier()


LAUNCH_FILE = ".launch"  # in a run made under torchrun: the launch's id, so that its restarts resume it


def launch_id() -> str | None:
    """The id of the torchrun launch this process belongs to (the same in every restart of it); None alone."""
    return os.environ.get("TORCHELASTIC_RUN_ID") if launched() else None


def restarted() -> bool:
    """Whether torchrun restarted this process's group after a failure (``--max-restarts``)."""
    return launched() and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
