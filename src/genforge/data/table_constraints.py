"""Constraints on table rows: parsed from text, checked on decoded tables, kept in every sampled row.

    data.constraints=["age >= 18", "admitted <= discharged", "fixed city, country", "total = a + b"]

The language (one constraint a string; a column name holding spaces or operators in backticks or double quotes):

- a comparison chain of columns and values with ``<``, ``<=``, ``>``, ``>=`` (one direction): a *range*
  (``age >= 18``, ``18 <= age <= 90``) or an *inequality* between columns (``admitted <= discharged``). Numeric
  and integer columns compare with numbers, datetime columns with dates (``visit >= 2020-01-01``).
- ``fixed A, B, ...``: a *fixed combination* of categorical or boolean columns: only the combinations of their
  values seen in the training rows (learnt when the data is prepared, kept with the run).
- ``TOTAL = A + B + ...``: a *sum* of numeric or integer columns.

A missing cell breaks no constraint (there is nothing to compare), as in SDV; a fixed combination treats a
missing cell as one more value.

Enforcement (``Enforcement``): sums are built, the total recomputed from its parts and rounded to the most
decimals a part is written with, so the sum holds exactly in decimal arithmetic on the written CSV (0.1 + 0.2
is written as 0.3); it is checked with a tolerance of half a unit in the last decimal any of its columns has
(float arithmetic on the values read back is within far less; integers: exact). The other kinds are enforced
by rejection: rows that break one are dropped, and the caller draws more (``families.table_conditions.draw_kept``).

The training rows are checked as decoded, the rows the model learns (``learn_constraints``): numbers written with
more than ``table_transform.MAX_DECIMALS`` decimals come back to float32 precision, so their checks there allow
``ENCODING_SLACK`` of the column's range; every other value comes back exactly, and is checked exactly.

Parsed constraints are plain data (``to_dict``/``constraints_from_dicts``): a run keeps them in its spec.json.
"""

from __future__ import annotations

import abc
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from genforge.errors import ConfigError, DataError

FORMS = ("a range (age >= 18, 18 <= age <= 90), an inequality (low <= high), a fixed combination "
         "(fixed city, country) or a sum (total = a + b)")
NUMBER_TYPES = ("numeric", "integer")
COMPARABLE = ("numeric", "integer", "datetime")
CATEGORY_TYPES = ("categorical", "boolean")
ENCODING_SLACK = 1e-4  # of its range: how far a decoded float column without fixed decimals may be from its data
SUM_RELATIVE = 1e-9  # a sum of floats without fixed decimals, built from its parts: float rounding only
FLIP = {">": "<", ">=": "<="}
_TOKEN = re.compile(r'\s*(?:`([^`]*)`|"([^"]*)"|(<=|>=|==|<|>|=|\+|,)|([^`"<>=+,]+))')
_FIXED = re.compile(r"\s*fixed(?=[\s`\"]|$)\s*", re.IGNORECASE)


# ---- syntax ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Operand:
    text: str
    quoted: bool  # a quoted operand is a column name, whatever it looks like


@dataclass(frozen=True)
class Statement:
    """A constraint's syntax, before its names are looked up: ``kind`` "compare", "fixed" or "sum"."""

    text: str
    kind: str
    operands: tuple[Operand, ...]
    ops: tuple[str, ...] = ()  # compare: "<" or "<=" between consecutive operands (">" chains are reversed)


def _refuse(text: str, why: str) -> ConfigError:
    return ConfigError(f"constraint {text!r}: {why}; expected {FORMS}")


def _tokens(text: str, body: str) -> list[Operand | str]:
    """Operands and operator strings of ``body``."""
    out: list[Operand | str] = []
    pos = 0
    while pos < len(body):
        if not body[pos:].strip():
            break
        m = _TOKEN.match(body, pos)
        if m is None:
            raise _refuse(text, "a quote is not closed")
        backtick, quote, op, bare = m.groups()
        if op is not None:
            out.append(op)
        elif bare is not None:
            out.append(Operand(bare.strip(), False))
        else:
            out.append(Operand(backtick if backtick is not None else quote, True))
        pos = m.end()
    return out


def parse_statement(text: Any) -> Statement:
    """The syntax of one constraint; a one-line ConfigError naming what is wrong and the forms there are."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"a constraint is a non-empty string, got {text!r}; expected {FORMS}")
    text = text.strip()
    fixed = _FIXED.match(text)
    if fixed:
        tokens = _tokens(text, text[fixed.end():])
        names = tokens[::2]
        if (len(tokens) % 2 == 0 or any(t != "," for t in tokens[1::2])
                or not all(isinstance(n, Operand) and n.text for n in names)):
            raise _refuse(text, "a fixed combination lists column names separated by commas")
        if len(names) < 2:
            raise _refuse(text, "a fixed combination needs at least two columns (inside a YAML list, quote it: "
                                "[\"fixed a, b\"])")
        return Statement(text, "fixed", tuple(names))
    tokens = _tokens(text, text)
    ops = tokens[1::2]
    operands = tokens[::2]
    if len(tokens) == 1 and isinstance(tokens[0], Operand):
        raise _refuse(text, "it names a column without a condition (inside a YAML list, quote a constraint "
                            "holding a comma: [\"fixed a, b\"])")
    alternate = all(isinstance(o, Operand) for o in operands) and not any(isinstance(o, Operand) for o in ops)
    if len(tokens) % 2 == 0 or not alternate:
        raise _refuse(text, "operators and operands do not alternate")
    if any(not o.text for o in operands):
        raise _refuse(text, "a side is empty")
    if ops[0] in ("=", "=="):
        if any(op != "+" for op in ops[1:]):
            raise _refuse(text, "a sum is TOTAL = A + B + ...")
        return Statement(text, "sum", tuple(operands))
    misplaced = {"+": "a sum names its total first (TOTAL = A + B)",
                 ",": "columns separated by commas are a fixed combination (fixed A, B)",
                 "=": "'=' makes a sum (TOTAL = A + B)", "==": "'==' makes a sum (TOTAL = A + B)"}
    for op in ops:
        if op in misplaced:
            raise _refuse(text, misplaced[op])
    rising = [op in ("<", "<=") for op in ops]
    if any(rising) and not all(rising):
        raise _refuse(text, "a chain mixes < and >; write it in one direction")
    if not rising[0]:
        operands, ops = operands[::-1], [FLIP[op] for op in ops[::-1]]
    return Statement(text, "compare", tuple(operands), tuple(ops))


def check_texts(value: Any, name: str = "data.constraints") -> list[str]:
    """Constraint texts from a list of strings (or one string), each of valid syntax; a one-line ConfigError
    otherwise. Names are looked up later, against the table (``bind_constraints``)."""
    if value is None:
        return []
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, (list, tuple)):
        raise ConfigError(f"{name} must be a list of constraints such as [\"age >= 18\", \"total = a + b\"], "
                          f"got {value!r}")
    for text in texts:
        parse_statement(text)
    return [t.strip() for t in texts]


# ---- constraints ----------------------------------------------------------------------------------
class Constraint(abc.ABC):
    """A constraint bound to a table's columns: plain data (``to_dict``), and which rows break it."""

    kind: str
    text: str

    @abc.abstractmethod
    def columns(self) -> list[str]:
        """The columns it names, in its own order."""

    @abc.abstractmethod
    def broken(self, frame: pd.DataFrame, slack: Mapping[str, float] | None = None) -> np.ndarray:
        """(N,) bool: the rows of ``frame`` that break it, each column's values allowed ``slack`` off."""

    def to_dict(self) -> dict:
        return {"kind": self.kind, **asdict(self)}

    def example(self, frame: pd.DataFrame, broken: np.ndarray) -> str:
        """The first breaking row's values of this constraint's columns: "age=12"."""
        row = frame.iloc[int(np.flatnonzero(broken)[0])]
        names = sorted(dict.fromkeys(self.columns()), key=self.text.find)  # as the text names them
        return ", ".join(f"{c}={row[c]}" for c in names)


@dataclass
class Compare(Constraint):
    """``terms[0] ops[0] terms[1] ...``: each term {"column": name}, {"value": number} or {"date": ISO text}."""

    text: str
    terms: list[dict]
    ops: list[str]
    kind = "compare"

    def columns(self) -> list[str]:
        return [t["column"] for t in self.terms if "column" in t]

    def broken(self, frame: pd.DataFrame, slack: Mapping[str, float] | None = None) -> np.ndarray:
        slack = slack or {}
        out = np.zeros(len(frame), dtype=bool)
        for left, op, right in zip(self.terms, self.ops, self.terms[1:]):
            a, b = _term(frame, left, right), _term(frame, right, left)
            allowed = slack.get(left.get("column"), 0.0) + slack.get(right.get("column"), 0.0)
            if allowed:
                holds = (a - b <= allowed) if op == "<=" else (a - b < allowed)
            else:
                holds = (a <= b) if op == "<=" else (a < b)
            present = ~(_missing(a, len(frame)) | _missing(b, len(frame)))
            out |= present & ~np.asarray(holds, dtype=bool)
        return out


@dataclass
class Fixed(Constraint):
    """Only the ``combinations`` of ``names``' values seen in the training rows (a missing cell as None)."""

    text: str
    names: list[str]
    combinations: list[list] = field(default_factory=list)
    kind = "fixed"

    def columns(self) -> list[str]:
        return list(self.names)

    def broken(self, frame: pd.DataFrame, slack: Mapping[str, float] | None = None) -> np.ndarray:
        seen = {tuple(c) for c in self.combinations}
        return np.array([key not in seen for key in _keys(frame, self.names)], dtype=bool)


@dataclass
class Sum(Constraint):
    """``total = parts[0] + parts[1] + ...``; the built total is rounded to ``round_to`` decimals (None: not
    rounded), the check allows half a unit in the ``decimals``-th decimal (None: float rounding)."""

    text: str
    total: str
    parts: list[str]
    round_to: int | None
    decimals: int | None
    kind = "sum"

    def columns(self) -> list[str]:
        return [self.total, *self.parts]

    def _parts_sum(self, frame: pd.DataFrame) -> np.ndarray:
        values = [_floats(frame[p]) for p in self.parts]
        return sum(values[1:], values[0])  # left to right, as a reader adding the columns up does

    def broken(self, frame: pd.DataFrame, slack: Mapping[str, float] | None = None) -> np.ndarray:
        slack = slack or {}
        total, expected = _floats(frame[self.total]), self._parts_sum(frame)
        if self.decimals is not None:
            tolerance = 0.5 * 10.0 ** -self.decimals
        else:
            tolerance = SUM_RELATIVE * (np.abs(total) + sum(np.abs(_floats(frame[p])) for p in self.parts))
        tolerance = tolerance + sum(slack.get(c, 0.0) for c in self.columns())
        with np.errstate(invalid="ignore"):
            return np.asarray(np.abs(total - expected) > tolerance)  # NaN (a missing cell) compares False

    def build(self, frame: pd.DataFrame) -> None:
        """The total of each row whose parts are all present set to their sum, in the total's own dtype."""
        values = self._parts_sum(frame)
        if self.round_to is not None:
            values = np.round(values, self.round_to)
        present = ~np.isnan(values)
        column = frame[self.total]
        out = _floats(column).copy()
        out[present] = values[present]
        frame[self.total] = pd.Series(out, index=frame.index).astype(column.dtype)


KINDS: dict[str, type[Constraint]] = {"compare": Compare, "fixed": Fixed, "sum": Sum}


def constraints_from_dicts(items: Sequence[Mapping] | None) -> list[Constraint]:
    """Constraints as ``to_dict`` wrote them (a run's spec.json)."""
    out = []
    for item in items or ():
        fields_ = {k: v for k, v in item.items() if k != "kind"}
        out.append(KINDS[item["kind"]](**fields_))
    return out


# ---- values -------------------------------------------------------------------------------------
def _floats(series: pd.Series) -> np.ndarray:
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def _missing(values: Any, n: int) -> np.ndarray:
    if isinstance(values, pd.Series):
        return values.isna().to_numpy()
    return np.zeros(n, dtype=bool)


def _term(frame: pd.DataFrame, term: dict, other: dict) -> Any:
    """A term's values: a column (numbers as floats, datetimes as they are), a number or a date (in the time
    zone of the column it is compared with)."""
    if "column" in term:
        series = frame[term["column"]]
        return series if ptypes.is_datetime64_any_dtype(series.dtype) else pd.Series(_floats(series), index=frame.index)
    if "value" in term:
        return term["value"]
    stamp = pd.Timestamp(term["date"])
    zone = frame[other["column"]].dt.tz
    if zone is not None:
        stamp = stamp.tz_localize(zone) if stamp.tz is None else stamp.tz_convert(zone)
    return stamp


def _plain(value: Any) -> Any:
    """A category value as JSON holds it: None for a missing cell, numpy scalars as Python's."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def _keys(frame: pd.DataFrame, names: Sequence[str]) -> list[tuple]:
    columns = [[_plain(v) for v in frame[name].astype(object)] for name in names]
    return list(zip(*columns))


# ---- binding names to a table ---------------------------------------------------------------------
def _column(text: str, columns: Mapping[str, Mapping], name: str, allowed: Sequence[str], role: str) -> dict:
    """The transform's entry of column ``name``; a one-line error for an unknown column or a wrong type."""
    col = columns.get(name)
    if col is None:
        shown = ", ".join(list(columns)[:20]) + (", ..." if len(columns) > 20 else "")
        raise ConfigError(f"constraint {text!r}: the table has no column '{name}'; its columns: {shown}")
    if col["type"] not in allowed:
        hint = f" (declare its type with --set data.columns.{name}=TYPE)" if col["type"] != "empty" else ""
        kinds = ", ".join(allowed[:-1]) + f" or {allowed[-1]}"
        raise ConfigError(f"constraint {text!r}: column '{name}' holds {col['type']} values; {role} takes "
                          f"{kinds} columns{hint}")
    return dict(col)


def _literal(text: str, operand: Operand, columns: Mapping[str, Mapping]) -> dict:
    """A comparison operand as a term: a column when the table has one of that name, else a number or a date."""
    if operand.quoted or operand.text in columns:
        return {"column": operand.text}
    try:
        number = float(operand.text)
    except ValueError:
        number = None
    if number is not None:
        if not math.isfinite(number):
            raise _refuse(text, f"{operand.text!r} is not a finite number")
        return {"value": int(number) if re.fullmatch(r"[+-]?\d+", operand.text) else number}
    if re.search(r"\d", operand.text):
        try:
            return {"date": pd.Timestamp(operand.text).isoformat()}
        except (ValueError, TypeError, OverflowError):
            pass
    return {"column": operand.text}  # an unknown column: named as such when it is looked up


def _bind_compare(st: Statement, columns: Mapping[str, Mapping]) -> Compare:
    text = st.text
    terms = [_literal(text, o, columns) for o in st.operands]
    if not any("column" in t for t in terms):
        raise _refuse(text, "it compares values only; name at least one column")
    kinds = {}
    for t in terms:
        if "column" in t:
            col = _column(text, columns, t["column"], COMPARABLE, "a comparison")
            kinds[t["column"]] = ("date" if col["type"] == "datetime" else "number", col.get("tz"))
    for left, right in zip(terms, terms[1:]):
        if "column" not in left and "column" not in right:
            raise _refuse(text, "it compares two values with each other")
        for a, b in ((left, right), (right, left)):
            if "column" not in a:
                continue
            kind, zone = kinds[a["column"]]
            if "column" in b:
                other_kind, other_zone = kinds[b["column"]]
                if other_kind != kind:
                    raise ConfigError(f"constraint {text!r}: '{a['column']}' holds {kind}s and '{b['column']}' "
                                      f"{other_kind}s; a comparison takes columns of one kind")
                if kind == "date" and (zone is None) != (other_zone is None):
                    raise ConfigError(f"constraint {text!r}: '{a['column']}' and '{b['column']}' are not both "
                                      "zoned (or both unzoned) dates")
            elif kind == "date" and "date" not in b:
                raise ConfigError(f"constraint {text!r}: '{a['column']}' holds dates; compare it with a date "
                                  f"such as 2020-01-31")
            elif kind == "date" and zone is None and pd.Timestamp(b["date"]).tz is not None:
                raise ConfigError(f"constraint {text!r}: '{a['column']}' holds dates without a time zone; "
                                  "compare it with a date without one")
            elif kind == "number" and "value" not in b:
                raise ConfigError(f"constraint {text!r}: '{a['column']}' holds numbers; compare it with a number")
    return Compare(text, terms, list(st.ops))


def _resolution(col: Mapping) -> int | None:
    """The decimals a number column's decoded values are written with: 0 for whole numbers, None for any."""
    if col["type"] == "integer" or col["dtype"].startswith(("int", "uint", "Int", "UInt")):
        return 0
    return col.get("decimals")


def _most(values: Sequence[int | None]) -> int | None:
    return None if any(v is None for v in values) else max(values)


def _bind_sum(st: Statement, columns: Mapping[str, Mapping]) -> Sum:
    text = st.text
    total, *parts = [o.text for o in st.operands]
    cols = {name: _column(text, columns, name, NUMBER_TYPES, "a sum") for name in [total, *parts]}
    if total in parts:
        raise _refuse(text, f"'{total}' is both the total and a part")
    round_to = _most([_resolution(cols[p]) for p in parts])
    if _resolution(cols[total]) == 0 and round_to != 0:
        raise ConfigError(f"constraint {text!r}: '{total}' holds whole numbers but its parts have decimals; "
                          f"declare it numeric with --set data.columns.{total}=numeric")
    return Sum(text, total, parts, round_to, _most([_resolution(c) for c in cols.values()]))


def _bind_fixed(st: Statement, columns: Mapping[str, Mapping], frame: pd.DataFrame | None) -> Fixed:
    text = st.text
    names = [o.text for o in st.operands]
    for name in names:
        _column(text, columns, name, CATEGORY_TYPES, "a fixed combination")
    if len(set(names)) != len(names):
        raise _refuse(text, "a column is named twice")
    if frame is None:
        raise ConfigError(f"constraint {text!r}: a fixed combination is learnt from the training rows; declare it "
                          "when training (--set 'data.constraints=[\"fixed a, b\"]')")
    seen = list(dict.fromkeys(_keys(frame, names)))  # in the order first seen
    return Fixed(text, names, [list(key) for key in seen])


def bind_constraints(texts: str | Sequence[str], columns: Sequence[Mapping], frame: pd.DataFrame | None = None,
                     given: Sequence[Constraint] = ()) -> list[Constraint]:
    """``texts`` as constraints on a table whose transform has ``columns`` (``TableTransform.columns``); a fixed
    combination learns its combinations from ``frame`` (the training rows; None refuses one). ``given``: the
    constraints these join (a run's own), checked together with them."""
    by_name = {c["name"]: c for c in columns}
    out: list[Constraint] = []
    for text in check_texts(texts):
        st = parse_statement(text)
        if st.kind == "compare":
            out.append(_bind_compare(st, by_name))
        elif st.kind == "sum":
            out.append(_bind_sum(st, by_name))
        else:
            out.append(_bind_fixed(st, by_name, frame))
    sum_order([*given, *out])
    return out


def sum_order(constraints: Sequence[Constraint]) -> list[Sum]:
    """The sums, each after the sums that build its parts; a one-line ConfigError when a column is the total
    of two sums or sums build each other in a circle."""
    sums = [c for c in constraints if isinstance(c, Sum)]
    totals = Counter(s.total for s in sums)
    twice = [name for name, count in totals.items() if count > 1]
    if twice:
        raise ConfigError(f"column '{twice[0]}' is the total of {totals[twice[0]]} sums; a column can be the total "
                          "of one sum")
    ordered: list[Sum] = []
    left = list(sums)
    while left:
        built = {s.total for s in left}
        ready = [s for s in left if not built & set(s.parts)]
        if not ready:
            raise ConfigError(f"the sums {', '.join(repr(s.text) for s in left)} build each other in a circle")
        ordered += ready
        left = [s for s in left if s not in ready]
    return ordered


# ---- the training rows --------------------------------------------------------------------------
def encoding_slack(columns: Sequence[Mapping]) -> dict[str, float]:
    """How far each decoded column may be from its data: numbers without fixed decimals come back to float32
    precision (``table_transform.py``); the rest exactly."""
    return {c["name"]: ENCODING_SLACK * (c["max"] - c["min"]) for c in columns
            if c["type"] == "numeric" and _resolution(c) is None}


def learn_constraints(texts: str | Sequence[str], columns: Sequence[Mapping], frame: pd.DataFrame,
                      where: str) -> list[dict]:
    """``texts`` bound to the table and checked on its rows ``frame`` (decoded, as the model learns them), as
    plain dicts for the run; a one-line DataError naming a constraint the rows break, how many and an example."""
    constraints = bind_constraints(texts, columns, frame)
    slack = encoding_slack(columns)
    for constraint in constraints:
        broken = constraint.broken(frame, slack)
        if broken.any():
            raise DataError(f"{where}: {int(broken.sum()):,} of {len(frame):,} rows break constraint "
                            f"'{constraint.text}' (e.g. {constraint.example(frame, broken)}); correct the data or "
                            "leave the constraint out of data.constraints")
    return [c.to_dict() for c in constraints]


# ---- sampled rows -------------------------------------------------------------------------------
class Enforcement:
    """Decoded rows as constraints allow them: ``keep(frame)`` builds the sums and returns the rows that break
    nothing; ``too_rare`` says which constraint broke most rows, for the error when too few are kept."""

    def __init__(self, constraints: Sequence[Constraint]):
        self.constraints = list(constraints)
        self.sums = sum_order(self.constraints)
        self.breaks: Counter[str] = Counter()

    def keep(self, frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.reset_index(drop=True)
        for total in self.sums:
            total.build(frame)
        ok = np.ones(len(frame), dtype=bool)
        for constraint in self.constraints:
            broken = constraint.broken(frame)
            self.breaks[constraint.text] += int(broken.sum())
            ok &= ~broken
        return frame[ok]

    def too_rare(self, found: int, drawn: int) -> str:
        worst, count = self.breaks.most_common(1)[0] if self.breaks else ("", 0)
        return (f"only {found:,} of {drawn:,} rows drawn met the constraints ('{worst}' broke {count:,}); "
                f"the constraints are too rare")
