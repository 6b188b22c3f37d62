"""Memory for batch: gradient accumulation (equal to one larger batch) and activation checkpointing
(equal weights), for every family that has them."""

from __future__ import annotations

import json

import pytest
from disttools import TINY, assert_same_weights, make_corpus, overrides

import genforge
from genforge.io import load_tensors

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory)


def test_gradient_accumulation_equals_one_batch_k_times_larger(corpus, tmp_path):
    accumulated, whole = tmp_path / "accumulated", tmp_path / "whole"
    genforge.train("transformer", f"text:{corpus}", accumulated, steps=5, batch_size=2, grad_accum=4, progress=False,
                   overrides=overrides(TINY))
    genforge.train("transformer", f"text:{corpus}", whole, steps=5, batch_size=8, progress=False,
                   overrides=overrides(TINY))
    assert_same_weights(accumulated, whole)
    logged = [json.loads(line) for line in (accumulated / "metrics.jsonl").read_text().splitlines()]
    assert logged[0]["items_per_s"] > 0 and "main/loss" in logged[0]


@pytest.mark.parametrize("family, settings", [
    ("gan", ["model.width=8", "model.latent_dim=8"]),
    ("vae", ["model.width=8", "model.latent_dim=4"]),
    ("diffusion", ["model.base_channels=8", "model.channel_mults=[1]", "model.attention_resolutions=[]"]),
])
def test_every_family_accumulates_gradients(family, settings, tmp_path):
    """Each phase (both GAN players) steps once per step, after the micro-batches' gradients add up."""
    result = genforge.train(family, "digits", tmp_path / family, steps=3, batch_size=4, grad_accum=3, progress=False,
                            overrides=[*settings, "train.sample_every=0", "train.log_every=1"])
    assert result.step == 3 and result.bad_steps == 0
    records = [json.loads(line) for line in (tmp_path / family / "metrics.jsonl").read_text().splitlines()]
    names = {k.split("/")[0] for k in records[-1] if k.endswith("/loss")}
    assert names == ({"gen", "disc"} if family == "gan" else {"main"})
    state = load_tensors(tmp_path / family / "trainer_state.safetensors")
    for name in names:  # each optimizer took exactly one step per training step
        steps = [v for k, v in state.items() if k.startswith(f"opt/{name}/") and k.endswith("/step")]
        assert steps and all(float(s) == 3 for s in steps)


@pytest.mark.parametrize("family, data, settings", [
    ("transformer", "text", ["data.block_size=16", "model.n_layer=2", "model.n_embd=16", "model.n_head=2"]),
    ("diffusion", "digits", ["model.base_channels=8", "model.channel_mults=[1,2]", "model.attention_resolutions=[4]"]),
])
def test_activation_checkpointing_trains_the_same_weights(family, data, settings, corpus, tmp_path):
    source = f"text:{corpus}" if data == "text" else data
    common = [*settings, "train.sample_every=0"]
    plain = genforge.train(family, source, tmp_path / "plain", steps=3, batch_size=4, progress=False, overrides=common)
    saved = genforge.train(family, source, tmp_path / "ckpt", steps=3, batch_size=4, progress=False,
                           overrides=[*common, "train.activation_checkpointing=true"])
    assert plain.step == saved.step == 3
    assert_same_weights(tmp_path / "ckpt", tmp_path / "plain", atol=1e-6)
    model = genforge.load(tmp_path / "ckpt", device="cpu")  # sampling is unaffected (no gradients, no recompute)
    assert model.run.config.train.activation_checkpointing


def test_activation_checkpointing_is_refused_for_a_family_without_it(tmp_path):
    from genforge.errors import ConfigError

    with pytest.raises(ConfigError, match="train.activation_checkpointing applies to .*the gan family"):
        genforge.train("gan", "digits", tmp_path / "gan", steps=1, progress=False,
                       overrides=["train.activation_checkpointing=true"])
    assert not (tmp_path / "gan").exists()
