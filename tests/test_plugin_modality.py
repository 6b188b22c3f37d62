"""The door is open: a modality defined in this file alone (2-D points, from a mixture of four Gaussians)
is registered, and the existing transformer family is trained on it, sampled, saved and evaluated
through the same API and command line as images and text, with no edit to genforge.

The points are quantised to a 16 x 16 grid and written as token streams (end-of-text, x bin, y bin per
point), so the transformer sees ordinary tokens; its samples decode back to points, are written as
JSON files, and are scored by the total variation distance between their histograms and the real points'.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import genforge
from clitools import run_main
from genforge.config import DataConfig
from genforge.data.cache import CorruptEntry, Entry, load_npy
from genforge.data.datasets import TextDataset
from genforge.data.sources import Source
from genforge.data.spec import DataSpec
from genforge.io import atomic_write_json, atomic_write_text, ensure_dir
from genforge.modalities import Modality, Prepared, ReportStyle, registry

BINS = 16
CENTRES = np.array([[-0.6, -0.6], [-0.6, 0.6], [0.6, -0.6], [0.6, 0.6]])
TINY = ["data.block_size=9", "model.n_layer=1", "model.n_embd=32", "model.n_head=2", "train.batch_size=32",
        "train.sample_every=100", "train.warmup_steps=10", "train.lr=3e-3"]


def make_points(n: int = 2000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(CENTRES[rng.integers(0, 4, n)] + 0.08 * rng.standard_normal((n, 2)), -0.999, 0.999)


def to_tokens(points: np.ndarray) -> np.ndarray:
    bins = np.floor((points + 1) / 2 * BINS).astype(np.int64).clip(0, BINS - 1)
    return np.concatenate([np.zeros((len(points), 1), np.int64), bins + 1], axis=1).reshape(-1)


def to_points(tokens: torch.Tensor) -> torch.Tensor:
    """Sampled ids (end-of-text, x, y) -> points at their bin centres (an end-of-text inside counts as bin 0)."""
    bins = (tokens[:, 1:3].long() - 1).clamp(0, BINS - 1).float()
    return (bins + 0.5) / BINS * 2 - 1


def tv(a: np.ndarray, b: np.ndarray, cells: int = 8) -> float:
    """Total variation distance between the histograms of two point sets on a cells x cells grid."""
    def histogram(p: np.ndarray) -> np.ndarray:
        return np.histogram2d(p[:, 0], p[:, 1], bins=cells, range=[[-1, 1], [-1, 1]])[0].ravel() / len(p)

    return float(np.abs(histogram(a) - histogram(b)).sum() / 2)


class PointsCodec:
    suffix = ".json"

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return to_points(tokens)

    def item_shape(self, spec: DataSpec) -> tuple[int, ...]:
        return (2,)

    def write_items(self, points: torch.Tensor, out, params: dict, start: int = 0) -> list[Path]:
        out = ensure_dir(out, "output folder")
        paths = []
        for i, point in enumerate(points.tolist(), start):
            atomic_write_text(out / f"{i:06d}.json", json.dumps(point))
            paths.append(out / f"{i:06d}.json")
        return paths

    def finish(self, points: torch.Tensor, out, params: dict) -> None:
        atomic_write_json(ensure_dir(out, "output folder") / "settings.json", params)

    def grid(self, tokens: torch.Tensor, path, params: dict) -> Path:
        atomic_write_json(Path(path), {"params": params, "points": to_points(tokens).tolist()})
        return Path(path)


class PointsScorer:
    uses_features = False

    def __init__(self, evaluator):
        self.evaluator = evaluator
        self.real = to_points(torch.from_numpy(np.asarray(evaluator.prepared.extra["train_points"]))).numpy()

    @classmethod
    def extractor_name(cls, features: str, run) -> str:
        return "points"

    def reference_info(self) -> dict:
        return {"data": self.evaluator.data, "split": "train", "n": len(self.real),
                "entry": self.evaluator.prepared.path.name}

    def extractor_info(self) -> None:
        return None

    def score(self, family, amp_dtype) -> tuple[dict, dict, list[str]]:
        tokens, seconds = self.evaluator.draw(family, amp_dtype, 100, prompt=[0], max_new_tokens=2)
        fake = to_points(tokens).numpy()
        examples = [f"{x:+.2f}, {y:+.2f}" for x, y in fake[:4]]
        return {"tv_points": tv(fake, self.real)}, {"items_per_s": len(fake) / max(seconds, 1e-9),
                                                         "unit": "pt"}, examples

    def reference_metrics(self) -> dict:
        val = to_points(torch.from_numpy(np.asarray(self.evaluator.prepared.extra["val_points"]))).numpy()
        return {"tv_points": tv(val, self.real)}


class PointsModality(Modality):
    name = "points"
    unit = "tok"
    builtin_sources = {"toy-points": "2,000 points from four Gaussians (made by this test)"}
    scorer = PointsScorer
    default_eval_n = 200
    training_eval_n = 100
    report = ReportStyle(title="Points", columns=("tv_points",), lower_is_better=frozenset({"tv_points"}),
                         notes=("tv_points: total variation distance between the histograms of samples and real points.",),
                         shows="examples")

    def preparation_params(self, source: Source, cfg: DataConfig) -> dict:
        return {"val_fraction": float(cfg.val_fraction)}

    def write(self, tmp: Path, source: Source, params: dict, progress: bool) -> dict:
        points = make_points()
        n_val = int(len(points) * params["val_fraction"])
        np.save(tmp / "train.npy", to_tokens(points[n_val:]))
        np.save(tmp / "val.npy", to_tokens(points[:n_val]))
        return {"sizes": {"train": len(points) - n_val, "val": n_val}}

    def read(self, path: Path, manifest: dict) -> Entry:
        arrays = {split: load_npy(path / f"{split}.npy") for split in ("train", "val")}
        for split, tokens in arrays.items():
            if tokens.shape != (3 * manifest["sizes"][split],):
                raise CorruptEntry(f"{split}.npy does not hold {manifest['sizes'][split]} points")
        return Entry(path, manifest, arrays)

    def assemble(self, entry: Entry, source: Source, cfg: DataConfig) -> Prepared:
        train = TextDataset(entry.arrays["train"], cfg.block_size, name="toy points")
        val = TextDataset(entry.arrays["val"], cfg.block_size, name="toy points (validation)")
        spec = DataSpec(self.name, (cfg.block_size,), vocab_size=BINS + 1)
        extra = {split: entry.arrays[split].reshape(-1, 3) for split in ("train", "val")}
        return Prepared(spec, train, val, None, entry.manifest, entry.path,
                        extra={"train_points": extra["train"], "val_points": extra["val"]})

    def items_per_step(self, spec: DataSpec, batch_size: int) -> int:
        return batch_size * spec.shape[0]

    def sample_options(self, spec: DataSpec, tokenizer) -> dict:
        return {"prompt": [0], "max_new_tokens": 2}

    def codec(self, spec: DataSpec, tokenizer) -> PointsCodec:
        return PointsCodec()


@pytest.fixture
def points_modality(monkeypatch, tmp_path):
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(registry, "MODALITIES", dict(registry.MODALITIES))
    monkeypatch.setattr(registry, "_instances", {})
    registry.register(PointsModality)
    return PointsModality


def test_a_modality_from_a_test_file_trains_samples_saves_and_evaluates(points_modality, tmp_path):
    out = tmp_path / "points"
    result = genforge.train("transformer", "toy-points", out, steps=400, progress=False, overrides=TINY)
    assert result.step == 400
    assert sorted(p.name for p in (out / "samples").iterdir())[-1] == "step_0000400.json"  # its codec's grids
    assert json.loads((out / "spec.json").read_text())["modality"] == "points"

    model = genforge.load(out, device="cpu")
    assert type(model) is genforge.Model and model.writes_images is False
    assert set(model.capabilities) == {"sample", "likelihood"}  # no text streaming: points are not text
    points = model.sample(300, seed=0)
    assert points.shape == (300, 2) and points.abs().max() < 1
    again = model.sample(300, seed=0)
    torch.testing.assert_close(points, again)  # same seed, same points

    # the model learned the four clusters: its samples are near the real points, uniform noise is not
    real = make_points()
    uniform = np.random.default_rng(1).uniform(-1, 1, (300, 2))
    assert tv(points.numpy(), real) < 0.4 * tv(uniform, real)

    paths = model.save_samples(5, tmp_path / "saved", seed=2, progress=False)
    assert [p.name for p in paths] == [f"{i:06d}.json" for i in range(5)]
    assert json.loads(paths[0].read_text()) == model.sample(5, seed=2)[0].tolist()
    assert json.loads((tmp_path / "saved" / "settings.json").read_text())["seed"] == 2

    scores = genforge.evaluate(out, n=200, reference=True, progress=False, device="cpu")
    assert scores["modality"] == "points" and scores["extractor"] is None
    assert scores["metrics"]["tv_points"] < 0.4 * tv(uniform, real)
    assert scores["reference_result"]["metrics"]["tv_points"] < scores["metrics"]["tv_points"] + 0.05
    assert scores["sampling"]["unit"] == "pt"


def test_the_command_line_serves_a_registered_modality(points_modality, tmp_path):
    out = tmp_path / "points"
    proc = run_main("train", "--family", "transformer", "--data", "toy-points", "--out", out, "--steps", "20",
                    "--quiet", *[arg for o in TINY for arg in ("--set", o)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads(run_main("info", out, "--json").stdout)
    assert info["data"]["modality"] == "points" and info["data"]["writes"] == ".json"
    assert set(info["capabilities"]) == {"sample", "likelihood"}
    proc = run_main("sample", out, "-n", "3", "--out", tmp_path / "s")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["000000.json", "000001.json", "000002.json",
                                                                  "settings.json"]
    listed = run_main("data", "list").stdout
    assert "toy-points" in listed
    proc = run_main("eval", out, "--n", "50", "--quiet", "--device", "cpu")
    assert proc.returncode == 0 and "tv_points" in proc.stdout, proc.stderr[-2000:]
    kept = json.loads((out / "eval.json").read_text())
    assert list(kept["results"]) == ["points/n=50"]  # filed under its scorer's name
    report = tmp_path / "report.html"
    proc = run_main("compare", out, "--n", "50", "--out", report, "--quiet", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((out / "eval.json").read_text()) == kept  # the kept score was reused, not made again
    html = report.read_text(encoding="utf-8")
    assert "Points:" in html and "tv_points" in html
    # a family that cannot read the data says so in one line
    proc = run_main("train", "--family", "gan", "--data", "toy-points", "--out", tmp_path / "gan")
    assert proc.returncode == 1 and "does not handle points data" in proc.stderr
