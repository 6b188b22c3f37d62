"""Numbers about generated audio that need no feature network: pure functions of arrays.

- ``classifier_score``: exp(E_x KL(p(y|x) || p(y))), the Inception Score that SC09 papers report with their
  spoken-digit classifier: high when each clip is clearly one class and the classes are all drawn. It runs
  from 1 (every clip the same, or none of them clear) to the number of classes.
- ``mel_statistics``: each mel band's mean level and spread (dB) over a set of clips, and how two sets differ:
  the gap between band means (a model too loud, too dull, too hissy) and the ratio of band spreads (a model
  whose clips all sound alike has a small one).
- ``silent_share``: clips with no sound to speak of.
"""

from __future__ import annotations

import numpy as np
import torch

SILENCE_PEAK = 1e-3  # a clip whose loudest sample stays under this (-60 dBFS) counts as silent


def classifier_score(logits: torch.Tensor | np.ndarray) -> float:
    """exp(mean KL(p(y|x) || p(y))) of classifier logits (N, classes); p(y) is the mean of the p(y|x)."""
    logits = torch.as_tensor(logits, dtype=torch.float64)
    if logits.dim() != 2 or len(logits) == 0:
        raise ValueError(f"classifier_score needs logits shaped (N, classes) with N >= 1, got {tuple(logits.shape)}")
    log_p = torch.log_softmax(logits, dim=1)
    log_marginal = torch.logsumexp(log_p, dim=0) - np.log(len(log_p))
    kl = (log_p.exp() * (log_p - log_marginal)).sum(dim=1)
    return float(torch.exp(kl.mean()))


def band_statistics(db: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) per mel band (n_mels,) of log-mel levels in dB shaped (N, ..., frames, n_mels)."""
    db = np.asarray(torch.as_tensor(db, dtype=torch.float64))
    bands = db.reshape(-1, db.shape[-1])
    return bands.mean(axis=0), bands.std(axis=0)


def mel_statistics(real_db, fake_db) -> dict[str, float]:
    """mel_distance: mean |band mean gap| (dB); mel_std_ratio: mean of fake/real band spreads (1 best)."""
    real_mean, real_std = band_statistics(real_db)
    fake_mean, fake_std = band_statistics(fake_db)
    return {"mel_distance": float(np.abs(fake_mean - real_mean).mean()),
            "mel_std_ratio": float((fake_std / np.maximum(real_std, 1e-6)).mean())}


def silent_share(clips: torch.Tensor | np.ndarray) -> float:
    """Share of clips (N, samples) whose peak stays under ``SILENCE_PEAK``."""
    clips = np.asarray(torch.as_tensor(clips, dtype=torch.float32))
    if len(clips) == 0:
        return 0.0
    return float((np.abs(clips).reshape(len(clips), -1).max(axis=1) < SILENCE_PEAK).mean())
