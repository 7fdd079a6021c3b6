"""Baselines that need no diffusion model, built from the same K checkpoints (Zeng et al. 2025).

If one of these reaches the generated models' accuracy at the same novelty, the diffusion
model adds nothing that a cheap recipe could not. Every function takes the (K, D) raw
checkpoint matrix and returns an (n, D) matrix of raw parameter vectors."""
from __future__ import annotations

import torch

from .params import Codec

NOISE_SIGMAS = (0.001, 0.01, 0.05, 0.1, 0.15)
N_FAMILIES = len(NOISE_SIGMAS) + 4   # make_baselines: noise_*, average, average16, gaussian, interpolation
SUBSET = 16   # checkpoints per average in the "average16" family


def noise(theta: torch.Tensor, codec: Codec, sigma: float, n: int, gen: torch.Generator) -> torch.Tensor:
    """A random checkpoint plus sigma * N(0, 1) in per-tensor normalized units."""
    src = torch.randint(len(theta), (n,), generator=gen)
    z = codec.normalize(theta[src].double())
    return codec.denormalize(z + sigma * torch.randn(z.shape, generator=gen, dtype=z.dtype)).float()


def average(theta: torch.Tensor) -> torch.Tensor:
    """The soup: the mean of all checkpoints, one model."""
    return theta.double().mean(dim=0, keepdim=True).float()


def average_subsets(theta: torch.Tensor, n: int, gen: torch.Generator, size: int = SUBSET) -> torch.Tensor:
    """n means of `size` distinct random checkpoints (all K when K < size)."""
    size = min(size, len(theta))
    idx = torch.stack([torch.randperm(len(theta), generator=gen)[:size] for _ in range(n)])
    return theta.double()[idx].mean(dim=1).float()


def gaussian(theta: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """Independent normal per coordinate, fitted to the checkpoints."""
    t = theta.double()
    mean, std = t.mean(dim=0), t.std(dim=0)
    return (mean + std * torch.randn((n, t.shape[1]), generator=gen, dtype=t.dtype)).float()


def interpolation(theta: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """lam * theta_a + (1 - lam) * theta_b for random pairs a != b, lam ~ U(0, 1)."""
    k = len(theta)
    a = torch.randint(k, (n,), generator=gen)
    b = (a + torch.randint(1, k, (n,), generator=gen)) % k   # never equal to a
    lam = torch.rand((n, 1), generator=gen, dtype=torch.float64)
    t = theta.double()
    return (lam * t[a] + (1 - lam) * t[b]).float()


def make_baselines(theta: torch.Tensor, codec: Codec, n: int, seed: int) -> dict[str, torch.Tensor]:
    """Every family, in a fixed order, from one seeded generator: same seed, same vectors."""
    gen = torch.Generator().manual_seed(seed)
    out = {f"noise_{s:g}": noise(theta, codec, s, n, gen) for s in NOISE_SIGMAS}
    out["average"] = average(theta)
    out["average16"] = average_subsets(theta, n, gen)
    out["gaussian"] = gaussian(theta, n, gen)
    out["interpolation"] = interpolation(theta, n, gen)
    return out
