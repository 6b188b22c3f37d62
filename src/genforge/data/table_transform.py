"""A reversible encoding of table rows as float32 vectors: what families train on, and how samples come back.

    transform = TableTransform.fit(table.frame, table.types)      # numeric="gmm" | "quantile"
    x = transform.encode(frame)        # (N, D) float32
    frame = transform.decode(x)        # the same columns, dtypes, categories and missing cells
    transform.layout()                 # DataSpec.table: the spans of each row

Each column becomes a run of spans, in the table's order:

- numeric, integer and datetime columns: a "value" dim, then (numeric="gmm" with more than one mode) a "mode"
  one-hot, then (when the column has missing cells) a "missing" pair (present, missing).
  *gmm* is CTGAN's mode-specific normalisation: a Bayesian Gaussian mixture of up to ``max_modes`` modes fitted
  on at most ``FIT_ROWS`` sampled values; a value is assigned its most probable mode k (CTGAN draws it from the
  posterior; the most probable keeps the cache deterministic and values nearer [-1, 1]) and stored as
  (x - mean_k) / (4 std_k). Before the mixture, a value holding at least ``ATOM_SHARE`` of the column (the zeros
  of a claims amount, a common round number) becomes a mode of its own with no spread, an atom: its rows are
  that value exactly, their value dim 0, so a model that picks the mode gives the value itself (a mixture would
  blur a spike into nearby values). *quantile* maps a value through the column's quantiles (up to ``QUANTILES``) onto
  [-1, 1]. Decoding clips to the column's min and max, so those come back exactly and samples stay in range,
  and rounds numbers to the decimals the column's values are written with (at most ``MAX_DECIMALS``).
  Integers are rounded; datetimes are whole multiples of their column's step (the largest unit every value is a
  multiple of: days for dates) and come back at their original resolution and time zone.
- categorical and boolean columns: a "category" one-hot over the column's values (missing is a value of its
  own; a bool column always has False and True) when there are at most ``onehot_max``, else a "code": the
  binary code of the value's frequency rank as ceil(log2 K) dims in {-1, +1}, decoded to the nearest valid
  code (so 10,000 categories take 14 dims).
- empty columns: no dims; they come back empty.

Precision: an encoded value is a float32, so a decoded number is exact to about 2^-24 of its distance from its
mode's mean (gmm), or of its column's range times the number of quantiles (quantile; coarser in sparse tails).
Integers (and datetimes) come back exact while that error stays below 0.5: for gmm while values lie within about
2^22 of their mode's mean; for quantile while the column's range times its number of quantiles is below about 2^23.

Everything is plain JSON (``to_dict``/``save``): a cache entry and a run keep it as ``tokenizer.json``.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from genforge.data.spec import TableSpan
from genforge.errors import ConfigError, DataError
from genforge.io import atomic_write_json

FORMAT = "genforge-table-transform/1"
NUMERIC_ENCODINGS = ("gmm", "quantile")
NUMBERS = ("numeric", "integer", "datetime")
CATEGORIES = ("categorical", "boolean")
FIT_ROWS = 10_000  # values a column's mixture is fitted on, at most: fitting stays well under a second a column
QUANTILES = 1000  # reference quantiles, at most (scikit-learn's QuantileTransformer default)
MIN_WEIGHT = 0.005  # mixture modes lighter than this are dropped (CTGAN's threshold)
ATOM_SHARE = 0.05  # numeric="gmm": a value holding this share of a column is a mode of its own, decoded exactly
SCALE = 4.0  # a value within 4 standard deviations of its mode lands in [-1, 1]
MAX_DECIMALS = 12  # numeric columns written with at most this many decimals come back rounded to theirs


class TableTransform:
    """Fitted column encoders (plain dicts, see the module docstring) and the row layout they make."""

    def __init__(self, columns: list[dict]):
        self.columns = columns
        self.width = sum(c["width"] for c in columns)

    # ---- fitting ----------------------------------------------------------------------------------
    @classmethod
    def fit(cls, frame: pd.DataFrame, types: dict[str, str], numeric: str = "gmm", max_modes: int = 10,
            onehot_max: int = 50, seed: int = 0, progress: bool = False) -> "TableTransform":
        """Encoders for the columns of ``frame`` with ``types`` (``tables.COLUMN_TYPES`` less "drop", or "empty");
        ``progress`` shows a bar over the columns (mixtures take a fraction of a second each)."""
        from tqdm.auto import tqdm

        if numeric not in NUMERIC_ENCODINGS:
            raise ValueError(f"numeric must be one of {NUMERIC_ENCODINGS}, got {numeric!r}")
        columns, start = [], 0
        names = tqdm(frame.columns, desc="fitting columns", unit="col", leave=False, disable=not progress)
        for i, name in enumerate(names):
            series, kind = frame[name], types[name]
            col = {"name": str(name), "type": kind, "dtype": str(series.dtype), "missing": bool(series.isna().any())}
            if isinstance(series.dtype, pd.CategoricalDtype):
                col["dtype_categories"] = [_plain(v, name) for v in series.cat.categories]
                col["ordered"] = bool(series.cat.ordered)
            if kind in NUMBERS:
                _fit_numbers(col, series, numeric, max_modes, np.random.default_rng([seed, i]))
            elif kind in CATEGORIES:
                _fit_categories(col, series, onehot_max)
            elif kind != "empty":
                raise ValueError(f"column {name!r}: unknown type {kind!r}")
            col["start"], col["width"] = start, sum(w for _, w in _parts(col))
            start += col["width"]
            columns.append(col)
        return cls(columns)

    # ---- encoding ---------------------------------------------------------------------------------
    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        """(N, D) float32 rows of ``frame``, which holds (at least) the fitted columns."""
        out = np.zeros((len(frame), self.width), dtype=np.float32)
        for col in self.columns:
            if col["type"] in NUMBERS:
                _encode_numbers(col, frame[col["name"]], out)
            elif col["type"] in CATEGORIES:
                _encode_categories(col, frame[col["name"]], out)
        return out

    def decode(self, x: np.ndarray) -> pd.DataFrame:
        """The table that rows ``x`` (N, D) encode; generated rows need not be exact one-hots (argmax is taken)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.width:
            raise DataError(f"encoded table rows must be (N, {self.width}), got shape {tuple(x.shape)}")
        x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
        data = {}
        for col in self.columns:
            if col["type"] in NUMBERS:
                data[col["name"]] = _decode_numbers(col, x)
            elif col["type"] in CATEGORIES:
                data[col["name"]] = _decode_categories(col, x)
            else:
                data[col["name"]] = _restore(pd.Series([None] * len(x), dtype=object), col)
        return pd.DataFrame(data, index=pd.RangeIndex(len(x)))

    # ---- conditions ---------------------------------------------------------------------------------
    def conditionable(self) -> list[str]:
        """The columns sampling can be conditioned on: the categorical and boolean ones."""
        return [c["name"] for c in self.columns if c["type"] in CATEGORIES]

    def category_count(self, column: str) -> int:
        """How many categories ``column`` (a conditionable column) holds."""
        return len(self._conditionable(column)["categories"])

    def _conditionable(self, column: str) -> dict:
        col = next((c for c in self.columns if c["name"] == column), None)
        allowed = ", ".join(self.conditionable()) or "none in this table"
        if col is None:
            raise ConfigError(f"unknown column '{column}'; the columns sampling can be conditioned on: {allowed}")
        if col["type"] not in CATEGORIES:
            raise ConfigError(f"column '{column}' holds {col['type']} values; only categorical and boolean columns "
                              f"can be conditioned on: {allowed}")
        return col

    def category_index(self, column: str, value: str) -> int:
        """The index (frequency rank) of category ``value`` (as the data writes it: booleans true/false, a
        missing cell as the empty string) in ``column``; a one-line ConfigError for an unknown column, a column
        that is not categorical, or a value the column never held."""
        col = self._conditionable(column)
        texts = [category_text(v) for v in col["categories"]]
        if value in texts:
            return texts.index(value)
        folded = [i for i, t in enumerate(texts) if t.casefold() == value.casefold()]
        if len(folded) == 1:  # True for true, YES for yes: unambiguous
            return folded[0]
        shown = ", ".join(t or "(missing)" for t in texts[:10]) + (", ..." if len(texts) > 10 else "")
        raise ConfigError(f"column '{column}' has no value '{value}'; its values: {shown}")

    # ---- layout and files -------------------------------------------------------------------------
    def spans(self) -> list[TableSpan]:
        out = []
        for col in self.columns:
            start = col["start"]
            for kind, width in _parts(col):
                out.append(TableSpan(col["name"], kind, start, width))
                start += width
        return out

    def layout(self) -> dict:
        """DataSpec.table: {"spans": [{"column", "kind", "start", "width"}, ...] tiling dims 0..D-1 in order,
        "columns": [{"name", "type", "dtype", "missing", "start", "width", and "encoding" and "modes" (numbers) or
        "categories" (a count)}, ...] in the table's order, "width": D}. "missing" says the column has missing
        cells: a "missing" span for numbers, a missing category for categories. No values: those stay here."""
        keys = ("name", "type", "dtype", "missing", "start", "width", "encoding", "modes", "categories")
        columns = []
        for col in self.columns:
            info = {k: col[k] for k in keys if k in col}
            if "categories" in info:
                info["categories"] = len(col["categories"])  # the count: 10,000 names do not belong in spec.json
            columns.append(info)
        spans = [{"column": s.column, "kind": s.kind, "start": s.start, "width": s.width} for s in self.spans()]
        return {"spans": spans, "columns": columns, "width": self.width}

    def to_dict(self) -> dict:
        return {"type": FORMAT, "width": self.width, "columns": self.columns}

    @classmethod
    def from_dict(cls, d: dict) -> "TableTransform":
        if not isinstance(d, dict) or d.get("type") != FORMAT or not isinstance(d.get("columns"), list):
            raise DataError(f"not a table transform of this version (expected type {FORMAT!r})")
        transform = cls(d["columns"])
        if transform.width != d.get("width"):
            raise DataError(f"the table transform's columns add up to {transform.width} dims, it says {d.get('width')}")
        return transform

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "TableTransform":
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{path} (the table transform) is missing") from None
        except (OSError, ValueError) as e:
            raise DataError(f"{path} (the table transform) is unreadable ({type(e).__name__})") from None
        try:
            return cls.from_dict(d)
        except (KeyError, TypeError) as e:
            raise DataError(f"{path} is not a valid table transform ({type(e).__name__}: {e})") from None


def _parts(col: dict) -> list[tuple[str, int]]:
    """(span kind, width) of a column, in order."""
    if col["type"] in NUMBERS:
        modes = len(col.get("means", ())) if col["encoding"] == "gmm" else 1
        return [("value", 1)] + ([("mode", modes)] if modes > 1 else []) + ([("missing", 2)] if col["missing"] else [])
    if col["type"] in CATEGORIES:
        return [("code", col["bits"])] if col["code"] == "binary" else [("category", len(col["categories"]))]
    return []


# ---- numbers ------------------------------------------------------------------------------------
def _numbers(col: dict, series: pd.Series) -> np.ndarray:
    """A number column as float64 (NaN for missing): datetimes as counts of their step from their origin."""
    if col["type"] != "datetime":
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    ticks = _ticks(series)
    out = np.full(len(series), np.nan)
    present = series.notna().to_numpy()
    out[present] = (ticks[present] - col["origin"]) // col["step"]
    return out


def _ticks(series: pd.Series) -> np.ndarray:
    """Datetimes as int64 counts of their own unit (UTC for zoned ones); NaT as 0."""
    if series.dt.tz is not None:
        series = series.dt.tz_convert(None)
    return series.to_numpy(dtype=f"datetime64[{series.dt.unit}]").astype(np.int64) * series.notna().to_numpy()


def _fit_numbers(col: dict, series: pd.Series, numeric: str, max_modes: int, rng: np.random.Generator) -> None:
    if col["type"] == "datetime":
        col["unit"], col["tz"] = series.dt.unit, (str(series.dt.tz) if series.dt.tz is not None else None)
        ticks = _ticks(series)[series.notna().to_numpy()]
        col["origin"] = int(ticks.min())
        col["step"] = int(np.gcd.reduce(ticks - ticks.min())) or 1  # days for dates, seconds for times, ...
    x = _numbers(col, series)
    x = x[~np.isnan(x)]
    col["encoding"], col["min"], col["max"] = numeric, float(x.min()), float(x.max())
    if col["type"] == "numeric":
        col["decimals"] = _decimals(x)
    if numeric == "gmm":
        col["weights"], col["means"], col["stds"] = _fit_modes(x, max_modes, rng)
        col["modes"] = len(col["means"])
    else:
        col["refs"], col["ranks"] = _fit_quantiles(x)


def _decimals(x: np.ndarray) -> int | None:
    """The fewest decimals every value is written with (54.3: 1), up to MAX_DECIMALS; None past that. Decoded
    values are rounded to it, as SDV's learned rounding does: data with a few decimals comes back exactly."""
    for d in range(MAX_DECIMALS + 1):
        if np.array_equal(np.round(x, d), x):
            return d
    return None


def _fit_modes(x: np.ndarray, max_modes: int, rng: np.random.Generator) -> tuple[list[float], ...]:
    """Weights, means and standard deviations of a column's modes: its atoms (values holding at least
    ``ATOM_SHARE`` of the column, heaviest first, standard deviation 0) then a Bayesian Gaussian mixture's modes
    of the other values, heaviest first; at most ``max_modes`` in all."""
    if len(x) > FIT_ROWS:
        x = rng.choice(x, FIT_ROWS, replace=False)
    centre, spread = float(x.mean()), float(x.std())
    values, counts = np.unique(x, return_counts=True)
    if len(values) < 2 or spread == 0:
        return [1.0], [centre], [1.0]  # a constant: every value encodes as 0
    heavy = np.argsort(-counts, kind="stable")[:max_modes - 1]  # room for at least one mixture mode
    heavy = heavy[counts[heavy] >= ATOM_SHARE * len(x)]
    weights, means, stds = [float(counts[k]) / len(x) for k in heavy], [float(values[k]) for k in heavy], [0.0] * len(heavy)
    rest = x[~np.isin(x, values[heavy])]
    if len(rest) == 0:
        return weights, means, stds
    if len(np.unique(rest)) < 2:  # one value left: an atom of its own
        return weights + [len(rest) / len(x)], means + [float(rest[0])], stds + [0.0]
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import BayesianGaussianMixture

    centre, spread = float(rest.mean()), float(rest.std())
    z = ((rest - centre) / spread)[:, None]  # fitted standardised: columns in the billions fit like those near 1
    mixture = BayesianGaussianMixture(n_components=min(max_modes - len(heavy), len(np.unique(rest))),
                                      weight_concentration_prior=1e-3,
                                      weight_concentration_prior_type="dirichlet_process", max_iter=100,
                                      random_state=int(rng.integers(2**31)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mixture.fit(z)
    share = len(rest) / len(x)
    found = mixture.weights_
    keep = [k for k in np.argsort(-found, kind="stable") if found[k] > MIN_WEIGHT] or [int(np.argmax(found))]
    means += [centre + spread * float(mixture.means_[k, 0]) for k in keep]
    stds += [spread * math.sqrt(float(mixture.covariances_[k].ravel()[0])) for k in keep]
    return weights + [share * float(found[k]) for k in keep], means, stds


def _fit_quantiles(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Distinct reference quantiles and their positions in [0, 1] (a repeated quantile at its mean position)."""
    n = min(QUANTILES, len(np.unique(x)))
    if n < 2:
        return [float(x[0])], [0.5]
    refs = np.quantile(x, np.linspace(0, 1, n))
    unique, inverse = np.unique(refs, return_inverse=True)
    ranks = np.bincount(inverse, weights=np.linspace(0, 1, n)) / np.bincount(inverse)
    if len(unique) > 1:
        ranks[0], ranks[-1] = 0.0, 1.0  # the extremes map to -1 and 1 whatever their ties
    return unique.tolist(), ranks.tolist()


def _encode_numbers(col: dict, series: pd.Series, out: np.ndarray) -> None:
    x = _numbers(col, series)
    missing = np.isnan(x)
    x = np.where(missing, col["min"], x)
    start = col["start"]
    if col["encoding"] == "gmm":
        means, stds = np.asarray(col["means"]), np.asarray(col["stds"])
        atom = stds == 0  # a value holding an atom's mode is that value exactly (its value dim 0)
        # otherwise the most probable mixture mode: the largest weighted log density
        safe = np.where(atom, 1.0, stds)
        score = np.log(col["weights"]) - np.log(safe) - 0.5 * ((x[:, None] - means) / safe) ** 2
        score = np.where(atom, np.where(x[:, None] == means, np.inf, -np.inf), score)
        mode = np.argmax(score, axis=1)
        value = (x - means[mode]) / (SCALE * safe[mode])
        if len(means) > 1:
            out[np.arange(len(x)), start + 1 + mode] = 1.0
    else:
        value = _quantile_value(col, x)
    out[:, start] = np.where(missing, 0.0, value)
    if col["missing"]:
        end = start + col["width"]
        out[:, end - 2] = ~missing
        out[:, end - 1] = missing
    elif missing.any():
        raise DataError(f"column '{col['name']}' has missing cells, which the table it was prepared from had not")


def _quantile_value(col: dict, x: np.ndarray) -> np.ndarray:
    if len(col["refs"]) == 1:
        return np.zeros_like(x)
    return 2.0 * np.interp(x, col["refs"], col["ranks"]) - 1.0


def _decode_numbers(col: dict, x: np.ndarray) -> pd.Series:
    start, value = col["start"], x[:, col["start"]]
    if col["encoding"] == "gmm":
        means, stds = np.asarray(col["means"]), np.asarray(col["stds"])
        mode = np.argmax(x[:, start + 1:start + 1 + len(means)], axis=1) if len(means) > 1 else np.zeros(len(x), int)
        numbers = value * SCALE * stds[mode] + means[mode]
    elif len(col["refs"]) == 1:
        numbers = np.full(len(x), col["refs"][0])
    else:
        numbers = np.interp(np.clip((value + 1.0) / 2.0, 0.0, 1.0), col["ranks"], col["refs"])
    if col["type"] != "numeric" or col["dtype"].startswith(("int", "uint", "Int", "UInt")):
        numbers = np.rint(numbers)
    elif col.get("decimals") is not None:
        numbers = np.round(numbers, col["decimals"])
    numbers = np.clip(numbers, col["min"], col["max"])
    if col["missing"]:
        end = start + col["width"]
        numbers[x[:, end - 1] > x[:, end - 2]] = np.nan
    if col["type"] == "datetime":
        return _datetimes(col, numbers)
    return _restore(pd.Series(numbers), col)


def _datetimes(col: dict, counts: np.ndarray) -> pd.Series:
    missing = np.isnan(counts)
    ticks = col["origin"] + np.where(missing, 0, counts).astype(np.int64) * col["step"]
    stamps = ticks.astype(f"datetime64[{col['unit']}]")
    stamps[missing] = np.datetime64("NaT")
    series = pd.Series(stamps)
    if col["tz"] is not None:
        series = series.dt.tz_localize("UTC").dt.tz_convert(col["tz"])
    return series


# ---- categories ---------------------------------------------------------------------------------
def _plain(value, column) -> object:
    """A category value as JSON holds it (None for missing); a one-line error for values JSON cannot hold."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if not isinstance(value, (str, int, float, bool)):
        raise DataError(f"column '{column}' holds a {type(value).__name__} value ({value!r}); a categorical column "
                        "can hold text, numbers or booleans")
    return value


def category_text(value) -> str:
    """A category as a condition names it: booleans true/false, a missing cell the empty string."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _fit_categories(col: dict, series: pd.Series, onehot_max: int) -> None:
    values = series.astype(object)
    if str(series.dtype) in ("bool", "boolean"):
        cats = [False, True] + ([None] if col["missing"] else [])
    else:
        codes, uniques = pd.factorize(values, use_na_sentinel=False)
        order = np.argsort(-np.bincount(codes), kind="stable")  # most frequent first; ties in order of appearance
        cats = [_plain(uniques[k], col["name"]) for k in order]
    col["categories"] = cats
    if len(cats) <= onehot_max:
        col["code"] = "onehot"
    else:
        col["code"], col["bits"] = "binary", max(1, math.ceil(math.log2(len(cats))))


def _ranks(col: dict, series: pd.Series) -> np.ndarray:
    """Each cell's category index (its frequency rank); a one-line error for a value the column never held."""
    cats = col["categories"]
    known = [c for c in cats if c is not None]
    position = pd.Index(known, dtype=object).get_indexer(series.astype(object))
    missing = series.isna().to_numpy()
    if ((position < 0) & ~missing).any():
        bad = series[(position < 0) & ~missing].iloc[0]
        raise DataError(f"column '{col['name']}' holds {bad!r}, which is not one of its categories")
    if missing.any() and None not in cats:
        raise DataError(f"column '{col['name']}' has missing cells, which the table it was prepared from had not")
    if None in cats:
        gap = cats.index(None)
        position = np.where(missing, gap, position + (position >= gap))
    return position


def _encode_categories(col: dict, series: pd.Series, out: np.ndarray) -> None:
    ranks, start = _ranks(col, series), col["start"]
    if col["code"] == "onehot":
        out[np.arange(len(ranks)), start + ranks] = 1.0
    else:
        shifts = np.arange(col["bits"] - 1, -1, -1)  # most significant bit first
        out[:, start:start + col["bits"]] = ((ranks[:, None] >> shifts) & 1) * 2.0 - 1.0


def _decode_categories(col: dict, x: np.ndarray) -> pd.Series:
    span = x[:, col["start"]:col["start"] + col["width"]]
    ranks = np.argmax(span, axis=1) if col["code"] == "onehot" else nearest_code(span, len(col["categories"]))
    cats = np.empty(len(col["categories"]), dtype=object)
    cats[:] = col["categories"]
    return _restore(pd.Series(cats[ranks], dtype=object), col)


def nearest_code(values: np.ndarray, k: int) -> np.ndarray:
    """The rank r < k whose code (bits most significant first, 0 as -1 and 1 as +1) is nearest ``values`` (N, bits).

    The nearest code overall takes each bit's sign; when that rank is k or more, the nearest valid one either
    equals k - 1 or shares k - 1's bits above some bit b where k - 1 has a 1, has 0 at b and free bits below: one
    candidate per such b, scored by the dot product with ``values`` (nearest = largest dot product)."""
    n, bits = values.shape
    weights = 1 << np.arange(bits - 1, -1, -1)
    best = ((values >= 0) * weights).sum(axis=1)
    over = best >= k
    if not over.any():
        return best
    v, free = values[over], best[over]
    top = k - 1

    def score(ranks: np.ndarray) -> np.ndarray:
        signs = ((ranks[:, None] & weights) > 0) * 2.0 - 1.0
        return (signs * v).sum(axis=1)

    chosen = np.full(len(v), top)
    chosen_score = score(chosen)
    for b in range(bits):  # bit b counted from the least significant
        if not (top >> b) & 1:
            continue
        candidate = ((top >> (b + 1)) << (b + 1)) | (free & ((1 << b) - 1))
        s = score(candidate)
        better = s > chosen_score
        chosen, chosen_score = np.where(better, candidate, chosen), np.where(better, s, chosen_score)
    best[over] = chosen
    return best


# ---- dtypes -------------------------------------------------------------------------------------
def _restore(values: pd.Series, col: dict) -> pd.Series:
    """Decoded values in the column's original dtype (categories and their order for pandas categoricals)."""
    dtype = col["dtype"]
    if dtype == "category":
        return pd.Series(pd.Categorical(values.astype(object).where(values.notna(), None),
                                        categories=col["dtype_categories"], ordered=col["ordered"]))
    if dtype == "object":
        return values.astype(object).where(values.notna(), None)
    if dtype.startswith("datetime64"):  # an empty date column (a zoned one holds UTC times, as a naive one cannot)
        return pd.Series(pd.to_datetime(values, utc=", " in dtype)).astype(dtype)
    return values.astype(dtype)
