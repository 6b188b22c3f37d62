"""Score a family against real data: what `genforge eval` and `--eval-every` compute.

The ``Evaluator`` takes prepared data and scores any family given to it; what it measures is the
data's modality's scorer (``scorers/``: images by feature-space distances, text by held-out likelihood
and sample diversity, VQ-VAE codes as the images they decode to). Everything that does not change
between evaluations (data, extractor, reference features) is built once, so ``--eval-every`` pays
only for sampling and scoring. Every result records n, the reference and the extractor, so that only
like is compared with like (``results.py``); the path-taking ``genforge.evaluate`` is in the API.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from genforge.config import check_count
from genforge.evaluate.results import new_result
from genforge.evaluate.scorers import scorer_class
from genforge.modalities import get_modality
from genforge.train.device import autocast

QUICK_LIKELIHOOD_SAMPLES = 32  # likelihood bounds during training and in the demo: a looser, cheaper estimate
REFERENCE_NAME = "real data (held-out)"
MAX_EVAL_N = 100_000  # samples scored per evaluation (FID's usual 50,000 fits)
MAX_LIKELIHOOD_SAMPLES = 100_000  # per image: VAE importance samples or diffusion timesteps


class Evaluator:
    """Scores families on ``prepared`` data (the source named ``data``)."""

    def __init__(self, prepared, *, data: str = "", features: str = "auto", weights: str | Path | None = None,
                 n: int | None = None, seed: int = 0, device: torch.device | str = "cpu", progress: bool = True,
                 likelihood_samples: int | None = None, figures: bool = False):
        self.prepared = prepared
        self.data = data or prepared.manifest.get("source", "")
        if likelihood_samples is not None:
            check_count(likelihood_samples, "likelihood samples (--likelihood-samples)", MAX_LIKELIHOOD_SAMPLES)
        # Monte-Carlo samples per image for the likelihood bound (VAE: importance samples; diffusion:
        # timesteps); None: the family's reporting default (1,000 and 32)
        self.likelihood_samples = likelihood_samples
        # draw the figures the modality's report shows (ReportStyle.figures): `genforge eval`, not --eval-every
        self.figures = figures
        self.modality = get_modality(prepared.spec.modality)
        self.n = self.modality.default_eval_n if n is None else check_count(
            n, "the number of samples to score (--n)", MAX_EVAL_N, low=2)
        self.seed = seed
        self.device = torch.device(device)
        self.features_name, self.weights, self.progress = features, weights, progress
        self.scorer = scorer_class(self.modality)(self)

    @property
    def result_modality(self) -> str:
        """The modality results are filed and compared under (a codes prior's: its VQ-VAE's data's)."""
        return getattr(self.scorer, "scores_as", None) or self.modality.scores_as or self.modality.name

    def reference_info(self) -> dict:
        return self.scorer.reference_info()

    def extractor_info(self) -> dict | None:
        return self.scorer.extractor_info()

    # ---- evaluating a family --------------------------------------------------------------------
    def __call__(self, family, amp_dtype=None) -> dict:
        """Score ``family`` (its sampling weights): {"metrics", "sampling", "examples", "seconds", "figures"}, the
        figures (``evaluate.figures.Figure``) only when asked for and the modality's report shows some."""
        start = time.perf_counter()
        metrics, sampling, examples = self.scorer.score(family, amp_dtype)
        seconds = time.perf_counter() - start
        figures = self.scorer.figures() if self.figures and self.modality.report.figures else []
        return {"metrics": metrics, "sampling": sampling, "examples": list(examples)[:4], "seconds": seconds,
                "figures": figures}

    def draw(self, family, amp_dtype, batch: int, **options) -> tuple[torch.Tensor, float]:
        """``n`` samples in seeded batches (batch i uses seed (seed, i)), and the seconds it took."""
        parts = []
        start = time.perf_counter()
        for i, lo in enumerate(range(0, self.n, batch)):
            generator = torch.Generator(device=family.device).manual_seed(self.seed * 1_000_003 + i)
            with autocast(family.device, amp_dtype):
                out = family.sample(min(batch, self.n - lo), generator=generator, **options)
            parts.append((out.float() if out.is_floating_point() else out).cpu())
        if family.device.type == "cuda":
            torch.cuda.synchronize(family.device)
        return torch.cat(parts), time.perf_counter() - start

    def reference_scores(self) -> dict | None:
        """The floor: real held-out data scored exactly like a model's samples ({"metrics", "seconds"}),
        or None when the held-out split cannot give one (fewer images than ``n``)."""
        start = time.perf_counter()
        metrics = self.scorer.reference_metrics()
        return None if metrics is None else {"metrics": metrics, "seconds": time.perf_counter() - start}

    # ---- results --------------------------------------------------------------------------------
    def result(self, run, scores: dict, name: str | None = None) -> dict:
        """A result record (``results.py``) of ``scores`` for ``run``."""
        result = new_result(run, n=self.n, seed=self.seed, reference=self.reference_info(),
                            extractor=self.extractor_info(), metrics=scores["metrics"],
                            sampling=scores.get("sampling"), seconds=scores["seconds"], name=name,
                            examples=scores.get("examples"), modality=self.result_modality)
        if result["extractor"] is None:  # what files it in eval.json and finds it again (e.g. "text")
            result["scorer"] = self.scorer.extractor_name(self.features_name, run)
        if "nll_bound_nats" in scores["metrics"]:  # what the bound was estimated with (None: the family's default)
            result["likelihood_samples"] = self.likelihood_samples
        return result

    def reference_result(self, run) -> dict | None:
        scores = self.reference_scores()
        return None if scores is None else self.result(run, {**scores, "sampling": None}, name=REFERENCE_NAME)
