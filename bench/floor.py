"""How fast can digits-quick be on this CPU without changing its results? A lower bound from FLOPs.

    python bench/floor.py [--preset digits-quick] [--steps 200]

Runs the stages' own training functions (diffusion.train_ddpm, autoencoder.train_autoencoder):
counts the FLOPs of one step (torch's FlopCounterMode: matmuls and convs, forward and backward), times
--steps of them, and measures this core's best fp32 rate on a matmul of the same shape as the
denoiser's 64->64 convs, unfolded. Stage FLOPs / best rate is the time the stage would take at that
rate: a floor for any exact rewrite of the same model, steps and batch. One thread, as runs use."""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pdiff_core.autoencoder import train_autoencoder  # noqa: E402
from pdiff_core.config import preset_config  # noqa: E402
from pdiff_core.diffusion import Denoiser, train_ddpm  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="digits-quick")
    ap.add_argument("--steps", type=int, default=200, help="timed steps per stage")
    ap.add_argument("--dim", type=int, default=256, help="D, the generated parameters (digits-quick: 256)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = preset_config(a.preset)

    quiet = dict(device="cpu", tick=lambda *_: None, log_loss=lambda *_: None)
    # stand-in data of the real shapes (a step's cost does not depend on the values): K latents, K vectors of D
    stages = (("DDPM", "ddpm_steps", lambda c: train_ddpm(torch.randn(c.k, c.latent_dim), c, **quiet)),
              ("AE", "ae_steps", lambda c: train_autoencoder(torch.randn(c.k, a.dim), c, **quiet)))

    # the best rate this core reaches on the denoiser's main work: a 64->64, k=3 conv as one matmul
    c = cfg.ddpm_channels
    u, w = torch.randn(cfg.ddpm_batch * Denoiser.LENGTH, 3 * c), torch.randn(3 * c, c)
    for _ in range(100):
        u @ w
    t0 = time.perf_counter()
    for _ in range(20 * a.steps):
        u @ w
    mm = (time.perf_counter() - t0) / (20 * a.steps)
    best = 2 * u.shape[0] * u.shape[1] * c / mm

    print(f"{a.preset}: one thread, torch {torch.__version__}, best fp32 matmul rate {best / 1e9:.0f} GFLOP/s "
          f"({u.shape[0]}x{u.shape[1]} @ {u.shape[1]}x{c})\n")
    print("| stage | steps | MFLOP/step | ms/step measured | GFLOP/s | stage s measured | stage s at best rate |")
    print("|---|---|---|---|---|---|---|")
    floor = 0.0
    for name, field, train in stages:
        with FlopCounterMode(display=False) as fc:         # one step; building the model counts no FLOPs
            train(dataclasses.replace(cfg, **{field: 1}))
        f, n = fc.get_total_flops(), getattr(cfg, field)
        train(dataclasses.replace(cfg, **{field: 20}))     # warm-up
        t0 = time.perf_counter()
        train(dataclasses.replace(cfg, **{field: a.steps}))
        s = (time.perf_counter() - t0) / a.steps
        floor += n * f / best
        print(f"| {name} | {n} | {f / 1e6:.0f} | {1e3 * s:.2f} | {f / s / 1e9:.0f} | {n * s:.1f} | {n * f / best:.1f} |")
    print(f"\nThe two training stages alone need at least {floor:.1f} s at the best rate, before imports, data, "
          "collection, generation, evaluation and analysis.")


if __name__ == "__main__":
    main()
