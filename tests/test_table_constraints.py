"""Constraints on table rows (``data/table_constraints.py``): the language and its one-line errors, sums built
exactly as a CSV reader reads them, and a barely trained run (whose raw rows break every constraint) sampling
only rows that keep them - declared at training, asked when sampling, with ``--where``, through the CLI and
scored by ``genforge eval``; data that breaks a declared constraint is one error line."""

from __future__ import annotations

import csv
import io
import json
import random
import re
from decimal import Decimal

import pandas as pd
import pytest
import torch
from clitools import one_error_line, run_main
from hypothesis import given, settings
from hypothesis import strategies as st

import genforge
from genforge.data.table_constraints import (Enforcement, Fixed, Sum, bind_constraints, check_texts,
                                             constraints_from_dicts, learn_constraints, parse_statement)
from genforge.data.table_transform import TableTransform
from genforge.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("one_thread")

HEADER = ["age", "city", "country", "a", "b", "total", "admitted", "discharged"]
PLACES = [("Paris", "France"), ("Lyon", "France"), ("Berlin", "Germany"), ("Munich", "Germany"), ("Rome", "Italy")]
DECLARED = ["age >= 18", "admitted <= discharged", "fixed city, country", "total = a + b"]


def stays_csv(folder, rows: int = 200, broken: bool = False):
    """Hospital stays: an integer age, a city within its country, a total of two decimal amounts (2 and 1
    decimals), and a stay's two dates in order; ``broken``: one total off by a cent."""
    rng = random.Random(0)
    path = folder / "stays.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        for i in range(rows):
            a, b = Decimal(rng.randint(0, 10_000)) / 100, Decimal(rng.randint(0, 500)) / 10
            day = pd.Timestamp("2021-01-01") + pd.Timedelta(days=rng.randint(0, 300))
            total = a + b + (Decimal("0.01") if broken and i == 7 else 0)
            writer.writerow([18 + i % 60, *PLACES[i % 5], a, b, total, day.date(),
                             (day + pd.Timedelta(days=rng.randint(0, 20))).date()])
    return path


def columns_of(frame: pd.DataFrame, types: dict[str, str]) -> list[dict]:
    return TableTransform.fit(frame, types, numeric="quantile").columns


TYPES = {"age": "integer", "city": "categorical", "country": "categorical", "a": "numeric", "b": "numeric",
         "total": "numeric", "admitted": "datetime", "discharged": "datetime"}


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> pd.DataFrame:
    frame = pd.read_csv(stays_csv(tmp_path_factory.mktemp("stays")))
    for name in ("admitted", "discharged"):
        frame[name] = pd.to_datetime(frame[name])
    return frame


@pytest.fixture(scope="module")
def columns(table) -> list[dict]:
    return columns_of(table, TYPES)


# ---- the language -------------------------------------------------------------------------------
def test_each_form_parses_binds_and_round_trips_as_plain_data(table, columns):
    bound = bind_constraints(["age >= 18", "18 <= age < 90", "90 > age", "admitted <= discharged",
                              "discharged >= 2021-01-01", "fixed city, country", "total = a + b",
                              "`a` <= \"total\""], columns, table)
    assert [c.to_dict()["kind"] for c in bound] == ["compare"] * 5 + ["fixed", "sum", "compare"]
    assert bound[0].to_dict() == {"kind": "compare", "text": "age >= 18", "terms": [{"value": 18}, {"column": "age"}],
                                  "ops": ["<="]}
    assert bound[2].terms == [{"column": "age"}, {"value": 90}] and bound[2].ops == ["<"]  # ">" chains reversed
    assert bound[4].terms[0] == {"date": "2021-01-01T00:00:00"}
    assert isinstance(bound[5], Fixed) and sorted(map(tuple, bound[5].combinations)) == sorted(PLACES)
    assert isinstance(bound[6], Sum) and (bound[6].round_to, bound[6].decimals) == (2, 2)  # a: 2 decimals, b: 1
    plain = json.loads(json.dumps([c.to_dict() for c in bound]))
    assert constraints_from_dicts(plain) == bound
    assert not any(c.broken(table).any() for c in bound)  # the data keeps them all


@pytest.mark.parametrize("text, message", [
    ("age", "names a column without a condition"),
    ("fixed city", "needs at least two columns (inside a YAML list, quote it"),
    ("fixed city country", "a fixed combination needs at least two columns"),
    ("a + b", "a sum names its total first"),
    ("a, b", "columns separated by commas are a fixed combination"),
    ("18 <= age >= 3", "a chain mixes < and >"),
    ("age >=", "operators and operands do not alternate"),
    ("total = a - b", "the table has no column 'a - b'"),
    ("\"age >= 3", "a quote is not closed"),
    ("3 <= 4", "it compares values only"),
    ("age >= nan", "'nan' is not a finite number"),
    ("height >= 3", "the table has no column 'height'; its columns: age, city, country, a, b, total, admitted"),
    ("city >= 3", "column 'city' holds categorical values; a comparison takes numeric, integer or datetime columns"),
    ("admitted >= 3", "'admitted' holds dates; compare it with a date such as 2020-01-31"),
    ("age >= 2021-01-01", "'age' holds numbers; compare it with a number"),
    ("age <= admitted", "'age' holds numbers and 'admitted' dates"),
    ("fixed city, age", "column 'age' holds integer values; a fixed combination takes categorical or boolean"),
    ("fixed city, city", "a column is named twice"),
    ("total = total + a", "'total' is both the total and a part"),
    ("age = a + b", "'age' holds whole numbers but its parts have decimals; declare it numeric"),
])
def test_a_bad_constraint_is_one_line_naming_the_problem(table, columns, text, message):
    with pytest.raises(ConfigError) as e:
        bind_constraints([text], columns, table)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_sets_of_sums_and_sample_time_fixed_combinations_are_refused(table, columns):
    with pytest.raises(ConfigError, match="column 'total' is the total of 2 sums"):
        bind_constraints(["total = a + b", "total = b + a"], columns, table)
    with pytest.raises(ConfigError, match="build each other in a circle"):
        bind_constraints(["total = a + b", "a = total + b"], columns, table)
    with pytest.raises(ConfigError, match="a fixed combination is learnt from the training rows; declare it when"):
        bind_constraints(["fixed city, country"], columns)  # no training rows: at sample time
    with pytest.raises(ConfigError, match=r"data.constraints must be a list of constraints"):
        check_texts({"age": 3})
    assert check_texts(" age >= 3 ") == ["age >= 3"] and check_texts(None) == []


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab1 <=>+,`\"fixed-.")), max_size=20))
def test_any_text_parses_or_is_one_config_error_line(text):
    try:
        parse_statement(text)
    except ConfigError as e:
        assert "\n" not in str(e)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-10**6, 10**6), st.integers(0, 3), st.integers(-10**4, 10**4),
                          st.integers(0, 3)), min_size=1, max_size=20))
def test_a_built_sum_is_exact_in_the_written_csv(values):
    """Parts with up to 3 decimals: the total written to the CSV is their exact decimal sum, and float
    arithmetic on the values read back keeps it within the check's tolerance."""
    frame = pd.DataFrame({"a": [x / 10 ** d for x, d, _, _ in values], "b": [y / 10 ** e for _, _, y, e in values]})
    frame = frame.round({"a": 3, "b": 3})
    frame["total"] = 0.0
    columns = [{"name": n, "type": "numeric", "dtype": "float64", "decimals": 3, "min": 0.0, "max": 1.0}
               for n in ("a", "b", "total")]
    kept = Enforcement(bind_constraints(["total = a + b"], columns)).keep(frame)
    text = kept.to_csv(index=False)
    for row in list(csv.DictReader(io.StringIO(text))):
        assert Decimal(row["a"]) + Decimal(row["b"]) == Decimal(row["total"])
    back = pd.read_csv(io.StringIO(text))
    assert len(kept) == len(frame) and not Sum("t", "total", ["a", "b"], 3, 3).broken(back).any()


def test_missing_cells_break_nothing_and_an_integer_sum_keeps_its_dtype():
    frame = pd.DataFrame({"x": [1, 5, None], "y": [2, 3, 4], "t": [0, 0, 9]})
    columns = [{"name": "x", "type": "integer", "dtype": "float64", "min": 1.0, "max": 5.0},
               {"name": "y", "type": "integer", "dtype": "int64", "min": 2.0, "max": 4.0},
               {"name": "t", "type": "integer", "dtype": "int64", "min": 0.0, "max": 9.0}]
    kept = Enforcement(bind_constraints(["x <= y", "t = x + y"], columns)).keep(frame)
    assert kept["t"].tolist() == [3, 9] and kept["t"].dtype == "int64"  # row 1 breaks x <= y; row 2 has no x


def test_data_that_breaks_a_constraint_is_one_line_with_an_example(table, columns):
    young = table.assign(age=table["age"].where(table.index != 3, 12))
    with pytest.raises(DataError) as e:
        learn_constraints(["age >= 18"], columns_of(young, TYPES), young, "csv:stays.csv")
    assert str(e.value) == ("csv:stays.csv: 1 of 200 rows break constraint 'age >= 18' (e.g. age=12); correct the "
                            "data or leave the constraint out of data.constraints")
    assert learn_constraints(["total = a + b"], columns, table, "x")[0]["kind"] == "sum"


# ---- a barely trained run ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("constraints")
    out = folder / "run"
    constraints = json.dumps(DECLARED)
    genforge.train("vae", f"csv:{stays_csv(folder)}", out, steps=2, batch_size=20, progress=False,
                   overrides=["data.numeric=quantile", f"data.constraints={constraints}", "model.latent_dim=4",
                              "model.hidden=[16]", "train.sample_every=0"])
    return out


@pytest.fixture(scope="module")
def model(run):
    """The run loaded, its decoder's layers drawn afresh (seeded, without biases) and its categories uniform: its
    raw rows are noise that breaks each constraint often (two steps of training can leave two columns in order
    by chance)."""
    model = genforge.load(run, device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in (model.family.decoder[0], model.family.decoder[-1]):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator))
            layer.bias.zero_()
        for span in model.family.spans:
            if span.kind == "category":
                model.family.decoder[-1].weight[span.start:span.stop] = 0.0
    return model


def broken_counts(model, rows: pd.DataFrame, extra=()) -> dict[str, int]:
    return {c.text: int(c.broken(rows).sum()) for c in model.constraints(list(extra) or None)}


def read_back(path) -> pd.DataFrame:
    rows = pd.read_csv(path)
    for name in ("admitted", "discharged"):
        rows[name] = pd.to_datetime(rows[name])
    return rows


def test_raw_rows_break_every_constraint_and_sampled_rows_none(model, tmp_path):
    raw = model.codec.decode(model.family.sample(500, generator=torch.Generator().manual_seed(0)))
    asked = ["age >= 40"]
    counts = broken_counts(model, raw, asked)
    assert counts.pop("age >= 18") == 0  # decoding keeps a column within its training range: no row breaks it
    assert all(counts.values()), counts  # the rest: enforcement has something to do
    model.save_samples(300, tmp_path, seed=0, progress=False, constraints=asked)
    rows = read_back(tmp_path / "rows.csv")
    assert len(rows) == 300 and not any(broken_counts(model, rows, asked).values())
    assert set(zip(rows["city"], rows["country"])) <= set(PLACES) and rows["age"].min() >= 40
    with open(tmp_path / "rows.csv", newline="") as f:  # the sum, exact in the written text
        assert all(Decimal(r["a"]) + Decimal(r["b"]) == Decimal(r["total"]) for r in csv.DictReader(f))
    settings_ = json.loads((tmp_path / "settings.json").read_text())
    assert settings_["constraints"] == DECLARED + asked


def test_constraints_with_where_and_the_same_seed_gives_the_same_rows(model):
    rows = model.sample(60, seed=3, where="city=Berlin", constraints="admitted <= 2021-06-30")
    assert set(rows["city"]) == {"Berlin"} and set(rows["country"]) == {"Germany"}
    assert (rows["admitted"] <= pd.Timestamp("2021-06-30")).all() and not any(broken_counts(model, rows).values())
    assert rows.equals(model.sample(60, seed=3, where={"city": "Berlin"}, constraints=["admitted <= 2021-06-30"]))
    assert not rows.equals(model.sample(60, seed=4, where="city=Berlin", constraints="admitted <= 2021-06-30"))


def test_evaluation_scores_rows_that_keep_the_constraints(run, model):
    from genforge.evaluate.evaluator import Evaluator
    from genforge.modalities import prepare

    prepared = prepare(model.run.config.data.source, model.run.config.data, progress=False)
    assert prepared.spec.to_dict() == model.spec.to_dict()  # the spec the run keeps: constraints included
    scorer = Evaluator(prepared, n=120, device="cpu", progress=False).scorer
    rows, _ = scorer.draw(model.family, None)
    assert len(rows) == 120 and not any(broken_counts(model, rows).values())


def test_the_cli_samples_only_valid_rows_and_info_shows_the_constraints(run, tmp_path):
    done = run_main("sample", run, "-n", "40", "--constraint", "age >= 35", "--constraint", "b <= a",
                    "--out", tmp_path / "s", "--device", "cpu")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = read_back(tmp_path / "s" / "rows.csv")
    assert len(rows) == 40 and rows["age"].min() >= 35 and (rows["b"] <= rows["a"]).all()
    assert json.loads((tmp_path / "s" / "settings.json").read_text())["constraints"] == DECLARED + ["age >= 35",
                                                                                                   "b <= a"]
    about = json.loads(run_main("info", run, "--json").stdout)
    assert [c["text"] for c in about["data"]["constraints"]] == DECLARED
    assert about["data"]["constraints"][2] == {"text": "fixed city, country", "kind": "fixed", "combinations": 5}
    assert re.search(r"^constraints +age >= 18; admitted <= discharged; fixed city, country; total = a \+ b$",
                     run_main("info", run).stdout, re.M)


@pytest.mark.parametrize("args, message", [
    (["--constraint", "age > 77"], "error: only 0 of 500 rows drawn met the constraints ('age > 77' broke 500); the "
                                   "constraints are too rare for this model (it draws at most 100 rows per row asked)"),
    (["--constraint", "weight >= 3"], "error: constraint 'weight >= 3': the table has no column 'weight'"),
    (["--constraint", "fixed a, b"], "error: constraint 'fixed a, b': column 'a' holds numeric values"),
])
def test_a_bad_or_too_rare_constraint_is_one_error_line(run, tmp_path, args, message):
    done = run_main("sample", run, "-n", "5", *args, "--out", tmp_path / "out", "--device", "cpu")
    assert one_error_line(done).startswith(message)
    assert not (tmp_path / "out" / "rows.csv").exists()


def test_training_on_data_that_breaks_a_declared_constraint_is_one_error_line(tmp_path):
    source = f"csv:{stays_csv(tmp_path, broken=True)}"
    done = run_main("train", "-f", "vae", "-d", source, "-o", tmp_path / "run", "--steps", "1", "-q",
                    "--set", "data.numeric=quantile", "--set", 'data.constraints=["total = a + b"]')
    line = one_error_line(done)
    assert line.startswith(f"error: {source}: 1 of 200 rows break constraint 'total = a + b' (e.g. total=")
    assert not (tmp_path / "run" / "config.yaml").exists()
