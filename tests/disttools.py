"""Helpers of the multi-process and memory tests: torchrun on this machine, weights compared, a tiny corpus."""

from __future__ import annotations

import subprocess
import sys

import torch
from clitools import environment

from genforge.io import load_tensors

TEXT = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n\n" * 40
TINY = ["--set", "data.block_size=16", "--set", "model.n_layer=1", "--set", "model.n_embd=16",
        "--set", "model.n_head=2", "--set", "train.sample_every=0", "--set", "train.log_every=1",
        "--set", "train.warmup_steps=2"]


def torchrun(nproc: int, *args, timeout: int = 300) -> subprocess.CompletedProcess:
    """`genforge ARGS...` in ``nproc`` processes started by torchrun on this machine."""
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            "-m", "genforge", *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, env=environment(), timeout=timeout)


def overrides(args: list[str]) -> list[str]:
    return [a for a in args if a != "--set"]


def assert_same_weights(a, b, atol: float = 2e-6, parameters_only: bool = False) -> None:
    """model.safetensors of runs ``a`` and ``b`` hold the same tensors; with ``parameters_only``, BatchNorm's
    running statistics are left out (a process keeps one update a step, accumulation one per micro-batch)."""
    wa, wb = load_tensors(a / "model.safetensors"), load_tensors(b / "model.safetensors")
    assert set(wa) == set(wb)
    for k in wa:
        if parameters_only and k.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked"):
            continue
        torch.testing.assert_close(wa[k], wb[k], atol=atol, rtol=0, msg=k)


def make_corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("dist") / "corpus.txt"
    path.write_text(TEXT)
    return path
