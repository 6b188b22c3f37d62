"""The table transform is reversible: encode then decode gives the table back (same column order, dtypes,
categories and missing cells; integers, booleans and datetimes exactly; floats within float32 precision of the
column's scale), and any finite rows decode to a valid table."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genforge.data.spec import DataSpec
from genforge.data.table_transform import TableTransform, nearest_code
from genforge.data.tables import EMPTY, infer_type

SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]
WORDS = ["red", "green", "blue", "teal", "plum", "rare"]
BASE = np.datetime64("2015-03-01T00:00:00", "s")


def maybe_missing(draw, values: list, allow: bool) -> list:
    if not allow:
        return values
    holes = draw(st.lists(st.booleans(), min_size=len(values), max_size=len(values)))
    return [None if h else v for v, h in zip(values, holes)]


@st.composite
def columns(draw, n: int, wide: bool) -> pd.Series:
    """One column of ``n`` rows of a kind hypothesis picks; ``wide`` integers span +-2**20 (gmm), else +-1000."""
    kind = draw(st.sampled_from(["float", "int", "Int64", "words", "category", "bool", "boolean", "dates",
                                 "seconds", "zoned", "empty"]))
    missing = draw(st.booleans())
    if kind == "float":
        values = draw(st.lists(st.floats(-1e6, 1e6, allow_subnormal=False), min_size=n, max_size=n))
        return pd.Series(maybe_missing(draw, values, missing), dtype="float64")
    if kind in ("int", "Int64"):
        bound = 2**20 if wide else 1000
        values = draw(st.lists(st.integers(-bound, bound), min_size=n, max_size=n))
        if kind == "int":
            return pd.Series(values, dtype="int64")
        return pd.Series(maybe_missing(draw, values, missing), dtype="Int64")
    if kind in ("words", "category"):
        values = maybe_missing(draw, draw(st.lists(st.sampled_from(WORDS), min_size=n, max_size=n)), missing)
        if kind == "words":
            return pd.Series(values, dtype="str")
        return pd.Series(pd.Categorical(values, categories=WORDS + ["unused"], ordered=draw(st.booleans())))
    if kind == "bool":
        return pd.Series(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype="bool")
    if kind == "boolean":
        return pd.Series(maybe_missing(draw, draw(st.lists(st.booleans(), min_size=n, max_size=n)), missing),
                         dtype="boolean")
    if kind == "empty":
        return pd.Series([np.nan] * n, dtype=draw(st.sampled_from(["float64", "object"])))
    step, top = {"dates": (86_400, 3650), "seconds": (1, 172_800), "zoned": (60, 50_000)}[kind]
    offsets = draw(st.lists(st.integers(0, top), min_size=n, max_size=n))
    stamps = pd.Series(BASE + np.array(offsets, dtype=np.int64) * np.timedelta64(step, "s"))
    stamps = stamps.astype(draw(st.sampled_from(["datetime64[s]", "datetime64[ns]"])))
    if missing:
        stamps[np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))] = pd.NaT
    return stamps.dt.tz_localize("UTC") if kind == "zoned" else stamps


@st.composite
def tables(draw, wide: bool = False) -> pd.DataFrame:
    n = draw(st.integers(1, 25))
    k = draw(st.integers(1, 5))
    return pd.DataFrame({f"c{i}": draw(columns(n, wide)) for i in range(k)})


def types_of(frame: pd.DataFrame) -> dict[str, str]:
    """The inferred types, with identifiers kept (as categories): the transform sees every column here."""
    out = {}
    for name in frame.columns:
        kind = infer_type(frame[name])
        out[name] = "categorical" if kind == "identifier" else kind
    return out


def assert_round_trip(frame: pd.DataFrame, back: pd.DataFrame, transform: TableTransform) -> None:
    assert list(back.columns) == list(frame.columns)
    for col in transform.columns:
        name = col["name"]
        a, b = frame[name], back[name]
        assert str(b.dtype) == str(a.dtype), (name, a.dtype, b.dtype)
        assert (a.isna().to_numpy() == b.isna().to_numpy()).all(), (name, a.tolist(), b.tolist())
        present = a.notna().to_numpy()
        if isinstance(a.dtype, pd.CategoricalDtype):
            assert list(b.cat.categories) == list(a.cat.categories) and b.cat.ordered == a.cat.ordered
        if col["type"] == "numeric" and not str(a.dtype).startswith(("int", "Int")):
            x, y = a.to_numpy(np.float64, na_value=np.nan)[present], b.to_numpy(np.float64, na_value=np.nan)[present]
            if col["encoding"] == "gmm":
                tol = 2.0**-21 * np.abs(x).max(initial=0)
            else:
                tol = 2.0**-22 * len(col["refs"]) * (x.max(initial=0) - x.min(initial=0))
            assert np.abs(x - y).max(initial=0) <= tol + 1e-12, (name, x, y)
        else:  # integers, categories, booleans, datetimes: exactly
            assert a[present].astype(object).tolist() == b[present].astype(object).tolist(), (name, a, b)


def fit(frame: pd.DataFrame, **options) -> TableTransform:
    return TableTransform.fit(frame, types_of(frame), **options)


@settings(max_examples=30, deadline=None, suppress_health_check=SLOW_OK)
@given(frame=tables(), onehot_max=st.sampled_from([1, 3, 50]))
def test_quantile_encoding_round_trips(frame, onehot_max):
    transform = fit(frame, numeric="quantile", onehot_max=onehot_max)
    x = transform.encode(frame)
    assert x.dtype == np.float32 and x.shape == (len(frame), transform.width)
    assert_round_trip(frame, transform.decode(x), transform)


@settings(max_examples=12, deadline=None, suppress_health_check=SLOW_OK)
@given(frame=tables(wide=True))
def test_gmm_encoding_round_trips(frame):
    transform = fit(frame, numeric="gmm", max_modes=4)
    x = transform.encode(frame)
    assert_round_trip(frame, transform.decode(x), transform)
    # and through JSON, as a cache entry or a run keeps it
    again = TableTransform.from_dict(json.loads(json.dumps(transform.to_dict())))
    assert_round_trip(frame, again.decode(x), again)


@settings(max_examples=20, deadline=None, suppress_health_check=SLOW_OK)
@given(frame=tables(), seed=st.integers(0, 2**16))
def test_any_rows_decode_to_a_valid_table(frame, seed):
    """Generated rows are not exact one-hots: each still decodes to known categories and values in range."""
    transform = fit(frame, numeric="quantile", onehot_max=3)
    noise = np.random.default_rng(seed).normal(0, 2, (7, transform.width)).astype(np.float32)
    back = transform.decode(noise)
    assert len(back) == 7 and list(back.columns) == list(frame.columns)
    for col in transform.columns:
        a, b = frame[col["name"]], back[col["name"]]
        assert str(b.dtype) == str(a.dtype)
        if col["type"] in ("categorical", "boolean"):
            both = {False, True} if str(a.dtype) in ("bool", "boolean") else set()  # booleans: always 2 categories
            assert set(b.dropna().astype(object)) <= set(a.dropna().astype(object)) | both
        elif col["type"] in ("numeric", "integer"):
            assert (b.dropna() >= a.min()).all() and (b.dropna() <= a.max()).all()
        elif col["type"] == EMPTY:
            assert b.isna().all()


def test_the_layout_lists_every_dim_once_and_encoded_rows_keep_to_it():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "age": rng.integers(18, 90, 300),
        "income": np.where(rng.random(300) < 0.1, np.nan, rng.lognormal(10, 1, 300)),
        "city": pd.Series(rng.choice(["a", "b", "c", None], 300), dtype="str"),
        "code": [f"k{i}" for i in rng.integers(0, 200, 300)],
        "smoker": rng.random(300) < 0.3,
        "nothing": np.nan,
    })
    transform = TableTransform.fit(frame, types_of(frame), onehot_max=50)
    layout = transform.layout()
    spec = DataSpec("table", (transform.width,), table=layout)
    assert spec.kind == "table" and spec.table_spans() == transform.spans()
    assert DataSpec.from_dict(json.loads(json.dumps(spec.to_dict()))).table_spans() == transform.spans()
    spans = spec.table_spans()
    assert spans[0].start == 0 and spans[-1].stop == transform.width == layout["width"]
    assert all(a.stop == b.start for a, b in zip(spans, spans[1:]))
    assert [c["name"] for c in layout["columns"]] == list(frame.columns)
    kinds = {(s.column, s.kind): s for s in spans}
    assert ("income", "missing") in kinds and ("age", "missing") not in kinds
    assert kinds[("code", "code")].width == 8  # 200 categories > onehot_max: an 8-bit code
    assert kinds[("smoker", "category")].width == 2
    assert not any(s.column == "nothing" for s in spans)  # an empty column takes no dims
    x = transform.encode(frame)
    for s in spans:
        part = x[:, s.start:s.stop]
        if s.activation == "softmax":
            assert ((part == 0) | (part == 1)).all() and (part.sum(axis=1) == 1).all(), s
        elif s.kind == "code":
            assert set(np.unique(part)) <= {-1.0, 1.0}
        else:
            assert np.abs(part).max() < 3  # about [-1, 1]; values far out in a mode's tail go a little past
    assert_round_trip(frame, transform.decode(x), transform)


def test_old_specs_have_no_table():
    old = {"modality": "image", "shape": [1, 8, 8], "vocab_size": None, "num_classes": 10, "class_names": []}
    spec = DataSpec.from_dict(old)
    assert spec.table is None and spec.kind == "image" and spec.table_spans() == []


def test_a_one_row_table_and_rare_categories():
    frame = pd.DataFrame({"x": [2.5], "n": [3], "w": pd.Series(["a"], dtype="str")})
    transform = fit(frame)
    assert_round_trip(frame, transform.decode(transform.encode(frame)), transform)
    rare = pd.DataFrame({"w": pd.Series(["common"] * 999 + ["once"], dtype="str")})
    transform = fit(rare, onehot_max=1)  # binary-coded: the rare one is rank 1
    assert_round_trip(rare, transform.decode(transform.encode(rare)), transform)


@given(values=st.lists(st.lists(st.floats(-2, 2), min_size=6, max_size=6), min_size=1, max_size=20),
       k=st.integers(33, 64))
def test_nearest_code_is_the_nearest_valid_code(values, k):
    v = np.array(values)
    codes = ((np.arange(k)[:, None] >> np.arange(5, -1, -1)) & 1) * 2.0 - 1.0
    best = nearest_code(v, k)
    assert (best < k).all()
    distances = ((v[:, None, :] - codes[None]) ** 2).sum(axis=2)
    np.testing.assert_allclose(distances[np.arange(len(v)), best], distances.min(axis=1))


def test_ten_thousand_categories_stay_fast():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"item": pd.Series([f"item{i}" for i in rng.permutation(np.arange(20_000) % 10_000)],
                                            dtype="str"), "price": rng.gamma(2, 10, 20_000).round(2)})
    transform = TableTransform.fit(frame, {"item": "categorical", "price": "numeric"}, numeric="quantile")
    assert [(s.kind, s.width) for s in transform.spans() if s.column == "item"] == [("code", 14)]
    started = time.perf_counter()
    back = transform.decode(transform.encode(frame))
    seconds = time.perf_counter() - started
    assert_round_trip(frame, back, transform)
    # measured well under a second; the bound only catches a quadratic path (20,000 x 10,000 comparisons)
    assert seconds < 5, seconds


@pytest.mark.parametrize("numeric", ["gmm", "quantile"])
def test_values_come_back_with_their_own_decimals(numeric):
    frame = pd.DataFrame({"age": [54.3, 40.4, 51.0, 42.5, 48.6, 61.7] * 5})
    transform = fit(frame, numeric=numeric)
    back = transform.decode(transform.encode(frame))
    assert back["age"].tolist() == frame["age"].tolist()


def test_a_spike_is_an_atom_decoded_exactly_whatever_its_value_dim():
    rng = np.random.default_rng(0)
    claims = np.where(rng.random(2000) < 0.7, 0.0, np.round(rng.lognormal(5, 1, 2000), 2))  # 70% exact zeros
    frame = pd.DataFrame({"claim": claims})
    transform = TableTransform.fit(frame, {"claim": "numeric"})
    col = transform.columns[0]
    assert col["means"][0] == 0.0 and col["stds"][0] == 0.0 and abs(col["weights"][0] - 0.7) < 0.03
    assert all(s > 0 for s in col["stds"][1:]) and abs(sum(col["weights"]) - 1) < 1e-6
    x = transform.encode(frame)
    zero = claims == 0
    assert (x[zero, 1] == 1).all() and (x[zero, 0] == 0).all() and (x[~zero, 1] == 0).all()
    noisy = x.copy()
    noisy[:, 0] = rng.uniform(-1, 1, len(x))  # a model's value dim: anything, the atom's rows still decode to 0
    assert (transform.decode(noisy)["claim"][zero] == 0).all()
    assert transform.decode(x)["claim"].equals(frame["claim"])
