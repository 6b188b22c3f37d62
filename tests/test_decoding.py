"""Decoding controls (pure functions on hand-made distributions), generation with early stops, streaming
text through the Python API, and the `genforge sample` command's streaming and new options."""

from __future__ import annotations

from pathlib import Path

import pytest
from clitools import cli, run_main
import torch
import torch.nn.functional as F

import genforge
from genforge.data.spec import DataSpec
from genforge.errors import ConfigError
from genforge.families import decode_path
from genforge.families.decode_path import DecodePath
from genforge.families.transformer import END_OF_TEXT, Transformer, TransformerConfig
from genforge.sampling.tokens import (
    Decoding,
    apply_repetition_penalty,
    check_stops,
    first_stop,
    held_back,
    min_p_filter,
    next_token,
    process_logits,
    top_k_filter,
    top_p_filter,
)

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB = 11
BLOCK = 8
GREEDY = Decoding(temperature=0)


def kept(logits: torch.Tensor) -> list:
    """The ids a filter left in each row (finite logits), as sets."""
    return [set(torch.nonzero(row.isfinite()).flatten().tolist()) for row in logits.reshape(-1, logits.shape[-1])]


def log_probs(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64).log().float()


def tiny(block_size: int = BLOCK, vocab_size: int = VOCAB, seed: int = 0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    config = TransformerConfig(**{"n_layer": 2, "n_head": 2, "n_embd": 16, **overrides})
    return Transformer(config, DataSpec("text", (block_size,), vocab_size=vocab_size)).eval()


# ---- filters on hand-made distributions ----


def test_top_k_keeps_exactly_k_with_ties_and_everything_when_k_is_large():
    logits = torch.tensor([[1.0, 5.0, -2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 0.0, 2.0]])
    assert kept(top_k_filter(logits, 1))[0] == {1}
    assert kept(top_k_filter(logits, 3))[0] == {1, 3, 4}
    assert [len(s) for s in kept(top_k_filter(logits, 2))] == [2, 2]  # ties at the cut: still exactly k
    assert kept(top_k_filter(logits, 2))[1] <= {0, 1, 2, 4}
    assert torch.equal(top_k_filter(logits, 5), logits) and torch.equal(top_k_filter(logits, 50), logits)


# sorted by probability: id 1 (0.5), id 2 (0.25), id 0 (0.125), then ids 3 and 4 tied (0.0625)
NUCLEUS = [0.125, 0.5, 0.25, 0.0625, 0.0625]


@pytest.mark.parametrize(
    "p, expected",
    [
        (1e-9, {1}),  # a tiny p still keeps the most likely token
        (0.5, {1}),  # boundary: the top token's mass is exactly p, which reaches it
        (0.5001, {1, 2}),
        (0.75, {1, 2}),
        (0.7501, {0, 1, 2}),
        (0.875, {0, 1, 2}),
        (0.9, {0, 1, 2, 3}),  # tie at the cut: the lower id comes first, and only one is needed
        (0.9375, {0, 1, 2, 3}),
        (0.94, {0, 1, 2, 3, 4}),
        (1.0, {0, 1, 2, 3, 4}),
    ],
)
def test_top_p_keeps_the_smallest_set_whose_mass_reaches_p(p, expected):
    assert kept(top_p_filter(log_probs(NUCLEUS), p)) == [expected]


def test_top_p_is_batched_over_rows_and_keeps_the_kept_logits():
    logits = log_probs(NUCLEUS, [0.25, 0.25, 0.25, 0.25, 0.0], [0.05, 0.05, 0.1, 0.1, 0.7])
    out = top_p_filter(logits, 0.5)
    assert kept(out) == [{1}, {0, 1}, {4}]  # uniform ties: the lower ids
    assert torch.equal(out[out.isfinite()], logits[out.isfinite()])
    assert torch.equal(top_p_filter(logits, 1.0), logits)


def test_top_p_property_on_random_rows():
    """Kept mass reaches p; without the least likely kept token it does not (the set is the smallest)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 17, generator=g) * 2
    ps = torch.rand(200, generator=g).clamp(0.01, 0.99)
    for row, p in zip(logits, ps.tolist()):
        probs = torch.softmax(row.double(), -1)
        keep = top_p_filter(row[None], p)[0].isfinite()
        mass = probs[keep].sum()
        assert mass >= p - 1e-6
        assert mass - probs[keep].min() < p
        assert probs[keep].min() >= probs[~keep].max() if (~keep).any() else True


@pytest.mark.parametrize(
    "min_p, expected",
    [
        (0.0, {0, 1, 2, 3, 4}),  # keeps everything, even the 0.05 token
        (0.1, {0, 1, 2, 3, 4}),  # 0.05 / 0.4 = 0.125 >= 0.1
        (0.125, {0, 1, 2, 3, 4}),  # boundary: a ratio equal to min_p is kept
        (0.13, {0, 1, 3}),
        (0.5, {0, 1, 3}),  # 0.2 / 0.4 = 0.5: kept
        (0.5001, {0, 3}),
        (0.75, {0, 3}),
        (0.76, {0}),
        (1.0, {0}),
    ],
)
def test_min_p_keeps_tokens_at_least_min_p_times_the_top_probability(min_p, expected):
    logits = log_probs([0.4, 0.2, 0.05, 0.3, 0.05])
    assert kept(min_p_filter(logits, min_p)) == [expected]


def test_min_p_keeps_ties_of_the_maximum_and_is_batched():
    logits = torch.tensor([[1.0, 1.0, 0.0], [0.0, 3.0, 3.0]])
    assert kept(min_p_filter(logits, 1.0)) == [{0, 1}, {1, 2}]
    assert torch.equal(min_p_filter(logits, 0.0), logits)


def test_filters_never_leave_an_empty_row():
    logits = torch.randn(50, 9, generator=torch.Generator().manual_seed(1))
    for out in (top_p_filter(logits, 1e-12), min_p_filter(logits, 1.0), top_k_filter(logits, 1)):
        assert bool(out.isfinite().any(-1).all())
        assert torch.equal(out.argmax(-1), logits.argmax(-1))


# ---- repetition penalty, temperature, order ----


def test_repetition_penalty_follows_the_ctrl_formula():
    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0, 1.0, 0.0], [2.0, -1.0, 0.5, -3.0, 1.0, 0.0]])
    seen = torch.tensor([[0, 1, 1, 5], [3, 3, 3, 3]])  # repeats count once; the prompt is part of `seen`
    out = apply_repetition_penalty(logits, seen, 2.0)
    assert out.tolist() == [[1.0, -2.0, 0.5, -3.0, 1.0, 0.0], [2.0, -1.0, 0.5, -6.0, 1.0, 0.0]]
    rewarded = apply_repetition_penalty(logits[:1], seen[:1], 0.5)
    assert rewarded.tolist() == [[4.0, -0.5, 0.5, -3.0, 1.0, 0.0]]
    assert torch.equal(apply_repetition_penalty(logits, seen, 1.0), logits)


def test_repetition_penalty_matches_a_per_token_reference():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 13, generator=g) * 3
    seen = torch.randint(0, 13, (4, 9), generator=g)
    out = apply_repetition_penalty(logits, seen, 1.7)
    expected = logits.clone()
    for r in range(4):
        for tok in set(seen[r].tolist()):
            v = logits[r, tok]
            expected[r, tok] = v / 1.7 if v > 0 else v * 1.7
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_temperature_zero_is_the_argmax_of_the_penalised_logits():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(64, 20, generator=g)
    assert torch.equal(next_token(logits, temperature=0), logits.argmax(-1))
    # the filters cannot change the argmax, so they are ignored, but still checked
    assert torch.equal(next_token(logits, temperature=0, top_k=3, top_p=0.1, min_p=0.9), logits.argmax(-1))
    seen = logits.argmax(-1, keepdim=True)
    penalised = next_token(logits, temperature=0, repetition_penalty=1e6, seen=seen)
    assert not bool((penalised == seen[:, 0]).any())
    assert next_token(torch.tensor([[1.0, 3.0, 3.0]]), temperature=0).tolist() == [1]  # ties: lowest id


def test_order_is_penalty_then_temperature_then_filters():
    logits = torch.tensor([[3.0, 2.0, 0.0]])
    # top-p sees the tempered distribution: at T=1 the top token alone holds 0.67 >= 0.6; at T=5 it does not
    assert kept(process_logits(logits, 1.0, top_p=0.6)) == [{0}]
    assert kept(process_logits(logits, 5.0, top_p=0.6)) == [{0, 1}]
    # the penalty comes first: token 0 drops below token 1 before top-k picks one
    assert kept(process_logits(logits, 1.0, 1, repetition_penalty=2.0, seen=torch.tensor([[0]]))) == [{1}]
    # min-p after top-k: the ratio is to the largest remaining token
    out = process_logits(torch.tensor([[0.0, -0.1, -5.0, -5.0]]), 1.0, 3, min_p=0.5)
    assert kept(out) == [{0, 1}]
    torch.testing.assert_close(process_logits(logits, 2.0), logits / 2)


def test_draws_stay_in_the_kept_set_and_follow_the_renormalised_probabilities():
    logits = log_probs(NUCLEUS).expand(4000, -1)
    draws = next_token(logits, torch.Generator().manual_seed(0), 1.0, top_p=0.8)
    assert set(draws.unique().tolist()) == {0, 1, 2}
    freq = torch.bincount(draws, minlength=5)[[1, 2, 0]].float() / 4000
    torch.testing.assert_close(freq, torch.tensor([4.0, 2.0, 1.0]) / 7, atol=0.03, rtol=0)
    draws = next_token(log_probs([0.4, 0.2, 0.05, 0.3, 0.05]).expand(2000, -1), torch.Generator().manual_seed(1),
                       1.0, min_p=0.6)
    assert set(draws.unique().tolist()) == {0, 3}


BAD = [
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"top_k": 0}, "top_k"),
    ({"top_k": 1.5}, "top_k"),
    ({"top_p": 0}, "top_p"),
    ({"top_p": 1.01}, "top_p"),
    ({"top_p": float("nan")}, "top_p"),
    ({"min_p": -0.01}, "min_p"),
    ({"min_p": 1.5}, "min_p"),
    ({"repetition_penalty": 0}, "repetition_penalty"),
    ({"repetition_penalty": -2.0}, "repetition_penalty"),
    ({"repetition_penalty": float("inf")}, "repetition_penalty"),
]


@pytest.mark.parametrize("kwargs, name", BAD)
def test_bad_decoding_settings_are_one_line_config_errors(kwargs, name):
    with pytest.raises(ConfigError, match=name) as info:
        next_token(torch.zeros(1, 4), seen=torch.zeros(1, 1, dtype=torch.long), **kwargs)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=name):
        tiny().sample(1, torch.Generator().manual_seed(0), max_new_tokens=2, **kwargs)
    with pytest.raises(ConfigError, match=name):  # checked when the stream is made, not at its first step
        tiny().sample_stream(1, torch.Generator(), max_new_tokens=2, **kwargs)


def test_stop_string_helpers():
    assert check_stops(None) == () and check_stops("x") == ("x",) and check_stops(["a", "bc"]) == ("a", "bc")
    for bad in ("", [""], [1], 3):
        with pytest.raises(ConfigError, match="stop"):
            check_stops(bad)
    assert first_stop("abcdef", ("de", "b")) == 1 and first_stop("abc", ("x",)) == -1 and first_stop("abc", ()) == -1
    assert held_back("abc", ("cde",)) == 1 and held_back("abcd", ("cde",)) == 2 and held_back("abc", ("x",)) == 0
    assert held_back("ab\ufffd\ufffd", ()) == 2 and held_back("a", ("abc", "a!")) == 1


# ---- generation ----


def greedy_reference(model: Transformer, prompt: list[int], steps: int, penalty: float | None = None) -> list[int]:
    """Greedy decoding by rerunning the whole cropped context every step, no cache."""
    seq = list(prompt)
    for _ in range(steps):
        logits = model(torch.tensor([seq[-model.net.block_size :]]))[0, -1:].float()
        if penalty is not None:
            logits = apply_repetition_penalty(logits, torch.tensor([seq]), penalty)
        seq.append(int(logits.argmax()))
    return seq


@pytest.mark.parametrize("overrides", [{}, {"pos": "rope"}])
@pytest.mark.parametrize("penalty", [None, 1.3])
def test_greedy_with_the_kv_cache_equals_full_recomputation_past_the_context(overrides, penalty):
    model = tiny(**overrides)
    prompts = torch.tensor([[3, 1, 4], [1, 5, 9]])
    steps = 3 * BLOCK  # cached steps, then a sliding window
    out = model.generate(prompts, steps, None, Decoding(temperature=0, repetition_penalty=penalty))
    for row, prompt in zip(out.tolist(), prompts.tolist()):
        assert row == greedy_reference(model, prompt, steps, penalty)


def test_same_seed_same_batch_same_output_with_every_control():
    model = tiny()
    settings = dict(max_new_tokens=30, temperature=1.3, top_k=8, top_p=0.9, min_p=0.05, repetition_penalty=1.2)
    a = model.sample(5, torch.Generator().manual_seed(0), prompt=[1, 2], **settings)
    b = model.sample(5, torch.Generator().manual_seed(0), prompt=[1, 2], **settings)
    c = model.sample(5, torch.Generator().manual_seed(1), prompt=[1, 2], **settings)
    assert torch.equal(a, b) and not torch.equal(a, c)
    streamed = torch.stack(list(model.sample_stream(5, torch.Generator().manual_seed(0), prompt=[1, 2], **settings)), 1)
    assert torch.equal(streamed, a[:, 2:])


def successor_net(model: Transformer, successor: dict[int, int], calls: list | None = None):
    """A stand-in for the GPT: the next token is ``successor[last token]`` with near certainty."""
    table = torch.arange(model.net.vocab_size)
    for a, b in successor.items():
        table[a] = b

    def forward(idx: torch.Tensor, cache=None) -> torch.Tensor:
        if calls is not None:
            calls.append(idx.shape[1])
        return F.one_hot(table[idx], model.net.vocab_size).float() * 50

    return forward


def test_end_of_text_finishes_a_row_and_generation_ends_when_all_rows_have(monkeypatch):
    model = tiny()
    calls: list = []
    # 1 -> 2 -> ... -> 10 -> end-of-text -> 1: row [5] ends after 6 tokens, row [1] after 10
    monkeypatch.setattr(model.net, "forward", successor_net(model, {i: (i + 1) % VOCAB for i in range(VOCAB)}, calls))
    out = model.generate(torch.tensor([[5], [1]]), 40, None, GREEDY, stop_at_end=True)
    assert out.shape == (2, 41)
    assert out[0, :7].tolist() == [5, 6, 7, 8, 9, 10, 0] and out[1, :11].tolist() == list(range(1, 11)) + [0]
    assert bool((out[:, 11:] == END_OF_TEXT).all())
    assert len(calls) == 10  # the prompt, then one step per new token until the last row finished
    # without stop_at_end the rows run on past end-of-text to max_new_tokens
    assert model.generate(torch.tensor([[5]]), 12, None, GREEDY)[0].tolist() == [5, 6, 7, 8, 9, 10, 0, 1, 2, 3, 4, 5, 6]
    # an end-of-text token before any other new token is a document separator: it ends nothing
    out = model.generate(torch.tensor([[10]]), 5, None, GREEDY, stop_at_end=True)
    assert out[0].tolist() == [10, 0, 1, 2, 3, 4]


def test_should_stop_finishes_rows_and_later_columns_are_end_of_text(monkeypatch):
    model = tiny()
    monkeypatch.setattr(model.net, "forward", successor_net(model, {i: i % 10 + 1 for i in range(VOCAB)}))
    seen_shapes = []

    def should_stop(ids: torch.Tensor) -> torch.Tensor:
        seen_shapes.append(tuple(ids.shape))
        return (ids[:, 1:] == 7).any(-1)  # a row is done once it generated a 7

    columns = list(model.generate_stream(torch.tensor([[5], [2]]), 20, None, GREEDY, should_stop=should_stop))
    assert seen_shapes[0] == (2, 2) and len(columns) == 5  # row [2] reaches 7 at its 5th token
    assert torch.stack(columns, 1).tolist() == [[6, 7, 0, 0, 0], [3, 4, 5, 6, 7]]


# ---- decoding paths: the static cache and the compiled step give the dynamic cache's tokens ----

DYNAMIC = DecodePath()
EAGER_STATIC = DecodePath(static=True)
COMPILED = DecodePath(static=True, compiled=True)
# (decoding, generate's keywords): greedy; sampling with every control; sampling that ends rows early
PATH_SETTINGS = [
    (GREEDY, {}),
    (Decoding(temperature=1.3, top_k=8, top_p=0.9, repetition_penalty=1.3), {}),
    (Decoding(temperature=1.5), {"stop_at_end": True}),
]


def generate_on(model: Transformer, path: DecodePath, prompts: torch.Tensor, steps: int, decoding: Decoding,
                seed: int = 0, **kwargs) -> torch.Tensor:
    model.decode_path = path
    try:
        return model.generate(prompts, steps, torch.Generator().manual_seed(seed), decoding, **kwargs)
    finally:
        model.decode_path = None


def test_default_decode_path_is_eager_dynamic_on_cpu_compiled_static_on_cuda(monkeypatch):
    model = tiny()
    assert model.decode_path is None and model.current_decode_path() == DYNAMIC
    model.generate(torch.tensor([[1, 2]]), 3, None, GREEDY)
    assert model._static_decoder is None  # the default path never built the static path's state
    monkeypatch.setattr(decode_path, "has_triton", lambda: True)
    assert DecodePath.default_for("cuda") == COMPILED and DecodePath.default_for("cuda:1") == COMPILED
    assert DecodePath.default_for("cuda", sharded=True) == DYNAMIC  # the compiled step skips FSDP's hooks
    monkeypatch.setattr(decode_path, "has_triton", lambda: False)
    assert DecodePath.default_for("cuda") == DYNAMIC  # inductor compiles for CUDA with Triton only
    model.decode_path = EAGER_STATIC
    assert model.current_decode_path() is EAGER_STATIC
    with pytest.raises(ConfigError, match="static cache"):
        DecodePath(compiled=True)
    with pytest.raises(ConfigError, match="true or false"):
        DecodePath(static=1)


@pytest.mark.parametrize("overrides", [{}, {"pos": "rope", "norm": "rmsnorm", "mlp": "swiglu"}])
@pytest.mark.parametrize("prompt_len", [1, 3, BLOCK - 1, BLOCK, BLOCK + 3])
def test_static_cache_yields_the_dynamic_cache_tokens(overrides, prompt_len):
    model = tiny(**overrides)
    prompts = torch.randint(1, VOCAB, (3, prompt_len), generator=torch.Generator().manual_seed(prompt_len))
    steps = 2 * BLOCK  # cached steps, then the full-context fallback (from the first step for a full prompt)
    for decoding, kwargs in PATH_SETTINGS:
        dynamic = generate_on(model, DYNAMIC, prompts, steps, decoding, **kwargs)
        static = generate_on(model, EAGER_STATIC, prompts, steps, decoding, **kwargs)
        assert torch.equal(static, dynamic), (decoding, kwargs)
        if kwargs:
            assert bool((static[:, prompt_len:] == END_OF_TEXT).any())  # rows did end early


def test_static_caches_follow_batch_size_changes_and_are_never_shared_by_two_streams():
    model = tiny(pos="rope")
    prompts = torch.randint(1, VOCAB, (3, 4), generator=torch.Generator().manual_seed(0))
    decoding = Decoding(temperature=1.0, top_k=6)
    for n in (2, 3, 2, 1):  # each batch size its own cache, pooled between calls
        expected = generate_on(model, DYNAMIC, prompts[:n], 2 * BLOCK, decoding)
        assert torch.equal(generate_on(model, EAGER_STATIC, prompts[:n], 2 * BLOCK, decoding), expected)
    decoder = model.static_decoder()
    pooled = dict(decoder._caches)
    assert sorted(key[0] for key in pooled) == [1, 2, 3]
    generate_on(model, EAGER_STATIC, prompts[:2], 3, decoding)
    assert any(cache is pooled[key] for key, cache in decoder._caches.items() if key[0] == 2)  # reused, not new
    # two streams of the same batch size at once: each has its own cache, and stays what it is alone
    model.decode_path = EAGER_STATIC
    a = model.generate_stream(prompts[:2], 2 * BLOCK, torch.Generator().manual_seed(1), decoding)
    b = model.generate_stream(prompts[1:], 2 * BLOCK, torch.Generator().manual_seed(2), decoding)
    columns = [(next(a), next(b)) for _ in range(2 * BLOCK)]
    model.decode_path = None
    assert torch.equal(torch.stack([x for x, _ in columns], 1),
                       generate_on(model, DYNAMIC, prompts[:2], 2 * BLOCK, decoding, seed=1)[:, 4:])
    assert torch.equal(torch.stack([y for _, y in columns], 1),
                       generate_on(model, DYNAMIC, prompts[1:], 2 * BLOCK, decoding, seed=2)[:, 4:])


def test_static_decoder_stays_out_of_state_dicts_and_copies():
    import copy

    model = tiny()
    keys = set(model.state_dict())
    generate_on(model, EAGER_STATIC, torch.tensor([[1, 2]]), 4, GREEDY)
    assert model._static_decoder is not None and set(model.state_dict()) == keys
    clone = copy.deepcopy(model)  # as EMA's shadow is made: its decoder must be its own
    assert clone._static_decoder is None
    with torch.no_grad():
        clone.net.wte.weight.mul_(-1)
    assert clone.static_decoder() is not model.static_decoder() and clone.static_decoder().serves(clone.net)


def test_compiled_static_step_yields_the_eager_tokens_and_compiles_once(monkeypatch):
    """The graph capture (TorchDynamo, AOTAutograd) of the static step, with eager kernels: inductor's CPU code
    generation would take a minute of C++ compiling here (CUDA's runs in tests/test_gpu.py)."""
    from torch._dynamo.utils import counters

    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, mode=None, **kw: compile_(fn, backend="aot_eager", **kw))

    model = tiny(pos="rope", norm="rmsnorm", mlp="swiglu")
    prompts = torch.randint(1, VOCAB, (2, 3), generator=torch.Generator().manual_seed(0))
    sampled = Decoding(temperature=1.3, top_k=8, repetition_penalty=1.3)
    graphs = counters["stats"]["unique_graphs"]
    for decoding in (GREEDY, sampled):  # past the context: compiled steps, then the eager fallback
        expected = generate_on(model, DYNAMIC, prompts, 2 * BLOCK, decoding)
        assert torch.equal(generate_on(model, COMPILED, prompts, 2 * BLOCK, decoding), expected)
    # another prompt length (eager prefill) and a second stream at once (a new cache buffer): same graph
    expected = generate_on(model, DYNAMIC, prompts[:, :1], BLOCK, GREEDY)
    model.decode_path = COMPILED
    a = model.generate_stream(prompts[:, :1], BLOCK, None, GREEDY)
    b = model.generate_stream(prompts[:, :1], BLOCK, None, GREEDY)
    columns = [(next(a), next(b)) for _ in range(BLOCK)]
    model.decode_path = None
    for i in range(2):
        assert torch.equal(torch.stack([c[i] for c in columns], 1), expected[:, 1:])
    assert counters["stats"]["unique_graphs"] - graphs == 1  # one graph for this batch size, built once
    compiled = model.static_decoder().compiled_logits(torch.device("cpu"))
    assert model.static_decoder().compiled_logits(torch.device("cpu")) is compiled


# ---- the Python API: stop strings and streaming on a real (tiny) run ----

CORPUS = "abcdefgh\n" * 60


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("decoding")
    (folder / "corpus.txt").write_text(CORPUS, encoding="utf-8")
    out = folder / "run"
    genforge.train(family="transformer", data=f"text:{folder / 'corpus.txt'}", out=out, steps=30, progress=False,
                   overrides=["data.block_size=16", "model.n_layer=1", "model.n_head=2", "model.n_embd=32",
                              "train.sample_every=0", "train.log_every=10"], device="cpu", lr=1e-2)
    return out


@pytest.fixture
def cycling(text_run, monkeypatch):
    """The run with its net replaced by a -> b -> ... -> h -> newline -> a (end-of-text -> a)."""
    model = genforge.load(text_run, device="cpu")
    ids = model.tokenizer.encode("abcdefgh\n")
    successor = {a: b for a, b in zip(ids, ids[1:] + ids[:1])} | {model.tokenizer.eot_id: ids[0]}
    calls: list = []
    monkeypatch.setattr(model.family.net, "forward", successor_net(model.family, successor, calls))
    model.calls = calls
    return model


def test_stop_strings_cut_exactly_and_end_generation_early(cycling):
    model = cycling
    assert model.sample(1, prompt="b", max_new_tokens=12)[0] == "bcdefgh\nabcde"
    model.calls.clear()
    assert model.sample(2, prompt="b", max_new_tokens=40, stop=["fg"]) == ["bcde"] * 2
    assert len(model.calls) == 5  # prompt, then steps until "g" completed the stop string
    # the earliest of several stop strings wins; a stop string spanning tokens; one inside the prompt is ignored
    assert model.sample(1, prompt="b", max_new_tokens=40, stop=["\na", "d"])[0] == "bc"
    assert model.sample(1, prompt="f", max_new_tokens=40, stop="h\nab")[0] == "fg"
    assert model.sample(1, prompt="ab", max_new_tokens=40, stop="ab")[0] == "abcdefgh\n"
    # a stop string that never comes: the full length
    assert model.sample(1, prompt="a", max_new_tokens=5, stop="zz")[0] == "abcdef"


def test_stream_pieces_appear_once_final_and_join_to_the_sample(cycling):
    model = cycling
    pieces = list(model.stream("f", max_new_tokens=40, stop="h\nab"))
    assert pieces == ["f", "g"]  # "h", then "h\n", then "h\na" were held back until the stop string completed
    pieces = list(model.stream("a", max_new_tokens=4))
    assert pieces == ["a", "b", "c", "d", "e"]
    pieces = list(model.stream("c", max_new_tokens=6, stop=["h\nx"]))  # held text is flushed at the end
    assert "".join(pieces) == "cdefgh\n" == model.sample(1, prompt="c", max_new_tokens=6, stop=["h\nx"])[0]
    assert pieces[-1] == "h\n"


class ByteTokenizer:
    """Id 0 is end-of-text, id b + 1 the byte b: a byte-level tokenizer at its simplest, whose partial
    output may end in the middle of a multi-byte character."""

    eot_id = 0
    vocab_size = 257

    def encode(self, text: str) -> list[int]:
        return [b + 1 for b in text.encode("utf-8")]

    def decode(self, ids) -> str:
        return bytes(int(i) - 1 for i in ids if int(i) != 0).decode("utf-8", errors="replace")


def test_stream_never_shows_half_a_multi_byte_character(monkeypatch):
    from genforge.models import TextModel as Model
    from genforge.data.codecs import TextCodec

    tokenizer = ByteTokenizer()
    family = tiny(block_size=16, vocab_size=tokenizer.vocab_size)
    chain = [0] + tokenizer.encode("aé€b") + [0]  # é is 2 bytes, € is 3; end-of-text after "b"
    monkeypatch.setattr(family.net, "forward", successor_net(family, dict(zip(chain, chain[1:]))))
    from pathlib import Path

    from genforge.config import RunConfig
    from genforge.runs import Run

    model = object.__new__(Model)  # a Model around a hand-made family and tokenizer, with an in-memory run
    model.run = Run(Path("hand-made"), RunConfig(family="transformer"), family.spec)
    model.family, model.tokenizer, model.codec = family, tokenizer, TextCodec(tokenizer)
    model.spec, model.device, model.amp_dtype = family.spec, torch.device("cpu"), None
    pieces = list(model.stream(max_new_tokens=20))
    assert pieces == ["a", "é", "€", "b"]
    assert "".join(pieces) == model.sample(1, max_new_tokens=20)[0] == "aé€b"
    assert list(model.stream(max_new_tokens=4)) == ["a", "é", "\ufffd"]  # cut mid-character: shown at the end


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streamed_text_equals_the_sampled_text_for_the_same_seed(text_run, seed):
    model = genforge.load(text_run, device="cpu")
    settings = dict(max_new_tokens=40, temperature=1.5, top_k=8, top_p=0.95, min_p=0.02, repetition_penalty=1.1)
    for stop in (None, ["e"], ["h\n", "ca"]):
        streamed = list(model.stream("ab", seed, stop=stop, **settings))
        assert streamed[0] == "ab"
        assert "".join(streamed) == model.sample(1, seed, "ab", stop=stop, **settings)[0]
        if stop:
            assert not any(s in "".join(streamed) for s in stop)
    texts = model.sample(3, seed, "ab", **settings)
    assert texts == model.sample(3, seed, "ab", **settings) and all(t.startswith("ab") for t in texts)


def test_api_bad_settings_are_config_errors_before_any_text(text_run):
    model = genforge.load(text_run, device="cpu")
    for kwargs, name in BAD + [({"stop": [""]}, "stop"), ({"max_new_tokens": -1}, "max_new_tokens"),
                               ({"label": 3}, "label")]:
        with pytest.raises(ConfigError, match=name):
            model.stream("ab", **kwargs)  # raised by the call itself, before the prompt is shown
        with pytest.raises(ConfigError, match=name):
            model.sample(2, prompt="ab", **kwargs)


# ---- the command line ----


def test_cli_streams_one_text_sample_and_writes_the_file(text_run, tmp_path):
    out = tmp_path / "one"
    proc = cli("sample", text_run, "-n", "1", "--prompt", "ab", "--max-new-tokens", "30", "--seed", "3",
               "--top-p", "0.9", "--min-p", "0.05", "--repetition-penalty", "1.2", "--stop", "h\n", "--stop", "zz",
               "--device", "cpu", "--out", out)
    assert proc.returncode == 0, proc.stderr
    text = (out / "000000.txt").read_text(encoding="utf-8")
    model = genforge.load(text_run, device="cpu")
    expected = model.sample(1, 3, "ab", max_new_tokens=30, top_p=0.9, min_p=0.05, repetition_penalty=1.2,
                            stop=["h\n", "zz"])[0]
    assert text == expected and text.startswith("ab") and "h\n" not in text
    assert proc.stdout.startswith("--- 000000.txt\n" + text + "\n")
    assert f"wrote 1 samples to {out}" in proc.stdout
    settings = (out / "settings.json").read_text()
    assert '"stop": [' in settings and '"top_p": 0.9' in settings

    many = tmp_path / "many"  # more than one text: printed once all are written (in this process: quicker)
    proc = run_main("sample", text_run, "-n", "2", "--prompt", "ab", "--max-new-tokens", "10", "--device", "cpu",
                    "--out", many)
    assert proc.returncode == 0, proc.stderr
    for name in ("000000.txt", "000001.txt"):
        assert f"--- {name}\n" + (many / name).read_text(encoding="utf-8") in proc.stdout


@pytest.mark.parametrize("option", [["--top-p", "0"], ["--stop", ""]])  # the others share the path (API tests)
def test_cli_bad_decoding_option_is_one_error_line(text_run, tmp_path, option):
    proc = run_main("sample", text_run, "-n", "1", *option, "--device", "cpu", "--out", tmp_path / "x")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert option[0].lstrip("-").replace("-", "_") in errors[0] or "stop" in errors[0]
    assert proc.stdout == "" and not (tmp_path / "x").exists()


def test_decoding_settings_are_checked_once_and_split_from_other_options():
    decoding, rest = Decoding.split({"temperature": None, "top_p": 0.9, "label": 3, "min_p": None}, temperature=0.8)
    assert decoding == Decoding(temperature=0.8, top_p=0.9) and rest == {"label": 3}
    assert not decoding.penalised and Decoding(repetition_penalty=1.2).penalised
    with pytest.raises(ConfigError, match="top_p must be a number in"):
        Decoding(top_p=1.5)
    with pytest.raises(ConfigError, match="does not accept label"):
        tiny().sample(1, torch.Generator(), max_new_tokens=2, label=3)
    logits = torch.randn(3, VOCAB, generator=torch.Generator().manual_seed(0))
    a = Decoding(temperature=0.7, top_k=4, min_p=0.1).next_token(logits, torch.Generator().manual_seed(1))
    b = next_token(logits, torch.Generator().manual_seed(1), 0.7, 4, min_p=0.1)
    assert torch.equal(a, b)


def test_a_tiny_temperature_or_penalty_draws_the_argmax_instead_of_failing():
    from genforge.sampling.tokens import next_token

    logits = torch.tensor([[1.0, 2.0, 0.5, float("-inf")], [-3e3, -1e3, -2e3, -4e3]])
    for temperature in (1e-300, 1e-40, 1e-30):
        generator = torch.Generator().manual_seed(0)
        assert next_token(logits, temperature=temperature, generator=generator).tolist() == [1, 1]
    seen = torch.tensor([[0], [3]])  # a near-zero penalty makes the seen token all but certain
    drawn = next_token(logits, temperature=0.5, repetition_penalty=1e-300, seen=seen, generator=torch.Generator())
    assert drawn.tolist() == [0, 3]
