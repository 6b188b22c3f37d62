"""The SNGAN-style ResNet generator and discriminator: sizes, conditioning, spectral norm, one training step."""

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from genforge.errors import ConfigError
from genforge.nets import resnet
from genforge.nets.resnet import ResNetDiscriminator, ResNetGenerator

pytestmark = pytest.mark.usefixtures("one_thread")

LATENT = 16


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 64, 64), (1, 8, 8)])
@pytest.mark.parametrize("num_classes", [None, 3])
def test_shapes(shape, num_classes):
    torch.manual_seed(0)
    g = ResNetGenerator(LATENT, shape, width=4, num_classes=num_classes)
    d = ResNetDiscriminator(shape, width=4, num_classes=num_classes, minibatch_std=True)
    labels = torch.tensor([0, 2]) if num_classes else None
    x = g(torch.randn(2, LATENT), labels)
    assert x.shape == (2, *shape)
    logits = d(x, labels)
    assert logits.shape == (2,)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("shape", [(3, 30, 30), (3, 32, 64), (1, 6, 6), (3, 36, 36), (0, 32, 32), (32, 32)])
def test_unsupported_sizes_name_the_supported_ones(shape):
    for build in (lambda: ResNetGenerator(LATENT, shape, 4), lambda: ResNetDiscriminator(shape, 4)):
        with pytest.raises(ConfigError) as info:
            build()
        message = str(info.value)
        if len(shape) == 3:
            assert "28" in message and "32" in message and "64" in message and "image_size" in message


def test_size_plan():
    # start s x s with 4 <= s <= 7, k >= 1 doublings
    assert resnet.resnet_plan((1, 28, 28)) == (1, 2, 7)
    assert resnet.resnet_plan((3, 32, 32)) == (3, 3, 4)
    assert resnet.resnet_plan((3, 64, 64)) == (3, 4, 4)
    assert resnet.resnet_plan((1, 8, 8)) == (1, 1, 4)
    assert resnet.resnet_plan((1, 14, 14)) == (1, 1, 7)


def test_parameter_counts_match_the_docstring():
    doc = resnet.__doc__
    for shape, width, label in [((1, 28, 28), 32, "28 x 28 x 1, width 32"),
                                ((3, 32, 32), 64, "32 x 32 x 3, width 64"),
                                ((3, 64, 64), 64, "64 x 64 x 3, width 64")]:
        line = next(line for line in doc.splitlines() if label in line)
        numbers = [int(n.replace(",", "")) for n in re.findall(r"\d[\d,]{4,}", line)]
        measured = [param_count(ResNetGenerator(128, shape, width)),
                    param_count(ResNetGenerator(128, shape, width, num_classes=10)),
                    param_count(ResNetDiscriminator(shape, width)),
                    param_count(ResNetDiscriminator(shape, width, num_classes=10))]
        assert numbers == measured, label


def test_conditional_generator():
    torch.manual_seed(0)
    g = ResNetGenerator(LATENT, (1, 8, 8), width=8, num_classes=4)
    z = torch.randn(4, LATENT)
    with pytest.raises(ValueError, match="labels"):
        g(z)
    # conditional BN starts as plain BN: every class gives the same output, in train and eval mode
    norms = [m for m in g.modules() if isinstance(m, resnet.ClassBatchNorm2d)]
    assert norms and all(torch.equal(m.gain.weight, torch.ones_like(m.gain.weight)) for m in norms)
    assert all(torch.equal(m.bias.weight, torch.zeros_like(m.bias.weight)) for m in norms)
    for train in (True, False):
        g.train(train)
        outputs = [g(z, torch.full((4,), c)) for c in range(4)]
        assert all(torch.allclose(outputs[0], out) for out in outputs[1:])
    # once the per-class gains and biases differ (as training makes them), the label matters
    with torch.no_grad():
        for m in norms:
            m.gain.weight.normal_(1.0, 0.3)
            m.bias.weight.normal_(0.0, 0.3)
    for train in (True, False):
        g.train(train)
        a, b = g(z, torch.zeros(4, dtype=torch.long)), g(z, torch.ones(4, dtype=torch.long))
        assert (a - b).abs().mean() > 1e-3


def test_unconditional_generator_ignores_labels_and_has_plain_batchnorm():
    g = ResNetGenerator(LATENT, (1, 8, 8), width=8)
    z = torch.randn(3, LATENT)
    torch.testing.assert_close(g(z), g(z, torch.tensor([0, 1, 2])))
    assert not any(isinstance(m, nn.Embedding) for m in g.modules())


def test_projection_discriminator():
    torch.manual_seed(0)
    x = torch.randn(4, 1, 8, 8)
    d = ResNetDiscriminator((1, 8, 8), width=8, num_classes=3, spectral_norm=False).eval()
    with pytest.raises(ValueError, match="labels"):
        d(x)
    # without spectral norm the embedding starts at zero: D begins unconditional
    zeros, twos = torch.zeros(4, dtype=torch.long), torch.full((4,), 2)
    torch.testing.assert_close(d(x, zeros), d(x, twos))
    with torch.no_grad():
        d.class_embedding.weight.normal_()
    assert (d(x, zeros) - d(x, twos)).abs().min() > 1e-4
    # with spectral norm the embedding cannot start at zero; the label matters from the start
    d_sn = ResNetDiscriminator((1, 8, 8), width=8, num_classes=3).eval()
    assert (d_sn(x, zeros) - d_sn(x, twos)).abs().max() > 1e-4


def test_spectral_norm_everywhere():
    torch.manual_seed(0)
    d = ResNetDiscriminator((3, 16, 16), width=8, num_classes=5)
    layers = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]
    assert len(layers) > 5
    assert all(parametrize.is_parametrized(m, "weight") for m in layers)
    plain = ResNetDiscriminator((3, 16, 16), width=8, num_classes=5, spectral_norm=False)
    assert not any(parametrize.is_parametrized(m) for m in plain.modules())

    # power iteration runs once per training forward; a few passes bring sigma_max to about 1
    with torch.no_grad():
        d.head.parametrizations.weight.original.mul_(50.0)  # a large layer: SN must rescale it
        for _ in range(5):
            d(torch.randn(4, 3, 16, 16), torch.randint(5, (4,)))
    for m in (d.head, d.class_embedding, d.blocks[0].conv1):
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        assert sigma <= 1.05


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
@pytest.mark.parametrize("num_classes", [None, 3])
def test_one_adam_step(precision, num_classes):
    torch.manual_seed(0)
    shape = (3, 16, 16)
    g = ResNetGenerator(LATENT, shape, width=8, num_classes=num_classes)
    d = ResNetDiscriminator(shape, width=8, num_classes=num_classes, minibatch_std=True)
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.0, 0.9))
    real = torch.rand(8, *shape) * 2 - 1
    labels = torch.randint(3, (8,)) if num_classes else None
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16")
    g_before = [p.detach().clone() for p in g.parameters()]
    for _ in range(2):
        with autocast:
            fake = torch.tanh(g(torch.randn(8, LATENT), labels).float())
            d_loss = (F.softplus(-d(real, labels).float()).mean()
                      + F.softplus(d(fake.detach(), labels).float()).mean())
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        with autocast:
            g_loss = F.softplus(-d(fake, labels).float()).mean()
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        assert torch.isfinite(d_loss) and torch.isfinite(g_loss)
    for net in (g, d):
        assert all(torch.isfinite(p).all() for p in net.parameters())
        assert all(torch.isfinite(b).all() for b in net.buffers())
    assert any(not torch.equal(a, b) for a, b in zip(g_before, g.parameters()))


def test_eval_mode_generates_one_sample():
    torch.manual_seed(0)
    g = ResNetGenerator(LATENT, (1, 28, 28), width=4, num_classes=3)
    for _ in range(3):  # running statistics move away from their defaults
        g(torch.randn(8, LATENT), torch.randint(3, (8,)))
    g.eval()
    z = torch.randn(2, LATENT)
    labels = torch.tensor([1, 2])
    with torch.no_grad():
        pair = g(z, labels)
        single = g(z[:1], labels[:1])
    assert single.shape == (1, 1, 28, 28)
    torch.testing.assert_close(single, pair[:1])  # eval mode: no dependence on the rest of the batch
