"""Every family in two processes: the GAN's both players, and the noisy families'
draws, which equal one process's (genforge.draws)."""

from __future__ import annotations

import json

import pytest
import torch
from clitools import cli
from disttools import assert_same_weights, torchrun

import genforge
from genforge.io import load_tensors

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]


def test_nproc_trains_a_gan_in_two_processes_with_both_players_in_step(tmp_path):
    run = tmp_path / "gan"
    proc = cli("train", "--nproc", 2, "--family", "gan", "--data", "digits", "--out", run, "--steps", 4,
               "--batch-size", 8, "--quiet", "--set", "model.width=8", "--set", "model.latent_dim=8",
               "--set", "train.sample_every=0", "--set", "train.ckpt_every=2", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("trained gan for 4 steps") == 1
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 4
    state = load_tensors(run / "trainer_state.safetensors")
    assert any(k.startswith("opt/gen/") for k in state) and any(k.startswith("opt/disc/") for k in state)
    images = genforge.load(run, device="cpu").sample(4, seed=0)
    assert images.shape == (4, 1, 8, 8) and torch.isfinite(images).all()
    # both players equal one process accumulating the two processes' slices (BatchNorm: 8 items either way)
    one = tmp_path / "one"
    genforge.train("gan", "digits", one, steps=4, batch_size=8, grad_accum=2, progress=False,
                   overrides=["model.width=8", "model.latent_dim=8", "train.sample_every=0", "train.ckpt_every=2"])
    assert_same_weights(run, one, parameters_only=True)


@pytest.mark.parametrize("family, settings, accumulate", [
    ("diffusion", ["model.base_channels=8", "model.channel_mults=[1]", "model.attention_resolutions=[]"], False),
    ("vae", ["model.width=8", "model.latent_dim=4", "train.sync_batchnorm=true"], False),
])
def test_noisy_families_in_two_processes_equal_one(family, settings, accumulate, tmp_path):
    """Every process draws the whole batch's noise (timesteps, noise, label dropout, latents) and keeps its
    rows, so two processes train what one does with the combined batch: the diffusion model (GroupNorm:
    nothing depends on the batch size), and the VAE with train.sync_batchnorm (BatchNorm over all 8 items of
    the two processes, running statistics included; alone, the setting is plain BatchNorm over 8). BatchNorm
    per process, the default, is the GAN's test above."""
    two = tmp_path / "two"
    sets = [arg for o in [*settings, "train.sample_every=0"] for arg in ("--set", o)]
    proc = torchrun(2, "train", "--family", family, "--data", "digits", "--out", two, "--steps", 3, "--batch-size", 4,
                    "--quiet", *sets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = tmp_path / "one"
    options = dict(batch_size=4, grad_accum=2) if accumulate else dict(batch_size=8)
    genforge.train(family, "digits", one, steps=3, progress=False, overrides=[*settings, "train.sample_every=0"],
                   **options)
    assert_same_weights(two, one, parameters_only=accumulate)
