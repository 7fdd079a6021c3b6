"""Stage 1: train the base model, then keep training only the selected parameters and save
them after every optimizer step until K checkpoints exist."""
from __future__ import annotations

from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .config import RunConfig
from .data import Splits

Tick = Callable[[float, str], None]   # (fraction done, message); raises Cancelled when asked to stop


def minibatches(n: int, batch: int, gen: torch.Generator, device: str = "cpu") -> Iterator[torch.Tensor]:
    """Endless shuffled index batches, reproducible from the (CPU) generator; one host-to-device
    copy per epoch, none per step."""
    while True:
        perm = torch.randperm(n, generator=gen).to(device)
        for i in range(0, n - batch + 1 if n >= batch else 1, batch):
            yield perm[i:i + batch]


def train_base(model: nn.Module, data: Splits, cfg: RunConfig, device: str, gen: torch.Generator,
               tick: Tick) -> list[float]:
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.base_lr)
    steps_per_epoch = max(1, len(data.y_train) // cfg.batch_size)
    total = cfg.base_epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
    x, y = data.x_train.to(device), data.y_train.to(device)
    batches, losses = minibatches(len(y), min(cfg.batch_size, len(y)), gen, device), []
    for step in range(total):
        idx = next(batches)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % steps_per_epoch == 0 or step == total - 1:   # .item() syncs a GPU: once per epoch
            losses.append(loss.item())
            tick((step + 1) / total, f"base training epoch {step // steps_per_epoch + 1}/{cfg.base_epochs}")
    return losses


def collect_checkpoints(model: nn.Module, names: list[str], data: Splits, cfg: RunConfig, device: str,
                        gen: torch.Generator, tick: Tick) -> torch.Tensor:
    """K x D matrix of the selected parameters, one row per optimizer step.

    The model stays in eval mode: BatchNorm keeps the base model's running statistics, so every
    checkpoint is evaluated with exactly the statistics it was trained against."""
    model.to(device).eval()
    wanted = set(names)
    params = dict(model.named_parameters())
    for n, p in params.items():
        p.requires_grad_(n in wanted)
    trainable = [params[n] for n in names if n in params]   # running stats, if chosen, are buffers: they stay fixed
    opt = torch.optim.SGD(trainable, lr=cfg.collect_lr, momentum=0.9)
    state = model.state_dict()
    x, y = data.x_train.to(device), data.y_train.to(device)
    batches = minibatches(len(y), min(cfg.batch_size, len(y)), gen, device)
    rows = []
    for step in range(cfg.k):
        idx = next(batches)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        rows.append(torch.cat([state[n].detach().reshape(-1) for n in names]).float().clone())
        if step % 10 == 0 or step == cfg.k - 1:
            tick((step + 1) / cfg.k, f"checkpoint {step + 1}/{cfg.k}")
    for p in model.parameters():
        p.requires_grad_(True)
    theta = torch.stack(rows).cpu()
    bad = (~torch.isfinite(theta).all(dim=1)).nonzero()
    if len(bad):
        raise ValueError(f"checkpoint collection diverged (non-finite parameters from step {int(bad[0]) + 1}); "
                         f"lower collect_lr (now {cfg.collect_lr})")
    return theta


def checkpoint_spread(theta: torch.Tensor) -> dict:
    """How much the checkpoints differ: if this is ~0, p-diff has nothing to learn but a point."""
    steps = (theta[1:] - theta[:-1]).norm(dim=1)
    dists = torch.cdist(theta.double(), theta.double())
    k = len(theta)
    return {
        "mean_pairwise_l2": float(dists.sum() / (k * (k - 1))),
        "max_pairwise_l2": float(dists.max()),
        "mean_step_l2": float(steps.mean()),
        "mean_coord_std": float(theta.std(dim=0).mean()),
        "norm_of_mean": float(theta.mean(dim=0).norm()),
    }
