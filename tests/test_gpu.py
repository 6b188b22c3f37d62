"""CUDA checks: every family trains in bf16 and samples on the GPU, on images, code and tables. Run by benchmarks/gpu_check.sh."""

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


@pytest.mark.parametrize("family", ["diffusion", "gan", "vae", "transformer"])
def test_table_family_trains_in_bf16_and_samples_on_cuda(family, tmp_path):
    overrides = ["train.log_every=5", "train.sample_every=0", "data.numeric=quantile"]
    result = genforge.train(family=family, data="breast_cancer", out=tmp_path / "run", steps=20, progress=False,
                            overrides=overrides, device="cuda")
    assert result.step == 20 and result.bad_steps == 0
    model = genforge.load(tmp_path / "run", device="cuda")
    a = model.sample(50, seed=0, where="diagnosis=malignant")
    assert a.equals(model.sample(50, seed=0, where="diagnosis=malignant")) and set(a["diagnosis"]) == {"malignant"}


def test_compiled_training_matches_eager_loss_scale(tmp_path):
    result = genforge.train(family="transformer", data="pycode", out=tmp_path / "run", steps=30, progress=False,
                            overrides=["train.compile=true", "train.log_every=10", "train.sample_every=0"], device="cuda")
    assert result.step == 30 and result.last_losses["main/loss"] < 5.0


def test_diffusion_samplers_guidance_and_refinement_on_cuda(tmp_path):
    from genforge.sampling.diffusion import SAMPLERS

    genforge.train(family="diffusion", data="mnist", out=tmp_path / "run", steps=20, progress=False,
                   overrides=["train.sample_every=0"], device="cuda")
    model = genforge.load(tmp_path / "run", device="cuda")
    for sampler in SAMPLERS:
        images = model.sample(4, seed=0, sampler=sampler, steps=5, label=3, guidance=2.0)
        assert images.shape == (4, 1, 28, 28) and torch.isfinite(images).all() and images.abs().max() <= 1
    image = model.sample(1, seed=1, steps=5)
    mask = torch.zeros(1, 1, 28, 28, device=image.device)
    mask[..., 8:20, 8:20] = 1
    filled = model.inpaint(image, mask, n=2, seed=0, steps=5)
    assert torch.equal(filled[:, :, mask[0, 0] == 0], image.expand(2, -1, -1, -1)[:, :, mask[0, 0] == 0])
    assert torch.equal(model.img2img(image, 0.0, seed=0), image)
    nats = model.family.log_likelihood({"x": image}, samples=4)
    assert torch.isfinite(nats).all() and (nats > 0).all()


def test_gan_regularisers_resnet_and_latent_tools_on_cuda(tmp_path):
    overrides = ["train.sample_every=0", "model.backbone=resnet", "model.loss=hinge", "model.spectral_norm=true",
                 "model.r1_gamma=1", "model.r1_every=4", "model.augment=color,translation,cutout"]
    result = genforge.train(family="gan", data="mnist", out=tmp_path / "run", steps=20, progress=False,
                            overrides=overrides, device="cuda")
    assert result.bad_steps == 0
    model = genforge.load(tmp_path / "run", device="cuda")
    images = model.interpolate([1, 2, 3, 4], n=3, truncation=0.8)
    assert images.shape == (9, 1, 28, 28) and torch.isfinite(images).all()
    reconstruction, variations = model.variations(images[:1], n=2, steps=20, restarts=1)
    assert reconstruction.shape == (1, 1, 28, 28) and variations.shape == (2, 1, 28, 28)


def test_transformer_decodes_compiled_static_by_default_with_the_eager_tokens(monkeypatch):
    """fp32 without TF32, so the compiled step and eager attention differ by rounding only; bf16 need not
    pick the same tokens."""
    from torch._dynamo.utils import counters

    from genforge.data.spec import DataSpec
    from genforge.families.decode_path import DecodePath
    from genforge.families.transformer import Transformer, TransformerConfig
    from genforge.sampling.tokens import Decoding

    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    torch.manual_seed(0)
    config = TransformerConfig(n_layer=2, n_head=4, n_embd=64, **Transformer.model_defaults)
    model = Transformer(config, DataSpec("text", (32,), vocab_size=50)).cuda().eval()
    assert model.current_decode_path() == DecodePath(static=True, compiled=True)
    prompts = torch.randint(1, 50, (3, 5), generator=torch.Generator().manual_seed(0)).cuda()
    skips = counters["inductor"]["cudagraph_skips"]
    for decoding in (Decoding(temperature=0), Decoding(temperature=1.0, top_k=20, repetition_penalty=1.2)):
        for _ in range(2):  # the second call replays the graph recorded by the first, on the pooled cache
            compiled = model.generate(prompts, 48, torch.Generator("cuda").manual_seed(0), decoding)  # past 32
            model.decode_path = DecodePath()
            eager = model.generate(prompts, 48, torch.Generator("cuda").manual_seed(0), decoding)
            model.decode_path = None
            assert torch.equal(compiled, eager), decoding
    assert counters["inductor"]["cudagraph_skips"] == skips  # the step did run as a CUDA graph
