"""Diffusion recipes for small budgets on mnist: DDPM's, EDM's and changes to it, at equal training time.

    python benchmarks/diffusion_recipe.py                                  # every variant, 700 steps of the default net
    python benchmarks/diffusion_recipe.py --variants ddpm,edm --steps 300 --n 200      # a quick look

Every variant trains `genforge train diffusion mnist` (80/20 split, seed 0) with its overrides. Variants with the
default network and batch train --steps steps; one with another network or batch size trains for the same time:
its step count is --steps times the default's measured time per step over its own (both timed here, in the same process
and thread count), so every row costs the same training minutes whatever the machine's load. Each run is then
sampled n times with each --cell (sampler:steps[:guidance]; "default" is the run's own sampler and steps), the images
drawn once per cell and scored in two feature views (genforge's mnist classifier and a random network), with
the real held-out digits scored the same way as the first row. Lower FD is better.
The Markdown table is printed and written atomically to --out after every run; each row is also kept in its
run's folder, and --resume reuses the rows whose variant, steps, n and cells match (several processes can
then train variants side by side, and one last call with --resume gathers their table).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import torch
from common import FEATURE_VIEWS, cpu_name, csv, fmt, view_scorers, view_scores

# name -> (what it is, overrides): the old default, then EDM's recipe (today's default) and changes to it
EDM = ["model.prediction=edm", "model.noise_sampling=lognormal", "train.ema_gamma=0"]
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "ddpm": ("DDPM: eps-prediction, uniform timesteps (the old default)",
             ["model.prediction=eps", "model.noise_sampling=uniform", "train.ema_gamma=0"]),
    "edm": ("EDM: preconditioning and log-normal noise levels (the default)", EDM),
    "edm-power-ema": ("EDM + power-function EMA (gamma 6.94)", [*EDM[:2], "train.ema_gamma=6.94"]),
    "wide": ("EDM, base_channels 24 (default 16)", [*EDM, "model.base_channels=24"]),
    "narrow": ("EDM, base_channels 12", [*EDM, "model.base_channels=12"]),
    "edm-groups": ("EDM + one GroupNorm count for the whole UNet (norm_groups -1)", [*EDM, "model.norm_groups=-1"]),
    "v": ("v-prediction, log-normal noise levels (exports to diffusers' DDPM/DDIM)",
          ["model.prediction=v", "model.noise_sampling=lognormal", "train.ema_gamma=0"]),
    "v-groups": ("v + one GroupNorm count for the whole UNet (norm_groups -1)",
                 ["model.prediction=v", "model.noise_sampling=lognormal", "train.ema_gamma=0",
                  "model.norm_groups=-1"]),
}
FEATURES = FEATURE_VIEWS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", type=csv, default=list(VARIANTS), help=", ".join(VARIANTS))
    p.add_argument("--set", dest="sets", action="append", default=[],
                   help="NAME=override[,override...]: an extra variant (repeatable), e.g. wide=model.base_channels=32")
    p.add_argument("--steps", type=int, default=700, help="training steps of a variant with the default network")
    p.add_argument("--n", type=int, default=500, help="samples per cell (and real held-out images)")
    p.add_argument("--cells", type=csv, default=["default", "dpmpp_2m:10"],
                   help="sampler:steps[:guidance] to score each run with; default = the run's own sampler and steps")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--resume", action="store_true", help="reuse the rows of runs already measured alike")
    p.add_argument("--runs", type=Path, default=Path("benchmarks/runs/diffusion_recipe"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/diffusion_recipe.md"))
    args = p.parse_args(argv)
    args.extra = {}
    for item in args.sets:
        name, _, overrides = item.partition("=")
        if not name or not overrides:
            p.error(f"--set takes NAME=override[,override...], got {item!r}")
        args.extra[name] = (f"+ {overrides}", overrides.split(","))
    unknown = [v for v in args.variants if v not in VARIANTS and v not in args.extra]
    if unknown:
        p.error(f"unknown variants {unknown}; expected some of {', '.join(VARIANTS)} or a --set name")
    return args


def seconds_per_step(overrides: list[str]) -> float:
    from genforge.api import make_config
    from genforge.demo import seconds_per_step as timed
    from genforge.modalities import prepare

    config = make_config("diffusion", "mnist", overrides=overrides, device="cpu", seed=0)
    return timed(config, prepare(config.data.source, config.data, progress=False), probes=8)


def cost_keys(overrides: list[str]) -> list[str]:
    """The overrides that change a training step's cost: the network's shape (everything under model. but the
    training recipe, the sampling defaults and the GroupNorm group count, which changes neither parameters nor
    work) and the batch size."""
    recipe = ("model.prediction", "model.noise_sampling", "model.noise_", "model.sigma_data", "model.loss_weighting",
              "model.min_snr_gamma", "model.sampler", "model.sample_steps", "model.eta", "model.spacing",
              "model.norm_groups")
    return [o for o in overrides if (o.startswith("model.") and not o.startswith(recipe))
            or o.startswith("train.batch_size")]


def score(args, run_dir: Path) -> tuple[dict, dict]:
    """{cell: {fd/<view>: ...}} for the run, and the real held-out row {fd/<view>: ...}."""
    model, scorers = view_scorers(run_dir, args.n, views=FEATURES)
    cells, real = {}, {}
    for cell in args.cells:
        options = {}
        if cell != "default":
            sampler, steps, *guidance = cell.split(":")
            options = {"sampler": sampler, "steps": int(steps)}
            if guidance:
                options["guidance"] = float(guidance[0])
        start = time.perf_counter()
        images, _ = scorers[FEATURES[0]].evaluator.draw(model.family, model.amp_dtype, 250, **options)
        ms_per_image = 1000 * (time.perf_counter() - start) / args.n
        row, floor = view_scores(scorers, images, keys=("fd",))
        cells[cell] = {"ms_per_image": ms_per_image, **row}
        real = {view: floor[f"fd/{view}"] for view in FEATURES}
    return cells, real


def render(args, rows: list[dict], real: dict) -> str:
    lines = ["# Diffusion recipes on mnist at equal training time", "",
             f"    python benchmarks/diffusion_recipe.py {' '.join(sys.argv[1:])}".rstrip(), "",
             f"Machine: {cpu_name()}, torch {torch.__version__} with {torch.get_num_threads()} threads, Python "
             f"{platform.python_version()}. Each row trains as long as {args.steps} "
             f"steps of the default network; FD of n = {args.n} samples against mnist's training digits, in the "
             "classifier's and a random network's features (lower is better); the real held-out digits are "
             "scored the same way. Cells are FD classifier / FD random; \"default\" is each run's own sampler "
             "(ddim with eta 1, 50 steps).", ""]
    cols = [f"{c} (classifier / random)" for c in args.cells]
    lines += ["| variant | what | steps | " + " | ".join(cols) + " |", "| --- " * (len(cols) + 3) + "|"]
    if real:
        cell = f"{fmt(real.get('classifier'))} / {fmt(real.get('random'))}"
        lines.append("| real data (held-out) | - | - | " + " | ".join(cell for _ in cols) + " |")
    for r in rows:
        cells = [f"{fmt(r['cells'][c]['fd/classifier'])} / {fmt(r['cells'][c]['fd/random'])}" for c in args.cells]
        lines.append(f"| {r['name']} | {r['what']} | {r['steps']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import genforge
    from genforge.io import atomic_write_text

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = {**VARIANTS, **args.extra}
    base = ["data.val_fraction=0.2"]
    rows, real, default_s = [], {}, None
    for name in args.variants:
        what, overrides = variants[name]
        run_dir = args.runs / name
        key = {"overrides": overrides, "base_steps": args.steps, "n": args.n, "cells": args.cells}
        kept = run_dir / "recipe_row.json"
        if args.resume and kept.is_file() and json.loads(kept.read_text()).get("key") == key:
            row = {**json.loads(kept.read_text()), "name": name, "what": what}
            print(f"[{name}] reused", flush=True)
        else:
            steps = args.steps
            if cost_keys(overrides):  # another network or batch: as many steps as fit in the default's time
                default_s = default_s or seconds_per_step(base)
                steps = max(1, round(args.steps * default_s / seconds_per_step(base + overrides)))
            shutil.rmtree(run_dir, ignore_errors=True)
            print(f"[{name}] training {steps} steps: {' '.join(overrides)}", flush=True)
            genforge.train("diffusion", "mnist", run_dir, steps=steps, overrides=base + overrides, progress=False,
                           device="cpu", seed=0, sample_every=0, ckpt_every=steps)
            cells, real = score(args, run_dir)
            row = {"name": name, "what": what, "steps": steps, "cells": cells, "real": real, "key": key}
            atomic_write_text(kept, json.dumps(row))
        rows.append(row)
        real = row["real"]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, render(args, rows, real))
        print(f"[{name}] " + ", ".join(f"{c}: {v['fd/classifier']:.3g} / {v['fd/random']:.3g}"
                                       for c, v in row["cells"].items()), flush=True)
    print(render(args, rows, real))
    return 0


if __name__ == "__main__":
    sys.exit(main())
