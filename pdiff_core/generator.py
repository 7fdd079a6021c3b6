"""A run's generator on disk: the trained autoencoder and denoiser, with the latent scaling and x0
clip it sampled with. The plain pipeline and transfer both save it; sampling more models later
(the new-task heads, the benchmarks) loads it back."""
from __future__ import annotations

from pathlib import Path

import torch

from . import runs
from .autoencoder import ParamAutoencoder
from .config import RunConfig
from .diffusion import Denoiser


def save_generator(run_dir: Path, ae, denoiser, lat_mean: float, lat_std: float, clip: float, dim: int) -> None:
    runs.write_safetensors(Path(run_dir) / "ae.safetensors", ae.state_dict(),
                           {"latent_mean": str(lat_mean), "latent_std": str(lat_std), "x0_clip": str(clip),
                            "dim": str(dim)})
    runs.write_safetensors(Path(run_dir) / "denoiser.safetensors", denoiser.state_dict())


def decode(ae, codec, g: torch.Tensor, lat_mean: float, lat_std: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampled latents, in the unit scale the DDPM was trained on, to (AE latents, raw parameters)."""
    lat = g.float() * lat_std + lat_mean
    return lat, codec.denormalize(ae.decode(lat).float())


def load_generator(run_dir: Path, cfg: RunConfig, device: str = "cpu"):
    """(autoencoder, denoiser, scale) in eval mode: everything needed to sample more models."""
    ae_state, meta = runs.read_safetensors(Path(run_dir) / "ae.safetensors")
    ae = ParamAutoencoder(int(meta["dim"]), cfg.latent_dim, cfg.ae_channels, cfg.in_noise, cfg.latent_noise)
    ae.load_state_dict(ae_state)
    state = runs.read_safetensors(Path(run_dir) / "denoiser.safetensors")[0]
    cond_dim = len(state["null"]) if "null" in state else 0      # a task-conditioned denoiser (transfer runs)
    denoiser = Denoiser(cfg.latent_dim, cfg.ddpm_channels, cond_dim=cond_dim)
    denoiser.load_state_dict(state)
    scale = {k: float(meta[k]) for k in ("latent_mean", "latent_std", "x0_clip")}
    return ae.to(device).eval(), denoiser.to(device).eval(), scale
