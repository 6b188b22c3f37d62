"""``genforge train --nproc N [--max-restarts R]``: the same command in N processes on this machine, started
by torchrun (``python -m torch.distributed.run --standalone --nproc_per_node N -m genforge train ...``).

Restarts: torch 2.13's torchrun shares its rendezvous store with the processes it starts, and a restarted
group can read the addresses of the one it replaced ("Gloo connectFullMesh failed ... Connection
refused"); ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``, set here, gives each attempt a fresh store."""

from __future__ import annotations

import os
import subprocess
import sys

from genforge.errors import ConfigError

MAX_NPROC = 1024


LAUNCHER_OPTIONS = ("--nproc", "--max-restarts")  # genforge's own: torchrun gets them, the ranks do not
MAX_RESTARTS = 100


def torchrun_command(nproc: int, argv: list[str], max_restarts: int = 0) -> list[str]:
    """The torchrun command line for ``genforge ARGV`` (its launcher options removed) in ``nproc`` local
    processes, restarted up to ``max_restarts`` times after a failure (each restart resumes the run)."""
    if not isinstance(nproc, int) or isinstance(nproc, bool) or not 1 <= nproc <= MAX_NPROC:
        raise ConfigError(f"--nproc must be an integer from 1 to {MAX_NPROC}, got {nproc!r}")
    if not isinstance(max_restarts, int) or isinstance(max_restarts, bool) or not 0 <= max_restarts <= MAX_RESTARTS:
        raise ConfigError(f"--max-restarts must be an integer from 0 to {MAX_RESTARTS}, got {max_restarts!r}")
    args, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in LAUNCHER_OPTIONS:
            skip = True
            continue
        if arg.startswith(tuple(f"{option}=" for option in LAUNCHER_OPTIONS)):
            continue
        args.append(arg)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            "--max-restarts", str(max_restarts), "-m", "genforge", *args]


def launch_torchrun(nproc: int, argv: list[str], max_restarts: int = 0) -> int:
    """Run ``genforge ARGV`` in ``nproc`` processes and wait; torchrun's exit code (0: every rank finished)."""
    command = torchrun_command(nproc, argv, max_restarts)
    env = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1", **os.environ}
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:  # torchrun passes the signal to the ranks, which checkpoint and stop
        return 130
