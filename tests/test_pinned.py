"""Runs made by an earlier version keep working: tests/pinned/runs/ holds tiny runs of every family as that
version wrote them (config.yaml, spec.json, model.safetensors, tokenizer.json), and tests/pinned/expected/
what it sampled from them. Today's code must load them and sample exactly the same."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import genforge
from genforge.io import load_tensors

PINNED = Path(__file__).parent / "pinned"
sys.path.insert(0, str(PINNED))

from pinned_cases import CASES, sample_case  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_pinned_run_loads_and_samples_what_it_sampled_when_pinned(name):
    model = genforge.load(PINNED / "runs" / name, device="cpu")
    got = sample_case(model, CASES[name])
    expected = load_tensors(PINNED / "expected" / f"{name}.safetensors")
    assert got.keys() == expected.keys()
    for key, want in expected.items():
        assert got[key].dtype == want.dtype and got[key].shape == want.shape, key
        if want.is_floating_point():  # images: the same up to float rounding of another CPU's kernels
            assert torch.allclose(got[key], want, atol=1e-4, rtol=0), (key, (got[key] - want).abs().max())
        else:  # token ids: exactly
            assert torch.equal(got[key], want), key


def test_pinned_runs_hold_no_training_leftovers_or_machine_paths():
    for path in (PINNED / "runs").rglob("*"):
        assert path.name not in ("trainer_state.safetensors", ".lock", "metrics.jsonl")
        if path.is_file() and path.suffix in (".yaml", ".json"):
            text = path.read_text()
            assert "/home/" not in text and "/tmp/" not in text and not any(f"{c}:\\" in text for c in "CD")
