"""Capabilities are declared, each with a settings dataclass that checks itself; the API dispatches on the
table, a missing capability is one line naming what the run offers, and `genforge info --json` lists
every option with its default and range."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError, fields

import numpy as np
import pytest
from clitools import one_error_line, run_main
from PIL import Image

import genforge
from genforge.errors import ConfigError
from genforge.families import FAMILIES, get_family
from genforge.families.capabilities import CAPABILITIES, KINDS, DiffusionSampling, Settings, TextSampling

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("caps")
    text = root / "t.py"
    text.write_text("def f(x):\n    return x\n" * 40)
    common = ["train.sample_every=0"]
    plans = {
        "gan": ("digits", ["model.width=8", "model.latent_dim=8"]),
        "diffusion": ("digits", ["model.base_channels=8", "model.channel_mults=[1]", "model.attention_resolutions=[]"]),
        "transformer": (f"text:{text}", ["data.block_size=16", "model.n_layer=1", "model.n_embd=16", "model.n_head=2"]),
    }
    out = {}
    for family, (data, overrides) in plans.items():
        out[family] = root / family
        genforge.train(family, data, out[family], steps=1, progress=False, overrides=[*common, *overrides])
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "in.png")
    out["image"] = root / "in.png"
    return out


def test_every_family_declares_known_capabilities_with_checked_settings():
    for name in FAMILIES:
        table = get_family(name).capabilities
        assert "sample" in table
        for capability, settings in table.items():
            assert capability in CAPABILITIES and issubclass(settings, Settings)
            for option in settings.describe():
                assert option["kind"] in KINDS and option["help"]
                json.dumps(option)
            settings()  # the defaults are valid


def test_settings_check_themselves_and_are_frozen():
    with pytest.raises(ConfigError, match=r"sampler 'magic'; expected one of: ddpm, ddim"):
        DiffusionSampling(sampler="magic")
    with pytest.raises(ConfigError, match=r"guidance must be a number >= 0"):
        DiffusionSampling(guidance=-1.0)
    with pytest.raises(ConfigError, match=r"steps must be an integer"):
        DiffusionSampling(steps=2.5)
    with pytest.raises(ConfigError, match=r"top_p must be a number in \(0, 1\] \(1 keeps every token\)"):
        TextSampling(top_p=0)
    with pytest.raises(ConfigError, match=r"sample with a diffusion run does not take temperature; it takes steps"):
        DiffusionSampling.make({"temperature": 1.0}, "diffusion", "sample")
    settings = DiffusionSampling.make({"steps": 4, "eta": None}, "diffusion", "sample")
    assert settings.given() == {"steps": 4}
    with pytest.raises(FrozenInstanceError):
        settings.steps = 5
    assert [f.name for f in fields(TextSampling)][-1] == "stop"


def test_a_capability_the_run_lacks_is_one_line_naming_what_it_offers(runs):
    gan = genforge.load(runs["gan"], device="cpu")
    with pytest.raises(ConfigError, match=r"is a gan run, which offers: sample, encode, interpolate, variations"):
        gan.edit_attribute(runs["image"], 3, 8)
    with pytest.raises(ConfigError, match=r"inpaint needs a run that offers inpaint"):
        gan.inpaint(runs["image"], runs["image"])
    assert gan.offers("variations") and not gan.offers("infill")
    text = genforge.load(runs["transformer"], device="cpu")
    assert "infill" in type(text.family).capabilities and not text.offers("infill")  # not trained with --fim-rate
    with pytest.raises(ConfigError, match="not trained for fill-in-the-middle"):
        text.infill("a", "b")


def test_the_gan_attribute_option_is_one_line_not_a_traceback(runs):
    """Found by a new user: --attribute (offered by refine --help for GAN/VAE) on a GAN run crashed with an
    AttributeError; the GAN declares no attribute capability, so it is refused in one line."""
    line = one_error_line(run_main("refine", runs["gan"], "--input", runs["image"], "--attribute", "3:8",
                                   "--steps", "2"))
    assert "attribute" in line and "offers: sample, encode, interpolate, variations" in line


def test_info_json_lists_capabilities_with_their_options_defaults_and_ranges(runs):
    proc = run_main("info", runs["diffusion"], "--json")
    assert proc.returncode == 0, proc.stderr
    about = json.loads(proc.stdout)
    assert about["family"] == "diffusion" and about["data"]["shape"] == [1, 8, 8] and about["step"] == 1
    caps = about["capabilities"]
    assert list(caps) == ["sample", "img2img", "inpaint", "likelihood"]
    options = {o["name"]: o for o in caps["img2img"]["settings"]}
    assert options["strength"]["default"] == 0.5 and options["strength"]["range"]["text"] == "in [0, 1]"
    assert options["sampler"]["choices"] == ["ddpm", "ddim", "euler", "heun", "dpmpp_2m"]
    assert caps["inpaint"]["inputs"] == ["image", "mask", "n", "seed"]
    assert {o["name"] for o in caps["inpaint"]["settings"]} >= {"resample", "guidance", "label"}
    text = json.loads(run_main("info", runs["transformer"], "--json").stdout)
    assert "infill" not in text["capabilities"] and "stream" in text["capabilities"]
    plain = run_main("info", runs["gan"])
    assert "can variations" in plain.stdout and "strength" in plain.stdout


def test_refine_and_interpolation_are_one_python_call_with_the_command_lines_layout(runs, tmp_path):
    """genforge.refine.refine is what `genforge refine` runs: same mode choice, same files."""
    from genforge.refine import refine, sample_interpolation

    diffusion = genforge.load(runs["diffusion"], device="cpu")
    done = refine(diffusion, input=runs["image"], strength=0.5, n=2, steps=2, out=tmp_path / "i2i")
    assert done.mode == "img2img" and [p.name for p in done.paths] == ["000000.png", "000001.png"]
    assert (tmp_path / "i2i" / "comparison.png").is_file() and (tmp_path / "i2i" / "grid.png").is_file()
    assert json.loads((tmp_path / "i2i" / "settings.json").read_text())["strength"] == 0.5
    gan = genforge.load(runs["gan"], device="cpu")
    done = refine(gan, input=runs["image"], n=3, steps=2, out=tmp_path / "var")
    assert done.mode == "variations" and done.details["inversion_mse"] >= 0
    assert (tmp_path / "var" / "reconstruction" / "000000.png").is_file()
    strip = sample_interpolation(gan, "3,7", n=4, out=tmp_path / "walk")
    assert len(strip.paths) == 4 and Image.open(tmp_path / "walk" / "strip.png").size == (4 * 10 + 2, 12)
    with pytest.raises(ConfigError, match="exactly one of --mask"):
        refine(diffusion, input=runs["image"])
    cli = run_main("refine", runs["diffusion"], "--input", runs["image"], "--strength", "0.5", "-n", "2", "--steps", "2",
                   "--out", tmp_path / "cli")
    assert cli.returncode == 0 and "wrote 2 img2img results" in cli.stdout
    for name in ("000000.png", "000001.png", "comparison.png"):
        assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "i2i" / name).read_bytes()
