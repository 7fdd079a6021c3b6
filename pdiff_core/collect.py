"""Stage 1: train the base model, then keep training only the selected parameters and save
them as a zoo of K checkpoints (config `zoo`):

- trajectory: K consecutive optimizer steps of one continuation from the base model (p-diff's own);
- independent: K continuations from the base model, each `zoo_steps` steps with its own data
  order, and only the last step of each kept;
- mixed: `zoo_runs` continuations, each with its own data order, of K/R consecutive steps each.

Every row carries a trajectory id: consecutive rows with equal ids are consecutive steps of one
continuation. The independent and mixed continuations run batched (torch.func.vmap over stacked
copies of the selected parameters; SGD's state is per coordinate, so they stay independent)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from .config import RunConfig
from .data import Splits
from .evaluate import split_at_first_generated
from .metrics import step_lengths
from .optim import CosineAnnealing, Optimizer

MAX_HALVINGS = 8          # a diverged collection retries from the base state at lr/2, lr/4, ... lr/256
VAL_CHECKS = 50           # base training scores validation about this many times and keeps the best
PREFIX_CACHE = 2 ** 26    # floats: train-set activations of the frozen prefix are cached up to 256 MB

Tick = Callable[[float, str], None]   # (fraction done, message); raises Cancelled when asked to stop


def minibatches(n: int, batch: int, gen: torch.Generator, device: str = "cpu") -> Iterator[torch.Tensor]:
    """Endless shuffled index batches, reproducible from the (CPU) generator; one host-to-device
    copy per epoch, none per step."""
    while True:
        perm = torch.randperm(n, generator=gen).to(device)
        for i in range(0, n - batch + 1 if n >= batch else 1, batch):
            yield perm[i:i + batch]


@torch.no_grad()
def _val_score(model: nn.Module, data: Splits, device: str) -> tuple[int, float]:
    """(correct count, mean loss) on the validation split, in eval mode (BatchNorm's running stats)."""
    model.eval()
    correct, loss = 0, 0.0
    for xs, ys in zip(torch.split(data.x_val, 2048), torch.split(data.y_val, 2048)):
        out = model(xs.to(device))
        ys = ys.to(device)
        correct += int((out.argmax(-1) == ys).sum())
        loss += float(F.cross_entropy(out, ys, reduction="sum"))
    model.train()
    return correct, loss / max(1, len(data.y_val))


def base_step_budget(cfg: RunConfig, n_train: int) -> tuple[int, int]:
    """(optimizer steps, steps per epoch): base_epochs epochs, but never fewer than base_min_steps,
    so a dataset of a few hundred rows (one or two batches an epoch) still trains to convergence."""
    steps_per_epoch = max(1, n_train // cfg.batch_size)
    return max(cfg.base_epochs * steps_per_epoch, cfg.base_min_steps), steps_per_epoch


def train_base(model: nn.Module, data: Splits, cfg: RunConfig, device: str, gen: torch.Generator,
               tick: Tick) -> dict:
    """Adam with a cosine schedule over the step budget. Validation accuracy is scored about
    VAL_CHECKS times (at most once an epoch, and at the last step); the model ends with the
    best-scoring weights (most correct, then lowest loss; the earlier step on an exact tie).
    Returns what happened, for metrics.json."""
    model.to(device).train()
    opt = Optimizer(model.parameters(), cfg.base_lr, "adam")
    total, steps_per_epoch = base_step_budget(cfg, len(data.y_train))
    every = max(steps_per_epoch, math.ceil(total / VAL_CHECKS))
    sched = CosineAnnealing(opt, total)
    x, y = data.x_train.to(device), data.y_train.to(device)
    batches, losses = minibatches(len(y), min(cfg.batch_size, len(y)), gen, device), []
    best, best_step, best_state, checks = None, 0, None, 0
    for step in range(total):
        idx = next(batches)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % every == 0 or step == total - 1:   # .item() syncs a GPU: a few dozen times in all
            losses.append(loss.item())
            correct, vloss = _val_score(model, data, device)
            checks += 1
            if best is None or (correct, -vloss) > best:
                best, best_step = (correct, -vloss), step + 1
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            tick((step + 1) / total, f"base training step {step + 1}/{total} (epoch {(step + 1) / steps_per_epoch:.0f}); "
                                     f"best val acc {100 * best[0] / max(1, len(data.y_val)):.1f} %")
    model.load_state_dict(best_state)
    return {"steps": total, "steps_per_epoch": steps_per_epoch, "epochs": round(total / steps_per_epoch, 2),
            "val_checks": checks, "best_step": best_step, "best_val_acc": best[0] / max(1, len(data.y_val)),
            "losses": [round(v, 6) for v in losses]}


@dataclass
class Zoo:
    theta: torch.Tensor        # (K, D) float32, on the CPU
    trajectory: torch.Tensor   # (K,) int64: rows with equal ids, consecutive, are consecutive steps of one run
    info: dict = field(default_factory=dict)   # metrics.json's "zoo"


def trajectory_ids(cfg: RunConfig) -> torch.Tensor:
    """(K,) int64 trajectory id of every row, for the config's zoo kind."""
    return torch.repeat_interleave(torch.arange(len(run_lengths(cfg))), torch.tensor(run_lengths(cfg)))


def run_lengths(cfg: RunConfig) -> list[int]:
    """Checkpoints kept from each continuation: one run of K (trajectory), K runs of 1 (independent),
    or R runs of K//R, the first K % R of them one longer (mixed)."""
    if cfg.zoo == "trajectory":
        return [cfg.k]
    if cfg.zoo == "independent":
        return [1] * cfg.k
    q, r = divmod(cfg.k, cfg.zoo_runs)
    return [q + 1] * r + [q] * (cfg.zoo_runs - r)


def collect_zoo(model: nn.Module, names: list[str], data: Splits, cfg: RunConfig, device: str,
                gen: torch.Generator, tick: Tick, log: Callable[[str], None] = lambda m: None) -> Zoo:
    """K checkpoints of the selected parameters, as the config's zoo kind asks, from the model's
    current (base) state; the model is left in that state. When collection diverges (a non-finite
    parameter), it restarts from the base state and the same data order at half the learning rate,
    up to MAX_HALVINGS times; the first rate that stays finite sits at the edge of stability (its
    checkpoints swing in accuracy), so collection then runs once more at half of it. The rate used
    is info["lr"]; the log callback gets one line per restart."""
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    start = gen.get_state()
    lr, halvings, diverged, margin = cfg.collect_lr, 0, False, False
    while True:
        gen.set_state(start)
        if cfg.zoo == "trajectory":
            theta = _trajectory(model, names, data, cfg, lr, device, gen, tick)
        else:
            theta = _batched(model, names, data, cfg, lr, device, gen, tick)
        model.load_state_dict(base)
        if theta is not None and (not diverged or margin or halvings >= MAX_HALVINGS):
            break
        if theta is None and halvings >= MAX_HALVINGS:
            raise ValueError(f"checkpoint collection diverged even at {lr:g}, after {halvings} halvings of "
                             f"collect_lr={cfg.collect_lr:g}; lower collect_lr a lot, or check the base model "
                             f"and the selected layers")
        if theta is None:
            log(f"checkpoint collection diverged at collect_lr={lr:g} (a loss above chance level, or non-finite); "
                f"retrying from the base model at {lr / 2:g}")
            diverged, margin = True, False
        else:   # the first finite rate after a divergence sits at the edge of stability: half of it is safer
            log(f"collect_lr={lr:g} stays finite; collecting at {lr / 2:g}, half the first finite rate, for a margin")
            margin = True
        lr /= 2
        halvings += 1
    lengths = run_lengths(cfg)
    info = {"kind": cfg.zoo, "runs": len(lengths), "checkpoints": cfg.k,
            "steps_per_run": cfg.zoo_steps if cfg.zoo == "independent" else max(lengths),
            "kept": "last step of each run" if cfg.zoo == "independent" else "every step",
            "lr": lr, "lr_requested": cfg.collect_lr, "lr_halvings": halvings}
    if cfg.zoo == "mixed":
        info["run_lengths"] = lengths
    return Zoo(theta, trajectory_ids(cfg), info)


def _trajectory(model, names, data, cfg, lr, device, gen, tick) -> torch.Tensor | None:
    """K x D, one row per optimizer step of one continuation; None when it diverged.

    The model stays in eval mode: BatchNorm keeps the base model's running statistics, so every
    checkpoint is evaluated with exactly the statistics it was trained against."""
    model.to(device).eval()
    wanted = set(names)
    params = dict(model.named_parameters())
    for n, p in params.items():
        p.requires_grad_(n in wanted)
    trainable = [params[n] for n in names if n in params]   # running stats, if chosen, are buffers: they stay fixed
    opt = Optimizer(trainable, lr, "sgd", momentum=0.9)
    state = model.state_dict()
    x, y = data.x_train.to(device), data.y_train.to(device)
    batches = minibatches(len(y), min(cfg.batch_size, len(y)), gen, device)
    rows, first, peak = [], None, None
    try:
        for step in range(cfg.k):
            idx = next(batches)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            rows.append(torch.cat([state[n].detach().reshape(-1) for n in names]).float().clone())
            first = loss.detach() if first is None else first
            peak = loss.detach() if peak is None else torch.maximum(peak, loss.detach())   # no sync
            if step % 10 == 0 or step == cfg.k - 1:
                if _unstable(peak, first, data.n_classes):    # one sync every 10 steps; stop early
                    return None
                tick((step + 1) / cfg.k, f"checkpoint {step + 1}/{cfg.k}")
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    theta = torch.stack(rows).cpu()
    return theta if torch.isfinite(theta).all() else None


def _unstable(peak: torch.Tensor, first: torch.Tensor, n_classes: int) -> bool:
    """Diverging: a non-finite loss, or a minibatch loss above chance level (ln C) plus the base
    model's own loss, i.e. worse than guessing uniformly. Tensors of per-run values are fine."""
    return bool((~torch.isfinite(peak) | (peak > first + math.log(n_classes))).any())


def _batched(model, names, data, cfg, lr, device, gen, tick) -> torch.Tensor | None:
    """The independent and mixed zoos: len(run_lengths) continuations from the base state, each
    with its own seed (drawn from gen) and so its own data order, run together as one vmapped
    SGD over stacked copies of the selected parameters. Independent runs take zoo_steps steps and
    keep the last; mixed runs keep every step. None when any run diverged."""
    model.to(device).eval()
    lengths = run_lengths(cfg)
    steps = cfg.zoo_steps if cfg.zoo == "independent" else max(lengths)
    m = len(lengths)
    seeds = torch.randint(0, 2 ** 62, (m,), generator=gen).tolist()
    state = model.state_dict()
    params = dict(model.named_parameters())
    learn = [n for n in names if n in params]           # chosen buffers (running stats) stay fixed
    for p in model.parameters():
        p.requires_grad_(False)
    cut = split_at_first_generated(model, names)
    prefix, suffix = model[:cut], model[cut:]           # the frozen prefix is the same for every run
    x, y = data.x_train.to(device), data.y_train.to(device)
    h_all = None
    if cut and x[:1].numel() and prefix(x[:1]).numel() * len(x) <= PREFIX_CACHE:
        with torch.no_grad():
            h_all = torch.cat([prefix(xs) for xs in torch.split(x, 2048)])
    call = vmap(lambda p, h: functional_call(suffix, p, (h,)), in_dims=(0, 0))
    b = min(cfg.batch_size, len(y))
    chunk = max(1, min(m, 64))                          # runs per vmapped call: bounds activation memory
    out = [[None] * n for n in lengths]
    done_steps, total_steps = 0, steps * math.ceil(m / chunk)
    try:
        for lo in range(0, m, chunk):
            ids = list(range(lo, min(m, lo + chunk)))
            P = {n: state[n].detach().unsqueeze(0).repeat(len(ids), *[1] * state[n].dim()).requires_grad_(True)
                 for n in learn}
            opt = Optimizer(list(P.values()), lr, "sgd", momentum=0.9)
            batches = [minibatches(len(y), b, torch.Generator().manual_seed(seeds[j])) for j in ids]
            for step in range(steps):
                idx = torch.stack([next(g) for g in batches]).to(device)          # (runs, b)
                if h_all is not None:
                    h = h_all[idx]
                else:
                    with torch.no_grad():
                        h = prefix(x[idx.reshape(-1)])
                    h = h.reshape(len(ids), b, *h.shape[1:])
                logits = call(P, h)
                per_run = F.cross_entropy(logits.flatten(0, 1), y[idx].reshape(-1), reduction="none").view(len(ids), b)
                per_run = per_run.mean(dim=1)
                loss = per_run.sum()                        # each run's gradient is its own mean loss's
                if step == 0:
                    first = peak = per_run.detach()
                else:
                    peak = torch.maximum(peak, per_run.detach())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                keep = [i for i, j in enumerate(ids)
                        if (steps - 1 == step if cfg.zoo == "independent" else step < lengths[j])]
                if keep:
                    with torch.no_grad():
                        flat = torch.cat([(P[n] if n in P else state[n].expand(len(ids), *state[n].shape))
                                          .detach().reshape(len(ids), -1) for n in names], dim=1).float().cpu()
                    for i in keep:
                        j = ids[i]
                        out[j][0 if cfg.zoo == "independent" else step] = flat[i]
                done_steps += 1
                if done_steps % 10 == 0 or step == steps - 1:
                    if _unstable(peak, first, data.n_classes):
                        return None
                    tick(done_steps / total_steps, f"{cfg.zoo} zoo: run {ids[-1] + 1}/{m}, step {step + 1}/{steps}")
            with torch.no_grad():   # the last update is unscored above: score the final parameters on fixed rows
                sub = torch.arange(min(len(y), 1024), device=device)
                hs = h_all[sub] if h_all is not None else prefix(x[sub])
                out_logits = vmap(lambda p: functional_call(suffix, p, (hs,)))(P)
                final = F.cross_entropy(out_logits.flatten(0, 1), y[sub].repeat(len(ids)),
                                        reduction="none").view(len(ids), -1).mean(dim=1)
                if _unstable(final, first, data.n_classes):
                    return None
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    theta = torch.stack([row for run in out for row in run])
    return theta if torch.isfinite(theta).all() else None


def checkpoint_spread(theta: torch.Tensor, trajectory: torch.Tensor) -> dict:
    """How much the checkpoints differ: if this is ~0, p-diff has nothing to learn but a point.
    A step is between consecutive rows of one trajectory: an independent zoo has none (mean_step_l2 None)."""
    steps = step_lengths(theta, trajectory.numpy())
    dists = torch.cdist(theta.double(), theta.double())
    k = len(theta)
    return {
        "mean_pairwise_l2": float(dists.sum() / (k * (k - 1))),
        "max_pairwise_l2": float(dists.max()),
        "mean_step_l2": float(steps.mean()) if len(steps) else None,
        "mean_coord_std": float(theta.std(dim=0).mean()),
        "norm_of_mean": float(theta.mean(dim=0).norm()),
    }
