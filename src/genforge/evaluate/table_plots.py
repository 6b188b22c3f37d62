"""Figures of synthetic rows against real ones, drawn where `genforge eval` scores a table run
(``scorers/table.py``) and shown in the run's card of the comparison report:

- ``column_histograms``: small multiples, one panel per column (the first ``MAX_COLUMNS``). Numbers, integers
  and datetimes are step lines of the value shares on shared bins; categories and booleans side-by-side bars
  of the value shares (the ``TOP_CATEGORIES`` most common in the real rows, the rest as one "other" bar,
  missing cells as a bar of their own).
- ``pair_gap_heatmap``: per pair of columns, what ``table_metrics.pair_trend_scores`` compares: the real rows'
  Pearson r minus the synthetic rows' for number pairs, the total variation distance between the joint value
  shares for category pairs. 0 is a perfect match; ``pair_gap_matrix`` gives the numbers.

Both read decoded DataFrames and the column types (``table_metrics.NUMBERS`` and ``CATEGORIES``; other columns,
such as empty ones, are left out) and return ``Figure``s (PNG bytes).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from genforge.evaluate import table_metrics as tm
from genforge.evaluate.figures import Figure, png_bytes, pyplot

MAX_COLUMNS = 16  # panels in the histogram figure: 4 x 4 stay readable in a report card
MAX_MATRIX_COLUMNS = 40  # rows and columns of the heat map
TOP_CATEGORIES = 8  # bars per category panel, besides "other" and "missing"
BINS = 24  # per number panel (integers with a narrow range get one bin per value)
INTEGER_BINS_UP_TO = 40  # integer columns spanning at most this many values: one bin per value
ANNOTATE_UP_TO = 12  # heat maps of at most this many columns print each cell's value
NAME_CHARS = 22  # longer column and category names are cut in labels
REAL_COLOR, SYNTH_COLOR = "#8a94a6", "#d1495b"
MISSING = "<missing>"  # what table_metrics.as_labels calls a missing cell
STYLE = {"font.size": 7.5, "axes.titlesize": 8, "legend.fontsize": 8, "axes.grid": True, "grid.alpha": 0.25}


def scored_columns(types: dict[str, str]) -> list[str]:
    """The columns the metrics compare, in table order."""
    return [c for c, k in types.items() if k in tm.NUMBERS + tm.CATEGORIES]


def _short(text: object, limit: int = NAME_CHARS) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _left_out(shown: int, total: int) -> str:
    return f"the first {shown} of {total} columns; {total - shown} more not shown" if total > shown else ""


# ---- per-column histograms -------------------------------------------------------------------------------
def number_bins(kind: str, real: np.ndarray, synth: np.ndarray) -> np.ndarray:
    """Shared bin edges over the present values of both sides. The range is the real one widened by a quarter
    on each side at most, so that a few wild synthetic values do not squash the real shape into one bin (values
    beyond it are counted in the edge bins)."""
    real, synth = real[~np.isnan(real)], synth[~np.isnan(synth)]
    both = np.concatenate([real, synth])
    if both.size == 0:
        return np.array([0.0, 1.0])
    lo, hi = float(both.min()), float(both.max())
    if real.size:
        span = float(real.max() - real.min())
        lo, hi = max(lo, float(real.min()) - span / 4), min(hi, float(real.max()) + span / 4)
    if kind == "integer" and hi - lo <= INTEGER_BINS_UP_TO:
        return np.arange(math.floor(lo) - 0.5, math.ceil(hi) + 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, BINS + 1)


def number_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The share of the present values in each bin (values beyond the edges in the edge bins)."""
    present = values[~np.isnan(values)]
    if present.size == 0:
        return np.zeros(len(edges) - 1)
    counts, _ = np.histogram(np.clip(present, edges[0], edges[-1]), bins=edges)
    return counts / present.size


def category_shares(real: pd.Series, synth: pd.Series,
                    top: int = TOP_CATEGORIES) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(bar labels, real shares, synthetic shares) over every row: the ``top`` categories most common in the real
    rows, then "other (k)" for the rest, then "missing" when either side has missing cells."""
    p = tm.as_labels(real).value_counts(normalize=True)
    q = tm.as_labels(synth).value_counts(normalize=True)
    p, q = p.align(q, fill_value=0.0)
    present = sorted((c for c in p.index if c != MISSING), key=lambda c: (-p[c], -q[c], c))
    shown, rest = present[:top], present[top:]
    labels = [_short(c, 14) for c in shown]
    real_shares, synth_shares = [p[c] for c in shown], [q[c] for c in shown]
    if rest:
        labels.append(f"other ({len(rest)})")
        real_shares.append(float(p[rest].sum()))
        synth_shares.append(float(q[rest].sum()))
    if MISSING in p.index:
        labels.append("missing")
        real_shares.append(float(p[MISSING]))
        synth_shares.append(float(q[MISSING]))
    return labels, np.asarray(real_shares, dtype=float), np.asarray(synth_shares, dtype=float)


def plotted_numbers(series: pd.Series) -> np.ndarray:
    """``table_metrics.as_numbers``, with datetimes as days since 1970 (what matplotlib's date axis reads)
    rather than counts of their dtype's unit (seconds, ..., nanoseconds: pandas keeps whichever it read)."""
    values = tm.as_numbers(series)
    if pd.api.types.is_datetime64_any_dtype(series):
        values = values * (pd.Timedelta(1, unit=series.dt.unit) / pd.Timedelta(days=1))
    return values


def _number_panel(ax, kind: str, real: pd.Series, synth: pd.Series) -> None:
    real_values, synth_values = plotted_numbers(real), plotted_numbers(synth)
    edges = number_bins(kind, real_values, synth_values)
    ax.stairs(number_shares(real_values, edges), edges, fill=True, color=REAL_COLOR, alpha=0.55, linewidth=0)
    ax.stairs(number_shares(synth_values, edges), edges, color=SYNTH_COLOR, linewidth=1.3)
    if kind == "datetime":
        import matplotlib.dates as mdates

        locator = mdates.AutoDateLocator(minticks=2, maxticks=5)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    else:
        ax.locator_params(axis="x", nbins=4)
    ax.locator_params(axis="y", nbins=4)
    missing_real, missing_synth = float(np.isnan(real_values).mean()), float(np.isnan(synth_values).mean())
    if missing_real or missing_synth:
        ax.text(0.98, 0.96, f"missing {missing_real:.0%} / {missing_synth:.0%}", transform=ax.transAxes,
                ha="right", va="top", fontsize=6.5, color="0.3")


def _category_panel(ax, real: pd.Series, synth: pd.Series) -> None:
    labels, real_shares, synth_shares = category_shares(real, synth)
    at = np.arange(len(labels))
    ax.bar(at - 0.2, real_shares, width=0.4, color=REAL_COLOR, alpha=0.8)
    ax.bar(at + 0.2, synth_shares, width=0.4, color=SYNTH_COLOR, alpha=0.9)
    ax.set_xticks(at, labels, rotation=35 if len(labels) > 3 else 0, ha="right" if len(labels) > 3 else "center")
    ax.grid(axis="x", visible=False)


def column_histograms(real: pd.DataFrame, synth: pd.DataFrame, types: dict[str, str],
                      max_columns: int | None = None) -> Figure | None:
    """One panel per column (the first ``max_columns``, default ``MAX_COLUMNS``), real vs synthetic; None for a
    table without columns the metrics compare. Each panel's title carries the column's shape score (1 - KS or
    1 - TV)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    columns = scored_columns(types)
    if not columns:
        return None
    shown = columns[:MAX_COLUMNS if max_columns is None else max_columns]
    shapes = tm.column_shape_scores(real, synth, {c: types[c] for c in shown})
    plt = pyplot()
    ncols = min(len(shown), 4)
    nrows = math.ceil(len(shown) / ncols)
    with plt.rc_context(STYLE):
        # at least two panels wide: the legend above them needs the room
        fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * max(ncols, 2), 1.9 * nrows + 0.7), squeeze=False,
                                 layout="constrained")
        for ax in axes.flat[len(shown):]:
            ax.set_visible(False)
        for ax, name in zip(axes.flat, shown):
            kind = types[name]
            if kind in tm.NUMBERS:
                _number_panel(ax, kind, real[name], synth[name])
                measure = "1-KS"
            else:
                _category_panel(ax, real[name], synth[name])
                measure = "1-TV"
            score = f" \u00b7 {measure} {shapes[name]:.2f}" if name in shapes else ""
            ax.set_title(f"{_short(name)}\n{kind}{score}", loc="left")
            ax.tick_params(labelsize=6.5)
        for row in axes:
            row[0].set_ylabel("share")
        handles = [Patch(color=REAL_COLOR, alpha=0.6, label=f"real ({len(real):,} rows)"),
                   Line2D([], [], color=SYNTH_COLOR, linewidth=1.5, label=f"synthetic ({len(synth):,} rows)")]
        fig.legend(handles=handles, loc="outside upper center", ncols=2, frameon=False)
        note = _left_out(len(shown), len(columns))
        if note:
            fig.supxlabel(note, fontsize=7.5, color="0.35")
    caption = (f"Columns, real vs synthetic: value shares on shared bins (numbers) or per category (the "
               f"{TOP_CATEGORIES} most common, then other and missing)")
    caption += f"; {note}." if note else "."
    return Figure("columns", caption, png_bytes(fig))


# ---- the pair-trend heat map -----------------------------------------------------------------------------
def pair_gap_matrix(real: pd.DataFrame, synth: pd.DataFrame, types: dict[str, str],
                    max_columns: int | None = None) -> pd.DataFrame:
    """A symmetric column x column frame (the first ``max_columns`` compared columns, default
    ``MAX_MATRIX_COLUMNS``): r_real - r_synth for
    number pairs, the TV distance of the joint shares for category pairs (``table_metrics``'s own functions:
    what pair_trends scores, pair by pair). NaN on the diagonal, for number x category pairs (pair_trends does
    not compare them) and for number pairs constant in the real rows."""
    columns = scored_columns(types)[:MAX_MATRIX_COLUMNS if max_columns is None else max_columns]
    gaps = pd.DataFrame(np.nan, index=columns, columns=columns, dtype=float)
    numbers = {c: (tm.as_numbers(real[c]), tm.as_numbers(synth[c])) for c in columns if types[c] in tm.NUMBERS}
    for i, a in enumerate(columns):
        for b in columns[i + 1:]:
            if a in numbers and b in numbers:
                gap = tm.correlation_gap(numbers[a][0], numbers[b][0], numbers[a][1], numbers[b][1])
            elif a not in numbers and b not in numbers:
                gap = tm.joint_share_gap(real, synth, a, b)
            else:
                continue
            gaps.loc[a, b] = gaps.loc[b, a] = gap
    return gaps


def pair_gap_heatmap(real: pd.DataFrame, synth: pd.DataFrame, types: dict[str, str],
                     max_columns: int | None = None) -> Figure | None:
    """``pair_gap_matrix`` as a heat map on a diverging scale fixed at [-1, 1] (so runs compare by colour),
    white at 0; None when no pair was compared."""
    gaps = pair_gap_matrix(real, synth, types, max_columns)
    if gaps.isna().all().all():
        return None
    total = len(scored_columns(types))
    k = len(gaps)
    plt = pyplot()
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="#e9ebef")
    side = min(max(3.4, 0.22 * k + 2.2), 9.0)
    with plt.rc_context({**STYLE, "axes.grid": False}):
        fig, ax = plt.subplots(figsize=(side + 0.4, side), layout="constrained")
        image = ax.imshow(np.ma.masked_invalid(gaps.to_numpy()), cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
        labels = [_short(c) for c in gaps.columns]
        size = 7 if k <= 15 else 6 if k <= 30 else 5
        ax.set_xticks(range(k), labels, rotation=90, fontsize=size)
        ax.set_yticks(range(k), labels, fontsize=size)
        if k <= ANNOTATE_UP_TO:
            for (i, j), v in np.ndenumerate(gaps.to_numpy()):
                if not np.isnan(v):
                    ax.text(j, i, f"{round(v, 2) + 0.0:+.2f}", ha="center", va="center", fontsize=6.5,
                            color="white" if abs(v) > 0.6 else "black")
        bar = fig.colorbar(image, ax=ax, shrink=0.6, extend="both")
        bar.set_label("real \u2212 synthetic", fontsize=7)
        ax.set_title("Pair trends: real \u2212 synthetic", loc="left")
        note = _left_out(k, total)
        if note:
            fig.supxlabel(note, fontsize=7.5, color="0.35")
    caption = ("Pair trends, real minus synthetic: Pearson r for number pairs, the total variation distance of "
               "the joint shares for category pairs (what pair_trends scores); white is a perfect match. Grey: "
               "not compared (number \u00d7 category pairs, pairs constant in the real rows)")
    caption += f"; {note}." if note else "."
    return Figure("pair_trends", caption, png_bytes(fig))


def table_figures(real: pd.DataFrame, synth: pd.DataFrame, types: dict[str, str]) -> list[Figure]:
    """The figures a table run's evaluation keeps: column histograms, then the pair-trend heat map (when the
    table has pairs to compare)."""
    figures = [column_histograms(real, synth, types), pair_gap_heatmap(real, synth, types)]
    return [f for f in figures if f is not None]
