"""How the Transformer family runs its GPT once per generated token: the decoding path.

Two switches, declared in one place (``DecodePath``):

- ``static``: the KV cache attends over its whole preallocated buffer under a mask
  (``KVCache(static=True)``), so every one-token step has the same shapes. Eager, this costs a little
  more than the dynamic cache (which attends to the filled prefix only); it is what compiling needs.
- ``compiled``: the one-token step, ``GPT.logits``, goes through ``torch.compile``. The prompt
  (prefill, any length up to the context) and the full-context fallback (the window recomputed
  without a cache) stay eager: they run once per call, and their shapes vary.

Both switches default to on when the model is on CUDA and off elsewhere (``DecodePath.default_for``):
on a CPU, decoding a small model is bound by the kernels themselves and compiling costs tens of
seconds. Every path gives the same tokens up to float rounding (compiled kernels may round
differently).

``StaticDecoder`` is what a family keeps between calls for the static path: the compiled function
(built once per model and compile mode) and static caches reused from call to call.
"""

from __future__ import annotations

import importlib.util
import weakref
from dataclasses import dataclass
from typing import Callable

import torch

from genforge.errors import ConfigError
from genforge.nets.transformer import GPT, KVCache

# Runs the next token(s) (B, T) through the net with a cache, advancing it; returns logits (B, T, vocab).
Step = Callable[[torch.Tensor, KVCache], torch.Tensor]


@dataclass(frozen=True)
class DecodePath:
    """Which decoding path generation takes (see the module docstring); set ``Transformer.decode_path``."""

    static: bool = False  # the static KV cache (fixed shapes, masked) instead of the dynamic one
    compiled: bool = False  # torch.compile the one-token step; needs the static cache

    def __post_init__(self) -> None:
        for name in ("static", "compiled"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"DecodePath.{name} must be true or false, got {getattr(self, name)!r}")
        if self.compiled and not self.static:
            # the dynamic cache changes shape every step: each step would be a new graph
            raise ConfigError("a compiled decoding step needs the static cache: DecodePath(static=True, compiled=True)")

    @classmethod
    def default_for(cls, device: torch.device | str, sharded: bool = False) -> "DecodePath":
        """Compiled static on CUDA, eager dynamic elsewhere.

        Two exceptions keep the eager dynamic path on CUDA: a net sharded by FSDP (the compiled step
        calls ``GPT.logits`` directly, past the hooks on the net's ``forward`` that gather its
        weights), and a PyTorch without Triton, which inductor needs to compile for CUDA (Windows
        builds, for one).
        """
        on = torch.device(device).type == "cuda" and not sharded and has_triton()
        return cls(static=on, compiled=on)

    def describe(self) -> str:
        if self.compiled:
            return "compiled static cache"
        return "eager static cache" if self.static else "eager dynamic cache"


def has_triton() -> bool:
    return importlib.util.find_spec("triton") is not None


def is_sharded(module: torch.nn.Module) -> bool:
    """Whether FSDP2 sharded ``module`` (``fully_shard`` makes its class a subclass of ``FSDPModule``)."""
    if not torch.distributed.is_available():
        return False
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def compile_mode(device: torch.device) -> str:
    """The ``torch.compile`` mode of the one-token step on ``device``.

    CUDA: "reduce-overhead", which replays the step as a CUDA graph. One token of a model this size is
    a few hundred small kernels whose launches, not their arithmetic, set the time; a graph launches
    them all at once, and that is most of what compiling decoding gains. "max-autotune-no-cudagraphs"
    keeps every launch and spends minutes benchmarking matmul kernels for each batch size. CUDA graphs
    ask two things, both met here: inputs that keep their address (the cache buffers are marked
    static and reused between calls) and no reading of a step's output after the next replay (the
    logits are cloned). Elsewhere CUDA graphs do not exist: the default mode.
    """
    return "reduce-overhead" if device.type == "cuda" else "default"


class StaticDecoder:
    """One model's static-path state: compiled steps and a pool of static caches.

    Kept on the family as a plain attribute (no state-dict entry). It serves the net it was built for
    only: a deep copy of the family (EMA's shadow) gets none (``__deepcopy__``), and ``serves`` turns
    away any other net, since the compiled function closes over this one's weights.

    Caches are pooled by (batch size, device, dtype) and taken out while a generation uses them, so
    two generations running at once never share one. Reusing a cache is what keeps CUDA graphs
    replaying: a new buffer address makes them record again. Stale slots need no clearing: the static
    mask hides every slot past the current position, and each slot is written before it is read.
    A new batch size allocates a cache and compiles the step once more (``dynamic=False``: each graph
    is specialised to its shapes; past PyTorch's recompile limit, 8 shapes by default, new sizes run
    eager). Only the last ``MAX_CACHES`` shapes keep a cache.
    """

    MAX_CACHES = 4

    def __init__(self, net: GPT):
        self._net = weakref.ref(net)
        self._compiled: dict[str, Callable] = {}  # compile mode -> torch.compile'd GPT.logits
        self._caches: dict[tuple, KVCache] = {}

    def __deepcopy__(self, memo: dict) -> None:
        return None

    def serves(self, net: GPT) -> bool:
        return self._net() is net

    @property
    def net(self) -> GPT:
        net = self._net()
        assert net is not None, "the net of a StaticDecoder is gone"
        return net

    def take_cache(self, batch_size: int, device: torch.device, compiled: bool) -> KVCache:
        """A static cache for ``batch_size`` rows, empty (``length`` 0), out of the pool or new."""
        key = (batch_size, device, cache_dtype(self.net, device))
        cache = self._caches.pop(key, None)
        if cache is None:
            cache = self.net.new_cache(batch_size, device=device, dtype=key[2], static=True)
        if compiled:  # (only then: importing torch._dynamo takes seconds)
            # inputs CUDA graphs may write in place, and need not copy in before each replay
            torch._dynamo.mark_static_address(cache.kv)
            torch._dynamo.mark_static_address(cache.slots)
        cache.length = 0
        return cache

    def give_back(self, cache: KVCache) -> None:
        key = (cache.batch_size, cache.kv.device, cache.kv.dtype)
        self._caches[key] = cache
        while len(self._caches) > self.MAX_CACHES:
            del self._caches[next(iter(self._caches))]  # the least recently returned

    def step(self, compiled: bool) -> Step:
        """The one-token step: the net itself (eager), or its compiled ``logits`` with the bookkeeping
        ``GPT.forward`` does around it."""
        if not compiled:
            return self.net
        compiled_logits = self.compiled_logits(self.net.wte.weight.device)

        def run(token: torch.Tensor, cache: KVCache) -> torch.Tensor:
            # the position as a device tensor made without a host-to-device copy (no sync per token)
            pos = torch.full((1,), cache.length, dtype=torch.long, device=token.device)
            # fresh strides: a column of the caller's (n, T) ids has T in its stride, which the graph is specialised to
            token = token.clone(memory_format=torch.contiguous_format)
            out = compiled_logits(token, pos, cache).clone()  # a CUDA graph's next replay overwrites its output
            cache.length += 1
            return out

        return run

    def compiled_logits(self, device: torch.device) -> Callable:
        """``torch.compile(net.logits)`` in ``device``'s mode, built on first use and kept."""
        mode = compile_mode(device)
        if mode not in self._compiled:
            self._compiled[mode] = torch.compile(self.net.logits, mode=mode, dynamic=False)
        return self._compiled[mode]


def cache_dtype(net: GPT, device: torch.device) -> torch.dtype:
    """The dtype of the keys the net makes on ``device`` now: autocast's when it is on, else the weights'
    (what a cache that allocates itself on first use would pick)."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return net.wte.weight.dtype
