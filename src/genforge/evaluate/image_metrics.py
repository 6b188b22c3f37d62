"""Sample-quality metrics on feature embeddings: Fréchet distance, KID, precision/recall,
density/coverage and memorisation.

Every function takes feature arrays of shape (N, D) (numpy arrays, torch tensors or nested
lists) and works in float64, because the metrics subtract large, nearly equal numbers
(FD's traces, KID's kernel sums) where float32 loses the answer. Pairwise distances are
computed in row blocks so that N = 10,000 points of D = 1,024 features fit in a few hundred
MB instead of the 800 MB a full 10,000 x 10,000 float64 matrix would need.

Manifold metrics (precision/recall, density/coverage) count a point as inside a k-NN ball
when its distance is <= the ball's radius (closed balls, as in Kynkäänniemi et al. 2019).
Those distances come from matrix products, exact to about 1e-7 of the feature norm: only
exact duplicates sitting on a ball's boundary can be miscounted, which moves no score on
real features. Memorisation, where exact copies are the point, recomputes its distances
directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

__all__ = [
    "density_coverage",
    "frechet_distance",
    "frechet_from_stats",
    "image_scores",
    "kid",
    "memorisation",
    "precision_recall",
]

# Float64 elements in one block of pairwise distances (32 MB); torch.cdist needs about three
# blocks of scratch, so a block pass stays near 100 MB whatever N is.
_BLOCK_ELEMENTS = 1 << 22

# Neighbour counts of the papers that define the manifold metrics, used by image_scores.
_PR_K = 3
_DC_K = 5


# --------------------------------------------------------------------------- validation


def _features(x: Any, name: str, min_points: int) -> np.ndarray:
    """``x`` as a finite float64 (N, D) array with N >= min_points, or a ValueError naming ``name``."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = (x.double() if x.is_floating_point() else x).numpy()  # numpy has no bfloat16
    try:
        array = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} features must be numeric, got {type(x).__name__} ({exc})") from None
    if array.ndim != 2:
        raise ValueError(f"{name} features must be a 2-D array (N samples, D features), got shape {array.shape}")
    n, d = array.shape
    if d == 0:
        raise ValueError(f"{name} features have no columns: expected shape (N, D) with D >= 1")
    if n < min_points:
        raise ValueError(f"{name} features have {n} samples, expected at least {min_points}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} features contain NaN or infinite values, expected only finite numbers")
    return array


def _same_dim(a: np.ndarray, a_name: str, b: np.ndarray, b_name: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{a_name} features have D={a.shape[1]} but {b_name} features have D={b.shape[1]}, "
            "expected the same feature dimension"
        )


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


# --------------------------------------------------------------------------- distances


def _torch(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x))


def _blocks(queries: torch.Tensor, points: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
    """(start row, distances from queries[start:stop] to every point), one memory-bounded block at a time."""
    rows = max(1, _BLOCK_ELEMENTS // max(1, points.shape[0]))
    for start in range(0, queries.shape[0], rows):
        yield start, torch.cdist(queries[start : start + rows], points)


def _exact_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise ||a - b|| by subtraction: exactly 0 for identical rows, unlike the matmul form."""
    return torch.linalg.vector_norm(a - b, dim=-1)


def _nearest(queries: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of, and exact distance to, each query's nearest point."""
    q, p = _torch(queries), _torch(points)
    index = torch.empty(q.shape[0], dtype=torch.long)
    for start, d in _blocks(q, p):
        index[start : start + d.shape[0]] = d.argmin(dim=1)
    return index.numpy(), _exact_distances(q, p[index]).numpy()


def _knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """(N, k) distances from each point to its 1st..k-th nearest other point of the same set.

    Neighbours are found on matmul distances with the point itself masked out (so duplicates
    still count as neighbours at distance 0), then their distances are recomputed exactly.
    """
    t = _torch(x)
    radii = torch.empty(t.shape[0], k, dtype=torch.float64)
    for start, d in _blocks(t, t):
        rows = torch.arange(d.shape[0])
        d[rows, rows + start] = torch.inf
        index = d.topk(k, dim=1, largest=False).indices
        exact = _exact_distances(t[start : start + d.shape[0]].unsqueeze(1), t[index])
        radii[start : start + d.shape[0]] = exact.sort(dim=1).values
    return radii.numpy()


class _CrossCounts:
    """Everything the manifold metrics need from the real x fake distances, gathered in one pass.

    ``fake_in_real``: fake j lies in some real ball of radius ``real_pr``       (precision)
    ``real_in_fake``: real i lies in some fake ball of radius ``fake_pr``       (recall)
    ``density_hits``: number of real balls of radius ``real_dc`` holding fake j (density)
    ``real_covered``: real i's ball of radius ``real_dc`` holds some fake       (coverage)
    Any radius left as None skips its statistic.
    """

    def __init__(
        self,
        real: np.ndarray,
        fake: np.ndarray,
        *,
        real_pr: np.ndarray | None = None,
        fake_pr: np.ndarray | None = None,
        real_dc: np.ndarray | None = None,
    ) -> None:
        r, f = _torch(real), _torch(fake)
        n, m = r.shape[0], f.shape[0]
        self.fake_in_real = np.zeros(m, dtype=bool)
        self.real_in_fake = np.zeros(n, dtype=bool)
        self.density_hits = np.zeros(m, dtype=np.int64)
        self.real_covered = np.zeros(n, dtype=bool)
        r_pr = None if real_pr is None else _torch(real_pr)
        f_pr = None if fake_pr is None else _torch(fake_pr)
        r_dc = None if real_dc is None else _torch(real_dc)
        for start, d in _blocks(f, r):  # d[j, i] = ||fake_{start+j} - real_i||
            stop = start + d.shape[0]
            if r_pr is not None:
                self.fake_in_real[start:stop] = (d <= r_pr).any(dim=1).numpy()
            if f_pr is not None:
                self.real_in_fake |= (d <= f_pr[start:stop, None]).any(dim=0).numpy()
            if r_dc is not None:
                inside = d <= r_dc
                self.density_hits[start:stop] = inside.sum(dim=1).numpy()
                self.real_covered |= inside.any(dim=0).numpy()


# --------------------------------------------------------------------------- Fréchet distance


def frechet_from_stats(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """Fréchet (2-Wasserstein²) distance between N(mu1, sigma1) and N(mu2, sigma2).

    FD = ||mu1 - mu2||² + tr(S1) + tr(S2) - 2 tr((S1 S2)^½). The cross term is computed as
    tr((S1^½ S2 S1^½)^½): that matrix is symmetric positive semi-definite with the same
    eigenvalues as S1 S2, so two symmetric eigendecompositions (eigenvalues clipped at 0)
    replace scipy's complex ``sqrtm``, which returns imaginary parts and NaNs on the
    rank-deficient covariances that N < D features produce. The result is clipped at 0
    because rounding can leave identical distributions a hair below it.
    """
    m1 = np.asarray(mu1, dtype=np.float64)
    m2 = np.asarray(mu2, dtype=np.float64)
    s1 = np.asarray(sigma1, dtype=np.float64)
    s2 = np.asarray(sigma2, dtype=np.float64)
    if m1.ndim != 1 or m1.shape != m2.shape:
        raise ValueError(f"means must be 1-D vectors of one length, got shapes {m1.shape} and {m2.shape}")
    d = m1.shape[0]
    if s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"covariances must have shape ({d}, {d}) to match the means, got {s1.shape} and {s2.shape}")
    if not all(np.isfinite(x).all() for x in (m1, m2, s1, s2)):
        raise ValueError("means and covariances must be finite, got NaN or infinite values")
    s1 = (s1 + s1.T) / 2
    s2 = (s2 + s2.T) / 2
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    middle = root1 @ s2 @ root1
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    diff = m1 - m2
    fd = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * cross
    return max(float(fd), 0.0)


def _gaussian(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased (N - 1) covariance, as FID implementations fit them."""
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def frechet_distance(a: Any, b: Any) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` and ``b`` (FID on Inception features).

    Each set needs at least 2 samples for a covariance; see ``frechet_from_stats`` for the maths.
    """
    a = _features(a, "first", 2)
    b = _features(b, "second", 2)
    _same_dim(a, "first", b, "second")
    return frechet_from_stats(*_gaussian(a), *_gaussian(b))


# --------------------------------------------------------------------------- KID


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with the cubic polynomial kernel k(x, y) = (x·y / D + 1)³ (Bińkowski et al. 2018)."""
    m, d = x.shape
    k_xx = (x @ x.T / d + 1.0) ** 3
    k_yy = (y @ y.T / d + 1.0) ** 3
    k_xy = (x @ y.T / d + 1.0) ** 3
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.sum() / (m * m))


def kid(a: Any, b: Any, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Kernel inception distance: (mean, standard error) of the unbiased MMD² over random subsets.

    Each of ``subsets`` draws takes min(subset_size, len(a), len(b)) rows of each set without
    replacement, from ``numpy.random.default_rng(seed)``, so a run is reproducible. Subsets
    bound the cost (three m x m kernel matrices each) and give an error bar: the standard
    error is std(ddof=1) / sqrt(subsets), NaN for a single subset. It measures how much the
    average would move with other subsets of these samples; it also covers the move to other
    samples only when subsets seldom share rows (subsets x subset_size up to about N), and
    understates it when they overlap heavily. The estimator is unbiased, so values near 0
    can be negative.
    """
    a = _features(a, "first", 2)
    b = _features(b, "second", 2)
    _same_dim(a, "first", b, "second")
    if isinstance(subsets, bool) or not isinstance(subsets, (int, np.integer)) or subsets < 1:
        raise ValueError(f"subsets must be a positive integer, got {subsets!r}")
    if isinstance(subset_size, bool) or not isinstance(subset_size, (int, np.integer)) or subset_size < 2:
        raise ValueError(f"subset_size must be an integer >= 2, got {subset_size!r}")
    m = min(int(subset_size), a.shape[0], b.shape[0])
    rng = np.random.default_rng(seed)
    values = np.empty(int(subsets))
    for s in range(int(subsets)):
        x = a[rng.choice(a.shape[0], m, replace=False)]
        y = b[rng.choice(b.shape[0], m, replace=False)]
        values[s] = _mmd2_unbiased(x, y)
    se = float(values.std(ddof=1) / np.sqrt(subsets)) if subsets > 1 else float("nan")
    return float(values.mean()), se


# --------------------------------------------------------------------------- manifold metrics


def precision_recall(real: Any, fake: Any, k: int = _PR_K) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019).

    Each set's manifold is the union of balls around its points, each ball's radius the
    distance to the point's k-th nearest neighbour in its own set (itself excluded).
    Precision is the share of fake samples inside the real manifold (fidelity); recall is the
    share of real samples inside the fake manifold (diversity). Each set needs k + 1 samples.
    """
    _check_k(k)
    real = _features(real, "real", k + 1)
    fake = _features(fake, "fake", k + 1)
    _same_dim(real, "real", fake, "fake")
    counts = _CrossCounts(
        real, fake, real_pr=_knn_radii(real, k)[:, -1], fake_pr=_knn_radii(fake, k)[:, -1]
    )
    return float(counts.fake_in_real.mean()), float(counts.real_in_fake.mean())


def density_coverage(real: Any, fake: Any, k: int = _DC_K) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020), built on the real manifold only.

    Density = mean over fake samples of (number of real k-NN balls holding it) / k: about 1
    when fake matches real, above 1 when fakes crowd into dense regions, and, unlike
    precision, not fooled by real outliers with huge balls. Coverage = share of real samples
    whose ball holds at least one fake: the share of modes the generator reaches, robust to
    fake outliers that inflate recall. The real set needs k + 1 samples, the fake set one.
    """
    _check_k(k)
    real = _features(real, "real", k + 1)
    fake = _features(fake, "fake", 1)
    _same_dim(real, "real", fake, "fake")
    counts = _CrossCounts(real, fake, real_dc=_knn_radii(real, k)[:, -1])
    return float(counts.density_hits.mean() / k), float(counts.real_covered.mean())


def memorisation(train: Any, fake: Any) -> float:
    """Share of generated samples that look copied from the training set.

    A fake sample counts as memorised when it is at least as close to its nearest training
    item as that item is to its own nearest other training item: it sits inside the gap
    that separates training items from one another, where an independent sample rarely
    lands. This is the authenticity test of Alaa et al. 2022 ("How faithful is your
    synthetic data?"), inverted: memorisation = 1 - authenticity. Exact copies score 1 even
    when the training set holds duplicates, because both distances are recomputed directly
    rather than through matrix products.

    The score of an honest generator is not 0 and falls with the intrinsic dimension: an
    independent sample from the training distribution scores about 0.65 in 2-D and about
    0.2 in 32-D. Read it against ``memorisation(train, held_out_real)``, not against 0.
    """
    train = _features(train, "train", 2)
    fake = _features(fake, "fake", 1)
    _same_dim(train, "train", fake, "fake")
    gap = _knn_radii(train, 1)[:, 0]
    index, distance = _nearest(fake, train)
    return float((distance <= gap[index]).mean())


# --------------------------------------------------------------------------- all at once


def image_scores(
    reference: Any,
    fake: Any,
    train: Any = None,
    *,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """Every image metric of a fake feature set against a reference set, in one call.

    Keys: "fd", "kid", "kid_se", "precision", "recall" (k=3), "density", "coverage" (k=5),
    and "memorisation" when ``train`` features are given. Inputs are validated up front so a
    bad array fails before minutes of work, and the real x fake distances are computed once
    for all four manifold metrics. The reference set needs 6 samples, the fake set 4.
    """
    reference = _features(reference, "reference", _DC_K + 1)
    fake = _features(fake, "fake", _PR_K + 1)
    _same_dim(reference, "reference", fake, "fake")
    if train is not None:
        train = _features(train, "train", 2)
        _same_dim(train, "train", fake, "fake")

    kid_mean, kid_se = kid(reference, fake, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)
    real_radii = _knn_radii(reference, max(_PR_K, _DC_K))
    counts = _CrossCounts(
        reference,
        fake,
        real_pr=real_radii[:, _PR_K - 1],
        fake_pr=_knn_radii(fake, _PR_K)[:, -1],
        real_dc=real_radii[:, _DC_K - 1],
    )
    scores = {
        "fd": frechet_from_stats(*_gaussian(reference), *_gaussian(fake)),
        "kid": kid_mean,
        "kid_se": kid_se,
        "precision": float(counts.fake_in_real.mean()),
        "recall": float(counts.real_in_fake.mean()),
        "density": float(counts.density_hits.mean() / _DC_K),
        "coverage": float(counts.real_covered.mean()),
    }
    if train is not None:
        scores["memorisation"] = memorisation(train, fake)
    return scores
