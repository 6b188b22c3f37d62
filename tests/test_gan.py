"""The GAN family: shapes, the two-phase contract, that each player learns, and deterministic sampling."""

from __future__ import annotations

import math

import pytest
import torch

from genforge.data.spec import DataSpec
from genforge.errors import ConfigError
from genforge.families.gan import GAN, GANConfig
from genforge.nets.conv import batch_spread

SHAPES = [(1, 28, 28), (1, 8, 8), (3, 32, 32), (3, 64, 64)]


pytestmark = pytest.mark.usefixtures("one_thread")


def make_gan(shape=(1, 28, 28), num_classes=None, **config) -> GAN:
    torch.manual_seed(0)
    config = {"latent_dim": 16, "width": 8, **config}
    spec = DataSpec("image", shape, num_classes=num_classes, class_names=[f"c{i}" for i in range(num_classes or 0)])
    return GAN(GANConfig(**config), spec)


def optimizers(gan: GAN, lr: float = 2e-4) -> dict[str, torch.optim.Optimizer]:
    return {name: torch.optim.Adam(g.params + g.no_decay, lr=lr, betas=g.betas)
            for name, g in gan.optimizer_groups().items()}


def fixed_real_batch(n: int = 16) -> torch.Tensor:
    """Bright bars on a dark ground: structured, unlike anything an untrained generator draws."""
    x = -torch.ones(n, 1, 28, 28)
    for i in range(n):
        x[i, 0, :, 4 + i : 8 + i] = 1.0
    return x


@pytest.mark.parametrize("shape", SHAPES)
def test_shapes_range_and_a_training_step(shape):
    gan = make_gan(shape)
    images = gan.sample(3, generator=torch.Generator().manual_seed(0))
    assert images.shape == (3, *shape) and images.dtype == torch.float32
    assert images.min() >= -1 and images.max() <= 1
    assert gan.sample(1).shape == (1, *shape)  # BatchNorm in eval mode: n=1 works
    x = torch.rand(4, *shape) * 2 - 1
    phases = list(gan.training_step({"x": x}))
    assert [name for name, _, _ in phases] == ["disc", "gen"]
    for _, loss, logs in phases:
        assert loss.dim() == 0 and torch.isfinite(loss)
        assert all(not torch.is_tensor(v) or not v.requires_grad for v in logs.values())


@pytest.mark.parametrize("shape", [(1, 100, 60), (3, 5, 7), (1, 4, 4)])
def test_sizes_that_need_a_crop(shape):
    assert make_gan(shape).sample(2).shape == (2, *shape)


@pytest.mark.parametrize("shape", [(1, 2, 2), (1, 3, 28), (1, 2048, 2048), (28, 28), (0, 8, 8)])
def test_sizes_that_cannot_work_raise(shape):
    with pytest.raises(ConfigError):
        make_gan(shape)


def test_bad_config_and_modality_raise():
    with pytest.raises(ConfigError):
        make_gan(latent_dim=0)
    with pytest.raises(ConfigError):
        GAN(GANConfig(), DataSpec("text", (64,), vocab_size=100))


def test_optimizer_groups_split_the_two_players():
    gan = make_gan(num_classes=10)
    groups = gan.optimizer_groups()
    assert set(groups) == {"disc", "gen"}
    disc = {id(p) for p in groups["disc"].params + groups["disc"].no_decay}
    gen = {id(p) for p in groups["gen"].params + groups["gen"].no_decay}
    assert disc == {id(p) for p in gan.discriminator.parameters()}
    assert gen == {id(p) for p in gan.generator.parameters()}
    assert all(g.betas == (0.5, 0.999) for g in groups.values())


def test_generator_loss_is_computed_after_the_discriminator_step():
    gan = make_gan(num_classes=10)
    batch = {"x": fixed_real_batch(8), "y": torch.arange(8) % 10}
    seen = []
    phases = gan.training_step(batch)
    for name, loss, _ in phases:
        seen.append(name)
        loss.backward()
        if name == "disc":
            # stand-in for the trainer's optimizer step: a D that answers 0 to everything
            with torch.no_grad():
                for p in gan.discriminator.parameters():
                    p.zero_()
                    p.grad = None
        else:
            # the generator loss saw the stepped D: softplus(-0) = log 2 exactly
            assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
            # and it left D's gradients alone (the trainer zeroes only the optimizer it steps)
            assert all(p.grad is None for p in gan.discriminator.parameters())
            assert all(p.requires_grad for p in gan.discriminator.parameters())
    assert seen == ["disc", "gen"]


def test_discriminator_learns_to_separate_real_from_fake():
    gan = make_gan()
    opt = optimizers(gan, lr=1e-3)["disc"]
    real = fixed_real_batch()
    losses = []
    for _ in range(40):
        phases = gan.training_step({"x": real})
        name, loss, logs = next(phases)  # the generator is never stepped
        phases.close()
        assert name == "disc"
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(2 * math.log(2), abs=0.2)  # an untrained D is undecided
    assert losses[-1] < 0.25 * losses[0]
    with torch.no_grad():
        fake = gan.sample(16, generator=torch.Generator().manual_seed(1))
        assert (gan.discriminator(real) > 0).all() and (gan.discriminator(fake) < 0).all()


def test_generator_learns_to_fool_a_frozen_discriminator():
    gan = make_gan()
    opt = optimizers(gan, lr=1e-2)["gen"]
    disc_before = [p.detach().clone() for p in gan.discriminator.parameters()]
    real = fixed_real_batch()
    losses = []
    for _ in range(50):
        for name, loss, _ in gan.training_step({"x": real}):
            if name == "gen":  # the disc phase is yielded but never stepped: D stays as initialised
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
    assert all(torch.equal(a, b) for a, b in zip(disc_before, gan.discriminator.parameters()))
    assert losses[-1] < 0.6 * losses[0]  # about 0.42x in practice


def test_sampling_is_seeded_and_independent_of_the_batch():
    gan = make_gan()
    opts = optimizers(gan)
    for _ in range(3):  # moves BatchNorm's running statistics away from their initial values
        for name, loss, _ in gan.training_step({"x": fixed_real_batch(8)}):
            loss.backward()
            opts[name].step()
            opts[name].zero_grad()
    gan.train()
    a = gan.sample(5, generator=torch.Generator().manual_seed(7))
    b = gan.sample(5, generator=torch.Generator().manual_seed(7))
    c = gan.sample(5, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3
    assert gan.training  # sampling restores the mode it found
    # each image depends on its own latent only: eval-mode BatchNorm, not batch statistics
    z = torch.randn(5, 16, generator=torch.Generator().manual_seed(7))
    gan.eval()
    with torch.no_grad():
        assert torch.allclose(gan.generate(z), a, atol=1e-6)
        assert torch.allclose(gan.generate(z[:1]), a[:1], atol=1e-6)


def test_labels_condition_samples():
    gan = make_gan(num_classes=10)
    seed = 3
    zero = gan.sample(4, generator=torch.Generator().manual_seed(seed), label=0)
    one = gan.sample(4, generator=torch.Generator().manual_seed(seed), label=1)
    by_name = gan.sample(4, generator=torch.Generator().manual_seed(seed), label="c1")
    per_item = gan.sample(4, generator=torch.Generator().manual_seed(seed), label=[1, 1, 1, 1])
    assert (zero - one).abs().max() > 1e-4
    assert torch.equal(one, by_name) and torch.equal(one, per_item)
    assert gan.sample(4, label=None).shape == (4, 1, 28, 28)  # random labels
    for bad in (10, -1, "dog", [0, 1]):
        with pytest.raises(ConfigError):
            gan.sample(4, label=bad)


def test_unconditional_gan_rejects_labels_and_unknown_conditions():
    with pytest.raises(ConfigError):
        make_gan().sample(2, label=3)
    with pytest.raises(ConfigError):
        make_gan(num_classes=10).sample(2, prompt="a cat")
    # labels in the data but conditioning switched off: an unconditional GAN
    assert make_gan(num_classes=10, class_conditional=False).num_classes is None


def test_minibatch_spread_sees_collapse_within_classes():
    varied = torch.randn(6, 4, 3, 3)
    one_per_class = torch.randn(2, 4, 3, 3).repeat(3, 1, 1, 1)  # items 0, 2, 4 alike; 1, 3, 5 alike
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    assert batch_spread(varied) > 0.5 and batch_spread(varied, labels) > 0.5
    assert batch_spread(one_per_class) > 0.5  # the batch as a whole still varies...
    assert batch_spread(one_per_class, labels) < 1e-3  # ...but not within a class
    assert batch_spread(varied[:1]) < 1e-3  # one item: no spread, and no NaN
    gan = make_gan(num_classes=10)
    assert gan.discriminator(fixed_real_batch(1), torch.tensor([3])).shape == (1,)
