"""The autoregressive Transformer family: a GPT decoder over token ids, trained on next-token cross-entropy.

The context length is the data's (``spec.shape[0]``), the vocabulary the tokenizer's
(``spec.vocab_size``). Token id 0 is the end-of-text token that separates documents, so an unprompted
sample starts from it. Generation keeps keys and values in a cache while the sequence fits the
context, then crops the context to its last ``block_size`` tokens. How each token runs (static cache,
compiled step) is the decoding path: ``Transformer.decode_path``, see ``families.decode_path``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from genforge import progress
from genforge.data.spec import DataSpec
from genforge.config import Range, check_choices, check_ranges
from genforge.errors import ConfigError
from genforge.families.capabilities import Plain, TextDecoding, TextSampling, declare
from genforge.families.base import Family, OptimizerGroup, Phase, eval_mode
from genforge.families.decode_path import DecodePath, StaticDecoder, Step, is_sharded
from genforge.nets.transformer import GPT, MLPS, NORMS, POS_ENCODINGS, KVCache
from genforge.sampling.code_stops import CODE_STOPS
from genforge.sampling.tokens import Decoding

END_OF_TEXT = 0  # the token id that separates documents in genforge's tokenizers (model.end_of_text)
DEFAULT_MAX_NEW_TOKENS = 256
# Called after each generation step with the (n, T + t) ids so far; returns which rows are finished.
StopCallback = Callable[[torch.Tensor], "torch.Tensor | Sequence[bool]"]


@dataclass
class TransformerConfig:
    # Sized for a character-level code corpus trained ~2.5 minutes on 2 CPU cores, i.e. a few hundred
    # steps: at that budget 3 layers of 128 beat 2 or 4 layers and a 192 width (fewer, slower steps).
    n_layer: int = 3
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0  # a few minutes of training sees each window about once: nothing to regularise
    bias: bool = False  # biases in linear layers and norms (GPT-2 had them; nanoGPT finds them unneeded)
    # Architecture options (see genforge.nets.transformer). These field defaults are GPT-2's because a
    # missing key must mean what it meant before the option existed: a config.yaml saved then rebuilds the
    # model its weights belong to. New runs get Transformer.model_defaults instead (rope, rmsnorm, swiglu).
    pos: str = "learned"  # "learned" position table | "rope" (rotary, relative positions, no table)
    norm: str = "layernorm"  # "layernorm" | "rmsnorm"
    mlp: str = "gelu"  # "gelu" (4x wide) | "swiglu" (8/3x wide, rounded up to a multiple of 64)
    rope_base: float = 10000.0  # RoPE's theta: the longest wavelength is 2*pi*rope_base positions
    # Sampling defaults, each also given per call (`genforge sample --temperature/--top-p/--code-stop`). As
    # above, a missing key means what it meant before: temperature 0.8, no nucleus filter, no code stop.
    temperature: float = 0.8
    top_p: float = 1.0  # 1 keeps every token
    code_stop: str = "off"  # Python samples ending at top-level boundaries: off | trim | block | auto (code_stops.py)
    # the token id that separates documents: genforge's tokenizers give it id 0; an imported model keeps its own
    # (GPT-2's is 50256). Samples start from it and end at it.
    end_of_text: int = END_OF_TEXT


class Transformer(Family):
    name = "transformer"
    Config = TransformerConfig
    accepts = ("tokens",)
    checkpointed_nets = ("net",)
    fsdp_units = ("net.blocks", "net")
    capabilities = declare(sample=TextSampling, stream=TextSampling, likelihood=Plain, infill=TextDecoding,
                           **{"continue": TextDecoding})
    exports = ("hf", "onnx")
    # What a new run's config.model starts from (as train_defaults does for config.train), recorded in its
    # config.yaml. On 400 KB of stdlib source, 150 steps at the default size, one CPU thread, these reached
    # a validation loss of 1.53 and 1.54 (two seeds) where learned/layernorm/gelu reached 2.01 and 2.04, at
    # about 0.85x the tokens/s; RoPE alone gave 1.65.
    # Python code samples end at top-level boundaries ("auto": for code data only; sampling/code_stops.py).
    model_defaults = {"pos": "rope", "norm": "rmsnorm", "mlp": "swiglu", "code_stop": "auto"}
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
    # How generation runs each token (families/decode_path.py). None: the default for the model's device,
    # compiled static cache on CUDA and eager dynamic cache elsewhere; set a DecodePath to choose.
    decode_path: DecodePath | None = None

    def __init__(self, config: TransformerConfig, spec: DataSpec):
        super().__init__(config, spec)
        check_config(config, spec)
        self._static_decoder: StaticDecoder | None = None  # built on the first static decoding
        self.net = GPT(
            vocab_size=spec.vocab_size,
            block_size=spec.shape[0],
            n_layer=config.n_layer,
            n_head=config.n_head,
            n_embd=config.n_embd,
            dropout=config.dropout,
            bias=config.bias,
            pos=config.pos,
            norm=config.norm,
            mlp=config.mlp,
            rope_base=float(config.rope_base),
        )

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.net(idx)

    def sampling_nets(self) -> list:
        """A decoder with a key/value cache (``GPT.logits_with_past``): "forward" runs a prompt, "step" the tokens
        after it, each returning the keys and values to continue from."""
        from genforge.families.sampling_nets import EXAMPLE_BATCH, sampling_net

        net, vocab, block = self.net, self.net.vocab_size, self.net.block_size
        ids = torch.arange(EXAMPLE_BATCH * 3, device=self.device).view(EXAMPLE_BATCH, 3) % vocab
        past = torch.randn(EXAMPLE_BATCH, net.n_layer, 2, net.n_head, 4, net.head_dim, device=self.device)
        cache = f"(B, {net.n_layer} layers, 2 (keys, values), {net.n_head} heads, length, {net.head_dim}) float32"
        scores = f"logits (B, T, {vocab}) float32, each position's next-token scores (before temperature)"
        facts = {"vocab_size": vocab, "end_of_text": self.config.end_of_text, "block_size": block, "cache_layout": cache,
                 "temperature": self.config.temperature, "top_p": self.config.top_p}
        tokens = {"input_ids": {1: "sequence"}, "logits": {1: "sequence"}}
        forward = sampling_net(
            "forward", net.logits_with_past, self, {"input_ids": ids}, ["logits", "present"],
            f"input_ids (B, T) int64 token ids below {vocab} -> {scores}, and present {cache}, the keys and values "
            f"of the T tokens; a sampler runs the prompt through it (an unprompted one starts from the end-of-text id "
            f"{self.config.end_of_text}), draws a token from the last position's logits and continues with step.",
            axes={**tokens, "present": {4: "sequence"}}, facts=facts)
        step = sampling_net(
            "step", net.logits_with_past, self, {"input_ids": ids, "past": past}, ["logits", "present"],
            f"input_ids (B, T) int64 new token ids and past {cache}, the keys and values of the P tokens before them "
            f"(forward's or step's present) -> {scores}, and present with P + T entries; positions stay below "
            f"{block}: past the context, crop to the last tokens and run forward again.",
            axes={**tokens, "past": {4: "past"}, "present": {4: "total"}}, facts=facts)
        return [forward, step]

    def optimizer_groups(self) -> dict[str, OptimizerGroup]:
        """Decay the weight matrices, the tied token embedding included: it is also the output head,
        and decay keeps its logit scale in check (nanoGPT decays it too). Biases, norm gains and the
        position table are exempt: pulling them toward zero regularises nothing."""
        decay, no_decay = [], []
        for p in self.parameters():
            if not p.requires_grad:
                continue
            exempt = p.dim() < 2 or (self.net.wpe is not None and p is self.net.wpe.weight)
            (no_decay if exempt else decay).append(p)
        return {"main": OptimizerGroup(params=decay, no_decay=no_decay)}

    def flops_per_token(self) -> float:
        """Training FLOPs per token (forward and backward), for the trainer's MFU (train/flops.py)."""
        from genforge.nets.transformer import flops_per_token

        net = self.net
        return flops_per_token(net.num_params(non_embedding=True), net.n_layer, net.n_head, net.head_dim, net.block_size)

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
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        *,
        stop_at_end: bool = False,
        should_stop: StopCallback | None = None,
        **options: Any,
    ) -> torch.Tensor:
        """``n`` continuations of ``prompt`` (token ids, shared by every row; None starts from the
        end-of-text token), as (n, len(prompt) + max_new_tokens) int64 ids including the prompt.

        ``options`` are the decoding controls (``sampling.tokens.Decoding``: temperature, top_k, top_p,
        min_p, repetition_penalty; temperature and top_p default to the run's ``model.temperature`` and
        ``model.top_p``); the two ways a row finishes early are ``generate_stream``'s.
        """
        decoding = self._decoding(options)
        return self.generate(self.start_ids(n, prompt), max_new_tokens, generator, decoding,
                             stop_at_end=stop_at_end, should_stop=should_stop)

    def sample_stream(
        self,
        n: int,
        generator: torch.Generator | None = None,
        prompt: Sequence[int] | torch.Tensor | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        *,
        stop_at_end: bool = False,
        should_stop: StopCallback | None = None,
        **options: Any,
    ) -> Iterator[torch.Tensor]:
        """``sample`` one step at a time: yields each new column of ids (n,) as soon as it is drawn.

        Same arguments, same generator draws: the columns stacked after the prompt are ``sample``'s
        output (up to its end-of-text padding when every row finished early).
        """
        decoding = self._decoding(options)
        return self.generate_stream(self.start_ids(n, prompt), max_new_tokens, generator, decoding,
                                    stop_at_end=stop_at_end, should_stop=should_stop)

    @torch.no_grad()
    def continue_(
        self,
        tokens: Sequence[int] | torch.Tensor,
        generator: torch.Generator | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        **options: Any,
    ) -> torch.Tensor:
        """Continue each row of ``tokens`` ((T,) or (n, T) ids); returns (n, T + max_new_tokens).

        ``options`` are ``sample``'s decoding controls.
        """
        ids = self.prompt_ids(tokens)
        if ids.dim() not in (1, 2):
            raise ConfigError(f"tokens must be (T,) or (n, T) ids, got shape {tuple(ids.shape)}")
        return self.generate(ids.view(-1, ids.shape[-1]), max_new_tokens, generator, self._decoding(options))

    def _decoding(self, options: dict[str, Any]) -> Decoding:
        """The decoding controls of a call: those given, then the run's own sampling defaults."""
        given = {k: v for k, v in options.items() if v is not None}
        decoding, rest = Decoding.split({"top_p": self.config.top_p, **given}, temperature=self.config.temperature)
        self.reject_conditions(self.name, rest)
        return decoding

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        generator: torch.Generator | None = None,
        decoding: Decoding | None = None,
        *,
        stop_at_end: bool = False,
        should_stop: StopCallback | None = None,
    ) -> torch.Tensor:
        """Append ``max_new_tokens`` ids to each row of ``idx`` (n, T); returns (n, T + max_new_tokens).

        Collects ``generate_stream`` (same arguments). When every row finished early, the columns never
        drawn are end-of-text, so the shape does not depend on the draws.
        """
        stream = self.generate_stream(idx, max_new_tokens, generator, decoding,
                                      stop_at_end=stop_at_end, should_stop=should_stop)
        n, prompt_len = idx.shape
        out = torch.full((n, prompt_len + max_new_tokens), self.config.end_of_text, dtype=torch.long, device=idx.device)
        out[:, :prompt_len] = idx
        for t, column in enumerate(stream, start=prompt_len):
            out[:, t] = column
        return out

    def generate_stream(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        generator: torch.Generator | None = None,
        decoding: Decoding | None = None,
        *,
        stop_at_end: bool = False,
        should_stop: StopCallback | None = None,
    ) -> Iterator[torch.Tensor]:
        """Generate after each row of ``idx`` (n, T), yielding each new column of ids (n,) as it is drawn.

        ``decoding`` (default: plain sampling at temperature 1) picks each token, drawing from
        ``generator`` only: repetition penalty over the whole row, prompt included; temperature, 0 =
        greedy; top-k, top-p, min-p (see ``sampling.tokens``).

        A row finishes early when ``stop_at_end`` is set and it draws the end-of-text token after at
        least one other new token (leading ones are document separators the text codec skips, so they
        end nothing), or when ``should_stop(ids)`` marks it: it gets the (n, T + t) ids so far after
        each step and returns (n,) booleans, so a layer that owns the tokenizer can stop rows on
        decoded text (stop strings). A finished row's later columns are end-of-text; the stream ends
        after ``max_new_tokens`` columns or as soon as every row has finished. Rows keep drawing from
        the generator after they finish, so a row's tokens never depend on when the others stopped.

        Arguments are checked here, before the first step; the work happens as the stream is read.
        """
        decoding = Decoding() if decoding is None else decoding
        if not isinstance(decoding, Decoding):
            raise ConfigError(f"decoding must be a genforge.sampling.tokens.Decoding, got {type(decoding).__name__}")
        NEW_TOKENS.check("max_new_tokens", max_new_tokens, integer=True)
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.shape[0] < 1 or idx.shape[1] < 1:
            raise ConfigError(f"idx must be an (n, T) tensor of token ids with n, T >= 1, got {getattr(idx, 'shape', idx)}")
        return self._stream(idx.long(), max_new_tokens, generator, decoding, stop_at_end, should_stop)

    def current_decode_path(self) -> DecodePath:
        """The path generation takes now: ``decode_path`` when set, else the default for the net's device."""
        if self.decode_path is not None:
            return self.decode_path
        device = self.net.wte.weight.device
        return DecodePath.default_for(device, sharded=device.type == "cuda" and is_sharded(self.net))

    @contextlib.contextmanager
    def _decode_with(self, n: int, device: torch.device) -> Iterator[tuple[KVCache, Step]]:
        """The cache and one-token step of the current decoding path for ``n`` rows. A static cache goes
        back to its pool however generation ends (a generator's ``close`` ends this block too)."""
        path = self.current_decode_path()
        if not path.static:
            yield self.net.new_cache(), self.net
            return
        decoder = self.static_decoder()
        cache = decoder.take_cache(n, device, path.compiled)
        try:
            yield cache, decoder.step(path.compiled)
        finally:
            decoder.give_back(cache)

    def static_decoder(self) -> StaticDecoder:
        """The static path's compiled step and caches, kept for this net (see ``StaticDecoder``)."""
        if self._static_decoder is None or not self._static_decoder.serves(self.net):
            self._static_decoder = StaticDecoder(self.net)
        return self._static_decoder

    @torch.no_grad()
    def _stream(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        generator: torch.Generator | None,
        decoding: Decoding,
        stop_at_end: bool,
        should_stop: StopCallback | None,
    ) -> Iterator[torch.Tensor]:
        n, prompt_len = idx.shape
        total = prompt_len + max_new_tokens
        out = torch.empty(n, total, dtype=torch.long, device=idx.device)  # every id so far, for the penalty
        out[:, :prompt_len] = idx
        finished = torch.zeros(n, dtype=torch.bool, device=idx.device)
        has_content = torch.zeros(n, dtype=torch.bool, device=idx.device)
        penalised = decoding.penalised
        end = self.config.end_of_text
        early_stop = stop_at_end or should_stop is not None
        if max_new_tokens == 0:
            return
        block = self.net.block_size
        # eval mode: dropout would draw from the global RNG, not from `generator`
        with eval_mode(self), self._decode_with(n, idx.device) as (cache, step):
            logits = self.net(idx[:, -block:], cache)  # the prompt, eager at any length: only `step` compiles
            for t in range(prompt_len, total):
                seen = out[:, :t] if penalised else None
                token = decoding.next_token(logits[:, -1], generator, seen=seen)
                token = token.masked_fill(finished, end)
                out[:, t] = token
                if stop_at_end:
                    finished |= (token == end) & has_content
                    has_content |= token != end
                if should_stop is not None:
                    finished |= torch.as_tensor(should_stop(out[:, : t + 1]), dtype=torch.bool, device=idx.device)
                progress.tick(t + 1 - prompt_len, max_new_tokens)  # a run ending early stops short of the total
                yield token
                if t + 1 == total or (early_stop and bool(finished.all())):
                    return
                if cache is not None and cache.length < block:
                    logits = step(out[:, t : t + 1], cache)
                else:
                    # The context is full: every token now shifts to a new position, so cached keys
                    # and values no longer hold; recompute the window of the last `block` tokens.
                    cache = None
                    logits = self.net(out[:, t + 1 - block : t + 1])

    def start_ids(self, n: int, prompt: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """The (n, T) ids ``sample`` starts from: ``prompt`` (None: the end-of-text token) in every row."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError(f"number of samples must be a positive integer, got {n!r}")
        ids = self.prompt_ids([self.config.end_of_text] if prompt is None else prompt)
        if ids.dim() != 1:
            raise ConfigError(f"prompt must be a flat list of token ids, got shape {tuple(ids.shape)}")
        return ids.expand(n, -1)

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


NEW_TOKENS = Range(0)
MODEL_CHOICES = {"pos": POS_ENCODINGS, "norm": NORMS, "mlp": MLPS, "code_stop": CODE_STOPS}
MODEL_RANGES = {"n_layer": Range(1), "n_head": Range(1), "n_embd": Range(1), "dropout": Range(0, 1, open_high=True),
                "rope_base": Range(1, open_low=True), "temperature": Range(0, hint="0 means greedy"),
                "top_p": Range(0, 1, open_low=True, hint="1 keeps every token")}


def check_config(config: TransformerConfig, spec: DataSpec) -> None:
    if spec.vocab_size is None or spec.vocab_size < 2:
        raise ConfigError(f"transformer needs a vocabulary of at least 2 tokens, got vocab_size={spec.vocab_size}")
    if len(spec.shape) != 1 or spec.shape[0] < 1:
        raise ConfigError(f"transformer needs text data of shape (block_size,), got {tuple(spec.shape)}")
    check_ranges(config, MODEL_RANGES, "model")
    check_choices(config, MODEL_CHOICES, "model.")
    if config.n_embd % config.n_head:
        raise ConfigError(f"model.n_embd ({config.n_embd}) must be divisible by model.n_head ({config.n_head})")
    if not 0 <= config.end_of_text < spec.vocab_size:
        raise ConfigError(f"model.end_of_text must be a token id below the vocabulary size {spec.vocab_size}, got "
                          f"{config.end_of_text}")
    if config.pos == "rope" and (config.n_embd // config.n_head) % 2:
        raise ConfigError(f"model.pos=rope needs an even head size, got n_embd/n_head = {config.n_embd // config.n_head}")
