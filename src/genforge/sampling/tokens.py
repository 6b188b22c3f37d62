"""Token decoding as small pure functions of next-token logits (n, vocab), batched over rows.

``next_token`` is what a generation loop calls once per step. It applies, in this order (the order
HF transformers uses, so settings carry over from it):

1. ``repetition_penalty``: tokens already in the row (prompt included) become less likely;
2. ``temperature``: 0 is greedy decoding (argmax, after the penalty; the filters below never
   remove the argmax, so they are skipped); otherwise the logits are divided by it;
3. the filters ``top_k``, ``top_p`` (nucleus) and ``min_p``, each on what the previous one left;
4. a draw from the caller's ``torch.Generator``, so a seed alone decides the output.

Each step is also a function of its own (``repetition_penalty``, ``scale_temperature``,
``top_k_filter``, ``top_p_filter``, ``min_p_filter``), and ``process_logits`` runs 1-3 without drawing.
A filter removes a token by setting its logit to -inf, and always keeps at least the argmax.

Stop strings work on decoded text, which only a layer with the tokenizer has (``genforge.api``);
the string helpers it uses (``check_stops``, ``first_stop``, ``held_back``) are at the end.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Sequence

import torch

from genforge.errors import ConfigError

# Softmax of float32 logits is off by ~1e-7, so a probability mass that is exactly p on paper can land
# just below it; a mass within this of p counts as reaching it, so boundaries do not flip on rounding.
MASS_TOLERANCE = 1e-6


def next_token(
    logits: torch.Tensor,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    *,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
    seen: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pick one token id per row of ``logits`` (n, vocab); returns (n,) int64.

    ``seen`` (n, T) holds the ids each row has so far, for ``repetition_penalty``.
    ``temperature == 0`` is greedy decoding (argmax); ties go to the lowest id.
    """
    logits = process_logits(
        logits, temperature, top_k, top_p=top_p, min_p=min_p, repetition_penalty=repetition_penalty, seen=seen
    )
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def process_logits(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    *,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
    seen: torch.Tensor | None = None,
) -> torch.Tensor:
    """The logits ``next_token`` draws from, in float32: penalty, temperature, then the filters.

    With ``temperature == 0`` only the penalty applies: greedy decoding takes the argmax, which
    temperature and the filters leave where it is.
    """
    check_decoding(temperature, top_k, top_p=top_p, min_p=min_p, repetition_penalty=repetition_penalty)
    logits = logits.float()  # softmax of bf16 logits is too coarse to sample from
    if repetition_penalty is not None and repetition_penalty != 1:
        if seen is None:
            raise ConfigError("repetition_penalty needs the ids generated so far (seen)")
        logits = apply_repetition_penalty(logits, seen, repetition_penalty)
    if temperature == 0:
        return logits
    logits = scale_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    if min_p is not None:
        logits = min_p_filter(logits, min_p)
    return logits


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's penalty as HF applies it: for each token id in the row's ``seen`` ids (n, T), a positive
    logit is divided by ``penalty`` and a negative one multiplied by it.

    Dividing a positive logit and multiplying a negative one both push the token down for a
    ``penalty`` > 1 (a plain division would make a negative logit *more* likely); below 1 it rewards
    repetition. A token counts once however often it was seen.
    """
    if not penalty > 0:
        raise ConfigError(f"repetition_penalty must be > 0 (1 means off), got {penalty!r}")
    if seen.numel() == 0:
        return logits
    seen = seen.to(device=logits.device, dtype=torch.long).view(logits.shape[0], -1)
    score = logits.gather(-1, seen)
    score = _finite(torch.where(score < 0, score * penalty, score / penalty))
    return logits.scatter(-1, seen, score)


def scale_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide by ``temperature`` > 0: below 1 sharpens the distribution, above 1 flattens it."""
    if temperature <= 0:
        raise ConfigError(f"temperature must be > 0 to scale logits, got {temperature}; use 0 only for greedy decoding")
    temperature = max(temperature, torch.finfo(logits.dtype).tiny)  # below it, the logits' type reads 0
    scaled = logits / temperature
    if (torch.isfinite(logits) & ~torch.isfinite(scaled)).any():  # a tiny temperature overflowed (softmax: NaN)
        scaled = (logits - logits.amax(-1, keepdim=True)) / temperature  # the same distribution: the argmax at 0
    return scaled


def _finite(logits: torch.Tensor) -> torch.Tensor:
    """A tiny penalty overflows logits to +-inf: keep them at the largest finite values instead."""
    big = torch.finfo(logits.dtype).max
    return torch.nan_to_num(logits, posinf=big, neginf=-big)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep exactly the ``k`` largest logits of each row and set the rest to -inf.

    Exactly ``k`` even when values tie at the cut (a threshold test would keep every tied one);
    ``k`` larger than the vocabulary keeps everything.
    """
    if k < 1:
        raise ConfigError(f"top_k must be a positive integer, got {k}")
    if k >= logits.shape[-1]:
        return logits
    values, indices = torch.topk(logits, k, dim=-1)
    return torch.full_like(logits, float("-inf")).scatter(-1, indices, values)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability mass reaches ``p``.

    A token is kept when the mass of the tokens more likely than it is still short of ``p``, so the
    most likely token is always kept (a tiny ``p`` is greedy-like) and ``p == 1`` keeps everything.
    Like ``top_k_filter`` it keeps exactly that set when probabilities tie at the cut: among equal
    probabilities the lower id comes first (a stable sort), so the result never depends on the
    sorting kernel.
    """
    if not 0 < p <= 1:
        raise ConfigError(f"top_p must be in (0, 1], got {p!r}")
    if p == 1:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True, stable=True)
    probs = torch.softmax(sorted_logits.double(), dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    keep_sorted = mass_before < p - MASS_TOLERANCE
    keep_sorted[..., 0] = True
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, float("-inf"))


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Keep the tokens whose probability is at least ``min_p`` times the row's largest probability.

    The cut scales with the model's confidence: a peaked distribution keeps few tokens, a flat one
    many. ``min_p == 0`` keeps everything, ``min_p == 1`` only the tokens tied with the argmax.
    The ratio p_i / p_max is exp(logit_i - logit_max), so no softmax is needed.
    """
    if not 0 <= min_p <= 1:
        raise ConfigError(f"min_p must be in [0, 1], got {min_p!r}")
    if min_p == 0:
        return logits
    ratio = torch.exp(logits - logits.amax(dim=-1, keepdim=True))
    return logits.masked_fill(ratio < min_p * (1 - MASS_TOLERANCE), float("-inf"))


def check_decoding(
    temperature: float,
    top_k: int | None,
    *,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
) -> None:
    """One-line errors for decoding settings a user typed; None leaves a control off."""
    if not _is_number(temperature) or temperature < 0:
        raise ConfigError(f"temperature must be a number >= 0 (0 means greedy), got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise ConfigError(f"top_k must be a positive integer or None, got {top_k!r}")
    if top_p is not None and (not _is_number(top_p) or not 0 < top_p <= 1):
        raise ConfigError(f"top_p must be a number in (0, 1] (1 keeps every token), got {top_p!r}")
    if min_p is not None and (not _is_number(min_p) or not 0 <= min_p <= 1):
        raise ConfigError(f"min_p must be a number in [0, 1] (0 keeps every token), got {min_p!r}")
    if repetition_penalty is not None and (not _is_number(repetition_penalty) or not repetition_penalty > 0):
        raise ConfigError(f"repetition_penalty must be a number > 0 (1 means off), got {repetition_penalty!r}")


@dataclass(frozen=True)
class Decoding:
    """One set of decoding controls, checked once when made; None leaves a control off.

    Generation loops take one of these instead of repeating the five keywords; ``next_token`` applies it.
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None

    def __post_init__(self) -> None:
        check_decoding(self.temperature, self.top_k, top_p=self.top_p, min_p=self.min_p,
                       repetition_penalty=self.repetition_penalty)

    @classmethod
    def split(cls, options: dict[str, Any], temperature: float = 1.0) -> tuple["Decoding", dict[str, Any]]:
        """The decoding controls among keyword ``options`` (None: the default, ``temperature`` for the
        temperature), and the options left over for the caller to accept or reject."""
        names = {f.name for f in fields(cls)}
        chosen = {k: v for k, v in options.items() if k in names and v is not None}
        return cls(**{"temperature": temperature, **chosen}), {k: v for k, v in options.items() if k not in names}

    @property
    def penalised(self) -> bool:
        """Whether the repetition penalty is on (then ``next_token`` needs the ids so far)."""
        return self.repetition_penalty not in (None, 1)

    def next_token(self, logits: torch.Tensor, generator: torch.Generator | None = None,
                   seen: torch.Tensor | None = None) -> torch.Tensor:
        settings = asdict(self)
        return next_token(logits, generator, settings.pop("temperature"), settings.pop("top_k"), seen=seen, **settings)


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# ---- stop strings: text-level, for the layer that owns the tokenizer ------------------------------


def check_stops(stop: str | Sequence[str] | None) -> tuple[str, ...]:
    """Stop strings as a tuple: one string, a list of them, or None (no stop strings)."""
    if stop is None:
        return ()
    stops = (stop,) if isinstance(stop, str) else stop
    if not isinstance(stops, (list, tuple)) or not all(isinstance(s, str) and s for s in stops):
        raise ConfigError(f"stop must be a non-empty string or a list of non-empty strings, got {stop!r}")
    return tuple(stops)


def first_stop(text: str, stops: Sequence[str]) -> int:
    """Where ``text`` must be cut: the start of the earliest stop string in it, or -1 when none occurs."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else -1


def held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of a partial ``text`` a stream must not show yet.

    Two kinds: a tail that may still grow into a stop string (shown, it could not be taken back when
    the stop string completes and the text is cut before it), and trailing U+FFFD replacement
    characters, which a byte-level tokenizer decodes while it is in the middle of a multi-byte
    character (the next token may turn them into the real character).
    """
    hold = len(text) - len(text.rstrip("\ufffd"))
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), hold, -1):
            if text.endswith(s[:k]):
                hold = k
                break
    return hold
