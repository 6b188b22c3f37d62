"""Score a trained family against real data: what `genforge eval` and `--eval-every` compute.

Images: ``n`` samples -> features -> Fréchet distance, KID, precision/recall, density/coverage and
memorisation against the training split (the reference), plus the family's likelihood bound on the
validation split where it has one. Text: validation loss, perplexity and bits per byte from the
family's ``log_likelihood``, and distinct-n, self-BLEU (and for code, the share that parses) of ``n``
samples. Every result records n, the reference and the extractor, so that only like is compared
with like (``results.py``).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genforge.config import check_count
from genforge.errors import ConfigError
from genforge.evaluate.results import new_result
from genforge.train.device import autocast

DEFAULT_N = {"image": 5000, "text": 100}
TRAINING_EVAL_N = {"image": 500, "text": 50}  # --eval-every: cheap enough to run often
QUICK_LIKELIHOOD_SAMPLES = 32  # likelihood bounds during training and in the demo: a looser, cheaper estimate
SAMPLE_BATCH = {"image": 250, "text": 100}
TEXT_SAMPLE_TOKENS = 256
MAX_VAL_TOKENS = 131_072  # bits per byte are measured on at most this many validation tokens
REFERENCE_NAME = "real data (held-out)"
MAX_EVAL_N = 100_000  # samples scored per evaluation (FID's usual 50,000 fits)
MAX_LIKELIHOOD_SAMPLES = 100_000  # per image: VAE importance samples or diffusion timesteps


class Evaluator:
    """Everything that does not change between evaluations of one run (data, extractor, reference
    features) is built once, so ``--eval-every`` pays only for sampling and scoring."""

    def __init__(self, run, prepared, *, features: str = "auto", weights: str | Path | None = None,
                 n: int | None = None, seed: int = 0, device: torch.device | str = "cpu", progress: bool = True,
                 likelihood_samples: int | None = None):
        self.run, self.prepared = run, prepared
        if likelihood_samples is not None:
            check_count(likelihood_samples, "likelihood samples (--likelihood-samples)", MAX_LIKELIHOOD_SAMPLES)
        # Monte-Carlo samples per image for the likelihood bound (VAE: importance samples; diffusion:
        # timesteps); None: the family's reporting default (1,000 and 32)
        self.likelihood_samples = likelihood_samples
        self.modality = prepared.spec.modality
        self.n = DEFAULT_N[self.modality] if n is None else check_count(n, "the number of samples to score (--n)",
                                                                          MAX_EVAL_N, low=2)
        self.seed = seed
        self.device = torch.device(device)
        self.extractor = None
        self._reference: torch.Tensor | None = None
        self._scale = 1.0
        if self.modality == "image":
            from genforge.evaluate.extractors import get_extractor

            # the extractor's own seed is fixed: every run on this data is scored with the same weights
            self.extractor = get_extractor(features, prepared, seed=0, weights=weights, device=self.device,
                                           progress=progress)
        elif features not in ("auto", "text"):
            raise ConfigError(f"--features applies to image runs; {run.path} is a text run")
        self.is_code = is_code_source(run.config.data.source)

    # ---- the reference ------------------------------------------------------------------------
    def reference_features(self) -> torch.Tensor:
        """Features of the training split, scaled to unit mean variance per dimension."""
        if self._reference is None:
            features = self.extractor(self.prepared.train.get(slice(None))["x"])
            self._scale = float(features.var(dim=0).mean().clamp_min(1e-12).rsqrt())
            self._reference = features * self._scale
        return self._reference

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Extractor features on the reference's scale: one scalar for every run on this data, so the
        k-NN metrics are unchanged and FD/KID read the same whatever the extractor's raw magnitude."""
        self.reference_features()
        return self.extractor(images) * self._scale

    def reference_info(self) -> dict:
        data = self.run.config.data.source
        if self.modality == "image":
            return {"data": data, "split": "train", "n": len(self.prepared.train), "entry": self.prepared.path.name}
        return {"data": data, "split": "val", "tokens": self.val_token_count(), "entry": self.prepared.path.name}

    # ---- evaluating a family --------------------------------------------------------------------
    def __call__(self, family, amp_dtype=None) -> dict:
        """Score ``family`` (its sampling weights); returns a result dict (see ``results.py``)."""
        start = time.perf_counter()
        examples: list[str] = []
        if self.modality == "image":
            metrics, sampling = self._image_scores(family, amp_dtype)
        else:
            metrics, sampling, examples = self._text_scores(family, amp_dtype)
        result = new_result(self.run, n=self.n, seed=self.seed, reference=self.reference_info(),
                            extractor=self.extractor.info() if self.extractor else None,
                            metrics=metrics, sampling=sampling, seconds=time.perf_counter() - start,
                            examples=examples[:4])
        if "nll_bound_nats" in metrics:  # what the bound was estimated with (None: the family's default)
            result["likelihood_samples"] = self.likelihood_samples
        return result

    def _draw(self, family, amp_dtype, **options) -> tuple[torch.Tensor, float]:
        """``n`` samples in seeded batches (batch i uses seed (seed, i)), and the seconds it took."""
        batch = SAMPLE_BATCH[self.modality]
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

    def _image_scores(self, family, amp_dtype) -> tuple[dict, dict]:
        from genforge.evaluate.image_metrics import image_scores

        images, seconds = self._draw(family, amp_dtype)
        fake = self.features(images)
        reference = self.reference_features()
        metrics = image_scores(reference.numpy(), fake.numpy(), train=reference.numpy(), seed=self.seed)
        metrics.update(self._image_likelihood(family))
        return metrics, {"items_per_s": self.n / max(seconds, 1e-9), "unit": "img"}

    def _image_likelihood(self, family) -> dict:
        if "likelihood" not in family.capabilities:
            return {}
        val = self.prepared.val if len(self.prepared.val) else self.prepared.train
        total = 0.0
        generator = torch.Generator(device=family.device).manual_seed(self.seed)
        with torch.no_grad():
            for lo in range(0, len(val), 500):
                batch = {k: v.to(family.device) for k, v in val.get(slice(lo, lo + 500)).items()}
                options = {} if self.likelihood_samples is None else {"samples": self.likelihood_samples}
                total += float(family.log_likelihood(batch, generator=generator, **options).double().sum())
        nats = total / len(val)
        dims = math.prod(self.prepared.spec.shape)
        return {"nll_bound_nats": nats, "bits_per_dim": nats / (dims * math.log(2))}

    def _text_scores(self, family, amp_dtype) -> tuple[dict, dict, list[str]]:
        metrics = self.val_likelihood(family, amp_dtype)
        prompt = [self.prepared.tokenizer.eot_id]
        tokens, seconds = self._draw(family, amp_dtype, prompt=prompt, max_new_tokens=TEXT_SAMPLE_TOKENS)
        texts = self.decode(tokens, len(prompt))
        metrics.update(text_scores(texts, self.is_code))
        sampling = {"items_per_s": self.n * TEXT_SAMPLE_TOKENS / max(seconds, 1e-9), "unit": "tok",
                    "max_new_tokens": TEXT_SAMPLE_TOKENS}
        return metrics, sampling, texts

    # ---- text -----------------------------------------------------------------------------------
    def val_token_count(self) -> int:
        return min(self.prepared.val.num_tokens - 1, MAX_VAL_TOKENS)

    def val_likelihood(self, family, amp_dtype=None) -> dict:
        """Validation loss (nats/token), perplexity and bits per byte over non-overlapping windows.

        Bits per byte divide the total by the bytes of the predicted text (as in the files), so tokenizers with
        different vocabularies compare; end-of-text predictions count toward the loss, not the bytes.
        """
        val = self.prepared.val
        block = val.block_size
        starts = np.arange(0, self.val_token_count() - block + 1, block)
        if len(starts) == 0:
            raise ConfigError(f"the validation split has too few tokens for one window of {block}")
        byte_len = byte_lengths(self.prepared.tokenizer)
        nats, count, n_bytes = 0.0, 0, 0
        with torch.no_grad():
            for lo in range(0, len(starts), 32):
                batch = {k: v.to(family.device) for k, v in val.get(starts[lo:lo + 32]).items()}
                with autocast(family.device, amp_dtype):
                    nll = family.log_likelihood(batch)
                nats += float(nll.double().sum())
                count += nll.numel()
                n_bytes += int(byte_len[batch["y"].cpu()].sum())
        loss = nats / count
        return {"val_loss": loss, "perplexity": math.exp(min(loss, 50.0)),
                "bits_per_byte": nats / (max(n_bytes, 1) * math.log(2))}

    def decode(self, tokens: torch.Tensor, prompt_len: int = 0) -> list[str]:
        """Texts as `genforge sample` writes them (the text codec's rule: each row up to the end-of-text
        that follows its content), without the prompt."""
        from genforge.data.codecs import codec_for

        codec = codec_for(self.prepared.spec, self.prepared.tokenizer)
        prompt = self.prepared.tokenizer.decode(tokens[0, :prompt_len].tolist()) if prompt_len else ""
        return [codec.decode_one(row, prompt_len)[len(prompt):] for row in tokens]

    def reference_texts(self) -> list[str]:
        """``n`` real validation snippets shaped like the samples: they begin at a document start and
        are as long as a sample, so their scores are what a perfect model would get."""
        tokens = np.asarray(self.prepared.val.tokens)
        eot = self.prepared.tokenizer.eot_id
        starts = np.flatnonzero(tokens[:-TEXT_SAMPLE_TOKENS - 1] == eot) + 1
        if len(starts) < 2:
            starts = np.arange(0, max(len(tokens) - TEXT_SAMPLE_TOKENS, 1))
        rng = np.random.default_rng(self.seed)
        chosen = rng.choice(starts, size=min(self.n, len(starts)), replace=False)
        windows = torch.from_numpy(np.stack([tokens[s:s + TEXT_SAMPLE_TOKENS] for s in chosen]).astype(np.int64))
        return self.decode(windows)

    def reference_result(self) -> dict | None:
        """The floor: real held-out data scored exactly like a model's samples. For images the held-out
        split must hold at least ``n`` items (a smaller n would not compare)."""
        start = time.perf_counter()
        if self.modality == "image":
            from genforge.evaluate.image_metrics import image_scores

            val = self.prepared.val
            if len(val) < self.n:
                return None
            idx = np.sort(np.random.default_rng(self.seed).choice(len(val), size=self.n, replace=False))
            held_out = self.features(val.get(idx)["x"])
            reference = self.reference_features()
            metrics = image_scores(reference.numpy(), held_out.numpy(), train=reference.numpy(), seed=self.seed)
        else:
            texts = self.reference_texts()
            if len(texts) < 2:  # a held-out split shorter than two samples: no floor to show
                return None
            metrics = text_scores(texts, self.is_code)
        return new_result(self.run, n=self.n, seed=self.seed, reference=self.reference_info(),
                          extractor=self.extractor.info() if self.extractor else None, metrics=metrics,
                          sampling=None, seconds=time.perf_counter() - start, name=REFERENCE_NAME)


def text_scores(texts: list[str], is_code: bool) -> dict:
    from genforge.evaluate.text_metrics import distinct_n, parse_share, self_bleu

    out = {f"distinct_{k}": distinct_n(texts, k) for k in (1, 2, 3)}
    out["self_bleu"] = self_bleu(texts)
    if is_code:
        out["parse_share"] = parse_share(texts)
    return out


def byte_lengths(tokenizer) -> torch.Tensor:
    """Bytes each token id stands for (0 for special tokens); a byte-level BPE token may hold part
    of a character, so this asks the tokenizer rather than decoding tokens one by one."""
    return torch.tensor([len(tokenizer.token_bytes(i)) for i in range(tokenizer.vocab_size)], dtype=torch.long)


def is_code_source(source: str) -> bool:
    return source == "pycode" or source.endswith(".py")


def evaluate(run: str | Path | Any, *, n: int | None = None, features: str = "auto", weights: str | Path | None = None,
             seed: int = 0, device: str = "auto", progress: bool = True, save: bool = True,
             reference: bool = False, likelihood_samples: int | None = None) -> dict:
    """Evaluate a trained run (a run directory, or a ``genforge.load``-ed Model); the result is also written
    to the run's eval.json when ``save``. With ``reference``, the real-data floor is attached as
    ``result["reference_result"]``.

    ``genforge.evaluate("runs/gan", n=1000)["metrics"]["fd"]``
    """
    from genforge.data import prepare
    from genforge.evaluate.results import save_result
    from genforge.runs import Run
    from genforge.train.device import autocast_dtype, resolve_device

    if isinstance(run, (str, Path)):  # a directory: its sampling weights, on the chosen device
        opened = Run.open(run)
        target = resolve_device(device)
        family, amp_dtype = opened.load_family(target), autocast_dtype(target, opened.config.train.precision)
    else:  # a loaded Model: its run, weights, device and precision
        opened, family, target, amp_dtype = run.run, run.family, run.device, run.amp_dtype
    prepared = prepare(opened.config.data.source, opened.config.data, progress=progress)
    evaluator = Evaluator(opened, prepared, features=features, weights=weights, n=n, seed=seed,
                          device=target, progress=progress, likelihood_samples=likelihood_samples)
    result = evaluator(family, amp_dtype)
    if reference:
        result["reference_result"] = evaluator.reference_result()
    if save:
        save_result(opened.path, result)
    return result
