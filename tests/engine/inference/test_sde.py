"""IR-SDE maths: forward marginal vs closed form, reverse steps, a full loop with a dummy model."""

import math

import pytest
import torch

from engine.inference.sde import IRSDEConfig, IRSDEScheduler


def test_forward_marginal_matches_closed_form_monte_carlo():
    sched = IRSDEScheduler(IRSDEConfig(max_sigma=0.2))
    x0 = torch.full((1,), 0.8)
    mu = torch.full((1,), 0.3)
    n = 200_000
    g = torch.Generator().manual_seed(0)
    for t in (1, 10, 50, 100):
        tt = torch.full((n,), t)
        xt = sched.add_noise(x0.expand(n), mu.expand(n), tt, torch.randn(n, generator=g))
        tb = float(sched.theta_bar[t])
        mean = 0.3 + (0.8 - 0.3) * math.exp(-tb)
        var = 0.2**2 * (1 - math.exp(-2 * tb))
        assert abs(xt.mean().item() - mean) < 4 * math.sqrt(var / n) + 1e-6
        assert xt.var().item() == pytest.approx(var, rel=0.02)


def test_forward_marginal_matches_simulated_sde():
    """Euler-Maruyama on dx = theta (mu - x) dt + sigma dW reaches the closed-form marginal."""
    cfg = IRSDEConfig(max_sigma=0.1, schedule="constant", num_train_timesteps=50)
    sched = IRSDEScheduler(cfg)
    g = torch.Generator().manual_seed(1)
    n, sub = 20_000, 10
    x = torch.full((n,), 1.0)
    mu = 0.0
    inc = (sched.theta_bar[1:] - sched.theta_bar[:-1]).float()
    for i in range(cfg.num_train_timesteps):
        dtheta = inc[i].item() / sub  # theta dt per sub-step
        for _ in range(sub):
            # sigma^2 dt = 2 lambda^2 theta dt (eq. 3)
            x = x + dtheta * (mu - x) + math.sqrt(2 * cfg.max_sigma**2 * dtheta) * torch.randn(n, generator=g)
    decay, std = sched.marginal(torch.tensor([cfg.num_train_timesteps]))
    assert x.mean().item() == pytest.approx(decay.item(), abs=3e-3)
    assert x.std().item() == pytest.approx(std.item(), rel=0.03)


def test_end_of_schedule_reaches_eps():
    sched = IRSDEScheduler(IRSDEConfig(eps=0.005))
    decay, std = sched.marginal(torch.tensor([0, sched.T]))
    assert decay[0].item() == 1.0 and std[0].item() == 0.0
    assert decay[1].item() == pytest.approx(0.005, rel=1e-4)
    assert torch.all(sched.theta_bar[1:] > sched.theta_bar[:-1])


@pytest.mark.parametrize("n", [1, 4, 20, 100])
def test_set_timesteps_descending_and_ends_at_zero(n):
    sched = IRSDEScheduler()
    sched.set_timesteps(n)
    ts = sched.timesteps.tolist()
    assert len(ts) == n and ts[0] == sched.T and ts == sorted(ts, reverse=True) and len(set(ts)) == n
    assert sched.previous_timestep(ts[-1]) == 0


def test_bad_steps_rejected():
    with pytest.raises(ValueError):
        IRSDEScheduler().set_timesteps(0)
    with pytest.raises(ValueError):
        IRSDEScheduler().set_timesteps(101)


def test_posterior_is_the_gaussian_product():
    """Mean/variance of q(x_s | x_t, x0) from a brute-force joint Gaussian of (x_s, x_t)."""
    sched = IRSDEScheduler(IRSDEConfig(max_sigma=0.3))
    t, s = 60, 25
    a, b, var = sched.posterior(t, s)
    es, et = math.exp(-float(sched.theta_bar[s])), math.exp(-float(sched.theta_bar[t]))
    lam2 = 0.3**2
    # centred y = x - mu; y_s = es y0 + n_s, y_t = (et/es) y_s + n_ts
    v_s = lam2 * (1 - es**2)
    c = et / es
    v_t = c**2 * v_s + lam2 * (1 - c**2)
    cov_st = c * v_s
    # E[y_s | y_t, y0] = es y0 + cov/v_t (y_t - et y0)
    assert a == pytest.approx(cov_st / v_t)
    assert b == pytest.approx(es - cov_st / v_t * et)
    assert var == pytest.approx(v_s - cov_st**2 / v_t)


def test_step_shapes_and_last_step_returns_x0():
    sched = IRSDEScheduler()
    sched.set_timesteps(4)
    mu = torch.rand(2, 3, 8, 8)
    x = sched.initial_sample(mu, torch.Generator().manual_seed(0))
    x0_hat = torch.rand(2, 3, 8, 8)
    for t in sched.timesteps:
        x = sched.step(x0_hat, int(t), x, mu, torch.Generator().manual_seed(0))
        assert x.shape == mu.shape
    assert torch.equal(x, x0_hat)


def test_one_step_is_deterministic_and_starts_at_mu():
    sched = IRSDEScheduler()
    sched.set_timesteps(1)
    mu = torch.rand(1, 3, 4, 4)
    assert torch.equal(sched.initial_sample(mu), mu)


def test_full_loop_with_oracle_model_recovers_x0():
    """A dummy 'network' that always predicts the true x0: the loop must end exactly at x0,
    and intermediate states must follow the forward marginal's mean."""
    sched = IRSDEScheduler(IRSDEConfig(max_sigma=0.05))
    sched.set_timesteps(20)
    g = torch.Generator().manual_seed(0)
    mu = torch.zeros(4000)
    x0 = torch.ones(4000)
    x = sched.initial_sample(mu, g)
    for t in sched.timesteps:
        x = sched.step(x0, int(t), x, mu, g)
        s = sched.previous_timestep(int(t))
        if s > 0:
            decay, std = sched.marginal(torch.tensor([s]))
            assert x.mean().item() == pytest.approx(decay.item(), abs=4 * std.item() / math.sqrt(4000) + 2e-3)
    assert torch.equal(x, x0)
