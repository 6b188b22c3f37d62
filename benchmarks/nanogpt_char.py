"""genforge's code-model default against nanoGPT's character-level recipe, on `pycode`, at the same minutes.

    python benchmarks/nanogpt_char.py                      # each recipe 2 minutes of training (~8 min in all)
    python benchmarks/nanogpt_char.py --minutes 0.3 --n-text 20        # a smoke run
    python benchmarks/nanogpt_char.py --recipes genforge,genforge-char,nanogpt-char,nanogpt-char-full

nanoGPT's `config/train_shakespeare_char.py` trains a 6-layer, 6-head, 384-wide GPT (learned positions,
LayerNorm, GELU, no biases, tied embeddings) on 256-character windows in batches of 64, dropout 0.2,
AdamW lr 1e-3 with beta2 0.99, 100 warm-up steps, then cosine decay to 1e-4 over 5,000 steps, weight decay
0.1, gradient clipping at 1. At full size one such step takes seconds on a CPU, so a few minutes train a
handful of steps (`nanogpt-char-full`, not in the default list, shows it). `nanogpt-char` scales it to the
budget by halving depth, heads and width together (3 layers, 3 heads, 192 wide: nanoGPT's head size of 64
and its 64 channels per layer kept) and by cutting the batch from 64 windows to 16 (4,096 tokens a step, as
genforge's default), keeping its context, dropout, optimiser and schedule shape: warm-up over the same 2% of
the run (100 of 5,000 steps) and cosine decay over the whole run to a tenth of the peak, on characters.
`genforge` is genforge's own defaults for a new transformer run (3 layers of 128, RoPE, RMSNorm, SwiGLU,
batch 32, lr 6e-3) on the data settings measured best at this budget (the demo's): a 512-id byte-level BPE,
64-token windows, half of them starting at a file's start (`data.doc_starts`); `genforge-char` (not in the default list) is the same on characters with the demo's 128-character
windows. Every recipe trains through genforge's own transformer (``--set`` overrides).

Each recipe gets the same --minutes of wall time on the CPU (the step count planned from a timing of its own
step, as `genforge demo` does, with a hard stop at the budget) and is scored exactly as
`benchmarks/quality_budget.py` scores code: `genforge.evaluate(run, n=--n-text)`, held-out bits per byte
(tokenizer-independent), the share of samples that parse as Python and distinct-2, with real held-out code
scored the same way as the first row. Samples are drawn with each run's own sampling defaults, the same for
both recipes (a new run's `model.temperature`, `model.top_p`, `model.code_stop`). The Markdown report is
printed and written atomically to --out after every recipe.
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
from common import cpu_name, csv, fmt, save_partial, train_for_budget

from genforge.demo import CODE_DATA

DATA = "pycode"
SEED = 0
NANOGPT_STEPS, NANOGPT_WARMUP = 5000, 100  # train_shakespeare_char.py: max_iters, warmup_iters
# nanoGPT's model and optimiser as genforge options (everything but size, batch and warm-up)
NANOGPT_COMMON = ("model.pos=learned", "model.norm=layernorm", "model.mlp=gelu", "model.bias=false",
                  "model.dropout=0.2", "data.block_size=256", "data.tokenizer=char", "train.lr=1e-3",
                  "train.min_lr_ratio=0.1", "train.betas=[0.9,0.99]", "train.weight_decay=0.1", "train.grad_clip=1.0",
                  "train.ema_decay=0")
# name -> (overrides, what it is); the warm-up of nanoGPT's recipes is set from the planned steps
RECIPES = {
    "genforge": (CODE_DATA,
                 "genforge's defaults for new transformer runs with the demo's code data: a 512-id byte-level BPE, "
                 "64-token windows, half of them opening a file"),
    "genforge-char": (("data.block_size=128",), "genforge's defaults on characters, 128-character windows (the "
                      "demo's data settings before BPE)"),
    "nanogpt-char": (NANOGPT_COMMON + ("model.n_layer=3", "model.n_head=3", "model.n_embd=192", "train.batch_size=16"),
                     "nanoGPT shakespeare-char at half depth, heads and width, batch 16"),
    "nanogpt-char-full": (NANOGPT_COMMON + ("model.n_layer=6", "model.n_head=6", "model.n_embd=384",
                                            "train.batch_size=64"), "nanoGPT shakespeare-char at full size"),
}
DEFAULT_RECIPES = ("genforge", "nanogpt-char")
KEYS = ("bits_per_byte", "parse_share", "distinct_2")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=2.0, help="training wall time per recipe")
    p.add_argument("--recipes", type=csv, default=list(DEFAULT_RECIPES), help=f"some of: {', '.join(RECIPES)}")
    p.add_argument("--n-text", type=int, default=100, help="code samples scored per recipe (as quality_budget.py)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared machine)")
    p.add_argument("--runs", type=Path, default=Path("benchmarks/runs/nanogpt_char"), help="where the runs go")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/nanogpt_char.md"))
    args = p.parse_args(argv)
    unknown = [r for r in args.recipes if r not in RECIPES]
    if unknown:
        p.error(f"unknown recipe(s) {', '.join(unknown)}; expected some of: {', '.join(RECIPES)}")
    if not args.minutes > 0 or args.n_text < 2:
        p.error("--minutes must be positive and --n-text at least 2")
    return args


def warmup_for(name: str, overrides: list[str], minutes: float) -> list[str]:
    """nanoGPT's warm-up share (100 of 5,000 steps) of the steps a recipe gets in ``minutes``: its schedule
    shape, scaled to the run. genforge's own recipe keeps its default warm-up."""
    if not name.startswith("nanogpt"):
        return []
    from genforge.api import make_config
    from genforge.demo import seconds_per_step
    from genforge.modalities import prepare

    config = make_config("transformer", DATA, overrides=overrides, device="cpu", seed=SEED)
    steps = max(20, int(minutes * 60 / seconds_per_step(config, prepare(DATA, config.data, progress=False), probes=4)))
    return [f"train.warmup_steps={max(1, round(steps * NANOGPT_WARMUP / NANOGPT_STEPS))}"]


def train_and_score(args, name: str) -> tuple[dict, dict]:
    """One recipe trained for --minutes and scored: (its row, the real held-out row)."""
    import genforge

    run_dir = args.runs / name
    if run_dir.exists() and not (run_dir / "config.yaml").is_file():
        raise SystemExit(f"{run_dir} exists and is not a genforge run; refusing to replace it")
    shutil.rmtree(run_dir, ignore_errors=True)
    overrides = list(RECIPES[name][0])
    overrides += warmup_for(name, overrides, args.minutes)
    result, planned, cpu_s, _ = train_for_budget("transformer", DATA, run_dir, overrides, args.minutes, SEED, name)
    scored = genforge.evaluate(run_dir, n=args.n_text, progress=False, reference=True)
    metrics, floor = scored["metrics"], (scored.get("reference_result") or {}).get("metrics", {})
    model = genforge.load(run_dir, device="cpu")
    row = {"steps": result.step, "planned": planned, "train_s": result.seconds, "cpu_s": cpu_s,
           "params": model.num_parameters, "overrides": overrides,
           "samples_per_s": (scored.get("sampling") or {}).get("items_per_s"), **{k: metrics.get(k) for k in KEYS}}
    return row, {k: floor.get(k) for k in KEYS}


def render(args, argv: list[str], rows: dict, real: dict | None, elapsed: float) -> str:
    done = len(rows) == len(args.recipes)
    lines = ["# genforge's code model against nanoGPT's character-level recipe on pycode", "",
             "Written by `benchmarks/nanogpt_char.py`" + ("." if done else f" (partial: {len(rows)} of "
                                                          f"{len(args.recipes)} recipes so far)."), "",
             f"    python benchmarks/nanogpt_char.py {shlex.join(argv)}".rstrip(), "",
             (f"- budget: {args.minutes:g} min of training (wall time) per recipe, seed {SEED}; steps planned from a "
              "timing of each recipe's own step, hard stop at the budget."),
             (f"- scores: as `benchmarks/quality_budget.py` scores code: held-out bits per byte (lower is better), "
              f"then {args.n_text} samples of 256 tokens: the share that parses, distinct-2; each run's own "
              "sampling defaults (the same for every recipe)."),
             (f"- machine: {cpu_name()}, {os.cpu_count()} CPUs, torch "
              f"{torch.__version__} with {torch.get_num_threads()} thread(s), Python {platform.python_version()}"),
             f"- total wall time: {elapsed / 60:.1f} min", "",
             "| recipe | steps | train s | ms/step | parameters | bits/byte | parse share | distinct-2 | samples/s |",
             "| --- " * 9 + "|"]
    if real:
        lines.append("| real data (held-out) | - | - | - | - | - | " + " | ".join(fmt(real.get(k)) for k in KEYS[1:])
                     + " | - |")
    for name in args.recipes:
        if name in rows:
            r = rows[name]
            lines.append(f"| {name} | {r['steps']:,} | {r['train_s']:.0f} | {1000 * r['train_s'] / max(r['steps'], 1):.0f} "
                         f"| {r['params'] / 1e6:.2f} M | " + " | ".join(fmt(r.get(k)) for k in KEYS)
                         + f" | {fmt(r.get('samples_per_s'))} |")
    lines += ["", "| recipe | what it is | overrides |", "| --- | --- | --- |"]
    for name in args.recipes:
        shown = " ".join(f"`{o}`" for o in rows[name]["overrides"]) if name in rows else ""
        lines.append(f"| {name} | {RECIPES[name][1]} | {shown or '(none)'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)

    rows: dict[str, dict] = {}
    real = None
    start = time.perf_counter()
    for name in args.recipes:
        rows[name], real = train_and_score(args, name)
        text = render(args, argv, rows, real, time.perf_counter() - start)
        save_partial(args.out, text, name, time.perf_counter() - start)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
