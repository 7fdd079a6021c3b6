"""How fast can digits-quick be on this CPU without changing its results? A lower bound from FLOPs.

    python bench/floor.py [--preset digits-quick] [--steps 200]

Counts the FLOPs of one DDPM and one AE training step (torch's FlopCounterMode, forward and
backward), measures the step time, and measures this core's best fp32 rate on a matmul of the
same shape as the denoiser's 64->64 convs, unfolded. stage FLOPs / best rate is the time the stage
would take at that rate: a floor for any exact rewrite of the same model, steps and batch. One thread,
as runs use."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pdiff_core.autoencoder import ParamAutoencoder  # noqa: E402
from pdiff_core.config import preset_config  # noqa: E402
from pdiff_core.diffusion import Denoiser, Schedule  # noqa: E402
from pdiff_core.optim import adamw  # noqa: E402


def per_step(step, n: int) -> float:
    for _ in range(20):
        step()
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t0) / n


def flops(step) -> int:
    with FlopCounterMode(display=False) as fc:
        step()
    return fc.get_total_flops()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="digits-quick")
    ap.add_argument("--steps", type=int, default=200, help="timed steps per stage")
    ap.add_argument("--dim", type=int, default=256, help="D, the generated parameters (digits-quick: 256)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = preset_config(a.preset)

    # the DDPM's step, as train_ddpm takes it
    den, sched = Denoiser(cfg.latent_dim, cfg.ddpm_channels), Schedule(cfg.timesteps, cfg.beta_start, cfg.beta_end)
    dopt = adamw(den.parameters(), cfg.ddpm_lr, 0.0, "cpu")
    lat = torch.randn(cfg.k, cfg.latent_dim)

    def ddpm_step():
        x0 = lat[torch.randint(len(lat), (cfg.ddpm_batch,))]
        t, noise = torch.randint(sched.T, (len(x0),)), torch.randn_like(x0)
        loss = F.mse_loss(den(sched.q_sample(x0, t, noise), t), noise)
        dopt.zero_grad(set_to_none=True)
        loss.backward()
        dopt.step()

    # the AE's step, as train_autoencoder takes it (the noise is inside forward)
    ae = ParamAutoencoder(a.dim, cfg.latent_dim, cfg.ae_channels, cfg.in_noise, cfg.latent_noise)
    aopt = adamw(ae.parameters(), cfg.ae_lr, 2e-6, "cpu")
    zoo = torch.randn(cfg.k, a.dim)

    def ae_step():
        x = zoo[torch.randint(len(zoo), (cfg.ae_batch,))]
        loss = F.mse_loss(ae(x), x)
        aopt.zero_grad(set_to_none=True)
        loss.backward()
        aopt.step()

    # the best rate this core reaches on the denoiser's main work: a 64->64, k=3 conv as one matmul
    c = cfg.ddpm_channels
    u, w = torch.randn(cfg.ddpm_batch * Denoiser.LENGTH, 3 * c), torch.randn(3 * c, c)
    mm = per_step(lambda: u @ w, 20 * a.steps)
    best = 2 * u.shape[0] * u.shape[1] * c / mm

    print(f"{a.preset}: one thread, torch {torch.__version__}, best fp32 matmul rate {best / 1e9:.0f} GFLOP/s "
          f"({u.shape[0]}x{u.shape[1]} @ {u.shape[1]}x{c})\n")
    print("| stage | steps | MFLOP/step | ms/step measured | GFLOP/s | stage s measured | stage s at best rate |")
    print("|---|---|---|---|---|---|---|")
    floor = 0.0
    for name, step, n in (("DDPM", ddpm_step, cfg.ddpm_steps), ("AE", ae_step, cfg.ae_steps)):
        f, s = flops(step), per_step(step, a.steps)
        floor += n * f / best
        print(f"| {name} | {n} | {f / 1e6:.0f} | {1e3 * s:.2f} | {f / s / 1e9:.0f} | {n * s:.1f} | {n * f / best:.1f} |")
    print(f"\nThe two training stages alone need at least {floor:.1f} s at the best rate, before imports, data, "
          "collection, generation, evaluation and analysis.")


if __name__ == "__main__":
    main()
