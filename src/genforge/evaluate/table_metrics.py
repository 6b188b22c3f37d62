"""Scores of a synthetic table against real ones, all on decoded DataFrames (the columns, dtypes and categories
the run's transform restores) and all in [0, 1]:

- ``column_shapes``: per number column 1 - the two-sample KS statistic, per category column 1 - the total
  variation distance of the value shares; their mean (SDMetrics' KSComplement and TVComplement).
- ``pair_trends``: per pair of number columns 1 - |Pearson r_real - r_synth| / 2, per pair of category columns
  1 - the TV distance of the joint shares; their mean (SDMetrics' CorrelationSimilarity and ContingencySimilarity).
  ``quality`` is the mean of the two, as SDMetrics' quality report gives it.
- ``detection``: 1 - (2 max(AUC, 0.5) - 1) of a logistic regression telling real rows from synthetic ones.
- ``ml_efficacy``: macro-F1 on real held-out rows of a random forest trained on the synthetic rows.
- ``dcr_*`` and ``exact_copies``: how close synthetic rows come to the training rows (privacy).

Numbers are number, integer and datetime columns (datetimes as nanosecond counts); categories are categorical
and boolean columns, a missing cell being a value of its own.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

NUMBERS = ("numeric", "integer", "datetime")
CATEGORIES = ("categorical", "boolean")
MAX_PAIRS = 200  # column pairs scored per kind, at most: wide tables stay quick
DETECTION_ROWS = 5_000  # rows a side the detector sees, at most
FOLDS = 5


# ---- columns as numbers ---------------------------------------------------------------------------------
def as_numbers(series: pd.Series) -> np.ndarray:
    """A number or datetime column as float64 (datetimes as ns since the epoch), missing cells as NaN."""
    if pd.api.types.is_datetime64_any_dtype(series):
        values = series.astype("int64").to_numpy(dtype=np.float64)  # NaT -> int64 min, masked below
        return np.where(series.isna().to_numpy(), np.nan, values)
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)


def as_labels(series: pd.Series) -> pd.Series:
    """A category column as strings, missing as a value of its own (so its share is compared too)."""
    return series.astype(object).where(series.notna(), "<missing>").astype(str)


def total_variation(real: pd.Series, synth: pd.Series) -> float:
    """Half the L1 distance between the value shares of two label columns."""
    p = real.value_counts(normalize=True)
    q = synth.value_counts(normalize=True)
    p, q = p.align(q, fill_value=0.0)
    return float(0.5 * np.abs(p - q).sum())


def ks_statistic(real: np.ndarray, synth: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic on the present values; 1 when the synthetic column has none."""
    from scipy.stats import ks_2samp

    real, synth = real[~np.isnan(real)], synth[~np.isnan(synth)]
    if len(synth) == 0:
        return 1.0
    return float(ks_2samp(real, synth).statistic)


# ---- column shapes and pair trends ----------------------------------------------------------------------
def column_shape_scores(real: pd.DataFrame, synth: pd.DataFrame, types: dict[str, str]) -> dict[str, float]:
    """Column -> 1 - KS (numbers) or 1 - TV (categories); columns without real values are left out."""
    scores = {}
    for name, kind in types.items():
        if kind in NUMBERS:
            real_values = as_numbers(real[name])
            if np.isnan(real_values).all():
                continue
            scores[name] = 1.0 - ks_statistic(real_values, as_numbers(synth[name]))
        elif kind in CATEGORIES:
            scores[name] = 1.0 - total_variation(as_labels(real[name]), as_labels(synth[name]))
    return scores


def chosen_pairs(columns: list[str], limit: int = MAX_PAIRS) -> list[tuple[str, str]]:
    """All pairs, or ``limit`` of them evenly spread over the list (the same ones for every run on the table)."""
    pairs = list(itertools.combinations(columns, 2))
    if len(pairs) <= limit:
        return pairs
    return [pairs[i] for i in np.linspace(0, len(pairs) - 1, limit).round().astype(int)]


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r over rows where both are present; NaN when either is constant there."""
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def correlation_gap(real_a: np.ndarray, real_b: np.ndarray, synth_a: np.ndarray, synth_b: np.ndarray) -> float:
    """r_real - r_synth of a number pair: NaN when the pair is constant in the real rows (no trend to keep); a
    synthetic pair that is constant counts as uncorrelated."""
    r_real = correlation(real_a, real_b)
    if np.isnan(r_real):
        return float("nan")
    return float(r_real - np.nan_to_num(correlation(synth_a, synth_b)))


def joint_share_gap(real: pd.DataFrame, synth: pd.DataFrame, a: str, b: str) -> float:
    """The total variation distance between the joint value shares of category columns ``a`` and ``b``."""
    joint_real = as_labels(real[a]) + "\x1f" + as_labels(real[b])
    joint_synth = as_labels(synth[a]) + "\x1f" + as_labels(synth[b])
    return total_variation(joint_real, joint_synth)


def pair_trend_scores(real: pd.DataFrame, synth: pd.DataFrame, types: dict[str, str]) -> dict[str, float]:
    """"a / b" -> 1 - |r_real - r_synth| / 2 (number pairs) or 1 - TV of the joint shares (category pairs).
    A pair constant in the real rows has no trend to keep and is left out; a synthetic pair that is constant
    counts as uncorrelated."""
    scores = {}
    numbers = [c for c, k in types.items() if k in NUMBERS]
    values = {c: (as_numbers(real[c]), as_numbers(synth[c])) for c in numbers}
    for a, b in chosen_pairs(numbers):
        gap = correlation_gap(values[a][0], values[b][0], values[a][1], values[b][1])
        if not np.isnan(gap):
            scores[f"{a} / {b}"] = 1.0 - abs(gap) / 2
    categories = [c for c, k in types.items() if k in CATEGORIES]
    for a, b in chosen_pairs(categories):
        scores[f"{a} / {b}"] = 1.0 - joint_share_gap(real, synth, a, b)
    return scores


def mean_or_nan(scores: dict[str, float]) -> float:
    return float(np.mean(list(scores.values()))) if scores else float("nan")


def quality_scores(real: pd.DataFrame, synth: pd.DataFrame, types: dict[str, str]) -> dict[str, float]:
    shapes = mean_or_nan(column_shape_scores(real, synth, types))
    trends = mean_or_nan(pair_trend_scores(real, synth, types))
    # a table with one column (or one of each kind) has no pairs: quality is its shapes alone
    quality = shapes if np.isnan(trends) else (shapes + trends) / 2
    return {"quality": quality, "column_shapes": shapes, "pair_trends": trends}


# ---- a feature space for the models and distances -------------------------------------------------------
class RowFeatures:
    """Standardised numbers (missing: the training mean, i.e. 0) and one-hot categories, fitted on ``fit_on``.
    Distances and the scikit-learn models all see rows through this one space."""

    def __init__(self, fit_on: pd.DataFrame, types: dict[str, str]):
        from sklearn.preprocessing import OneHotEncoder

        self.numbers = [c for c, k in types.items() if k in NUMBERS]
        self.categories = [c for c, k in types.items() if k in CATEGORIES]
        numbers = self._numbers(fit_on)
        self.mean = np.nanmean(numbers, axis=0) if numbers.size else np.zeros(0)
        std = np.nanstd(numbers, axis=0) if numbers.size else np.zeros(0)
        self.std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
        self.mean = np.nan_to_num(self.mean)
        self.onehot = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        if self.categories:
            self.onehot.fit(self._labels(fit_on))

    def _numbers(self, frame: pd.DataFrame) -> np.ndarray:
        if not self.numbers:
            return np.zeros((len(frame), 0))
        return np.column_stack([as_numbers(frame[c]) for c in self.numbers])

    def _labels(self, frame: pd.DataFrame) -> np.ndarray:
        return np.column_stack([as_labels(frame[c]).to_numpy() for c in self.categories])

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        numbers = np.nan_to_num((self._numbers(frame) - self.mean) / self.std)  # missing -> the mean
        parts = [numbers]
        if self.categories:
            parts.append(self.onehot.transform(self._labels(frame)))
        return np.hstack(parts).astype(np.float64)


# ---- detection, ML efficacy, privacy --------------------------------------------------------------------
def subsample(frame: pd.DataFrame, limit: int, seed: int) -> pd.DataFrame:
    if len(frame) <= limit:
        return frame
    return frame.iloc[np.sort(np.random.default_rng(seed).choice(len(frame), limit, replace=False))]


def detection_auc(real: pd.DataFrame, synth: pd.DataFrame, types: dict[str, str], seed: int = 0) -> float:
    """Cross-validated ROC AUC of a logistic regression telling ``synth`` rows (1) from ``real`` rows (0)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    real, synth = subsample(real, DETECTION_ROWS, seed), subsample(synth, DETECTION_ROWS, seed)
    both = pd.concat([real, synth], ignore_index=True)
    x = RowFeatures(both, types)(both)
    y = np.r_[np.zeros(len(real)), np.ones(len(synth))]
    folds = min(FOLDS, len(real), len(synth))
    if folds < 2:
        return float("nan")
    model = LogisticRegression(max_iter=1000, class_weight="balanced")  # balanced: the sides differ in size
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return float(np.mean(cross_val_score(model, x, y, cv=cv, scoring="roc_auc")))


def detection_score(auc: float) -> float:
    """1 when the detector does no better than chance, 0 when it tells every row apart."""
    return 1.0 - (max(auc, 0.5) * 2 - 1)


def target_column(types: dict[str, str]) -> str | None:
    """The column ML efficacy predicts: the last categorical or boolean one (breast_cancer's diagnosis)."""
    categories = [c for c, k in types.items() if k in CATEGORIES]
    return categories[-1] if categories else None


def ml_efficacy(train: pd.DataFrame, test: pd.DataFrame, types: dict[str, str], target: str,
                seed: int = 0) -> float:
    """Macro-F1 on ``test`` of a random forest trained on ``train`` to predict ``target`` from the other columns."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import f1_score

    features = {c: k for c, k in types.items() if c != target}
    y_train, y_test = as_labels(train[target]), as_labels(test[target])
    if not features or y_train.nunique() < 1:
        return float("nan")
    space = RowFeatures(train, features)
    model = RandomForestClassifier(n_estimators=50, random_state=seed, n_jobs=1)
    model.fit(space(train), y_train)
    # scored over the real classes only: a class the synthetic rows invent does not dilute the mean
    return float(f1_score(y_test, model.predict(space(test)), labels=sorted(y_test.unique()), average="macro",
                          zero_division=0))


def closest_distances(rows: pd.DataFrame, train: pd.DataFrame, space: RowFeatures) -> np.ndarray:
    """Per row of ``rows``, the Euclidean distance (in ``space``) to its nearest training row."""
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(n_neighbors=1).fit(space(train))
    return index.kneighbors(space(rows))[0][:, 0]


def copy_share(rows: pd.DataFrame, train: pd.DataFrame) -> float:
    """Share of ``rows`` equal, cell for cell, to some training row (both decoded alike, so equal values match)."""
    seen = set(pd.util.hash_pandas_object(train, index=False).tolist())
    return float(np.mean([h in seen for h in pd.util.hash_pandas_object(rows, index=False).tolist()]))


def privacy_scores(rows: pd.DataFrame, train: pd.DataFrame, holdout: pd.DataFrame, types: dict[str, str]) -> dict:
    """Distance to closest record of ``rows`` against the held-out rows' own (the baseline a fresh real row gets)."""
    space = RowFeatures(train, types)
    median = float(np.median(closest_distances(rows, train, space)))
    baseline = float(np.median(closest_distances(holdout, train, space))) if len(holdout) else float("nan")
    return {"dcr_median": median, "dcr_holdout_median": baseline,
            "dcr_ratio": median / baseline if baseline > 0 else float("nan"), "exact_copies": copy_share(rows, train)}


def table_scores(synth: pd.DataFrame, train: pd.DataFrame, holdout: pd.DataFrame, types: dict[str, str],
                 seed: int = 0) -> dict[str, float]:
    """Every score of ``synth``: shapes and trends against the training rows (the larger real table), detection
    against the training rows, ML efficacy on the held-out rows, privacy against the training rows."""
    out = quality_scores(train, synth, types)
    out["detection"] = detection_score(detection_auc(train, synth, types, seed))
    target = target_column(types)
    if target is not None and len(holdout):
        out["ml_efficacy"] = ml_efficacy(synth, holdout, types, target, seed)
    out.update(privacy_scores(synth, train, holdout, types))
    # a score a table cannot give (no pairs, no held-out rows) is left out rather than kept as NaN in eval.json
    return {k: v for k, v in out.items() if not np.isnan(v)}
