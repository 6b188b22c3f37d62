"""The autoregressive Transformer family: GPT shapes, causality, learning, decoding and generation."""

from __future__ import annotations

import math

import pytest
import torch

from genforge.data.spec import DataSpec
from genforge.errors import ConfigError
from genforge.families import get_family
from genforge.families.transformer import Transformer, TransformerConfig
from genforge.io import load_tensors, save_tensors
from genforge.sampling.tokens import next_token, scale_temperature, top_k_filter

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
