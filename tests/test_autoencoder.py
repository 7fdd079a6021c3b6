import pytest
import torch

from pdiff_core.autoencoder import ParamAutoencoder, conv_plan, train_autoencoder
from pdiff_core.config import RunConfig


def test_conv_plan_scales_with_dim():
    for dim in (10, 256, 2048, 50_000):
        levels, ch, padded = conv_plan(dim, 64)
        assert padded >= dim and padded % 4 ** levels == 0
        assert padded // 4 ** levels <= 64 or levels == 8
        assert max(ch) <= 64


def test_shapes_for_odd_dims():
    for dim in (7, 256, 1001):
        ae = ParamAutoencoder(dim, latent_dim=12, max_channels=16).eval()
        x = torch.randn(3, dim)
        z = ae.encode(x)
        assert z.shape == (3, 12) and ae.decode(z).shape == (3, dim) and ae(x).shape == (3, dim)


@pytest.mark.slow
def test_reconstructs_a_toy_trajectory():
    """Points on a smooth 2-D curve in 300-D: a trained AE reconstructs them far better than the mean."""
    torch.manual_seed(0)
    s = torch.linspace(0, 1, 64)[:, None]
    basis = torch.randn(2, 300)
    x = torch.cat([torch.sin(3 * s), torch.cos(2 * s)], 1) @ basis
    x = (x - x.mean()) / x.std()
    cfg = RunConfig(ae_steps=600, ae_lr=3e-3, latent_dim=8, ae_channels=16, ae_batch=32)
    ae = train_autoencoder(x, cfg, "cpu", lambda f, m: None, lambda s, l: None)
    assert not ae.training                    # returned in eval mode
    with torch.no_grad():
        err = ((ae.decode(ae.encode(x)) - x) ** 2).mean()
        again = ((ae.decode(ae.encode(x)) - x) ** 2).mean()
    baseline = ((x - x.mean(0)) ** 2).mean()
    assert err < 0.05 * baseline
    assert err == again                       # eval mode: no noise when encoding/decoding


def test_any_step_count_trains():
    """Short runs (1 step, a few steps) must not trip the lr schedule."""
    x = torch.randn(8, 40)
    for steps in (1, 3, 10):
        cfg = RunConfig(ae_steps=steps, latent_dim=4, ae_channels=8)
        assert train_autoencoder(x, cfg, "cpu", lambda f, m: None, lambda s, l: None).encode(x).shape == (8, 4)
