"""A prior over VQ-VAE codes, scored as what it makes: its sampled grids are decoded through the VQ-VAE and
handed to the scorer of the VQ-VAE's own data (images: ``ImageScorer``; log-mel audio: ``AudioScorer``), which
scores them against the VQ-VAE's training data exactly like a run of that family on that data (same feature
network, same reference), so priors and the other families share one table. The prior's own held-out
likelihood (nats per code token) is reported beside them."""

from __future__ import annotations

import time

import torch

from genforge.evaluate.scorers.text import token_likelihood

CODE_BATCH = 100  # priors drawn at once


class CodesScorer:
    uses_features = True

    def __init__(self, evaluator):
        from genforge.evaluate.scorers import scorer_class
        from genforge.modalities import get_modality
        from genforge.modalities.codes import CodesCodec, vq_images

        self.evaluator = evaluator
        tokenizer = evaluator.prepared.tokenizer
        self.codec = CodesCodec(tokenizer)
        source, data = vq_images(tokenizer.run, progress=evaluator.progress)
        self.scores_as = data.spec.modality  # results are filed with that data's runs
        self.data_scorer = scorer_class(get_modality(data.spec.modality))(DecodedDraws(evaluator, data, source, self))

    @classmethod
    def extractor_name(cls, features: str, run) -> str:
        from genforge.evaluate.extractors import resolve_name
        from genforge.modalities import run_modality
        from genforge.modalities.codes import open_vq_run

        _, tokenizer = run_modality(run)  # the prior's tokenizer names its VQ-VAE run
        return resolve_name(features, open_vq_run(tokenizer.run).spec.num_classes is not None)

    def draw_decoded(self, family, amp_dtype) -> tuple[torch.Tensor, float]:
        """``n`` prior samples decoded through the VQ-VAE into its data space, and the seconds it took."""
        start = time.perf_counter()
        tokenizer = self.evaluator.prepared.tokenizer
        tokens, _ = self.evaluator.draw(family, amp_dtype, CODE_BATCH, prompt=[tokenizer.eot_id],
                                        max_new_tokens=tokenizer.row_tokens)
        return self.codec.decode_images(tokens), time.perf_counter() - start

    def score(self, family, amp_dtype) -> tuple[dict, dict, list]:
        metrics, sampling, examples = self.data_scorer.score(family, amp_dtype)
        metrics["val_loss"] = token_likelihood(self.evaluator, family, None)[0]
        return metrics, sampling, examples

    def reference_metrics(self) -> dict | None:
        return self.data_scorer.reference_metrics()

    def reference_info(self) -> dict:
        return self.data_scorer.reference_info()

    def extractor_info(self) -> dict:
        return self.data_scorer.extractor_info()


class DecodedDraws:
    """What the data's scorer sees of the evaluator: the VQ-VAE's prepared data and the evaluator's settings,
    with draws that are the prior's samples decoded through the VQ-VAE."""

    def __init__(self, evaluator, prepared, data: str, codes: CodesScorer):
        self.prepared, self.data, self._codes = prepared, data, codes
        for name in ("n", "seed", "device", "progress", "features_name", "weights", "likelihood_samples"):
            setattr(self, name, getattr(evaluator, name))

    def draw(self, family, amp_dtype, batch: int, **options) -> tuple[torch.Tensor, float]:
        return self._codes.draw_decoded(family, amp_dtype)
