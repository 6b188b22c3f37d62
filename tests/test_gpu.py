"""CUDA checks: every family trains in bf16 and samples on the GPU. Run by benchmarks/gpu_check.sh."""

from __future__ import annotations

import pytest
import torch

import genforge

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("family", ["diffusion", "gan", "vae", "transformer"])
def test_family_trains_in_bf16_and_samples_on_cuda(family, tmp_path):
    data = "pycode" if family == "transformer" else "mnist"
    result = genforge.train(family=family, data=data, out=tmp_path / "run", steps=20, progress=False,
                            overrides=["train.log_every=5", "train.sample_every=0"], device="cuda")
    assert result.step == 20 and result.bad_steps == 0
    model = genforge.load(tmp_path / "run", device="cuda")
    a = model.sample(4, seed=0, **({"max_new_tokens": 16} if family == "transformer" else {}))
    b = model.sample(4, seed=0, **({"max_new_tokens": 16} if family == "transformer" else {}))
    assert a == b if isinstance(a, list) else torch.equal(a, b)


def test_compiled_training_matches_eager_loss_scale(tmp_path):
    result = genforge.train(family="transformer", data="pycode", out=tmp_path / "run", steps=30, progress=False,
                            overrides=["train.compile=true", "train.log_every=10", "train.sample_every=0"], device="cuda")
    assert result.step == 30 and result.last_losses["main/loss"] < 5.0
