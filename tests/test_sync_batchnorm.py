"""`train.sync_batchnorm`: BatchNorm over the global batch of all processes. Alone (or in eval mode) the
module is exactly nn.BatchNorm. In two processes (test_distributed_families.py) the VAE with it trains what
one process with the combined batch does, running statistics included; the GAN there, per process (the
default), what one process accumulating the two slices does."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

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
