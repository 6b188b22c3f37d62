"""Image metrics on toy feature sets whose right answers are known in closed form or by construction."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from genforge.evaluate.image_metrics import (
    density_coverage,
    frechet_distance,
    frechet_from_stats,
    image_scores,
    kid,
    memorisation,
    precision_recall,
)

pytestmark = pytest.mark.usefixtures("one_thread")

FAR = 50.0  # modes this far apart in unit-variance Gaussians never share a k-NN ball


def gaussian(seed: int, n: int, d: int, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)) + shift


# --------------------------------------------------------------------------- Fréchet distance


def test_fd_of_a_set_with_itself_is_zero():
    a = gaussian(0, 500, 16) * 3 + 1
    scale = np.trace(np.cov(a, rowvar=False))
    assert abs(frechet_distance(a, a)) < 1e-6 * scale


def test_frechet_from_stats_matches_the_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    var1, var2 = rng.uniform(0.1, 4, size=6), rng.uniform(0.1, 4, size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))
    assert frechet_from_stats(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, rel=1e-10)


def test_frechet_from_stats_matches_scipy_sqrtm_on_full_covariances():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = a @ a.T + 0.1 * np.eye(5), b @ b.T + 0.1 * np.eye(5)  # well conditioned: sqrtm is reliable here
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    cross = np.trace(scipy_linalg.sqrtm(s1 @ s2)).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * cross
    assert frechet_from_stats(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_fd_fits_mean_and_unbiased_covariance_and_approaches_the_population_value():
    a = gaussian(3, 20_000, 4) * np.array([1.0, 2.0, 0.5, 1.0])
    b = gaussian(4, 20_000, 4) + np.array([2.0, 0.0, 0.0, 0.0])
    fitted = frechet_from_stats(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert frechet_distance(a, b) == pytest.approx(fitted, rel=1e-12)
    # population: ||mu1 - mu2||² + sum (s1 + s2 - 2 sqrt(s1 s2)) over the stds' squares
    var_a = np.array([1.0, 4.0, 0.25, 1.0])
    population = 4.0 + np.sum(var_a + 1 - 2 * np.sqrt(var_a))
    assert frechet_distance(a, b) == pytest.approx(population, rel=0.05)


def test_fd_is_symmetric():
    a, b = gaussian(5, 300, 12), gaussian(6, 200, 12) * 2 + 0.5
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)


def test_fd_is_stable_on_rank_deficient_covariances():
    a, b = gaussian(7, 10, 64), gaussian(8, 12, 64) + 0.3  # N < D: both covariances singular
    fd = frechet_distance(a, b)
    assert math.isfinite(fd) and fd > 0
    assert frechet_distance(a, a) < 1e-6 * np.trace(np.cov(a, rowvar=False))


@settings(max_examples=60, deadline=None)
@given(
    st.integers(2, 10).flatmap(
        lambda d: st.tuples(
            arrays(np.float64, st.tuples(st.integers(2, 12), st.just(d)), elements=st.floats(-100, 100)),
            arrays(np.float64, st.tuples(st.integers(2, 12), st.just(d)), elements=st.floats(-100, 100)),
        )
    )
)
def test_fd_is_non_negative_and_symmetric_on_arbitrary_arrays(pair):
    a, b = pair
    ab, ba = frechet_distance(a, b), frechet_distance(b, a)
    scale = 1 + np.trace(np.atleast_2d(np.cov(a, rowvar=False))) + np.trace(np.atleast_2d(np.cov(b, rowvar=False)))
    scale += np.sum((a.mean(0) - b.mean(0)) ** 2)
    assert ab >= 0 and ba >= 0
    assert abs(ab - ba) <= 1e-6 * scale


# --------------------------------------------------------------------------- KID


def test_kid_is_zero_within_its_error_for_one_distribution_and_large_for_a_shift():
    # subsets x subset_size ~ N: subsets seldom share rows, so the standard error covers sampling noise
    real = gaussian(10, 4000, 8)
    same_mean, same_se = kid(real, gaussian(11, 4000, 8), subsets=50, subset_size=100)
    assert abs(same_mean) < 3 * same_se
    assert abs(same_mean) < 0.01
    shifted_mean, shifted_se = kid(real, gaussian(12, 4000, 8, shift=0.5), subsets=50, subset_size=100)
    assert shifted_mean > 10 * shifted_se


def test_kid_of_a_set_with_itself_is_small_but_not_exactly_zero():
    a = gaussian(13, 1000, 8)
    mean, _ = kid(a, a, subsets=20, subset_size=200)
    assert mean != 0.0
    assert abs(mean) < 0.05


def test_kid_on_whole_sets_equals_the_unbiased_mmd_estimator_written_out():
    a, b = gaussian(14, 6, 3), gaussian(15, 6, 3, shift=0.7)

    def k(x, y):
        return (x @ y / 3 + 1) ** 3

    m = 6
    xx = sum(k(a[i], a[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(b[i], b[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(a[i], b[j]) for i in range(m) for j in range(m)) / (m * m)
    mean, se = kid(a, b, subsets=4, subset_size=1000)  # subset size capped at 6: every subset is the whole set
    assert mean == pytest.approx(xx + yy - 2 * xy, rel=1e-10)
    assert se == pytest.approx(0.0, abs=1e-12)


def test_kid_is_reproducible_with_a_seed():
    a, b = gaussian(16, 300, 4), gaussian(17, 300, 4)
    assert kid(a, b, subsets=5, subset_size=50, seed=3) == kid(a, b, subsets=5, subset_size=50, seed=3)
    assert kid(a, b, subsets=5, subset_size=50, seed=3) != kid(a, b, subsets=5, subset_size=50, seed=4)


# --------------------------------------------------------------------------- precision / recall


@pytest.fixture(scope="module")
def calibration():
    """Precision and recall of two independent samples of N(0, I) in 8-D: the best a perfect model scores."""
    real = gaussian(20, 1000, 8)
    fake = gaussian(21, 1000, 8)
    p0, r0 = precision_recall(real, fake)
    return real, fake, p0, r0


def test_precision_recall_of_one_distribution_are_high(calibration):
    _, _, p0, r0 = calibration
    assert p0 > 0.85 and r0 > 0.85


def test_precision_halves_when_half_the_fakes_are_off_the_real_manifold(calibration):
    real, _, p0, r0 = calibration
    fake = np.vstack([gaussian(22, 500, 8), gaussian(23, 500, 8, shift=FAR)])
    precision, recall = precision_recall(real, fake)
    assert precision == pytest.approx(0.5 * p0, abs=0.06)
    assert recall > 0.8


def test_recall_halves_when_the_fakes_miss_one_of_two_modes(calibration):
    real, fake, p0, r0 = calibration
    two_modes = np.vstack([real, gaussian(24, 1000, 8, shift=FAR)])
    precision, recall = precision_recall(two_modes, fake)
    assert recall == pytest.approx(0.5 * r0, abs=0.06)
    assert precision == pytest.approx(p0, abs=0.06)


def test_precision_recall_of_disjoint_sets_are_zero():
    assert precision_recall(gaussian(25, 200, 8), gaussian(26, 200, 8, shift=FAR)) == (0.0, 0.0)


# --------------------------------------------------------------------------- density / coverage


def test_density_is_near_one_and_coverage_high_for_one_distribution(calibration):
    real, fake, _, _ = calibration
    density, coverage = density_coverage(real, fake)
    assert density == pytest.approx(1.0, abs=0.1)
    assert coverage > 0.9  # 1 - 2^-k = 0.97 in expectation for equal set sizes


def test_coverage_halves_when_half_the_modes_are_missing(calibration):
    real, fake, _, _ = calibration
    _, full = density_coverage(real, fake)
    two_modes = np.vstack([real, gaussian(27, 1000, 8, shift=FAR)])
    density, coverage = density_coverage(two_modes, fake)
    assert coverage == pytest.approx(0.5, abs=0.06)
    assert coverage == pytest.approx(0.5 * full, abs=0.02)
    assert density == pytest.approx(1.0, abs=0.1)  # the fakes still sit where real samples are


def test_density_and_coverage_of_disjoint_sets_are_zero():
    assert density_coverage(gaussian(28, 200, 8), gaussian(29, 100, 8, shift=FAR)) == (0.0, 0.0)


# --------------------------------------------------------------------------- memorisation


def test_memorisation_of_exact_copies_is_one():
    train = gaussian(30, 500, 32)
    assert memorisation(train, train[::2].copy()) == 1.0


def test_memorisation_counts_copies_of_duplicated_training_items():
    train = gaussian(31, 200, 16)
    train = np.vstack([train, train[:50]])  # 50 items appear twice: their nearest other item is at distance 0
    assert memorisation(train, train[:50].copy()) == 1.0


def test_memorisation_of_independent_samples_is_lower():
    train = gaussian(32, 1000, 32)
    assert memorisation(train, gaussian(33, 500, 32)) < 0.5


def test_memorisation_of_far_samples_is_zero():
    assert memorisation(gaussian(34, 300, 32), gaussian(35, 100, 32, shift=FAR)) == 0.0


# --------------------------------------------------------------------------- image_scores


def test_image_scores_returns_every_metric_consistent_with_the_single_functions():
    real, fake, train = gaussian(40, 300, 8), gaussian(41, 250, 8, shift=0.2), gaussian(42, 200, 8)
    scores = image_scores(real, fake, train, kid_subsets=10, kid_subset_size=100, seed=5)
    assert list(scores) == ["fd", "kid", "kid_se", "precision", "recall", "density", "coverage", "memorisation"]
    assert all(isinstance(v, float) for v in scores.values())
    assert scores["fd"] == pytest.approx(frechet_distance(real, fake), rel=1e-12)
    assert (scores["kid"], scores["kid_se"]) == kid(real, fake, subsets=10, subset_size=100, seed=5)
    assert (scores["precision"], scores["recall"]) == precision_recall(real, fake, k=3)
    assert (scores["density"], scores["coverage"]) == density_coverage(real, fake, k=5)
    assert scores["memorisation"] == memorisation(train, fake)
    assert "memorisation" not in image_scores(real, fake, kid_subsets=2, kid_subset_size=50)


def test_torch_tensors_and_numpy_arrays_give_the_same_scores():
    real, fake = gaussian(43, 100, 8), gaussian(44, 100, 8)
    from_numpy = image_scores(real, fake, kid_subsets=3, kid_subset_size=50)
    from_torch = image_scores(torch.from_numpy(real), torch.from_numpy(fake), kid_subsets=3, kid_subset_size=50)
    assert from_numpy == from_torch
    half = torch.from_numpy(real).bfloat16()
    assert frechet_distance(half, half.double()) == pytest.approx(0.0, abs=1e-9)


# --------------------------------------------------------------------------- bad input

GOOD = np.random.default_rng(50).standard_normal((20, 4))


def _with_nan() -> np.ndarray:
    bad = GOOD.copy()
    bad[3, 2] = np.nan
    return bad


BAD_INPUTS = [
    pytest.param(GOOD[:, 0], GOOD, "2-D array", id="1-D"),
    pytest.param(GOOD, GOOD[:, :3], "D=4 .* D=3", id="mismatched-D"),
    pytest.param(_with_nan(), GOOD, "NaN or infinite", id="NaN"),
    pytest.param(GOOD[:1], GOOD, "1 samples, expected at least", id="too-few"),
    pytest.param(np.empty((20, 0)), np.empty((20, 0)), "no columns", id="no-features"),
    pytest.param([["a", "b"], ["c", "d"]], GOOD, "numeric", id="strings"),
]

ALL_FUNCTIONS = [
    pytest.param(frechet_distance, id="fd"),
    pytest.param(lambda a, b: kid(a, b, subsets=2, subset_size=5), id="kid"),
    pytest.param(precision_recall, id="precision_recall"),
    pytest.param(density_coverage, id="density_coverage"),
    pytest.param(memorisation, id="memorisation"),
    pytest.param(lambda a, b: image_scores(a, b, kid_subsets=2, kid_subset_size=5), id="image_scores"),
]


@pytest.mark.parametrize("function", ALL_FUNCTIONS)
@pytest.mark.parametrize(("a", "b", "message"), BAD_INPUTS)
def test_bad_input_raises_a_value_error_that_names_the_problem(function, a, b, message):
    with pytest.raises(ValueError, match=message):
        function(a, b)


def test_manifold_metrics_need_k_plus_one_points():
    with pytest.raises(ValueError, match="fake features have 3 samples, expected at least 4"):
        precision_recall(GOOD, GOOD[:3], k=3)
    with pytest.raises(ValueError, match="real features have 5 samples, expected at least 6"):
        density_coverage(GOOD[:5], GOOD, k=5)
    with pytest.raises(ValueError, match="reference features have 5 samples, expected at least 6"):
        image_scores(GOOD[:5], GOOD)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        precision_recall(GOOD, GOOD, k=0)


def test_image_scores_checks_the_training_features_too():
    with pytest.raises(ValueError, match="train features have D=3 but fake features have D=4"):
        image_scores(GOOD, GOOD, GOOD[:, :3])


def test_frechet_from_stats_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="covariances must have shape"):
        frechet_from_stats(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))
    with pytest.raises(ValueError, match="means must be 1-D"):
        frechet_from_stats(np.zeros(3), np.eye(3), np.zeros(2), np.eye(3))


def test_results_do_not_depend_on_the_block_size(monkeypatch):
    from genforge.evaluate import image_metrics

    real, fake, train = gaussian(60, 120, 6), gaussian(61, 90, 6, shift=0.3), gaussian(62, 80, 6)
    whole = image_scores(real, fake, train, kid_subsets=3, kid_subset_size=40)
    monkeypatch.setattr(image_metrics, "_BLOCK_ELEMENTS", 7 * 120)  # blocks of a few rows, the last one short
    assert image_scores(real, fake, train, kid_subsets=3, kid_subset_size=40) == whole
