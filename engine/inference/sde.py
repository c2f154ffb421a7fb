"""IR-SDE: the mean-reverting SDE of Luo et al. 2023 ("Image Restoration with Mean-Reverting SDEs").

    dx = theta_t (mu - x) dt + sigma_t dW,    sigma_t^2 / theta_t = 2 lambda^2          (paper eq. 2, 3)

``mu`` is the low-quality image, ``x(0)`` the clean one. The forward marginal is Gaussian with

    mean      mu + (x0 - mu) exp(-theta_bar_t)                                           (eq. 4)
    variance  lambda^2 (1 - exp(-2 theta_bar_t)),    theta_bar_t = int_0^t theta_z dz

so training draws ``x_t`` in closed form (:meth:`IRSDEScheduler.add_noise`). The network predicts
``x0``; a reverse step from ``t`` to ``s < t`` draws from the Gaussian posterior
``q(x_s | x_t, x0_hat)``, whose mean is the paper's optimal reverse path (eq. 12, generalised to
any ``s < t``) and whose variance is the matching posterior variance. The last step (``s = 0``)
returns ``x0_hat`` itself. With one step, sampling starts at ``x_T = mu`` without noise, so a
one-step restoration is deterministic.

The scheduler never owns the network: the caller owns the loop, in the style of diffusers::

    sched.set_timesteps(n)
    x = sched.initial_sample(mu, generator)
    for t in sched.timesteps:
        x0_hat = net(x, mu, sched.network_time(t), condition)
        x = sched.step(x0_hat, t, x, mu, generator)
"""

from __future__ import annotations

import math

import torch

from engine.models.configs import IRSDEConfig


def _theta_increments(cfg: IRSDEConfig) -> torch.Tensor:
    """theta_i * dt for i = 1..T (float64), scaled so that theta_bar_T = -log(eps)."""
    T = cfg.num_train_timesteps
    if cfg.schedule == "cosine":
        # IR-SDE's cosine theta schedule: theta grows like 1 - cos^2 over the trajectory
        s = 0.008
        steps = torch.arange(T + 1, dtype=torch.float64)
        alphas = torch.cos(((steps / T) + s) / (1 + s) * math.pi / 2) ** 2
        theta = (1 - alphas[1:] / alphas[0]).clamp(min=1e-6)
    elif cfg.schedule == "constant":
        theta = torch.ones(T, dtype=torch.float64)
    else:
        raise ValueError(f"unknown IR-SDE schedule {cfg.schedule!r} (cosine, constant)")
    return theta * (-math.log(cfg.eps) / theta.sum())


def _noise(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like ``like``, drawn on the generator's device (a CPU generator
    gives the same noise whatever device the model runs on)."""
    device = generator.device if generator is not None else like.device
    return torch.randn(like.shape, generator=generator, device=device).to(like.device, like.dtype)


class IRSDEScheduler:
    """Forward marginal for training and reverse steps for sampling (see the module docstring)."""

    def __init__(self, config: IRSDEConfig | None = None):
        self.config = cfg = config or IRSDEConfig()
        if cfg.num_train_timesteps < 1 or not 0 < cfg.eps < 1 or cfg.max_sigma < 0:
            raise ValueError(f"bad IR-SDE config {cfg}")
        inc = _theta_increments(cfg)
        # theta_bar[i] = int_0^{t_i} theta dz, theta_bar[0] = 0 (the clean image)
        self.theta_bar = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(inc, 0)])
        self.lam = cfg.max_sigma
        self.set_timesteps(1)

    @property
    def T(self) -> int:
        return self.config.num_train_timesteps

    # ---- forward process (training) ------------------------------------------------------------------

    def marginal(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(exp(-theta_bar_t), std_t)`` per integer step ``t`` (eq. 4)."""
        tb = self.theta_bar[t.long().cpu()]
        decay = torch.exp(-tb)
        std = self.lam * torch.sqrt(1 - torch.exp(-2 * tb))
        return decay.float().to(t.device), std.float().to(t.device)

    def add_noise(self, x0: torch.Tensor, mu: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Draw ``x_t ~ N(mu + (x0 - mu) e^{-theta_bar_t}, lambda^2 (1 - e^{-2 theta_bar_t}))`` (eq. 4)."""
        decay, std = self.marginal(t)
        shape = (-1,) + (1,) * (x0.dim() - 1)
        return mu + (x0 - mu) * decay.view(shape).to(x0.dtype) + std.view(shape).to(x0.dtype) * noise

    def network_time(self, t: torch.Tensor | int, batch: int = 1) -> torch.Tensor:
        """The network's time input: ``t / T`` in [0, 1], as a ``[batch]`` float tensor."""
        t = torch.as_tensor(t, dtype=torch.float32)
        return (t / self.T).expand(batch).clone() if t.dim() == 0 else t / self.T

    # ---- reverse process (sampling) ------------------------------------------------------------------

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Choose ``n`` steps from ``T`` down to 1, evenly spaced (``timesteps``, descending integers)."""
        n = int(num_inference_steps)
        if not 1 <= n <= self.T:
            raise ValueError(f"steps must be between 1 and {self.T}, got {num_inference_steps}")
        ts = torch.linspace(self.T, 0, n + 1, dtype=torch.float64)[:-1].round().long()
        self.timesteps = ts
        self._prev = {int(a): int(b) for a, b in zip(ts, torch.cat([ts[1:], torch.zeros(1, dtype=torch.long)]), strict=True)}

    def initial_sample(self, mu: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``x_T``: ``mu`` itself for a one-step (deterministic) run, else ``mu + lambda * eps`` (the
        stationary distribution N(mu, lambda^2), eq. 4 at t -> infinity)."""
        if len(self.timesteps) == 1:
            return mu.clone()
        return mu + self.lam * _noise(mu, generator)

    def previous_timestep(self, t: int) -> int:
        """The timestep a reverse step from ``t`` lands on (0 after the last one)."""
        try:
            return self._prev[int(t)]
        except KeyError:
            raise ValueError(f"timestep {t} is not one of the chosen timesteps; call set_timesteps first") from None

    def posterior(self, t: int, s: int) -> tuple[float, float, float]:
        """Coefficients of ``q(x_s | x_t, x0) = N(mu + a (x_t - mu) + b (x0 - mu), var)`` for ``s < t``."""
        tb_t, tb_s = float(self.theta_bar[t]), float(self.theta_bar[s])
        e_step = math.exp(-(tb_t - tb_s))        # e^{-theta'}: decay from s to t
        denom = 1 - math.exp(-2 * tb_t)          # 1 - e^{-2 theta_bar_t}
        a = (1 - math.exp(-2 * tb_s)) * e_step / denom            # eq. 12, coefficient of x_t - mu
        b = (1 - e_step**2) * math.exp(-tb_s) / denom             # eq. 12, coefficient of x0 - mu
        var = self.lam**2 * (1 - math.exp(-2 * tb_s)) * (1 - e_step**2) / denom  # Gaussian posterior variance
        return a, b, var

    def step(self, model_output: torch.Tensor, t: int, sample: torch.Tensor, mu: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """One reverse step from ``t`` to the previous chosen timestep, given the predicted ``x0``."""
        t = int(t)
        s = self.previous_timestep(t)
        if s == 0:
            return model_output  # the posterior collapses onto x0_hat at theta_bar_0 = 0
        a, b, var = self.posterior(t, s)
        mean = mu + a * (sample - mu) + b * (model_output - mu)
        return mean + math.sqrt(var) * _noise(sample, generator)
