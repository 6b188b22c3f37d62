"""VAE, beta-VAE, free-bits VAE and VQ-VAE (+ a transformer prior on its codes) on mnist at one CPU budget.

    python benchmarks/vae_variants.py                       # 2 minutes of training per model, ~20 min in all
    python benchmarks/vae_variants.py --minutes 1 --variants vae,beta-vae --iwae-n 100

Every model starts from the same seed and gets the same training budget (--minutes of wall time on
this machine's CPU); the transformer prior gets the same budget again after its VQ-VAE. As in
benchmarks/gan_presets.py, each model's step count is set from a short timing of its own training
step so that its cosine schedule ends inside the budget, with a hard stop at the budget.

What is measured, all on mnist's 500 held-out images (genforge's mnist is a 5,000-digit subset:
4,500 train, 500 validation):

- Gaussian-latent VAEs (bernoulli decoder on binarised digits, the family's defaults): the
  importance-weighted bound on -log p(x | y) with k = --iwae-k samples on the first --iwae-n images,
  the one-sample negative ELBO (k = 1) on the same images and on all of them, the mean KL of q(z|x)
  from the prior, active latent units (variance over the images of the posterior mean > 0.01), and the
  reconstruction error: mean squared error in [-1, 1] of the decoder's mean image of the posterior mean
  against the binarised digit the model sees, and against the grey original.
- VQ-VAE: reconstruction MSE against the grey digit (what it is trained on) and against the
  binarised one; codebook usage (share of codes used) and perplexity (exp of the entropy of the code
  histogram) over the validation images' code grids.
- Its prior (genforge's transformer on the code grids, data "codes:RUN"): -log p(codes) of each
  validation image's 7x7 grid, given the end-of-text token that starts it, in nats per code token and
  per image. A likelihood of the discrete codes, not of pixels.
- Samples: --n samples of each model against the training split in the features of the `classifier`
  extractor (Frechet distance, KID, precision, recall), the evaluator's own pieces; the first row
  scores the real held-out digits the same way.

The runs are written under --runs (each model's folder is replaced). The Markdown report is printed
and written atomically to --out after every model, so an interrupted run still leaves what it finished.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

import torch
from common import cpu_name, csv, fmt, train_for_budget

# name -> (family, overrides, what differs). Learning rate, batch and everything else are the
# families' defaults; the VAE defaults are the bernoulli decoder on binarised images, 16 latents and
# a class-conditional prior.
VARIANTS = {
    "vae": ("vae", (), "the family's defaults: bernoulli decoder on binarised digits, beta 1, images shown at "
                       "decoder temperature 0.5"),
    "vae-mean": ("vae", ("model.decoder_temperature=1",),
                 "the plain mean image (decoder temperature 1), what runs made before the option show"),
    "vae-mixture-prior": ("vae", ("model.prior_components=4",),
                          "a learned mixture of 4 diagonal Gaussians per class as the prior"),
    "beta-vae": ("vae", ("model.kl_beta=4", "model.kl_warmup_steps=500"),
                 "KL weight 4, ramped linearly from 0 over the first 500 steps"),
    "vae-free-bits": ("vae", ("model.free_bits=0.5",),
                      "free bits: a latent dimension's batch-mean KL below 0.5 nats is not penalised"),
    "vqvae": ("vqvae", (), "the family's defaults: 256 codes of 32 dims on a 7x7 grid, MSE loss"),
}
# the VQ-VAE's prior: trained on code grids right after its VQ-VAE; 50 tokens per image (end-of-text, 49 codes)
PRIOR_OVERRIDES = ("data.block_size=100",)
PRIOR_TEMPERATURES = (1.0, 0.8)  # 1.0: the model's own distribution; 0.8: genforge's default for sampling
SAMPLE_COLUMNS = ("fd", "kid", "precision", "recall")








def mean_se(values: torch.Tensor) -> tuple[float, float]:
    values = values.double()
    se = float(values.std() / math.sqrt(len(values))) if len(values) > 1 else float("nan")
    return float(values.mean()), se


def batches(data: dict[str, torch.Tensor], size: int):
    n = len(data["x"])
    for lo in range(0, n, size):
        yield {k: v[lo:lo + size] for k, v in data.items()}


# ---- measurements ----------------------------------------------------------------------------------------


@torch.no_grad()
def vae_scores(family, val: dict[str, torch.Tensor], iwae_n: int, iwae_k: int, seed: int) -> dict:
    """Likelihood bounds, KL, active units and reconstruction errors of a Gaussian-latent VAE on ``val``."""
    out: dict = {}
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    nelbo_all = torch.cat([family.log_likelihood(b, generator=generator, samples=1) for b in batches(val, 100)])
    subset = {k: v[:iwae_n] for k, v in val.items()}
    generator = torch.Generator().manual_seed(seed)
    nelbo_sub = torch.cat([family.log_likelihood(b, generator=generator, samples=1) for b in batches(subset, 100)])
    out["elbo_s"] = time.perf_counter() - start
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    iwae = torch.cat([family.log_likelihood(b, generator=generator, samples=iwae_k) for b in batches(subset, 50)])
    out["iwae_s"] = time.perf_counter() - start
    out["nll"], out["nll_se"] = mean_se(iwae)
    out["nelbo_sub"], out["nelbo_sub_se"] = mean_se(nelbo_sub)
    out["nelbo"], out["nelbo_se"] = mean_se(nelbo_all)
    out["gap"] = float((nelbo_sub - iwae).double().mean())  # paired: same images, so far less noisy than either
    x, y = val["x"], val.get("y")
    seen = family.data_view(x)
    mu, logvar = family.posterior(seen)
    kl_dims = family.kl_per_dim(mu, logvar, y)  # None for a mixture prior: estimate it from one posterior draw
    if kl_dims is None:
        eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(seed))
        kl = family.kl_sampled(mu + eps * (0.5 * logvar).exp(), eps, logvar, y)
    else:
        kl = kl_dims.sum(dim=1)
    out["kl"] = float(kl.mean())
    out["active_units"] = int((mu.var(dim=0) > 0.01).sum())
    out["latent_dim"] = mu.shape[1]
    recon = torch.cat([family.reconstruct(part) for part in x.split(250)])
    out["mse_seen"] = float(((recon - seen) ** 2).mean())
    out["mse_grey"] = float(((recon - x) ** 2).mean())
    return out


@torch.no_grad()
def vqvae_scores(family, val: dict[str, torch.Tensor]) -> dict:
    x = val["x"]
    codes = torch.cat([family.encode_codes(part) for part in x.split(250)])
    recon = torch.cat([family.decode_codes(part) for part in codes.split(250)])
    binary = torch.where(x > 0, 1.0, -1.0)
    counts = torch.bincount(codes.flatten(), minlength=family.num_codes).double()
    probs = counts / counts.sum()
    return {
        "mse_grey": float(((recon - x) ** 2).mean()),
        "mse_seen": float(((recon - binary) ** 2).mean()),
        "usage": float((counts > 0).double().mean()),
        "codes_used": int((counts > 0).sum()),
        "num_codes": family.num_codes,
        "perplexity": float(torch.exp(-torch.special.xlogy(probs, probs).sum())),
        "grid": tuple(family.code_grid),
    }


@torch.no_grad()
def code_nll(family, prepared) -> dict:
    """-log p(codes) of every validation grid under the prior, given the end-of-text that starts it."""
    import numpy as np

    grid_tokens = prepared.tokenizer.grid_tokens
    tokens = torch.from_numpy(np.asarray(prepared.val.tokens).astype(np.int64))
    rows = tokens.view(-1, grid_tokens + 1)  # each row: end-of-text, then the grid row by row
    if not bool((rows[:, 0] == prepared.tokenizer.eot_id).all()):
        raise RuntimeError("the validation code stream is not made of end-of-text + one grid per image")
    nats = torch.cat([family.log_likelihood({"x": part[:, :-1].to(family.device), "y": part[:, 1:].to(family.device)})
                      .sum(dim=1).cpu() for part in rows.split(100)])
    per_image, se = mean_se(nats)
    return {"images": len(rows), "tokens": grid_tokens, "per_image": per_image, "per_image_se": se,
            "per_token": per_image / grid_tokens, "uniform": grid_tokens * math.log(prepared.tokenizer.num_codes)}


@torch.no_grad()
def draw(family, n: int, seed: int) -> torch.Tensor:
    """n samples in seeded batches of 250 (batch i uses seed (seed, i)), as `genforge eval` draws them."""
    parts = []
    for i, lo in enumerate(range(0, n, 250)):
        generator = torch.Generator(device=family.device).manual_seed(seed * 1_000_003 + i)
        parts.append(family.sample(min(250, n - lo), generator=generator).float().cpu())
    return torch.cat(parts)


def sample_scores(scorer, images: torch.Tensor, seed: int) -> dict:
    """FD, KID, precision and recall of ``images`` against the training split, in ``scorer``'s features."""
    from genforge.evaluate.image_metrics import image_scores

    reference = scorer.reference_features().numpy()
    return image_scores(reference, scorer.features(images).numpy(), train=reference, seed=seed)


# ---- the report ------------------------------------------------------------------------------------------


def render(args, argv: list[str], info: dict, rows: dict, samples: dict, elapsed: float, done: bool) -> str:
    vaes = [name for name in args.variants if VARIANTS[name][0] == "vae"]
    lines = [
        "# VAE variants on mnist: likelihood, reconstruction and samples at a fixed CPU budget",
        "",
        "Written by `benchmarks/vae_variants.py`" + ("." if done else " (partial: still running or interrupted)."),
        "",
        f"    python benchmarks/vae_variants.py {shlex.join(argv)}".rstrip(),
        "",
        (f"- budget: {args.minutes:g} min of training (wall time) per model, seed {args.seed}; the step count is "
         "calibrated from a timing of each model's own step so the cosine schedule ends inside the budget, with a "
         "hard stop at the budget. The transformer prior gets the same budget after its VQ-VAE."),
        ("- data: genforge's built-in mnist, a 5,000-digit subset of MNIST (4,500 train, 500 validation); every "
         "number below is on the 500 validation digits unless it says otherwise. Not the full MNIST test set."),
        (f"- NLL: the importance-weighted bound with k = {args.iwae_k} on the first {args.iwae_n} validation digits "
         f"(one torch generator seeded {args.seed}), ± the standard error over those digits; -ELBO: k = 1 (KL in "
         "closed form). The VAEs have a class-conditional prior (the family's default), so these bound -log p(x | y) "
         "of the binarised digit; -log p(x) <= -log p(x | y) + ln 10, i.e. an unconditional bound is at most 2.30 "
         "nats higher. gap: -ELBO minus NLL on the same digits (paired)."),
        ("- MSE: mean squared error on the [-1, 1] pixel scale of the reconstruction (VAE: decoder mean at the "
         "posterior mean; VQ-VAE: decode(encode(x))) against the binarised digit ({-1, 1}, what the VAEs model) "
         "and against the grey digit (what the VQ-VAE models)."),
        f"- samples: {info['describe']}. Lower FD/KID is better; higher precision/recall is better.",
        f"- machine: {info['machine']}",
        f"- total wall time: {elapsed / 60:.1f} min",
        "",
        "## Gaussian-latent VAEs (binarised digits, bernoulli decoder)",
        "",
        (f"| model | steps | train s | NLL k={args.iwae_k} ({args.iwae_n} digits) | -ELBO (same digits) | gap | "
         "-ELBO (all 500) | KL | active units | MSE vs binarised | MSE vs grey |"),
        "| --- " * 11 + "|",
    ]
    for name in vaes:
        row = rows.get(name)
        if row is None:
            continue
        if "error" in row:
            lines.append(f"| {name} | failed: {row['error']} |" + " |" * 9)
            continue
        s = row["scores"]
        lines.append(
            f"| {name} | {row['step']:,} | {row['seconds']:.0f} | {s['nll']:.1f} ± {s['nll_se']:.1f} | "
            f"{s['nelbo_sub']:.1f} ± {s['nelbo_sub_se']:.1f} | {s['gap']:.1f} | {s['nelbo']:.1f} ± {s['nelbo_se']:.1f} | "
            f"{s['kl']:.1f} | {s['active_units']} / {s['latent_dim']} | {s['mse_seen']:.3f} | {s['mse_grey']:.3f} |"
        )
    if "vqvae" in args.variants and ("vqvae" in rows or "prior" in rows):
        lines += ["", "## VQ-VAE and its transformer prior", "",
                  ("| model | steps | train s | MSE vs grey | MSE vs binarised | codebook usage | perplexity | "
                   "code NLL, nats/token | code NLL, nats/image |"),
                  "| --- " * 9 + "|"]
        vq, prior = rows.get("vqvae"), rows.get("prior")
        if vq and "error" not in vq:
            s = vq["scores"]
            lines.append(f"| vqvae | {vq['step']:,} | {vq['seconds']:.0f} | {s['mse_grey']:.3f} | {s['mse_seen']:.3f} | "
                         f"{s['usage']:.2f} ({s['codes_used']} of {s['num_codes']}) | {s['perplexity']:.1f} | - | - |")
        elif vq:
            lines.append(f"| vqvae | failed: {vq['error']} |" + " |" * 7)
        if prior and "error" not in prior:
            s = prior["scores"]
            lines.append(f"| prior (transformer on codes) | {prior['step']:,} | {prior['seconds']:.0f} | - | - | - | - | "
                         f"{s['per_token']:.3f} | {s['per_image']:.1f} ± {s['per_image_se']:.1f} |")
        elif prior:
            lines.append(f"| prior | failed: {prior['error']} |" + " |" * 7)
        if prior and "error" not in prior:
            s = prior["scores"]
            lines += ["", (f"Code NLL: -log p(codes) of each validation digit's {s['tokens']}-code grid under the prior "
                           f"({s['images']} digits), ± the standard error. A likelihood of the discrete codes, not of "
                           "pixels: it does not compare with the VAEs' nats. For scale, codes drawn uniformly from the "
                           f"codebook cost {s['uniform']:.0f} nats per grid.")]
    if samples:
        lines += ["", f"## Samples ({args.n} per model)", "", "| samples | FD | KID | precision | recall |",
                  "| --- " * (len(SAMPLE_COLUMNS) + 1) + "|"]
        order = ["real data (held-out)"] + [name for name in args.variants if name in samples]
        order += [name for name in samples if name not in order]  # the prior's rows
        for name in order:
            metrics = samples[name]
            lines.append(f"| {name} | " + " | ".join(fmt(metrics.get(c)) for c in SAMPLE_COLUMNS) + " |")
    lines += ["", "## Models", "", "| model | family | overrides | what it is |", "| --- | --- | --- | --- |"]
    for name in args.variants:
        family, overrides, note = VARIANTS[name]
        shown = " ".join(f"`{o}`" for o in overrides) or "(none)"
        lines.append(f"| {name} | {family} | {shown} | {note} |")
    if "vqvae" in args.variants:
        lines.append("| prior | transformer | " + " ".join(f"`{o}`" for o in PRIOR_OVERRIDES)
                     + " | the transformer's defaults on `codes:RUNS/vqvae` (end-of-text + 49 codes per digit); "
                     "sampled at temperature 1.0 and at genforge's default 0.8 |")
    trained = [(name, row) for name, row in rows.items() if "error" not in row]
    if trained:
        lines += ["", "## Training details", "",
                  "| model | planned steps | stopped by | ms/step | CPU s | last losses | evaluation s |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for name, row in trained:
            losses = ", ".join(f"{k} {v:.3g}" for k, v in row["losses"].items())
            lines.append(f"| {name} | {row['planned']:,} | {row['stopped_by']} | {1000 * row['seconds'] / max(row['step'], 1):.0f} "
                         f"| {row['cpu_s']:.0f} | {losses} | {row['eval_s']:.0f} |")
        lines += ["", ("CPU s: CPU time this process used while training (all threads); well under the wall time "
                       "means the cores were shared with other jobs. evaluation s: everything measured after training "
                       "(likelihood bounds, reconstructions, samples).")]
    return "\n".join(lines) + "\n"


# ---- the run ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=2.0, help="training budget per model (wall time)")
    parser.add_argument("--variants", type=csv, default=["vae", "vae-mean", "vae-mixture-prior", "beta-vae", "vqvae",
                                                        "vae-free-bits"],
                        help=f"some of: {', '.join(VARIANTS)} (vqvae brings its prior); run in this order")
    parser.add_argument("--iwae-k", type=int, default=1000, help="importance samples per digit for the NLL bound")
    parser.add_argument("--iwae-n", type=int, default=200,
                        help="validation digits the k-sample bound is computed on (about 0.4 s each at k=1000 on one core)")
    parser.add_argument("--n", type=int, default=500, help="samples scored per model (mnist holds out 500)")
    parser.add_argument("--features", default="classifier", help="feature extractor for the sample scores")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared machine)")
    parser.add_argument("--runs", type=Path, default=Path("runs/vae_variants"), help="where the runs are written")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/vae_variants.md"))
    args = parser.parse_args(argv)
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; expected some of: {', '.join(VARIANTS)}")
    if not args.minutes > 0 or args.n < 6 or args.iwae_k < 1 or not 2 <= args.iwae_n <= 500:
        parser.error("--minutes must be positive, --n at least 6, --iwae-k at least 1 and --iwae-n in 2..500")

    torch.set_num_threads(args.threads)
    import genforge
    from genforge.api import make_config
    from genforge.modalities import prepare
    from genforge.errors import GenforgeError
    from genforge.evaluate.evaluator import Evaluator
    from genforge.io import atomic_write_text

    start = time.perf_counter()
    base = make_config("vae", "mnist", device="cpu", seed=args.seed)
    mnist = prepare(base.data.source, base.data, progress=False)
    val = mnist.val.get(slice(None))
    # the evaluator's extractor, feature scaling and training-split reference, without a trained run
    evaluator = Evaluator(mnist, features=args.features, n=args.n, seed=args.seed, device="cpu", progress=False).scorer
    ex = evaluator.extractor_info()
    info = {"describe": (f"{args.n} samples vs the train split of mnist ({len(mnist.train):,} items), features: "
                         f"{ex['name']} [{ex['fingerprint']}] - {ex['detail']}"),
            "machine": (f"{cpu_name()}, {os.cpu_count()} CPUs (shared with other jobs: timings are noisy), torch "
                        f"{torch.__version__} with {torch.get_num_threads()} threads, device cpu, Python "
                        f"{platform.python_version()}")}
    rows: dict[str, dict] = {}
    samples: dict[str, dict] = {}
    real_idx = torch.arange(len(mnist.val))[: args.n]
    samples["real data (held-out)"] = sample_scores(evaluator, val["x"][real_idx], args.seed)

    def write(done: bool = False) -> str:
        text = render(args, argv, info, rows, samples, time.perf_counter() - start, done)
        atomic_write_text(args.out, text)
        return text

    def fit(name: str, family: str, data: str, overrides: list[str]) -> dict | None:
        run_dir = args.runs / name
        if run_dir.exists():
            if not (run_dir / "config.yaml").is_file():
                raise SystemExit(f"{run_dir} exists and is not a genforge run; refusing to replace it")
            shutil.rmtree(run_dir)
        try:
            result, planned, cpu_s, prepared = train_for_budget(family, data, run_dir, list(overrides), args.minutes, args.seed, name)
        except GenforgeError as err:  # TrainingDiverged: too many non-finite losses in a row
            rows[name] = {"error": str(err).split(";")[0]}
            print(f"[{name}] failed: {err}", flush=True)
            write()
            return None
        losses = {k.split("/", 1)[-1]: v for k, v in result.last_losses.items()
                  if not k.startswith("lr") and not k.endswith(("grad_norm", "/loss"))}
        return {"step": result.step, "planned": planned, "seconds": result.seconds, "cpu_s": cpu_s,
                "stopped_by": result.stopped_by, "losses": losses, "run_dir": run_dir, "prepared": prepared}

    for name in args.variants:
        family_name, overrides, _ = VARIANTS[name]
        row = fit(name, family_name, "mnist", list(overrides))
        if row is None:
            continue
        eval_start = time.perf_counter()
        family = genforge.load(row["run_dir"], device="cpu").family
        if family_name == "vae":
            row["scores"] = vae_scores(family, val, args.iwae_n, args.iwae_k, args.seed)
            samples[name] = sample_scores(evaluator, draw(family, args.n, args.seed), args.seed)
            s = row["scores"]
            print(f"[{name}] {row['step']} steps in {row['seconds']:.0f} s: NLL {s['nll']:.1f}, -ELBO {s['nelbo']:.1f}, "
                  f"MSE {s['mse_seen']:.3f}, FD {samples[name]['fd']:.3g} (k={args.iwae_k} bound took "
                  f"{s['iwae_s']:.0f} s)", flush=True)
        else:
            row["scores"] = vqvae_scores(family, val)
            print(f"[{name}] {row['step']} steps in {row['seconds']:.0f} s: MSE {row['scores']['mse_grey']:.3f}, "
                  f"usage {row['scores']['usage']:.2f}, perplexity {row['scores']['perplexity']:.1f}", flush=True)
        row["eval_s"] = time.perf_counter() - eval_start
        rows[name] = row
        write()
        if family_name != "vqvae":
            continue
        prior = fit("prior", "transformer", f"codes:{row['run_dir']}", list(PRIOR_OVERRIDES))
        if prior is None:
            continue
        eval_start = time.perf_counter()
        model = genforge.load(prior["run_dir"], device="cpu")
        prior["scores"] = code_nll(model.family, prior["prepared"])
        for temperature in PRIOR_TEMPERATURES:
            images = torch.cat([model.sample(min(250, args.n - lo), seed=args.seed * 1_000_003 + i,
                                             temperature=temperature).float()
                                for i, lo in enumerate(range(0, args.n, 250))])
            samples[f"vqvae + prior, temperature {temperature:g}"] = sample_scores(evaluator, images, args.seed)
        prior["eval_s"] = time.perf_counter() - eval_start
        rows["prior"] = prior
        s = prior["scores"]
        print(f"[prior] {prior['step']} steps in {prior['seconds']:.0f} s: {s['per_token']:.3f} nats/code, "
              f"{s['per_image']:.1f} nats/grid, FD {samples['vqvae + prior, temperature 1']['fd']:.3g}", flush=True)
        write()
    for row in rows.values():
        row.pop("prepared", None)
    text = write(done=True)
    print(text)
    print(f"total {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
