"""The autoregressive Transformer family: GPT shapes, causality, learning, decoding and generation."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict

import pytest
import torch

from genforge.config import RunConfig
from genforge.data.spec import DataSpec
from genforge.errors import ConfigError
from genforge.families import get_family
from genforge.families.transformer import Transformer, TransformerConfig
from genforge.io import load_tensors, save_tensors
from genforge.nets.transformer import MLP, MLPS, NORMS, POS_ENCODINGS, RotaryEmbedding, SwiGLU, apply_rotary, swiglu_hidden
from genforge.runs import family_config
from genforge.sampling.tokens import next_token, scale_temperature, top_k_filter
from genforge.train.flops import flops_per_token, mfu, peak_flops

VOCAB = 11
BLOCK = 8


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(block_size: int = BLOCK, vocab_size: int = VOCAB, seed: int = 0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    config = TransformerConfig(**{"n_layer": 2, "n_head": 2, "n_embd": 16, **overrides})
    return Transformer(config, DataSpec("text", (block_size,), vocab_size=vocab_size)).eval()


def greedy_by_full_recompute(model: Transformer, prompt: list[int], steps: int) -> list[int]:
    """Reference decoding: rerun the whole cropped context every step, no cache."""
    seq = list(prompt)
    for _ in range(steps):
        context = torch.tensor([seq[-model.net.block_size :]])
        seq.append(int(model(context)[0, -1].argmax()))
    return seq


def test_registered_and_builds_from_spec():
    assert get_family("transformer") is Transformer
    model = tiny(block_size=12, vocab_size=23)
    assert model.net.block_size == 12 and model.net.vocab_size == 23
    with pytest.raises(ConfigError, match="modality|handle"):
        Transformer(TransformerConfig(), DataSpec("image", (1, 8, 8)))


@pytest.mark.parametrize(
    "overrides, spec, match",
    [
        ({"n_embd": 30, "n_head": 4}, DataSpec("text", (8,), vocab_size=5), "divisible"),
        ({"n_layer": 0}, DataSpec("text", (8,), vocab_size=5), "n_layer"),
        ({"dropout": 1.5}, DataSpec("text", (8,), vocab_size=5), "dropout"),
        ({}, DataSpec("text", (8,), vocab_size=None), "vocab"),
    ],
)
def test_bad_config_is_a_one_line_config_error(overrides, spec, match):
    with pytest.raises(ConfigError, match=match):
        Transformer(TransformerConfig(**{"n_layer": 1, "n_head": 2, "n_embd": 8, **overrides}), spec)


def test_logits_shape():
    model = tiny()
    idx = torch.randint(0, VOCAB, (3, BLOCK))
    assert model(idx).shape == (3, BLOCK, VOCAB)
    assert model(idx[:, :5]).shape == (3, 5, VOCAB)


def test_changing_a_future_token_never_changes_past_logits():
    model = tiny()
    idx = torch.randint(0, VOCAB, (2, BLOCK))
    before = model(idx)
    for t in range(BLOCK):
        changed = idx.clone()
        changed[:, t] = (changed[:, t] + 1) % VOCAB
        after = model(changed)
        torch.testing.assert_close(after[:, :t], before[:, :t])
        assert not torch.allclose(after[:, t], before[:, t])  # and the changed position does matter


def test_kv_cache_in_chunks_and_single_tokens_matches_a_full_forward():
    model = tiny()
    idx = torch.randint(0, VOCAB, (2, BLOCK))
    full = model(idx)
    cache = model.net.new_cache()
    pieces = [model.net(idx[:, :3], cache), model.net(idx[:, 3:6], cache)]  # prefill, then a chunk
    pieces += [model.net(idx[:, t : t + 1], cache) for t in range(6, BLOCK)]  # then one token at a time
    assert cache.length == BLOCK
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="context length"):
        model.net(idx[:, :1], cache)


def test_weight_tying_shares_one_parameter_and_saves_as_safetensors(tmp_path):
    model = tiny()
    assert model.net.head_weight is model.net.wte.weight
    assert model.net.head_weight.data_ptr() == model.net.wte.weight.data_ptr()
    # the head really is the embedding: logits are the final features against the embedding rows
    idx = torch.randint(0, VOCAB, (1, 4))
    with torch.no_grad():
        model.net.wte.weight[3].zero_()
        assert torch.all(model(idx)[..., 3] == 0)
    # one entry in the state dict, so safetensors (which refuses shared memory) can store it
    state = model.state_dict()
    assert sum(t.shape == (VOCAB, 16) for t in state.values()) == 1
    save_tensors(state, tmp_path / "model.safetensors")
    clone = tiny(seed=1)
    clone.load_state_dict(load_tensors(tmp_path / "model.safetensors"))
    torch.testing.assert_close(clone(idx), model(idx))


def test_gpt2_init_scales_residual_projections():
    torch.manual_seed(0)
    model = Transformer(TransformerConfig(n_layer=8, n_head=2, n_embd=64), DataSpec("text", (8,), vocab_size=VOCAB))
    block = model.net.blocks[0]
    assert block.attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.1)
    for proj in (block.attn.proj, block.mlp.proj):
        assert proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.1)


def test_optimizer_groups_decay_matrices_only():
    model = Transformer(TransformerConfig(n_layer=2, n_head=2, n_embd=16, bias=True), DataSpec("text", (8,), vocab_size=VOCAB))
    group = model.optimizer_groups()["main"]
    decay, no_decay = {id(p) for p in group.params}, {id(p) for p in group.no_decay}
    assert not decay & no_decay
    assert decay | no_decay == {id(p) for p in model.parameters()}
    assert all(p.dim() == 2 for p in group.params)
    assert id(model.net.wte.weight) in decay  # the tied embedding is the output head's matrix: decayed
    assert id(model.net.wpe.weight) in no_decay
    assert all(id(p) in no_decay for p in model.parameters() if p.dim() == 1)


def test_training_step_yields_one_main_phase_in_float32():
    model = tiny().train()
    x = torch.randint(0, VOCAB, (2, BLOCK))
    phases = list(model.training_step({"x": x, "y": x.roll(-1, 1)}))
    assert len(phases) == 1
    name, loss, logs = phases[0]
    assert name == "main" and loss.dtype == torch.float32 and loss.dim() == 0
    assert loss.item() == pytest.approx(math.log(VOCAB), abs=0.3)  # the init predicts ~uniformly
    assert logs["ppl"].item() == pytest.approx(loss.exp().item())
    assert not logs["ppl"].requires_grad


def test_overfits_a_tiny_fixed_batch():
    model = tiny(n_layer=2, n_embd=32).train()
    x = torch.randint(0, VOCAB, (4, BLOCK), generator=torch.Generator().manual_seed(0))
    batch = {"x": x, "y": x.roll(-1, 1)}
    group = model.optimizer_groups()["main"]
    opt = torch.optim.AdamW([{"params": group.params}, {"params": group.no_decay, "weight_decay": 0.0}], lr=1e-2)
    first = None
    for _ in range(60):
        _, loss, _ = next(model.training_step(batch))
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first == pytest.approx(math.log(VOCAB), abs=0.3)
    assert loss.item() < 0.1


def test_log_likelihood_is_per_token_nll():
    model = tiny()
    x = torch.randint(0, VOCAB, (3, BLOCK))
    batch = {"x": x, "y": x.roll(-1, 1)}
    nll = model.log_likelihood(batch)
    assert nll.shape == (3, BLOCK) and bool((nll > 0).all())
    _, loss, _ = next(model.training_step(batch))
    assert nll.mean().item() == pytest.approx(loss.item(), rel=1e-5)


# ---- token decoding ----


def test_top_k_keeps_exactly_the_k_largest_logits():
    logits = torch.tensor([[1.0, 5.0, -2.0, 3.0, 4.0, 0.0], [0.0, 0.0, 2.0, 0.0, 1.0, 0.0]])
    kept = top_k_filter(logits, 3)
    assert kept[0].isfinite().tolist() == [False, True, False, True, True, False]
    torch.testing.assert_close(kept[0, [1, 3, 4]], logits[0, [1, 3, 4]])
    # ties at the cut: still exactly k
    assert int(kept[1].isfinite().sum()) == 3 and kept[1, 2] == 2.0 and kept[1, 4] == 1.0
    assert torch.equal(top_k_filter(logits, 6), logits)
    assert torch.equal(top_k_filter(logits, 100), logits)
    # sampling after filtering never leaves the top k
    draws = torch.stack([next_token(logits[:1].expand(500, -1), torch.Generator().manual_seed(s), 1.0, 3) for s in range(3)])
    assert set(draws.unique().tolist()) <= {1, 3, 4}


def test_temperature_sharpens_and_flattens():
    logits = torch.tensor([2.0, 1.0, 0.0])
    p = torch.softmax(logits, -1)
    cold, hot = torch.softmax(scale_temperature(logits, 0.5), -1), torch.softmax(scale_temperature(logits, 2.0), -1)
    assert cold[0] > p[0] > hot[0]
    assert next_token(torch.tensor([[0.0, 3.0, 1.0]]), temperature=0).tolist() == [1]
    draws = next_token(logits.expand(4000, -1), torch.Generator().manual_seed(0), temperature=1.0)
    freq = torch.bincount(draws, minlength=3).float() / 4000
    torch.testing.assert_close(freq, p, atol=0.03, rtol=0)


@pytest.mark.parametrize("temperature, top_k", [(-1.0, None), (float("nan"), None), (1.0, 0), (1.0, 2.5)])
def test_bad_decoding_settings_are_config_errors(temperature, top_k):
    with pytest.raises(ConfigError):
        next_token(torch.zeros(1, 4), temperature=temperature, top_k=top_k)


# ---- generation ----


def test_sample_shape_prompt_and_default_start():
    model = tiny()
    g = torch.Generator().manual_seed(0)
    out = model.sample(3, g, max_new_tokens=5)
    assert out.shape == (3, 6) and out.dtype == torch.int64
    assert out[:, 0].tolist() == [0, 0, 0]  # unprompted samples start from end-of-text
    assert int(out.min()) >= 0 and int(out.max()) < VOCAB
    for prompt in ([4, 2, 7], torch.tensor([4, 2, 7])):
        out = model.sample(2, g, prompt=prompt, max_new_tokens=4)
        assert out.shape == (2, 7) and out[:, :3].tolist() == [[4, 2, 7]] * 2
    assert model.sample(2, g, prompt=[5], max_new_tokens=0).tolist() == [[5], [5]]


def test_sample_is_deterministic_per_seed_and_differs_across_seeds():
    model = tiny()

    def draw(seed):
        return model.sample(4, torch.Generator().manual_seed(seed), max_new_tokens=20, temperature=1.0)

    assert torch.equal(draw(0), draw(0))
    assert not torch.equal(draw(0), draw(1))


@pytest.mark.parametrize("settings", [{"temperature": 0}, {"temperature": 1.0, "top_k": 1}])
def test_greedy_generation_equals_full_recomputation_beyond_the_context(settings):
    model = tiny(block_size=BLOCK)
    prompt = [3, 1, 4]
    steps = 3 * BLOCK  # well past the context: cached steps, then cropped windows
    expected = greedy_by_full_recompute(model, prompt, steps)
    out = model.sample(2, torch.Generator().manual_seed(0), prompt=prompt, max_new_tokens=steps, **settings)
    assert out.shape == (2, len(prompt) + steps)
    assert out[0].tolist() == expected and out[1].tolist() == expected


def test_prompt_longer_than_the_context_is_cropped():
    model = tiny(block_size=BLOCK)
    prompt = [i % VOCAB for i in range(2 * BLOCK + 3)]
    out = model.sample(1, torch.Generator().manual_seed(0), prompt=prompt, max_new_tokens=5, temperature=0)
    assert out[0].tolist() == greedy_by_full_recompute(model, prompt, 5)


def test_continue_extends_each_row_and_restores_training_mode():
    model = tiny().train()
    rows = torch.tensor([[1, 2, 3], [4, 5, 6]])
    out = model.continue_(rows, torch.Generator().manual_seed(0), max_new_tokens=4, temperature=0)
    assert out.shape == (2, 7) and torch.equal(out[:, :3], rows)
    assert out[1].tolist() == greedy_by_full_recompute(model.eval(), [4, 5, 6], 4)
    model.train()
    model.sample(1, torch.Generator().manual_seed(0), max_new_tokens=2)
    assert model.training  # sampling switches to eval for dropout and back


def test_dropout_model_samples_deterministically_from_the_generator():
    model = tiny(dropout=0.5).train()
    a = model.sample(2, torch.Generator().manual_seed(7), max_new_tokens=10, temperature=1.0)
    b = model.sample(2, torch.Generator().manual_seed(7), max_new_tokens=10, temperature=1.0)
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"prompt": []},
        {"prompt": [VOCAB]},
        {"prompt": [-1]},
        {"prompt": [1.5]},
        {"prompt": [[1, 2]]},
        {"max_new_tokens": -1},
        {"temperature": -0.5},
        {"top_k": 0},
        {"label": 3},
    ],
)
def test_bad_sampling_arguments_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        tiny().sample(1, torch.Generator().manual_seed(0), **kwargs)


def test_unused_conditions_set_to_none_are_accepted():
    assert tiny().sample(1, torch.Generator().manual_seed(0), max_new_tokens=2, label=None).shape == (1, 3)


# ---- architecture options: positions, norms, MLPs ----

OPTION_SETS = list(itertools.product(POS_ENCODINGS, NORMS, MLPS))
# the state-dict keys of a 1-layer model as saved before the options existed: old weights must keep loading
LEGACY_KEYS = {"net.wte.weight", "net.wpe.weight", "net.ln_f.weight", "net.blocks.0.ln_1.weight",
               "net.blocks.0.attn.qkv.weight", "net.blocks.0.attn.proj.weight", "net.blocks.0.ln_2.weight",
               "net.blocks.0.mlp.fc.weight", "net.blocks.0.mlp.proj.weight"}


def option_id(options) -> str:
    return "-".join(options)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"pos": "alibi"}, "model.pos"),
        ({"norm": "batchnorm"}, "model.norm"),
        ({"mlp": "relu"}, "model.mlp"),
        ({"pos": "rope", "n_embd": 6, "n_head": 2}, "even head size"),
        ({"rope_base": 1}, "rope_base"),
    ],
)
def test_bad_architecture_options_are_one_line_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match) as info:
        Transformer(TransformerConfig(**{"n_layer": 1, "n_head": 2, "n_embd": 8, **overrides}), DataSpec("text", (8,), vocab_size=5))
    assert "\n" not in str(info.value)


def test_defaults_keep_the_old_architecture_and_its_state_dict_keys():
    """A run saved before the options existed has no pos/norm/mlp keys: it must rebuild as GPT-2."""
    config = family_config(RunConfig(family="transformer", model={"n_layer": 1, "n_head": 2, "n_embd": 16}))
    assert (config.pos, config.norm, config.mlp) == ("learned", "layernorm", "gelu")
    model = Transformer(config, DataSpec("text", (BLOCK,), vocab_size=VOCAB))
    assert set(model.state_dict()) == LEGACY_KEYS
    # the options round-trip through the run config, so a loaded run rebuilds what was trained
    modern = {"n_layer": 1, "n_head": 2, "n_embd": 16, "pos": "rope", "norm": "rmsnorm", "mlp": "swiglu", "rope_base": 500.0}
    assert asdict(family_config(RunConfig(family="transformer", model=modern))) == {**asdict(TransformerConfig()), **modern}


def test_rope_replaces_the_position_table_and_rmsnorm_has_no_bias():
    model = tiny(n_layer=1, pos="rope", norm="rmsnorm", mlp="swiglu", bias=True)
    keys = set(model.state_dict())
    assert model.net.wpe is None and not any("wpe" in k for k in keys)
    assert not any("inv_freq" in k for k in keys)  # derived from the config, not saved
    assert isinstance(model.net.ln_f, torch.nn.RMSNorm) and "net.ln_f.bias" not in keys
    assert "net.blocks.0.attn.qkv.bias" in keys  # linear layers still follow `bias`
    assert isinstance(tiny(norm="layernorm", bias=True).net.ln_f, torch.nn.LayerNorm)
    assert "net.ln_f.bias" in tiny(norm="layernorm", bias=True).state_dict()


def test_swiglu_width_rule_and_parameter_count_match_the_gelu_mlp():
    assert [swiglu_hidden(d) for d in (16, 128, 192, 768)] == [64, 384, 512, 2048]  # 8/3 d, up to a multiple of 64
    for n_embd in (128, 192):
        spec = DataSpec("text", (64,), vocab_size=256)
        counts = {mlp: sum(p.numel() for p in Transformer(TransformerConfig(n_layer=2, n_head=4, n_embd=n_embd, mlp=mlp), spec).parameters())
                  for mlp in MLPS}
        assert counts["swiglu"] == pytest.approx(counts["gelu"], rel=0.10), n_embd
    # exact where 8/3 * n_embd is already a multiple of 64
    assert sum(p.numel() for p in SwiGLU(192, 0.0, False).parameters()) == sum(p.numel() for p in MLP(192, 0.0, False).parameters())


@pytest.mark.parametrize("mlp", MLPS)
@pytest.mark.parametrize("norm", NORMS)
def test_scaled_init_for_every_option(mlp, norm):
    torch.manual_seed(0)
    config = TransformerConfig(n_layer=8, n_head=2, n_embd=64, mlp=mlp, norm=norm, pos="rope")
    model = Transformer(config, DataSpec("text", (8,), vocab_size=VOCAB))
    block = model.net.blocks[0]
    assert block.attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert block.mlp.fc.weight.std().item() == pytest.approx(0.02, rel=0.1)
    for proj in (block.attn.proj, block.mlp.proj):
        assert proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.1)
    assert torch.equal(block.ln_1.weight, torch.ones(64))


def test_rope_scores_depend_only_on_the_position_difference():
    head_dim = 16
    rotary = RotaryEmbedding(head_dim, base=10000.0)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 1, 1, 1, head_dim, generator=g).unbind(0)  # (B, heads, T, head_dim) each

    def score(m: int, n: int) -> torch.Tensor:
        qm = apply_rotary(q, rotary(torch.tensor([m])))
        kn = apply_rotary(k, rotary(torch.tensor([n])))
        return (qm * kn).sum()

    for m, n in [(0, 0), (5, 2), (3, 9), (17, 4)]:
        for shift in (1, 7, 100):
            torch.testing.assert_close(score(m + shift, n + shift), score(m, n), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(score(5, 2), score(5, 3))  # and the difference itself does matter
    torch.testing.assert_close(apply_rotary(q, rotary(torch.tensor([0]))), q)  # position 0 is no rotation
    torch.testing.assert_close(apply_rotary(q, rotary(torch.tensor([9]))).norm(), q.norm())  # rotations keep norms


@pytest.mark.parametrize("static", [False, True], ids=["prefix", "static"])
@pytest.mark.parametrize("options", OPTION_SETS, ids=option_id)
def test_cached_greedy_decoding_equals_full_recompute_at_every_step(options, static):
    pos, norm, mlp = options
    model = tiny(block_size=12, pos=pos, norm=norm, mlp=mlp, bias=True)
    seq = torch.tensor([[3, 1, 4], [1, 5, 9]])
    cache = model.net.new_cache(static=static)
    with torch.no_grad():
        logits = model.net(seq, cache)[:, -1]
        while True:
            torch.testing.assert_close(logits, model.net(seq)[:, -1], atol=1e-5, rtol=0)
            if seq.shape[1] == 12:
                break
            seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], dim=1)
            logits = model.net(seq[:, -1:], cache)[:, -1]
    assert cache.length == 12


@pytest.mark.parametrize("options", OPTION_SETS, ids=option_id)
def test_overfits_a_tiny_fixed_batch_with_every_option_set(options):
    pos, norm, mlp = options
    model = tiny(n_layer=2, n_embd=32, pos=pos, norm=norm, mlp=mlp).train()
    x = torch.randint(0, VOCAB, (4, BLOCK), generator=torch.Generator().manual_seed(0))
    batch = {"x": x, "y": x.roll(-1, 1)}
    group = model.optimizer_groups()["main"]
    opt = torch.optim.AdamW([{"params": group.params}, {"params": group.no_decay, "weight_decay": 0.0}], lr=1e-2)
    for _ in range(100):
        _, loss, _ = next(model.training_step(batch))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1


def test_preallocated_cache_writes_in_place_and_static_mode_keeps_its_shapes():
    model = tiny(pos="rope")
    cache = model.net.new_cache(2, static=True)
    buffer = cache.kv
    assert buffer.shape == (2, 2, 2, 2, BLOCK, 8)  # (n_layer, k/v, batch, heads, block_size, head_dim)
    seen = []
    original = cache.update

    def spy(layer, k, v, pos):
        keys, values, mask = original(layer, k, v, pos)
        seen.append((tuple(keys.shape), tuple(mask["attn_mask"].shape)))
        return keys, values, mask

    cache.update = spy
    with torch.no_grad():
        model.net(torch.tensor([[1, 2, 3], [4, 5, 6]]), cache)
        for t in range(3):
            model.net(torch.tensor([[t], [t]]), cache)
    assert cache.kv is buffer and cache.length == 6  # no reallocation while decoding
    assert {s for s, _ in seen[2:]} == {(2, 2, BLOCK, 8)} and {m for _, m in seen[2:]} == {(1, BLOCK)}
    with pytest.raises(ValueError, match="rows"):
        model.net(torch.tensor([[1], [2], [3]]), cache)


def test_static_decode_step_reads_the_position_tensor_not_cache_length():
    """What lets torch.compile reuse one graph for every step: GPT.logits with a static cache depends on
    the positions it is given, never on the Python int cache.length (which forward advances outside it)."""
    model = tiny(pos="rope", norm="rmsnorm", mlp="swiglu")
    prompt, token = torch.tensor([[1, 2, 3]]), torch.tensor([[4]])
    with torch.no_grad():
        cache = model.net.new_cache(1, static=True)
        model.net(prompt, cache)
        cache.length = 0  # a wrong count must not matter to logits()
        logits = model.net.logits(token, torch.tensor([3]), cache)
        torch.testing.assert_close(logits[:, -1], model.net(torch.cat([prompt, token], 1))[:, -1], atol=1e-5, rtol=0)


def test_model_defaults_are_the_modern_options():
    assert Transformer.model_defaults == {"pos": "rope", "norm": "rmsnorm", "mlp": "swiglu", "code_stop": "auto"}
    Transformer(TransformerConfig(**Transformer.model_defaults), DataSpec("text", (BLOCK,), vocab_size=VOCAB))


def test_new_runs_start_from_model_defaults(tmp_path):
    from genforge.api import make_config

    text = tmp_path / "some.txt"  # the family's class depends on the kind of data: the source is read for it
    text.write_text("hello")
    config = make_config("transformer", f"text:{text}")
    assert {k: config.model[k] for k in Transformer.model_defaults} == Transformer.model_defaults
    overridden = make_config("transformer", f"text:{text}", overrides=["model.pos=learned"])
    assert overridden.model["pos"] == "learned"


def test_attention_dropout_only_in_training():
    model = tiny(dropout=0.5, pos="rope")
    x = torch.randint(0, VOCAB, (2, BLOCK))
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


# ---- FLOPs and MFU ----


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA L4", 121e12),
        ("NVIDIA L40S", 362e12),
        ("NVIDIA GeForce RTX 4090", 165e12),
        ("nvidia h100 pcie", 756e12),
        ("Tesla T4", None),
        ("", None),
    ],
)
def test_peak_flops_table_matches_device_names(name, peak):
    assert peak_flops(name) == peak


def test_flops_per_token_is_6n_plus_attention():
    assert flops_per_token(1000, 2, 4, 16, 64) == 6 * 1000 + 12 * 2 * 4 * 16 * 64
    assert mfu(1000.0, 1e9, 1e13) == pytest.approx(0.1)
    model = Transformer(TransformerConfig(n_layer=2, n_head=4, n_embd=32), DataSpec("text", (64,), vocab_size=50))
    n = sum(p.numel() for p in model.parameters()) - 64 * 32  # the position table is not a matmul
    assert model.flops_per_token() == 6 * n + 12 * 2 * 4 * 8 * 64
    rope = Transformer(TransformerConfig(n_layer=2, n_head=4, n_embd=32, pos="rope"), DataSpec("text", (64,), vocab_size=50))
    assert rope.flops_per_token() == 6 * sum(p.numel() for p in rope.parameters()) + 12 * 2 * 4 * 8 * 64


def test_trainer_logs_no_mfu_on_cpu(tmp_path):
    import genforge

    text = tmp_path / "corpus.py"
    text.write_text("def add(a, b):\n    return a + b\n\n" * 20, encoding="utf-8")
    genforge.train(family="transformer", data=f"text:{text}", out=tmp_path / "run", steps=2, device="cpu",
                   overrides=["data.block_size=16", "model.n_layer=1", "model.n_embd=16", "model.n_head=2"],
                   batch_size=2, log_every=1, sample_every=0, ckpt_every=0, grid_size=1, progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all("items_per_s" in r and "mfu" not in r for r in records)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="MFU is logged on CUDA only")
def test_trainer_logs_mfu_on_a_known_gpu(tmp_path):
    import genforge

    if peak_flops(torch.cuda.get_device_name()) is None:
        pytest.skip(f"no peak FLOP/s known for {torch.cuda.get_device_name()}")
    text = tmp_path / "corpus.py"
    text.write_text("def add(a, b):\n    return a + b\n\n" * 200, encoding="utf-8")
    genforge.train(family="transformer", data=f"text:{text}", out=tmp_path / "run", steps=20, device="cuda",
                   overrides=["data.block_size=128"], log_every=10, sample_every=0, ckpt_every=0, grid_size=1,
                   progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(0 < r["mfu"] < 1 for r in records)
