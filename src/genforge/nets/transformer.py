"""A GPT decoder: token embeddings, a stack of pre-norm blocks, a tied output head.

Read top-down like nanoGPT's ``model.py``: the model, then its blocks, then their parts, then the
key/value cache used for decoding. Three architecture options, each chosen in one place:

- ``pos``: ``"learned"`` adds a GPT-2 position table to the token embeddings; ``"rope"`` has no table and
  rotates each head's queries and keys by their position instead (RoFormer, LLaMA), so attention scores
  depend on how far apart two tokens are, not where they sit.
- ``norm``: ``"layernorm"`` (GPT-2) or ``"rmsnorm"`` (no mean subtraction, no bias; LLaMA).
- ``mlp``: ``"gelu"`` (4x wide, the exact erf GELU), ``"gelu_tanh"`` (the same with GELU's tanh approximation,
  which GPT-2's released checkpoints use) or ``"swiglu"`` (a gated SiLU unit, ``swiglu_hidden`` wide, LLaMA).

The defaults are GPT-2's; a model built with them has exactly the parameters and state-dict keys it
had before these options existed, so old weights still load. Attention goes through
``scaled_dot_product_attention`` so CUDA and MPS get their fused kernels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from torch import nn

POS_ENCODINGS = ("learned", "rope")
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu", "gelu_tanh")

Rotation = tuple[torch.Tensor, torch.Tensor]  # (cos, sin), each (T, head_dim)


class GPT(nn.Module):
    """Maps token ids (B, T) to next-token logits (B, T, vocab_size), for T <= block_size.

    The output head reuses the token embedding matrix (weight tying). It is applied with ``F.linear``
    rather than held by a second ``nn.Linear`` whose weight points at the same tensor: the state dict
    then has one entry for it, which safetensors requires (it refuses tensors that share memory).

    Incremental decoding: pass a cache from ``new_cache``. A call then runs only the new tokens, at
    positions ``cache.length`` onwards, attends to the keys and values cached before them, and advances
    ``cache.length`` by the number of tokens it ran.
    """

    checkpointing = False  # activation checkpointing in training: each block's activations recomputed in backward

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        n_layer: int,
        n_head: int,
        n_embd: int,
        dropout: float = 0.0,
        bias: bool = False,
        pos: str = "learned",
        norm: str = "layernorm",
        mlp: str = "gelu",
        rope_base: float = 10000.0,
    ):
        super().__init__()
        for name, value, choices in (("pos", pos, POS_ENCODINGS), ("norm", norm, NORMS), ("mlp", mlp, MLPS)):
            if value not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        self.vocab_size = vocab_size
        self.block_size = block_size
        self.n_layer = n_layer
        self.n_head = n_head
        self.head_dim = n_embd // n_head
        self.wte = nn.Embedding(vocab_size, n_embd)
        # Exactly one of the two position encodings exists; the other attribute is None.
        self.wpe = nn.Embedding(block_size, n_embd) if pos == "learned" else None
        self.rotary = RotaryEmbedding(self.head_dim, rope_base) if pos == "rope" else None
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout, bias, norm, mlp) for _ in range(n_layer))
        self.ln_f = make_norm(norm, n_embd, bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 init: N(0, 0.02) everywhere, zero biases, and residual output projections scaled by
        1/sqrt(2 * n_layer) so the residual stream's variance does not grow with depth (each block adds
        two of them to it). Norm gains stay at their own default of one."""
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

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; ``non_embedding`` leaves out the position table (as nanoGPT does). The token
        embedding stays in: it is also the output head, whose matmul costs what any weight's does."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and self.wpe is not None:
            n -= self.wpe.weight.numel()
        return n

    def new_cache(
        self,
        batch_size: int | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        static: bool = False,
    ) -> KVCache:
        """An empty cache for up to ``block_size`` tokens per row.

        Without ``batch_size`` its buffers are allocated by the first call that uses it, with that call's
        batch size, device and dtype (the autocast dtype under autocast). ``static=True`` makes every
        call attend over the whole preallocated buffer with a mask, so its shapes do not change from one
        decoding step to the next (what ``torch.compile`` and CUDA graphs want); the default attends over
        the filled part only, which costs less in eager mode. Both give the same logits.
        """
        cache = KVCache(self.n_layer, self.n_head, self.head_dim, self.block_size, static=static)
        if batch_size is not None:
            cache.allocate(batch_size, device or self.wte.weight.device, dtype or self.wte.weight.dtype)
        return cache

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        start = cache.length if cache is not None else 0
        T = idx.shape[1]
        if start + T > self.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds the context length {self.block_size}; crop it first")
        logits = self.logits(idx, torch.arange(start, start + T, device=idx.device), cache)
        if cache is not None:
            cache.length += T
        return logits

    def logits_with_past(
        self, idx: torch.Tensor, past: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoding with the keys and values passed in and out as tensors (``PastKV``), for exported graphs:
        the logits (B, T, vocab_size) of ``idx`` (B, T) that follow the P tokens whose keys and values are
        ``past`` (B, n_layer, 2, n_head, P, head_dim; None: P = 0), and ``present``, those of all P + T tokens
        in the same layout. Positions P .. P + T - 1 must stay below ``block_size`` (the caller crops)."""
        cache = PastKV(past)
        pos = torch.arange(idx.shape[1], device=idx.device) + cache.length
        return self.logits(idx, pos, cache), cache.present()

    def logits(self, idx: torch.Tensor, pos: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """The logits of tokens ``idx`` (B, T) that sit at positions ``pos`` (T,), without any Python-side
        bookkeeping: ``forward`` checks the length and advances ``cache.length`` around it.

        This is the part to ``torch.compile`` for decoding. With a static cache nothing in it depends on
        ``cache.length`` (the position arrives as a tensor), so one graph serves every step.
        """
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(pos)
        return F.linear(self.hidden(x, pos, cache), self.head_weight)

    def hidden(self, x: torch.Tensor, pos: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """The blocks and the final norm alone: input embeddings ``x`` (B, T, n_embd) at positions ``pos``
        (T,) -> hidden states (B, T, n_embd). For models that embed their inputs their own way or score only
        part of the vocabulary (table rows, ``families/table_transformer.py``); like ``logits`` it leaves
        ``cache.length`` to the caller."""
        rotation = self.rotary(pos) if self.rotary is not None else None
        x = self.drop(x)
        recompute = self.checkpointing and cache is None and torch.is_grad_enabled()
        for i, block in enumerate(self.blocks):
            if recompute:  # activation checkpointing: the block's activations are recomputed in backward
                x = checkpoint(block, x, pos, rotation, None, i, use_reentrant=False)
            else:
                x = block(x, pos, rotation, cache, i)
        return self.ln_f(x)


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool, norm: str, mlp: str):
        super().__init__()
        self.ln_1 = make_norm(norm, n_embd, bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.ln_2 = make_norm(norm, n_embd, bias)
        self.mlp = SwiGLU(n_embd, dropout, bias) if mlp == "swiglu" else MLP(n_embd, dropout, bias,
                                                                             tanh=mlp == "gelu_tanh")

    def forward(
        self,
        x: torch.Tensor,
        pos: torch.Tensor,
        rotation: Rotation | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), pos, rotation, cache, layer)
        return x + self.mlp(self.ln_2(x))


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention; ``pos`` holds the absolute positions of the rows of ``x``."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.dropout = dropout
        self.resid_drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        pos: torch.Tensor,
        rotation: Rotation | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if rotation is not None:
            # keys are cached already rotated: a key's rotation depends on its own position only
            q, k = apply_rotary(q, rotation), apply_rotary(k, rotation)
        mask: dict = {"is_causal": True}
        if cache is not None:
            k, v, mask = cache.update(layer, k, v, pos)
            k, v = k.to(q.dtype), v.to(q.dtype)  # a cache allocated in fp32, used under autocast
        # SDPA's dropout_p is not switched off by eval(); it must be zeroed outside training by hand
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, **mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_drop(self.proj(y))


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoFormer, Su et al. 2021): each pair of a head's channels (i, i + D/2)
    is rotated by the angle pos * base^(-2i/D).

    The dot product of a query rotated to position m and a key rotated to n then depends on m - n only,
    so the model learns relative offsets and has no position table. The frequencies are a buffer kept
    out of the state dict: they follow from ``head_dim`` and ``base``, which the config records.
    """

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head dimension, got {head_dim}")
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, pos: torch.Tensor) -> Rotation:
        """(cos, sin) of the angles at positions ``pos`` (T,), each (T, head_dim), in float32."""
        angles = pos.float()[:, None] * self.inv_freq[None, :]
        angles = torch.cat([angles, angles], dim=-1)
        return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, rotation: Rotation) -> torch.Tensor:
    """Rotate (B, heads, T, head_dim) queries or keys; computed in float32 so bf16 keeps the angles exact."""
    cos, sin = rotation
    x1, x2 = x.float().chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x.float() * cos + rotated * sin).to(x.dtype)


class MLP(nn.Module):
    """Position-wise feed-forward, 4x wide with GELU (GPT-2); ``tanh``: GELU's tanh approximation."""

    def __init__(self, n_embd: int, dropout: float, bias: bool, tanh: bool = False):
        super().__init__()
        self.fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.drop = nn.Dropout(dropout)
        self.approximate = "tanh" if tanh else "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x), approximate=self.approximate)))


def swiglu_hidden(n_embd: int) -> int:
    """SwiGLU's hidden width: 8/3 * n_embd rounded up to a multiple of 64.

    SwiGLU has three matrices where the GELU MLP has two, so 2/3 of the 4x width keeps the parameter
    count (3 * 8/3 = 2 * 4); rounding up to 64 keeps matmuls tensor-core friendly. The count is exact
    when 8/3 * n_embd is a multiple of 64 (n_embd = 192, 384, 768, ...), a little more otherwise.
    """
    return 64 * math.ceil(8 * n_embd / 3 / 64)


class SwiGLU(nn.Module):
    """Gated feed-forward (Shazeer 2020, "GLU variants improve Transformer"): proj(silu(x W) * (x V)).

    The gate and value matrices are one ``fc`` layer (one matmul), split in two after it.
    """

    def __init__(self, n_embd: int, dropout: float, bias: bool):
        super().__init__()
        hidden = swiglu_hidden(n_embd)
        self.fc = nn.Linear(n_embd, 2 * hidden, bias=bias)
        self.proj = nn.Linear(hidden, n_embd, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.fc(x).chunk(2, dim=-1)
        return self.drop(self.proj(F.silu(gate) * value))


def make_norm(kind: str, dim: int, bias: bool) -> nn.Module:
    """The normalisation every block uses. RMSNorm has no bias to switch on; LayerNorm's follows ``bias``."""
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=1e-5)
    return nn.LayerNorm(dim, bias=bias)


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


class KVCache:
    """Keys and values of the tokens seen so far, in one buffer preallocated for the whole context.

    ``kv`` is (n_layer, 2, batch, n_head, max_len, head_dim); a call writes its keys and values into the
    slots of its positions with ``index_copy_``, so nothing is reallocated or concatenated while
    decoding. ``length`` counts the filled slots (the model advances it after each call).

    ``static`` picks what attention reads: the whole buffer with a mask that hides slots at or after
    each query's position + 1 (shapes never change: compile-friendly), or the filled prefix
    ``[:length]`` (a view; less work in eager mode). Unfilled slots are never seen either way.
    """

    def __init__(self, n_layer: int, n_head: int, head_dim: int, max_len: int, static: bool = False):
        self.n_layer, self.n_head, self.head_dim, self.max_len = n_layer, n_head, head_dim, max_len
        self.static = static
        self.kv: torch.Tensor | None = None
        self.slots: torch.Tensor | None = None  # 0..max_len-1, for the static mask
        self.length = 0

    @property
    def batch_size(self) -> int | None:
        return None if self.kv is None else self.kv.shape[2]

    def allocate(self, batch_size: int, device: torch.device | str, dtype: torch.dtype) -> None:
        shape = (self.n_layer, 2, batch_size, self.n_head, self.max_len, self.head_dim)
        self.kv = torch.zeros(shape, device=device, dtype=dtype)
        self.slots = torch.arange(self.max_len, device=device)

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Store this call's (B, heads, T, head_dim) keys and values at positions ``pos`` (T,); return
        the keys and values attention should read and SDPA's mask arguments for them."""
        if self.kv is None:
            self.allocate(k.shape[0], k.device, k.dtype)
        if k.shape[0] != self.kv.shape[2]:
            raise ValueError(f"this cache holds {self.kv.shape[2]} rows; the call has {k.shape[0]}")
        keys, values = self.kv[layer, 0], self.kv[layer, 1]
        keys.index_copy_(2, pos, k.detach().to(keys.dtype))  # a decoding cache: no autograd history
        values.index_copy_(2, pos, v.detach().to(values.dtype))
        if self.static:
            return keys, values, {"attn_mask": self.slots[None, :] <= pos[:, None]}
        end = self.length + k.shape[2]
        return keys[:, :, :end], values[:, :, :end], causal_mask(k.shape[2], end, k.device)


class PastKV:
    """A key/value cache with no state between calls: the past comes in as one tensor and ``present`` goes out
    as one, (B, n_layer, 2, n_head, length, head_dim), batch first so a caller can drop or reorder rows.

    What an exported decoder needs: ``KVCache`` writes into a preallocated buffer and its eager mode picks the
    attention mask with Python branches on lengths, which a traced graph would freeze at the example's sizes.
    Here the keys are concatenated and the mask compares positions (a key at or before each query's position),
    so one graph serves every batch size, past length and number of new tokens.
    """

    def __init__(self, past: torch.Tensor | None):
        self.past = past
        self.layers: list[torch.Tensor] = []

    @property
    def length(self) -> int:
        """Tokens before this call's (P)."""
        return 0 if self.past is None else self.past.shape[4]

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """``KVCache.update``'s contract: this call's (B, heads, T, head_dim) keys and values at positions
        ``pos`` (T,) -> the keys and values of every token so far and SDPA's mask arguments for them."""
        if self.past is not None:
            k = torch.cat([self.past[:, layer, 0].to(k.dtype), k], dim=2)
            v = torch.cat([self.past[:, layer, 1].to(v.dtype), v], dim=2)
        self.layers.append(torch.stack([k, v], dim=1))
        keep = torch.arange(k.shape[2], device=k.device)[None, :] <= pos[:, None]
        return k, v, {"attn_mask": keep}

    def present(self) -> torch.Tensor:
        return torch.stack(self.layers, dim=1)


def flops_per_token(n_params: int, n_layer: int, n_head: int, head_dim: int, block_size: int) -> float:
    """Training FLOPs per token of a decoder: 6N + 12 L H Q T.

    ``n_params`` counts the weights every token multiplies by (position tables left out, a tied output
    head counted once): 2 FLOPs per weight forward, 4 backward. The second term is attention's own
    matmuls, q.k and att.v, over a context of T = block_size: 2 x 2 x L x H x Q x T forward, times 3
    with backward.
    """
    return 6.0 * n_params + 12.0 * n_layer * n_head * head_dim * block_size
