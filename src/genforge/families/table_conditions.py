"""Conditional sampling of table rows: only rows holding given categories (``where`` when sampling).

A family sees a condition as a column and the position of a category in that column's "category" span (the
table modality turns ``diagnosis=malignant`` into one, ``models/tables.py``). Sampled rows are exact one-hots,
so a row matches when the asked position is hot. ``draw_matching`` draws batches and keeps matching rows until
it has ``n``, within a bound: a condition the model (almost) never produces is one line, not an endless loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from genforge.data.spec import TableSpan
from genforge.errors import ConfigError

MAX_DRAWN = 100  # rows drawn per row asked, at most, before a condition is called too rare
MIN_ROUND = 64  # rows drawn in a round, at least: small asks still see a few chances
MAX_ROUND = 16_384  # rows drawn in a round, at most (unless more are asked): memory stays bounded


@dataclass(frozen=True)
class Condition:
    """Rows whose ``column`` holds the category at ``index`` of its "category" span; ``text`` names it in
    messages (``diagnosis=malignant``)."""

    column: str
    index: int
    text: str = ""

    def describe(self) -> str:
        return self.text or f"{self.column}[{self.index}]"


def category_span(spans: Sequence[TableSpan], condition: Condition) -> TableSpan:
    """The "category" span ``condition`` looks at; a ConfigError when its column has none or the index is past it."""
    for span in spans:
        if span.column == condition.column and span.kind == "category":
            if not 0 <= condition.index < span.width:
                raise ConfigError(f"column '{condition.column}' has {span.width} categories; category "
                                  f"{condition.index} is not one of them")
            return span
    names = sorted({s.column for s in spans if s.kind == "category"})
    raise ConfigError(f"column '{condition.column}' has no one-hot categories to condition on; columns that "
                      f"have: {', '.join(names) or 'none'}")


def matching(rows: torch.Tensor, spans: Sequence[TableSpan], conditions: Sequence[Condition]) -> torch.Tensor:
    """(B,) bool: which encoded rows hold every condition's category (the hot entry of its span)."""
    keep = torch.ones(rows.shape[0], dtype=torch.bool, device=rows.device)
    for condition in conditions:
        span = category_span(spans, condition)
        keep &= rows[:, span.start:span.stop].argmax(dim=1) == condition.index
    return keep


def draw_matching(draw: Callable[[int], torch.Tensor], n: int, spans: Sequence[TableSpan],
                  conditions: Sequence[Condition]) -> torch.Tensor:
    """``n`` rows from ``draw(k)`` (k fresh encoded rows each call) that match every condition, in the order
    drawn. Rounds are sized from the share matched so far, so a common condition takes one or two rounds; after
    ``MAX_DRAWN`` x n rows without n matches, a one-line ConfigError says how many matched. Deterministic when
    ``draw`` is (round sizes depend only on what was drawn)."""
    for condition in conditions:
        category_span(spans, condition)  # a bad condition fails before anything is drawn
    if n <= 0:
        return draw(0)
    budget, found, drawn = MAX_DRAWN * n, 0, 0
    kept: list[torch.Tensor] = []
    while found < n:
        if drawn >= budget:
            what = " and ".join(c.describe() for c in conditions)
            raise ConfigError(f"only {found:,} of {drawn:,} rows drawn matched {what}; the condition is too rare "
                              f"for this model (it draws at most {MAX_DRAWN} rows per row asked)")
        rate = max(found / drawn, 1 / MAX_DRAWN) if drawn else 1.0
        size = math.ceil(1.2 * (n - found) / rate)  # a margin over the expected need: fewer rounds
        size = min(budget - drawn, max(MIN_ROUND, min(size, max(MAX_ROUND, n))))
        rows = draw(size)
        drawn += size
        hits = rows[matching(rows, spans, conditions)]
        kept.append(hits)
        found += hits.shape[0]
    return torch.cat(kept)[:n]
