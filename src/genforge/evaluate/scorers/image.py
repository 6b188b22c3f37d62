"""Images: ``n`` samples -> features -> Fréchet distance, KID, precision/recall, density/coverage and
memorisation against the training split (the reference), plus the family's likelihood bound on the
validation split where it has one."""

from __future__ import annotations

import math

import numpy as np
import torch


class ImageScorer:
    uses_features = True
    sample_batch = 250  # images drawn at once

    def __init__(self, evaluator, images=None, data: str | None = None):
        """``images``: the prepared image data (the source named ``data``) to score against; default: the
        evaluator's own."""
        from genforge.evaluate.extractors import get_extractor

        self.evaluator = evaluator
        self.images = images if images is not None else evaluator.prepared
        self.data = data or evaluator.data
        self._reference: torch.Tensor | None = None
        self._scale = 1.0
        # the extractor's own seed is fixed: every run on this data is scored with the same weights
        self.extractor = get_extractor(evaluator.features_name, self.images, seed=0, weights=evaluator.weights,
                                       device=evaluator.device, progress=evaluator.progress)

    @classmethod
    def extractor_name(cls, features: str, run) -> str:
        from genforge.evaluate.extractors import resolve_name

        return resolve_name(features, run.spec.num_classes is not None)

    # ---- the reference ------------------------------------------------------------------------
    def reference_features(self) -> torch.Tensor:
        """Features of the training split, scaled to unit mean variance per dimension."""
        if self._reference is None:
            features = self.extractor(self.images.train.get(slice(None))["x"])
            self._scale = float(features.var(dim=0).mean().clamp_min(1e-12).rsqrt())
            self._reference = features * self._scale
        return self._reference

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Extractor features on the reference's scale: one scalar for every run on this data, so the
        k-NN metrics are unchanged and FD/KID read the same whatever the extractor's raw magnitude."""
        self.reference_features()
        return self.extractor(images) * self._scale

    def reference_info(self) -> dict:
        return {"data": self.data, "split": "train",
                "n": len(self.images.train), "entry": self.images.path.name}

    def extractor_info(self) -> dict:
        return self.extractor.info()

    # ---- scoring ------------------------------------------------------------------------------
    def draw(self, family, amp_dtype) -> tuple[torch.Tensor, float]:
        return self.evaluator.draw(family, amp_dtype, self.sample_batch)

    def score(self, family, amp_dtype) -> tuple[dict, dict, list]:
        from genforge.evaluate.image_metrics import image_scores

        n = self.evaluator.n
        images, seconds = self.draw(family, amp_dtype)
        fake = self.features(images)
        reference = self.reference_features()
        metrics = image_scores(reference.numpy(), fake.numpy(), train=reference.numpy(), seed=self.evaluator.seed)
        metrics.update(self.likelihood(family))
        return metrics, {"items_per_s": n / max(seconds, 1e-9), "unit": "img"}, []

    def likelihood(self, family) -> dict:
        """The family's bound on held-out images, when it models these images itself (a prior over VQ-VAE codes
        models tokens: its own likelihood is scored apart)."""
        if "likelihood" not in family.capabilities or family.spec.kind != "image":
            return {}
        prepared = self.evaluator.prepared
        val = prepared.val if len(prepared.val) else prepared.train
        total = 0.0
        generator = torch.Generator(device=family.device).manual_seed(self.evaluator.seed)
        samples = self.evaluator.likelihood_samples
        with torch.no_grad():
            for lo in range(0, len(val), 500):
                batch = {k: v.to(family.device) for k, v in val.get(slice(lo, lo + 500)).items()}
                options = {} if samples is None else {"samples": samples}
                total += float(family.log_likelihood(batch, generator=generator, **options).double().sum())
        nats = total / len(val)
        dims = math.prod(prepared.spec.shape)
        return {"nll_bound_nats": nats, "bits_per_dim": nats / (dims * math.log(2))}

    def reference_metrics(self) -> dict | None:
        """Real held-out images scored like samples; None when the held-out split has fewer than ``n``."""
        from genforge.evaluate.image_metrics import image_scores

        n, seed = self.evaluator.n, self.evaluator.seed
        val = self.images.val
        if len(val) < n:
            return None
        idx = np.sort(np.random.default_rng(seed).choice(len(val), size=n, replace=False))
        held_out = self.features(val.get(idx)["x"])
        reference = self.reference_features()
        return image_scores(reference.numpy(), held_out.numpy(), train=reference.numpy(), seed=seed)
