"""The command line end to end: train -> checkpoint -> sample -> info for every family, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from clitools import cli, invoke, run_main
from PIL import Image

from genforge.data.codecs import read_png_params

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "corpus.py"
    path.write_text("def add(a, b):\n    return a + b\n\n" * 40, encoding="utf-8")
    return path


TINY = {
    "diffusion": ["--set", "model.base_channels=16"],
    "gan": [],
    "vae": [],
    "transformer": ["--set", "data.block_size=32"],
}


@pytest.mark.parametrize("family", ["diffusion", "gan", "vae", "transformer"])
def test_train_sample_info_round_trip(family, tmp_path, text_file):
    data = f"text:{text_file}" if family == "transformer" else "digits"
    run = tmp_path / "run"
    invoke("train", "--family", family, "--data", data, "--out", run, "--steps", "3", "--quiet",
           "--set", "train.log_every=1", *TINY[family])
    assert (run / "model.safetensors").is_file() and (run / "trainer_state.safetensors").is_file()
    assert (run / "config.yaml").is_file() and (run / "metrics.jsonl").is_file()
    assert list((run / "samples").iterdir())

    out = tmp_path / "out"
    args = ["sample", run, "-n", "3", "--seed", "5", "--out", out]
    if family == "diffusion":
        args += ["--steps", "4"]
    if family == "transformer":
        args += ["--prompt", "def ", "--max-new-tokens", "12"]
    invoke(*args)
    settings = json.loads((out / "settings.json").read_text())
    assert settings["seed"] == 5 and settings["family"] == family
    if family == "transformer":
        texts = [(out / f"{i:06d}.txt").read_text() for i in range(3)]
        assert all(t.startswith("def ") for t in texts)
    else:
        files = sorted(p.name for p in out.glob("*.png"))
        assert files == ["000000.png", "000001.png", "000002.png", "grid.png"]
        image = Image.open(out / "000000.png")
        assert image.size == (8, 8)
        assert read_png_params(out / "000001.png")["seed"] == 5

    # same seed, same output
    again = tmp_path / "again"
    invoke(*[a if a != out else again for a in args])
    for f in sorted(out.iterdir()):
        if f.name != "settings.json":
            assert f.read_bytes() == (again / f.name).read_bytes(), f.name

    text = invoke("info", run)
    assert family in text and "parameters" in text and "3 of 3" in text


def make_images(folder: Path, n: int = 3) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8)).save(folder / f"{i}.png")


def bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    (tmp / "empty").mkdir()
    (tmp / "empty.txt").write_text("")
    (tmp / "binary.txt").write_bytes(b"ab\x00cd")
    make_images(tmp / "good")
    runs = tmp / "runs"
    return {
        "missing path": (["train", "--family", "vae", "--data", f"folder:{tmp / 'nope'}", "--out", runs / "a"], "does not exist"),
        "empty folder": (["train", "--family", "vae", "--data", f"folder:{tmp / 'empty'}", "--out", runs / "b"], "has no image files"),
        "empty text": (["train", "--family", "transformer", "--data", f"text:{tmp / 'empty.txt'}", "--out", runs / "c"], "empty"),
        "binary text": (["train", "--family", "transformer", "--data", f"text:{tmp / 'binary.txt'}", "--out", runs / "d"], "binary"),
        "unknown family": (["train", "--family", "flow", "--data", "digits", "--out", runs / "e"], "unknown family 'flow'"),
        "unknown source": (["train", "--family", "vae", "--data", "imagenet", "--out", runs / "f"], "imagenet"),
        "unknown option": (["train", "--family", "vae", "--data", "digits", "--out", runs / "g", "--set", "train.stepz=3"], "stepz"),
        "bad value": (["train", "--family", "vae", "--data", "digits", "--out", runs / "h", "--steps", "0"], "steps"),
        "family vs data": (["train", "--family", "transformer", "--data", f"folder:{tmp / 'good'}", "--out", runs / "i"], "does not handle image"),
        "not a run": (["sample", tmp / "empty"], "config.yaml is missing"),
        "no such run": (["info", tmp / "nowhere"], "does not exist"),
    }


def test_bad_input_gets_one_line_errors(tmp_path):
    failures = []
    for name, (args, expected) in bad_inputs(tmp_path).items():
        proc = run_main(*args)
        err = [l for l in proc.stderr.strip().splitlines() if l.startswith("error:")]
        if proc.returncode != 1 or "Traceback" in proc.stderr or len(err) != 1 or expected.lower() not in err[0].lower():
            failures.append(f"{name}: rc={proc.returncode} {proc.stderr[-500:]}")
    assert not failures, "\n".join(failures)


def test_missing_or_truncated_weights(tmp_path):
    run = tmp_path / "run"
    invoke("train", "--family", "vae", "--data", "digits", "--out", run, "--steps", "2", "--quiet")
    weights = run / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    # the real `genforge` process: the console script's exit status and stderr for a user mistake
    # (the other error tables run genforge.cli.main in this process, through run_main)
    proc = cli("sample", run, "-n", "2")
    assert proc.returncode == 1 and "corrupt or truncated" in proc.stderr and "Traceback" not in proc.stderr
    weights.unlink()
    proc = run_main("sample", run, "-n", "2")
    assert proc.returncode == 1 and "missing" in proc.stderr and "Traceback" not in proc.stderr


def test_existing_run_is_not_overwritten(tmp_path):
    run = tmp_path / "run"
    invoke("train", "--family", "vae", "--data", "digits", "--out", run, "--steps", "2", "--quiet")
    before = (run / "model.safetensors").read_bytes()
    proc = run_main("train", "--family", "vae", "--data", "digits", "--out", run, "--steps", "2")
    assert proc.returncode == 1 and "--resume" in proc.stderr
    assert (run / "model.safetensors").read_bytes() == before


def test_corrupt_image_among_good_ones_is_skipped(tmp_path):
    make_images(tmp_path / "imgs", n=4)
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.warns(UserWarning, match="broken.png"):  # a real process prints it to stderr
        proc = run_main("data", "prepare", f"folder:{tmp_path / 'imgs'}", "--image-size", "8")
    assert proc.returncode == 0, proc.stderr
    assert "broken.png" in proc.stderr + proc.stdout
    assert '"train"' in proc.stdout or "4" in proc.stdout


def test_help_lists_every_command():
    out = invoke("--help")
    for command in ("train", "sample", "info", "data", "demo"):
        assert command in out
