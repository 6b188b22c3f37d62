"""Diffusion from the command line: samplers, labels and guidance, inpainting, img2img and the
likelihood bound in `genforge eval`, on a tiny class-conditional run of the 8x8 digits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from clitools import invoke, one_error_line, run_main
from PIL import Image

from genforge.data.codecs import read_png_params

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = ["--set", "model.base_channels=8", "--set", "model.channel_mults=[1,2]", "--set", "model.attention_resolutions=[4]",
        "--set", "model.timesteps=100", "--set", "model.sample_steps=4"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("diffusion") / "run"
    invoke("train", "--family", "diffusion", "--data", "digits", "--out", path, "--steps", "20", "--quiet",
           "--set", "train.sample_every=0", *TINY)
    return path


@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("inputs") / "digit.png"
    pixels = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)
    Image.fromarray(pixels, "L").save(path)
    return path


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.int16)


def test_class_conditional_run_samples_with_each_sampler_label_and_guidance(run, tmp_path):
    config = (run / "config.yaml").read_text()
    assert "class_conditional: true" in config
    for sampler in ("ddpm", "ddim", "euler", "heun", "dpmpp_2m"):
        out = tmp_path / sampler
        invoke("sample", run, "-n", "2", "--sampler", sampler, "--steps", "3", "--label", "7", "--guidance", "2",
               "--spacing", "karras", "--out", out)
        settings = json.loads((out / "settings.json").read_text())
        assert settings["sampler"] == sampler and settings["label"] == "7" and settings["guidance"] == 2.0
        assert read_png_params(out / "000001.png")["spacing"] == "karras"
    a, b = tmp_path / "g0-a", tmp_path / "g0-b"
    invoke("sample", run, "-n", "2", "--label", "1", "--guidance", "0", "--out", a)
    invoke("sample", run, "-n", "2", "--label", "5", "--guidance", "0", "--out", b)
    assert (a / "000000.png").read_bytes() != b"" and np.array_equal(pixels(a / "grid.png"), pixels(b / "grid.png"))


def test_refine_inpaints_keeping_the_known_pixels(run, picture, tmp_path):
    mask = tmp_path / "mask.png"
    m = np.zeros((8, 8), np.uint8)
    m[2:6, 2:6] = 255
    Image.fromarray(m, "L").save(mask)
    out = tmp_path / "inpaint"
    text = invoke("refine", run, "--input", picture, "--mask", mask, "-n", "3", "--seed", "1", "--out", out,
                  "--label", "3", "--sampler", "ddpm")
    assert "3 inpaint results" in text
    original = pixels(picture)
    for i in range(3):
        result = pixels(out / f"{i:06d}.png")
        assert np.array_equal(result[m == 0], original[m == 0])
    assert not np.array_equal(pixels(out / "000000.png")[m > 0], original[m > 0])
    params = read_png_params(out / "000000.png")
    assert params["mode"] == "inpaint" and params["parent"] == str(picture) and params["seed"] == 1
    assert (out / "comparison.png").is_file() and (out / "grid.png").is_file()


def test_refine_img2img_strength_zero_returns_the_input_and_one_ignores_it(run, picture, tmp_path):
    invoke("refine", run, "--input", picture, "--strength", "0", "-n", "1", "--out", tmp_path / "s0")
    assert np.array_equal(pixels(tmp_path / "s0" / "000000.png"), pixels(picture))
    invoke("refine", run, "--input", picture, "--strength", "1", "-n", "2", "--seed", "4", "--label", "2",
           "--out", tmp_path / "s1")
    invoke("sample", run, "-n", "2", "--seed", "4", "--label", "2", "--out", tmp_path / "plain")
    assert np.array_equal(pixels(tmp_path / "s1" / "grid.png"), pixels(tmp_path / "plain" / "grid.png"))
    assert read_png_params(tmp_path / "s1" / "000000.png")["strength"] == 1.0


def test_eval_reports_the_diffusion_likelihood_bound(run):
    text = invoke("eval", run, "--n", "20", "--features", "random")
    assert "bits_per_dim" in text
    result = json.loads((run / "eval.json").read_text())
    scores = [r for r in result["results"].values()][0]
    assert scores["metrics"]["bits_per_dim"] > 0


def test_bad_refine_and_sampling_options_get_one_line_errors(run, picture, tmp_path):
    cases = [
        (["refine", run, "--input", picture], "exactly one of --mask"),
        (["refine", run, "--input", picture, "--strength", "0.5", "--mask", picture], "exactly one of --mask"),
        (["refine", run, "--input", tmp_path / "nope.png", "--strength", "0.5"], "does not exist"),
        (["refine", run, "--input", picture, "--strength", "1.5"], "strength must be a number in [0, 1]"),
        (["refine", run, "--input", picture, "--mask", tmp_path / "nomask.png"], "does not exist"),
        (["sample", run, "--sampler", "plms"], "unknown sampler 'plms'"),
        (["sample", run, "--label", "11"], "label 11 is out of range"),
        (["sample", run, "--guidance", "-2"], "guidance"),
    ]
    for args, expected in cases:
        assert expected in one_error_line(run_main(*args)), args
