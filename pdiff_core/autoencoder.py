"""Stage 2: the parameter autoencoder. A strided 1-D conv encoder to a linear latent, and its
mirror as decoder. Noise on the input (small) and on the latent (large) during training is
what makes the decoder turn any nearby latent into working parameters."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import RunConfig
from .optim import adamw, fit


STRIDE = 4   # each conv level shrinks the sequence 4x: few layers, so few (slow on CPU) conv calls


def conv_plan(dim: int, max_channels: int, target_len: int = 16) -> tuple[int, list[int], int]:
    """Size the network to D: shrink the length until about `target_len` positions remain, so
    the cost grows linearly with D and channels stay small where the sequence is long."""
    levels = max(1, min(8, math.ceil(math.log(max(dim, 2) / target_len, STRIDE))))
    channels = [min(8 * 2 ** i, max_channels) for i in range(levels)]
    padded = math.ceil(dim / STRIDE ** levels) * STRIDE ** levels
    return levels, channels, padded


class ParamAutoencoder(nn.Module):
    def __init__(self, dim: int, latent_dim: int = 64, max_channels: int = 32,
                 in_noise: float = 0.001, latent_noise: float = 0.1):
        super().__init__()
        self.dim, self.latent_dim = dim, latent_dim
        self.in_noise, self.latent_noise = in_noise, latent_noise
        levels, ch, self.padded = conv_plan(dim, max_channels)
        self.bottom_len, self.bottom_ch = self.padded // STRIDE ** levels, ch[-1]
        enc, cin = [], 1
        for c in ch:
            enc += [nn.Conv1d(cin, c, 2 * STRIDE, stride=STRIDE, padding=STRIDE // 2), nn.LeakyReLU(0.2)]
            cin = c
        self.encoder = nn.Sequential(*enc, nn.Flatten(), nn.Linear(cin * self.bottom_len, latent_dim))
        dec = []
        for c_in, c_out in zip(ch[::-1], ch[::-1][1:]):
            dec += [nn.ConvTranspose1d(c_in, c_out, 2 * STRIDE, stride=STRIDE, padding=STRIDE // 2), nn.LeakyReLU(0.2)]
        # the last layer goes straight to one channel: no multi-channel tensor at full length D
        dec.append(nn.ConvTranspose1d(ch[0], 1, 2 * STRIDE, stride=STRIDE, padding=STRIDE // 2))
        self.from_latent = nn.Linear(latent_dim, ch[-1] * self.bottom_len)
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, self.padded - self.dim)).unsqueeze(1)
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.from_latent(z).view(-1, self.bottom_ch, self.bottom_len)
        return self.decoder(F.leaky_relu(h, 0.2)).squeeze(1)[:, :self.dim]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Training pass: noisy input, noisy latent, reconstruction of the clean input."""
        z = self.encode(x + self.in_noise * torch.randn_like(x))
        return self.decode(z + self.latent_noise * torch.randn_like(z))


def train_autoencoder(x: torch.Tensor, cfg: RunConfig, device: str, tick, log_loss) -> ParamAutoencoder:
    """x: (K, D) normalized checkpoints. Returns the AE in eval mode."""
    ae = ParamAutoencoder(x.shape[1], cfg.latent_dim, cfg.ae_channels, cfg.in_noise, cfg.latent_noise).to(device)
    opt = adamw(ae.parameters(), cfg.ae_lr, 2e-6, device)
    x = x.to(device)
    batch = min(cfg.ae_batch, len(x))
    ae.train()

    def one_step() -> torch.Tensor:
        xb = x[torch.randint(len(x), (batch,), device=device)]
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device == "cuda", cache_enabled=False):
            loss = F.mse_loss(ae(xb).float(), xb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()   # frees the autograd graph now, not at the next step

    fit(one_step, opt, cfg.ae_steps, device, tick, log_loss, "autoencoder")
    return ae.eval()


def latent_scale(lat: torch.Tensor) -> tuple[float, float, float]:
    """(mean, std, x0 clip) of encoded checkpoints: the DDPM sees latents scaled to unit variance,
    and samplers keep their x0 estimate within 1.5x the scaled data's largest value."""
    mean, std = float(lat.mean()), float(lat.std())
    return mean, std, 1.5 * float(((lat - mean) / std).abs().max())
