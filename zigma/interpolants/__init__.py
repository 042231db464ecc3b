"""Stochastic interpolants: paths, training objectives and samplers (SiT, arXiv 2401.08740; used by ZigMa).

Time convention (the official SiT/ZigMa code): t = 0 is noise x0 ~ N(0, I), t = 1 is data x1, and
    xt = alpha_t * x1 + sigma_t * x0,    ut = d_alpha_t * x1 + d_sigma_t * x0.
(The ZigMa paper writes the reversed time, alpha_t = 1 - t, sigma_t = t.) Samplers integrate from t0 ~ 0 to t1 ~ 1.

    path.py       linear, gvp, vp: alpha_t, sigma_t, their derivatives, drift variance, SDE diffusion forms
    transport.py  Transport: prediction target, loss weighting, time sampling, loss, conversions between targets
    samplers.py   euler, heun, dopri5 (ODE); euler-maruyama, sde-heun (SDE); classifier-free guidance
    likelihood.py ODE log-likelihood with Hutchinson (or exact) divergence
    gaussian.py   exact velocity and score for Gaussian data (the reference samplers are tested against)
"""

from .gaussian import GaussianData
from .likelihood import LikelihoodResult, log_likelihood
from .path import DIFFUSION_FORMS, PATHS, GVPPath, LinearPath, Path, VPPath
from .samplers import LAST_STEPS, Dopri5, Euler, EulerMaruyama, Heun, SampleResult, SDEHeun, cfg_model_fn
from .transport import LOSS_WEIGHTS, PREDICTIONS, TIME_SAMPLERS, Transport

__all__ = [
    "DIFFUSION_FORMS", "LAST_STEPS", "LOSS_WEIGHTS", "PATHS", "PREDICTIONS", "TIME_SAMPLERS", "Dopri5",
    "Euler", "EulerMaruyama", "GVPPath", "GaussianData", "Heun", "LikelihoodResult", "LinearPath", "Path",
    "SDEHeun", "SampleResult", "Transport", "VPPath", "cfg_model_fn", "log_likelihood",
]
