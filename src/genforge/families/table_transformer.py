"""The transformer on tables: a row is a short sequence of tokens, drawn one after another by a GPT.

Rows come encoded by the table modality (``nets/spans.py``) and are serialised on the fly (``nets/row_tokens.py``):
one token per one-hot group (a category, the mixture mode of a number, a missing flag), one per continuous value
(its bin among ``model.bins`` uniform bins over [-1, 1]) and one per bit of a binary-coded column. Each token
position (a *slot*) has a vocabulary of its own within one shared embedding table, and a slot's logits score
that slot's ids alone (against their embedding rows: the head is tied), so every drawn token is valid where it
lands. A decoded value is a uniform draw within its bin: numbers come back continuous, not stepped.

Any columns can prompt the rest (sigma-GPT, Pannatier et al., 2024; any-order autoregression, Uria et al.,
2014). With ``model.order = "random"`` each training row is read in a random order of its columns (a column's
own slots stay together, in a fixed inner order: missing flag, mode, value). The input at each step is the sum
of three embeddings: the token just read, which slot that token filled, and which slot is predicted next (the
GPT's position table, one row per slot), so the net is told what to predict whatever the order. No embedding
says how many steps came before: in random order the net reads a set of (slot, token) pairs, as the conditional
it learns is. The GPT's blocks (``nets/transformer.py``: RMSNorm, SwiGLU) run causally over the steps; the loss
is the mean cross-entropy of each slot's token. ``model.order = "fixed"`` reads the columns in table order
(plain autoregression over columns; the position table is then GPT-2's own). Both learn breast_cancer equally
well (quality 0.961 and 0.963 after the default 300 steps); random order is the default because it conditions
on any column.

Sampling orders each row's columns at random with the generator (table order when fixed) and draws the slots'
tokens in turn (``temperature``, ``top_p``: ``sampling/tokens.py``), keeping keys and values in the GPT's cache.
``where`` conditions are exact by construction: their columns come first in every row's order and their tokens
are the conditions' own (``table_conditions.condition_values``), so the other columns are drawn from the model's
conditional given them, nothing rejected. Trained in fixed order, a model can do that only when the conditions
name the table's first columns; other conditions fall back to drawing rows and keeping the matching ones
(``draw_matching``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from genforge import draws, progress
from genforge.config import Range, check_choices, check_ranges
from genforge.data.spec import DataSpec
from genforge.errors import ConfigError
from genforge.families.base import Family, OptimizerGroup, Phase, eval_mode
from genforge.families.capabilities import TableTokenSampling, declare
from genforge.families.table_conditions import Condition, condition_span, condition_values, draw_matching
from genforge.nets.row_tokens import RowTokens
from genforge.nets.spans import spans_of
from genforge.nets.transformer import GPT
from genforge.sampling.tokens import Decoding

ORDERS = ("random", "fixed")


@dataclass
class TableTransformerConfig:
    # Rows are a few dozen tokens, and a table's rows are few: at 300 steps on breast_cancer (lr 3e-3) 2 layers
    # of 32 matched 3 layers of 64 (quality 0.956 and 0.959) in under half the time.
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 32
    dropout: float = 0.0
    bins: int = 64  # uniform bins over [-1, 1] for each continuous value: a bin is 1/32 wide
    order: str = "random"  # "random": any column order in training, so any columns can prompt; "fixed": table order


MODEL_RANGES = {"n_layer": Range(1, 64), "n_head": Range(1, 64), "n_embd": Range(2, 4096),
                "dropout": Range(0, 1, open_high=True), "bins": Range(2, 4096)}


def check_config(config: TableTransformerConfig) -> None:
    check_ranges(config, MODEL_RANGES, "model")
    check_choices(config, {"order": ORDERS}, "model.")
    if config.n_embd % config.n_head:
        raise ConfigError(f"model.n_embd ({config.n_embd}) must be divisible by model.n_head ({config.n_head})")


@dataclass(frozen=True)
class Prompt:
    """What ``where`` fixes in every sampled row: slot-local ``tokens`` (P,) where ``given`` (P,), which are the
    slots of the table columns ``columns`` (their indices)."""

    tokens: torch.Tensor
    given: torch.Tensor
    columns: list[int]


class TableTransformer(Family):
    name = "transformer"
    Config = TableTransformerConfig
    accepts = ("table",)
    checkpointed_nets = ("net",)
    capabilities = declare(sample=TableTokenSampling)
    # 64 rows a step: a step costs what a VAE's step of 500 rows costs several times over, so more, smaller
    # steps; 6e-3 learnt pair trends better than 3e-3 (0.96 and 0.95, breast_cancer, two seeds)
    train_defaults = {
        "lr": 6e-3,
        "batch_size": 64,
        "warmup_steps": 30,
        "betas": (0.9, 0.99),
        "weight_decay": 0.0,
        "ema_decay": 0.0,  # a few hundred steps: an average would keep the early weights in
    }

    def __init__(self, config: TableTransformerConfig, spec: DataSpec):
        super().__init__(config, spec)
        check_config(config)
        self.spans = spans_of(spec)
        self.rows = RowTokens(self.spans, config.bins)
        slots = self.rows.num_slots
        self.start_id = self.rows.vocab_size  # the id read before a row's first token
        # the position table (one row per slot) says which slot is predicted next (see the module docstring)
        self.net = GPT(vocab_size=self.rows.vocab_size + 1, block_size=slots, n_layer=config.n_layer,
                       n_head=config.n_head, n_embd=config.n_embd, dropout=config.dropout, pos="learned",
                       norm="rmsnorm", mlp="swiglu")
        self.read_slot = nn.Embedding(slots + 1, config.n_embd)  # which slot the token read filled (`slots`: start)
        nn.init.normal_(self.read_slot.weight, mean=0.0, std=0.02)

    def optimizer_groups(self) -> dict[str, OptimizerGroup]:
        """Decay matrices and embedding tables; norm gains are exempt."""
        decay = [p for p in self.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.requires_grad and p.dim() < 2]
        return {"main": OptimizerGroup(params=decay, no_decay=no_decay)}

    # ---- the net over token sequences -----------------------------------------------------------------
    def embed(self, ids: torch.Tensor, read_slots: torch.Tensor, next_slots: torch.Tensor) -> torch.Tensor:
        """(B, T) ids read, the slots they filled and the slots predicted next -> input embeddings (B, T, C)."""
        return self.net.wte(ids) + self.read_slot(read_slots) + self.net.wpe(next_slots)

    def slot_logits(self, h: torch.Tensor, slots: torch.Tensor | None = None) -> torch.Tensor:
        """Logits over each slot's own ids, padded to the widest slot with -inf. ``h``: (B, P, C), the states
        that predict each slot in canonical order (``slots`` None), or (B, C) predicting ``slots`` (B,)."""
        weight = self.net.wte.weight  # the tied head: a slot's ids score against their own embeddings
        if slots is None:
            logits = torch.einsum("bpc,pvc->bpv", h, weight[self.rows.vocab_index])
            valid = self.rows.valid
        else:
            logits = torch.einsum("bc,bvc->bv", h, weight[self.rows.vocab_index[slots]])
            valid = self.rows.valid[slots]
        return logits.float().masked_fill(~valid, float("-inf"))

    def column_order(self, keys: torch.Tensor, first: Sequence[int] = ()) -> torch.Tensor:
        """(B, P) slots in reading order from (B, C) random column ``keys`` (ignored in fixed order): the
        columns ``first`` lead, the rest follow by key."""
        if self.config.order == "fixed":
            keys = torch.arange(keys.shape[1], device=keys.device, dtype=keys.dtype).expand_as(keys)
        keys = keys.clone()
        keys[:, list(first)] -= keys.shape[1] + 1  # below every other key, whatever the keys' range
        return self.rows.slot_order(keys)

    def forward(self, tokens: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, P, widest) of slot-local ``tokens`` (B, P, canonical order) read in
        ``order`` (B, P): row b's logits for slot p see only the tokens read before p in its order."""
        ids = self.rows.ids(tokens).gather(1, order)  # (B, P) in reading order
        read = torch.cat([torch.full_like(ids[:, :1], self.start_id), ids[:, :-1]], dim=1)
        read_slots = torch.cat([torch.full_like(order[:, :1], self.rows.num_slots), order[:, :-1]], dim=1)
        h = self.net.hidden(self.embed(read, read_slots, order), torch.arange(ids.shape[1], device=ids.device))
        h = h.gather(1, order.argsort(dim=1)[..., None].expand_as(h))  # back to canonical order: step -> slot
        return self.slot_logits(h)

    def training_step(self, batch: dict[str, torch.Tensor]) -> Iterator[Phase]:
        x = batch["x"]
        tokens = self.rows.encode(x)
        order = self.column_order(draws.rand(x.shape[0], len(self.rows.columns), device=x.device))
        loss = F.cross_entropy(self(tokens, order).flatten(0, 1), tokens.flatten())
        yield "main", loss, {"row_nll": loss.detach() * self.rows.num_slots}

    # ---- sampling ----------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, where: list[Condition] | None = None,
               temperature: float = 1.0, top_p: float | None = None, **conditions) -> torch.Tensor:
        """``n`` encoded rows (n, D); ``where``: every row holds each condition's category (see the module);
        ``temperature`` and ``top_p`` shape each token's draw (``sampling.tokens``; 0: the likeliest token)."""
        self.reject_conditions(self.name, conditions)
        decoding = Decoding(temperature=temperature, top_p=top_p)
        with eval_mode(self):
            prompt = self.prompt(where or [])
            if prompt is None:
                return draw_matching(lambda k: self.draw(k, generator, decoding), n, self.spans, where)
            return self.draw(n, generator, decoding, prompt)

    def prompt(self, where: list[Condition]) -> Prompt | None:
        """The slots ``where`` fixes and their tokens; None when the order cannot put them first (fixed order,
        conditions that are not the table's first columns)."""
        slots = self.rows.num_slots
        row = torch.zeros(1, self.rows.width, device=self.device)
        given = torch.zeros(slots, dtype=torch.bool, device=self.device)
        columns: list[int] = []
        for condition in where:
            span = condition_span(self.spans, condition)
            column = self.rows.columns.index(span.column)
            if column in columns:
                raise ConfigError(f"column '{span.column}' is conditioned on twice; give each column one value")
            columns.append(column)
            row[0, span.start:span.stop] = condition_values(span, condition, self.device)
            given[[p for p, s in enumerate(self.rows.slots) if span.start <= s.start < span.stop]] = True
        if self.config.order == "fixed" and sorted(columns) != list(range(len(columns))):
            return None
        return Prompt(self.rows.encode(row)[0], given, columns)

    def draw(self, n: int, generator: torch.Generator | None, decoding: Decoding,
             prompt: Prompt | None = None) -> torch.Tensor:
        """``n`` encoded rows drawn token by token, the prompt's tokens first."""
        if n == 0:
            return torch.zeros(0, self.rows.width, device=self.device)
        tokens, _ = self.draw_tokens(n, generator, decoding, prompt)
        return self.rows.decode(tokens, generator)

    def draw_tokens(self, n: int, generator: torch.Generator | None, decoding: Decoding,
                    prompt: Prompt | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, P) slot-local tokens drawn one step at a time with the GPT's cache, and the (n, P) order they
        were drawn in."""
        slots = self.rows.num_slots
        keys = torch.rand(n, len(self.rows.columns), generator=generator, device=self.device)
        order = self.column_order(keys, prompt.columns if prompt else ())
        # the first `given` steps of every row are the prompt's: its columns lead, and a condition's span (a
        # category or a code) is its column's only one, so the given slots are exactly those columns' slots
        given = int(prompt.given.sum()) if prompt else 0
        tokens = torch.zeros(n, slots, dtype=torch.long, device=self.device)
        every = torch.arange(n, device=self.device)
        positions = torch.arange(slots, device=self.device)
        read = torch.full((n,), self.start_id, device=self.device)
        read_slot = torch.full((n,), slots, device=self.device)
        cache = self.net.new_cache()
        for t in range(slots):
            slot = order[:, t]
            x = self.embed(read[:, None], read_slot[:, None], slot[:, None])
            h = self.net.hidden(x, positions[t:t + 1], cache)
            cache.length += 1
            if t < given:
                token = prompt.tokens[slot]
            else:
                token = decoding.next_token(self.slot_logits(h[:, 0], slot), generator)
            tokens[every, slot] = token
            read, read_slot = self.rows.ids(token, slot), slot
            progress.tick(t + 1, slots)
        return tokens, order
