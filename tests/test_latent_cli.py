"""Latent tools from the command line on a VAE: reconstruction and variations, interpolation between two
images, attribute vectors; and the same refine options refused where they do not apply."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from clitools import invoke, one_error_line, run_main

import genforge
from genforge.data.codecs import read_png_params

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vae") / "run"
    invoke("train", "--family", "vae", "--data", "digits", "--out", path, "--steps", "30", "--quiet",
           "--set", "train.sample_every=0")
    return path


@pytest.fixture(scope="module")
def inputs(run, tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("inputs")
    model = genforge.load(run)
    a, b = model.sample(2, seed=3, label=1)
    for name, image in (("a.png", a), ("b.png", b)):
        model.codec.save(image[None], folder / name.removesuffix(".png"), {})
    return folder / "a" / "000000.png", folder / "b" / "000000.png"


def test_vae_refine_writes_the_reconstruction_and_variations(run, inputs, tmp_path):
    text = invoke("refine", run, "--input", inputs[0], "-n", "3", "--out", tmp_path / "v")
    assert "3 variations" in text
    assert (tmp_path / "v" / "reconstruction" / "000000.png").is_file()
    assert read_png_params(tmp_path / "v" / "000000.png")["mode"] == "variations"


def test_vae_interpolates_between_two_images(run, inputs, tmp_path):
    invoke("refine", run, "--input", inputs[0], "--towards", inputs[1], "-n", "5", "--out", tmp_path / "walk")
    files = sorted((tmp_path / "walk").glob("0*.png"))
    assert len(files) == 5 and read_png_params(files[0])["towards"] == str(inputs[1])
    model = genforge.load(run)
    path = model.interpolate_images(inputs[0], inputs[1], n=5)
    z_a, _ = model.family.encode(model.load_image(inputs[0]))
    assert torch.allclose(path[0], model.family.decode(z_a)[0], atol=1e-5)  # starts at a's reconstruction


def test_vae_attribute_vectors_move_the_latent(run, inputs, tmp_path):
    text = invoke("refine", run, "--input", inputs[0], "--attribute", "1:7", "-n", "4", "--out", tmp_path / "attr")
    assert "4 attribute results" in text
    params = read_png_params(tmp_path / "attr" / "000000.png")
    assert params["attribute"] == "1:7" and params["strengths"] == [0.0, 0.5, 1.0, 1.5]
    edited = genforge.load(run).edit_attribute(inputs[0], 1, 7, strengths=[0.0, 1.0])
    assert not torch.allclose(edited[0], edited[1])


def test_latent_options_are_refused_where_they_do_not_apply(run, inputs, tmp_path):
    diffusion = tmp_path / "diff"
    invoke("train", "--family", "diffusion", "--data", "digits", "--out", diffusion, "--steps", "1", "--quiet",
           "--set", "train.sample_every=0", "--set", "model.base_channels=8", "--set", "model.channel_mults=[1,2]",
           "--set", "model.attention_resolutions=[4]")
    cases = [
        (["refine", diffusion, "--input", inputs[0], "--towards", inputs[1]], "work in a latent space"),
        (["refine", run, "--input", inputs[0], "--towards", inputs[1], "--attribute", "1:7"], "not both"),
        (["refine", run, "--input", inputs[0], "--attribute", "17"], "SOURCE:TARGET"),
        (["refine", run, "--input", inputs[0], "--attribute", "1:12"], "out of range"),
    ]
    for args, expected in cases:
        assert expected in one_error_line(run_main(*args)), args
