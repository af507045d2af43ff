"""Noise schedules and samplers, written op for op as stable-audio-tools 0.0.19 runs them.

v-objective models (SAO 1.0) go through k-diffusion's VDenoiser with a poly-exponential sigma
schedule and the DPM-Solver++ SDE samplers (Lu et al. 2022, "DPM-Solver++"; k-diffusion's
3M extension) driven by torchsde's Brownian tree. Rectified-flow models (SAO Small) use a
log-SNR-linear time schedule with ping-pong (SAO Small's distillation sampler) or Euler steps.

Every sampler shares one signature: ``(model, x, sigmas, extra_args, callback) -> x``, where
``model(x, sigma_or_t, **extra_args)`` and ``callback(step, total, sigma)`` runs after each model
evaluation (it may raise to cancel). The exact tensor expressions matter for bit-exactness.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch

ModelFn = Callable[..., torch.Tensor]
StepCallback = Callable[[int, int, float], None]

V_SAMPLERS = ("dpmpp-3m-sde", "dpmpp-2m-sde")
RF_SAMPLERS = ("pingpong", "euler")


# --- v objective (k-diffusion) -------------------------------------------------------------------


def get_sigmas_polyexponential(
    n: int, sigma_min: float, sigma_max: float, rho: float = 1.0, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Polynomial-in-log-sigma schedule, n values from sigma_max down to sigma_min, then 0."""
    ramp = torch.linspace(1, 0, n, device=device) ** rho
    sigmas = torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min))
    return torch.cat([sigmas, sigmas.new_zeros([1])])


class VDenoiser:
    """Wrap a v-predicting model as a denoiser D(x, sigma) with sigma_data = 1 (k-diffusion)."""

    def __init__(self, inner_model: ModelFn) -> None:
        self.inner_model = inner_model
        self.sigma_data = 1.0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        sd = self.sigma_data
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = -sigma * sd / (sigma**2 + sd**2) ** 0.5
        c_in = 1 / (sigma**2 + sd**2) ** 0.5
        c_skip, c_out, c_in = (
            c[(...,) + (None,) * (x.ndim - c.ndim)] for c in (c_skip, c_out, c_in)
        )
        t = sigma.atan() / math.pi * 2
        return self.inner_model(x * c_in, t, **kwargs) * c_out + x * c_skip


class BrownianNoise:
    """Brownian-bridge noise between two sigmas from a torchsde BrownianTree (k-diffusion's
    BrownianTreeNoiseSampler); the tree's entropy is drawn from the global CPU generator."""

    def __init__(self, x: torch.Tensor, sigma_min: torch.Tensor, sigma_max: torch.Tensor) -> None:
        import torchsde

        seed = torch.randint(0, 2**63 - 1, []).item()
        self.tree = torchsde.BrownianTree(sigma_min, torch.zeros_like(x), sigma_max, entropy=seed)

    def __call__(self, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        t0, t1 = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        lo, hi, sign = (t0, t1, 1) if t0 < t1 else (t1, t0, -1)
        with warnings.catch_warnings():
            # torchsde clamps queries at the interval's ends and says so; harmless (upstream #100)
            warnings.filterwarnings(
                "ignore", message=r"Should have t[ab]>=t0", category=UserWarning
            )
            warnings.filterwarnings(
                "ignore", message=r"Should have t[ab]<=t1", category=UserWarning
            )
            w = self.tree(lo, hi) * (1 * sign)
        return w / (t1 - t0).abs().sqrt()


@torch.no_grad()
def sample_dpmpp_3m_sde(
    model: ModelFn, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict[str, Any],
    callback: StepCallback | None = None, eta: float = 1.0, s_noise: float = 1.0,
) -> torch.Tensor:  # fmt: skip
    """DPM-Solver++(3M) SDE."""
    noise = BrownianNoise(x, sigmas[sigmas > 0].min(), sigmas.max())
    s_in = x.new_ones([x.shape[0]])
    total = len(sigmas) - 1
    denoised_1: torch.Tensor | None = None
    denoised_2: torch.Tensor | None = None
    h_1: torch.Tensor | None = None
    h_2: torch.Tensor | None = None
    h = None
    for i in range(total):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback(i + 1, total, float(sigmas[i]))
        if sigmas[i + 1] == 0:
            x = denoised  # denoising step
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            h_eta = h * (eta + 1)
            x = torch.exp(-h_eta) * x + (-h_eta).expm1().neg() * denoised
            if h_2 is not None:
                assert denoised_1 is not None and denoised_2 is not None and h_1 is not None
                r0 = h_1 / h
                r1 = h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:
                assert denoised_1 is not None
                r = h_1 / h
                d = (denoised - denoised_1) / r
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                x = x + phi_2 * d
            if eta:
                x = (
                    x
                    + noise(sigmas[i], sigmas[i + 1])
                    * sigmas[i + 1]
                    * (-2 * h * eta).expm1().neg().sqrt()
                    * s_noise
                )
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(
    model: ModelFn, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict[str, Any],
    callback: StepCallback | None = None, eta: float = 1.0, s_noise: float = 1.0,
) -> torch.Tensor:  # fmt: skip
    """DPM-Solver++(2M) SDE with the midpoint solver."""
    noise = BrownianNoise(x, sigmas[sigmas > 0].min(), sigmas.max())
    s_in = x.new_ones([x.shape[0]])
    total = len(sigmas) - 1
    old_denoised: torch.Tensor | None = None
    h_last: torch.Tensor | None = None
    h = None
    for i in range(total):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback(i + 1, total, float(sigmas[i]))
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            eta_h = eta * h
            x = (
                sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * x
                + (-h - eta_h).expm1().neg() * denoised
            )
            if old_denoised is not None:
                assert h_last is not None
                r = h_last / h
                x = x + 0.5 * (-h - eta_h).expm1().neg() * (1 / r) * (denoised - old_denoised)
            if eta:
                x = (
                    x
                    + noise(sigmas[i], sigmas[i + 1])
                    * sigmas[i + 1]
                    * (-2 * eta_h).expm1().neg().sqrt()
                    * s_noise
                )
        old_denoised = denoised
        h_last = h
    return x


# --- rectified flow ---------------------------------------------------------------------------


def get_rf_times(steps: int, sigma_max: float = 1.0) -> torch.Tensor:
    """Log-SNR-linear times from sigma_max (<= 1) down to 0: steps + 1 values, on the CPU."""
    logsnr_max = math.log(((1 - sigma_max) / sigma_max) + 1e-6) if sigma_max < 1 else -6
    logsnr = torch.linspace(logsnr_max, 2, steps + 1)
    t = torch.sigmoid(-logsnr)
    t[0] = sigma_max
    t[-1] = 0
    return t


@torch.no_grad()
def sample_flow_pingpong(
    model: ModelFn, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict[str, Any],
    callback: StepCallback | None = None,
) -> torch.Tensor:  # fmt: skip
    """Ping-pong sampling: denoise fully, then re-noise to the next time (fresh noise each step)."""
    ts = x.new_ones([x.shape[0]])
    total = len(sigmas) - 1
    for i in range(total):
        denoised = x - sigmas[i] * model(x, sigmas[i] * ts, **extra_args)
        if callback is not None:
            callback(i + 1, total, float(sigmas[i]))
        t_next = sigmas[i + 1]
        x = (1 - t_next) * denoised + t_next * torch.randn_like(x)
    return x


@torch.no_grad()
def sample_flow_euler(
    model: ModelFn, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict[str, Any],
    callback: StepCallback | None = None,
) -> torch.Tensor:  # fmt: skip
    """Euler steps along the predicted velocity."""
    total = len(sigmas) - 1
    for i, (t_curr, t_prev) in enumerate(zip(sigmas[:-1], sigmas[1:], strict=True)):
        t_curr_tensor = t_curr * torch.ones((x.shape[0],), dtype=x.dtype, device=x.device)
        dt = t_prev - t_curr
        v = model(x, t_curr_tensor, **extra_args)
        x = x + dt * v
        if callback is not None:
            callback(i + 1, total, float(t_curr))
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "dpmpp-3m-sde": sample_dpmpp_3m_sde,
    "dpmpp-2m-sde": sample_dpmpp_2m_sde,
    "pingpong": sample_flow_pingpong,
    "euler": sample_flow_euler,
}
