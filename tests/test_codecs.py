"""Codecs: tensors -> PNG / TXT files with their parameters, and back."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from genforge.data.codecs import (
    GRID_FILL,
    GRID_PADDING,
    TEXT_DIVIDER,
    ImageCodec,
    TextCodec,
    grid_shape,
    read_png_params,
)
from genforge.data.spec import DataSpec
from genforge.data.tokenizers import CharTokenizer
from genforge.errors import DataError

PARAMS = {"family": "diffusion", "run": "runs/ünïcode", "seed": 7, "steps": 50, "guidance": 1.5, "parent": None}


def test_image_codec_writes_pngs_grid_and_settings(tmp_path):
    x = torch.linspace(-1, 1, 5 * 3 * 8 * 8).reshape(5, 3, 8, 8)
    paths = ImageCodec().save(x, tmp_path / "out", PARAMS)
    assert [p.name for p in paths] == [f"{i:06d}.png" for i in range(5)]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        *[p.name for p in paths], "grid.png", "settings.json"]
    with Image.open(paths[3]) as img:
        assert img.mode == "RGB" and img.size == (8, 8)
        expected = ((x[3] + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
        assert np.array_equal(np.asarray(img), expected)
    for p in [*paths, tmp_path / "out" / "grid.png"]:
        assert read_png_params(p) == PARAMS
    assert json.loads((tmp_path / "out" / "settings.json").read_text()) == PARAMS


@pytest.mark.parametrize("n", [1, 2, 5, 16, 17])
def test_grid_is_near_square_with_padding(tmp_path, n):
    x = torch.full((n, 1, 6, 4), -1.0)
    path = ImageCodec().grid(x, tmp_path / f"grid{n}.png", {"step": 3})
    rows, cols = grid_shape(n)
    assert rows * cols >= n and cols - 1 <= rows <= cols and (rows - 1) * cols < n
    with Image.open(path) as img:
        assert img.mode == "L"
        assert img.size == (cols * (4 + GRID_PADDING) + GRID_PADDING, rows * (6 + GRID_PADDING) + GRID_PADDING)
        a = np.asarray(img)
    assert a[0, 0] == GRID_FILL and a[GRID_PADDING, GRID_PADDING] == 0  # padding, then the first cell
    assert (a == 0).sum() == n * 6 * 4  # every item drawn once, nothing else black
    assert read_png_params(path) == {"step": 3}


def test_image_values_are_clipped_and_nan_safe(tmp_path):
    x = torch.tensor([[[[-5.0, 5.0], [float("nan"), 0.0]]]])
    path = ImageCodec().save(x, tmp_path, {})[0]
    with Image.open(path) as img:
        assert np.asarray(img).tolist() == [[0, 255], [0, 128]]
    with pytest.raises(DataError, match="C = 1 or 3"):
        ImageCodec().save(torch.zeros(1, 2, 4, 4), tmp_path, {})


def test_image_load_round_trips(tmp_path):
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    paths = ImageCodec().save(x, tmp_path, {})
    back = ImageCodec().load(paths[1], (3, 8, 8))
    assert back.shape == (1, 3, 8, 8) and (back[0] - x[1]).abs().max() <= 1 / 127.5 + 1e-6
    assert ImageCodec().load(paths[1], (1, 4, 4)).shape == (1, 1, 4, 4)
    with pytest.raises(DataError, match="does not exist"):
        ImageCodec().load(tmp_path / "missing.png", (3, 8, 8))


def test_png_without_params(tmp_path):
    Image.new("L", (2, 2)).save(tmp_path / "plain.png")
    assert read_png_params(tmp_path / "plain.png") == {}
    (tmp_path / "junk.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="not a readable PNG"):
        read_png_params(tmp_path / "junk.png")


def make_text_codec():
    tok = CharTokenizer.from_text("abcdef \n")
    return TextCodec(tok), tok


def test_text_codec_cuts_at_first_eot_after_generated_content(tmp_path):
    codec, tok = make_text_codec()
    eot = tok.eot_id
    rows = torch.tensor([
        [eot] + tok.encode("ab") + tok.encode("cd") + [eot] + tok.encode("efab"),  # prompt "ab", cut after "cd"
        [eot] + tok.encode("ab") + [eot, eot] + tok.encode("fe") + [eot, 1, 1],  # eots before content are skipped
        [eot] + tok.encode("ab") + tok.encode("abcdef") + [eot],
    ])
    assert codec.decode_all(rows, prompt_len=3) == ["abcd", "abfe", "ababcdef"]
    assert codec.decode_one(rows[0]) == "abcd"  # prompt_len 0: the leading eot is the start, not the end
    assert codec.decode_one([eot, eot, eot]) == ""
    paths = codec.save(rows, tmp_path / "txt", {"seed": 1, "prompt": "ab"}, prompt_len=3)
    assert [p.read_text() for p in paths] == ["abcd", "abfe", "ababcdef"]
    assert [p.name for p in paths] == ["000000.txt", "000001.txt", "000002.txt"]
    assert json.loads((tmp_path / "txt" / "settings.json").read_text()) == {"seed": 1, "prompt": "ab"}


def test_text_grid_has_dividers(tmp_path):
    codec, tok = make_text_codec()
    rows = torch.tensor([tok.encode("abc\nd"), tok.encode("fed\n\n")])
    path = codec.grid(rows, tmp_path / "samples" / "step_0000100.txt", {"step": 100})
    text = path.read_text()
    assert text.splitlines()[0].startswith("# genforge ") and '"step": 100' in text
    assert text.count(TEXT_DIVIDER) == 4 and f"{TEXT_DIVIDER} sample 1 {TEXT_DIVIDER}\nfed\n\n" in text
    assert "abc\nd" in text


def test_each_modality_picks_its_codec():
    from genforge.modalities import get_modality

    image = DataSpec("image", (1, 28, 28))
    assert isinstance(get_modality("image").codec(image, None), ImageCodec)
    tok = CharTokenizer.from_text("xy")
    text = DataSpec("text", (16,), vocab_size=3)
    assert isinstance(get_modality("text").codec(text, tok), TextCodec)
    with pytest.raises(DataError, match="tokenizer"):
        get_modality("text").codec(text, None)
    with pytest.raises(DataError, match="unknown modality 'video'; known: image, text, codes"):
        get_modality("video")
