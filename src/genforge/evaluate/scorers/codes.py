"""A prior over VQ-VAE codes, scored as what it makes: its sampled grids are decoded through the VQ-VAE
and scored against the VQ-VAE's training images exactly like an image run on that data (same extractor,
same reference), so priors and image families share one table. The prior's own held-out likelihood
(nats per code token) is reported beside them."""

from __future__ import annotations

import torch

from genforge.evaluate.scorers.image import ImageScorer
from genforge.evaluate.scorers.text import token_likelihood


class CodesScorer(ImageScorer):
    sample_batch = 100

    def __init__(self, evaluator):
        from genforge.modalities.codes import CodesCodec, vq_images

        tokenizer = evaluator.prepared.tokenizer
        self.codec = CodesCodec(tokenizer)
        source, images = vq_images(tokenizer.run, progress=evaluator.progress)
        super().__init__(evaluator, images=images, data=source)

    @classmethod
    def extractor_name(cls, features: str, run) -> str:
        from genforge.evaluate.extractors import resolve_name
        from genforge.modalities import run_modality
        from genforge.modalities.codes import open_vq_run

        _, tokenizer = run_modality(run)  # the prior's tokenizer names its VQ-VAE run
        return resolve_name(features, open_vq_run(tokenizer.run).spec.num_classes is not None)

    def draw(self, family, amp_dtype) -> tuple[torch.Tensor, float]:
        tokenizer = self.evaluator.prepared.tokenizer
        tokens, seconds = self.evaluator.draw(family, amp_dtype, self.sample_batch, prompt=[tokenizer.eot_id],
                                              max_new_tokens=tokenizer.row_tokens)
        return self.codec.decode(tokens), seconds

    def likelihood(self, family) -> dict:
        return {"val_loss": token_likelihood(self.evaluator, family, None)[0]}
