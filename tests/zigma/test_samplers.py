"""Samplers against the exact answer for Gaussian data, their orders, NFE counts, batch independence, CFG, likelihood.

For x1 ~ N(m, S) the optimal velocity is affine (zigma.interpolants.gaussian), so the ODE flow map is affine and a
batch of inputs whose empirical mean and covariance are exactly those of p_{t0} must come out with exactly the
moments of p_{t1}: ODE errors below are pure discretisation error, free of Monte Carlo noise.
"""

import math
from itertools import pairwise

import pytest
import torch

from zigma.interpolants import (
    PATHS,
    Dopri5,
    Euler,
    EulerMaruyama,
    GaussianData,
    Heun,
    LinearPath,
    SDEHeun,
    Transport,
    cfg_model_fn,
    log_likelihood,
)
from zigma.random import per_sample_normal, sample_seeds

torch.set_num_threads(1)
F64 = torch.float64
NAMES = sorted(PATHS)
DATA = GaussianData(torch.tensor([1.0, -0.5], dtype=F64), torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=F64))


def _oracle(tr):
    """The exact model for transport tr: the Gaussian velocity expressed as tr's prediction target."""
    velocity = Transport(tr.path)

    def model_fn(x, t):
        v = DATA.velocity(tr.path, x, t)
        return {"velocity": v, "noise": velocity.noise_from(v, x, t), "score": velocity.score_from(v, x, t)}[
            tr.prediction]
    return model_fn


def _exact_inputs(tr, t0, n=256):
    """n points whose empirical mean and (biased) covariance equal those of p_{t0} exactly."""
    z = per_sample_normal((2,), sample_seeds(0, range(n)), dtype=F64)
    z = z - z.mean(0)
    z = torch.linalg.solve_triangular(torch.linalg.cholesky(z.T @ z / n), z.T, upper=False).T
    mean, cov = DATA.marginal(tr.path, torch.tensor([t0], dtype=F64))
    return mean[0] + z @ torch.linalg.cholesky(cov[0]).T


def _moments(x, unbiased=False):
    mu = x.mean(0)
    xc = x - mu
    return mu, xc.T @ xc / (x.shape[0] - unbiased)


def _ode_error(tr, sampler):
    """|mean error| + |cov error| (Frobenius) of the sampler's output against the exact p_{t1}, and the NFE."""
    t0, t1 = tr.sample_interval()
    result = sampler.sample(tr, _oracle(tr), _exact_inputs(tr, t0))
    mu, cov = _moments(result.x1)
    mean1, cov1 = DATA.marginal(tr.path, torch.tensor([t1], dtype=F64))
    return ((mu - mean1[0]).norm() + (cov - cov1[0]).norm()).item(), result.nfe


# -- ODE -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("prediction", ["velocity", "noise", "score"])
def test_dopri5_reproduces_gaussian_mean_and_covariance(name, prediction):
    tr = Transport(PATHS[name](), prediction)
    err, nfe = _ode_error(tr, Dopri5())                           # the official tolerances
    assert err < 2e-3 and nfe < 200


@pytest.mark.parametrize("name", NAMES)
def test_dopri5_with_tight_tolerances_is_exact_to_1e_7(name):
    err, _ = _ode_error(Transport(PATHS[name]()), Dopri5(atol=1e-9, rtol=1e-9))
    assert err < 1e-7


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("sampler,order", [(Euler, 1.0), (Heun, 2.0)])
def test_fixed_step_error_shrinks_with_the_expected_order(name, sampler, order):
    tr = Transport(PATHS[name]())
    errors = [_ode_error(tr, sampler(steps))[0] for steps in (16, 32, 64)]
    observed = [math.log2(a / b) for a, b in pairwise(errors)]
    assert all(abs(o - order) < 0.2 for o in observed), (errors, observed)


def test_fixed_step_samplers_count_their_function_evaluations():
    tr = Transport(LinearPath())
    assert _ode_error(tr, Euler(7))[1] == 7
    assert _ode_error(tr, Heun(7))[1] == 14


def test_dopri5_reports_the_evaluations_torchdiffeq_made():
    tr, calls = Transport(LinearPath()), []
    fn = _oracle(tr)
    result = Dopri5().sample(tr, lambda x, t: calls.append(1) or fn(x, t), _exact_inputs(tr, 0.0))
    assert result.nfe == len(calls) > 6


def test_fixed_step_trajectory_starts_at_x0_and_ends_at_x1():
    tr = Transport(LinearPath())
    x0 = _exact_inputs(tr, 0.0, n=8)
    r = Heun(5).sample(tr, _oracle(tr), x0, return_trajectory=True)
    assert r.trajectory.shape == (6, 8, 2)
    torch.testing.assert_close(r.trajectory[0], x0)
    torch.testing.assert_close(r.trajectory[-1], r.x1)


# -- SDE -------------------------------------------------------------------------------------------------------
def _sde_zscores(tr, sampler, n=4000):
    """Standardised errors of the output mean (2,) and covariance entries (3,) against N(m, S)."""
    seeds = sample_seeds(1, range(n))
    t0, _ = tr.sample_interval(sde=True, diffusion_form=sampler.diffusion_form,
                               last_step_size=sampler.last_step_size)
    mean0, cov0 = DATA.marginal(tr.path, torch.tensor([t0], dtype=F64))
    x0 = mean0[0] + per_sample_normal((2,), seeds, dtype=F64) @ torch.linalg.cholesky(cov0[0]).T
    result = sampler.sample(tr, _oracle(tr), x0, seeds=seeds)
    mu, cov = _moments(result.x1, unbiased=True)
    s = DATA.cov
    z_mean = (mu - DATA.mean) / torch.sqrt(torch.diag(s) / n)
    idx = [(0, 0), (0, 1), (1, 1)]
    z_cov = torch.stack([(cov[i, j] - s[i, j]) / torch.sqrt((s[i, i] * s[j, j] + s[i, j] ** 2) / n) for i, j in idx])
    return torch.cat([z_mean, z_cov]), result.nfe


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("sampler", [EulerMaruyama, SDEHeun])
def test_sde_samplers_match_gaussian_moments_within_sampling_error(name, sampler):
    z, nfe = _sde_zscores(Transport(PATHS[name]()), sampler(steps=100))
    assert z.abs().max() < 4.0, z
    assert nfe == (101 if sampler is EulerMaruyama else 201)


@pytest.mark.parametrize("form,last_step", [("sbdm", "mean"), ("linear", "mean"), ("decreasing", "mean"),
                                            ("increasing-decreasing", "mean"), ("constant", "none"),
                                            ("sigma", "tweedie"), ("sigma", "euler")])
def test_every_diffusion_form_and_last_step_matches_gaussian_moments(form, last_step):
    tr = Transport(LinearPath(), sample_eps=1e-3)
    z, _ = _sde_zscores(tr, EulerMaruyama(steps=100, diffusion_form=form, last_step=last_step))
    assert z.abs().max() < 4.0, z


def test_sbdm_diffusion_needs_a_trimmed_start_on_the_linear_path():
    tr = Transport(LinearPath())                                  # velocity: sample_eps = 0
    with pytest.raises(ValueError, match="sample_eps"):
        EulerMaruyama(diffusion_form="sbdm").sample(tr, _oracle(tr), torch.zeros(2, 2, dtype=F64), seeds=[0, 1])


# -- batch independence ----------------------------------------------------------------------------------------
def _mlp():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.SiLU(), torch.nn.Linear(32, 2))
    return lambda x, t: net(torch.cat([x, t[:, None]], 1))


@pytest.mark.parametrize("sampler", [Euler(20), Heun(10), EulerMaruyama(steps=30), SDEHeun(steps=15)],
                         ids=["euler", "heun", "euler-maruyama", "sde-heun"])
def test_batch_of_sixteen_gives_the_same_samples_as_one_at_a_time(sampler):
    tr, model_fn, seeds = Transport(PATHS["gvp"]()), _mlp(), sample_seeds(3, range(16))
    x0 = per_sample_normal((2,), seeds)
    batch = sampler.sample(tr, model_fn, x0, seeds=seeds).x1
    single = torch.cat([sampler.sample(tr, model_fn, x0[i:i + 1], seeds=seeds[i:i + 1]).x1 for i in range(16)])
    torch.testing.assert_close(batch, single, rtol=1e-5, atol=1e-5)


def test_dopri5_batch_and_single_samples_agree_within_its_tolerance():
    tr, model_fn, seeds = Transport(PATHS["linear"]()), _mlp(), sample_seeds(3, range(16))
    x0 = per_sample_normal((2,), seeds, dtype=F64)
    model64 = lambda x, t: model_fn(x.float(), t.float()).to(x)
    batch = Dopri5().sample(tr, model64, x0).x1
    single = torch.cat([Dopri5().sample(tr, model64, x0[i:i + 1]).x1 for i in range(16)])
    torch.testing.assert_close(batch, single, rtol=2e-3, atol=1e-4)


# -- guidance --------------------------------------------------------------------------------------------------
def test_cfg_combines_conditional_and_null_outputs_in_one_call():
    calls = []

    def model(x, t, y=None):
        calls.append(x.shape[0])
        return x * t[:, None] + y[:, None].to(x)

    x, t, y = torch.randn(4, 2), torch.rand(4), torch.tensor([0, 1, 2, 1])
    null = torch.full_like(y, 10)
    guided = cfg_model_fn(model, 3.0, {"y": y}, {"y": null})(x, t)
    c, u = model(x, t, y=y), model(x, t, y=null)
    torch.testing.assert_close(guided, u + 3.0 * (c - u))
    assert calls[0] == 8
    torch.testing.assert_close(cfg_model_fn(model, 1.0, {"y": y}, {"y": null})(x, t), c)


# -- likelihood ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["linear", "gvp"])
def test_ode_likelihood_with_exact_divergence_is_the_gaussian_log_density(name):
    tr = Transport(PATHS[name]())
    x1 = DATA.mean + torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    result = log_likelihood(tr, _oracle(tr), x1, exact=True, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(result.logp, DATA.log_prob(x1), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(result.bpd, -result.logp / (2 * math.log(2)))


def test_hutchinson_likelihood_is_unbiased():
    tr, n = Transport(LinearPath()), 400
    x1 = DATA.mean.expand(n, 2).clone()                        # one point, n independent probes
    result = log_likelihood(tr, _oracle(tr), x1, seeds=sample_seeds(5, range(n)))
    exact = DATA.log_prob(x1[:1]).item()
    err = result.logp.mean().item() - exact
    assert abs(err) < 4 * result.logp.std().item() / math.sqrt(n) + 1e-3


# -- one step, by hand ---------------------------------------------------------------------------------------------
def _field(x, t):
    """A velocity that depends on both x and t (velocity prediction: the model output is the velocity)."""
    return torch.sin(3 * t)[:, None] * x + t[:, None] ** 2


def _tv(t, x):
    return torch.full((x.shape[0],), t, dtype=F64)


def test_one_euler_and_one_heun_step_are_the_textbook_formulas():
    tr = Transport(LinearPath())
    t0, t1 = tr.sample_interval()
    h, x0 = t1 - t0, torch.tensor([[0.3, -1.2], [2.0, 0.5]], dtype=F64)
    k1 = _field(x0, _tv(t0, x0))
    torch.testing.assert_close(Euler(steps=1).sample(tr, _field, x0).x1, x0 + h * k1, rtol=1e-12, atol=1e-12)
    k2 = _field(x0 + h * k1, _tv(t1, x0))                     # the slope at the predicted end point, at t1
    torch.testing.assert_close(Heun(steps=1).sample(tr, _field, x0).x1, x0 + h / 2 * (k1 + k2), rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("last_step", ["mean", "euler", "none"])
def test_noiseless_sde_steps_and_the_last_step_by_hand(last_step):
    """diffusion_norm 0 turns the noise and the score term off: an SDE step is then its ODE step on [t0, t1] (SiT's
    stochastic Heun: a Heun step), and 'mean' / 'euler' end with one more Euler step of size last_step_size.
    sample_eps 1e-3 keeps t1 < 1, where the score (a division by sigma) is finite."""
    tr = Transport(LinearPath(), sample_eps=1e-3)
    x0, size = torch.tensor([[0.3, -1.2], [2.0, 0.5]], dtype=F64), 0.04
    for sampler in (EulerMaruyama, SDEHeun):
        s = sampler(steps=1, diffusion_norm=0.0, last_step=last_step, last_step_size=size)
        t0, t1 = tr.sample_interval(sde=True, diffusion_form=s.diffusion_form, last_step_size=s.last_step_size)
        h, k1 = t1 - t0, _field(x0, _tv(t0, x0))
        x = x0 + h * k1 if sampler is EulerMaruyama else x0 + h / 2 * (k1 + _field(x0 + h * k1, _tv(t1, x0)))
        if last_step != "none":
            x = x + size * _field(x, _tv(t1, x))
        got = s.sample(tr, _field, x0, seeds=[0, 1]).x1
        torch.testing.assert_close(got, x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("sampler", "last_step"), [(SDEHeun, "none"), (SDEHeun, "mean"), (EulerMaruyama, "mean")])
def test_an_sde_that_would_need_the_score_where_sigma_is_zero_is_refused(sampler, last_step):
    """On the linear path with velocity prediction, sample_eps defaults to 0 (SiT's), so t1 = 1 where sigma = 0:
    stochastic Heun's corrector, or a last step of size 0, would divide by zero there (NaN samples)."""
    s = sampler(steps=4, last_step=last_step, last_step_size=0.0)
    with pytest.raises(ValueError, match="evaluates the model at t=1, where converting a 'velocity' output on the "
                                         "'linear' path divides by zero"):
        s.sample(Transport(LinearPath()), lambda x, t: -x, torch.ones(2, 2, dtype=F64), seeds=[0, 1])
    ok = s.sample(Transport(LinearPath(), sample_eps=1e-3), lambda x, t: -x, torch.ones(2, 2, dtype=F64), seeds=[0, 1])
    assert torch.isfinite(ok.x1).all()
    em = EulerMaruyama(steps=4, last_step="none").sample(Transport(LinearPath()), lambda x, t: -x,
                                                         torch.ones(2, 2, dtype=F64), seeds=[0, 1])
    assert torch.isfinite(em.x1).all()                      # Euler-Maruyama never evaluates at t1: allowed


@pytest.mark.parametrize("sampler", [Euler(steps=4), Heun(steps=4), Dopri5()])
@pytest.mark.parametrize("prediction", ["noise", "score"])
def test_an_ode_that_would_convert_a_noise_or_score_output_where_alpha_is_zero_is_refused(sampler, prediction):
    """velocity_from divides by alpha_t, which is 0 at t = 0 on the linear path: sample_eps 0 there meant NaN samples;
    the default sample_eps (1e-3 for these predictions, SiT's) is fine."""
    with pytest.raises(ValueError, match=f"evaluates the model at t=0, where converting a '{prediction}' output"):
        sampler.sample(Transport(LinearPath(), prediction=prediction, sample_eps=0.0), lambda x, t: -x,
                       torch.ones(2, 2, dtype=F64))
    ok = sampler.sample(Transport(LinearPath(), prediction=prediction), lambda x, t: -x, torch.ones(2, 2, dtype=F64))
    assert torch.isfinite(ok.x1).all()
