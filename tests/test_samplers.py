"""Diffusion samplers and sampling schedules, checked against maths rather than a trained network.

For Gaussian data x0 ~ N(mu, S) the optimal denoiser is exact and linear,
D(x, sigma) = mu + S (S + sigma^2 I)^-1 (x - mu), and so is the probability-flow ODE; a sampler fed
this denoiser must reproduce N(mu, S) up to its own discretisation error. A mixture of two Gaussians
adds a nonlinear denoiser (responsibility-weighted per-component posterior means).
Computations are in float64, except where float32 is what a test is about.
"""

from __future__ import annotations

import math

import pytest
import torch

from genforge.errors import ConfigError
from genforge.sampling.diffusion import (
    SAMPLERS,
    denoiser_calls,
    guided,
    invert_ddim,
    sample,
    sample_ddim,
    sample_ddpm,
    sample_euler,
)
from genforge.sampling.schedules import (
    SPACINGS,
    make_alphas_cumprod,
    sampling_sigmas,
    sigma_to_timestep,
    sigmas_from_alphas_cumprod,
)

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64
T = 1000
ABAR = make_alphas_cumprod("linear", T)
TRAIN_SIGMAS = sigmas_from_alphas_cumprod(ABAR)
N = 10_000  # samples where Monte Carlo noise matters (DDPM, the mixture); 20k doubles DDPM's 2 s for little
N_EXACT = 4_000  # enough for deterministic samplers on Gaussian data, see standard_normal
STEP_COUNTS = (10, 50, 250)


class Gaussian:
    """x0 ~ N(mu, S) in 3 dimensions, with a full covariance (eigenvalues 0.14, 0.69, 1.67)."""

    def __init__(self, mu: torch.Tensor, chol: torch.Tensor):
        self.mu = mu
        self.cov = chol @ chol.T
        self.eigvals, self.eigvecs = torch.linalg.eigh(self.cov)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        shrink = (self.eigvecs * (self.eigvals / (self.eigvals + sigma[0] ** 2))) @ self.eigvecs.T
        return self.mu + (x - self.mu) @ shrink.T

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.mu + torch.randn(n, 3, generator=generator, dtype=F64) @ torch.linalg.cholesky(self.cov).T


GAUSSIAN = Gaussian(
    torch.tensor([1.0, -0.5, 0.3], dtype=F64),
    torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [-0.4, 0.3, 0.5]], dtype=F64),
)


class Mixture:
    """Two Gaussians with weights w: D is sum_k r_k(x) (mu_k + S_k (S_k + sigma^2 I)^-1 (x - mu_k)), where
    r_k(x) is proportional to w_k N(x; mu_k, S_k + sigma^2 I)."""

    def __init__(self, weights, components: list[Gaussian]):
        self.log_weights = torch.tensor(weights, dtype=F64).log()
        self.components = components

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        logits, means = [], []
        for log_w, c in zip(self.log_weights, self.components):
            var = c.eigvals + sigma[0] ** 2
            y = (x - c.mu) @ c.eigvecs  # coordinates in the component's eigenbasis
            logits.append(log_w - 0.5 * (y**2 / var).sum(1) - 0.5 * var.log().sum())
            means.append(c.mu + (y * (c.eigvals / var)) @ c.eigvecs.T)
        r = torch.stack(logits, 1).softmax(1)
        return (r[:, 0:1] * means[0]) + (r[:, 1:2] * means[1])

    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the component each point is nearest to, in that component's Mahalanobis distance."""
        dist = [(((x - c.mu) @ c.eigvecs) ** 2 / c.eigvals).sum(1) for c in self.components]
        return torch.stack(dist, 1).argmin(1)


MIXTURE = Mixture(
    [0.3, 0.7],
    [
        Gaussian(torch.tensor([-2.0, 1.0, 0.0], dtype=F64), 0.4 * torch.eye(3, dtype=F64)),
        Gaussian(
            torch.tensor([2.0, 0.0, -1.0], dtype=F64),
            torch.tensor([[0.5, 0.0, 0.0], [0.2, 0.3, 0.0], [0.0, 0.1, 0.4]], dtype=F64),
        ),
    ],
)


def standard_normal(n: int, seed: int) -> torch.Tensor:
    """n points with sample mean exactly 0 and sample covariance exactly I: a deterministic sampler is
    affine on Gaussian data, so its output moments are then exact and the errors below are the sampler's
    alone, free of Monte Carlo noise."""
    z = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=F64)
    z = z - z.mean(0)
    return z @ torch.linalg.inv(torch.linalg.cholesky(z.T @ z / n)).T


def prior(sigmas: torch.Tensor, n: int = N_EXACT, seed: int = 0) -> torch.Tensor:
    """The VP prior N(0, I) scaled into the VE view at sigmas[0]: what a model starts from. Its mean 0
    (not mu) leaves a bias of about S^(1/2) mu / sigma_max, 0.004 here, that no step count removes."""
    return (1 + sigmas[0] ** 2).sqrt() * standard_normal(n, seed)


def moment_errors(x: torch.Tensor, target: Gaussian) -> tuple[float, float]:
    """(|mean - mu|, |cov - S|_F / |S|_F)."""
    cov = torch.cov(x.T, correction=0)
    return float((x.mean(0) - target.mu).norm()), float((cov - target.cov).norm() / target.cov.norm())


# --- schedules -----------------------------------------------------------------------------------


def test_trailing_with_every_step_is_every_training_sigma():
    sigmas = sampling_sigmas(ABAR, T, "trailing")
    assert sigmas.dtype == F64
    assert torch.equal(sigmas, torch.cat([TRAIN_SIGMAS.flip(0), torch.zeros(1, dtype=F64)]))


def test_trailing_and_uniform_visit_the_documented_timesteps():
    assert torch.equal(sampling_sigmas(ABAR, 10, "trailing")[:-1], TRAIN_SIGMAS[torch.arange(999, 0, -100)])
    assert torch.equal(sampling_sigmas(ABAR, 10, "uniform")[:-1], TRAIN_SIGMAS[torch.arange(900, -1, -100)])
    # round(1000 - i * 1000/3) - 1
    assert torch.equal(sampling_sigmas(ABAR, 3, "trailing")[:-1], TRAIN_SIGMAS[torch.tensor([999, 666, 332])])


def test_karras_spans_the_schedule_off_the_grid():
    sigmas = sampling_sigmas(ABAR, 10, "karras", rho=7.0)
    assert sigmas[0].item() == pytest.approx(TRAIN_SIGMAS.max().item(), rel=1e-12)
    assert sigmas[-2].item() == pytest.approx(TRAIN_SIGMAS.min().item(), rel=1e-12)
    # evenly spaced in sigma^(1/rho)
    root = sigmas[:-1] ** (1 / 7)
    assert torch.allclose(root.diff(), root.diff()[0].expand(9), rtol=1e-9)
    one = sampling_sigmas(ABAR, 1, "karras")
    assert one[0].item() == pytest.approx(TRAIN_SIGMAS.max().item(), rel=1e-12) and one[1] == 0


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("steps", [1, 2, 7, 333, T])
def test_sigmas_descend_strictly_to_exactly_zero(spacing, steps):
    sigmas = sampling_sigmas(ABAR, steps, spacing)
    assert sigmas.shape == (steps + 1,) and sigmas.dtype == F64
    assert (sigmas.diff() < 0).all()
    assert sigmas[-1].item() == 0.0


def test_bad_schedule_inputs_raise_config_errors():
    with pytest.raises(ConfigError, match="trailing, uniform, karras"):
        sampling_sigmas(ABAR, 10, "leading")
    for steps in (0, T + 1):
        with pytest.raises(ConfigError, match=f"between 1 and {T}"):
            sampling_sigmas(ABAR, steps)
    with pytest.raises(ConfigError, match="rho"):
        sampling_sigmas(ABAR, 10, "karras", rho=0.0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sigma_to_timestep_is_exact_on_the_grid(dtype):
    # the family keeps a float32 copy of abar; the same copy must give exact steps back
    abar = ABAR.to(dtype)
    grid = sigmas_from_alphas_cumprod(abar.double()).to(dtype)
    assert torch.equal(sigma_to_timestep(grid, abar), torch.arange(T, dtype=dtype))


def test_sigma_to_timestep_interpolates_log_sigma_monotonically():
    mid = (TRAIN_SIGMAS[:-1] * TRAIN_SIGMAS[1:]).sqrt()  # geometric midpoints
    assert torch.allclose(sigma_to_timestep(mid, ABAR), torch.arange(T - 1, dtype=F64) + 0.5, atol=1e-9)
    dense = torch.logspace(-3, 3, 5000, dtype=F64)
    t = sigma_to_timestep(dense, ABAR)
    inside = (dense > TRAIN_SIGMAS[0]) & (dense < TRAIN_SIGMAS[-1])
    assert (t[inside].diff() > 0).all() and (t.diff() >= 0).all()
    assert t[0] == 0 and t[-1] == T - 1  # clamped outside the schedule
    assert sigma_to_timestep(torch.zeros(2, dtype=F64), ABAR).tolist() == [0.0, 0.0]
    top = {"trailing": T - 1, "karras": T - 1, "uniform": 16 * (T // 17)}
    for spacing in SPACINGS:  # the levels a sampler visits map back onto the training range
        t = sigma_to_timestep(sampling_sigmas(ABAR, 17, spacing), ABAR)
        assert t.min() == 0 and t.max().item() == pytest.approx(top[spacing], abs=1e-9)


# --- convergence on Gaussian data ----------------------------------------------------------------


@pytest.fixture(scope="module")
def gaussian_errors(one_thread) -> dict[tuple[str, str, int], tuple[float, float]]:
    """(mean error, relative covariance error) per (sampler, spacing, steps), from N samples for DDPM and
    N_EXACT moment-matched ones for the deterministic samplers (their errors are then exact).

    Measured (mean / cov), steps 10, 50, 250:
      ddpm      trailing .019/.453  .005/.133  .019/.028   uniform .016/.454 .005/.133 .019/.028
                karras   .015/.633  .008/.203  .022/.047
      ddim      trailing .003/.296  .004/.068  .004/.014   uniform .009/.293 .005/.067 .004/.014
      (=euler)  karras   .003/.445  .004/.103  .004/.021
      heun      trailing .004/.044  .004/.0031 .004/.0004  uniform .012/.095 .005/.0032 .004/.00003
                karras   .005/.412  .004/.011  .004/.0003
      dpmpp_2m  trailing .004/.083  .004/.0052 .004/.0002  uniform .014/.575 .005/.031 .004/.0010
                karras   .005/.283  .004/.011  .004/.0003
    The mean error's floor (.004) is the VP prior's bias (see ``prior``). DDPM's errors include Monte Carlo
    noise from the noise it injects: about .016 in the mean and .015 in the covariance at N = 10k.
    """
    errors = {}
    for name in SAMPLERS:
        for spacing in SPACINGS:
            for steps in STEP_COUNTS:
                sigmas = sampling_sigmas(ABAR, steps, spacing)
                x = prior(sigmas, n=N if name == "ddpm" else N_EXACT)
                out = sample(name, GAUSSIAN.denoise, x, sigmas, generator=torch.Generator().manual_seed(1))
                errors[name, spacing, steps] = moment_errors(out, GAUSSIAN)
    return errors


# largest allowed (mean error, covariance error) at 250 steps, 2-5x the measured worst spacing
TIGHT = {
    "ddpm": (0.04, 0.08),
    "ddim": (0.01, 0.04),
    "euler": (0.01, 0.04),
    "heun": (0.01, 0.002),
    "dpmpp_2m": (0.01, 0.003),
}
# what sampling noise may add to an error between step counts (none without injected noise)
SLACK = {"ddpm": 0.03}


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("spacing", SPACINGS)
def test_samplers_recover_gaussian_moments(gaussian_errors, name, spacing):
    mean_err, cov_err = zip(*(gaussian_errors[name, spacing, steps] for steps in STEP_COUNTS))
    slack = SLACK.get(name, 1e-3)
    # on this data every sampler is affine in x - mu, so the mean's error is that map applied to the
    # prior's offset -mu: small (order 1/sigma_max) at any step count. The covariance carries the
    # discretisation error, which must shrink.
    assert max(mean_err) < 0.02 + slack, mean_err
    assert cov_err[1] <= cov_err[0] + slack and cov_err[2] <= cov_err[1] + slack, cov_err
    assert cov_err[2] <= cov_err[0] / 4, cov_err
    assert mean_err[2] < TIGHT[name][0] and cov_err[2] < TIGHT[name][1], (mean_err, cov_err)


@pytest.mark.parametrize("name", ["heun", "dpmpp_2m"])
def test_second_order_samplers_beat_euler(gaussian_errors, name):
    def cov(sampler, spacing, steps):
        return gaussian_errors[sampler, spacing, steps][1]

    # measured at 10 trailing steps: heun .044, dpmpp_2m .083 against euler .296;
    # at 50 steps (trailing, karras): heun .0031/.011, dpmpp_2m .0052/.011 against euler .068/.103
    assert cov(name, "trailing", 10) < cov("euler", "trailing", 10) / 3
    for spacing in ("trailing", "karras"):
        assert cov(name, spacing, 50) < cov("euler", spacing, 50) / 5
    for spacing in SPACINGS:
        assert cov(name, spacing, 250) < cov("euler", spacing, 250) / 10
    # not asserted: at 10 uniform steps dpmpp_2m (.575) is worse than euler (.293), because the last
    # nonzero step is 3.5 units of lambda after one of 0.75, and extrapolating the x0 estimate that
    # far overshoots. Trailing spacing avoids it.


# at about 50 network evaluations each (Heun: 25 steps), the largest relative covariance error allowed within
# a component; measured (component 0, component 1): ddim .11/.09, heun .08/.06, dpmpp_2m .03/.02, ddpm .23/.20
MIXTURE_COV_TOL = {"ddim": 0.15, "heun": 0.12, "dpmpp_2m": 0.04, "ddpm": 0.35}


@pytest.mark.parametrize("name", list(MIXTURE_COV_TOL))
def test_samplers_recover_a_mixture(name):
    target, n = MIXTURE, N
    sigmas = sampling_sigmas(ABAR, 25 if name == "heun" else 50)
    out = sample(name, target.denoise, prior(sigmas, n), sigmas, generator=torch.Generator().manual_seed(2))
    nearest = target.nearest(out)
    # binomial std of the weight: sqrt(.21 / 10000) = .005; measured .293 (ddim) to .297 (ddpm)
    assert (nearest == 0).double().mean().item() == pytest.approx(0.3, abs=0.02)
    mean = sum(w * c.mu for w, c in zip(target.log_weights.exp(), target.components))
    assert (out.mean(0) - mean).norm() < 0.04  # measured .008 (ddpm) to .020 (ddim)
    for k, c in enumerate(target.components):  # each component keeps its own place and shape
        own = out[nearest == k]
        assert (own.mean(0) - c.mu).norm() < 0.06
        assert (torch.cov(own.T) - c.cov).norm() / c.cov.norm() < MIXTURE_COV_TOL[name]


# --- identities between samplers -----------------------------------------------------------------


def ddim_vp_reference(denoise, x_ve, sigmas, eta, generator):
    """DDIM as written in Song et al. 2021, in VP coordinates x_vp = x_ve / sqrt(1 + sigma^2):
    x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - s^2) eps + s z,
    s = eta sqrt((1 - abar_prev) / (1 - abar) (1 - abar / abar_prev))."""
    abar = 1 / (1 + sigmas**2)
    x = x_ve * abar[0].sqrt()
    for a, a_prev, sigma in zip(abar[:-1], abar[1:], sigmas[:-1]):
        x0 = denoise(x / a.sqrt(), sigma.expand(x.shape[0]))
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        s = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev - s**2).sqrt() * eps
        if s > 0:
            x = x + s * torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return x  # abar is 1 at the end: VP and VE coincide


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("spacing", SPACINGS)
def test_ve_ddim_equals_vp_ddim(eta, spacing):
    sigmas = sampling_sigmas(ABAR, 20, spacing)
    x = prior(sigmas, n=256)
    ours = sample_ddim(GAUSSIAN.denoise, x, sigmas, eta, torch.Generator().manual_seed(3))
    reference = ddim_vp_reference(GAUSSIAN.denoise, x, sigmas, eta, torch.Generator().manual_seed(3))
    assert torch.allclose(ours, reference, rtol=0, atol=1e-10)


@pytest.mark.parametrize("spacing", SPACINGS)
def test_euler_is_ddim_without_noise(spacing):
    sigmas = sampling_sigmas(ABAR, 30, spacing)
    x = prior(sigmas, n=512)
    euler, ddim = sample_euler(MIXTURE.denoise, x, sigmas), sample_ddim(MIXTURE.denoise, x, sigmas)
    assert torch.allclose(euler, ddim, rtol=0, atol=1e-10)


def test_ddpm_is_ddim_with_full_noise_bitwise():
    sigmas = sampling_sigmas(ABAR, 25)
    x = prior(sigmas, n=512)
    ddpm = sample_ddpm(MIXTURE.denoise, x, sigmas, generator=torch.Generator().manual_seed(5))
    ddim = sample_ddim(MIXTURE.denoise, x, sigmas, eta=1.0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(ddpm, ddim)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_same_generator_state_same_samples(name):
    sigmas = sampling_sigmas(ABAR, 8)
    x = prior(sigmas, n=64)
    runs = [sample(name, MIXTURE.denoise, x, sigmas, generator=torch.Generator().manual_seed(s)) for s in (6, 6, 7)]
    assert torch.equal(runs[0], runs[1])
    assert torch.equal(runs[0], runs[2]) == (name != "ddpm")  # only the stochastic sampler uses the seed
    assert torch.equal(x, prior(sigmas, n=64))  # the input is not modified in place


@pytest.mark.parametrize("spacing", SPACINGS)
def test_ddim_inversion_round_trips(spacing):
    data = GAUSSIAN.sample(2000, torch.Generator().manual_seed(8))
    errors = []
    for steps in STEP_COUNTS:
        sigmas = sampling_sigmas(ABAR, steps, spacing)
        latent = invert_ddim(GAUSSIAN.denoise, data, sigmas)
        errors.append(((sample_ddim(GAUSSIAN.denoise, latent, sigmas) - data) ** 2).mean().sqrt().item())
    # inversion is first order: RMS round-trip error measured .29/.069/.014 (trailing), .41/.096/.020 (karras)
    assert errors[1] < errors[0] / 3 and errors[2] < errors[1] / 3, errors
    assert errors[2] < 0.03, errors
    # and the latent has the data's marginal at sigma_max, std sqrt(S_ii + sigma_max^2): measured within 2%
    assert torch.allclose(latent.std(0), (GAUSSIAN.cov.diag() + sigmas[0] ** 2).sqrt(), rtol=0.04)


# --- guidance, dispatch, costs, shapes -----------------------------------------------------------


def test_guidance_endpoints_are_exact():
    g = torch.Generator().manual_seed(9)
    cond, uncond = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    calls = []

    def pair(x, sigma):
        calls.append(x.shape)
        return cond, uncond

    x, sigma = torch.zeros(4, 3), torch.full((4,), 2.0)
    assert torch.equal(guided(pair, 0.0)(x, sigma), uncond)
    assert torch.equal(guided(pair, 1.0)(x, sigma), cond)
    assert torch.allclose(guided(pair, 3.0)(x, sigma), uncond + 3 * (cond - uncond))
    assert len(calls) == 3  # one call per evaluation, both halves together


def test_guided_denoiser_drives_a_sampler():
    # conditional: the Gaussian; unconditional: the same shifted by -1; scale 2 targets mu + 1
    # (the guided estimate is then the posterior mean of N(mu + 1, S), exactly)
    shifted = Gaussian(GAUSSIAN.mu - 1, torch.linalg.cholesky(GAUSSIAN.cov))
    target = Gaussian(GAUSSIAN.mu + 1, torch.linalg.cholesky(GAUSSIAN.cov))
    sigmas = sampling_sigmas(ABAR, 50)
    denoise = guided(lambda x, s: (GAUSSIAN.denoise(x, s), shifted.denoise(x, s)), 2.0)
    out = sample("heun", denoise, prior(sigmas), sigmas)
    mean_err, cov_err = moment_errors(out, target)
    assert mean_err < 0.02 and cov_err < 0.01  # measured .013 (the prior's bias, larger with mu + 1), .003


def test_sample_dispatch_and_errors():
    sigmas = sampling_sigmas(ABAR, 5)
    x = prior(sigmas, n=32)
    assert torch.equal(sample("ddim", GAUSSIAN.denoise, x, sigmas, eta=0.0), sample_ddim(GAUSSIAN.denoise, x, sigmas))
    with pytest.raises(ConfigError, match="ddpm, ddim, euler, heun, dpmpp_2m"):
        sample("plms", GAUSSIAN.denoise, x, sigmas)
    with pytest.raises(ConfigError, match="takes no eta"):
        sample("heun", GAUSSIAN.denoise, x, sigmas, eta=0.5)
    for eta in (-0.1, 1.5, math.nan):
        with pytest.raises(ConfigError, match="eta must be in"):
            sample("ddim", GAUSSIAN.denoise, x, sigmas, eta=eta)
    with pytest.raises(ConfigError, match="unknown sampler"):
        denoiser_calls("plms", 10)
    with pytest.raises(ConfigError, match="at least 1"):
        denoiser_calls("euler", 0)


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("steps", [1, 2, 7])
def test_denoiser_calls_counts_network_evaluations(name, steps):
    calls = []

    def denoise(x, sigma):
        calls.append(sigma[0].item())
        return GAUSSIAN.denoise(x, sigma)

    sigmas = sampling_sigmas(ABAR, steps)
    sample(name, denoise, prior(sigmas, n=8), sigmas, generator=torch.Generator().manual_seed(0))
    assert len(calls) == denoiser_calls(name, steps)
    assert 0.0 not in calls  # the network is never asked about sigma 0


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_image_batches_keep_shape_dtype_and_sigma_contract(name):
    seen = []

    def denoise(x, sigma):  # optimal for pixels ~ N(0, 1)
        seen.append((sigma.shape, sigma.dtype, bool((sigma == sigma[0]).all())))
        return x / (1 + sigma[:, None, None, None] ** 2)

    sigmas = sampling_sigmas(ABAR, 4, "karras")
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * (1 + sigmas[0].item() ** 2) ** 0.5
    out = sample(name, denoise, x, sigmas, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert set(seen) == {(torch.Size([2]), torch.float32, True)}
