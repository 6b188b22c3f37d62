"""The DiffWave denoiser (genforge.nets.diffwave): shapes at any length, zero output at init, conditioning,
receptive field, overfitting one waveform, batch independence, bf16 autocast, checkpointing, bad arguments."""

import math

import pytest
import torch
from torch import nn

from genforge.errors import ConfigError
from genforge.nets.diffwave import DiffWave

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(in_channels: int = 1, **kw) -> DiffWave:
    kw = {"residual_channels": 8, "layers": 4, "dilation_cycle": 3, **kw}
    return DiffWave(in_channels, **kw)


def randomise_output(net: DiffWave) -> DiffWave:
    """The last conv starts at zero (the net predicts 0); give it weights so the output shows what the net computes."""
    nn.init.normal_(net.output_proj.weight)
    nn.init.normal_(net.output_proj.bias)
    return net


@pytest.mark.parametrize("channels, length", [(1, 1), (1, 7), (1, 256), (2, 257), (3, 1000)])
def test_output_shape_is_the_input_shape(channels, length):
    torch.manual_seed(0)
    net = randomise_output(tiny(channels))
    x = torch.randn(3, channels, length)
    out = net(x, torch.tensor([0, 10, 999]))
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    # float timesteps work too, and integer steps give what the same float steps give
    assert torch.equal(net(x, torch.tensor([0.0, 10.0, 999.0])), out)


def test_emb_dim_and_defaults():
    net = DiffWave()
    assert net.emb_dim == 4 * 32
    assert len(net.blocks) == 12
    assert [b.dilation for b in net.blocks] == [1, 2, 4, 8, 16, 32] * 2
    assert net.length is None and DiffWave(length=16000).length == 16000
    assert DiffWave(residual_channels=16).emb_dim == 64


def test_zero_at_init_and_gradient_reaches_early_layers_after_one_step():
    torch.manual_seed(0)
    net = tiny()
    x, t, target = torch.randn(4, 1, 64), torch.randint(0, 1000, (4,)), torch.randn(4, 1, 64)
    out = net(x, t)
    assert torch.equal(out, torch.zeros_like(x))
    early = [net.input_proj.weight, net.blocks[0].dilated.weight, net.blocks[0].emb_proj.weight,
             net.time_embed.mlp[0].weight, net.skip_proj.weight]
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    (out - target).pow(2).mean().backward()
    assert net.output_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in early)  # blocked by the zero last layer
    opt.step()
    opt.zero_grad()
    out = net(x, t)
    assert out.abs().sum() > 0
    (out - target).pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in early)


def test_timestep_and_cond_change_the_output():
    torch.manual_seed(0)
    net = randomise_output(tiny())
    x = torch.randn(2, 1, 50)
    base = net(x, torch.tensor([5, 5]))
    assert not torch.allclose(net(x, torch.tensor([500, 500])), base)
    cond = torch.randn(2, net.emb_dim)
    with_cond = net(x, torch.tensor([5, 5]), cond)
    assert not torch.allclose(with_cond, base)
    assert not torch.allclose(net(x, torch.tensor([5, 5]), 2 * cond), with_cond)
    # a class-label embedding of width emb_dim, as the diffusion family builds it
    labels = nn.Embedding(10, net.emb_dim)
    assert net(x, torch.tensor([5, 5]), labels(torch.tensor([1, 2]))).shape == x.shape


def measured_receptive_field(net: DiffWave, length: int) -> int:
    """Perturb the middle input sample; the output samples that change must be a contiguous span centred on it."""
    net = randomise_output(net).double()
    x = torch.randn(1, 1, length, dtype=torch.float64)
    t = torch.tensor([100])
    with torch.no_grad():
        base = net(x, t)
        x[0, 0, length // 2] += 1.0
        changed = (net(x, t) != base)[0, 0].nonzero().flatten()
    lo, hi = int(changed.min()), int(changed.max())
    assert len(changed) == hi - lo + 1  # contiguous
    assert lo + hi == 2 * (length // 2)  # centred (non-causal)
    assert lo > 0 and hi < length - 1  # the span is not clipped by the ends
    return hi - lo + 1


@pytest.mark.parametrize("layers, cycle, expected", [(5, 3, 1 + 2 * (1 + 2 + 4 + 1 + 2)), (1, 1, 3), (12, 6, 253)])
def test_receptive_field_matches_a_measured_one(layers, cycle, expected):
    torch.manual_seed(0)
    net = DiffWave(1, residual_channels=8, layers=layers, dilation_cycle=cycle)
    assert net.receptive_field == expected
    assert measured_receptive_field(net, expected + 40) == expected


def test_receptive_field_of_diffwave_base():
    assert DiffWave(residual_channels=8, layers=30, dilation_cycle=10).receptive_field == 6139


def test_overfits_one_waveform():
    """A tiny net learns to denoise noisy copies of one sine burst at a fixed timestep (fresh noise every step)."""
    torch.manual_seed(0)
    n = torch.arange(256, dtype=torch.float32)
    clean = (torch.sin(2 * math.pi * n / 32) * torch.hann_window(256, periodic=False)).view(1, 1, 256)
    net = DiffWave(1, 256, residual_channels=16, layers=6)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    t = torch.full((8,), 100)

    def noisy() -> torch.Tensor:
        return clean + 0.3 * torch.randn(8, 1, 256)

    with torch.no_grad():
        before = (net(noisy(), t) - clean).pow(2).mean()
    for _ in range(120):
        loss = (net(noisy(), t) - clean).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = (net(noisy(), t) - clean).pow(2).mean()
    assert after < before / 10
    assert after < 0.3**2 / 3  # well below the input's own error: it denoises, not just copies its input


def test_items_of_a_batch_are_independent():
    torch.manual_seed(0)
    net = randomise_output(tiny(2, dropout=0.1)).eval()
    x, t, cond = torch.randn(4, 2, 80), torch.tensor([1, 50, 300, 999]), torch.randn(4, net.emb_dim)
    with torch.no_grad():
        out = net(x, t, cond)
        x2, t2, cond2 = x.clone(), t.clone(), cond.clone()
        x2[2] = torch.randn(2, 80)
        t2[2], cond2[2] = 7, torch.randn(net.emb_dim)
        out2 = net(x2, t2, cond2)
        assert torch.equal(out2[[0, 1, 3]], out[[0, 1, 3]])
        assert not torch.allclose(out2[2], out[2])
        for i in range(4):
            assert torch.allclose(net(x[i:i + 1], t[i:i + 1], cond[i:i + 1]), out[i:i + 1], atol=1e-5)


def test_bf16_autocast_forward_on_cpu():
    torch.manual_seed(0)
    net = randomise_output(tiny())
    x, t, cond = torch.randn(2, 1, 64), torch.tensor([3, 400]), torch.randn(2, net.emb_dim)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, t, cond)
    assert out.shape == x.shape
    assert torch.isfinite(out.float()).all()
    assert torch.allclose(out.float(), net(x, t, cond), atol=0.1 * net(x, t, cond).abs().max().item())


def test_checkpointing_gives_the_same_output_and_gradients():
    torch.manual_seed(0)
    net = randomise_output(tiny())
    x, t, cond = torch.randn(2, 1, 40), torch.tensor([3, 400]), torch.randn(2, net.emb_dim)
    grads = []
    for on in (False, True):
        net.checkpointing = on
        net.zero_grad()
        out = net(x, t, cond)
        out.pow(2).sum().backward()
        grads.append((out.detach(), [p.grad.clone() for p in net.parameters()]))
    assert torch.equal(grads[0][0], grads[1][0])
    assert all(torch.allclose(a, b) for a, b in zip(grads[0][1], grads[1][1]))


def test_dropout_acts_in_training_only():
    torch.manual_seed(0)
    net = randomise_output(tiny(dropout=0.5))
    x, t = torch.randn(2, 1, 40), torch.tensor([3, 400])
    assert not torch.equal(net(x, t), net(x, t))
    net.eval()
    assert torch.equal(net(x, t), net(x, t))


@pytest.mark.parametrize("kwargs, name", [
    ({"layers": 0}, "layers"),
    ({"residual_channels": 0}, "residual_channels"),
    ({"dilation_cycle": 0}, "dilation_cycle"),
    ({"in_channels": 0}, "in_channels"),
    ({"layers": 2.5}, "layers"),
    ({"length": 0}, "length"),
    ({"dropout": 1.0}, "dropout"),
    ({"dropout": -0.1}, "dropout"),
])
def test_bad_arguments_raise_one_line_config_errors(kwargs, name):
    with pytest.raises(ConfigError) as info:
        DiffWave(**kwargs)
    message = str(info.value)
    assert name in message and "\n" not in message
