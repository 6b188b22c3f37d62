"""data.doc_starts: a share of training windows opens at a document's start, drawn from the batch generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genforge.data.datasets import TextDataset
from genforge.errors import ConfigError


def stream() -> np.ndarray:
    # documents of ten tokens (1..9 after an end-of-text 0), 40 of them
    return np.tile(np.arange(10, dtype=np.uint16), 40)


@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_that_share_of_windows_starts_at_an_end_of_text(share):
    data = TextDataset(stream(), 8, doc_starts=share, eot_id=0)
    x = data.batch(4000, torch.Generator().manual_seed(0))["x"]
    at_start = (x[:, 0] == 0).float().mean().item()
    # random windows start on a 0 one time in ten by chance: share + (1 - share) / 10 in all
    assert abs(at_start - (share + (1 - share) / 10)) < 0.03


def test_off_draws_exactly_what_it_drew_before_and_the_draws_are_seeded():
    plain = TextDataset(stream(), 8).batch(64, torch.Generator().manual_seed(5))
    off = TextDataset(stream(), 8, doc_starts=0.0, eot_id=0).batch(64, torch.Generator().manual_seed(5))
    assert torch.equal(plain["x"], off["x"])  # runs made before the option see the same batches
    on = [TextDataset(stream(), 8, doc_starts=0.5, eot_id=0).batch(64, torch.Generator().manual_seed(5))["x"]
          for _ in range(2)]
    assert torch.equal(on[0], on[1])


def test_a_stream_without_boundaries_keeps_its_random_windows():
    tokens = np.arange(1, 100, dtype=np.uint16)
    x = TextDataset(tokens, 8, doc_starts=1.0, eot_id=0).batch(16, torch.Generator().manual_seed(0))["x"]
    assert x.shape == (16, 8) and (x != 0).all()


def test_it_is_off_unless_asked_for_and_other_data_refuse_it(tmp_path):
    from genforge.api import make_config
    from genforge.modalities.prepare import check_config

    text = tmp_path / "a.txt"
    text.write_text("hello")
    assert make_config("transformer", f"text:{text}").data.doc_starts == 0.0
    assert make_config("transformer", f"text:{text}", overrides=["data.doc_starts=0.5"]).data.doc_starts == 0.5
    with pytest.raises(ConfigError, match=r"data.doc_starts .*\[0, 1\]"):
        check_config(make_config("transformer", f"text:{text}", overrides=["data.doc_starts=2"]).data)
    from genforge.modalities import prepare

    with pytest.raises(ConfigError, match="data.doc_starts applies to tokens sources"):
        prepare("mnist", make_config("diffusion", "mnist", overrides=["data.doc_starts=0.5"]).data, progress=False)
