"""The GAN on tables (CTGAN's recipe): the packed critic's batch check, training-by-sampling's conditions and
matching real rows, valid output spans, an overfitted tiny table, and a table run from a CSV file to sampled
rows with the original header."""

from __future__ import annotations

import pytest
import torch
from tabletools import check_sampled_patients, patients_csv

import genforge
from genforge import draws
from genforge.data.spec import DataSpec
from genforge.errors import ConfigError
from genforge.families import get_family
from genforge.families.table_gan import TableGAN, TableGANConfig, choose_categories, matching_rows
from genforge.nets.spans import gumbel_activate, spans_of

pytestmark = pytest.mark.usefixtures("one_thread")

# a value with 2 modes and a missing flag, a 4-category column, a 2-category column: 9 dims, 6 conditioning entries
LAYOUT = {"spans": [{"column": "a", "kind": "value", "start": 0, "width": 1},
                    {"column": "a", "kind": "mode", "start": 1, "width": 2},
                    {"column": "a", "kind": "missing", "start": 3, "width": 1},
                    {"column": "b", "kind": "category", "start": 4, "width": 4},
                    {"column": "c", "kind": "category", "start": 8, "width": 2}],
          "columns": []}
SPEC = DataSpec(modality="table", shape=(10,), table=LAYOUT)
SMALL = dict(latent_dim=8, generator_dim=[32], discriminator_dim=[32])


def rows(b: list[int], c: list[int]) -> torch.Tensor:
    n = len(b)
    x = torch.zeros(n, 10)
    x[:, 0] = torch.linspace(-0.9, 0.9, n)
    x[:, 1] = 1
    x[:, 3] = 1
    x[torch.arange(n), 4 + torch.tensor(b)] = 1
    x[torch.arange(n), 8 + torch.tensor(c)] = 1
    return x


def test_the_gan_on_table_data_is_ctgan_and_on_images_the_image_gan():
    assert get_family("gan", "table") is TableGAN
    assert get_family("gan", "image").__name__ == "GAN" and get_family("gan") is get_family("gan", "image")
    with pytest.raises(ConfigError, match="does not handle"):
        get_family("gan", "image").check_accepts(SPEC, "rows")


def test_the_batch_must_be_a_multiple_of_pac():
    gan = TableGAN(TableGANConfig(pac=4, **SMALL), SPEC)
    with pytest.raises(ConfigError, match=r"train.batch_size \(6\) must be a multiple of model.pac \(4\)"):
        next(gan.training_step({"x": rows([0] * 6, [0] * 6)}))


def test_conditions_follow_log_frequency_and_real_rows_hold_their_condition():
    torch.manual_seed(0)
    # column b: categories 0, 1, 2 held 90, 9, 1 times, category 3 never; column c: 50/50
    b = [0] * 90 + [1] * 9 + [2] * 1
    x = rows(b, [i % 2 for i in range(100)])[torch.randperm(100)]
    gan = TableGAN(TableGANConfig(pac=10, **SMALL), SPEC)
    fake_choice, real, real_cond = gan.training_conditions(x)
    assert torch.equal(gan.category_counts, torch.tensor([90, 9, 1, 0, 50, 50]))
    assert 3 not in fake_choice.tolist() and real_cond[:, 3].sum() == 0  # never a category the batch lacks
    held = real[:, 4:10][torch.arange(100), real_cond.argmax(1)]
    assert torch.equal(held, torch.ones(100))  # each real row holds its condition's category
    assert set(real_cond.sum(1).tolist()) == {1.0}

    # many draws: a column uniformly, then log(count + 1) weights within it
    counts = gan.category_counts
    choice = choose_categories(torch.log1p(counts.float()), gan.entry_column, 2, torch.rand(40_000, 2))
    share = torch.bincount(choice, minlength=6).float() / 40_000
    weights = torch.log1p(torch.tensor([90.0, 9, 1, 0]))
    expected = torch.cat([0.5 * weights / weights.sum(), torch.tensor([0.25, 0.25])])
    torch.testing.assert_close(share, expected, atol=0.01, rtol=0)


def test_matching_rows_draw_among_the_holders_or_fall_back_to_any_row():
    entries = torch.tensor([[0, 3], [1, 3], [0, 4], [0, 3]])  # 4 rows, columns of entries 0..2 and 3..4
    counts = torch.bincount(entries.reshape(-1), minlength=5)
    u = torch.tensor([0.0, 0.4, 0.99, 0.5, 0.6, 0.99])
    choice = torch.tensor([0, 0, 0, 1, 2, 4])
    assert matching_rows(entries, counts, choice, u).tolist() == [0, 2, 3, 1, 2, 2]  # entry 2: nobody, row 4 x 0.6


def test_training_outputs_are_soft_one_hots_and_samples_exact_ones():
    spans = spans_of(SPEC)
    out = torch.randn(6, 10) * 3
    torch.manual_seed(0)
    soft = gumbel_activate(out, spans, tau=0.2)
    assert torch.equal(soft[:, 0], torch.tanh(out[:, 0]))
    for lo, hi in ((1, 3), (3, 4), (4, 8), (8, 10)):
        torch.testing.assert_close(soft[:, lo:hi].sum(1), torch.ones(6))
        assert (soft[:, lo:hi] >= 0).all()
    # the Gumbel noise is the whole batch's: two halves drawn as parts equal the unsplit batch
    halves = []
    for index in range(2):
        torch.manual_seed(0)
        with draws.part(index, 2):
            halves.append(gumbel_activate(out[index * 3:(index + 1) * 3], spans, tau=0.2))
    torch.testing.assert_close(torch.cat(halves), soft)

    gan = TableGAN(TableGANConfig(**SMALL), SPEC)
    x = gan.sample(50, generator=torch.Generator().manual_seed(0))
    assert x[:, 0].abs().max() < 1
    for lo, hi in ((1, 3), (3, 4), (4, 8), (8, 10)):
        assert torch.equal(x[:, lo:hi].sum(1), torch.ones(50)) and set(x[:, lo:hi].unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(x, gan.sample(50, generator=torch.Generator().manual_seed(0)))


def test_a_table_without_categories_has_no_conditional_vector():
    spec = DataSpec(modality="table", shape=(3,), table={"spans": LAYOUT["spans"][:2], "columns": []})
    gan = TableGAN(TableGANConfig(pac=2, **SMALL), spec)
    assert gan.cond_width == 0 and gan.generator[0].fc.in_features == 8
    phases = gan.training_step({"x": rows([0] * 4, [0] * 4)[:, :3]})
    assert [name for name, _, _ in phases] == ["disc", "gen"]
    assert gan.sample(3).shape == (3, 3)


def test_table_gan_learns_a_tiny_table():
    """Two clusters tied to a category held by 70% and 30% of the rows: samples reproduce the share and the
    value each category goes with."""
    torch.manual_seed(0)
    spec = DataSpec(modality="table", shape=(3,), table={"spans": [
        {"column": "v", "kind": "value", "start": 0, "width": 1},
        {"column": "k", "kind": "category", "start": 1, "width": 2}], "columns": []})
    n = 200
    k = (torch.arange(n) >= 140).long()
    data = torch.zeros(n, 3)
    data[:, 0] = torch.where(k == 0, -0.5, 0.5) + 0.05 * torch.randn(n)
    data[torch.arange(n), 1 + k] = 1
    gan = TableGAN(TableGANConfig(latent_dim=8, generator_dim=[64, 64], discriminator_dim=[64, 64]), spec)
    groups = gan.optimizer_groups()
    opts = {name: torch.optim.Adam(g.params, lr=1e-3, betas=(0.5, 0.9)) for name, g in groups.items()}
    for _ in range(300):
        for name, loss, _ in gan.training_step({"x": data[torch.randint(n, (100,))]}):
            opts[name].zero_grad()
            loss.backward()
            opts[name].step()
    samples = gan.sample(1000, generator=torch.Generator().manual_seed(0))
    category = samples[:, 1:3].argmax(1)
    assert abs(category.float().mean() - 0.3) < 0.05  # the conditions keep the training share
    value = samples[:, 0]
    assert value[category == 0].mean() < 0 < value[category == 1].mean()
    assert value[category == 1].mean() - value[category == 0].mean() > 0.6  # the data's: 1.0
    assert ((value > 0) == (category == 1)).float().mean() > 0.85


def test_a_table_gan_run_from_csv_samples_rows_with_the_original_header(tmp_path):
    path = patients_csv(tmp_path)
    run = tmp_path / "run"
    # two micro-batches of 20 a step: each is packed on its own, and both add their rows to the counts
    result = genforge.train("gan", f"csv:{path}", run, steps=20, batch_size=20, grad_accum=2, progress=False,
                            overrides=["model.latent_dim=8", "model.generator_dim=[32]",
                                       "model.discriminator_dim=[32]", "train.sample_every=0"])
    assert result.step == 20
    model = genforge.load(run, device="cpu")
    counts = model.family.category_counts
    assert int(counts.sum()) == 20 * 40 and counts.max() > 2 * counts.min()  # the rows seen: 3 "no" to 1 "yes"
    check_sampled_patients(model, tmp_path / "gen")

    with pytest.raises(ConfigError, match="train.batch_size"):
        genforge.train("gan", f"csv:{path}", tmp_path / "bad", steps=1, batch_size=25, progress=False,
                       overrides=["model.generator_dim=[8]", "model.discriminator_dim=[8]"])
    assert not (tmp_path / "bad").exists()  # refused before anything was made
