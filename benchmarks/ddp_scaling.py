"""Multi-process scaling: the same global batch trained by 1 process and by N processes (torchrun), on this
machine's CPUs (gloo) or all visible GPUs (NCCL).

    python benchmarks/ddp_scaling.py [--families transformer,diffusion] [--steps 60] [--global-batch 32] [--fsdp]

Each run is a real `genforge train` (the demo's default models, `--nproc N` for N > 1); the speed is the
median items/s of its metrics.jsonl records after the first quarter (warm-up). Prints one row per family
and process count with the speed-up over one process. On CPUs, N processes share the machine's cores
(one thread each under torchrun), so the speed-up says what gradient exchange and data slicing cost.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

DATA = {"transformer": "pycode", "diffusion": "mnist", "gan": "mnist", "vae": "mnist"}


def speed(family: str, nproc: int, steps: int, global_batch: int, device: str, fsdp: bool = False) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        argv = [sys.executable, "-m", "genforge", "train", "--family", family, "--data", DATA[family], "--out", str(out),
                "--steps", str(steps), "--batch-size", str(global_batch // nproc), "--device", device, "--quiet",
                "--set", "train.sample_every=0", "--set", "train.log_every=5", "--set", f"train.ckpt_every={steps}"]
        if family == "transformer":
            argv += ["--set", "data.block_size=128"]
        if nproc > 1:
            argv += ["--nproc", str(nproc)]
        if fsdp and nproc > 1:
            argv += ["--set", "train.fsdp=true"]
        subprocess.run(argv, check=True, capture_output=True, text=True)
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        rates = [r["items_per_s"] for r in records if "items_per_s" in r]
        return statistics.median(rates[len(rates) // 4:] or rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default="transformer,diffusion")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--global-batch", type=int, default=32)
    parser.add_argument("--nproc", type=int, default=None, help="most processes (default: the GPUs, or 2 on CPU)")
    parser.add_argument("--fsdp", action="store_true", help="shard the transformer over the processes (train.fsdp)")
    args = parser.parse_args()
    gpus = torch.cuda.device_count()
    device = "cuda" if gpus else "cpu"
    most = args.nproc or (gpus if gpus > 1 else 2)
    counts = sorted({1, *[n for n in (2, 4, 8) if n <= most], most})
    if args.fsdp:
        print("with train.fsdp: the transformer sharded over the processes (from 2 on)")
    print("| family | processes | device | global batch | items/s | speed-up |")
    print("| --- | --- | --- | --- | --- | --- |")
    for family in args.families.split(","):
        base = None
        for n in counts:
            rate = speed(family, n, args.steps, args.global_batch, device, args.fsdp and family == "transformer")
            base = base or rate
            print(f"| {family} | {n} | {device} | {args.global_batch} | {rate:,.0f} | {rate / base:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
