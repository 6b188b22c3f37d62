"""BatchNorm over the whole batch of every process (``train.sync_batchnorm``).

By default each process's BatchNorm normalises over its own slice of the batch (``distributed.py``).
``convert`` makes every BatchNorm of a model normalise over the global batch instead: on CUDA with torch's
``nn.SyncBatchNorm``, elsewhere (gloo between CPU processes, which torch's refuses) with ``SyncBatchNorm``
here, which sums each channel's count, sum and sum of squares over the processes. Both keep BatchNorm's
parameters and buffers under the same names, so a checkpoint loads into the plain model, and both are plain
BatchNorm in eval mode and in one process.

Gradients: each process's loss is the mean over its slice, and the statistics it normalised with are the
global batch's, so the processes' losses add up to the combined batch's loss (times the number of
processes). The all-reduce is differentiable (its backward sums the output gradients of every process), so
each process's gradients are its share of that sum, and averaging them over the processes, as the trainer
does, gives exactly the gradients of one process training on the combined batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def convert(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` with every BatchNorm in it synchronised over the processes (in place; a new module only when
    ``module`` itself is a BatchNorm). Parameters and buffers are the same tensors as before."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert(module)


def _convert(module: nn.Module) -> nn.Module:
    if isinstance(module, _BatchNorm) and not isinstance(module, (SyncBatchNorm, nn.SyncBatchNorm)):
        synced = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        # the very tensors, not copies: optimizers, EMA and checkpoints see no difference
        if module.affine:
            synced.weight, synced.bias = module.weight, module.bias
        synced.running_mean, synced.running_var = module.running_mean, module.running_var
        synced.num_batches_tracked = module.num_batches_tracked
        synced.train(module.training)
        return synced
    for name, child in module.named_children():
        converted = _convert(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


class SyncBatchNorm(_BatchNorm):
    """BatchNorm (1d, 2d or 3d: any input (N, C, ...)) whose training-mode statistics are those of every
    process's batch together; in eval mode, or in one process, exactly ``nn.BatchNorm``."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected an input (N, C, ...) of at least 2 dimensions, got {input.dim()}")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or _processes() == 1:
            return super().forward(input)
        self._check_input_dim(input)
        return _synced(self, input)


def _processes() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _SumOverProcesses(torch.autograd.Function):
    """All-reduce (sum) that autograd sees through: every process's output depends on every process's
    input, so an input's gradient is the sum of all processes' output gradients, an all-reduce again.
    (``torch.distributed.nn.functional.all_reduce`` is the same, but recent torch deprecates it with a
    warning on every run and refuses it under torch.compile.)"""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return total


@torch.compiler.disable  # a collective of its own: under train.compile the graph breaks around it
def _synced(bn: SyncBatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Normalise ``x`` with the global batch's mean and variance, and update the running statistics as
    BatchNorm does (momentum, unbiased variance, ``num_batches_tracked``)."""
    channels = x.shape[1]
    dims = [0, *range(2, x.dim())]
    compute = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    xc = x.to(compute)
    # one all-reduce of [sum, sum of squares, count]; summed in float64, so that E[x^2] - mean^2 keeps its
    # digits and the count is exact however large the global batch
    local = torch.cat([xc.sum(dims, dtype=torch.float64), (xc * xc).sum(dims, dtype=torch.float64),
                       torch.full((1,), x.numel() // channels, dtype=torch.float64, device=x.device)])
    totals = _SumOverProcesses.apply(local)
    n = float(totals[-1].detach())
    if n <= 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {list(x.shape)}")
    mean = totals[:channels] / n
    var = (totals[channels:2 * channels] / n - mean * mean).clamp(min=0)  # biased: what the batch is normalised by
    shape = [1, channels] + [1] * (x.dim() - 2)
    invstd = torch.rsqrt(var + bn.eps).to(compute).view(shape)
    y = (xc - mean.to(compute).view(shape)) * invstd
    if bn.affine:
        y = y * bn.weight.to(compute).view(shape) + bn.bias.to(compute).view(shape)
    if bn.track_running_stats and bn.running_mean is not None:
        with torch.no_grad():
            factor = 0.0 if bn.momentum is None else bn.momentum
            if bn.num_batches_tracked is not None:
                bn.num_batches_tracked.add_(1)
                if bn.momentum is None:  # a cumulative average, as BatchNorm with momentum=None keeps
                    factor = 1.0 / float(bn.num_batches_tracked)
            unbiased = var * (n / (n - 1))
            bn.running_mean.mul_(1 - factor).add_(mean.to(bn.running_mean.dtype), alpha=factor)
            bn.running_var.mul_(1 - factor).add_(unbiased.to(bn.running_var.dtype), alpha=factor)
    return y.to(x.dtype)
