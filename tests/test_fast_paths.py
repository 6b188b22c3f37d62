"""The GPU fast paths' switches: on by default only on CUDA, and with the same results where they can be
forced on a CPU (channels-last)."""

from __future__ import annotations

import pytest
import torch
from disttools import assert_same_weights

import genforge
from genforge.errors import ConfigError
from genforge.train.device import to_device, use_channels_last

pytestmark = pytest.mark.usefixtures("one_thread")

GAN = ["model.width=8", "model.latent_dim=8", "train.sample_every=0"]


def test_channels_last_is_on_by_default_only_on_cuda_and_can_be_forced():
    assert use_channels_last(torch.device("cuda"), "auto")
    assert not use_channels_last(torch.device("cpu"), "auto") and not use_channels_last(torch.device("mps"), "auto")
    assert use_channels_last(torch.device("cpu"), "channels_last")
    assert not use_channels_last(torch.device("cuda"), "contiguous")
    with pytest.raises(ConfigError, match="unknown train.memory_format 'nhwc'; expected one of: auto, channels_last, "):
        genforge.make_config("gan", "digits", overrides=["train.memory_format=nhwc"])


def test_to_device_keeps_values_and_lays_images_out_nhwc():
    images, labels = torch.randn(2, 3, 4, 5), torch.arange(2)
    moved = to_device(images, torch.device("cpu"), channels_last=True)
    assert torch.equal(moved, images) and moved.is_contiguous(memory_format=torch.channels_last)
    assert to_device(labels, torch.device("cpu"), channels_last=True).is_contiguous()


def test_a_gan_trains_the_same_weights_with_nhwc_convolutions(tmp_path):
    """channels-last changes the memory layout of the conv weights and the image batches, not the maths."""
    nchw = genforge.train("gan", "digits", tmp_path / "nchw", steps=3, batch_size=4, progress=False, overrides=GAN)
    nhwc = genforge.train("gan", "digits", tmp_path / "nhwc", steps=3, batch_size=4, progress=False,
                          overrides=[*GAN, "train.memory_format=channels_last"])
    assert nchw.step == nhwc.step == 3
    assert_same_weights(tmp_path / "nhwc", tmp_path / "nchw", atol=1e-5)
    genforge.train(out=tmp_path / "nhwc", resume=True, steps=4, progress=False)  # its checkpoint loads back
    assert genforge.load(tmp_path / "nhwc", device="cpu").sample(2, seed=0).shape == (2, 1, 8, 8)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_defaults_are_the_fast_paths(tmp_path):
    """On CUDA by default: bf16 autocast, TF32, fused AdamW, NHWC image batches and weights, pinned copies."""
    from genforge.modalities import prepare
    from genforge.train.trainer import Trainer

    config = genforge.make_config("gan", "digits", overrides=GAN, steps=2, device="cuda")
    prepared = prepare(config.data.source, config.data, progress=False)
    from genforge.runs import Run

    run = Run.create(tmp_path / "run", config, prepared.spec, prepared.tokenizer)
    trainer = Trainer(run, run.build_family(seed=0), prepared, progress=False)
    assert trainer.amp_dtype == torch.bfloat16 and trainer.channels_last
    assert torch.backends.cuda.matmul.allow_tf32
    assert all(opt.defaults.get("fused") for opt in trainer.optimizers.values())
    batch = trainer._batch()[0]
    assert batch["x"].is_cuda and batch["x"].is_contiguous(memory_format=torch.channels_last)
    conv = next(m for m in trainer.family.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert trainer.fit().step == 2
