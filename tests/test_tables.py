"""Tables as a modality: sources (CSV, Parquet, the built-in tables), inferred and overridden column types, the
cache entry and datasets, the codec's CSV, and every kind of bad input as one line."""

from __future__ import annotations

import contextlib
import json
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from clitools import one_error_line, run_main
from genforge.config import DataConfig, RunConfig, apply_overrides, data_config
from genforge.data.datasets import TableDataset
from genforge.data.table_codec import TableCodec
from genforge.data.tables import TableWarning
from genforge.errors import ConfigError, DataError
from genforge.models.batches import concat
from genforge.modalities import prepare
from genforge.modalities.registry import builtin_sources

PATIENTS = """patient_id,age,sex,visit,bmi,smoker,ward,notes
1,34,F,2021-03-04,22.5,True,A,
2,51,M,2021-03-09,27.1,False,B,
3,,F,2021-04-01,31.0,False,A,
4,67,M,,24.8,True,C,
5,45,F,2021-05-17,,False,A,
6,29,M,2021-06-02,26.3,False,B,
"""


def write(tmp_path, text: str, name: str = "t.csv", encoding: str = "utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


@pytest.fixture
def patients(tmp_path):
    return write(tmp_path, PATIENTS, "patients.csv")


def quantile(**values) -> DataConfig:
    return DataConfig(numeric="quantile", **values)  # fast to fit: these tests are about the plumbing


# ---- a CSV file, typed, cached and split --------------------------------------------------------
def test_a_csv_is_typed_cached_and_split(patients):
    with pytest.warns(TableWarning) as caught:
        p = prepare(f"csv:{patients}", quantile(), progress=False)
    messages = " | ".join(str(w.message) for w in caught)
    assert "identifier column(s) 'patient_id'" in messages and "'notes' hold no values" in messages
    m = p.manifest
    assert m["columns"] == {"integer": ["age"], "categorical": ["sex", "ward"], "datetime": ["visit"],
                            "numeric": ["bmi"], "boolean": ["smoker"], "empty": ["notes"]}
    assert m["identifiers"] == ["patient_id"] and m["rows"] == 6 and m["sizes"] == {"train": 5, "val": 1}
    assert p.spec.modality == "table" and p.spec.kind == "table" and p.spec.shape == (m["width"],)
    assert [s.column for s in p.spec.table_spans()][0] == "age"
    batch = p.train.step_batch(0, 0, 4)
    assert batch["x"].dtype == torch.float32 and batch["x"].shape == (4, m["width"])
    # the rows decode back to the table, less its identifier
    rows = torch.cat([p.train.rows, p.val.rows])
    back = p.tokenizer.decode(rows.numpy())
    assert list(back.columns) == ["age", "sex", "visit", "bmi", "smoker", "ward", "notes"]
    assert sorted(back["age"].dropna().tolist()) == [29, 34, 45, 51, 67]
    assert back["visit"].dtype.kind == "M" and back["notes"].isna().all()
    again = prepare(f"csv:{patients}", quantile(), progress=False)  # from the cache, without warnings
    assert again.path == p.path and torch.equal(again.train.rows, p.train.rows)


def test_overrides_change_types_and_key_the_cache(patients):
    cfg = quantile(columns={"patient_id": "categorical", "age": "numeric", "notes": "drop", "ward": "drop"})
    p = prepare(f"csv:{patients}", cfg, progress=False)  # nothing left out unasked, nothing empty: no warning
    assert p.manifest["identifiers"] == [] and p.manifest["dropped"] == ["ward", "notes"]
    assert p.manifest["columns"]["categorical"] == ["patient_id", "sex"] and "age" in p.manifest["columns"]["numeric"]
    with pytest.warns(TableWarning):
        plain = prepare(f"csv:{patients}", quantile(), progress=False)
    assert plain.path != p.path


def test_the_cache_follows_the_file(tmp_path):
    path = write(tmp_path, "a,b\n1,x\n2,y\n3,x\n")
    first = prepare(f"csv:{path}", quantile(), progress=False)
    write(tmp_path, "a,b\n1,x\n2,y\n3,x\n4,y\n")
    second = prepare(f"csv:{path}", quantile(), progress=False)
    assert second.path != first.path and second.manifest["rows"] == 4


def test_inference_rules(tmp_path):
    n = 40
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "user": [f"u{i:03d}" for i in range(n)],  # unique strings in 20+ rows: an identifier, whatever the name
        "rating": rng.integers(1, 6, n),  # few whole numbers: categories
        "count": rng.integers(0, 500, n),  # many whole numbers: integer
        "year": rng.integers(1990, 2020, n).astype(float),  # whole floats: integer, kept float
        "price": rng.gamma(2, 3, n).round(2),
        "when": [f"2020-01-{1 + i % 28:02d}" for i in range(n)],  # strings that are dates
        "code": [str(100 + i % 3) for i in range(n)],  # numbers as text: not dates
    })
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    with pytest.warns(TableWarning, match="'user'"):
        p = prepare(f"csv:{path}", quantile(), progress=False)
    assert p.manifest["identifiers"] == ["user"]
    assert p.manifest["columns"] == {"categorical": ["rating", "code"], "integer": ["count", "year"],
                                     "numeric": ["price"], "datetime": ["when"]}
    back = p.tokenizer.decode(p.train.rows.numpy())
    assert back["year"].dtype == np.float64 and back["price"].dtype == np.float64
    assert set(back["price"]) <= set(frame["price"])  # two decimals: values come back exactly
    # an index column written by pandas (no header name) is an identifier too
    frame.to_csv(tmp_path / "indexed.csv")
    with pytest.warns(TableWarning, match="'Unnamed: 0'"):
        indexed = prepare(f"csv:{tmp_path / 'indexed.csv'}", quantile(), progress=False)
    assert indexed.manifest["identifiers"] == ["Unnamed: 0", "user"]


# ---- the codec: one CSV with the table's header ------------------------------------------------
def test_samples_are_one_csv_with_the_header(tmp_path, patients):
    with pytest.warns(TableWarning):
        p = prepare(f"csv:{patients}", quantile(), progress=False)
    codec = TableCodec(p.tokenizer)
    assert codec.suffix == ".csv" and codec.item_shape(p.spec) == p.spec.shape
    x = torch.randn(300, p.spec.shape[0])
    out = tmp_path / "samples"
    # as Model.save_samples writes: in batches, then finish with the first rows
    parts = [codec.decode(x[:256]), codec.decode(x[256:])]
    paths = codec.write_items(parts[0], out, {"seed": 0}) + codec.write_items(parts[1], out, {"seed": 0}, start=256)
    assert not (out / "rows.csv").exists()  # whole or not at all
    codec.finish(concat(parts)[:256], out, {"seed": 0})
    assert len(paths) == 300 and set(paths) == {out / "rows.csv"}
    assert sorted(f.name for f in out.iterdir()) == ["rows.csv", "settings.json"]
    assert json.loads((out / "settings.json").read_text())["seed"] == 0
    written = pd.read_csv(out / "rows.csv")
    header = (out / "rows.csv").read_text().splitlines()[0]
    assert header == "age,sex,visit,bmi,smoker,ward,notes" and len(written) == 300
    assert set(written["sex"]) <= {"F", "M"} and set(written["ward"]) <= {"A", "B", "C"}
    assert written["age"].dropna().between(29, 67).all()
    assert len(concat(parts)) == 300 and list(concat(parts).index) == list(range(300))
    grid = codec.grid(x[:5], tmp_path / "step_0000100.csv", {"step": 100})
    assert len(pd.read_csv(grid)) == 5


def test_a_run_keeps_the_transform_in_its_tokenizer_slot(tmp_path, patients):
    from genforge.modalities.registry import run_modality
    from genforge.runs import Run

    with pytest.warns(TableWarning):
        p = prepare(f"csv:{patients}", quantile(), progress=False)
    run = Run.create(tmp_path / "run", RunConfig(family="vae", data=quantile(source=f"csv:{patients}")), p.spec,
                     p.tokenizer)
    opened = Run.open(run.path)
    assert opened.spec.kind == "table" and opened.spec.table == p.spec.table
    modality, transform = run_modality(opened)
    assert modality.name == "table" and transform.to_dict() == p.tokenizer.to_dict()
    (run.path / "tokenizer.json").unlink()
    with pytest.raises(Exception, match="table transform.*missing"):
        run_modality(opened)


def test_table_dataset_reads_in_epoch_order():
    rows = np.arange(12, dtype=np.float32).reshape(6, 2)
    ds = TableDataset(rows, name="t")
    seen = torch.cat([ds.step_batch(0, step, 3)["x"][:, 0] for step in range(2)])
    assert sorted(seen.tolist()) == [0, 2, 4, 6, 8, 10]
    with pytest.raises(DataError, match="has no rows"):
        TableDataset(np.zeros((0, 2), np.float32), name="t").step_batch(0, 0, 2)


# ---- settings -----------------------------------------------------------------------------------
def test_column_overrides_parse_and_round_trip_in_yaml():
    d = apply_overrides({"family": "vae", "data": {"source": "heart"}},
                        ["data.columns.age=numeric", "data.columns.censors=boolean", "data.numeric=quantile"])
    cfg = RunConfig.from_dict(d)
    assert cfg.data.columns == {"age": "numeric", "censors": "boolean"} and cfg.data.numeric == "quantile"
    assert RunConfig.from_dict(yaml.safe_load(cfg.to_yaml())).data == cfg.data
    assert RunConfig.from_dict({"family": "vae", "data": {"source": "mnist"}}).data.columns == {}  # older configs
    assert data_config("heart", ["data.columns.age=integer"]).columns == {"age": "integer"}
    with pytest.raises(ConfigError, match="data.key=value"):
        data_config("heart", ["train.steps=3"])


@pytest.mark.parametrize("sets, message", [
    (["data.columns.age=number"], "data.columns.age: 'number' is not a column type; expected one of: numeric, "
                                  "integer, categorical, boolean, datetime, drop"),
    (["data.columns.agee=numeric"], "data.columns.agee: heart has no column 'agee'; its columns: 'survival', "
                                    "'censors', 'age'"),
    (["data.columns.age=datetime"], "data.columns.age=datetime: column 'age' holds numbers; it can be: numeric, "
                                    "integer, categorical, boolean, drop"),
    (["data.columns.age=integer"], "data.columns.age=integer: column 'age' holds fractions"),
    (["data.columns=age"], "data.columns must be a mapping"),
    (["data.numeric=kde"], "data.numeric must be one of: gmm, quantile"),
    (["data.max_modes=0"], "data.max_modes must be an integer in [1, 100]"),
    (["data.block_size=64"], "data.block_size does not apply to tables; 'heart' is a table"),
])
def test_bad_settings_are_one_line(sets, message):
    proc = run_main("data", "prepare", "heart", *[a for s in sets for a in ("--set", s)])
    assert message in one_error_line(proc)


def test_table_settings_on_other_data_are_refused():
    with pytest.raises(ConfigError, match="data.numeric applies to table sources; 'digits' is image data"):
        prepare("digits", DataConfig(numeric="quantile"), progress=False)
    with pytest.raises(ConfigError, match="data.columns applies to table sources; 'pycode' is text data"):
        prepare("pycode", DataConfig(columns={"x": "numeric"}), progress=False)


# ---- bad input: one line each -------------------------------------------------------------------
@pytest.mark.parametrize("content, message", [
    ("", "is empty; expected a CSV file with a header row and at least 2 rows"),
    ("\n\n", "is empty"),
    ("a,b,c\n", "has a header row but no data rows; expected at least 2 rows"),
    ("a,b,c\n1,2,3\n4,5,6,7\n", "line 3 has 4 field(s), the header 3"),
    ("a,b,c\n1,2,3\n4,5\n", "line 3 has 2 field(s), the header 3"),
    ("a,b,a\n1,2,3\n4,5,6\n", "the header names column(s) 'a' more than once"),
    ("a,b\n1,2\n", "has 1 row(s); expected at least 2 (one to train on, one to validate with)"),
    ("a,b\n,\n,\n", "has no column with values to learn"),
    ("id,user_id\n1,x\n2,y\n", "has no column with values to learn"),
    ("a,b\n1,inf\n2,3\n", "column 'b' holds infinite values"),
])
def test_bad_csv_files_are_one_line(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(DataError) as e:
        with pytest.warns(TableWarning) if "no column" in message else contextlib.nullcontext():
            prepare(f"csv:{path}", quantile(), progress=False)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_bad_paths_through_the_command_line(tmp_path):
    assert "does not exist" in one_error_line(run_main("data", "prepare", f"csv:{tmp_path / 'missing.csv'}"))
    assert "is not a file; expected a CSV file" in one_error_line(run_main("data", "prepare", f"csv:{tmp_path}"))
    empty = write(tmp_path, "")
    assert "is empty" in one_error_line(run_main("data", "prepare", f"csv:{empty}"))
    ragged = write(tmp_path, "a,b\n1,2\n3,4,5\n", "ragged.csv")
    assert "line 3 has 3 field(s), the header 2" in one_error_line(run_main("data", "prepare", f"csv:{ragged}"))
    binary = write(tmp_path, "a,b\n1,2\n", "binary.csv")
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    assert "binary file" in one_error_line(run_main("data", "prepare", f"csv:{binary}"))
    assert f"did you mean csv:{ragged}" in one_error_line(run_main("data", "prepare", ragged))  # the kind left out


def test_windows_1252_is_read_with_a_warning(tmp_path):
    path = write(tmp_path, "city,n\nSão Paulo,1\nZürich,2\nSão Paulo,3\n", encoding="cp1252")
    with pytest.warns(TableWarning, match="not UTF-8.*Windows-1252"):
        p = prepare(f"csv:{path}", quantile(), progress=False)
    assert set(p.tokenizer.decode(p.train.rows.numpy())["city"]) <= {"São Paulo", "Zürich"}
    proc = run_main("data", "prepare", f"csv:{path}", "--set", "data.numeric=quantile")  # cached now: no warning
    assert proc.returncode == 0 and "Windows-1252" in proc.stdout  # the manifest keeps it


def test_parquet(tmp_path, monkeypatch):
    frame = pd.DataFrame({"x": [1.5, 2.5, 3.5, 4.5], "k": ["a", "b", "a", "b"]})
    path = tmp_path / "t.parquet"
    pytest.importorskip("pyarrow")
    frame.to_parquet(path)
    p = prepare(f"parquet:{path}", quantile(), progress=False)
    assert p.manifest["columns"] == {"numeric": ["x"], "categorical": ["k"]}
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="cannot be read as Parquet"):
        prepare(f"parquet:{tmp_path / 'junk.parquet'}", quantile(), progress=False)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as where pyarrow is not installed
    path.touch()  # a new mtime: not from the cache
    with pytest.raises(DataError, match=r"needs the pyarrow package \(pip install pyarrow\)"):
        prepare(f"parquet:{path}", quantile(), progress=False)


# ---- the built-in tables ------------------------------------------------------------------------
BUILTINS = {"breast_cancer": (569, "diagnosis"), "wine": (178, "class"), "randhie": (20190, "idp"),
            "heart": (69, "censors"), "grunfeld": (220, "firm"), "macrodata": (203, "quarter")}


def test_the_built_in_tables_load_prepare_and_are_listed():
    listed = run_main("data", "list").stdout
    for name, (rows, categorical) in BUILTINS.items():
        assert name in builtin_sources() and name in listed
        cfg = DataConfig() if name == "heart" else quantile()  # one through the Gaussian mixtures: the smallest
        p = prepare(name, cfg, progress=False)
        assert p.manifest["rows"] == rows and p.manifest["identifiers"] == []
        assert categorical in p.manifest["columns"]["categorical"], (name, p.manifest["columns"])
    cancer = prepare("breast_cancer", quantile(), progress=False)
    assert set(cancer.tokenizer.decode(cancer.val.rows.numpy())["diagnosis"]) <= {"malignant", "benign"}
    proc = run_main("data", "prepare", "heart")
    assert proc.returncode == 0 and '"rows": 69' in proc.stdout and "cached in" in proc.stdout
    assert "heart         cached" in run_main("data", "list").stdout
