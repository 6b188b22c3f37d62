"""Diffusion on tables (TabDDPM's recipe): the multinomial chain's closed forms against step-by-step and hand
computations, the Gaussian part's noising statistics, an overfitted tiny table, seeded and conditional sampling,
and a table run from a CSV file to sampled rows with the original header."""

from __future__ import annotations

import math

import pytest
import torch
from tabletools import SPEC, check_sampled_patients, fit_steps, patients_csv, rows

import genforge
from genforge.data.spec import DataSpec
from genforge.errors import ConfigError
from genforge.families import get_family
from genforge.families.table_conditions import Condition
from genforge.families.table_diffusion import (
    TableDiffusion,
    TableDiffusionConfig,
    categorical_kl,
    log_one_hot,
    q_marginal,
    q_posterior,
)
from genforge.sampling.schedules import make_alphas_cumprod

pytestmark = pytest.mark.usefixtures("one_thread")

def uniform(k: int, dtype=torch.float64) -> torch.Tensor:
    return torch.full((k,), -math.log(k), dtype=dtype)


def small(**changes) -> TableDiffusion:
    torch.manual_seed(0)
    return TableDiffusion(TableDiffusionConfig(**{"hidden": [64, 64], "time_dim": 32, "timesteps": 40, **changes}), SPEC)


def test_diffusion_on_table_data_is_tabddpm_and_on_images_the_image_diffusion():
    assert get_family("diffusion", "table") is TableDiffusion
    assert get_family("diffusion") is get_family("diffusion", "image") and get_family("diffusion").__name__ == "Diffusion"
    assert [o["name"] for o in TableDiffusion.capabilities["sample"].describe()] == ["where", "steps"]


def test_the_multinomial_marginal_is_the_one_step_transitions_composed():
    """q(x_t | x_0) in closed form equals x_0 times the t one-step transition matrices (1 - beta) I + beta / K."""
    k = 4
    abar = make_alphas_cumprod("linear", 30)
    betas = 1 - abar / torch.cat([abar.new_ones(1), abar[:-1]])
    for x0 in (torch.tensor([0.0, 0.0, 1.0, 0.0], dtype=torch.float64), torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)):
        p = x0.clone()
        for t in range(30):
            p = p @ ((1 - betas[t]) * torch.eye(k, dtype=torch.float64) + betas[t] / k)
            closed = q_marginal(x0.clamp_min(1e-300).log(), abar[t].log(), uniform(k)).exp()
            assert torch.allclose(closed, p, rtol=1e-12, atol=1e-12)
    assert abs(float(p.sum()) - 1) < 1e-12 and float((p - 1 / k).abs().max()) < 0.05  # near uniform at the end


@pytest.mark.parametrize("s,t", [(3, 4), (2, 9)])
def test_the_posterior_is_bayes_rule_and_sums_to_one(s, t):
    k = 3
    abar = make_alphas_cumprod("cosine", 12)
    x_t = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    for x0 in (torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64), torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)):
        prior = abar[s] * x0 + (1 - abar[s]) / k  # q(x_s | x_0)
        keep = abar[t] / abar[s]
        likelihood = keep * x_t + (1 - keep) / k  # q(x_t = 2 | x_s = j) for each j
        by_hand = prior * likelihood / (prior * likelihood).sum()
        post = q_posterior(x0.clamp_min(1e-300).log(), x_t.clamp_min(1e-300).log(), uniform(k), abar[s].log(),
                           abar[t].log()).exp()
        assert torch.allclose(post, by_hand, rtol=1e-12, atol=1e-12)
        assert abs(float(post.sum()) - 1) < 1e-12


def test_at_the_first_step_the_posterior_is_the_data_and_the_kl_the_decoder_nll():
    k = 3
    x0, x_t = torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[0.0, 0.0, 1.0]])
    log_abar_t = torch.tensor(math.log(0.99))
    true = q_posterior(log_one_hot(x0), log_one_hot(x_t), uniform(k, torch.float32), torch.tensor(0.0), log_abar_t)
    assert torch.allclose(true.exp(), x0)
    model = q_posterior(torch.tensor([[0.3, -1.0, 2.0]]).log_softmax(-1), log_one_hot(x_t), uniform(k, torch.float32),
                        torch.tensor(0.0), log_abar_t)
    assert torch.allclose(categorical_kl(true, model), -model[:, 1])


def test_the_multinomial_loss_on_padded_groups_is_t_times_each_groups_kl_averaged():
    """The groups (widths 2, 3 and 1) padded into one (B, 3, 3) tensor give what each group gives on its own."""
    family = small()
    x0 = rows([-0.5, -0.4, 0.6, 0.7], [0, 0, 1, 1], [0, 1, 2, 2])
    t = torch.tensor([0, 3, 10, 39])
    g = torch.Generator().manual_seed(0)
    x_t = family.noised(x0, t, torch.randn(4, 1, generator=g), torch.rand(4, 3, 3, generator=g))
    out = torch.randn(4, 7, generator=g)
    log_abar_s, log_abar_t = family.log_abar[t].view(-1, 1), family.log_abar[t + 1].view(-1, 1)
    kl = torch.zeros(4)
    for lo, hi in ((1, 3), (3, 6), (6, 7)):
        log_x_t = log_one_hot(x_t[:, lo:hi])
        true = q_posterior(log_one_hot(x0[:, lo:hi]), log_x_t, uniform(hi - lo, torch.float32), log_abar_s, log_abar_t)
        model = q_posterior(out[:, lo:hi].log_softmax(-1), log_x_t, uniform(hi - lo, torch.float32), log_abar_s,
                            log_abar_t)
        kl += categorical_kl(true, model)
    assert torch.allclose(family.multinomial_loss(out, x0, x_t, t), 40 * kl / 3, rtol=1e-5)


def test_noising_gives_the_forward_marginals_of_both_parts():
    """At a fixed t, many noised copies of a row: the value's mean sqrt(abar) x_0 and variance 1 - abar, and each
    group's categories in q(x_t | x_0)'s proportions, as exact one-hots."""
    family = small(timesteps=10, schedule="linear")
    n, t = 40_000, 4
    x0 = rows([0.6], [1], [0]).expand(n, 7)
    g = torch.Generator().manual_seed(0)
    x_t = family.noised(x0, torch.full((n,), t), torch.randn(n, 1, generator=g), torch.rand(n, 3, 3, generator=g))
    abar = float(family.alphas_cumprod[t])
    assert abs(float(x_t[:, 0].mean()) - math.sqrt(abar) * 0.6) < 4 * math.sqrt((1 - abar) / n)
    assert abs(float(x_t[:, 0].var()) - (1 - abar)) < 0.02
    for lo, hi, hot in ((1, 3, 1), (3, 6, 0)):
        group = x_t[:, lo:hi]
        assert torch.equal(group.sum(1), torch.ones(n)) and set(group.unique().tolist()) == {0.0, 1.0}
        expected = abar * torch.nn.functional.one_hot(torch.tensor(hot), hi - lo) + (1 - abar) / (hi - lo)
        assert float((group.mean(0) - expected).abs().max()) < 0.01
    assert torch.equal(x_t[:, 6], torch.ones(n))  # a one-entry group has one state


def test_table_diffusion_overfits_a_tiny_table():
    """Four rows: the loss falls far below its start and samples hold the rows' categories in their proportions,
    each with its mode and value."""
    x = rows([-0.5, -0.4, 0.6, 0.7], [0, 0, 1, 1], [0, 0, 2, 2]).repeat(16, 1)
    family = small()
    losses = fit_steps(family, x, 400, torch.optim.Adam(family.parameters(), lr=3e-3))
    assert sum(losses[-50:]) / 50 < 0.3 * sum(losses[:10]) / 10
    samples = family.sample(400, generator=torch.Generator().manual_seed(0))
    category = samples[:, 3:6].argmax(1)
    share = torch.bincount(category, minlength=3).float() / 400
    assert share[1] < 0.05 and 0.35 < share[0] < 0.65  # category 1 never occurs; 0 and 2 half the rows each
    mode = samples[:, 1:3].argmax(1)
    assert ((mode == 0) == (category == 0)).float().mean() > 0.9  # the columns' dependence is learned
    assert abs(float(samples[category == 0, 0].mean()) + 0.45) < 0.15
    assert abs(float(samples[category == 2, 0].mean()) - 0.65) < 0.15


def test_same_seed_same_rows_fewer_steps_and_only_matching_rows_with_where():
    family = small()
    x = family.sample(200, generator=torch.Generator().manual_seed(3))
    assert x.shape == (200, 7) and float(x[:, 0].abs().max()) <= 1
    for lo, hi in ((1, 3), (3, 6), (6, 7)):
        assert torch.equal(x[:, lo:hi].sum(1), torch.ones(200)) and set(x[:, lo:hi].unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(x, family.sample(200, generator=torch.Generator().manual_seed(3)))
    few = family.sample(200, generator=torch.Generator().manual_seed(3), steps=5)
    assert few.shape == (200, 7) and not torch.equal(few, x)
    where = [Condition("b", 2)]
    matched = family.sample(100, generator=torch.Generator().manual_seed(0), where=where)
    assert matched.shape == (100, 7) and set(matched[:, 3:6].argmax(1).tolist()) == {2}
    assert torch.equal(matched, family.sample(100, generator=torch.Generator().manual_seed(0), where=where))


@pytest.mark.parametrize("spans,x", [
    ([{"column": "a", "kind": "value", "start": 0, "width": 1}, {"column": "a", "kind": "code", "start": 1, "width": 2}],
     [[0.5, -1.0, 1.0], [-0.5, 1.0, -1.0]]),
    ([{"column": "b", "kind": "category", "start": 0, "width": 3}], [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
], ids=["only continuous", "only one-hot"])
def test_a_table_with_one_kind_of_span_trains_and_samples(spans, x):
    spec = DataSpec(modality="table", shape=(3,), table={"spans": spans, "columns": []})
    family = TableDiffusion(TableDiffusionConfig(hidden=[16], time_dim=8, timesteps=10), spec)
    _, loss, _ = next(family.training_step({"x": torch.tensor(x)}))
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in family.parameters())
    assert family.sample(5, generator=torch.Generator().manual_seed(0)).shape == (5, 3)


def test_settings_out_of_range_are_one_line_errors():
    family = small()
    with pytest.raises(ConfigError, match="between 1 and 40"):
        family.sample(5, steps=41)
    with pytest.raises(ConfigError, match="steps must be an integer"):
        family.sample(5, steps=2.5)
    with pytest.raises(ConfigError, match="does not accept label"):
        family.sample(5, label=1)
    with pytest.raises(ConfigError, match="model.sample_steps must be an integer >= 1"):
        small(sample_steps=0)
    assert small(sample_steps=50).steps_for(None) == 40  # the default walks at most the chain's steps
    with pytest.raises(ConfigError, match="unknown schedule"):
        small(schedule="sigmoid")
    with pytest.raises(ConfigError, match="model.hidden"):
        small(hidden=[0])


def test_a_table_run_from_csv_samples_rows_with_the_original_header(tmp_path):
    run = tmp_path / "run"
    result = genforge.train("diffusion", f"csv:{patients_csv(tmp_path)}", run, steps=60, batch_size=64, progress=False,
                            overrides=["model.hidden=[32,32]", "model.time_dim=16", "model.timesteps=20",
                                       "train.sample_every=0"])
    assert result.step == 60
    model = genforge.load(run, device="cpu")
    check_sampled_patients(model, tmp_path / "gen")
    assert model.sample(20, seed=1, steps=5).shape[0] == 20  # fewer reverse steps per call, through the API
