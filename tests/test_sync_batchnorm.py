"""`train.sync_batchnorm`: BatchNorm over the global batch of all processes. Alone (or in eval mode) the
module is exactly nn.BatchNorm; in two processes the GAN trains what one process with the combined batch
does, running statistics included (the per-slice default is tested in test_distributed_families.py)."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml
from disttools import assert_same_weights, torchrun
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import genforge
from genforge.config import RunConfig
from genforge.nets.conv import ConvDecoder
from genforge.nets.resnet import ResNetGenerator
from genforge.train.sync_batchnorm import SyncBatchNorm, convert

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("make, shape", [
    (lambda: nn.BatchNorm2d(3), (6, 3, 4, 4)),
    (lambda: nn.BatchNorm1d(5, momentum=None), (6, 5)),  # a cumulative average of the batch statistics
], ids=["2d", "1d-cumulative"])
def test_alone_and_in_eval_mode_it_is_batchnorm_exactly(make, shape):
    torch.manual_seed(0)
    plain = make()
    synced = convert(copy.deepcopy(plain), torch.device("cpu"))
    assert isinstance(synced, SyncBatchNorm)
    assert list(synced.state_dict()) == list(plain.state_dict())
    for _ in range(3):  # training: outputs, gradients and running statistics, bit for bit
        x = torch.randn(shape) * 2 + 1
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        weights = torch.randn(shape)
        ya, yb = plain(xa), synced(xb)
        (ya * weights).sum().backward()
        (yb * weights).sum().backward()
        assert torch.equal(ya, yb) and torch.equal(xa.grad, xb.grad)
    for name, tensor in plain.state_dict().items():
        assert torch.equal(tensor, synced.state_dict()[name]), name
    for a, b in zip(plain.parameters(), synced.parameters()):
        assert torch.equal(a.grad, b.grad)
    assert int(synced.num_batches_tracked) == 3
    plain.eval(), synced.eval()
    x = torch.randn(shape)
    assert torch.equal(plain(x), synced(x))


def test_convert_reaches_every_batchnorm_and_keeps_the_checkpoint_keys():
    """The conditional BatchNorm inside the ResNet generator's blocks and the DCGAN decoder's are converted
    in place, on the very tensors, and a converted model's weights load into the plain one."""
    for make in (lambda: ResNetGenerator(8, (1, 8, 8), 8, num_classes=3), lambda: ConvDecoder(8, (1, 8, 8), 8)):
        torch.manual_seed(0)
        plain = make()
        norms = [m for m in plain.modules() if isinstance(m, _BatchNorm)]
        tensors = [id(t) for t in [*plain.parameters(), *plain.buffers()]]
        keys = list(plain.state_dict())
        synced = convert(plain, torch.device("cpu"))
        assert synced is plain and norms
        assert all(isinstance(m, SyncBatchNorm) for m in synced.modules() if isinstance(m, _BatchNorm))
        assert [id(t) for t in [*synced.parameters(), *synced.buffers()]] == tensors
        assert list(synced.state_dict()) == keys
        make().load_state_dict(synced.state_dict())  # strict: the same names and shapes


def test_two_processes_with_sync_batchnorm_train_what_one_process_with_the_combined_batch_trains(tmp_path):
    """BatchNorm over all 8 items in two processes of 4 is BatchNorm over one process's 8: the same weights and
    running statistics (per slice, the default, two processes equal one accumulating two slices instead)."""
    # minibatch_std off: the discriminator's spread feature is a statistic of each process's own slice, which
    # sync_batchnorm leaves alone (it is no BatchNorm); with it on, D would see the spread of 4 items, not 8
    settings = ["model.width=8", "model.latent_dim=8", "model.minibatch_std=false", "train.sample_every=0",
                "train.sync_batchnorm=true"]
    two = tmp_path / "two"
    proc = torchrun(2, "train", "--family", "gan", "--data", "digits", "--out", two, "--steps", 3, "--batch-size", 4,
                    "--quiet", *[arg for s in settings for arg in ("--set", s)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = RunConfig.from_dict(yaml.safe_load((two / "config.yaml").read_text()))
    assert config.train.sync_batchnorm is True  # recorded by --set, read back from YAML
    one = tmp_path / "one"  # alone the setting changes nothing: plain BatchNorm over the batch of 8
    genforge.train("gan", "digits", one, steps=3, batch_size=8, progress=False, overrides=settings)
    assert_same_weights(two, one, parameters_only=False)
