import torch

from pdiff_core.config import RunConfig
from pdiff_core.diffusion import Denoiser, Schedule, sample_ddim, sample_ddpm, train_ddpm


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


def test_ddpm_learns_a_two_point_distribution():
    """Trained on two latents, both samplers land near them (not on random noise)."""
    torch.manual_seed(0)
    data = torch.stack([torch.full((16,), 1.0), torch.full((16,), -1.0)]).repeat(32, 1)
    cfg = RunConfig(ddpm_steps=600, ddpm_lr=3e-3, ddpm_channels=32, ddpm_batch=64)
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
