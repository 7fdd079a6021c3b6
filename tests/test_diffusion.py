import pytest
import torch

from pdiff_core.config import RunConfig
from pdiff_core.diffusion import (Denoiser, GaussianEps, Guided, Schedule, quadratic_timesteps, sample, sample_ddim,
                                  sample_ddpm, sample_dpm2m, train_ddpm)


def test_schedule_matches_linear_betas():
    s = Schedule(1000, 1e-4, 2e-2)
    assert torch.isclose(s.betas[0], torch.tensor(1e-4)) and torch.isclose(s.betas[-1], torch.tensor(2e-2))
    expected = torch.cumprod(1 - torch.linspace(1e-4, 2e-2, 1000, dtype=torch.float64), 0)
    assert torch.allclose(s.alpha_bar.double(), expected, rtol=1e-5)
    assert s.alpha_bar[-1] < 1e-4     # almost pure noise at t = T


def test_forward_noising_statistics():
    """x_t has mean sqrt(abar) x0 and variance 1 - abar, per sample's own t."""
    torch.manual_seed(0)
    s = Schedule(1000)
    x0 = torch.full((20000, 4), 2.0)
    for t in (0, 250, 999):
        tt = torch.full((len(x0),), t)
        xt = s.q_sample(x0, tt, torch.randn_like(x0))
        ab = s.alpha_bar[t]
        assert abs(xt.mean() - 2.0 * ab.sqrt()) < 0.02
        assert abs(xt.var() - (1 - ab)) < 0.02 * max(1.0, float(1 - ab)) + 1e-4
    # mixed timesteps in one batch: each row uses its own t
    t = torch.tensor([0, 999])
    xt = s.q_sample(torch.ones(2, 3), t, torch.zeros(2, 3))
    assert torch.allclose(xt[0], s.alpha_bar[0].sqrt().expand(3)) and torch.allclose(xt[1], s.alpha_bar[999].sqrt().expand(3))


def test_denoiser_uses_each_samples_timestep():
    torch.manual_seed(0)
    net = Denoiser(16, 16).eval()
    x = torch.randn(1, 16).repeat(2, 1)
    out = net(x, torch.tensor([3, 900]))
    assert out.shape == (2, 16)
    assert not torch.allclose(out[0], out[1])     # same input, different t -> different output
    single = net(x[:1], torch.tensor([900]))
    assert torch.allclose(single[0], out[1], atol=1e-5)


def test_samplers_shapes_and_determinism():
    torch.manual_seed(0)
    net = Denoiser(20, 16).eval()
    s = Schedule(100)
    a = sample_ddim(net, s, 7, 10, torch.Generator().manual_seed(1))
    b = sample_ddim(net, s, 7, 10, torch.Generator().manual_seed(1))
    c = sample_ddim(net, s, 7, 10, torch.Generator().manual_seed(2))
    assert a.shape == (7, 20) and torch.equal(a, b) and not torch.allclose(a, c)
    d = sample_ddpm(net, s, 5, torch.Generator().manual_seed(1))
    e = sample_ddpm(net, s, 5, torch.Generator().manual_seed(1))
    assert d.shape == (5, 20) and torch.equal(d, e) and torch.isfinite(d).all()


@pytest.mark.slow
def test_ddpm_learns_a_two_point_distribution():
    """Trained on two latents, both samplers land near them (not on random noise)."""
    torch.manual_seed(0)
    data = torch.stack([torch.full((16,), 1.0), torch.full((16,), -1.0)]).repeat(32, 1)
    cfg = RunConfig(ddpm_steps=300, ddpm_lr=3e-3, ddpm_channels=32, ddpm_batch=64)   # median 0.07 at 300 (0.02 at 600)
    net = train_ddpm(data, cfg, "cpu", lambda f, m: None, lambda s, l: None)
    s = Schedule(1000)
    for x in (sample_ddim(net, s, 64, 20, torch.Generator().manual_seed(0), clip=1.5),
              sample_ddpm(net, s, 64, torch.Generator().manual_seed(0), clip=1.5)):
        dist = torch.cdist(x, data[:2]).min(dim=1).values / 4.0    # relative to |x0| = 4
        assert dist.median() < 0.25
        assert x.abs().max() <= 1.5 + 1e-4 or dist.max() < 1.0     # clipping keeps samples in range


def test_x0_clipping_bounds_ddim_output():
    torch.manual_seed(0)
    net = Denoiser(8, 8).eval()     # untrained: eps is arbitrary
    x = sample_ddim(net, Schedule(1000), 16, 10, torch.Generator().manual_seed(0), clip=2.0)
    assert x.abs().max() <= 2.0 + 1e-4


# --- samplers against an exact eps-predictor (issue 10): a sampler that shrinks samples toward the
# mean biases generated models toward the `average` baseline, the very thing the app measures.

def _gaussian(std: float, dim: int = 16):
    mu = torch.linspace(-1.0, 1.0, dim)
    return mu, torch.full((dim,), std)


def _sample(cfg: RunConfig, net, sched, n: int, seed: int, clip):
    """The pipeline's generate stage: cfg.sampler, cfg.ddim_steps, cfg.ddim_eta."""
    gen = torch.Generator().manual_seed(seed)
    return sample(net, sched, n, cfg.sampler, cfg.ddim_steps, gen, eta=cfg.ddim_eta, clip=clip)


def test_gaussian_eps_is_the_exact_predictor():
    """E[eps | x_t] by Monte Carlo matches the closed form used below."""
    torch.manual_seed(0)
    s = Schedule(1000)
    mu, std = _gaussian(0.3, 4)
    net = GaussianEps(mu, std, s)
    t = 400
    ab = s.alpha_bar[t]
    x0 = mu + std * torch.randn(400000, 4)
    eps = torch.randn_like(x0)
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    pred = net(xt, torch.full((len(xt),), t))
    assert ((pred - eps) ** 2).mean() < ((eps - 0) ** 2).mean()          # better than predicting 0
    # the residual is orthogonal to x_t (least squares in x_t): the regression is exact
    assert (((pred - eps) * (xt - xt.mean(0))).mean(0).abs() < 5e-3).all()


def test_default_sampler_keeps_a_gaussians_spread_and_mean():
    """RunConfig()'s sampler, fed the exact eps of N(mu, s^2), returns std within 2 % and the mean,
    with and without the pipeline's x0 clip (1.5 * max |training latent|)."""
    cfg = RunConfig()
    sched = Schedule(cfg.timesteps, cfg.beta_start, cfg.beta_end)
    for std in (0.3, 1.0):
        mu, sd = _gaussian(std)
        net = GaussianEps(mu, sd, sched)
        train = mu + sd * torch.randn((200, len(mu)), generator=torch.Generator().manual_seed(1))
        for clip in (None, 1.5 * float(train.abs().max())):
            x = _sample(cfg, net, sched, 4000, 0, clip)
            ratio = float(x.std(dim=0).mean() / std)
            assert abs(ratio - 1) < 0.02, (cfg.sampler, cfg.ddim_steps, cfg.ddim_eta, std, clip, ratio)
            assert (x.mean(dim=0) - mu).abs().max() < 4 * std / 4000 ** 0.5 + 1e-3, (std, clip)


def test_gaussian_check_catches_a_shrinking_sampler():
    """The same check fails few-step deterministic DDIM (it shrinks toward the mean: the issue's
    0.181 for s = 0.3 with 10 steps), so it can tell a broken default."""
    sched = Schedule(1000)
    mu, sd = _gaussian(0.3)
    net = GaussianEps(mu, sd, sched)
    for steps, eta, hi in ((10, 0.0, 0.65), (50, 0.0, 0.95), (50, 1.0, 0.9)):
        x = sample_ddim(net, sched, 4000, steps, torch.Generator().manual_seed(0), eta=eta)
        assert float(x.std(dim=0).mean() / 0.3) < hi, (steps, eta)


def test_dpm2m_beats_ddim_at_equal_steps_and_is_deterministic():
    """DPM-Solver++(2M) at 50 steps keeps the spread at every scale where DDIM at 50 loses it;
    the same start noise gives the same samples."""
    sched = Schedule(1000)
    for std in (0.1, 0.3, 1.0):
        mu, sd = _gaussian(std)
        net = GaussianEps(mu, sd, sched)
        x = sample_dpm2m(net, sched, 4000, 50, torch.Generator().manual_seed(0))
        assert abs(float(x.std(dim=0).mean() / std) - 1) < 0.02, std
        d = sample_ddim(net, sched, 4000, 50, torch.Generator().manual_seed(0))
        assert float(d.std(dim=0).mean() / std) < 0.97, std
    again = sample_dpm2m(net, sched, 4000, 50, torch.Generator().manual_seed(0))
    assert torch.equal(x, again)
    ts = quadratic_timesteps(1000, 200)
    assert ts[0] == 999 and ts[-1] == 0 and len(ts) == len(set(ts)) and ts == sorted(ts, reverse=True)


# --- task conditioning and classifier-free guidance

def _quiet_train(data, cfg, **kw):
    losses = []
    net = train_ddpm(data, cfg, "cpu", lambda f, m: None, lambda s, l: losses.append(l), **kw)
    return net, losses


def test_unconditional_denoiser_and_training_are_unchanged():
    """cond_dim=0 builds exactly the pre-conditioning net (names and seeded initial values: the
    conditional parts are created last), and train_ddpm(cond=None) is bit-identical to the old call."""
    torch.manual_seed(3)
    plain = Denoiser(20, 16)
    torch.manual_seed(3)
    default = Denoiser(20, 16, cond_dim=0)
    torch.manual_seed(3)
    cond = Denoiser(20, 16, cond_dim=4)
    p, d, c = plain.state_dict(), default.state_dict(), cond.state_dict()
    assert list(p) == list(d) and all(torch.equal(p[k], d[k]) for k in p)
    assert not any(k.startswith("cond.") or k == "null" for k in p)
    assert set(c) - set(p) == {"null"} | {k for k in c if k.startswith("cond.")} and len(set(c) - set(p)) == 5
    assert all(torch.equal(p[k], c[k]) for k in p)      # shared parameters: same values
    assert torch.equal(c["null"], torch.zeros(4))

    data = torch.randn((40, 20), generator=torch.Generator().manual_seed(0))
    cfg = RunConfig(ddpm_steps=30, ddpm_lr=3e-3, ddpm_channels=16, ddpm_batch=16)
    torch.manual_seed(0)
    a, la = _quiet_train(data, cfg)
    torch.manual_seed(0)
    b, lb = _quiet_train(data, cfg, cond=None, p_uncond=0.0)
    assert la == lb and len(la) == 3
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_condition_errors():
    x, t = torch.zeros(2, 8), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError):
        Denoiser(8, 8)(x, t, torch.zeros(2, 3))         # an unconditional net takes no condition
    with pytest.raises(ValueError):
        Denoiser(8, 8, cond_dim=3)(x, t, torch.zeros(2, 4))
    with pytest.raises(ValueError):
        Guided(Denoiser(8, 8), torch.zeros(3))
    with pytest.raises(ValueError):
        train_ddpm(torch.zeros(4, 8), RunConfig(), "cpu", None, None, p_uncond=0.1)
    with pytest.raises(ValueError):
        train_ddpm(torch.zeros(4, 8), RunConfig(), "cpu", None, None, cond=torch.zeros(3, 2))


def test_guided_scale_one_is_the_conditional_net():
    torch.manual_seed(0)
    net = Denoiser(12, 8, cond_dim=3).eval()
    with torch.no_grad():
        net.null.normal_()                              # a null distinct from any condition
    x, t = torch.randn(5, 12), torch.tensor([0, 10, 200, 500, 999])
    c = torch.tensor([1.0, 0.0, 0.5])
    assert torch.equal(Guided(net, c)(x, t), net(x, t, c.expand(5, -1)))
    rows = torch.randn(5, 3)
    assert torch.equal(Guided(net, rows)(x, t), net(x, t, rows))
    assert Guided(net, c).latent_dim == 12
    # scale s: eps_u + s (eps_c - eps_u), the null eps from the same net
    eps_c, eps_u = net(x, t, c.expand(5, -1)), net(x, t)
    assert torch.allclose(Guided(net, c, 3.0)(x, t), eps_u + 3.0 * (eps_c - eps_u), atol=1e-5)
    assert torch.allclose(Guided(net, c, 0.0)(x, t), eps_u, atol=1e-6)


@pytest.mark.slow
def test_conditional_ddpm_learns_two_conditional_distributions():
    """Condition A = [1, 0] -> N(+2, 0.3^2), B = [0, 1] -> N(-2, 0.3^2) per coordinate. Each
    condition's samples land on its own mode (a net that ignored cond would put both at the same
    mixture), guidance keeps A on +2, and the null condition gives the mixture of both modes."""
    torch.manual_seed(0)
    n, dim = 128, 4
    g = torch.Generator().manual_seed(0)
    data = torch.cat([2.0 + 0.3 * torch.randn(n, dim, generator=g), -2.0 + 0.3 * torch.randn(n, dim, generator=g)])
    ca, cb = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    cond = torch.cat([ca.expand(n, -1), cb.expand(n, -1)])
    cfg = RunConfig(ddpm_steps=400, ddpm_lr=3e-3, ddpm_channels=16, ddpm_batch=64)
    net, _ = _quiet_train(data, cfg, cond=cond, p_uncond=0.2)
    s = Schedule(cfg.timesteps, cfg.beta_start, cfg.beta_end)
    clip = 1.5 * float(data.abs().max())     # the pipeline's x0 clip: a briefly trained net throws a few far off

    def draw(model, seed=0):
        return sample(model, s, 200, "dpm2m", 25, torch.Generator().manual_seed(seed), clip=clip)

    xa, xb = draw(Guided(net, ca)), draw(Guided(net, cb))
    assert abs(float(xa.mean()) - 2.0) < 0.5 and abs(float(xb.mean()) + 2.0) < 0.5, (xa.mean(), xb.mean())
    assert (xa.mean(dim=1) > 0).float().mean() > 0.9 and (xb.mean(dim=1) < 0).float().mean() > 0.9
    guided = draw(Guided(net, ca, scale=2.0), seed=1)
    assert abs(float(guided.mean()) - 2.0) < 0.5 and (guided.mean(dim=1) > 0).float().mean() > 0.95
    null = draw(net)                                # unconditional: the learned null condition
    frac_pos = float((null.mean(dim=1) > 0).float().mean())
    assert 0.15 < frac_pos < 0.85, frac_pos            # both modes present, not one condition's
    assert null.mean(dim=1).abs().median() > 1.0       # bimodal, not collapsed between the modes
