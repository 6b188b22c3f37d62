"""Tables: CSV and Parquet files and the built-in tables read into a DataFrame, and what each column is.

Sources: ``csv:PATH`` (comma-separated, a header row first; ``.tsv`` files tab-separated; UTF-8, or Windows-1252
with a ``TableWarning`` when the bytes are not UTF-8), ``parquet:PATH`` (needs pyarrow), and the built-in tables
(``BUILTIN``: scikit-learn's and statsmodels' bundled data, read from the installed packages).

Column types (``COLUMN_TYPES``; ``--set data.columns.NAME=TYPE`` overrides the inferred one, "drop" leaves a
column out). The rules, in order, after SDV's metadata detection:

1. A column with no value at all is *empty*: it is not learnt and comes back as an empty column in samples
   (a ``TableWarning`` says so).
2. An *identifier* - every value distinct, none missing, integers or strings, and either a name that says so
   (``id``, ``*_id``, ``fooId``, ``key``, ``uuid``, ``index``, an unnamed column) or strings in a table of at
   least 20 rows - is left out (a ``TableWarning`` names it): its values say nothing a model can learn.
   ``--set data.columns.NAME=categorical`` keeps one.
3. Booleans (bool dtype, or Python True/False values) are *boolean*.
4. Dates (a datetime dtype, or strings that all parse as dates and are not all numbers) are *datetime*.
5. Numbers: whole numbers with at most ``FEW_VALUES`` (10) distinct values, each seen twice on average, are
   *categorical* (codes such as 0/1, a quarter 1-4, a rating); other whole numbers are *integer*; the rest
   *numeric*. Infinite values are an error.
6. Everything else (strings, pandas categoricals, mixed values) is *categorical*, whatever its number of
   distinct values (the transform one-hot encodes up to ``data.onehot_max`` and binary-codes the rest).

Missing cells (empty CSV fields, NaN, None) are kept: the transform encodes them as their own state.
"""

from __future__ import annotations

import csv
import importlib
import io
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from genforge.errors import ConfigError, DataError

COLUMN_TYPES = ("numeric", "integer", "categorical", "boolean", "datetime", "drop")
EMPTY = "empty"  # inferred only: a column without values
FEW_VALUES = 10  # whole numbers with at most this many distinct values are categories (rule 5)
NAMELESS_ID_ROWS = 20  # unique strings are identifiers from this many rows on, whatever their name (rule 2)
MIN_ROWS = 2  # one row to train on and one to validate with
DATE_PROBE = 100  # values tried as dates before a whole column is parsed (dateutil is slow on non-dates)


class TableWarning(UserWarning):
    """Something about a table that preparation worked around: a column left out or empty, a non-UTF-8 file."""


@dataclass
class Table:
    """A table ready for the transform: its columns to keep, each with a type, and what was left out."""

    frame: pd.DataFrame  # the kept columns, in the source's order (dates parsed)
    types: dict[str, str]  # column -> one of COLUMN_TYPES less "drop", or EMPTY
    identifiers: list[str] = field(default_factory=list)  # left out as identifiers (rule 2)
    dropped: list[str] = field(default_factory=list)  # left out by data.columns.NAME=drop


# ---- built-in tables ----------------------------------------------------------------------------
def _sklearn(loader: str, target: str, name_values: bool) -> pd.DataFrame:
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, loader)(as_frame=True)
    frame = bunch.frame.drop(columns="target")
    labels = np.asarray(bunch.target_names)[bunch.target.to_numpy()] if name_values else bunch.target.to_numpy()
    frame[target] = pd.Series(labels, index=frame.index, dtype="str")
    return frame


def _statsmodels(name: str) -> pd.DataFrame:
    # the dataset module alone: statsmodels.api would import all of statsmodels (seconds)
    return importlib.import_module(f"statsmodels.datasets.{name}").load_pandas().data.reset_index(drop=True)


BUILTIN = {
    "breast_cancer": lambda: _sklearn("load_breast_cancer", "diagnosis", True),  # malignant / benign
    "wine": lambda: _sklearn("load_wine", "class", True),  # class_0, class_1, class_2
    "randhie": lambda: _statsmodels("randhie"),
    "heart": lambda: _statsmodels("heart"),
    "grunfeld": lambda: _statsmodels("grunfeld"),
    "macrodata": lambda: _statsmodels("macrodata"),
}


def load_builtin(name: str) -> pd.DataFrame:
    try:
        return BUILTIN[name]()
    except ImportError as e:
        raise DataError(f"the built-in table '{name}' needs the package {e.name or 'that ships it'}; "
                        "install it with pip") from None


# ---- files ----------------------------------------------------------------------------------------
def read_file(kind: str, path: Path) -> pd.DataFrame:
    """The table in ``path`` (``kind`` "csv" or "parquet"); a one-line DataError when it cannot be one."""
    if not path.is_file():
        raise DataError(f"{kind}:{path} is not a file; expected a {kind.upper()} file")
    return read_parquet(path) if kind == "parquet" else read_csv(path)


def read_csv(path: Path) -> pd.DataFrame:
    text = _decode(path)
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    _check_rows(text, sep, path)
    try:
        return pd.read_csv(io.StringIO(text), sep=sep, skip_blank_lines=True)
    except (ValueError, pd.errors.ParserError) as e:  # what the field check above did not catch
        raise DataError(f"{path} cannot be read as CSV ({str(e).splitlines()[0]})") from None


def _decode(path: Path) -> str:
    """The file's text: UTF-8 (a byte-order mark dropped), else Windows-1252 with a warning."""
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path} is empty; expected a CSV file with a header row and at least {MIN_ROWS} rows")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        where = e.start
    if b"\x00" in raw:
        raise DataError(f"{path} holds NUL bytes: it looks like a binary file; expected a CSV text file")
    try:
        text = raw.decode("cp1252")
    except UnicodeDecodeError:
        raise DataError(f"{path} is neither UTF-8 (byte 0x{raw[where]:02x} at offset {where}) nor Windows-1252 "
                        "text; expected a CSV file saved as UTF-8") from None
    warnings.warn(TableWarning(f"{path} is not UTF-8 (byte 0x{raw[where]:02x} at offset {where}); it was read as "
                               "Windows-1252 (save it as UTF-8 to be sure of its characters)"), stacklevel=3)
    return text


def _check_rows(text: str, sep: str, path: Path) -> None:
    """One line naming the first row whose field count differs from the header's, or a header without rows
    (pandas pads short rows with missing values silently, and names repeated columns 'x.1')."""
    reader = csv.reader(io.StringIO(text), delimiter=sep)
    header = next((row for row in reader if row), None)
    if header is None:
        raise DataError(f"{path} is empty; expected a CSV file with a header row and at least {MIN_ROWS} rows")
    names = [name.strip() for name in header]
    repeated = sorted({n for n in names if n and names.count(n) > 1})
    if repeated:
        raise DataError(f"{path}: the header names column(s) {', '.join(map(repr, repeated))} more than once; "
                        "expected each column name once")
    rows = 0
    try:
        for row in reader:
            if not row:
                continue  # a blank line
            if len(row) != len(header):
                raise DataError(f"{path}: line {reader.line_num} has {len(row)} field(s), the header {len(header)}; "
                                "expected every row to have one field per column (quote fields holding the separator)")
            rows += 1
    except csv.Error as e:
        raise DataError(f"{path}: line {reader.line_num} is not valid CSV ({e})") from None
    if rows == 0:
        raise DataError(f"{path} has a header row but no data rows; expected at least {MIN_ROWS} rows")


def read_parquet(path: Path) -> pd.DataFrame:
    try:
        importlib.import_module("pyarrow")  # pandas reads Parquet through it
    except ImportError:
        raise DataError(f"parquet:{path} needs the pyarrow package (pip install pyarrow); or save the table as "
                        "CSV and use csv:PATH") from None
    try:
        frame = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises its own kinds on a damaged or foreign file
        raise DataError(f"{path} cannot be read as Parquet ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                        "; expected a Parquet file") from None
    frame.columns = [str(c) for c in frame.columns]
    return frame.reset_index(drop=True)


# ---- column types -------------------------------------------------------------------------------
def looks_like_id(name: str) -> bool:
    low = name.strip().lower()
    if low in ("", "id", "key", "uuid", "guid", "index", "rowid") or re.fullmatch(r"unnamed: \d+", low):
        return True
    if re.search(r"(^|[_\s.\-])(id|uuid|guid|key)$", low):
        return True
    return re.search(r"[a-z0-9](Id|ID)$", name.strip()) is not None  # camelCase: patientId (not "paid")


def _whole(x: np.ndarray) -> bool:
    return bool(np.all(np.floor(x) == x))


def _all_strings(present: pd.Series) -> bool:
    return ptypes.is_string_dtype(present.dtype) or all(isinstance(v, str) for v in present)


def infer_type(series: pd.Series) -> str:
    """A column's type by the rules in this module's docstring: one of COLUMN_TYPES, EMPTY or "identifier"."""
    present = series.dropna()
    n = len(series)
    if present.empty:
        return EMPTY
    if isinstance(series.dtype, pd.CategoricalDtype):
        return "categorical"
    if ptypes.is_bool_dtype(series.dtype):
        return "boolean"
    if ptypes.is_datetime64_any_dtype(series.dtype):
        return "datetime"
    unique = len(present) == n and present.nunique() == n and n >= 2
    if ptypes.is_numeric_dtype(series.dtype):
        x = present.to_numpy(dtype=np.float64)
        if not np.isfinite(x).all():
            raise DataError(f"column '{series.name}' holds infinite values; expected finite numbers "
                            "(or empty cells for missing ones)")
        whole = _whole(x)
        if whole and unique and looks_like_id(str(series.name)):
            return "identifier"
        if whole and (distinct := len(np.unique(x))) <= FEW_VALUES and 2 * distinct <= n:
            return "categorical"
        return "integer" if whole else "numeric"
    if all(isinstance(v, (bool, np.bool_)) for v in present):
        return "boolean"
    if _all_strings(present):
        if unique and (looks_like_id(str(series.name)) or n >= NAMELESS_ID_ROWS):
            return "identifier"
        if parse_dates(series) is not None:
            return "datetime"
    return "categorical"


def parse_dates(series: pd.Series) -> pd.Series | None:
    """Strings as datetimes when every one parses (and they are not all plain numbers); None otherwise."""
    present = series.dropna()
    if present.empty or not _all_strings(present) or not present.str.contains(r"\d").all():
        return None
    if pd.to_numeric(present, errors="coerce").notna().all():
        return None  # numbers written as text are not dates

    def parse(values: pd.Series) -> pd.Series | None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pandas warns when it falls back to parsing value by value
            try:
                parsed = pd.to_datetime(values, errors="coerce")
            except (ValueError, TypeError, OverflowError):  # mixed time zones, out-of-range years
                return None
        return None if parsed[values.notna()].isna().any() else parsed

    if parse(present.iloc[:DATE_PROBE]) is None:
        return None
    return parse(series)


def allowed_types(series: pd.Series) -> tuple[str, ...]:
    """The types a column of this dtype can be given with data.columns."""
    if ptypes.is_datetime64_any_dtype(series.dtype):
        return ("datetime", "drop")
    if ptypes.is_bool_dtype(series.dtype):
        return ("boolean", "categorical", "drop")
    if ptypes.is_numeric_dtype(series.dtype):
        return ("numeric", "integer", "categorical", "boolean", "drop")
    return ("categorical", "boolean", "datetime", "drop")


def check_column_types(columns: object) -> None:
    """data.columns is a mapping of column names to COLUMN_TYPES (before any data is read)."""
    if not isinstance(columns, dict):
        raise ConfigError(f"data.columns must be a mapping of column names to types (--set data.columns.NAME=TYPE), "
                          f"got {columns!r}")
    for name, kind in columns.items():
        if kind not in COLUMN_TYPES:
            raise ConfigError(f"data.columns.{name}: {kind!r} is not a column type; expected one of: "
                              f"{', '.join(COLUMN_TYPES)}")


# ---- a table ready for the transform ---------------------------------------------------------------
def prepare_table(frame: pd.DataFrame, overrides: dict[str, str], where: str) -> Table:
    """Each column's type (inferred, or as ``overrides`` say), dates parsed, identifiers and dropped columns left
    out; ``TableWarning``s for what was left out or is empty. ``where`` names the source in messages."""
    if len(frame) < MIN_ROWS:
        raise DataError(f"{where} has {len(frame)} row(s); expected at least {MIN_ROWS} "
                        "(one to train on, one to validate with)")
    frame = frame.reset_index(drop=True)
    frame.columns = [str(c) for c in frame.columns]
    unknown = [name for name in overrides if name not in frame.columns]
    if unknown:
        shown = ", ".join(map(repr, frame.columns[:20])) + (", ..." if len(frame.columns) > 20 else "")
        raise ConfigError(f"data.columns.{unknown[0]}: {where} has no column '{unknown[0]}'; its columns: {shown}")
    table = Table(frame, {})
    kept = {}
    for name in frame.columns:
        series = frame[name]
        kind = overrides.get(name) or infer_type(series)
        if kind == "drop":
            table.dropped.append(name)
            continue
        if kind == "identifier":
            table.identifiers.append(name)
            continue
        if kind != EMPTY and series.isna().all():
            kind = EMPTY
        if kind != EMPTY:
            series = _convert(series, kind, name, overridden=name in overrides)
        kept[name], table.types[name] = series, kind
    if table.identifiers:
        _note(f"{where}: left out identifier column(s) {', '.join(map(repr, table.identifiers))} (every value "
                     "distinct); keep one with --set data.columns.NAME=categorical")
    empty = [name for name, kind in table.types.items() if kind == EMPTY]
    if empty:
        _note(f"{where}: column(s) {', '.join(map(repr, empty))} hold no values; they are not learnt and "
                     "come back empty in samples")
    if all(kind == EMPTY for kind in table.types.values()):
        raise DataError(f"{where} has no column with values to learn (identifiers and empty columns are left out)")
    table.frame = pd.DataFrame(kept)
    return table


def _convert(series: pd.Series, kind: str, name: str, overridden: bool) -> pd.Series:
    """``series`` as a column of ``kind``: dates parsed; a one-line ConfigError when an override cannot hold."""
    def refuse(why: str) -> ConfigError:
        return ConfigError(f"data.columns.{name}={kind}: column '{name}' {why}; it can be: "
                           f"{', '.join(allowed_types(series))}")

    if overridden and kind not in allowed_types(series):
        dtype = series.dtype
        what = ("dates" if ptypes.is_datetime64_any_dtype(dtype) else "booleans" if ptypes.is_bool_dtype(dtype)
                else "numbers" if ptypes.is_numeric_dtype(dtype) else "text")
        raise refuse(f"holds {what}")
    present = series.dropna()
    if kind == "datetime" and not ptypes.is_datetime64_any_dtype(series.dtype):
        parsed = parse_dates(series)
        if parsed is None:
            raise refuse(f"holds values that are not dates (e.g. {present.iloc[0]!r})")
        return parsed.rename(name)
    if kind in ("numeric", "integer") and not np.isfinite(present.to_numpy(dtype=np.float64)).all():
        raise refuse("holds infinite values")
    if kind == "integer" and not _whole(present.to_numpy(dtype=np.float64)):
        raise refuse(f"holds fractions (e.g. {present[np.floor(present) != present].iloc[0]!r})")
    if kind == "boolean" and present.nunique() > 2:
        raise refuse(f"holds {present.nunique()} distinct values, not two")
    return series


def _note(message: str) -> None:
    warnings.warn(TableWarning(message), stacklevel=3)
