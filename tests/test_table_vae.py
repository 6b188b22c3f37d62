"""The VAE on tables (TVAE's recipe): span-wise outputs and likelihood, an overfitted tiny table, and a table
run from a CSV file to sampled rows with the original header."""

from __future__ import annotations

import pytest
import torch
from tabletools import LAYOUT, SPEC, check_sampled_patients, fit_steps, patients_csv, rows

import genforge
from genforge.data.spec import DataSpec
from genforge.errors import ConfigError
from genforge.families import get_family
from genforge.families.table_vae import TableVAE, TableVAEConfig
from genforge.nets.spans import activate, reconstruction_nll, spans_of

pytestmark = pytest.mark.usefixtures("one_thread")

def test_the_vae_on_table_data_is_tvae_and_on_images_the_image_vae():
    assert get_family("vae", "table") is TableVAE and get_family("vae", "image").__name__ == "VAE"
    assert get_family("vae") is get_family("vae", "image")
    with pytest.raises(ConfigError, match="does not handle"):
        get_family("vqvae", "table").check_accepts(SPEC, "rows")


def test_spans_are_checked_to_tile_the_row():
    bad = DataSpec(modality="table", shape=(8,), table=LAYOUT)
    with pytest.raises(ConfigError, match="covers 7 of the row's 8 values"):
        spans_of(bad)
    with pytest.raises(ConfigError, match="no table layout"):
        spans_of(DataSpec(modality="table", shape=(7,), table={"spans": []}))


def test_activate_gives_tanh_values_and_one_hot_groups_and_the_nll_is_exact():
    spans = spans_of(SPEC)
    out = torch.randn(5, 7)
    x = activate(out, spans, torch.Generator().manual_seed(0))
    assert torch.equal(x[:, 0], torch.tanh(out[:, 0]))
    for lo, hi in ((1, 3), (3, 6), (6, 7)):
        assert torch.equal(x[:, lo:hi].sum(1), torch.ones(5)) and set(x[:, lo:hi].unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(activate(out, spans, sample=False)[:, 3:6].argmax(1), out[:, 3:6].argmax(1))
    sigma = torch.full((7,), 0.5)
    nll = reconstruction_nll(out, x, spans, sigma)
    gaussian = -torch.distributions.Normal(torch.tanh(out[:, 0]), 0.5).log_prob(x[:, 0])
    categorical = sum(-torch.log_softmax(out[:, lo:hi], 1)[torch.arange(5), x[:, lo:hi].argmax(1)]
                      for lo, hi in ((1, 3), (3, 6), (6, 7)))
    torch.testing.assert_close(nll, gaussian + categorical)


def test_table_vae_overfits_a_tiny_table():
    """Four rows: the reconstruction NLL falls far below its start and samples reproduce the rows' categories."""
    torch.manual_seed(0)
    x = rows([-0.5, -0.4, 0.6, 0.7], [0, 0, 1, 1], [0, 0, 2, 2])
    vae = TableVAE(TableVAEConfig(latent_dim=4, hidden=[32, 32]), SPEC)
    losses = fit_steps(vae, x, 300, torch.optim.Adam(vae.parameters(), lr=1e-2), record="recon")
    assert losses[-1] < losses[0] - 5
    samples = vae.sample(400, generator=torch.Generator().manual_seed(0))
    category = samples[:, 3:6].argmax(1)
    assert (category != 1).float().mean() > 0.95  # category 1 never occurs in the rows
    mode = samples[:, 1:3].argmax(1)
    assert ((mode == 0) == (category == 0)).float().mean() > 0.8  # the columns' dependence is learned


def test_a_table_run_from_csv_samples_rows_with_the_original_header(tmp_path):
    run = tmp_path / "run"
    result = genforge.train("vae", f"csv:{patients_csv(tmp_path)}", run, steps=60, batch_size=64, progress=False,
                            overrides=["model.latent_dim=8", "model.hidden=[32,32]", "train.sample_every=0"])
    assert result.step == 60
    check_sampled_patients(genforge.load(run, device="cpu"), tmp_path / "gen")
