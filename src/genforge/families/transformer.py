"""The autoregressive Transformer family: a GPT decoder over token ids, trained on next-token cross-entropy.

The context length is the data's (``spec.shape[0]``), the vocabulary the tokenizer's
(``spec.vocab_size``). Token id 0 is the end-of-text token that separates documents, so an unprompted
sample starts from it. Generation keeps keys and values in a cache while the sequence fits the
context, then crops the context to its last ``block_size`` tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F

from genforge.data.spec import DataSpec
from genforge.errors import ConfigError
from genforge.families.base import Family, OptimizerGroup, Phase, eval_mode
from genforge.nets.transformer import GPT
from genforge.sampling.tokens import check_decoding, next_token

END_OF_TEXT = 0  # the token id that separates documents


@dataclass
class TransformerConfig:
    # Sized for a character-level code corpus trained ~2.5 minutes on 2 CPU cores, i.e. a few hundred
    # steps: at that budget 3 layers of 128 beat 2 or 4 layers and a 192 width (fewer, slower steps).
    n_layer: int = 3
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0  # a few minutes of training sees each window about once: nothing to regularise
    bias: bool = False  # biases in linear layers and norms (GPT-2 had them; nanoGPT finds them unneeded)


class Transformer(Family):
    name = "transformer"
    Config = TransformerConfig
    modalities = ("text",)
    # A small model takes a high peak rate; lower it for much wider or deeper configs. 32 windows per
    # step learn more per token than 16; EMA stays off because a run of a few hundred
    # steps would average in its own early weights.
    train_defaults = {
        "lr": 6e-3,
        "batch_size": 32,
        "warmup_steps": 50,
        "betas": (0.9, 0.99),
        "weight_decay": 0.1,
        "ema_decay": 0.0,
    }

    def __init__(self, config: TransformerConfig, spec: DataSpec):
        super().__init__(config, spec)
        check_config(config, spec)
        self.net = GPT(
            vocab_size=spec.vocab_size,
            block_size=spec.shape[0],
            n_layer=config.n_layer,
            n_head=config.n_head,
            n_embd=config.n_embd,
            dropout=config.dropout,
            bias=config.bias,
        )

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.net(idx)

    def optimizer_groups(self) -> dict[str, OptimizerGroup]:
        """Decay the weight matrices, the tied token embedding included: it is also the output head,
        and decay keeps its logit scale in check (nanoGPT decays it too). Biases, norm gains and the
        position table are exempt: pulling them toward zero regularises nothing."""
        decay, no_decay = [], []
        for p in self.parameters():
            if not p.requires_grad:
                continue
            exempt = p.dim() < 2 or p is self.net.wpe.weight
            (no_decay if exempt else decay).append(p)
        return {"main": OptimizerGroup(params=decay, no_decay=no_decay)}

    def training_step(self, batch: dict[str, torch.Tensor]) -> Iterator[Phase]:
        logits = self.net(batch["x"])
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch["y"].flatten(), ignore_index=-1)
        yield "main", loss, {"ppl": loss.detach().exp()}

    @torch.no_grad()
    def log_likelihood(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-token negative log-likelihood in nats, (B, T), of ``batch["y"]`` given ``batch["x"]``
        (0 where ``y`` is -1, the id the loss ignores)."""
        with eval_mode(self):
            logits = self.net(batch["x"])
        return F.cross_entropy(logits.float().transpose(1, 2), batch["y"], reduction="none", ignore_index=-1)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        prompt: Sequence[int] | torch.Tensor | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.8,
        top_k: int | None = None,
        **conditions: Any,
    ) -> torch.Tensor:
        """``n`` continuations of ``prompt`` (token ids, shared by every row; None starts from the
        end-of-text token), as (n, len(prompt) + max_new_tokens) int64 ids including the prompt."""
        self.reject_conditions(self.name, conditions)
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError(f"number of samples must be a positive integer, got {n!r}")
        ids = self.prompt_ids([END_OF_TEXT] if prompt is None else prompt)
        if ids.dim() != 1:
            raise ConfigError(f"prompt must be a flat list of token ids, got shape {tuple(ids.shape)}")
        return self.generate(ids.expand(n, -1), max_new_tokens, generator, temperature, top_k)

    @torch.no_grad()
    def continue_(
        self,
        tokens: Sequence[int] | torch.Tensor,
        generator: torch.Generator | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.8,
        top_k: int | None = None,
    ) -> torch.Tensor:
        """Continue each row of ``tokens`` ((T,) or (n, T) ids); returns (n, T + max_new_tokens)."""
        ids = self.prompt_ids(tokens)
        if ids.dim() not in (1, 2):
            raise ConfigError(f"tokens must be (T,) or (n, T) ids, got shape {tuple(ids.shape)}")
        return self.generate(ids.view(-1, ids.shape[-1]), max_new_tokens, generator, temperature, top_k)

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
    ) -> torch.Tensor:
        """Append ``max_new_tokens`` ids to each row of ``idx`` (n, T); returns (n, T + max_new_tokens)."""
        check_decoding(temperature, top_k)
        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 0:
            raise ConfigError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
        n, prompt_len = idx.shape
        out = torch.empty(n, prompt_len + max_new_tokens, dtype=torch.long, device=idx.device)
        out[:, :prompt_len] = idx
        if max_new_tokens == 0:
            return out
        block = self.net.block_size
        with eval_mode(self):  # dropout would draw from the global RNG, not from `generator`
            cache = self.net.new_cache()
            logits = self.net(idx[:, -block:], cache)
            for t in range(prompt_len, prompt_len + max_new_tokens):
                out[:, t] = next_token(logits[:, -1], generator, temperature, top_k)
                if t + 1 == out.shape[1]:
                    break
                if cache is not None and cache.length < block:
                    logits = self.net(out[:, t : t + 1], cache)
                else:
                    # The context is full: every token now shifts to a new learned position, so cached
                    # keys and values no longer hold; recompute the window of the last `block` tokens.
                    cache = None
                    logits = self.net(out[:, t + 1 - block : t + 1])
        return out

    def prompt_ids(self, prompt: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Token ids as an int64 tensor on the model's device, checked against the vocabulary."""
        try:
            ids = torch.as_tensor(prompt, device=self.device)
        except (TypeError, ValueError, RuntimeError):
            raise ConfigError(f"prompt must be a list of token ids, got {type(prompt).__name__}") from None
        if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            raise ConfigError(f"prompt must hold integer token ids, got {ids.dtype}")
        if ids.numel() == 0 or ids.dim() == 0:
            raise ConfigError("prompt must hold at least one token id")
        if int(ids.min()) < 0 or int(ids.max()) >= self.net.vocab_size:
            raise ConfigError(f"prompt token ids must lie in [0, {self.net.vocab_size - 1}]")
        return ids.long()


def check_config(config: TransformerConfig, spec: DataSpec) -> None:
    if spec.vocab_size is None or spec.vocab_size < 2:
        raise ConfigError(f"transformer needs a vocabulary of at least 2 tokens, got vocab_size={spec.vocab_size}")
    if len(spec.shape) != 1 or spec.shape[0] < 1:
        raise ConfigError(f"transformer needs text data of shape (block_size,), got {tuple(spec.shape)}")
    for key in ("n_layer", "n_head", "n_embd"):
        value = getattr(config, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"model.{key} must be a positive integer, got {value!r}")
    if config.n_embd % config.n_head:
        raise ConfigError(f"model.n_embd ({config.n_embd}) must be divisible by model.n_head ({config.n_head})")
    if not isinstance(config.dropout, (int, float)) or not 0 <= config.dropout < 1:
        raise ConfigError(f"model.dropout must be in [0, 1), got {config.dropout!r}")
