"""Two-stage generation across families: a VQ-VAE's code grids as a data source (``codes:RUN``), a GPT
prior trained on them by the transformer family, and sampling that prior into images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from clitools import invoke, one_error_line, run_main
from PIL import Image

import genforge
from genforge.modalities import get_modality, prepare
from genforge.modalities.codes import CodeTokenizer
from genforge.config import DataConfig
from genforge.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def vq(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vq") / "vq"
    invoke("train", "--family", "vqvae", "--data", "digits", "--out", path, "--steps", "15", "--quiet",
           "--set", "train.sample_every=0", "--set", "model.width=16", "--set", "model.num_codes=32",
           "--set", "model.code_dim=8", "--set", "model.downsample=1", "--set", "model.res_blocks=1")
    return path


@pytest.fixture(scope="module")
def prior(vq, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prior") / "prior"
    invoke("train", "--family", "transformer", "--data", f"codes:{vq}", "--out", path, "--steps", "10", "--quiet",
           "--set", "data.block_size=34", "--set", "model.n_layer=1", "--set", "model.n_embd=32", "--set", "model.n_head=2")
    return path


def test_code_streams_hold_each_image_as_end_of_text_then_its_grid(vq):
    prepared = prepare(f"codes:{vq}", DataConfig(source=f"codes:{vq}", block_size=34), progress=False)
    tokenizer = prepared.tokenizer
    assert isinstance(tokenizer, CodeTokenizer) and tokenizer.grid == (4, 4) and tokenizer.vocab_size == 33
    assert prepared.spec.vocab_size == 33
    family = genforge.load(vq, device="cpu").family
    images = prepare("digits", progress=False).train.get(slice(0, 3))["x"]
    codes = family.encode_codes(images).reshape(3, -1).numpy()
    stream = np.asarray(prepared.train.tokens[: 3 * 17]).reshape(3, 17)
    assert (stream[:, 0] == 0).all()
    assert np.array_equal(stream[:, 1:], codes + 1)
    assert tokenizer.decode(stream[0]) == " ".join(map(str, codes[0]))
    assert tokenizer.encode(tokenizer.decode(stream[0])) == (codes[0] + 1).tolist()


def test_class_tokens_put_each_image_s_class_between_end_of_text_and_its_grid(vq):
    source = f"codes:{vq}"
    prepared = prepare(source, DataConfig(source=source, block_size=34, class_tokens=True), progress=False)
    tokenizer = prepared.tokenizer
    assert tokenizer.class_names == tuple(str(d) for d in range(10)) and tokenizer.vocab_size == 33 + 10
    assert (tokenizer.class_tokens, tokenizer.row_tokens) == (1, 17)
    digits = prepare("digits", progress=False).train.get(slice(0, 3))
    codes = genforge.load(vq, device="cpu").family.encode_codes(digits["x"]).reshape(3, -1).numpy()
    stream = np.asarray(prepared.train.tokens[: 3 * 18]).reshape(3, 18)
    assert (stream[:, 0] == 0).all() and np.array_equal(stream[:, 1], 33 + digits["y"].numpy())
    assert np.array_equal(stream[:, 2:], codes + 1)
    text = tokenizer.decode(stream[0])
    assert text == f"<{int(digits['y'][0])}> " + " ".join(map(str, codes[0]))
    assert tokenizer.encode(text) == stream[0, 1:].tolist()
    assert CodeTokenizer.from_dict(tokenizer.to_dict()) == tokenizer
    # a config made before the option (no key: False) keeps the plain streams and their cache entry
    plain = prepare(source, DataConfig(source=source, block_size=34), progress=False)
    assert plain.tokenizer.class_names == () and "class_names" not in plain.tokenizer.to_dict()
    assert get_modality("codes").preparation_params(None, DataConfig(source=source)) == {"codes": True}
    # new runs get class tokens; other data refuses the option in one line
    assert genforge.make_config("transformer", source).data.class_tokens is True
    assert genforge.make_config("transformer", "pycode").data.class_tokens is False
    with pytest.raises(ConfigError, match="applies to codes sources"):
        prepare("digits", DataConfig(source="digits", class_tokens=True), progress=False)


def test_a_class_token_is_drawn_first_and_the_grid_after_it_is_decoded(prior, vq):
    from genforge.modalities.codes import CodesCodec

    tokenizer = get_modality("codes").load_tokenizer(prior / "tokenizer.json")
    assert tokenizer.class_tokens == 1  # a new prior on labelled digits
    family = genforge.load(vq, device="cpu").family
    codes = torch.randint(0, 32, (2, 4, 4), generator=torch.Generator().manual_seed(0))
    rows = torch.cat([torch.zeros(2, 1, dtype=torch.long), torch.tensor([[33 + 7], [33 + 2]]), codes.view(2, -1) + 1], 1)
    torch.testing.assert_close(CodesCodec(tokenizer).decode(rows), family.decode_codes(codes))
    rows[0, 5] = 33 + 4  # a class token inside a grid stands for code 0, as end-of-text does
    codes[0].view(-1)[3] = 0
    torch.testing.assert_close(CodesCodec(tokenizer).decode(rows), family.decode_codes(codes))
    tokens = genforge.load(prior, device="cpu").sample_tensors(3, seed=0)[0]
    assert tokens.shape == (3, 1 + 17)  # end-of-text, then the class and the grid


def test_the_prior_samples_images_through_the_vq_vae(prior, vq, tmp_path):
    model = genforge.load(prior, device="cpu")
    assert model.writes_images
    images = model.sample(3, seed=0)
    assert images.shape == (3, 1, 8, 8) and images.min() >= -1 and images.max() <= 1
    assert torch.equal(images, model.sample(3, seed=0))
    invoke("sample", prior, "-n", "4", "--seed", "1", "--out", tmp_path / "out")
    files = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert files == ["000000.png", "000001.png", "000002.png", "000003.png", "grid.png"]
    assert Image.open(tmp_path / "out" / "000000.png").size == (8, 8)
    assert list((prior / "samples").glob("*.png"))  # the training grids are images too
    assert get_modality("codes").load_tokenizer(prior / "tokenizer.json").run == str(vq.resolve())


def test_codes_errors_are_one_line(vq, prior, tmp_path):
    gan = tmp_path / "gan"
    invoke("train", "--family", "gan", "--data", "digits", "--out", gan, "--steps", "1", "--quiet",
           "--set", "model.width=8", "--set", "train.sample_every=0")
    cases = [
        (["train", "--family", "transformer", "--data", f"codes:{gan}", "--out", tmp_path / "a"], "must be a vqvae run"),
        (["train", "--family", "transformer", "--data", f"codes:{tmp_path}", "--out", tmp_path / "b"], "not a trained run"),
        (["train", "--family", "transformer", "--data", f"codes:{vq}", "--out", tmp_path / "c", "--set", "data.block_size=8"],
         "block_size must be at least 18"),
        (["sample", prior, "--prompt", "1 2"], "--prompt takes text and applies to text runs"),
    ]
    for args, expected in cases:
        assert expected in one_error_line(run_main(*args)), args


def test_a_prior_is_its_own_modality_and_is_scored_as_the_images_it_makes(prior, vq, tmp_path):
    import json
    import shutil

    model = genforge.load(prior, device="cpu")
    assert model.spec.modality == "codes" and set(model.capabilities) == {"sample", "likelihood", "continue"}
    result = genforge.evaluate(prior, n=20, features="random", reference=True, progress=False, device="cpu",
                               save=False)
    # decoded through the VQ-VAE and scored against its training images, like an image run on digits
    assert result["modality"] == "image" and result["extractor"]["name"] == "random"
    assert result["reference"]["data"] == "digits" and result["reference"]["split"] == "train"
    assert {"fd", "kid", "precision", "recall", "val_loss"} <= set(result["metrics"])
    assert result["sampling"]["unit"] == "img"
    vq_result = genforge.evaluate(vq, n=20, features="random", progress=False, device="cpu", save=False)
    from genforge.evaluate.results import comparison_key

    assert comparison_key(vq_result) == comparison_key(result)  # one table in a report

    # a prior made before codes were a modality recorded its data as "text": it loads and samples the same
    old = tmp_path / "old-prior"
    shutil.copytree(prior, old)
    spec = json.loads((old / "spec.json").read_text())
    (old / "spec.json").write_text(json.dumps({**spec, "modality": "text"}))
    legacy = genforge.load(old, device="cpu")
    assert legacy.spec.modality == "codes" and legacy.writes_images
    assert torch.equal(legacy.sample(3, seed=0), model.sample(3, seed=0))
    assert json.loads((old / "spec.json").read_text())["modality"] == "text"  # the run on disk is left as it was
    proc = run_main("train", "--out", old, "--resume", "--steps", "12", "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
