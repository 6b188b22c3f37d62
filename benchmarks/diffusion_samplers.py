"""Quality and time per image of each diffusion sampler at a range of step counts, on one trained run.

    python benchmarks/diffusion_samplers.py                      # demo/runs/diffusion (made by `genforge demo`)
    python benchmarks/diffusion_samplers.py --run runs/diff --n 500 --steps 10,20,50 --second-spacing none

Every cell (sampler x steps) draws the same n images from the same seeded noise (batch i uses seed
(seed, i), as `genforge eval` does), so the cells differ only in the sampler and its steps. Quality is
the Fréchet distance (FD) in the features of genforge's `classifier` extractor against the run's
training split, exactly as `genforge eval` scores a run; a "real data (held-out)" row scores n real
held-out images the same way, for scale. Time is the wall time of `Diffusion.sample` alone (feature
extraction and scoring excluded), per image. `ddim` runs with eta=0 (deterministic); `ddpm` is the
ancestral sampler (DDIM with eta=1). A second, smaller table repeats the deterministic samplers with
another spacing (karras by default) at few steps.

Nothing is written into the run directory (the evaluation pieces are used directly, not
`genforge.evaluate`, which saves eval.json). The Markdown table is printed and written atomically to
--out after every cell, so an interrupted run still leaves the cells it finished.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
from common import cpu_name

DEFAULT_RUN = Path("demo/runs/diffusion")
LABELS = {"ddpm": "ddpm (ancestral)", "ddim": "ddim (eta=0)", "euler": "euler", "heun": "heun (EDM)",
          "dpmpp_2m": "dpmpp_2m"}


def csv(kind):
    def parse(text: str) -> list:
        items = [kind(part.strip()) for part in text.split(",") if part.strip()]
        if not items:
            raise argparse.ArgumentTypeError("expected a comma-separated list")
        return items
    return parse




def draw(family, n: int, batch: int, seed: int, amp_dtype, **options) -> tuple[torch.Tensor, float]:
    """``n`` samples in seeded batches, and the seconds spent in ``family.sample`` only."""
    from genforge.train.device import autocast

    parts, seconds = [], 0.0
    for i, lo in enumerate(range(0, n, batch)):
        generator = torch.Generator(device=family.device).manual_seed(seed * 1_000_003 + i)
        start = time.perf_counter()
        with autocast(family.device, amp_dtype):
            out = family.sample(min(batch, n - lo), generator=generator, **options)
        if family.device.type == "cuda":
            torch.cuda.synchronize(family.device)
        seconds += time.perf_counter() - start
        parts.append(out.float().cpu())
    return torch.cat(parts), seconds


def fmt_fd(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def fmt_ms(seconds: float, n: int) -> str:
    ms = 1000 * seconds / n
    return f"{ms:.0f}" if ms >= 10 else f"{ms:.2g}"


def grid(cells: dict, samplers: list[str], steps: list[int], spacing: str, real_fd: float | None,
         calls) -> list[str]:
    lines = [f"| sampler ({spacing}) | network evals | " + " | ".join(f"{k} steps" for k in steps) + " |",
             "| --- " * (len(steps) + 2) + "|"]
    for name in samplers:
        evals = "2k-1" if calls(name, 2) == 3 else "k"
        row = []
        for k in steps:
            cell = cells.get((name, spacing, k))
            row.append("…" if cell is None else f"{fmt_fd(cell['fd'])} / {fmt_ms(cell['seconds'], cell['n'])}")
        lines.append(f"| {LABELS.get(name, name)} | {evals} | " + " | ".join(row) + " |")
    if real_fd is not None:
        lines.append("| real data (held-out) | - | " + " | ".join(fmt_fd(real_fd) for _ in steps) + " |")
    return lines


def render(args, argv: list[str], info: dict, cells: dict, plan: list, real: dict | None, calls,
           elapsed: float) -> str:
    done = len(cells) == len(plan)
    real_fd = real["fd"] if real else None
    lines = [
        "# Diffusion samplers on mnist: quality and time per image",
        "",
        "Written by `benchmarks/diffusion_samplers.py`"
        + ("." if done else f" (partial: {len(cells)} of {len(plan)} cells so far)."),
        "",
        f"    python benchmarks/diffusion_samplers.py {shlex.join(argv)}".rstrip(),
        "",
        f"- run: `{args.run.as_posix()}`: {info['run']}",
        f"- scores: {info['describe']}",
        (f"- n = {args.n} images per cell, seed {args.seed}, batches of {min(args.batch, args.n)}; every cell starts "
        "from the same noise. Cells read \"FD / ms per image\": FD against the training split (lower is better; "
        "biased upward at small n, so compare cells with each other and with the real-data row, not with "
        "FDs at another n); ms per image is sampling only."),
        ("- ddim runs with eta=0 (deterministic, the same map as euler); ddpm is ancestral sampling "
        "(fresh noise every step). network evals: UNet calls for k steps."),
        f"- machine: {info['machine']}",
        f"- total wall time: {elapsed / 60:.1f} min",
        "",
    ]
    spacings = list(dict.fromkeys(spacing for _, spacing, _ in plan))
    for spacing in spacings:
        samplers = list(dict.fromkeys(s for s, sp, _ in plan if sp == spacing))
        steps = list(dict.fromkeys(k for _, sp, k in plan if sp == spacing))
        lines += [f"## Spacing: {spacing}", ""] + grid(cells, samplers, steps, spacing, real_fd, calls) + [""]
    lines += ["## Every cell", "",
              "| sampler | spacing | steps | network evals | FD | KID | precision | recall | ms per image |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    if real:
        lines.append(f"| real data (held-out) | - | - | - | {fmt_fd(real['fd'])} | {real['kid']:.3g} | "
                     f"{real['precision']:.2f} | {real['recall']:.2f} | - |")
    for key in plan:
        cell = cells.get(key)
        if cell is None:
            continue
        name, spacing, k = key
        lines.append(f"| {LABELS.get(name, name)} | {spacing} | {k} | {calls(name, k)} | {fmt_fd(cell['fd'])} | "
                     f"{cell['kid']:.3g} | {cell['precision']:.2f} | {cell['recall']:.2f} | "
                     f"{fmt_ms(cell['seconds'], cell['n'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=DEFAULT_RUN, help="a trained diffusion run (read only)")
    parser.add_argument("--n", type=int, default=200, help="images per cell (and real held-out images)")
    parser.add_argument("--batch", type=int, default=250, help="images per sampling call")
    parser.add_argument("--steps", type=csv(int), default=[10, 20, 50, 250])
    parser.add_argument("--samplers", type=csv(str), default=["ddpm", "ddim", "euler", "heun", "dpmpp_2m"])
    parser.add_argument("--spacing", default="trailing", help="spacing of the main table")
    parser.add_argument("--second-spacing", default="karras", help="spacing of the second table, or none")
    parser.add_argument("--second-steps", type=csv(int), default=[10, 20])
    parser.add_argument("--second-samplers", type=csv(str), default=["ddim", "euler", "heun", "dpmpp_2m"])
    parser.add_argument("--features", default="classifier", help="feature extractor (see `genforge eval`)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, auto, ...")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/diffusion_samplers.md"))
    args = parser.parse_args(argv)

    from genforge.sampling.diffusion import SAMPLERS, denoiser_calls
    from genforge.sampling.schedules import SPACINGS

    plan = [(s, args.spacing, k) for k in args.steps for s in args.samplers]
    if args.second_spacing != "none":
        plan += [(s, args.second_spacing, k) for k in args.second_steps for s in args.second_samplers]
    for name, spacing, k in plan:
        if name not in SAMPLERS:
            parser.error(f"unknown sampler '{name}'; expected some of: {', '.join(SAMPLERS)}")
        if spacing not in SPACINGS:
            parser.error(f"unknown spacing '{spacing}'; expected one of: {', '.join(SPACINGS)}, or none for the second")
    if args.n < 2 or args.batch < 1:
        parser.error("--n must be at least 2 and --batch at least 1")
    if not (args.run / "model.safetensors").is_file():
        print(f"no trained diffusion run at {args.run}. Make one with `genforge demo` (writes demo/runs/diffusion), "
              f"or `genforge train --family diffusion --data mnist --max-minutes 10 --out {args.run}`", file=sys.stderr)
        return 2

    torch.set_num_threads(args.threads)
    import genforge
    from genforge.modalities import prepare
    from genforge.evaluate.evaluator import Evaluator
    from genforge.evaluate.image_metrics import image_scores
    from genforge.evaluate.results import describe
    from genforge.io import atomic_write_text

    start = time.perf_counter()
    model = genforge.load(args.run, device=args.device)
    if model.run.config.family != "diffusion":
        print(f"{args.run} is a {model.run.config.family} run; this benchmark needs a diffusion run", file=sys.stderr)
        return 2
    family, config = model.family, model.run.config
    for name, spacing, k in plan:
        if not 1 <= k <= family.config.timesteps:
            parser.error(f"steps must be between 1 and {family.config.timesteps} (the run's timesteps), got {k}")
    prepared = prepare(config.data.source, config.data, progress=False)
    evaluator = Evaluator(prepared, data=config.data.source, features=args.features, n=args.n, seed=args.seed,
                          device=model.device, progress=False)
    scorer = evaluator.scorer
    reference = scorer.reference_features().numpy()
    real_result = evaluator.reference_result(model.run)  # None when the held-out split has fewer than n images
    real = real_result["metrics"] if real_result else None

    mc = family.config
    params = sum(p.numel() for p in family.parameters())
    info = {
        "run": (f"{config.data.source}, {model.run.model_step()} training steps, {params / 1e3:.0f}k parameters, "
                f"{mc.prediction}-prediction, {mc.schedule} schedule of {mc.timesteps} timesteps"
                + (", class-conditional (labels drawn uniformly, guidance "
                   f"{mc.guidance:g})" if getattr(family, "num_classes", 0) else ", unconditional")),
        "describe": describe(real_result) if real_result else f"features: {args.features}",
        "machine": (f"{cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} "
                    f"threads, device {model.device}, Python {platform.python_version()}"),
    }
    if real is None:
        print(f"note: the held-out split has fewer than {args.n} images; no real-data row", file=sys.stderr)
    # warm-up at the batch size used below, untimed: the first call pays for allocations and kernel choice
    family.sample(min(args.batch, args.n), generator=torch.Generator(device=family.device).manual_seed(0),
                  steps=2, sampler="euler")
    cells: dict = {}
    for key in sorted(plan, key=lambda cell: cell[2]):  # fewest steps first: a cut-short run keeps the cheap cells
        name, spacing, k = key
        options = {"steps": k, "sampler": name, "spacing": spacing, "eta": 0.0 if name == "ddim" else None}
        images, seconds = draw(family, args.n, args.batch, args.seed, model.amp_dtype, **options)
        metrics = image_scores(reference, scorer.features(images).numpy(), train=reference, seed=args.seed)
        cells[key] = {**{m: float(metrics[m]) for m in ("fd", "kid", "precision", "recall")},
                      "seconds": seconds, "n": args.n}
        print(f"{name:>9} {spacing:>8} {k:>4} steps: FD {metrics['fd']:.3g}, {1000 * seconds / args.n:.1f} ms/img "
              f"({len(cells)}/{len(plan)} cells, {(time.perf_counter() - start) / 60:.1f} min)", flush=True)
        text = render(args, argv, info, cells, plan, real, denoiser_calls, time.perf_counter() - start)
        atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
