"""Music: the held-out likelihood of the event tokens (``val_loss``, ``bits_per_event``), and ``n`` sampled pieces
compared with real held-out pieces by Yang & Lerch's features (``evaluate/music_metrics.py``).

Samples start from the end-of-piece token and run ``SAMPLE_TOKENS`` tokens, cut at the end-of-piece that follows
their content as `genforge sample` cuts them. The real pieces they are compared with are cut the same way from
the validation stream: windows of ``SAMPLE_TOKENS`` tokens after an end-of-piece token, decoded by the same rule,
so a model and the data are measured at equal length (a whole chorale has more bars than a sample, and would
differ in note count and range for that reason alone). A validation split often holds fewer pieces than ``n``
(the chorales' a few dozen), so windows also start at bar lines inside pieces, piece openings first.

The real-data row (``reference_metrics``) scores a second set of real windows against the first. The two sets
come from disjoint halves of the validation pieces, so the row is what a model that writes new pieces as good as
the held-out ones would get, not the score of copying.
"""

from __future__ import annotations

import math

import numpy as np

from genforge.evaluate.music_metrics import compare_features, set_features
from genforge.evaluate.scorers.featureless import FeaturelessScorer
from genforge.evaluate.scorers.text import MAX_VAL_TOKENS, token_likelihood
from genforge.modalities.music import SAMPLE_TOKENS

BAR_TOKEN = "Bar_None"


class MusicScorer(FeaturelessScorer):
    kind = "music"
    sample_batch = 50

    def __init__(self, evaluator):
        super().__init__(evaluator)
        self.tokenizer = evaluator.prepared.tokenizer
        self.rolls = self.prepared.spec.kind == "image"  # piano-roll runs: image samples, the tokenizer a RollFormat
        self.sample_tokens = SAMPLE_TOKENS
        self._real: tuple[list, list] | None = None
        self._real_features: dict[str, np.ndarray] | None = None

    def reference_info(self) -> dict:
        if self.rolls:
            return {"data": self.evaluator.data, "split": "val", "segments": len(self.prepared.val),
                    "pieces": len(self.real_pieces()[0]), "entry": self.prepared.path.name}
        return {"data": self.evaluator.data, "split": "val", "tokens": self.val_token_count(),
                "piece_tokens": self.sample_tokens, "pieces": len(self.real_pieces()[0]),
                "entry": self.prepared.path.name}

    def val_token_count(self) -> int:
        return min(self.prepared.val.num_tokens - 1, MAX_VAL_TOKENS)

    # ---- scoring ------------------------------------------------------------------------------------------
    def score(self, family, amp_dtype) -> tuple[dict, dict, list]:
        if self.rolls:
            images, seconds = self.evaluator.draw(family, amp_dtype, self.sample_batch)
            metrics = compare_features(self.real_features(), set_features([self.tokenizer.decode(x) for x in images]))
            return metrics, {"items_per_s": self.evaluator.n / max(seconds, 1e-9), "unit": "roll"}, []
        loss = token_likelihood(self.evaluator, family, amp_dtype)[0]
        metrics = {"val_loss": loss, "bits_per_event": loss / math.log(2)}
        prompt = [self.tokenizer.eot_id]
        tokens, seconds = self.evaluator.draw(family, amp_dtype, self.sample_batch, prompt=prompt,
                                              max_new_tokens=self.sample_tokens)
        pieces = decode_rows(self.tokenizer, tokens.numpy(), len(prompt))
        metrics.update(compare_features(self.real_features(), set_features(pieces)))
        sampling = {"items_per_s": self.evaluator.n * self.sample_tokens / max(seconds, 1e-9), "unit": "tok",
                    "max_new_tokens": self.sample_tokens}
        return metrics, sampling, []

    def reference_metrics(self) -> dict | None:
        """The second set of real windows scored against the first; None when the validation split cannot give two
        sets of ``n`` windows (the row must be scored at the samples' n to compare with them)."""
        first, second = self.real_pieces()
        if min(len(first), len(second)) < self.evaluator.n:
            return None
        return compare_features(self.real_features(), set_features(second))

    # ---- the real pieces ------------------------------------------------------------------------------------
    def real_pieces(self) -> tuple[list, list]:
        """Two sets of up to ``n`` real windows (as scores), from disjoint halves of the validation pieces;
        read once per evaluator, so --eval-every pays only for the samples."""
        if self._real is None and self.rolls:  # two seeded, disjoint draws of held-out segments
            val = self.prepared.val
            order = np.random.default_rng(self.evaluator.seed).permutation(len(val))
            halves = (order[:len(order) // 2][:self.evaluator.n], order[len(order) // 2:][:self.evaluator.n])
            self._real = tuple([self.tokenizer.decode(x) for x in val.get(np.sort(half))["x"]] if len(half) else []
                               for half in halves)
        if self._real is None:
            tokens = np.asarray(self.prepared.val.tokens)
            eot = self.tokenizer.eot_id
            first, second = window_starts(tokens, eot, self.tokenizer.encode(BAR_TOKEN)[0], self.evaluator.n,
                                          self.evaluator.seed, self.sample_tokens)
            self._real = tuple(decode_rows(self.tokenizer, windows(tokens, starts, eot, self.sample_tokens), 1)
                               for starts in (first, second))
        return self._real

    def real_features(self) -> dict[str, np.ndarray]:
        if self._real_features is None:
            self._real_features = set_features(self.real_pieces()[0])
        return self._real_features


def decode_rows(tokenizer, rows: np.ndarray, prompt_len: int) -> list:
    """Scores of token rows by the music codec's rule: after the prompt, up to the end-of-piece token that follows
    content (end-of-piece tokens before any content are skipped), through the tokenizer's ``decode_score``."""
    from genforge.data.codecs import content_end

    eot = tokenizer.eot_id
    pieces = []
    for row in np.asarray(rows, dtype=np.int64).reshape(len(rows), -1) if len(rows) else ():
        kept = row[prompt_len:content_end(row, prompt_len, eot)]
        pieces.append(tokenizer.decode_score(kept[kept != eot].tolist()))
    return pieces


def window_starts(tokens: np.ndarray, eot: int, bar: int, n: int, seed: int,
                  length: int = SAMPLE_TOKENS) -> tuple[np.ndarray, np.ndarray]:
    """Start offsets of up to ``n`` windows in each of two disjoint halves of the pieces of a token stream.

    Pieces are the stretches between end-of-piece tokens; they are shuffled (seeded) and dealt alternately to
    the halves. Within a half, windows start at piece openings first (a sample begins a piece), then at bar lines
    whose ``length`` tokens fit inside their piece (a window cut short by the piece's end would be a shorter
    piece than a sample), then at the other bar lines; in random order within each of the three.
    """
    rng = np.random.default_rng(seed)
    ends = np.flatnonzero(tokens == eot)
    candidates = np.union1d(ends + 1, np.flatnonzero(tokens == bar))
    candidates = candidates[candidates < len(tokens)]
    candidates = candidates[tokens[candidates] != eot]  # an empty piece
    piece = np.searchsorted(ends, candidates, side="right")  # piece k follows the k-th end-of-piece token
    piece_end = np.append(ends, len(tokens))[piece]
    priority = np.where(np.isin(candidates, ends + 1), 0, np.where(piece_end - candidates >= length, 1, 2))
    present = rng.permutation(np.unique(piece))  # pieces with somewhere to start, shuffled
    half = np.zeros(len(ends) + 1, dtype=np.int64)
    half[present] = np.arange(len(present)) % 2
    order = np.lexsort((rng.random(len(candidates)), priority))
    ranked, ranked_half = candidates[order], half[piece[order]]
    return ranked[ranked_half == 0][:n], ranked[ranked_half == 1][:n]


def windows(tokens: np.ndarray, starts: np.ndarray, eot: int, length: int) -> np.ndarray:
    """(len(starts), 1 + length) rows shaped like samples: the end-of-piece prompt, then ``length`` tokens from each
    start (padded with end-of-piece tokens at the end of the stream, which the decoding rule cuts off)."""
    rows = np.full((len(starts), 1 + length), eot, dtype=np.int64)
    for row, start in zip(rows, starts):
        chunk = np.asarray(tokens[start:start + length], dtype=np.int64)
        row[1:1 + len(chunk)] = chunk
    return rows
