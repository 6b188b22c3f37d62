"""Figures of table runs: the pair-trend matrix against values worked out by hand, the column histograms and the
heat map as decodable PNGs, where `genforge eval` keeps them and how `genforge compare` shows them in each run's
card (the small VAE runs of conftest's ``table_runs``, copied before anything is written into them)."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from genforge.evaluate import table_metrics as tm
from genforge.evaluate import table_plots as tp
from genforge.evaluate.report import ReportRun, render_report
from genforge.evaluate.results import has_figures, load_figures

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


def decoded(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    assert image.format == "PNG"
    return image


# ---- the pair-trend matrix, by hand ---------------------------------------------------------------------
def tiny_tables() -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    real = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [1.0, 2.0, 3.0, 4.0], "z": [1.0, 3.0, 2.0, 4.0],
                         "w": [5.0, 5.0, 5.0, 5.0], "c": ["a", "a", "b", "b"], "d": ["u", "u", "v", "v"]})
    synth = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [4.0, 3.0, 2.0, 1.0], "z": [2.0, 2.0, 2.0, 2.0],
                          "w": [1.0, 2.0, 3.0, 4.0], "c": ["a", "b", "a", "b"], "d": ["u", "u", "v", "v"]})
    types = {"x": "numeric", "y": "integer", "z": "numeric", "w": "numeric", "c": "categorical", "d": "boolean"}
    return real, synth, types


def test_the_pair_matrix_is_real_minus_synthetic_what_pair_trends_scores():
    real, synth, types = tiny_tables()
    gaps = tp.pair_gap_matrix(real, synth, types)
    assert list(gaps.index) == list(gaps.columns) == ["x", "y", "z", "w", "c", "d"]
    # Pearson r: real x~y 1, x~z and y~z 0.8 (deviations -1.5 -.5 .5 1.5 against -1.5 .5 -.5 1.5: 4 / 5);
    # synthetic x~y -1, and z constant: uncorrelated (0), as pair_trends counts it
    expected = {("x", "y"): 1 - (-1), ("x", "z"): 0.8 - 0, ("y", "z"): 0.8 - 0,
                # category pairs: real joint shares (a,u) 1/2 (b,v) 1/2, synthetic a quarter on each of the four
                # combinations: TV = (1/4 + 1/4 + 1/4 + 1/4) / 2
                ("c", "d"): 0.5}
    for (a, b), value in expected.items():
        assert gaps.loc[a, b] == pytest.approx(value) and gaps.loc[b, a] == pytest.approx(value), (a, b)
    # not compared: the diagonal, w (constant in the real rows: no trend to keep), number x category pairs
    blank = {(a, a) for a in gaps.index} | {(a, "w") for a in "xyz"} | {(a, b) for a in "xyzw" for b in "cd"}
    for a, b in blank:
        assert np.isnan(gaps.loc[a, b]) and np.isnan(gaps.loc[b, a]), (a, b)
    # cell for cell what the metric scores: 1 - |gap| / 2 for numbers, 1 - gap for categories
    for pair, score in tm.pair_trend_scores(real, synth, types).items():
        a, b = pair.split(" / ")
        gap = gaps.loc[a, b]
        assert score == pytest.approx(1 - abs(gap) / 2 if types[a] in tm.NUMBERS else 1 - gap), pair
    # the first columns only, when asked
    assert list(tp.pair_gap_matrix(real, synth, types, max_columns=2).index) == ["x", "y"]


def test_the_heat_map_is_a_png_and_needs_a_pair():
    real, synth, types = tiny_tables()
    figure = tp.pair_gap_heatmap(real, synth, types)
    image = decoded(figure.png)
    assert figure.name == "pair_trends" and "real minus synthetic" in figure.caption
    assert 250 <= image.width <= 1200 and 250 <= image.height <= 1200
    one = pd.DataFrame({"x": [1.0, 2.0]})
    assert tp.pair_gap_heatmap(one, one, {"x": "numeric"}) is None


# ---- column histograms ----------------------------------------------------------------------------------
def mixed_tables() -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    rng = np.random.default_rng(0)
    n = 200
    city = rng.choice([f"city {i}" for i in range(12)], n).astype(object)
    city[::10] = None  # a missing cell is a category of its own
    real = pd.DataFrame({
        "age": rng.integers(20, 30, n),
        "cost": np.where(np.arange(n) % 9 == 0, np.nan, rng.normal(100, 10, n)),
        "seen": pd.Timestamp("2021-01-01") + pd.to_timedelta(rng.integers(0, 700, n), unit="D"),
        "city": city,
        "smoker": rng.random(n) < 0.3,
        "id": np.arange(n),  # an empty or dropped column type: not drawn
    })
    synth = real.sample(frac=1.0, random_state=1).reset_index(drop=True).assign(cost=lambda f: f["cost"] * 1.5)
    types = {"age": "integer", "cost": "numeric", "seen": "datetime", "city": "categorical", "smoker": "boolean",
             "id": "empty"}
    return real, synth, types


def test_category_shares_keep_the_top_categories_other_and_missing():
    real, synth, _ = mixed_tables()
    labels, p, q = tp.category_shares(real["city"], synth["city"], top=8)
    assert len(labels) == 10 and labels[8] == "other (4)" and labels[9] == "missing"
    assert p.sum() == pytest.approx(1) and q.sum() == pytest.approx(1)
    assert p[9] == pytest.approx(0.1)  # every tenth cell
    assert list(p[:8]) == sorted(p[:8], reverse=True)  # the most common first
    # integers spanning few values get one bin per value; numbers share bins over both sides
    ages = tm.as_numbers(real["age"])
    assert list(tp.number_bins("integer", ages, ages)) == [19.5 + i for i in range(11)]
    costs = tp.number_bins("numeric", tm.as_numbers(real["cost"]), tm.as_numbers(synth["cost"]))
    assert len(costs) == tp.BINS + 1 and tp.number_shares(tm.as_numbers(synth["cost"]), costs).sum() == pytest.approx(1)


def test_column_histograms_draw_every_kind_and_say_what_is_left_out():
    real, synth, types = mixed_tables()
    figure = tp.column_histograms(real, synth, types)
    image = decoded(figure.png)
    assert figure.name == "columns" and "not shown" not in figure.caption
    assert 500 <= image.width <= 1400 and 200 <= image.height <= 1400
    capped = tp.column_histograms(real, synth, types, max_columns=2)
    assert "the first 2 of 5 columns; 3 more not shown" in capped.caption  # "id" is no column the metrics compare
    assert decoded(capped.png).height < image.height
    assert tp.column_histograms(real, synth, {"id": "empty"}) is None


def test_a_card_shows_its_figures_escaped_and_inline():
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), "white").save(buf, format="PNG")
    run = ReportRun(name="t", family="vae", data="csv:x.csv", modality="table", parameters=1, steps=1,
                    train_items_per_s=None, sample_items_per_s=None, unit="row", text_samples=["a,b\n1,2\n"],
                    figures=[("<b>columns</b> & more", buf.getvalue())])
    page = render_report([run], [])
    assert page.count('<img class="figure"') == 1 and 'width="40" height="30"' in page
    assert "<b>columns</b>" not in page and html.escape("<b>columns</b> & more") in page
    assert '<article class="card wide">' in page and "<script" not in page


# ---- on runs: kept by eval, shown by compare ------------------------------------------------------------
def card_images(page: str) -> dict[str, list[bytes]]:
    """Run name -> the figure PNGs in its card, in order."""
    cards = re.findall(r'<article class="card[^"]*"><header><h3>(.*?)</h3>(.*?)</article>', page, re.S)
    return {name: [base64.b64decode(src) for src in re.findall(r'<img class="figure"[^>]*src="data:image/png;base64,'
                                                                 r'([^"]+)"', body)]
            for name, body in cards}


def test_eval_keeps_the_figures_and_compare_shows_each_runs_in_its_card(table_runs, tmp_path):
    from genforge.cli import app

    for name in ("short", "long"):
        shutil.copytree(table_runs / name, tmp_path / name)
    long = tmp_path / "long"
    out = runner.invoke(app, ["eval", str(long), "--n", "100", "--no-reference", "--quiet", "--device", "cpu"],
                        catch_exceptions=False)
    assert out.exit_code == 0, out.output
    folder = long / "eval_figures" / "table-n100"
    for stem in ("columns", "pair_trends"):
        assert f"wrote {folder / stem}.png" in out.output
        assert decoded((folder / f"{stem}.png").read_bytes()).width > 300
    kept = json.loads((long / "eval.json").read_text())
    result = kept["results"]["table/n=100"]
    assert [f["file"] for f in result["figures"]] == ["eval_figures/table-n100/columns.png",
                                                      "eval_figures/table-n100/pair_trends.png"]
    assert has_figures(long, result)

    report = tmp_path / "report.html"
    out = runner.invoke(app, ["compare", str(long), str(tmp_path / "short"), "--n", "100", "--out", str(report),
                              "--quiet", "--device", "cpu"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert json.loads((long / "eval.json").read_text()) == kept  # the kept score and its figures were reused
    page = report.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page and "<script" not in page
    images = card_images(page)
    assert images["long"] == [(folder / "columns.png").read_bytes(), (folder / "pair_trends.png").read_bytes()]
    assert len(images["short"]) == 2 and images["short"] != images["long"]  # scored by compare, its own figures
    assert (tmp_path / "short" / "eval_figures" / "table-n100" / "columns.png").is_file()
    assert "Columns, real vs synthetic" in page and "Pair trends, real minus synthetic" in page


def test_only_the_runs_own_png_figures_are_read(tmp_path):
    folder = tmp_path / "eval_figures" / "table-n10"
    folder.mkdir(parents=True)
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="PNG")
    (folder / "columns.png").write_bytes(buf.getvalue())
    (folder / "fake.png").write_text("not a png")
    (tmp_path / "secret.png").write_bytes(buf.getvalue())
    result = {"figures": [{"file": "eval_figures/table-n10/columns.png", "caption": "ok"},
                          {"file": "eval_figures/table-n10/fake.png", "caption": "not a PNG"},
                          {"file": "secret.png", "caption": "outside the folder"},
                          {"file": "eval_figures/../secret.png", "caption": "climbs out"},
                          {"file": str(tmp_path / "secret.png"), "caption": "absolute"}]}
    assert load_figures(tmp_path, result) == [("ok", buf.getvalue())]
    assert not has_figures(tmp_path, result) and not has_figures(tmp_path, {})  # kept before figures were drawn
