"""Audio: ``n`` samples -> the clips written to disk -> their log-mel spectrograms -> the image metrics in the
features of a classifier trained on the data's own labelled mels (the SC09 protocol, offline: FD and the
classifier score), the Fréchet distance in a random network's features (a training-free second view), and
mel-band statistics. Mel runs and waveform runs of one source are scored alike: samples are turned into sound
first (Griffin-Lim for mels), then analysed exactly as the real clips were, against the source's mel form.
The real-data row scores held-out clips through the same path (for a mel run: their spectrogram, made audible
by Griffin-Lim, analysed again), so it shows what the pipeline itself costs."""

from __future__ import annotations

import time

import numpy as np
import torch

from genforge.evaluate.scorers.image import ImageScorer


class AudioScorer(ImageScorer):
    sample_batch = 100  # clips drawn at once

    def __init__(self, evaluator):
        from genforge.data.audio_codec import AudioCodec
        from genforge.evaluate.extractors import get_extractor
        from genforge.modalities.audio import mel_view

        prepared = evaluator.prepared
        mels = mel_view(prepared, progress=evaluator.progress)
        super().__init__(evaluator, images=mels, data=evaluator.data)
        self.mel = prepared.tokenizer
        self.codec = AudioCodec(self.mel, waveform=prepared.spec.kind == "waveform")
        self.random = None
        if self.extractor.name != "random":
            self.random = get_extractor("random", mels, seed=0, device=evaluator.device, progress=evaluator.progress)
        self._random_reference: tuple[np.ndarray, float] | None = None
        self._real_db: np.ndarray | None = None

    def extractor_info(self) -> dict:
        info = dict(self.extractor.info())
        if self.random is not None:
            info["second_view"] = self.random.info()
        return info

    # ---- scoring ----------------------------------------------------------------------------------
    def score(self, family, amp_dtype) -> tuple[dict, dict, list]:
        start = time.perf_counter()
        samples, _ = self.draw(family, amp_dtype)
        clips = self.codec.decode(samples)  # what a user hears: Griffin-Lim for mels, the samples for waveforms
        seconds = time.perf_counter() - start
        metrics = self.clip_scores(clips)
        audio_seconds = len(clips) * self.mel.clip_samples / self.mel.sample_rate
        return metrics, {"items_per_s": len(clips) / max(seconds, 1e-9), "unit": "clip",
                         "audio_seconds_per_s": audio_seconds / max(seconds, 1e-9)}, []

    def clip_scores(self, clips: torch.Tensor) -> dict:
        """Every metric of clips (n, samples) against the training clips' mels."""
        from genforge.evaluate.audio_metrics import classifier_score, mel_statistics, silent_share
        from genforge.evaluate.extractors import Classifier
        from genforge.evaluate.image_metrics import frechet_distance, image_scores

        images = self.mel.to_image(clips).float()
        raw = self.extractor(images)
        reference = self.reference_features()
        metrics = image_scores(reference.numpy(), (raw * self._scale).numpy(), train=reference.numpy(),
                               seed=self.evaluator.seed)
        if isinstance(self.extractor.net, Classifier):
            with torch.no_grad():
                metrics["classifier_score"] = classifier_score(self.extractor.net.head(raw.to(self.extractor.device)).cpu())
        if self.random is not None:  # on the reference's scale, as the first view's features are
            reference, scale = self.random_reference()
            metrics["fd_random"] = frechet_distance(reference, self.random(images).numpy() * scale)
        metrics.update(mel_statistics(self.real_db(), self.to_db(images)))
        metrics["silent"] = silent_share(clips)
        return metrics

    def random_reference(self) -> tuple[np.ndarray, float]:
        """The random network's features of the training mels scaled to unit mean variance, and that scale."""
        if self._random_reference is None:
            features = self.random(self.images.train.get(slice(None))["x"])
            scale = float(features.var(dim=0).mean().clamp_min(1e-12).rsqrt())
            self._random_reference = (features.numpy() * scale, scale)
        return self._random_reference

    def real_db(self) -> np.ndarray:
        if self._real_db is None:
            self._real_db = self.to_db(self.images.train.get(slice(None))["x"])
        return self._real_db

    def to_db(self, images: torch.Tensor) -> np.ndarray:
        """Log-mel images in [-1, 1] -> levels in dB."""
        low, high = self.mel.min_db, self.mel.max_db
        return ((images.double().numpy() + 1) / 2) * (high - low) + low

    def reference_metrics(self) -> dict | None:
        """Real held-out clips, made and scored exactly like samples; None when there are fewer than ``n``."""
        n, seed = self.evaluator.n, self.evaluator.seed
        val = self.evaluator.prepared.val
        if len(val) < n:
            return None
        idx = np.sort(np.random.default_rng(seed).choice(len(val), size=n, replace=False))
        return self.clip_scores(self.codec.decode(val.get(idx)["x"]))
