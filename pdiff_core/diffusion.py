"""Stage 3: DDPM on AE latents. Linear beta schedule, epsilon prediction, a small 1-D conv
U-Net denoiser with a sinusoidal time embedding, and batched DDPM and DDIM samplers. Optionally
conditioned on a task vector, with classifier-free guidance at sampling time (Guided)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import RunConfig
from .optim import adamw, fit


class Schedule:
    def __init__(self, timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 2e-2,
                 device: str = "cpu"):
        self.T = timesteps
        self.betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
        self.alpha_bar = torch.cumprod(1 - self.betas, dim=0)
        self.betas, self.alpha_bar = self.betas.float().to(device), self.alpha_bar.float().to(device)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, with one t per sample."""
        ab = self.alpha_bar[t].view(-1, *([1] * (x0.dim() - 1)))
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = (dim + 1) // 2    # an odd dim (ddpm_channels=1, 3, ...) drops the last cosine
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1)[:, :dim]


def norm_groups(channels: int) -> int:
    """The most GroupNorm groups, at most 8, that divide `channels` (8 for 64, 6 for 12, 1 for 7)."""
    return max(g for g in range(1, min(8, channels) + 1) if channels % g == 0)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, tdim: int):
        super().__init__()
        self.n1, self.c1 = nn.GroupNorm(norm_groups(cin), cin), nn.Conv1d(cin, cout, 3, padding=1)
        self.t = nn.Linear(tdim, cout)
        self.n2, self.c2 = nn.GroupNorm(norm_groups(cout), cout), nn.Conv1d(cout, cout, 3, padding=1)
        self.skip = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, temb):
        h = self.c1(F.silu(self.n1(x))) + self.t(temb)[:, :, None]   # each sample gets its own timestep
        return self.skip(x) + self.c2(F.silu(self.n2(h)))


class Denoiser(nn.Module):
    """eps_theta(x_t, t) for latents of shape (B, L). The latent is read as L/LENGTH channels of
    LENGTH positions (on CPU the cost is the number and size of conv calls), then a stack of
    residual conv blocks whose receptive field covers the whole latent.
    With cond_dim > 0, a condition vector (B, cond_dim) is embedded and added to the time
    embedding; `null` is the learned "no condition" input used for classifier-free guidance."""
    LENGTH = 16

    def __init__(self, latent_dim: int, channels: int = 64, cond_dim: int = 0):
        super().__init__()
        c = channels
        self.in_ch = math.ceil(latent_dim / self.LENGTH)
        self.latent_dim, self.padded = latent_dim, self.in_ch * self.LENGTH
        depth = math.ceil((self.LENGTH - 1) / 4)     # each block's two k=3 convs see 4 more positions
        self.c = c
        self.temb = nn.Sequential(nn.Linear(c, 2 * c), nn.SiLU(), nn.Linear(2 * c, 2 * c))
        self.inp = nn.Conv1d(self.in_ch, c, 3, padding=1)
        self.blocks = nn.ModuleList(ResBlock(c, c, 2 * c) for _ in range(depth))
        self.out = nn.Sequential(nn.GroupNorm(norm_groups(c), c), nn.SiLU(), nn.Conv1d(c, self.in_ch, 3, padding=1))
        self.cond_dim = cond_dim
        if cond_dim > 0:   # created last: the RNG draws for the modules above stay as without cond
            self.cond = nn.Sequential(nn.Linear(cond_dim, 2 * c), nn.SiLU(), nn.Linear(2 * c, 2 * c))
            self.null = nn.Parameter(torch.zeros(cond_dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        """cond: (B, cond_dim), None = the null condition. drop: optional (B,) bool, True rows use
        the null condition instead (classifier-free guidance training; a tensor op, graph-safe)."""
        temb = self.temb(timestep_embedding(t, self.c))
        if self.cond_dim:
            if cond is None:
                c = self.null.expand(len(x), -1)
            elif cond.shape != (len(x), self.cond_dim):
                raise ValueError(f"cond must have shape ({len(x)}, {self.cond_dim}), got {tuple(cond.shape)}")
            else:
                c = cond.to(self.null.dtype)
            if drop is not None:
                c = torch.where(drop[:, None], self.null.expand_as(c), c)
            temb = temb + self.cond(c)
        elif cond is not None or drop is not None:
            raise ValueError("this Denoiser was built without cond_dim; it takes no condition")
        h = self.inp(F.pad(x, (0, self.padded - self.latent_dim)).view(len(x), self.in_ch, self.LENGTH))
        for block in self.blocks:
            h = block(h, temb)
        return self.out(h).flatten(1)[:, :self.latent_dim]


def train_ddpm(latents: torch.Tensor, cfg: RunConfig, device: str, tick, log_loss,
               cond: torch.Tensor | None = None, p_uncond: float = 0.0) -> Denoiser:
    """cond: optional (N, cond_dim), row i the condition of latents[i]. p_uncond: the fraction of
    each batch trained with the null condition instead, which classifier-free guidance needs.
    Without cond the random draws, and so the result, are exactly those of an unconditional run."""
    if cond is None:
        if p_uncond:
            raise ValueError("p_uncond needs cond")
    elif cond.dim() != 2 or len(cond) != len(latents):
        raise ValueError(f"cond must have shape ({len(latents)}, cond_dim), got {tuple(cond.shape)}")
    if not 0.0 <= p_uncond < 1.0:
        raise ValueError(f"p_uncond must be in [0, 1), got {p_uncond}")
    sched = Schedule(cfg.timesteps, cfg.beta_start, cfg.beta_end, device)
    net = Denoiser(latents.shape[1], cfg.ddpm_channels, cond_dim=0 if cond is None else cond.shape[1]).to(device)
    opt = adamw(net.parameters(), cfg.ddpm_lr, 0.0, device)
    x = latents.to(device)
    conds = None if cond is None else cond.to(device, torch.float32)
    batch = min(cfg.ddpm_batch, len(x))
    net.train()

    def one_step() -> torch.Tensor:
        idx = torch.randint(len(x), (batch,), device=device)
        x0 = x[idx]
        t = torch.randint(sched.T, (batch,), device=device)
        noise = torch.randn_like(x0)
        kw = {}
        if conds is not None:     # extra draws only after the unconditional ones, only when conditioned
            kw["cond"] = conds[idx]
            if p_uncond > 0:
                kw["drop"] = torch.rand(batch, device=device) < p_uncond
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device == "cuda", cache_enabled=False):
            loss = F.mse_loss(net(sched.q_sample(x0, t, noise), t, **kw).float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()   # frees the autograd graph now, not at the next step

    fit(one_step, opt, cfg.ddpm_steps, device, tick, log_loss, "DDPM")
    return net.eval()


class Guided(nn.Module):
    """A conditional Denoiser fixed to one condition, called like an unconditional one (net(x, t),
    .latent_dim), so every sampler takes it unchanged. cond: (cond_dim,) for all samples, or
    (n, cond_dim) for a batch of n. scale != 1 is classifier-free guidance,
    eps_u + scale (eps_c - eps_u), with eps_u from the learned null condition (train with p_uncond > 0)."""

    def __init__(self, net: Denoiser, cond: torch.Tensor, scale: float = 1.0):
        super().__init__()
        if not getattr(net, "cond_dim", 0):
            raise ValueError("Guided needs a Denoiser built with cond_dim > 0")
        if cond.shape[-1] != net.cond_dim or cond.dim() not in (1, 2):
            raise ValueError(f"cond must have shape (cond_dim,) or (n, cond_dim) with cond_dim={net.cond_dim}, "
                             f"got {tuple(cond.shape)}")
        self.net, self.scale, self.latent_dim = net, float(scale), net.latent_dim
        self.register_buffer("cond", cond.detach().to(net.null.device, net.null.dtype).reshape(-1, net.cond_dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        c = self.cond.expand(len(x), -1) if len(self.cond) == 1 else self.cond
        if self.scale == 1.0:
            return self.net(x, t, c)
        # conditional and null predictions in one batched call
        both = self.net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([c, self.net.null.expand_as(c)]))
        eps_c, eps_u = both.chunk(2)
        return eps_u + self.scale * (eps_c - eps_u)


class GaussianEps(nn.Module):
    """The exact eps-predictor of data N(mu, diag(std^2)): E[eps | x_t] =
    sqrt(1 - abar) (x_t - sqrt(abar) mu) / (abar std^2 + 1 - abar). Same call as Denoiser
    (net(x, t), .latent_dim), so a sampler fed this should return std and mean; a sampler that
    shrinks toward the mean is caught here, without any training (tests, bench/sampler.py)."""

    def __init__(self, mu: torch.Tensor, std: torch.Tensor, sched: Schedule):
        super().__init__()
        self.mu, self.std, self.alpha_bar = mu.float(), std.float(), sched.alpha_bar
        self.latent_dim = len(mu)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = self.alpha_bar[t].view(-1, 1)
        return (1 - ab).sqrt() * (x - ab.sqrt() * self.mu) / (ab * self.std ** 2 + 1 - ab)


def predict_x0(net: Denoiser, sched: Schedule, x: torch.Tensor, i: int, clip: float | None):
    """(eps, x0) at timestep i. Clipping x0 to the training latents' range keeps an imperfect
    eps at large t (where it is divided by sqrt(abar) ~ 0.006) from throwing samples far away."""
    ab = sched.alpha_bar[i]
    eps = net(x, torch.full((len(x),), i, device=x.device, dtype=torch.long)).float()
    x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
    if clip is not None:
        x0 = x0.clamp(-clip, clip)
        eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
    return eps, x0


@torch.no_grad()
def sample_ddpm(net: Denoiser, sched: Schedule, n: int, gen: torch.Generator, device: str = "cpu",
                clip: float | None = None, tick=None) -> torch.Tensor:
    """Ancestral sampling from the posterior q(x_{t-1} | x_t, x0), all n samples in one batch."""
    x = torch.randn(n, net.latent_dim, generator=gen, device=device)
    for i in reversed(range(sched.T)):
        beta, ab = sched.betas[i], sched.alpha_bar[i]
        ab_prev = sched.alpha_bar[i - 1] if i > 0 else torch.ones((), device=device)
        _, x0 = predict_x0(net, sched, x, i, clip)
        x = (ab_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - ab_prev) * x) / (1 - ab)
        if i > 0:
            var = beta * (1 - ab_prev) / (1 - ab)    # posterior variance beta-tilde
            x = x + var.sqrt() * torch.randn(x.shape, generator=gen, device=device)
        if tick and i % 50 == 0:
            tick((sched.T - i) / sched.T, f"DDPM sampling {sched.T - i}/{sched.T}")
    return x


@torch.no_grad()
def sample_ddim(net: Denoiser, sched: Schedule, n: int, steps: int, gen: torch.Generator,
                device: str = "cpu", eta: float = 0.0, clip: float | None = None, tick=None) -> torch.Tensor:
    """DDIM with `steps` evenly spaced timesteps (eta=0: deterministic given the start noise)."""
    ts = torch.linspace(sched.T - 1, 0, steps).round().long().tolist()
    x = torch.randn(n, net.latent_dim, generator=gen, device=device)
    for j, i in enumerate(ts):
        ab = sched.alpha_bar[i]
        ab_prev = sched.alpha_bar[ts[j + 1]] if j + 1 < len(ts) else torch.ones((), device=device)
        eps, x0 = predict_x0(net, sched, x, i, clip)
        sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).sqrt()
        x = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma ** 2).clamp(min=0).sqrt() * eps
        if eta > 0 and j + 1 < len(ts):
            x = x + sigma * torch.randn(x.shape, generator=gen, device=device)
        if tick:
            tick((j + 1) / len(ts), f"DDIM step {j + 1}/{len(ts)}")
    return x


def quadratic_timesteps(T: int, steps: int) -> list[int]:
    """`steps` timesteps from T-1 down to 0, spaced quadratically (dense near t = 0, where the
    sample's detail is decided), duplicates from rounding removed."""
    ts = (torch.linspace(math.sqrt(T - 1), 0, steps, dtype=torch.float64) ** 2).round().long().tolist()
    return sorted(set(ts), reverse=True)


@torch.no_grad()
def sample_dpm2m(net: Denoiser, sched: Schedule, n: int, steps: int, gen: torch.Generator,
                 device: str = "cpu", clip: float | None = None, tick=None) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022): the deterministic sampler of the same ODE as DDIM
    (eta=0), second order in log-SNR by reusing the previous step's x0, one network call per step.
    With 50 quadratically spaced steps it keeps a Gaussian's spread within 1 % where DDIM needs
    about 300 (README: Sampler)."""
    ts = quadratic_timesteps(sched.T, steps)
    x = torch.randn(n, net.latent_dim, generator=gen, device=device)
    prev_x0 = prev_h = None
    for j, i in enumerate(ts):
        _, x0 = predict_x0(net, sched, x, i, clip)
        if j + 1 == len(ts):
            x = x0                        # the last step lands on t = 0, where x is the data estimate
        else:
            ab, ab_next = sched.alpha_bar[i].double(), sched.alpha_bar[ts[j + 1]].double()
            h = 0.5 * (torch.log(ab_next / (1 - ab_next)) - torch.log(ab / (1 - ab)))   # log-SNR step
            d = x0 if prev_x0 is None else x0 + (x0 - prev_x0) * (h / (2 * prev_h))
            x = (((1 - ab_next) / (1 - ab)).sqrt() * x - ab_next.sqrt() * torch.expm1(-h) * d).float()
            prev_x0, prev_h = x0, h
        if tick:
            tick((j + 1) / len(ts), f"DPM-Solver step {j + 1}/{len(ts)}")
    return x


def sample(net: Denoiser, sched: Schedule, n: int, sampler: str, steps: int, gen: torch.Generator,
           device: str = "cpu", eta: float = 0.0, clip: float | None = None, tick=None) -> torch.Tensor:
    """The config's sampler: dpm2m and ddim take `steps`, ddim also `eta`; ddpm walks all T steps."""
    if sampler == "dpm2m":
        return sample_dpm2m(net, sched, n, steps, gen, device, clip=clip, tick=tick)
    if sampler == "ddim":
        return sample_ddim(net, sched, n, steps, gen, device, eta=eta, clip=clip, tick=tick)
    return sample_ddpm(net, sched, n, gen, device, clip=clip, tick=tick)
