"""GAN options and latent tools through the family and the Python API: every loss and backbone trains,
lazy R1 and the update ratio, training-health warnings, truncation, interpolation and inversion."""

from __future__ import annotations

import math

import pytest
import torch

from genforge.data.spec import DataSpec
from genforge.errors import ConfigError
from genforge.families.gan import GAN, GANConfig
from genforge.sampling.latent import blend, interpolation, slerp, truncate

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = DataSpec("image", (1, 8, 8), num_classes=3, class_names=["a", "b", "c"])
PLAIN = DataSpec("image", (1, 8, 8))


def make(spec: DataSpec = PLAIN, seed: int = 0, **config) -> GAN:
    torch.manual_seed(seed)
    return GAN(GANConfig(**{"latent_dim": 8, "width": 8, **config}), spec)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def bars(n: int = 8) -> torch.Tensor:
    x = -torch.ones(n, 1, 8, 8)
    for i in range(n):
        x[i, 0, :, i % 6 : i % 6 + 3] = 1.0
    return x


def train(gan: GAN, batch: dict, steps: int, lr: float = 2e-3) -> list[dict]:
    opts = {name: torch.optim.Adam(g.params + g.no_decay, lr=g.lr or lr, betas=g.betas)
            for name, g in gan.optimizer_groups().items()}
    history = []
    for _ in range(steps):
        record = {}
        for name, loss, logs in gan.training_step(batch):
            assert torch.isfinite(loss), (name, loss)
            opts[name].zero_grad(set_to_none=True)
            loss.backward()
            opts[name].step()
            record[f"{name}/loss"] = loss.item()
            record.update({f"{name}/{k}": float(v) for k, v in logs.items()})
        history.append(record)
    return history


# --- objectives and backbones in the family ----------------------------------------------------


@pytest.mark.parametrize("backbone", ["dcgan", "resnet"])
@pytest.mark.parametrize("loss", ["ns", "hinge", "wgan", "lsgan"])
def test_every_loss_and_backbone_trains_a_tiny_batch_without_nans(loss, backbone):
    gan = make(SPEC, loss=loss, backbone=backbone, spectral_norm=backbone == "resnet")
    history = train(gan, {"x": bars(), "y": torch.arange(8) % 3}, steps=12)
    first, last = history[0], history[-1]
    assert all(math.isfinite(v) for v in last.values())
    # the discriminator learns to tell the fixed reals from the fakes: its loss falls
    assert last["disc/loss"] < first["disc/loss"], (first["disc/loss"], last["disc/loss"])
    if loss == "wgan":
        assert "disc/gp" in last
    assert 0 <= last["disc/real_acc"] <= 1 and last["gen/spread"] >= 0


def test_lazy_r1_runs_every_k_discriminator_updates_and_d_steps_repeat_the_disc_phase():
    gan = make(r1_gamma=1.0, r1_every=3, d_steps=2)
    phases = [(name, sorted(logs)) for name, _, logs in gan.training_step({"x": bars()})]
    assert [name for name, _ in phases] == ["disc", "disc", "gen"]
    history = train(gan, {"x": bars()}, steps=3)  # discriminator updates 3-4, 5-6, 7-8 after the 2 above
    assert [("disc/r1" in rec) for rec in history] == [True, True, False]  # R1 at updates 3 and 6 only
    assert int(gan.d_updates) == 8


def test_per_player_learning_rates_and_bad_config():
    groups = make(lr_gen=1e-4, lr_disc=4e-4).optimizer_groups()
    assert groups["gen"].lr == 1e-4 and groups["disc"].lr == 4e-4
    for bad, match in [({"loss": "wasserstein"}, "unknown gan loss"), ({"backbone": "vit"}, "unknown gan backbone"),
                       ({"d_steps": 0}, "d_steps"), ({"r1_gamma": -1.0}, "r1_gamma"), ({"lr_gen": 0.0}, "lr_gen"),
                       ({"augment": "rotate"}, "rotate")]:
        with pytest.raises(ConfigError, match=match):
            make(**bad)


def test_spectral_norm_and_augment_change_what_the_discriminator_sees():
    plain, normed = make(), make(spectral_norm=True)
    assert not any("parametrizations" in k for k in plain.state_dict())
    assert any("parametrizations" in k for k in normed.state_dict())
    augmented = make(augment="translation,cutout")
    torch.manual_seed(1)
    a = augmented._see(bars(), None)
    torch.manual_seed(2)
    b = augmented._see(bars(), None)
    assert not torch.allclose(a, b)  # random augmentations differ per call
    assert torch.allclose(plain._see(bars(), None), plain._see(bars(), None))


# --- training health -----------------------------------------------------------------------------


def test_health_warnings_need_a_lasting_symptom_and_fire_once_per_stretch():
    gan = make()
    healthy = {"gen/spread": 0.5, "disc/real_spread": 0.6, "disc/real_acc": 0.7, "disc/fake_acc": 0.6}
    collapsed = {**healthy, "gen/spread": 0.01}
    winning = {**healthy, "disc/real_acc": 1.0, "disc/fake_acc": 1.0}
    assert gan.health_warnings(healthy) == []
    assert [gan.health_warnings(collapsed) for _ in range(3)] == [[], [], []]
    (message,) = gan.health_warnings(collapsed)
    assert "collapsing" in message and "0.010" in message
    assert gan.health_warnings(collapsed) == []  # once per stretch
    outs = [gan.health_warnings(winning) for _ in range(4)]
    assert outs[:3] == [[], [], []] and "wins outright" in outs[3][0]
    assert gan.health_warnings({}) == []  # records without these keys (other logs) are fine


def test_health_warnings_wait_for_the_start_of_training_to_pass():
    from genforge.families.gan import HEALTH_WARMUP_STEPS

    gan = make()
    start = {"gen/spread": 0.13, "disc/real_spread": 0.6, "disc/real_acc": 1.0, "disc/fake_acc": 1.0}
    early = [gan.health_warnings({**start, "step": step}) for step in range(25, HEALTH_WARMUP_STEPS, 25)]
    assert early == [[]] * len(early)  # a narrow generator and a winning D at first: how GANs start
    later = [gan.health_warnings({**start, "step": HEALTH_WARMUP_STEPS + 25 * i}) for i in range(4)]
    assert later[:3] == [[], [], []] and len(later[3]) == 2  # the same symptoms once past the start: both reported


def test_trainer_logs_grad_norms_and_health_warnings(tmp_path):
    import json

    import genforge

    result = genforge.train(family="gan", data="digits", out=tmp_path / "run", steps=6, progress=False,
                            overrides=["train.log_every=1", "train.sample_every=0", "model.width=8", "model.latent_dim=8"])
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all("disc/grad_norm" in r and "gen/grad_norm" in r and "gen/spread" in r for r in records)
    assert all("disc/real_acc" in r and "disc/fake_acc" in r for r in records)
    assert isinstance(result.warnings, list)


# --- latent tools --------------------------------------------------------------------------------


def test_slerp_keeps_the_norm_on_the_shell_and_hits_the_end_points():
    a, b = torch.randn(64, generator=gen(1)), torch.randn(64, generator=gen(2))
    path = slerp(a, b, torch.linspace(0, 1, 9))
    assert torch.allclose(path[0], a, atol=1e-5) and torch.allclose(path[-1], b, atol=1e-5)
    norms = path.norm(dim=1)
    expected = torch.linspace(float(a.norm()), float(b.norm()), 9)
    assert torch.allclose(norms, expected, rtol=1e-4)  # a straight line would dip in the middle
    assert (a + b).norm() / 2 < norms[4] * 0.9
    grid = interpolation(torch.stack([a, b, -a, -b]), 3)
    assert grid.shape == (9, 64) and torch.allclose(grid[0], a, atol=1e-5) and torch.allclose(grid[8], -b, atol=1e-5)
    with pytest.raises(ConfigError):
        interpolation(torch.stack([a, b, a]), 3)
    assert torch.equal(blend(a, b, 0.0), a) and torch.allclose(blend(a, b, 1.0), b)
    with pytest.raises(ConfigError, match="truncation"):
        truncate(a, 1.5)


def test_truncation_pulls_samples_to_the_mean_image():
    gan = make()
    at_mean = gan.sample(4, generator=gen(0), truncation=0.0)
    assert torch.allclose(at_mean, at_mean[:1].expand_as(at_mean))
    assert torch.equal(gan.sample(4, generator=gen(0), truncation=1.0), gan.sample(4, generator=gen(0)))
    spread = [gan.sample(32, generator=gen(1), truncation=psi).std(dim=0).mean().item() for psi in (0.3, 1.0)]
    assert spread[0] < spread[1]


def test_inversion_recovers_a_generated_image():
    gan = make(SPEC)
    train(gan, {"x": bars(), "y": torch.arange(8) % 3}, steps=5)  # moves BatchNorm's running statistics
    z = torch.randn(2, 8, generator=gen(5))
    labels = torch.tensor([1, 2])
    target = gan.decode(z, labels)
    found, chosen = gan.encode(target, generator=gen(0), steps=300, restarts=3)
    error = (gan.decode(found, chosen) - target).pow(2).mean().item()
    assert error < 2e-3, error
    known, none = gan.encode(target[:1], label=1, generator=gen(0), steps=50, restarts=2)
    assert none.tolist() == [1]
    with pytest.raises(ConfigError, match="expected images shaped"):
        gan.encode(torch.zeros(1, 3, 8, 8))


def test_spread_sees_one_image_per_class_as_collapse():
    from genforge.families.gan import spread

    labels = torch.arange(12) % 3
    varied = torch.rand(12, 1, 8, 8, generator=gen(0)) * 2 - 1
    one_per_class = varied[:3][labels]  # every image of a class identical
    assert spread(one_per_class, None) > 0.3  # the batch as a whole still varies...
    assert spread(one_per_class, labels) < 1e-6  # ...not within a class
    assert spread(varied, labels) > 0.3
