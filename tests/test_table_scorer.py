"""The table scorer: each metric against values worked out by hand on tiny tables, then `genforge eval`,
`--eval-every` and `genforge compare` on small VAE runs trained on a patients CSV."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from genforge.evaluate import table_metrics as tm

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()
TABLE_METRICS = {"quality", "column_shapes", "pair_trends", "detection", "ml_efficacy", "dcr_median",
                 "dcr_holdout_median", "dcr_ratio", "exact_copies"}


def frame(**columns) -> pd.DataFrame:
    return pd.DataFrame(columns)


# ---- the metrics, by hand --------------------------------------------------------------------------------
def test_identical_tables_score_one_on_shapes_and_trends():
    real = frame(x=[1.0, 2.0, 3.0, 4.0], y=[2.0, 1.0, 4.0, 3.0], c=["a", "a", "b", "c"], d=["u", "v", "u", "v"])
    types = {"x": "numeric", "y": "numeric", "c": "categorical", "d": "categorical"}
    scores = tm.quality_scores(real, real.copy(), types)
    assert scores == {"quality": 1.0, "column_shapes": 1.0, "pair_trends": 1.0}


def test_a_shifted_number_column_scores_one_minus_its_ks_statistic():
    # real 1..4, synthetic 3..6: the empirical CDFs differ most at x in [2, 3): 2/4 - 0/4 = 0.5
    real, synth = frame(x=[1.0, 2.0, 3.0, 4.0]), frame(x=[3.0, 4.0, 5.0, 6.0])
    assert tm.column_shape_scores(real, synth, {"x": "numeric"}) == {"x": pytest.approx(0.5)}
    # dates are compared as instants: the same shift gives the same score
    days = pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-03", "2020-01-04"])
    shifted = frame(t=days + pd.Timedelta(days=2))
    assert tm.column_shape_scores(frame(t=days), shifted, {"t": "datetime"}) == {"t": pytest.approx(0.5)}


def test_a_category_column_scores_one_minus_its_total_variation():
    # real a 3/4, b 1/4; synthetic a 1/4, b 1/4, missing 1/2: TV = (|3/4-1/4| + 0 + 1/2) / 2 = 0.5
    real = frame(c=["a", "a", "a", "b"])
    synth = frame(c=["a", "b", None, None])
    assert tm.column_shape_scores(real, synth, {"c": "categorical"}) == {"c": pytest.approx(0.5)}


def test_pair_trends_compare_correlations_and_joint_shares():
    real = frame(x=[1.0, 2.0, 3.0, 4.0], y=[1.0, 2.0, 3.0, 4.0])  # r = 1
    synth = frame(x=[1.0, 2.0, 3.0, 4.0], y=[4.0, 3.0, 2.0, 1.0])  # r = -1
    assert tm.pair_trend_scores(real, synth, {"x": "numeric", "y": "numeric"}) == {"x / y": pytest.approx(0.0)}
    # joint shares: real (a,u) 1/2 (b,v) 1/2, synthetic (a,v) 1/2 (b,u) 1/2: disjoint, TV 1; the margins agree
    real = frame(c=["a", "b"], d=["u", "v"])
    synth = frame(c=["a", "b"], d=["v", "u"])
    types = {"c": "categorical", "d": "categorical"}
    assert tm.pair_trend_scores(real, synth, types) == {"c / d": pytest.approx(0.0)}
    assert tm.quality_scores(real, synth, types) == {"quality": 0.5, "column_shapes": 1.0, "pair_trends": 0.0}


def test_wide_tables_score_a_fixed_spread_of_pairs():
    columns = [f"c{i}" for i in range(30)]  # 435 pairs
    pairs = tm.chosen_pairs(columns, limit=200)
    assert len(pairs) == 200 == len(set(pairs)) and pairs[0] == ("c0", "c1") and pairs[-1] == ("c28", "c29")
    assert pairs == tm.chosen_pairs(columns, limit=200)


def test_detection_maps_auc_to_one_at_chance_and_zero_when_told_apart():
    assert tm.detection_score(0.5) == 1.0 and tm.detection_score(0.3) == 1.0
    assert tm.detection_score(1.0) == 0.0 and tm.detection_score(0.75) == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    real = frame(x=rng.normal(0, 1, 200))
    assert tm.detection_auc(real, frame(x=rng.normal(10, 1, 200)), {"x": "numeric"}) == pytest.approx(1.0)
    assert abs(tm.detection_auc(real, frame(x=rng.normal(0, 1, 200)), {"x": "numeric"}) - 0.5) < 0.1


def test_dcr_and_exact_copies_on_three_rows():
    types = {"x": "numeric", "c": "categorical"}
    train = frame(x=[0.0, 1.0, 2.0], c=["a", "a", "b"])  # x: mean 1, std sqrt(2/3)
    std = math.sqrt(2 / 3)
    synth = frame(x=[0.0, 1.0, 4.0], c=["a", "b", "b"])
    # row 1 is training row 0; row 2 is training row 1 with c a -> b (one-hot distance sqrt 2); row 3 is
    # 2 above training row 2 (2/std)
    space = tm.RowFeatures(train, types)
    distances = tm.closest_distances(synth, train, space)
    np.testing.assert_allclose(distances, [0.0, min(math.sqrt(2), 1 / std), 2 / std])
    holdout = frame(x=[3.0], c=["b"])  # 1 above training row 2: 1/std
    scores = tm.privacy_scores(synth, train, holdout, types)
    assert scores["exact_copies"] == pytest.approx(1 / 3)
    assert scores["dcr_median"] == pytest.approx(1 / std) and scores["dcr_holdout_median"] == pytest.approx(1 / std)
    assert scores["dcr_ratio"] == pytest.approx(1.0)
    assert tm.privacy_scores(train, train, holdout, types)["exact_copies"] == 1.0  # the training rows themselves


def test_ml_efficacy_predicts_the_last_category_column():
    types = {"x": "numeric", "kind": "categorical", "label": "categorical"}
    assert tm.target_column(types) == "label"
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, 300)
    table = frame(x=x, kind=np.where(x > 1, "p", "q"), label=np.where(x > 0, "yes", "no"))
    train, test = table.iloc[:200], table.iloc[200:]
    assert tm.ml_efficacy(train, test, types, "label") > 0.95
    flipped = train.assign(label=np.where(train["label"] == "yes", "no", "yes"))  # a model learnt backwards
    assert tm.ml_efficacy(flipped, test, types, "label") < 0.05
    assert tm.target_column({"x": "numeric"}) is None


def test_a_one_column_table_without_categories_gives_the_scores_it_can():
    rng = np.random.default_rng(0)
    train, holdout = frame(x=rng.normal(0, 1, 100)), frame(x=rng.normal(0, 1, 20))
    scores = tm.table_scores(frame(x=rng.normal(0, 1, 50)), train, holdout, {"x": "numeric"})
    assert set(scores) == TABLE_METRICS - {"pair_trends", "ml_efficacy"}
    assert scores["quality"] == scores["column_shapes"] and all(np.isfinite(list(scores.values())))


# ---- on runs (``table_runs``: conftest.py) --------------------------------------------------------------
def test_eval_every_logs_table_scores(table_runs):
    records = [json.loads(line) for line in (table_runs / "short" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval/quality" in r]
    assert [r["step"] for r in evals] == [10, 20]
    assert all(0 <= r["eval/quality"] <= 1 and 0 <= r["eval/exact_copies"] <= 1 for r in evals)


def test_cli_eval_prints_table_scores_with_the_real_data_row(table_runs):
    from genforge.cli import app

    run = table_runs / "long"
    out = runner.invoke(app, ["eval", str(run), "--n", "100", "--quiet", "--device", "cpu"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].startswith("100 samples vs the train split of csv:")
    rows = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in lines[2:]
            if line.split() and line.split()[0] in TABLE_METRICS}
    assert set(rows) == TABLE_METRICS and all(len(v) == 2 for v in rows.values())  # this run, real data
    for key in TABLE_METRICS - {"dcr_median", "dcr_holdout_median", "dcr_ratio"}:
        assert all(0 <= v <= 1 for v in rows[key]), (key, rows[key])
    assert rows["dcr_ratio"][1] == pytest.approx(1.0) and rows["quality"][1] > 0.8
    assert "row/s" in out.output
    stored = json.loads((run / "eval.json").read_text())
    assert list(stored["results"]) == ["table/n=100"]
    assert stored["results"]["table/n=100"]["examples"][0].startswith("age,smoker,cost\n")


def test_cli_compare_writes_a_table_report(table_runs, tmp_path):
    from genforge.cli import app
    from genforge.evaluate.evaluator import REFERENCE_NAME

    report = tmp_path / "report.html"
    out = runner.invoke(app, ["compare", str(table_runs / "short"), str(table_runs / "long"), "--n", "100",
                              "--out", str(report), "--quiet", "--device", "cpu"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    html = report.read_text(encoding="utf-8")
    assert "Tables: 100 samples" in html and REFERENCE_NAME in html and "short" in html and "long" in html
    assert "column_shapes" in html and "exact_copies" in html and "age,smoker,cost" in html
    assert 'title="lower is better">↓</span></th>' in html  # exact_copies
