"""Encoded table rows as token sequences, for a transformer over rows (``families/table_transformer.py``).

A row encoded by the table modality (``nets/spans.py``) becomes one token per *slot*:

- a one-hot group ("missing", "mode", "category"): the index of its hot entry;
- a "value" dim: its bin among ``bins`` uniform bins over [-1, 1] (a value past either end, which mode-specific
  normalisation allows beyond 4 standard deviations, goes into the end bin);
- each dim of a "code" span (one bit of a binary code, -1 or +1): 0 or 1.

A column's slots sit together in a fixed inner order: its missing flag, then its mode, then its value (whether
a number is there, then which mode it lies in, then where within that mode), or its category, or its code bits
most significant first. The *canonical* order is the table's column order with that inner order; a generation
order (``slot_order``) permutes whole columns, so a column's slots always stay together and in inner order.

Every slot has a vocabulary of its own: slot p's tokens are the ids ``offset[p]`` .. ``offset[p] + size[p] - 1``
of one table of ``vocab_size`` ids, so a model can score a slot's ids alone and whatever it draws is valid
there. ``vocab_index`` (P, widest) lists each slot's ids, padded with its first, and ``valid`` marks the real ones.

Decoding gives exact one-hots and exact ±1 bits; a value comes back as a uniform draw within its bin (from the
caller's generator), so decoded numbers are continuous, not a grid of bin centres, and lie within one bin width
of the value encoded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from genforge.data.spec import TableSpan

INNER_ORDER = ("missing", "mode", "value", "category", "code")  # a column's spans, as its slots are ordered
GROUP, VALUE, BIT = 0, 1, 2  # what a slot holds: a one-hot group's hot index, a value's bin, a code bit


@dataclass(frozen=True)
class Slot:
    """One token of a row: ``column`` (its index in table order), ``kind`` (GROUP, VALUE or BIT), the row dims
    it reads (``start`` .. ``start + width``), its vocabulary size and where that starts among all ids."""

    column: int
    kind: int
    start: int
    width: int
    size: int
    offset: int


def make_slots(spans: list[TableSpan], bins: int) -> tuple[list[str], list[Slot]]:
    """The table's column names (in order) and its slots in canonical order."""
    columns: list[str] = []
    for span in spans:
        if span.column not in columns:
            columns.append(span.column)
    slots: list[Slot] = []
    offset = 0
    for c, name in enumerate(columns):
        own = sorted((s for s in spans if s.column == name), key=lambda s: INNER_ORDER.index(s.kind))
        for span in own:
            if span.kind == "value":
                parts = [(VALUE, span.start, 1, bins)]
            elif span.kind == "code":
                parts = [(BIT, span.start + i, 1, 2) for i in range(span.width)]
            else:
                parts = [(GROUP, span.start, span.width, span.width)]
            for kind, start, width, size in parts:
                slots.append(Slot(c, kind, start, width, size, offset))
                offset += size
    return columns, slots


class RowTokens(nn.Module):
    """Rows (B, D) <-> tokens (B, P), one per slot in canonical order, each a slot-local index (0 .. size - 1).

    A module only so that its index tables follow the model to its device; they are not saved (the layout and
    ``bins`` rebuild them), so they are non-persistent buffers.
    """

    def __init__(self, spans: list[TableSpan], bins: int):
        super().__init__()
        self.bins = bins
        self.width = spans[-1].stop  # spans tile the row (``spans_of``)
        self.columns, self.slots = make_slots(spans, bins)
        self.vocab_size = sum(s.size for s in self.slots)
        widest = max(s.size for s in self.slots)
        reads = max(s.width for s in self.slots)

        def table(values) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.long)

        self.register_buffer("kind", table([s.kind for s in self.slots]), persistent=False)
        self.register_buffer("start", table([s.start for s in self.slots]), persistent=False)
        self.register_buffer("offset", table([s.offset for s in self.slots]), persistent=False)
        self.register_buffer("column", table([s.column for s in self.slots]), persistent=False)
        # the row dims each slot reads, padded with its first (B, P, reads) gathers every slot at once
        self.register_buffer("dims", table([[s.start + min(j, s.width - 1) for j in range(reads)]
                                            for s in self.slots]), persistent=False)
        self.register_buffer("reads", table([[j < s.width for j in range(reads)] for s in self.slots]).bool(),
                             persistent=False)
        self.register_buffer("vocab_index", table([[s.offset + (j if j < s.size else 0) for j in range(widest)]
                                                   for s in self.slots]), persistent=False)
        self.register_buffer("valid", table([[j < s.size for j in range(widest)] for s in self.slots]).bool(),
                             persistent=False)

    @property
    def num_slots(self) -> int:
        return len(self.slots)

    @property
    def bin_width(self) -> float:
        return 2.0 / self.bins

    def encode(self, rows: torch.Tensor) -> torch.Tensor:
        """(B, D) encoded rows -> (B, P) int64 slot-local tokens."""
        read = rows.float()[:, self.dims]  # (B, P, reads)
        hot = read.masked_fill(~self.reads, float("-inf")).argmax(dim=2)  # a group's hot entry
        first = read[:, :, 0]
        bins = ((first.clamp(-1.0, 1.0) + 1.0) / self.bin_width).floor().long().clamp(0, self.bins - 1)
        bits = (first > 0).long()
        return torch.where(self.kind == GROUP, hot, torch.where(self.kind == VALUE, bins, bits))

    def decode(self, tokens: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, P) slot-local tokens -> (B, D) encoded rows; a value is drawn uniformly within its bin."""
        jitter = torch.rand(tokens.shape, generator=generator, device=tokens.device)
        value = -1.0 + (tokens + jitter) * self.bin_width
        entry = torch.where(self.kind == GROUP, torch.ones_like(value),
                            torch.where(self.kind == VALUE, value, tokens * 2.0 - 1.0))
        dim = self.start + torch.where(self.kind == GROUP, tokens, torch.zeros_like(tokens))
        rows = torch.zeros(tokens.shape[0], self.width, device=tokens.device)
        return rows.scatter_(1, dim, entry)  # every slot writes its own dim: no two writes collide

    def ids(self, tokens: torch.Tensor, slots: torch.Tensor | None = None) -> torch.Tensor:
        """Slot-local ``tokens`` as ids of the shared table; ``slots`` (same shape) says whose, where they are
        not in canonical order."""
        return tokens + (self.offset if slots is None else self.offset[slots])

    def slot_order(self, column_keys: torch.Tensor) -> torch.Tensor:
        """(B, C) one key per column -> (B, P) the slots in generation order: columns by ascending key (ties in
        table order), each column's slots together in inner order."""
        rank = column_keys.argsort(dim=1, stable=True).argsort(dim=1)  # (B, C) each column's place in the order
        slots = torch.arange(self.num_slots, device=column_keys.device)
        return (rank[:, self.column] * self.num_slots + slots).argsort(dim=1)

    def slots_of(self, column: str) -> list[int]:
        """The canonical positions of ``column``'s slots."""
        c = self.columns.index(column)
        return [p for p, s in enumerate(self.slots) if s.column == c]
