"""Training throughput of each family on one device, at the demo's default configs.

    python benchmarks/train_speed.py [--device auto] [--steps 50] [--compile]

Prints one line per family: items/s (images or tokens) after warm-up, and parameter count.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from genforge.api import make_config
from genforge.modalities import prepare
from genforge.runs import Run
from genforge.train.trainer import Trainer

PLAN = (("diffusion", "mnist"), ("gan", "mnist"), ("vae", "mnist"), ("transformer", "pycode"))


def measure(family: str, data: str, device: str, steps: int, compile_: bool, batch_size: int | None) -> tuple[float, int, str]:
    overrides = [f"train.device={device}", f"train.compile={str(compile_).lower()}"]
    if batch_size:
        overrides.append(f"train.batch_size={batch_size}")
    config = make_config(family, data, overrides=overrides)
    prepared = prepare(data, config.data, progress=False)
    run = Run(Path("."), config, prepared.spec)  # in memory: nothing is written
    trainer = Trainer(run, run.build_family(seed=0), prepared, progress=False)
    if compile_:
        trainer.compile()
    for _ in range(5):
        trainer.step()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    items = steps * trainer.items_per_step
    unit = trainer.rate_unit
    return items / seconds, sum(p.numel() for p in trainer.family.parameters()), unit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    print(f"{'family':<12} {'speed':>16} {'params':>10}  device={args.device} compile={args.compile}")
    for family, data in PLAN:
        rate, params, unit = measure(family, data, args.device, args.steps, args.compile, args.batch_size)
        print(f"{family:<12} {rate:>10,.0f} {unit} {params / 1e6:>9.2f}M")


if __name__ == "__main__":
    main()
