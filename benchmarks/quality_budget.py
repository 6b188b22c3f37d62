"""Every family at the same CPU budget, scored alike: the table the quality work is judged by.

    python benchmarks/quality_budget.py --minutes 2                 # each family 2 CPU minutes (~20 min in all)
    python benchmarks/quality_budget.py --minutes 0.2 --n 200       # a smoke run
    python benchmarks/quality_budget.py --families diffusion,gan --set diffusion:model.sample_steps=20

The image families (diffusion, gan, vae, and the two-stage VQ-VAE + transformer prior, whose budget is split
between its stages by --prior-share) train on `mnist`, the transformer on `pycode`, each for --minutes of wall
time on the CPU (the step count planned from a timing of its own step, so the learning-rate schedule ends
inside the budget, as `genforge demo` does). Images are scored on --n samples against mnist's training
images in two feature views, genforge's mnist classifier and a random network (so a gain is not an artefact of
one extractor), each with real held-out digits scored the same way as the first row (mnist is split 80/20 here:
1,000 held-out digits, so n up to 1,000 has its real row); with the likelihood
bound where the family has one (bits per dimension for diffusion, nats per image for the VAE). The code model
is scored on held-out bits per byte and on --n-text samples (the share that parses as Python). Samples/s is
the evaluation's own sampling speed. The Markdown table is printed and written atomically to --out.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

from common import FEATURE_VIEWS, cpu_name, csv, fmt, save_partial, train_for_budget, view_scorers, view_scores

from genforge.demo import CODE_RECIPE

FAMILIES = ("diffusion", "gan", "vae", "vqvae+prior", "transformer")
FEATURES = FEATURE_VIEWS
IMAGE_DATA, CODE_DATA = "mnist", "pycode"
# the demo's code recipe: byte-level BPE of 512 ids, 64-token windows, half of them opening a file, sampled at
# temperature 0.7 and top-p 0.95
CODE_OVERRIDES = list(CODE_RECIPE)
# a fifth of mnist held out (1,000 digits), so that n = 1,000 samples have a real held-out row of their own size
IMAGE_OVERRIDES = ["data.val_fraction=0.2"]
# the README's two-stage recipe: a small VQ-VAE with a Bernoulli reconstruction loss, then a prior whose context
# is one 7x7 grid, its class token and its end-of-text token, sampled at temperature 1
VQVAE_OVERRIDES = ["model.width=32", "model.num_codes=128", "model.recon_loss=bernoulli"]
PRIOR_OVERRIDES = ["data.block_size=51", "model.temperature=1.0"]
SEED = 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=2.0, help="training wall time per family (the two-stage model: in all)")
    p.add_argument("--families", type=csv, default=list(FAMILIES), help=", ".join(FAMILIES))
    p.add_argument("--n", type=int, default=1000, help="images scored per image family (and real held-out images)")
    p.add_argument("--n-text", type=int, default=100, help="code samples scored")
    p.add_argument("--likelihood-samples", type=int, default=32,
                   help="per image: diffusion timesteps or VAE importance samples for the likelihood bound")
    p.add_argument("--prior-share", type=float, default=0.65, help="the two-stage model: the prior's share of --minutes")
    p.add_argument("--set", dest="sets", action="append", default=[],
                   help="FAMILY:section.key=value, an override for one family's run (repeatable)")
    p.add_argument("--runs", type=Path, default=Path("benchmarks/runs/quality_budget"), help="where the runs go")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/quality_budget.md"))
    args = p.parse_args(argv)
    unknown = [f for f in args.families if f not in FAMILIES]
    if unknown:
        p.error(f"unknown families {unknown}; expected some of {', '.join(FAMILIES)}")
    for item in args.sets:
        if ":" not in item or item.split(":", 1)[0] not in FAMILIES + ("vqvae", "prior"):
            p.error(f"--set takes FAMILY:section.key=value, got {item!r}")
    return args


def overrides_for(args: argparse.Namespace, name: str, base: list[str] = ()) -> list[str]:
    return [*base, *(item.split(":", 1)[1] for item in args.sets if item.split(":", 1)[0] == name)]


def train(args, family: str, data: str, name: str, minutes: float, overrides: list[str]) -> dict:
    """One run trained for ``minutes``: its row's training columns."""
    import shutil

    run_dir = args.runs / name
    shutil.rmtree(run_dir, ignore_errors=True)
    result, planned, cpu_s, _ = train_for_budget(family, data, run_dir, overrides, minutes, SEED, name)
    return {"run": run_dir, "steps": result.step, "planned": planned, "train_s": result.seconds, "cpu_s": cpu_s}


def score_images(args, run_dir: Path) -> tuple[dict, dict]:
    """(the run's scores, the real held-out row's) in each feature view: fd/<view>, kid/<view>, and the bound.

    The n samples are drawn once, as `genforge eval` draws them (the same seeded batches), and both views
    score those same images."""
    model, scorers = view_scorers(run_dir, args.n, args.likelihood_samples, FEATURES)
    first = scorers[FEATURES[0]]
    images, seconds = first.draw(model.family, model.amp_dtype)
    bound = first.likelihood(model.family)
    row, real = view_scores(scorers, images)
    row.update({"samples_per_s": args.n / max(seconds, 1e-9),
                **{k: bound.get(k) for k in ("bits_per_dim", "nll_bound_nats")}})
    return row, real


def score_code(args, run_dir: Path) -> tuple[dict, dict]:
    import genforge

    result = genforge.evaluate(run_dir, n=args.n_text, progress=False, reference=True)
    metrics, floor = result["metrics"], (result.get("reference_result") or {}).get("metrics", {})
    keys = ("bits_per_byte", "parse_share", "distinct_2")
    return ({**{k: metrics.get(k) for k in keys}, "samples_per_s": (result.get("sampling") or {}).get("items_per_s")},
            {k: floor.get(k) for k in keys})


def report(args, rows: list[tuple[str, dict]], real_images: dict | None, real_code: dict | None) -> str:
    image_cols = [f"fd/{v}" for v in FEATURES] + [f"kid/{v}" for v in FEATURES] + ["precision/classifier",
                                                                                  "recall/classifier"]
    lines = [f"# Every family at {args.minutes:g} CPU minutes", "",
             f"Machine: {cpu_name()}, {platform.system()}, Python {platform.python_version()}. Command: "
             f"`python benchmarks/quality_budget.py {' '.join(sys.argv[1:])}`. Images: n = {args.n} against mnist's "
             f"training images (FD and KID in the classifier's and a random network's features; lower is better); "
             f"likelihood bounds with {args.likelihood_samples} samples per image. Code: pycode, {args.n_text} "
             f"samples.", ""]
    images = [(name, r) for name, r in rows if "fd/classifier" in r]
    if images:
        cols = ["steps", "train s", *image_cols, "bits/dim", "NLL nats", "samples/s"]
        lines += ["| run | " + " | ".join(cols) + " |", "| --- " * (len(cols) + 1) + "|"]
        if real_images:
            lines.append("| real data (held-out) | - | - | " + " | ".join(fmt(real_images.get(c)) for c in image_cols)
                         + " | - | - | - |")
        for name, r in images:
            cells = [fmt(r["steps"]), fmt(r["train_s"]), *(fmt(r.get(c)) for c in image_cols),
                     fmt(r.get("bits_per_dim")), fmt(r.get("nll_bound_nats")), fmt(r.get("samples_per_s"))]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    code = [(name, r) for name, r in rows if "bits_per_byte" in r]
    if code:
        cols = ["steps", "train s", "bits/byte", "parse share", "distinct-2", "samples/s"]
        lines += ["| run | " + " | ".join(cols) + " |", "| --- " * (len(cols) + 1) + "|"]
        if real_code:
            lines.append("| real data (held-out) | - | - | " + " | ".join(
                fmt(real_code.get(k)) for k in ("bits_per_byte", "parse_share", "distinct_2")) + " | - |")
        for name, r in code:
            cells = [fmt(r["steps"]), fmt(r["train_s"]), fmt(r.get("bits_per_byte")), fmt(r.get("parse_share")),
                     fmt(r.get("distinct_2")), fmt(r.get("samples_per_s"))]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows: list[tuple[str, dict]] = []
    real_images = real_code = None
    started = time.monotonic()
    for family in args.families:
        if family == "transformer":
            row = train(args, "transformer", CODE_DATA, "transformer", args.minutes,
                        overrides_for(args, family, CODE_OVERRIDES))
            scores, real_code = score_code(args, row["run"])
        elif family == "vqvae+prior":
            first = train(args, "vqvae", IMAGE_DATA, "vqvae", args.minutes * (1 - args.prior_share),
                          overrides_for(args, "vqvae", IMAGE_OVERRIDES + VQVAE_OVERRIDES))
            row = train(args, "transformer", f"codes:{first['run']}", "prior", args.minutes * args.prior_share,
                        overrides_for(args, "prior", PRIOR_OVERRIDES))
            row = {**row, "steps": f"{first['steps']} + {row['steps']}", "train_s": first["train_s"] + row["train_s"]}
            scores, real_images = score_images(args, row["run"])
        else:
            row = train(args, family, IMAGE_DATA, family, args.minutes, overrides_for(args, family, IMAGE_OVERRIDES))
            scores, real_images = score_images(args, row["run"])
        rows.append((family, {**row, **scores}))
        text = report(args, rows, real_images, real_code)
        save_partial(args.out, text, family, time.monotonic() - started)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
