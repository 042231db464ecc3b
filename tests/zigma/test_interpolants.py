"""Paths, Transport (targets, conversions, losses, time sampling) and per-sample random streams."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zigma.interpolants import PATHS, GaussianData, LinearPath, Transport, VPPath
from zigma.random import PerSampleNoise, per_sample_normal, sample_seeds, stream_seed

torch.set_num_threads(1)
F64 = torch.float64
NAMES = sorted(PATHS)
MEAN = torch.tensor([1.0, -0.5], dtype=F64)
COV = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=F64)     # non-diagonal


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


# -- paths ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_path_derivatives_match_autograd(name):
    path = PATHS[name]()
    t = torch.linspace(0.01, 0.99, 50, dtype=F64).requires_grad_(True)
    for f, df in ((path.alpha, path.d_alpha), (path.sigma, path.d_sigma)):
        (grad,) = torch.autograd.grad(f(t).sum(), t)
        torch.testing.assert_close(df(t).detach(), grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_path_reaches_data_at_t1_and_is_variance_preserving_where_promised(name):
    path = PATHS[name]()
    one, zero = torch.ones((), dtype=F64), torch.zeros((), dtype=F64)
    assert path.alpha(one) == pytest.approx(1.0) and path.sigma(one) == pytest.approx(0.0, abs=1e-12)
    if name in ("linear", "gvp"):
        assert path.alpha(zero) == pytest.approx(0.0, abs=1e-12) and path.sigma(zero) == pytest.approx(1.0)
    else:
        assert path.alpha(zero) == pytest.approx(math.exp(-0.25 * 19.9 - 0.05))   # the official VP never reaches 0
    if name in ("gvp", "vp"):
        t = torch.linspace(0, 1, 11, dtype=F64)
        torch.testing.assert_close(path.alpha(t) ** 2 + path.sigma(t) ** 2, torch.ones_like(t))


# w*_t = (d_alpha/alpha) sigma^2 - sigma d_sigma worked out by hand (SiT, Ma et al. 2024, eq. for the score-to-
# velocity factor): linear alpha=t, sigma=1-t -> (1-t)/t; gvp alpha=sin(pi t/2) -> (pi/2) cot(pi t/2);
# vp -> beta_t/2 with beta_t = 0.1 + 19.9 (1-t).
DRIFT_VAR_BY_HAND = {
    "linear": {0.25: 3.0, 0.5: 1.0, 0.75: 1 / 3},
    "gvp": {1 / 3: math.pi / 2 * math.sqrt(3), 0.5: math.pi / 2, 2 / 3: math.pi / 2 / math.sqrt(3)},
    "vp": {0.25: 7.5125, 0.5: 5.025, 0.75: 2.5375},
}


@pytest.mark.parametrize("name", NAMES)
def test_drift_var_equals_its_closed_form_at_hand_picked_times(name):
    t, expect = zip(*DRIFT_VAR_BY_HAND[name].items())
    got = PATHS[name]().drift_var(torch.tensor(t, dtype=F64))
    torch.testing.assert_close(got, torch.tensor(expect, dtype=F64), rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_drift_var_turns_the_exact_gaussian_score_into_the_exact_velocity(name):
    # x1 ~ N(m, s^2) in 1-D: xt ~ N(alpha m, alpha^2 s^2 + sigma^2), score(x) = -(x - alpha m) / var, and
    # E[ut | xt = x] = da m + (alpha da s^2 + sigma ds) (x - alpha m) / var (Gaussian conditioning), with
    # alpha, sigma and their derivatives taken by central differences, not from the path's own derivatives.
    path, m, s2, h = PATHS[name](), 0.7, 0.3, 1e-6
    t, x = torch.tensor([0.2, 0.5, 0.8], dtype=F64), torch.tensor([-1.0, 0.3, 2.0], dtype=F64)
    a, sg = path.alpha(t), path.sigma(t)
    da, ds = (path.alpha(t + h) - path.alpha(t - h)) / (2 * h), (path.sigma(t + h) - path.sigma(t - h)) / (2 * h)
    var = a**2 * s2 + sg**2
    score = -(x - a * m) / var
    velocity = da * m + (a * da * s2 + sg * ds) * (x - a * m) / var
    torch.testing.assert_close(da / a * x + path.drift_var(t) * score, velocity, rtol=1e-7, atol=1e-8)


def test_vp_drift_var_is_half_beta_and_finite_at_t1():
    path = VPPath()
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    torch.testing.assert_close(path.drift_var(t), 0.5 * torch.tensor([20.0, 10.05, 0.1], dtype=F64))


def test_diffusion_forms_follow_the_official_formulas():
    path, t = LinearPath(), torch.tensor([0.25], dtype=F64)
    expect = {"constant": 2.0, "sbdm": 2.0 * (4 * 0.75**2 + 0.75), "sigma": 1.5, "linear": 1.5,
              "decreasing": 0.25 * (2 * math.cos(math.pi / 4) + 1) ** 2, "increasing-decreasing": 2 * 0.5}
    for form, value in expect.items():
        assert path.diffusion(t, form, 2.0).item() == pytest.approx(value), form
    with pytest.raises(ValueError, match="increasing-decreasing"):
        path.diffusion(t, "inccreasing-decreasing")


# -- conversions ------------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(NAMES), source=st.sampled_from(["velocity", "noise", "score"]),
       target=st.sampled_from(["velocity", "noise", "score"]), t=st.floats(0.02, 0.98), seed=st.integers(0, 10**6))
def test_conversions_between_targets_invert_each_other(name, source, target, t, seed):
    path = PATHS[name]()
    x, out = _randn(4, 3, seed=seed), _randn(4, 3, seed=seed + 1)
    tv = torch.full((4,), t, dtype=F64)
    src, dst = Transport(path, source), Transport(path, target)
    as_target = {"velocity": src.velocity_from, "noise": src.noise_from, "score": src.score_from}[target](out, x, tv)
    back = {"velocity": dst.velocity_from, "noise": dst.noise_from, "score": dst.score_from}[source](as_target, x, tv)
    torch.testing.assert_close(back, out, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_conversions_recover_noise_and_data_from_the_conditional_velocity(name):
    tr = Transport(PATHS[name]())
    x0, x1, t = _randn(8, 5, seed=1), _randn(8, 5, seed=2), torch.linspace(0.05, 0.95, 8, dtype=F64)
    xt, ut = tr.path.plan(t, x0, x1)
    torch.testing.assert_close(tr.noise_from(ut, xt, t), x0)
    torch.testing.assert_close(tr.data_from(ut, xt, t), x1)


@pytest.mark.parametrize("name", NAMES)
def test_score_of_the_exact_gaussian_velocity_is_the_gaussian_score(name):
    path, data = PATHS[name](), GaussianData(MEAN, COV)
    x, t = _randn(16, 2, seed=3), torch.linspace(0.05, 0.95, 16, dtype=F64)
    v = data.velocity(path, x, t)
    torch.testing.assert_close(Transport(path).score_from(v, x, t), data.score(path, x, t))
    xg = x.clone().requires_grad_(True)
    (expect,) = torch.autograd.grad(torch.distributions.MultivariateNormal(*data.marginal(path, t)).log_prob(xg).sum(), xg)
    torch.testing.assert_close(data.score(path, x, t), expect)


@pytest.mark.parametrize("name", NAMES)
def test_exact_gaussian_velocity_transports_the_marginal_covariance(name):
    path, data = PATHS[name](), GaussianData(MEAN, COV)
    t, h = torch.linspace(0.05, 0.95, 7, dtype=F64), 1e-6
    a = data.drift_matrix(path, t)
    _, cov = data.marginal(path, t)
    dcov = (data.marginal(path, t + h)[1] - data.marginal(path, t - h)[1]) / (2 * h)
    torch.testing.assert_close(a @ cov + cov @ a.transpose(1, 2), dcov, rtol=1e-6, atol=1e-7)


# -- loss -------------------------------------------------------------------------------------------------------
def _expected_min_loss(tr, data, t):
    """Analytic E||target - E[target | xt]||^2 / D at time t for Gaussian data (the loss of the optimal model)."""
    path, d = tr.path, data.dim
    tt = torch.tensor([t], dtype=F64)
    a, s, da, ds = (f(tt).item() for f in (path.alpha, path.sigma, path.d_alpha, path.d_sigma))
    eye = torch.eye(d, dtype=F64)
    cov_x = a**2 * data.cov + s**2 * eye
    if tr.prediction == "velocity":
        cov_u, cross = da**2 * data.cov + ds**2 * eye, a * da * data.cov + s * ds * eye
    else:
        cov_u, cross = eye, s * eye
    return torch.trace(cov_u - cross @ torch.linalg.solve(cov_x, cross.T)).item() / d


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("prediction", ["velocity", "noise", "score"])
def test_loss_of_the_exact_gaussian_model_is_the_conditional_variance(name, prediction):
    tr, data, n, t = Transport(PATHS[name](), prediction), GaussianData(MEAN, COV), 40000, 0.6
    x1 = MEAN + _randn(n, 2, seed=4) @ torch.linalg.cholesky(COV).T
    x0, tv = _randn(n, 2, seed=5), torch.full((n,), t, dtype=F64)
    oracle = Transport(tr.path)

    def model(xt, tt):
        v = data.velocity(tr.path, xt, tt)
        return {"velocity": v, "noise": oracle.noise_from(v, xt, tt), "score": oracle.score_from(v, xt, tt)}[prediction]

    loss = tr.loss(model, x1, x0=x0, t=tv)
    assert loss.shape == (n,)
    expect = _expected_min_loss(tr, data, t)
    assert loss.mean().item() == pytest.approx(expect, rel=0.03)
    worse = tr.loss(lambda xt, tt: model(xt, tt) + 0.1, x1, x0=x0, t=tv)
    assert worse.mean() > loss.mean()


@pytest.mark.parametrize("weight", ["velocity", "likelihood"])
def test_loss_weights_scale_the_noise_loss_by_the_official_factor(weight):
    path, t = PATHS["gvp"](), torch.full((6,), 0.3, dtype=F64)
    x1, x0, out = _randn(6, 4, seed=6), _randn(6, 4, seed=7), _randn(6, 4, seed=8)
    plain = Transport(path, "noise").loss(lambda x, tt: out, x1, x0=x0, t=t)
    weighted = Transport(path, "noise", weight).loss(lambda x, tt: out, x1, x0=x0, t=t)
    w, s = path.drift_var(t), path.sigma(t)
    torch.testing.assert_close(weighted, plain * ((w / s) ** 2 if weight == "velocity" else w / s**2))


def test_loss_is_reproducible_from_its_generator_and_refuses_the_global_rng():
    tr, x1 = Transport(LinearPath()), _randn(5, 3, seed=9)
    model = lambda x, t: x * t[:, None]
    a = tr.loss(model, x1, generator=torch.Generator().manual_seed(3))
    b = tr.loss(model, x1, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="Generator"):
        tr.loss(model, x1)


def test_velocity_prediction_with_a_loss_weight_is_refused():
    with pytest.raises(ValueError, match="noise and score"):
        Transport(LinearPath(), "velocity", "likelihood")
    with pytest.raises(ValueError, match="available"):
        Transport(LinearPath(), "epsilon")


# -- time intervals and sampling --------------------------------------------------------------------------------
@pytest.mark.parametrize("name,prediction,train,sample", [
    ("linear", "velocity", (0.0, 1.0), (0.0, 1.0)),
    ("gvp", "velocity", (0.0, 1.0), (0.0, 1.0)),
    ("linear", "noise", (1e-3, 1 - 1e-3), (1e-3, 1 - 1e-3)),
    ("gvp", "score", (1e-3, 1 - 1e-3), (1e-3, 1 - 1e-3)),
    ("vp", "velocity", (0.0, 1 - 1e-5), (0.0, 1 - 1e-3)),
    ("vp", "noise", (0.0, 1 - 1e-5), (0.0, 1 - 1e-3)),
])
def test_default_time_intervals_follow_the_official_trimming(name, prediction, train, sample):
    tr = Transport(PATHS[name](), prediction)
    assert tr.train_interval() == pytest.approx(train)
    assert tr.sample_interval() == pytest.approx(sample)


def test_sde_intervals_end_before_the_last_step_and_start_late_for_sbdm():
    tr = Transport(LinearPath(), sample_eps=1e-3)
    assert tr.sample_interval(sde=True, diffusion_form="sigma", last_step_size=0.04) == pytest.approx((0.0, 0.96))
    assert tr.sample_interval(sde=True, diffusion_form="sbdm", last_step_size=0.04) == pytest.approx((1e-3, 0.96))
    assert tr.sample_interval(sde=True, diffusion_form="sigma", last_step_size=0.0) == pytest.approx((0.0, 1 - 1e-3))


@pytest.mark.parametrize("sampler", ["uniform", "logit-normal"])
def test_training_times_stay_in_the_trimmed_interval(sampler):
    tr = Transport(PATHS["vp"](), "noise", time_sampler=sampler, train_eps=0.05)
    t = tr.sample_t(20000, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert t.min() >= 0.0 and t.max() <= 0.95
    if sampler == "uniform":
        assert t.mean().item() == pytest.approx(0.475, abs=0.01)


def test_logit_normal_times_have_the_requested_logit_mean_and_std():
    tr = Transport(LinearPath(), time_sampler="logit-normal", logit_mean=0.5, logit_std=0.8)
    t = tr.sample_t(50000, generator=torch.Generator().manual_seed(1), dtype=F64)
    logit = torch.log(t / (1 - t))
    assert logit.mean().item() == pytest.approx(0.5, abs=0.02)
    assert logit.std().item() == pytest.approx(0.8, abs=0.02)


# -- per-sample random streams ----------------------------------------------------------------------------------
def test_per_sample_noise_does_not_depend_on_the_batch():
    seeds = sample_seeds(7, range(16))
    batch = per_sample_normal((3, 4, 4), seeds)
    single = torch.cat([per_sample_normal((3, 4, 4), [s]) for s in seeds])
    torch.testing.assert_close(batch, single, rtol=0, atol=0)
    torch.testing.assert_close(batch[5], torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(seeds[5])))


def test_sample_seeds_are_seed_times_a_prime_plus_index_and_streams_differ():
    assert sample_seeds(3, [0, 5]) == [3 * 1_000_003, 3 * 1_000_003 + 5]
    assert len(set(sample_seeds(0, range(1000)) + sample_seeds(1, range(1000)))) == 2000
    assert stream_seed(11, 0) == 11 and stream_seed(11, 1) != 11
    a = per_sample_normal((8,), [11]), per_sample_normal((8,), [11], stream=1)
    assert not torch.allclose(*a)


def test_stepwise_noise_is_the_same_in_any_batch():
    seeds = sample_seeds(2, range(5))
    many, one = PerSampleNoise(seeds, stream=1), PerSampleNoise(seeds[3:4], stream=1)
    for _ in range(40):                                  # crosses several buffered blocks
        torch.testing.assert_close(many.normal((2,))[3:4], one.normal((2,)), rtol=0, atol=0)



def test_a_samples_noise_streams_never_alias_another_samples_stream_0():
    """Stream k of sample i is seed + k * 0x9E3779B97F4A7C15 mod 2**64 (the docstring's Weyl increment, written out
    here): for runs of up to 4 seeds x 5,000 samples no stream 1 or 2 seed is any sample's stream-0 seed (a stride
    of SEED_STRIDE there would make stream 1 of run s the noise of run s + 1)."""
    base = sample_seeds(0, range(5000)) + sample_seeds(1, range(5000)) + sample_seeds(2, range(5000)) + \
        sample_seeds(3, range(5000))
    for k in (1, 2):
        streams = [stream_seed(s, k) for s in base]
        assert streams[:3] == [(s + k * 0x9E3779B97F4A7C15) % 2**64 for s in base[:3]]
        assert not set(streams) & set(base)
