"""Conditional sampling of tables (``where``): only matching rows come back from either family, the GAN's
conditional vector is the asked category, a condition the model never meets is one line after a bounded
number of draws, names resolve through the run's transform, and `genforge sample --where` writes only matching
rows or one error line."""

from __future__ import annotations

import csv

import pandas as pd
import pytest
import torch
from clitools import one_error_line, run_main
from tabletools import HEADER, patients_csv

import genforge
from genforge.data.spec import DataSpec
from genforge.data.table_transform import TableTransform
from genforge.errors import ConfigError
from genforge.families.capabilities import TableSampling, parse_pairs
from genforge.families.table_conditions import (MAX_DRAWN, Condition, condition_span, condition_values,
                                                draw_matching, matching)
from genforge.families.table_gan import TableGAN, TableGANConfig
from genforge.families.table_vae import TableVAE, TableVAEConfig
from genforge.nets.spans import spans_of

pytestmark = pytest.mark.usefixtures("one_thread")

# a value, a 4-category column b, a 2-category column c: 7 dims, conditioning entries b 0..3 and c 4..5
LAYOUT = {"spans": [{"column": "a", "kind": "value", "start": 0, "width": 1},
                    {"column": "b", "kind": "category", "start": 1, "width": 4},
                    {"column": "c", "kind": "category", "start": 5, "width": 2}], "columns": []}
SPEC = DataSpec(modality="table", shape=(7,), table=LAYOUT)


def gan() -> TableGAN:
    torch.manual_seed(0)
    return TableGAN(TableGANConfig(latent_dim=8, generator_dim=[16], discriminator_dim=[16], pac=1), SPEC)


def vae() -> TableVAE:
    torch.manual_seed(0)
    return TableVAE(TableVAEConfig(latent_dim=4, hidden=[16]), SPEC)


def categories(x: torch.Tensor) -> tuple[set[int], set[int]]:
    return set(x[:, 1:5].argmax(1).tolist()), set(x[:, 5:7].argmax(1).tolist())


@pytest.mark.parametrize("make", [gan, vae])
def test_only_matching_rows_come_back_and_the_same_seed_gives_the_same_rows(make):
    family = make()
    where = [Condition("b", 2), Condition("c", 1)]
    x = family.sample(300, generator=torch.Generator().manual_seed(0), where=where)
    assert x.shape == (300, 7) and categories(x) == ({2}, {1})
    assert torch.equal(x, family.sample(300, generator=torch.Generator().manual_seed(0), where=where))
    assert categories(family.sample(300, generator=torch.Generator().manual_seed(0)))[0] == {0, 1, 2, 3}


# a 3-category column and a binary-coded column of 6 categories (3 bits): 6 dims
CODED = DataSpec(modality="table", shape=(6,), table={"spans": [
    {"column": "b", "kind": "category", "start": 0, "width": 3},
    {"column": "many", "kind": "code", "start": 3, "width": 3}], "columns": []})


@pytest.mark.parametrize("make", [
    lambda: TableGAN(TableGANConfig(latent_dim=8, generator_dim=[16], discriminator_dim=[16], pac=1), CODED),
    lambda: TableVAE(TableVAEConfig(latent_dim=4, hidden=[16]), CODED)])
def test_a_condition_on_a_binary_coded_column_returns_only_its_category(make):
    torch.manual_seed(0)
    family = make()
    where = [Condition("many", 5, "many=x", count=6), Condition("b", 1)]
    x = family.sample(100, generator=torch.Generator().manual_seed(0), where=where)
    assert x.shape == (100, 6) and bool(matching(x, family.spans, where).all())
    frame = pd.DataFrame({"many": list("abcdef") * 5})
    transform = TableTransform.fit(frame, {"many": "categorical"}, onehot_max=4)
    decoded = transform.decode(torch.cat([torch.zeros(100, 0), x[:, 3:]], dim=1).numpy())
    assert set(decoded["many"]) == {transform.columns[0]["categories"][5]}  # what the transform decodes, too


def test_the_gan_conditions_every_row_on_the_first_condition():
    family = gan()
    cond = family.sampling_conditions(50, torch.Generator().manual_seed(0), Condition("c", 1))
    assert torch.equal(cond, torch.tensor([[0.0, 0, 0, 0, 0, 1]]).expand(50, 6))  # entry 4 + 1: c's second

    asked = []
    original = family.sampling_conditions

    def spy(n, generator, where=None):
        asked.append(where)
        return original(n, generator, where)

    family.sampling_conditions = spy
    family.sample(20, generator=torch.Generator().manual_seed(0), where=[Condition("b", 3), Condition("c", 0)])
    assert asked and all(w == Condition("b", 3) for w in asked)  # conditioned on the first, rejected on both


def test_a_condition_the_model_never_meets_is_one_line_after_a_bounded_number_of_draws():
    family = vae()
    drawn = []

    def never_b3(k: int) -> torch.Tensor:  # every row holds b's first category
        drawn.append(k)
        x = torch.zeros(k, 7)
        x[:, 1] = x[:, 5] = 1
        return x

    with pytest.raises(ConfigError) as e:
        draw_matching(never_b3, 30, family.spans, [Condition("b", 3, "b=rare")])
    assert str(e.value) == (f"only 0 of {MAX_DRAWN * 30:,} rows drawn matched b=rare; the condition is too rare "
                            f"for this model (it draws at most {MAX_DRAWN} rows per row asked)")
    assert sum(drawn) == MAX_DRAWN * 30 and "\n" not in str(e.value)

    # the family's own sampling: a category its decoder (effectively) never outputs
    with torch.no_grad():
        family.decoder[-1].bias[4] = -1e4
    with pytest.raises(ConfigError, match=r"only 0 of 1,000 rows drawn matched b\[3\]"):
        family.sample(10, generator=torch.Generator().manual_seed(0), where=[Condition("b", 3)])


def test_where_pairs_are_parsed_and_checked():
    assert parse_pairs("a=x, b=y") == (("a", "x"), ("b", "y"))
    assert parse_pairs(["city=Paris, France", "ok=true"]) == (("city", "Paris, France"), ("ok", "true"))
    assert parse_pairs({"ok": True, "gap": None}) == (("ok", "true"), ("gap", ""))
    for bad, message in (("diagnosis", "takes column=value pairs"), ("=x", "without a column name"),
                         ("a=1,a=2", "gives column 'a' twice"), (3, "got int"), ("", "is empty")):
        with pytest.raises(ConfigError, match=message):
            TableSampling(where=bad)
    assert TableGAN.capabilities["sample"] is TableSampling and TableVAE.capabilities["sample"] is TableSampling


def test_names_resolve_through_the_transform():
    frame = pd.DataFrame({"x": [1.5, 2.5, 3.5, 4.5] * 5, "kind": ["b", "a", "b", "c"] * 5,
                          "ok": [True, False, True, True] * 5, "many": [str(i) for i in range(20)]})
    types = {"x": "numeric", "kind": "categorical", "ok": "boolean", "many": "categorical"}
    transform = TableTransform.fit(frame, types, numeric="quantile", onehot_max=10)
    assert transform.conditionable() == ["kind", "ok", "many"]
    assert transform.category_index("kind", "b") == 0 and transform.category_index("kind", "c") == 2  # by count
    assert transform.category_index("ok", "true") == 1 and transform.category_index("ok", "True") == 1
    assert transform.category_index("many", "3") == 3 and transform.category_count("many") == 20
    with pytest.raises(ConfigError, match="holds numeric values; only categorical and boolean"):
        transform.category_index("x", "1.5")
    spans = spans_of(DataSpec("table", (transform.width,), table=transform.layout()))
    x = torch.tensor(transform.encode(frame))
    assert torch.equal(matching(x, spans, [Condition("kind", 2)]), torch.tensor(frame["kind"].eq("c").to_numpy()))
    # a binary-coded column (20 categories in 5 bits): a row matches when its code decodes to the asked one
    many = Condition("many", 13, count=20)
    assert torch.equal(matching(x, spans, [many]), torch.tensor(frame["many"].eq("13").to_numpy()))
    span = condition_span(spans, many)
    assert span.kind == "code" and condition_values(span, many).tolist() == [-1, 1, 1, -1, 1]  # 13 = 0b01101
    assert condition_values(condition_span(spans, Condition("kind", 1)), Condition("kind", 1)).tolist() == [0, 1, 0]
    noisy = x.clone()
    noisy[:, span.start:span.stop] *= 0.3  # generated codes are not exact: the nearest valid code decides
    assert torch.equal(matching(noisy, spans, [many]), matching(x, spans, [many]))
    invalid = torch.zeros(1, x.shape[1])
    invalid[0, span.start:span.stop] = torch.tensor([1.0, 1, 1, 1, 1])  # 31, past 19: the nearest valid is 15
    assert matching(invalid, spans, [Condition("many", 15, count=20)]).item()  # 0b01111: one bit off
    assert not matching(invalid, spans, [Condition("many", 15)]).item()  # without its count, code 31 is valid
    with pytest.raises(ConfigError, match="column 'many' has 20 categories; category 20 is not one of them"):
        matching(x, spans, [Condition("many", 20, count=20)])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("where")
    out = folder / "run"
    genforge.train("gan", f"csv:{patients_csv(folder)}", out, steps=4, batch_size=20, progress=False,
                   overrides=["data.numeric=quantile", "model.latent_dim=8", "model.generator_dim=[16]",
                              "model.discriminator_dim=[16]", "train.sample_every=0"])
    return out


def read_rows(path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_a_table_run_samples_only_matching_rows_in_python(run):
    model = genforge.load(run, device="cpu")
    rows = model.sample(40, seed=1, where={"smoker": "yes"})
    assert len(rows) == 40 and set(rows["smoker"]) == {"yes"}
    assert rows.equals(model.sample(40, seed=1, where="smoker=yes"))
    with pytest.raises(ConfigError, match="unknown column 'smoke'; the columns sampling can be conditioned on: smoker"):
        model.sample(5, where="smoke=yes")


def test_the_cli_where_writes_only_matching_rows(run, tmp_path):
    done = run_main("sample", run, "-n", "30", "--where", "smoker=no", "--out", tmp_path / "no", "--device", "cpu")
    assert done.returncode == 0, done.stderr[-2000:]
    table = read_rows(tmp_path / "no" / "rows.csv")
    assert table[0] == HEADER and len(table) == 31 and {row[1] for row in table[1:]} == {"no"}
    assert '"where": "smoker=no"' in (tmp_path / "no" / "settings.json").read_text()


@pytest.mark.parametrize("where, message", [
    ("colour=red", "unknown column 'colour'; the columns sampling can be conditioned on: smoker"),
    ("smoker=maybe", "column 'smoker' has no value 'maybe'; its values: no, yes"),
    ("age=30", "column 'age' holds integer values; only categorical and boolean columns can be conditioned on: smoker"),
    ("smoker", "where takes column=value pairs such as \"diagnosis=malignant\", got 'smoker'"),
])
def test_bad_where_is_one_error_line(run, tmp_path, where, message):
    done = run_main("sample", run, "-n", "5", "--where", where, "--out", tmp_path / "out", "--device", "cpu")
    assert one_error_line(done) == f"error: {message}"
    assert not (tmp_path / "out" / "rows.csv").exists()
