"""`genforge export`, `genforge import` and `genforge info --card` from the command line: dispatch on what a family
declares, model cards from the run's own files, atomic export folders, one-line errors (unknown format, a format the
family lacks, a missing peer), and export -> import -> the same samples -> fine-tuning with genforge's trainer."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from clitools import invoke, one_error_line, run_main

import genforge
from genforge.io import load_tensors

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("the cat sat on the mat. a dog ran in the fog.\n" * 60, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory, text_file) -> Path:
    """A GPT-2-layout transformer run (learned positions, LayerNorm, GELU) trained a few steps, then evaluated."""
    run = tmp_path_factory.mktemp("gpt") / "run"
    invoke("train", "--family", "transformer", "--data", f"text:{text_file}", "--out", run, "--steps", "4", "--quiet",
           "--set", "data.block_size=32", "--set", "model.n_layer=2", "--set", "model.n_embd=32",
           "--set", "model.n_head=2", "--set", "model.pos=learned", "--set", "model.norm=layernorm",
           "--set", "model.mlp=gelu", "--set", "train.log_every=1")
    genforge.evaluate(run, n=8, reference=True, progress=False, device="cpu")
    return run


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("gan") / "run"
    invoke("train", "--family", "gan", "--data", "digits", "--out", run, "--steps", "2", "--quiet")
    return run


def test_info_card_is_written_from_the_run(gpt_run):
    out = invoke("info", gpt_run, "--card")
    card = (gpt_run / "README.md").read_text(encoding="utf-8")
    assert str(gpt_run / "README.md") in out
    header = card.split("---")[1]
    assert "library_name: genforge" in header and "- transformer" in header
    for section in ("## Model", "## Data", "## Training", "## Evaluation", "## How to use it",
                    "## Intended use and limits"):
        assert section in card
    model = genforge.load(gpt_run, device="cpu")
    assert f"| parameters | {model.num_parameters:,} |" in card
    assert "| n_layer | 2 |" in card and "| steps | 4 of 4 |" in card
    latest = json.loads((gpt_run / "eval.json").read_text())["results"]
    result = next(iter(latest.values()))
    assert result["reference_metrics"], "eval keeps the real data's row beside the run's"
    assert "real data (held-out)" in card
    floor = result["reference_metrics"]
    for key, value in result["metrics"].items():
        assert f"| {key} | {value:.5g} | {f'{floor[key]:.5g}' if key in floor else '-'} |" in card
    assert any(key in floor for key in result["metrics"])


def test_info_lists_the_formats_a_run_exports_to(gpt_run, gan_run):
    assert json.loads(invoke("info", gpt_run, "--json"))["exports"] == ["hf", "onnx"]
    assert "exports to" in invoke("info", gan_run) and "onnx" in invoke("info", gan_run)


def test_one_line_errors(gan_run, gpt_run, tmp_path):
    line = one_error_line(run_main("export", gan_run, "--format", "hf", "--out", tmp_path / "x"))
    assert "does not export to 'hf'" in line and "onnx" in line
    line = one_error_line(run_main("export", gan_run, "--format", "tflite", "--out", tmp_path / "x"))
    assert "unknown export format 'tflite'" in line and "hf, onnx" in line
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    line = one_error_line(run_main("export", gpt_run, "--format", "hf", "--out", tmp_path / "full"))
    assert "not empty" in line and "--overwrite" in line
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    line = one_error_line(run_main("import", tmp_path / "nothing", "--out", tmp_path / "r"))
    assert "not a folder" in line
    line = one_error_line(run_main("import", tmp_path / "full", "--out", tmp_path / "r"))
    assert "holds no model genforge imports" in line
    assert not (tmp_path / "x").exists() and not (tmp_path / "r").exists()


def test_a_missing_peer_is_one_line_naming_the_extra(gpt_run, tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "transformers" or m.startswith("transformers.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "transformers", None)  # what `import transformers` sees when it is absent
    line = one_error_line(run_main("export", gpt_run, "--format", "hf", "--out", tmp_path / "x"))
    assert "'transformers'" in line and "pip install 'genforge[export]'" in line
    assert not (tmp_path / "x").exists() and not list(tmp_path.iterdir())


def test_a_failed_export_leaves_nothing_and_keeps_an_old_folder(gpt_run, tmp_path, monkeypatch):
    from genforge.export import hf_transformer

    out = tmp_path / "export"
    invoke("export", gpt_run, "--format", "hf", "--out", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(model, folder):
        (folder / "config.json").write_text("{half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hf_transformer, "export", broken)
    line = one_error_line(run_main("export", gpt_run, "--format", "hf", "--out", out, "--overwrite"))
    assert "No space left on device" in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"], "no temporary folder is left behind"


def test_export_import_round_trip_samples_alike_and_fine_tunes(gpt_run, text_file, tmp_path):
    out, imported = tmp_path / "export", tmp_path / "imported"
    said = invoke("export", gpt_run, "--format", "hf", "--out", out)
    assert "GPT2" in said and (out / "README.md").is_file() and (out / "config.json").is_file()
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "library_name: transformers" in card and "AutoModelForCausalLM" in card
    invoke("import", out, "--out", imported)
    original, again = genforge.load(gpt_run, device="cpu"), genforge.load(imported, device="cpu")
    assert original.sample(3, seed=5) == again.sample(3, seed=5)
    assert json.loads(invoke("info", imported, "--json"))["step"] == 0

    # no data yet: training asks for it in one line; with it, fine-tuning starts from the imported weights
    line = one_error_line(run_main("train", "--out", imported, "--resume", "--steps", "1", "--quiet"))
    assert "imported without data" in line and "--data" in line
    invoke("train", "--out", imported, "--resume", "--data", f"text:{text_file}", "--steps", "2", "--quiet",
           "--lr", "1e-4")
    start = load_tensors(gpt_run / "model.safetensors")
    tuned = load_tensors(imported / "model.safetensors")
    fresh = genforge.api.Run.open(imported).build_family(seed=123).state_dict()
    moved = max((tuned[k] - start[k]).abs().max().item() for k in start)
    fresh_distance = max((fresh[k] - start[k]).abs().max().item() for k in start)
    assert 0 < moved < 0.1 * fresh_distance, "two small steps from the imported weights, not from a fresh start"
    assert json.loads(invoke("info", imported, "--json"))["step"] == 2


def test_import_with_data_checks_that_it_fits(gpt_run, text_file, tmp_path):
    out = tmp_path / "export"
    invoke("export", gpt_run, "--format", "hf", "--out", out)
    line = one_error_line(run_main("import", out, "--out", tmp_path / "imported", "--data", "digits"))
    assert "does not fit the imported model" in line
    assert not (tmp_path / "imported").exists()
    other = tmp_path / "other.txt"
    other.write_text("text with letters the model never saw: xyz QJK\n" * 20, encoding="utf-8")
    line = one_error_line(run_main("import", out, "--out", tmp_path / "imported", "--data", f"text:{other}", "-q"))
    assert "not in the tokenizer's vocabulary" in line
    assert not (tmp_path / "imported").exists()
    invoke("import", out, "--out", tmp_path / "imported", "--data", f"text:{text_file}")
    config = genforge.api.Run.open(tmp_path / "imported").config
    assert config.data.source == f"text:{text_file}"
    assert config.data.tokenizer == f"file:{(tmp_path / 'imported' / 'tokenizer.json').resolve()}"


@pytest.fixture(scope="module")
def diffusion_run(tmp_path_factory) -> Path:
    """A class-conditional v-prediction UNet on 8x8 digits with one GroupNorm count: what diffusers holds exactly."""
    run = tmp_path_factory.mktemp("diffusion") / "run"
    invoke("train", "--family", "diffusion", "--data", "digits", "--out", run, "--steps", "2", "--quiet",
           "--set", "model.base_channels=8", "--set", "model.channel_mults=[1,2]",
           "--set", "model.attention_resolutions=[4]", "--set", "model.norm_groups=-1",
           "--set", "model.prediction=v", "--set", "model.sample_steps=4")
    return run


def test_diffusion_export_import_round_trip_samples_alike(diffusion_run, tmp_path):
    out, imported = tmp_path / "export", tmp_path / "imported"
    invoke("export", diffusion_run, "--format", "hf", "--out", out)
    assert (out / "model_index.json").is_file() and (out / "unet" / "config.json").is_file()
    assert "library_name: diffusers" in (out / "README.md").read_text(encoding="utf-8")
    invoke("import", out, "--out", imported, "--data", "digits")
    original, again = genforge.load(diffusion_run, device="cpu"), genforge.load(imported, device="cpu")
    assert torch.equal(original.sample(4, seed=3, label=7), again.sample(4, seed=3, label=7))


def test_an_edm_run_is_refused_for_diffusers_in_one_line(tmp_path):
    run = tmp_path / "edm"
    invoke("train", "--family", "diffusion", "--data", "digits", "--out", run, "--steps", "1", "--quiet",
           "--set", "model.base_channels=8", "--set", "model.channel_mults=[1,2]",
           "--set", "model.attention_resolutions=[4]", "--set", "model.norm_groups=-1")
    line = one_error_line(run_main("export", run, "--format", "hf", "--out", tmp_path / "x"))
    assert "edm" in line and "onnx" in line
    assert not (tmp_path / "x").exists()
