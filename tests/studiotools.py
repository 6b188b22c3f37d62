"""Tiny trained runs for the studio's tests (``genforge serve``): an image diffusion run, an image GAN and a
code transformer trained for fill-in-the-middle, made once per test session (``studio_runs`` in conftest)
and copied into each test's own runs folder, so every test has its own gallery."""

from __future__ import annotations

import shutil
from pathlib import Path

TINY_DIFFUSION = ["model.base_channels=8", "model.channel_mults=[1,2]", "model.attention_resolutions=[4]",
                  "model.timesteps=100", "model.sample_steps=4", "train.sample_every=5", "train.grid_size=4"]
TINY_GAN = ["model.width=8", "train.sample_every=5", "train.grid_size=4"]
TINY_CODE = ["data.fim_rate=0.5", "data.block_size=32", "model.n_layer=1", "model.n_embd=16", "model.n_head=2",
             "train.grid_size=2", "train.sample_every=5"]
# what the page's training form sends for a run that trains in seconds
TINY_TRAIN_SETS = TINY_DIFFUSION[:5] + ["train.sample_every=2", "train.grid_size=4", "train.log_every=1"]


def make_studio_runs(root: Path) -> Path:
    import genforge

    root.mkdir(parents=True, exist_ok=True)
    genforge.train("diffusion", "digits", root / "diff", steps=10, overrides=TINY_DIFFUSION, progress=False)
    genforge.train("gan", "digits", root / "gan", steps=10, overrides=TINY_GAN, progress=False)
    corpus = root.parent / "code.txt"
    corpus.write_text("".join(f"def f{i}(x):\n    return x * {i}\n\n" for i in range(200)), encoding="utf-8")
    genforge.train("transformer", f"text:{corpus}", root / "code", steps=10, overrides=TINY_CODE, progress=False)
    return root


def copy_runs(source: Path, dest: Path, names: tuple[str, ...] = ("diff", "gan", "code")) -> Path:
    """A runs folder of its own (no gallery yet) holding copies of the session's runs."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copytree(source / name, dest / name)
    return dest
