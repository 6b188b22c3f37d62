"""A GPT decoder: token and position embeddings, a stack of pre-norm blocks, a tied output head.

Read top-down like nanoGPT's ``model.py``: the model, then its blocks, then their parts. Each part is
built in one place (``make_norm``, ``MLP``, the learned ``wpe`` table) so that RMSNorm, SwiGLU or rotary
positions can arrive later as options without reshaping the block. Attention goes through
``scaled_dot_product_attention`` so CUDA and MPS get their fused kernels.

Incremental decoding: ``GPT.forward`` takes an optional ``KVCache``. The keys and values of the tokens
already seen are kept per layer; a call then only runs the new tokens and its position embeddings start
at ``cache.length``. The cache interface (``length``, ``update``) is what a preallocated static cache
will implement too.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class GPT(nn.Module):
    """Maps token ids (B, T) to next-token logits (B, T, vocab_size), for T <= block_size.

    The output head reuses the token embedding matrix (weight tying). It is applied with ``F.linear``
    rather than held by a second ``nn.Linear`` whose weight points at the same tensor: the state dict
    then has one entry for it, which safetensors requires (it refuses tensors that share memory).
    """

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        n_layer: int,
        n_head: int,
        n_embd: int,
        dropout: float = 0.0,
        bias: bool = False,
    ):
        super().__init__()
        self.vocab_size = vocab_size
        self.block_size = block_size
        self.n_layer = n_layer
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout, bias) for _ in range(n_layer))
        self.ln_f = make_norm(n_embd, bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 init: N(0, 0.02) everywhere, zero biases, and residual output projections scaled by
        1/sqrt(2 * n_layer) so the residual stream's variance does not grow with depth."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            for proj in (block.attn.proj, block.mlp.proj):
                nn.init.normal_(proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * self.n_layer))

    @property
    def head_weight(self) -> nn.Parameter:
        """The output head's weight: the token embedding itself."""
        return self.wte.weight

    def new_cache(self) -> "KVCache":
        return KVCache(self.n_layer)

    def forward(self, idx: torch.Tensor, cache: "KVCache | None" = None) -> torch.Tensor:
        start = cache.length if cache is not None else 0
        T = idx.shape[1]
        if start + T > self.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds the context length {self.block_size}; crop it first")
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i)
        x = self.ln_f(x)
        return F.linear(x, self.head_weight)


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool):
        super().__init__()
        self.ln_1 = make_norm(n_embd, bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.ln_2 = make_norm(n_embd, bias)
        self.mlp = MLP(n_embd, dropout, bias)

    def forward(self, x: torch.Tensor, cache: "KVCache | None" = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.dropout = dropout
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cache: "KVCache | None" = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if cache is not None:
            k, v = cache.update(layer, k, v)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, **causal_mask(T, k.shape[2], x.device)
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_drop(self.proj(y))


def causal_mask(q_len: int, k_len: int, device: torch.device) -> dict:
    """SDPA's mask arguments for ``q_len`` new queries that sit at the end of ``k_len`` keys.

    ``is_causal`` aligns the mask top-left, which is right only when queries and keys are the same
    tokens; one new token may see every key; a chunk appended to a cache needs the bottom-right mask.
    """
    if q_len == k_len:
        return {"is_causal": True}
    if q_len == 1:
        return {}
    keep = torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(diagonal=k_len - q_len)
    return {"attn_mask": keep}


class MLP(nn.Module):
    """Position-wise feed-forward, 4x wide with GELU (a SwiGLU variant would slot in here)."""

    def __init__(self, n_embd: int, dropout: float, bias: bool):
        super().__init__()
        self.fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


def make_norm(dim: int, bias: bool) -> nn.Module:
    """The normalisation every block uses (the place an RMSNorm option would go)."""
    return nn.LayerNorm(dim, bias=bias)


class KVCache:
    """Keys and values of the tokens seen so far, per layer, grown by concatenation.

    Simple and allocation-heavy: fine for the short contexts here; a preallocated static cache with the
    same ``length``/``update`` interface can replace it.
    """

    def __init__(self, n_layer: int):
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer
        self.length = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this call's (B, heads, T, head_dim) keys and values; return all of them so far."""
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        if layer == len(self.keys) - 1:  # the last layer has seen this call's tokens: advance
            self.length = k.shape[2]
        return k, v
