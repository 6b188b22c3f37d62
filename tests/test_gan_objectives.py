"""GAN losses, regularisers and DiffAugment: known values, finite-difference and analytic checks, and a
small GAN on the ring of 8 Gaussians."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from genforge.data.augment import POLICIES, diff_augment, parse_policy
from genforge.errors import ConfigError
from genforge.families.gan_objectives import (LOSSES, accuracy, apply_spectral_norm, discriminator_loss, diversity,
                                              generator_loss, gradient_penalty, r1_input, r1_penalty)

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- the ring of 8 Gaussians

RING_RADIUS, RING_STD = 2.0, 0.02
MODES = torch.tensor([[RING_RADIUS * math.cos(2 * math.pi * k / 8), RING_RADIUS * math.sin(2 * math.pi * k / 8)]
                      for k in range(8)])
NEAR = 0.1  # "near a mode": within 5 std; neighbouring modes are 2 * 2 * sin(pi / 8) ~ 1.53 apart
COVERED = 0.02  # a mode is covered when at least 2% of the samples are near it (1/8 would be a fair share)
LATENT = 8


def ring_batch(n: int, generator: torch.Generator) -> torch.Tensor:
    modes = torch.randint(0, 8, (n,), generator=generator)
    return MODES[modes] + RING_STD * torch.randn(n, 2, generator=generator)


def mlp(inputs: int, outputs: int, activation: type[nn.Module], hidden: int = 128, depth: int = 3) -> nn.Sequential:
    layers, width = [], inputs
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), activation()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, outputs))


class LeakyReLU(nn.LeakyReLU):
    def __init__(self):
        super().__init__(0.2)


def mode_coverage(samples: torch.Tensor) -> tuple[int, float]:
    """(modes covered, share of samples near some mode)."""
    distance, nearest = torch.cdist(samples, MODES).min(dim=1)
    near = distance < NEAR
    counts = torch.bincount(nearest[near], minlength=8)
    return int((counts >= COVERED * len(samples)).sum()), near.float().mean().item()


def train_ring_gan(loss: str, r1_gamma: float = 0.0, r1_interval: int = 4, gp_weight: float = 0.0,
                   spectral_norm: bool = False, steps: int = 1200, seed: int = 0) -> torch.Tensor:
    """Train a small MLP GAN on the ring; 2,000 samples of the final generator."""
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    gen, disc = mlp(LATENT, 2, nn.ReLU), mlp(2, 1, LeakyReLU)  # DCGAN's choice of activations
    if spectral_norm:
        apply_spectral_norm(disc)
    lr, batch = 2e-3, 128
    # beta1 = 0 as in StyleGAN2's R1 setting: momentum makes the two players overshoot each other
    opt_g = torch.optim.Adam(gen.parameters(), lr=lr, betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.0, 0.99))
    for step in range(steps):
        for opt in (opt_g, opt_d):  # constant, then linear decay to 0 over the second half
            opt.param_groups[0]["lr"] = lr * min(1.0, 2 * (1 - step / steps))
        real = ring_batch(batch, rng)
        fake = gen(torch.randn(batch, LATENT, generator=rng)).detach()
        regularise = r1_gamma > 0 and step % r1_interval == 0  # lazy R1: every k-th step, k times as strong
        if regularise:
            real = r1_input(real)
        real_logits, fake_logits = disc(real).squeeze(1), disc(fake).squeeze(1)
        d_loss = discriminator_loss(loss, real_logits, fake_logits)
        if regularise:
            d_loss = d_loss + r1_interval * r1_gamma * r1_penalty(real_logits, real)
        if gp_weight:
            d_loss = d_loss + gp_weight * gradient_penalty(disc, real, fake, generator=rng)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()

        g_loss = generator_loss(loss, disc(gen(torch.randn(batch, LATENT, generator=rng))).squeeze(1))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
    with torch.no_grad():
        return gen(torch.randn(2000, LATENT, generator=torch.Generator().manual_seed(1234)))


# Measured with train_ring_gan's settings (1,200 steps, batch 128, Adam 2e-3 betas (0, 0.99), seeds 0 and 1):
# modes covered / share of samples within 0.1 of a mode
#   ns + lazy R1 (gamma 0.1 every 4th step), the default:  8/8 82%, 8/8 84% (seed 2: 8/8 82%)
#   hinge + lazy R1 0.1:                                   8/8 81%, 8/8 81%
#   lsgan + lazy R1 0.1:                                   8/8 69%, 8/8 74%  (too close to 70% to assert)
#   ns, no regulariser:                                    8/8 48%, 7/8 37%
#   lsgan, no regulariser:                                 8/8 64%, 6/8 35%
#   wgan + GP (weight 10 / 1 / 0.1, one critic step):      0-1/8, 3/8 or 8/8, 3/8; the paper's 5 critic
#                                                          steps per generator step do not fit this budget
#   hinge + spectral norm (lr 2e-3 or 5e-4):               0/8: a 1-Lipschitz MLP critic cannot make the
#                                                          sharp bumps modes 0.02 wide need in this many steps
@pytest.mark.slow
@pytest.mark.parametrize("loss", ["ns", "hinge"])
def test_ring_of_8_gaussians_is_covered(loss):
    modes, near = mode_coverage(train_ring_gan(loss, r1_gamma=0.1))
    assert modes >= 7 and near >= 0.7, (modes, near)


# ---------------------------------------------------------------- losses


def test_losses_at_known_logits():
    zero, two = torch.zeros(4), torch.full((4,), 2.0)
    assert discriminator_loss("ns", zero, zero).item() == pytest.approx(2 * math.log(2))
    assert generator_loss("ns", zero).item() == pytest.approx(math.log(2))
    assert discriminator_loss("hinge", two, -two).item() == 0.0  # both beyond the margin
    assert discriminator_loss("hinge", zero, zero).item() == pytest.approx(2.0)
    assert generator_loss("hinge", two).item() == pytest.approx(-2.0)
    assert discriminator_loss("wgan", two, -two).item() == pytest.approx(-4.0)
    assert generator_loss("wgan", -two).item() == pytest.approx(2.0)
    assert discriminator_loss("lsgan", torch.ones(4), zero).item() == 0.0  # on target: real 1, fake 0
    assert discriminator_loss("lsgan", zero, zero).item() == pytest.approx(0.5)
    assert generator_loss("lsgan", torch.ones(4)).item() == 0.0
    assert generator_loss("lsgan", zero).item() == pytest.approx(0.5)
    for kind in LOSSES:  # bf16 logits (autocast), float32 losses
        half = torch.zeros(4, dtype=torch.bfloat16)
        assert discriminator_loss(kind, half, half).dtype == torch.float32
        assert generator_loss(kind, half).dtype == torch.float32 and generator_loss(kind, half).dim() == 0


def test_unknown_loss_names_the_choices():
    with pytest.raises(ConfigError, match="hinge"):
        discriminator_loss("minimax", torch.zeros(2), torch.zeros(2))
    with pytest.raises(ConfigError, match="lsgan"):
        generator_loss("wasserstein", torch.zeros(2))
    with pytest.raises(ConfigError):
        accuracy(torch.zeros(2), torch.zeros(2), "ls")


def tiny_discriminator() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.LeakyReLU(0.2), nn.Flatten(),
                         nn.Linear(8 * 4 * 4, 1), nn.Flatten(0))


@pytest.mark.parametrize("kind", LOSSES)
def test_each_loss_overfits_a_tiny_batch(kind):
    torch.manual_seed(0)
    rng = torch.Generator().manual_seed(0)
    real = torch.rand(8, 1, 8, 8, generator=rng) * 2 - 1
    fake = (torch.rand(8, 1, 8, 8, generator=rng) * 2 - 1).requires_grad_(True)  # the "generator": free pixels
    disc = tiny_discriminator()
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-2)

    def d_objective() -> torch.Tensor:
        loss = discriminator_loss(kind, disc(real), disc(fake.detach()))
        if kind == "wgan":  # unbounded without its Lipschitz penalty
            loss = loss + 10 * gradient_penalty(disc, real, fake, generator=rng)
        return loss

    first = d_objective().item()
    for _ in range(40):
        loss = d_objective()
        opt_d.zero_grad()
        loss.backward()
        opt_d.step()
    with torch.no_grad():
        last = discriminator_loss(kind, disc(real), disc(fake))
        real_right, fake_right = accuracy(disc(real), disc(fake), kind)
    assert torch.isfinite(last) and last.item() < first
    assert real_right.item() == 1.0 and fake_right.item() == 1.0  # D tells this batch apart

    # the generator's side: moving the fake pixels lowers its loss against the now fixed D
    disc.requires_grad_(False)
    opt_g = torch.optim.Adam([fake], lr=1e-2)
    first = generator_loss(kind, disc(fake)).item()
    for _ in range(20):
        loss = generator_loss(kind, disc(fake))
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
    last = generator_loss(kind, disc(fake))
    assert torch.isfinite(last) and last.item() < first and torch.isfinite(fake).all()


# ---------------------------------------------------------------- regularisers


class SmoothCritic(nn.Module):
    """x (B, 1, 2, 2) -> v . tanh(W x + b): smooth, with a gradient that varies from point to point."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(4, 5)
        self.out = nn.Linear(5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(x.flatten(1)))).squeeze(1)


def test_gradient_penalty_matches_finite_differences():
    torch.manual_seed(0)
    critic = SmoothCritic().double()
    with torch.no_grad():
        critic.out.weight.mul_(10)  # gradient norms around 1, not all far below it
    real = torch.randn(6, 1, 2, 2, dtype=torch.float64)
    fake = torch.randn(6, 1, 2, 2, dtype=torch.float64)
    penalty = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(7))

    u = torch.rand(6, generator=torch.Generator().manual_seed(7)).double().view(-1, 1, 1, 1)  # the same draw
    x_hat = (real + u * (fake - real)).flatten(1)
    h = 1e-6
    with torch.no_grad():
        grads = torch.stack([(critic((x_hat + h * e).view(-1, 1, 2, 2)) - critic((x_hat - h * e).view(-1, 1, 2, 2)))
                             / (2 * h) for e in torch.eye(4, dtype=torch.float64)], dim=1)
    expected = ((grads.norm(dim=1) - 1) ** 2).mean()
    assert expected.item() > 0.01  # a case where the penalty is not trivially 0
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-5)

    penalty.backward()  # create_graph: the penalty trains the critic (all but the output bias, which x_hat cannot see)
    for p in (critic.hidden.weight, critic.hidden.bias, critic.out.weight):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_gradient_penalty_of_linear_critics():
    w = torch.randn(12, dtype=torch.float64)
    real, fake = torch.randn(5, 3, 2, 2, dtype=torch.float64), torch.randn(5, 3, 2, 2, dtype=torch.float64)

    def linear(scale: float):
        return lambda x: x.flatten(1) @ (scale * w / w.norm())

    assert gradient_penalty(linear(1.0), real, fake).item() == pytest.approx(0.0, abs=1e-12)  # exactly 1-Lipschitz
    assert gradient_penalty(linear(3.0), real, fake).item() == pytest.approx(4.0)  # (3 - 1)^2
    # conditional critics get the labels; a zero gradient gives penalty 1, not NaN
    labels = torch.arange(5)
    seen = []
    zero = gradient_penalty(lambda x, y: seen.append(y) or 0 * x.sum(dim=(1, 2, 3)), real, fake, labels=labels)
    assert seen[0] is labels and zero.item() == pytest.approx(1.0, abs=1e-5)


def test_r1_penalty_of_a_quadratic_critic():
    a = 3.0
    real = r1_input(torch.randn(7, 2, 3, 3))
    logits = 0.5 * a * real.flatten(1).square().sum(dim=1)  # gradient a * x
    expected = 0.5 * (a**2 * real.detach().flatten(1).square().sum(dim=1)).mean()
    penalty = r1_penalty(logits, real)
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-5)
    assert penalty.requires_grad  # it can train D
    with pytest.raises(ValueError, match="r1_input"):
        r1_penalty(logits, torch.randn(7, 2, 3, 3))


def test_spectral_norm_bounds_each_layers_largest_singular_value():
    torch.manual_seed(0)
    net = nn.ModuleDict({"linear": nn.Linear(20, 30), "conv": nn.Conv2d(3, 8, 3), "up": nn.ConvTranspose2d(8, 4, 4),
                         "embed": nn.Embedding(10, 6)})
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(10)  # without normalisation every layer would stretch its input
    assert apply_spectral_norm(net) is net
    apply_spectral_norm(net)  # idempotent
    assert not hasattr(net["embed"], "parametrizations")
    assert len(net["linear"].parametrizations.weight) == 1
    net.train()
    for _ in range(5):  # each forward pass refines the power iteration
        net["linear"](torch.randn(4, 20))
        net["up"](net["conv"](torch.randn(2, 3, 9, 9)))

    def matrix(name: str) -> torch.Tensor:
        w = net[name].weight.detach()  # the normalised weight the layer uses
        if name == "up":  # ConvTranspose weights are (in, out, k, k); normalised along out
            w = w.transpose(0, 1)
        return w.flatten(1)

    for name in ("linear", "conv", "up"):
        sigma = torch.linalg.matrix_norm(matrix(name), ord=2).item()
        assert 0.9 <= sigma <= 1 + 1e-2, (name, sigma)
    assert torch.linalg.matrix_norm(net["embed"].weight.detach(), ord=2).item() > 10


# ---------------------------------------------------------------- DiffAugment


def images(n: int = 4, channels: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_parse_policy():
    assert parse_policy("color,translation,cutout") == POLICIES
    assert parse_policy(" translation , color") == ("translation", "color")
    assert parse_policy(["cutout"]) == ("cutout",)
    assert parse_policy("") == () and parse_policy([]) == ()
    with pytest.raises(ConfigError, match="translation"):
        parse_policy("color,flip")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels", [1, 3])
def test_diff_augment_keeps_shape_dtype_and_is_seeded(dtype, channels):
    x = images(channels=channels).to(dtype)
    a = diff_augment(x, "color,translation,cutout", torch.Generator().manual_seed(1))
    b = diff_augment(x, "color,translation,cutout", torch.Generator().manual_seed(1))
    c = diff_augment(x, "color,translation,cutout", torch.Generator().manual_seed(2))
    assert a.shape == x.shape and a.dtype == dtype and torch.isfinite(a.float()).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert diff_augment(x, "") is x


def test_diff_augment_is_differentiable():
    for policy in POLICIES:
        x = images().requires_grad_(True)
        diff_augment(x, policy, torch.Generator().manual_seed(0)).square().sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0 and torch.isfinite(x.grad).all(), policy


def test_translation_is_a_shift_with_zero_fill():
    x = images(n=8, size=16)
    out = diff_augment(x, "translation", torch.Generator().manual_seed(0))
    shifts = set()
    for i in range(8):
        matches = []
        for dy in range(-2, 3):  # 16 / 8 = 2 pixels at most
            for dx in range(-2, 3):
                shifted = torch.zeros_like(x[i])
                src = x[i][:, max(0, -dy):16 - max(0, dy), max(0, -dx):16 - max(0, dx)]
                shifted[:, max(0, dy):max(0, dy) + src.shape[1], max(0, dx):max(0, dx) + src.shape[2]] = src
                if torch.equal(out[i], shifted):
                    matches.append((dy, dx))
        assert len(matches) == 1, i
        shifts.add(matches[0])
    assert len(shifts) > 1  # per-sample shifts


def test_cutout_zeroes_one_rectangle_of_half_the_size():
    x = torch.ones(16, 1, 8, 12)
    out = diff_augment(x, "cutout", torch.Generator().manual_seed(0))
    for i in range(16):
        zero = out[i, 0] == 0
        assert torch.all(out[i, 0][~zero] == 1)
        rows, cols = zero.any(dim=1).nonzero().squeeze(1), zero.any(dim=0).nonzero().squeeze(1)
        assert len(rows) and len(cols)
        assert zero[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # a filled rectangle
        assert len(rows) <= 4 and len(cols) <= 6
    full = (out == 0).flatten(1).sum(dim=1) == 4 * 6
    assert full.any() and not full.all()  # whole squares inside, clipped ones at the border


def test_color_on_a_flat_image_is_a_small_brightness_shift():
    x = torch.full((32, 3, 4, 4), 0.2)
    out = diff_augment(x, "color", torch.Generator().manual_seed(0))
    shift = out - x
    assert torch.allclose(shift, shift[:, :1, :1, :1].expand_as(shift), atol=1e-6)  # contrast, saturation: no-ops
    assert shift.abs().max() <= 0.5 and shift.std() > 0.1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_diff_augment_on_cuda_with_a_cpu_generator():
    x = images().cuda().to(torch.bfloat16).requires_grad_(True)
    out = diff_augment(x, "color,translation,cutout", torch.Generator().manual_seed(0))
    assert out.device == x.device and out.dtype == torch.bfloat16
    out.float().sum().backward()
    cpu = diff_augment(x.detach().cpu(), "color,translation,cutout", torch.Generator().manual_seed(0))
    assert torch.allclose(out.detach().cpu().float(), cpu.float(), atol=5e-2)  # same draws on either device
    assert diff_augment(x, "translation", torch.Generator("cuda").manual_seed(0)).device == x.device


# ---------------------------------------------------------------- training-health statistics


def test_diversity_and_accuracy():
    one = torch.rand(1, 1, 8, 8)
    assert diversity(one.expand(16, -1, -1, -1)).item() == 0.0  # collapsed
    assert diversity(one).item() == 0.0
    noise = torch.rand(64, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert diversity(noise).item() == pytest.approx(math.sqrt(2 / 3), abs=0.03)
    real, fake = torch.tensor([2.0, -1.0, 0.3, 0.7]), torch.tensor([-3.0, 1.0, 0.2, 0.6])
    assert [v.item() for v in accuracy(real, fake, "ns")] == [0.75, 0.25]
    assert [v.item() for v in accuracy(real, fake, "lsgan")] == [0.5, 0.5]
