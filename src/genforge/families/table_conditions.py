"""Conditional sampling of table rows: only rows holding given categories (``where`` when sampling).

A family sees a condition as a column and a category's index (its frequency rank) in that column (the table
modality turns ``diagnosis=malignant`` into one, ``models/tables.py``). The column's span is a "category"
one-hot, where a row matches when the asked position is hot, or, for a column of many categories, a "code":
the index's binary code, where a row matches when its code decodes (to the nearest valid code, as the table
transform decodes it) to the asked index. ``condition_values`` gives the span's encoded values for a condition,
for families that place a condition into a row rather than reject rows. ``draw_matching`` draws batches and keeps matching rows until
it has ``n``, within a bound: a condition the model (almost) never produces is one line, not an endless loop.
The bounded rounds themselves (``draw_kept``) take any keep-predicate: a table run's constraints
(``data/table_constraints.py``) reject decoded rows through them too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence, TypeVar

import torch

from genforge.data.spec import TableSpan
from genforge.data.table_transform import nearest_code
from genforge.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

MAX_DRAWN = 100  # rows drawn per row asked, at most, before a condition is called too rare
MIN_ROUND = 64  # rows drawn in a round, at least: small asks still see a few chances
MAX_ROUND = 16_384  # rows drawn in a round, at most (unless more are asked): memory stays bounded
CONDITION_SPANS = ("category", "code")  # the spans of the columns a condition can name


@dataclass(frozen=True)
class Condition:
    """Rows whose ``column`` holds its category number ``index``; ``text`` names it in messages
    (``diagnosis=malignant``); ``count``: the column's number of categories (its valid codes, where the column
    is binary-coded; 0 takes every code of the span's width as valid)."""

    column: str
    index: int
    text: str = ""
    count: int = 0

    def describe(self) -> str:
        return self.text or f"{self.column}[{self.index}]"


def condition_span(spans: Sequence[TableSpan], condition: Condition) -> TableSpan:
    """The "category" or "code" span ``condition`` looks at; a ConfigError when its column has neither or the
    index is not one of the column's categories."""
    for span in spans:
        if span.column == condition.column and span.kind in CONDITION_SPANS:
            count = categories_of(span, condition)
            if not 0 <= condition.index < count:
                raise ConfigError(f"column '{condition.column}' has {count:,} categories; category "
                                  f"{condition.index} is not one of them")
            return span
    names = sorted({s.column for s in spans if s.kind in CONDITION_SPANS})
    raise ConfigError(f"column '{condition.column}' has no categories to condition on; columns that "
                      f"have: {', '.join(names) or 'none'}")


def categories_of(span: TableSpan, condition: Condition) -> int:
    """How many categories ``span`` (``condition``'s column) holds."""
    if span.kind == "category":
        return span.width
    return condition.count or 2 ** span.width


def condition_values(span: TableSpan, condition: Condition, device=None) -> torch.Tensor:
    """(span.width,) the encoded values of ``condition``'s category: a one-hot for a "category" span, the
    index's bits (most significant first, 0 as -1 and 1 as +1) for a "code" span."""
    if span.kind == "category":
        values = torch.zeros(span.width, device=device)
        values[condition.index] = 1.0
        return values
    shifts = torch.arange(span.width - 1, -1, -1, device=device)
    return ((condition.index >> shifts) & 1).float() * 2.0 - 1.0


def categories_held(rows: torch.Tensor, span: TableSpan, condition: Condition) -> torch.Tensor:
    """(B,) the category each encoded row holds in ``condition``'s ``span``."""
    values = rows[:, span.start:span.stop]
    if span.kind == "category":
        return values.argmax(dim=1)
    ranks = nearest_code(values.detach().float().cpu().numpy(), categories_of(span, condition))
    return torch.from_numpy(ranks).to(rows.device)


def matching(rows: torch.Tensor, spans: Sequence[TableSpan], conditions: Sequence[Condition]) -> torch.Tensor:
    """(B,) bool: which encoded rows hold every condition's category."""
    keep = torch.ones(rows.shape[0], dtype=torch.bool, device=rows.device)
    for condition in conditions:
        span = condition_span(spans, condition)
        keep &= categories_held(rows, span, condition) == condition.index
    return keep


def draw_matching(draw: Callable[[int], torch.Tensor], n: int, spans: Sequence[TableSpan],
                  conditions: Sequence[Condition]) -> torch.Tensor:
    """``n`` rows from ``draw(k)`` (k fresh encoded rows each call) that match every condition, in the order
    drawn, within ``draw_kept``'s bound. Deterministic when ``draw`` is."""
    for condition in conditions:
        condition_span(spans, condition)  # a bad condition fails before anything is drawn
    what = " and ".join(c.describe() for c in conditions)
    parts = draw_kept(draw, n, lambda rows: rows[matching(rows, spans, conditions)],
                      lambda found, drawn: f"only {found:,} of {drawn:,} rows drawn matched {what}; the condition "
                                           "is too rare")
    return torch.cat(parts)[:n]


Rows = TypeVar("Rows")  # a batch of rows with a len(): encoded (a tensor) or decoded (a DataFrame)


def draw_kept(draw: Callable[[int], Rows], n: int, keep: Callable[[Rows], Rows],
              too_rare: Callable[[int, int], str]) -> list[Rows]:
    """Batches of rows from ``draw(k)`` (k fresh rows each call: encoded rows, or decoded tables) passed through
    ``keep`` (the rows it lets through), in the order drawn, until they hold at least ``n`` rows (one empty draw
    when ``n`` is 0). Rounds are sized from the share kept so far, so a common condition takes one or two rounds;
    after ``MAX_DRAWN`` x n rows without n kept, a one-line ConfigError: ``too_rare(kept, drawn)`` and the bound.
    Deterministic when ``draw`` is (round sizes depend only on what was drawn)."""
    if n <= 0:
        return [draw(0)]
    budget, found, drawn = MAX_DRAWN * n, 0, 0
    kept: list[Rows] = []
    while found < n:
        if drawn >= budget:
            raise ConfigError(f"{too_rare(found, drawn)} for this model (it draws at most {MAX_DRAWN} rows per "
                              "row asked)")
        rate = max(found / drawn, 1 / MAX_DRAWN) if drawn else 1.0
        size = math.ceil(1.2 * (n - found) / rate)  # a margin over the expected need: fewer rounds
        size = min(budget - drawn, max(MIN_ROUND, min(size, max(MAX_ROUND, n))))
        hits = keep(draw(size))
        drawn += size
        kept.append(hits)
        found += len(hits)
    return kept


def draw_constrained(draw: Callable[[int], pd.DataFrame], n: int, constraints: Sequence) -> pd.DataFrame:
    """``n`` decoded rows from ``draw(k)`` (k fresh decoded rows each call) that keep every constraint
    (``data/table_constraints.py``: sums built, breaking rows dropped), in the order drawn, within ``draw_kept``'s
    bound: what `genforge sample` and `genforge eval` give for a run with constraints."""
    import pandas as pd

    from genforge.data.table_constraints import Enforcement

    enforcement = Enforcement(list(constraints))
    parts = draw_kept(draw, n, enforcement.keep, enforcement.too_rare)
    return pd.concat(parts, ignore_index=True).iloc[:n]
