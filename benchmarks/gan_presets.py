"""Each GAN loss/regulariser preset trained on mnist for the same wall-time budget, then scored.

    python benchmarks/gan_presets.py                          # 6 presets x 2 minutes of training
    python benchmarks/gan_presets.py --minutes 1 --presets default,hinge+sn --runs runs/gan_presets

Every preset starts from the same seed and gets the same training budget (--minutes of wall time on
this machine's CPU). Its step count is set from a short timing of its own training step, as
`genforge demo` does, so that its learning-rate schedule (cosine decay) runs to completion inside the
budget; a hard stop at exactly the budget backs that up, so no preset trains longer than the others.
Presets whose step is dearer (two discriminator updates, R1, DiffAugment, a ResNet) therefore get
fewer steps: that is the trade-off measured.

Quality is what `genforge eval` reports: n samples against mnist's training split in the features of
the `classifier` extractor (FD, KID, precision, recall); the first row scores n real held-out digits
the same way, for scale. Sampling speed is the best of a few timed draws of n images (batches of 250,
after one warm-up draw), sampling only. Training-health warnings are the ones `genforge train` shows
(generator collapse, discriminator winning outright).

The runs are written under --runs (each preset's folder is replaced). The Markdown report is printed
and written atomically to --out after every preset, so an interrupted run still leaves the presets it
finished.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

import torch
from common import cpu_name, csv, fmt, train_for_budget

# name -> (overrides, what differs from the default). Learning rates and batch are the family's
# defaults (train.lr 5e-4, batch 32, Adam betas 0.5/0.999) in every preset, so only the objective,
# the regularisers and the backbone change.
PRESETS = {
    "default": ((), "non-saturating loss, DCGAN backbone, minibatch spread (the family's defaults)"),
    "hinge+sn": (("model.loss=hinge", "model.spectral_norm=true"), "hinge loss, spectral norm in D"),
    "wgan-gp": (("model.loss=wgan", "model.gp_weight=10", "model.d_steps=2"),
                "WGAN with gradient penalty (lambda 10), 2 D updates per G update, lr kept"),
    "lsgan": (("model.loss=lsgan",), "least-squares loss"),
    "ns+r1+diffaug": (("model.r1_gamma=1", "model.r1_every=16", "model.augment=color,translation"),
                      "non-saturating loss, lazy R1 (gamma 1, every 16 D updates), DiffAugment color+translation"),
    "resnet-hinge-sn": (("model.backbone=resnet", "model.loss=hinge", "model.spectral_norm=true", "model.width=32"),
                        "SNGAN-style ResNet (width 32), hinge loss, spectral norm in D"),
}
COLUMNS = ("fd", "kid", "precision", "recall")






def sampling_rate(run_dir: Path, n: int, repeats: int, seed: int) -> float:
    """Images per second of the run's sampler (EMA weights, eval mode): the best of ``repeats`` draws of n."""
    import genforge

    family = genforge.load(run_dir, device="cpu").family
    batch = min(250, n)
    family.sample(batch, generator=torch.Generator().manual_seed(seed))  # warm-up, untimed
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i, lo in enumerate(range(0, n, batch)):
            family.sample(min(batch, n - lo), generator=torch.Generator().manual_seed(seed * 1_000_003 + i))
        best = min(best, time.perf_counter() - start)
    return n / max(best, 1e-9)




def render(args, argv: list[str], info: dict, rows: dict, real: dict | None, elapsed: float) -> str:
    done = len(rows) == len(args.presets)
    lines = [
        "# GAN presets on mnist: quality at a fixed training budget",
        "",
        "Written by `benchmarks/gan_presets.py`"
        + ("." if done else f" (partial: {len(rows)} of {len(args.presets)} presets so far)."),
        "",
        f"    python benchmarks/gan_presets.py {shlex.join(argv)}".rstrip(),
        "",
        (f"- budget: {args.minutes:g} min of training (wall time) per preset, seed {args.seed}; the step count is "
         "calibrated from a timing of each preset's own step so the cosine schedule ends inside the budget, with a "
         "hard stop at the budget. Learning rate, batch and Adam betas are the family's defaults in every preset."),
        f"- scores: {info['describe']}. Lower FD/KID is better; higher precision/recall is better.",
        (f"- sampling: images/s drawing {args.n} images in batches of {min(250, args.n)} (EMA generator, eval "
         f"mode), best of {args.repeats} after a warm-up."),
        ("- train s: wall time of the training call; CPU s: the CPU time this process used in it (all threads). "
         f"A preset that got well under {args.threads}x its wall time in CPU shared the cores with other jobs."),
        ("- warnings: training-health warnings shown during training (generator collapse or discriminator "
         "winning outright); bad: non-finite losses (skipped steps)."),
        f"- machine: {info['machine']}",
        f"- total wall time: {elapsed / 60:.1f} min",
        "",
        ("| preset | steps | train s | CPU s | ms/step | FD | KID | precision | recall | sampling img/s | G params | "
         "warnings | bad |"),
        "| --- " * 13 + "|",
    ]
    if real is not None:
        lines.append("| real data (held-out) | - | - | - | - | " + " | ".join(fmt(real.get(c)) for c in COLUMNS)
                     + " | - | - | - | - |")
    for name in args.presets:
        row = rows.get(name)
        if row is None:
            continue
        if "error" in row:
            lines.append(f"| {name} | {row.get('step', '-')} | - | - | failed: {row['error']} | | | | | | | | |")
            continue
        m = row["metrics"]
        lines.append(
            f"| {name} | {row['step']:,} | {row['seconds']:.0f} | {row['cpu_s']:.0f} | {1000 * row['seconds'] / max(row['step'], 1):.0f} | "
            + " | ".join(fmt(m.get(c)) for c in COLUMNS)
            + f" | {row['img_s']:,.0f} | {row['g_params'] / 1e6:.2f} M | {len(row['warnings'])} | {row['bad_steps']} |"
        )
    lines += ["", "## Presets", "", "| preset | overrides | what it is |", "| --- | --- | --- |"]
    for name in args.presets:
        overrides, note = PRESETS[name]
        shown = " ".join(f"`{o}`" for o in overrides) or "(none)"
        lines.append(f"| {name} | {shown} | {note} |")
    details = [(name, rows[name]) for name in args.presets if name in rows and "error" not in rows[name]]
    if details:
        lines += ["", "## Training details", "",
                  "| preset | planned steps | stopped by | last losses | D accuracy real / fake | spread fake / real |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for name, row in details:
            losses = row["losses"]
            shown = ", ".join(f"{k.split('/')[0]} {v:.3f}" for k, v in losses.items() if k.endswith("/loss"))
            acc = f"{losses.get('disc/real_acc', float('nan')):.2f} / {losses.get('disc/fake_acc', float('nan')):.2f}"
            spread = f"{losses.get('gen/spread', float('nan')):.3f} / {losses.get('disc/real_spread', float('nan')):.3f}"
            lines.append(f"| {name} | {row['planned']:,} | {row['stopped_by']} | {shown} | {acc} | {spread} |")
        shown_warnings = [(name, w) for name, row in details for w in row["warnings"]]
        if shown_warnings:
            lines += ["", "Warnings shown during training:", ""]
            lines += [f"- {name}: {w}" for name, w in shown_warnings]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=2.0, help="training budget per preset (wall time)")
    parser.add_argument("--presets", type=csv, default=list(PRESETS), help=f"some of: {', '.join(PRESETS)}")
    parser.add_argument("--n", type=int, default=500, help="samples scored per preset (mnist holds out 500)")
    parser.add_argument("--repeats", type=int, default=3, help="timed sampling draws per preset (the best counts)")
    parser.add_argument("--features", default="classifier", help="feature extractor (see `genforge eval`)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: on a shared machine, 2 threads fought other jobs for the cores "
                             "and ran a step 2-4x slower than 1 thread)")
    parser.add_argument("--runs", type=Path, default=Path("runs/gan_presets"), help="where the runs are written")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gan_presets.md"))
    args = parser.parse_args(argv)
    unknown = [p for p in args.presets if p not in PRESETS]
    if unknown:
        parser.error(f"unknown preset(s) {', '.join(unknown)}; expected some of: {', '.join(PRESETS)}")
    if not args.minutes > 0 or args.n < 2 or args.repeats < 1:
        parser.error("--minutes must be positive, --n at least 2 and --repeats at least 1")

    torch.set_num_threads(args.threads)
    import genforge
    from genforge.errors import GenforgeError
    from genforge.evaluate.results import describe
    from genforge.io import atomic_write_text

    info = {"describe": f"{args.n} samples, features: {args.features}",
            "machine": (f"{cpu_name()}, {os.cpu_count()} CPUs (shared with other jobs: timings are noisy), torch "
                        f"{torch.__version__} with {torch.get_num_threads()} threads, device cpu, Python "
                        f"{platform.python_version()}")}
    rows: dict[str, dict] = {}
    real = None
    start = time.perf_counter()
    for name in args.presets:
        overrides = list(PRESETS[name][0])
        run_dir = args.runs / name
        if run_dir.exists():
            if not (run_dir / "config.yaml").is_file():
                print(f"{run_dir} exists and is not a genforge run; refusing to replace it", file=sys.stderr)
                return 2
            shutil.rmtree(run_dir)
        try:
            result, planned, cpu_s, _ = train_for_budget("gan", "mnist", run_dir, list(overrides), args.minutes, args.seed, name)
        except GenforgeError as err:  # TrainingDiverged: too many non-finite losses in a row
            rows[name] = {"error": str(err).split(";")[0]}
            print(f"[{name}] failed: {err}", flush=True)
            atomic_write_text(args.out, render(args, argv, info, rows, real, time.perf_counter() - start))
            continue
        scored = genforge.evaluate(run_dir, n=args.n, features=args.features, seed=args.seed, device="cpu",
                                   progress=False, reference=real is None)
        if real is None and scored.get("reference_result"):
            real = scored["reference_result"]["metrics"]
        info["describe"] = describe(scored)
        family = genforge.load(run_dir, device="cpu").family
        rows[name] = {
            "step": result.step, "planned": planned, "seconds": result.seconds, "cpu_s": cpu_s, "stopped_by": result.stopped_by,
            "metrics": scored["metrics"], "img_s": sampling_rate(run_dir, args.n, args.repeats, args.seed),
            "g_params": sum(p.numel() for p in family.generator.parameters()),
            "warnings": list(result.warnings), "bad_steps": result.bad_steps, "losses": dict(result.last_losses),
        }
        m = scored["metrics"]
        print(f"[{name}] {result.step} steps in {result.seconds:.0f} s: FD {m['fd']:.3g}, KID {m['kid']:.3g}, "
              f"precision {m['precision']:.2f}, recall {m['recall']:.2f}, {rows[name]['img_s']:,.0f} img/s, "
              f"{len(result.warnings)} warnings ({(time.perf_counter() - start) / 60:.1f} min so far)", flush=True)
        atomic_write_text(args.out, render(args, argv, info, rows, real, time.perf_counter() - start))
    text = render(args, argv, info, rows, real, time.perf_counter() - start)
    atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
