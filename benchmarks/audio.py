"""Every family on spoken digits at the same CPU budget, scored alike: the audio modality's quality table.

    python benchmarks/audio.py                                   # 5 families x 3 CPU minutes (~35 min on 2 cores)
    python benchmarks/audio.py --quick                           # a smoke run (~2-3 min once the data is cached)
    python benchmarks/audio.py --families gan,vae --minutes 1 --set gan:train.batch_size=16

Data: the built-in `spoken-digits` (espeak-ng saying "zero" to "nine", 3,000 one-second clips, 10% held out: 300
clips). Families, each trained for --minutes of wall time on the CPU (the step count planned from a timing of its
own step, so the learning-rate schedule ends inside the budget, with a hard stop at the budget):

- diffusion, gan, vae: 16 kHz clips as 64 x 64 log-mel images (the UNet's diffusion, the GAN as SpecGAN, the VAE);
  their samples become sound through Griffin-Lim.
- wave-diffusion: diffusion on raw waveforms with DiffWave's 1-D denoiser, at 8 kHz (a 16 kHz step costs about
  three times as much on a CPU). Its scores are measured against the same clips at 8 kHz, with that data's own
  classifier, so compare this row with its own real-data row, not with the 16 kHz rows.
- vqvae+prior: a VQ-VAE on the 16 kHz mels (16 x 16 codes of each 64 x 64 mel), then a transformer prior over its
  codes (`codes:RUN`, one grid per context: end-of-text, class token, 256 codes); --prior-share of the budget
  goes to the prior. Its samples are decoded through the VQ-VAE, then Griffin-Lim.

Each run is scored by `genforge.evaluate(run, n=N)`: N clips against the training clips' log-mels in the features
of a digit classifier trained on them (FD, and the classifier score, the Inception Score of SC09 papers: up to
10), FD in a random network's features, the per-band mel level difference (dB) and the share of silent samples,
beside real held-out clips scored the same way (for mel data: their spectrograms made audible by Griffin-Lim and
analysed again, so the row shows what that round trip costs). Sampling speed is seconds of audio made per
second of wall time (sampling and, for mels, Griffin-Lim). The first run on a machine also prepares the data
(about 30 s per sample rate and representation) and trains the scorer's classifier for each sample rate (a few
minutes each, cached in $GENFORGE_CACHE/extractors).

The Markdown table is printed and written atomically to --out after each family, the full results as JSON beside
it (--out with .json).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common import cpu_name, csv, fmt, save_partial

DATA = "spoken-digits"
SEED = 0


@dataclass(frozen=True)
class Recipe:
    family: str  # genforge's family
    overrides: tuple[str, ...]
    what: str  # for the table


# Recipes for a few CPU minutes, from trials at equal cost (steps scaled by each recipe's time per step on an idle
# machine; about a third of the 3-minute budget each; FD / classifier score at n = 100, real clips 2.6 / 6.8):
# - diffusion: the default batch 16 (170 steps) 12.5 / 5.0, batch 8 (375 steps) 29.7 / 3.7: the defaults (EDM, lr
#   2e-3), sampled with 25 steps, not 50 (a 64 x 64 UNet step costs ~35 ms per clip on 2 cores: 250 clips at 50
#   steps would take ~7 minutes);
# - gan: batch 16 (600 steps) 21.6 / 5.1, the default batch 32 (340 steps) 52.7 / 3.6;
# - vae: batch 32 (600 steps) 72.4 / 4.3, the default 64 (315 steps) 90.5 / 3.7, a Gaussian decoder 156 / 2.3, the
#   batch-32 run shown at decoder temperature 0.7 84.1 / 3.9 (1 kept);
# - wave-diffusion: batch 4 (170 steps) 693 / 1.0, batch 8 (75 steps) 1386 / 1.0 (8 kHz scores, noise either way);
# - vqvae+prior: the README's two-stage recipe (a smaller VQ-VAE with fewer codes, the prior at temperature 1), its
#   context one 16 x 16 grid; mels are continuous, so the VQ-VAE keeps its MSE loss.
RECIPES = {
    "diffusion": Recipe("diffusion", ("model.sample_steps=25",),
                        "UNet on 16 kHz log-mels, EDM, batch 16, 25 sampling steps (the defaults but those)"),
    "gan": Recipe("gan", ("train.batch_size=16",), "SpecGAN: the DCGAN on 16 kHz log-mels, batch 16"),
    "vae": Recipe("vae", ("train.batch_size=32",), "conv VAE on 16 kHz log-mels, batch 32"),
    "wave-diffusion": Recipe("diffusion", ("data.representation=waveform", "data.sample_rate=8000",
                                           "train.batch_size=4", "model.sample_steps=10"),
                             "DiffWave (32 channels, 12 layers) on 8 kHz waveforms, batch 4, 10 sampling steps"),
    "vqvae+prior": Recipe("vqvae", ("model.width=32", "model.num_codes=128"),
                          "VQ-VAE (width 32, 128 codes, a 16 x 16 grid), then a transformer prior (3 x 128) sampled "
                          "at temperature 1"),
}
PRIOR_OVERRIDES = ("data.block_size=258", "model.temperature=1.0")  # one grid: end-of-text, class token, 256 codes
FAMILIES = tuple(RECIPES)
SET_TARGETS = FAMILIES + ("vqvae", "prior")
# a smoke run: tiny budgets and few sampling steps, to check the script end to end, not to measure anything
QUICK = {"minutes": 0.1, "n": 20}
QUICK_OVERRIDES = {"diffusion": ("model.sample_steps=2",), "wave-diffusion": ("model.sample_steps=2",)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=None,
                   help="training wall time per family (vqvae+prior: both stages together); default 3 (--quick: 0.1)")
    p.add_argument("--families", type=csv, default=list(FAMILIES), help=", ".join(FAMILIES))
    p.add_argument("--n", type=int, default=None,
                   help="clips scored per family, and real held-out clips (at most 300 for the real row); "
                        "default 250 (--quick: 20)")
    p.add_argument("--prior-share", type=float, default=0.65, help="vqvae+prior: the prior's share of --minutes")
    p.add_argument("--set", dest="sets", action="append", default=[],
                   help="FAMILY:section.key=value, an override for one family's run (repeatable; vqvae: and prior: "
                        "for the two stages of vqvae+prior)")
    p.add_argument("--runs", type=Path, default=Path("benchmarks/runs/audio"), help="where the runs go (replaced)")
    p.add_argument("--out", type=Path, default=None,
                   help="the Markdown table; the JSON goes beside it (default benchmarks/results/audio.md, "
                        "--quick: audio_quick.md)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 6-second budgets, n = 20, 2 diffusion sampling steps (~2-3 min)")
    args = p.parse_args(argv)
    unknown = [f for f in args.families if f not in FAMILIES]
    if unknown:
        p.error(f"unknown families {unknown}; expected some of {', '.join(FAMILIES)}")
    for item in args.sets:
        if ":" not in item or item.split(":", 1)[0] not in SET_TARGETS:
            p.error(f"--set takes FAMILY:section.key=value with FAMILY one of {', '.join(SET_TARGETS)}, got {item!r}")
    args.minutes = args.minutes or (QUICK["minutes"] if args.quick else 3.0)
    args.n = args.n or (QUICK["n"] if args.quick else 250)
    if args.minutes <= 0 or args.n < 2 or not 0 < args.prior_share < 1:
        p.error("--minutes must be positive, --n at least 2 and --prior-share between 0 and 1")
    results = Path(__file__).parent / "results"
    args.out = args.out or results / ("audio_quick.md" if args.quick else "audio.md")
    return args


def overrides_for(args: argparse.Namespace, name: str, base=()) -> list[str]:
    """The recipe's overrides, then a smoke run's, then --set's for ``name``: a later value of a key replaces an
    earlier one."""
    quick = [*QUICK_OVERRIDES.get(name, ()), "train.grid_size=4"] if args.quick else []
    given = [*base, *quick, *(item.split(":", 1)[1] for item in args.sets if item.split(":", 1)[0] == name)]
    last = {item.split("=", 1)[0]: item for item in given}
    return list(dict.fromkeys(last[item.split("=", 1)[0]] for item in given))


# ----------------------------------------------------------------------------------------------- training
def train(args, family: str, data: str, name: str, minutes: float, overrides: list[str]) -> dict:
    """One run trained for ``minutes`` of wall time on the CPU (``common.train_for_budget``'s plan, with fewer
    timing steps in a smoke run): its row's training columns."""
    import genforge
    from genforge.api import make_config
    from genforge.demo import seconds_per_step
    from genforge.modalities import prepare

    run_dir = args.runs / name
    shutil.rmtree(run_dir, ignore_errors=True)
    config = make_config(family, data, overrides=overrides, device="cpu", seed=SEED)
    prepared = prepare(config.data.source, config.data, progress=False)
    per_step = seconds_per_step(config, prepared, probes=1 if args.quick else 8)
    planned = max(20, int(minutes * 60 / per_step))
    print(f"[{name}] {planned} steps planned ({1000 * per_step:.0f} ms/step)", flush=True)
    cpu_start = time.process_time()
    result = genforge.train(family, data, run_dir, steps=planned, overrides=overrides, progress=False, device="cpu",
                            seed=SEED, max_minutes=minutes, sample_every=0, ckpt_every=planned)
    return {"run": run_dir, "steps": result.step, "planned": planned, "train_s": result.seconds,
            "cpu_s": time.process_time() - cpu_start, "ms_per_step": 1000 * per_step, "overrides": overrides,
            # "done of planned" when the budget stopped the run before its schedule ended (a busier machine than
            # at the timing)
            "steps_cell": fmt(result.step) if result.step >= planned else f"{result.step:,} of {planned:,}"}


def train_family(args, name: str) -> dict:
    recipe = RECIPES[name]
    if name != "vqvae+prior":
        return train(args, recipe.family, DATA, name, args.minutes, overrides_for(args, name, recipe.overrides))
    first = train(args, "vqvae", DATA, "vqvae", args.minutes * (1 - args.prior_share),
                  overrides_for(args, "vqvae", recipe.overrides))
    second = train(args, "transformer", f"codes:{first['run']}", "prior", args.minutes * args.prior_share,
                   overrides_for(args, "prior", PRIOR_OVERRIDES))
    both = {key: [first[key], second[key]] for key in ("steps", "planned", "ms_per_step")}
    return {**second, **both, "train_s": first["train_s"] + second["train_s"], "cpu_s": first["cpu_s"] + second["cpu_s"],
            "overrides": {"vqvae": first["overrides"], "prior": second["overrides"]},
            "steps_cell": f"{first['steps_cell']} + {second['steps_cell']}"}


# ----------------------------------------------------------------------------------------------- scoring
def scored_data(run_dir: Path) -> str:
    """What a run's samples are scored against, e.g. "16 kHz mel": the reference row it shares with others (a
    prior is scored against its VQ-VAE's data)."""
    from genforge.runs import Run

    data = Run.open(run_dir).config.data
    if data.source.startswith("codes:"):
        data = Run.open(data.source.split(":", 1)[1]).config.data
    kind = "waveform" if data.representation == "waveform" else "mel"
    return f"{data.sample_rate / 1000:g} kHz {kind}"


def score(args, run_dir: Path, references: dict) -> dict:
    """The run's metrics and sampling speed; the real held-out row of its data is added to ``references`` the
    first time that data is scored (it is the same for every run on that data)."""
    import genforge

    key = scored_data(run_dir)
    result = genforge.evaluate(run_dir, n=args.n, progress=False, reference=key not in references)
    if key not in references:
        reference = result.get("reference_result")
        references[key] = reference["metrics"] if reference else None
    sampling = result.get("sampling") or {}
    return {"data": key, "metrics": result["metrics"], "audio_s_per_s": sampling.get("audio_seconds_per_s"),
            "clips_per_s": sampling.get("items_per_s"), "eval_s": result.get("seconds"),
            "extractor": (result.get("extractor") or {}).get("detail")}


# ----------------------------------------------------------------------------------------------- report
COLUMNS = ("fd", "classifier_score", "fd_random", "kid", "mel_distance", "silent")


def report(args, rows: list[tuple[str, dict]], references: dict, elapsed: float) -> str:
    import torch

    cols = ["data", "steps", "train s", "FD", "classifier score", "FD random", "KID", "mel distance dB", "silent",
            "audio s/s"]
    lines = [f"# Audio: every family on spoken digits at {args.minutes:g} CPU minutes", "",
             f"    python benchmarks/audio.py {' '.join(sys.argv[1:])}".rstrip(), "",
             f"Machine: {cpu_name()}, torch {torch.__version__} with {torch.get_num_threads()} threads, "
             f"{platform.system()}, Python {platform.python_version()}. n = {args.n} clips per run against the "
             "training clips' log-mels: FD and KID in a digit classifier's features (lower is better), its "
             "classifier score (higher is better, 10 at most), FD in a random network's features, the mean "
             "per-band mel level difference (dB) and the share of silent samples. Audio s/s: seconds of audio "
             "sampled per second of wall time (mels: with Griffin-Lim). Real rows: n held-out clips scored the "
             "same way. A row of other data (the 8 kHz waveforms) has its own classifier and real row: read it "
             "against those only.", "",
             "| run | " + " | ".join(cols) + " |", "| --- " * (len(cols) + 1) + "|"]
    for key, real in references.items():
        if real:
            cells = [key, "-", "-", *(fmt(real.get(k)) for k in COLUMNS), "-"]
            lines.append("| real data (held-out) | " + " | ".join(cells) + " |")
    for name, r in rows:
        cells = [r["data"], r["steps_cell"], fmt(r["train_s"]), *(fmt(r["metrics"].get(k)) for k in COLUMNS),
                 fmt(r["audio_s_per_s"])]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Recipes (the overrides of each run):", ""]
    for name, r in rows:
        stages = r["overrides"] if isinstance(r["overrides"], dict) else {"": r["overrides"]}
        used = "; ".join(f"{stage + ': ' if stage else ''}`{' '.join(o) or '(defaults)'}`" for stage, o in stages.items())
        lines.append(f"- {name}: {RECIPES[name].what}. {used}")
    lines += ["", f"Total wall time: {elapsed / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def save_json(args, rows: list[tuple[str, dict]], references: dict, elapsed: float) -> None:
    import torch

    from genforge.io import atomic_write_text

    record = {"command": ["python", "benchmarks/audio.py", *sys.argv[1:]], "machine": cpu_name(),
              "torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
              "data": DATA, "minutes": args.minutes, "n": args.n, "prior_share": args.prior_share,
              "quick": args.quick, "total_s": elapsed, "references": references,
              "rows": [{"name": name, **{k: (str(v) if isinstance(v, Path) else v) for k, v in r.items()}}
                       for name, r in rows]}
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(record, indent=1, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows: list[tuple[str, dict]] = []
    references: dict = {}
    started = time.monotonic()
    text = ""
    for name in args.families:
        row = train_family(args, name)
        row.update(score(args, row["run"], references))
        rows.append((name, row))
        elapsed = time.monotonic() - started
        text = report(args, rows, references, elapsed)
        save_json(args, rows, references, elapsed)
        save_partial(args.out, text, name, elapsed)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
