"""Everything that can fail on bad input, done before a run directory exists: config values,
dataset files, layer names. The pipeline and the analysis both start from a Prepared."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import warmup
from .config import ConfigError, RunConfig, resolve_device, validate
from .data import Splits, check_dataset, load_dataset
from .models import build_model
from .params import select_names


@dataclass
class Prepared:
    cfg: RunConfig
    device: str
    data: Splits
    model: torch.nn.Sequential
    names: list[str]


def prepare(cfg: RunConfig, warm: bool = False) -> Prepared:
    """All input checks; raises ConfigError / DataError / LayerError / ValueError with one line.
    warm: a run is about to start, so CUDA's cold start begins now and overlaps the data loading below
    (the app's form check leaves it off: the server must never hold a CUDA context)."""
    validate(cfg)
    device = resolve_device(cfg.device)
    if warm:
        warmup.start(device)
    check_dataset(cfg.dataset, cfg.data_root or None)
    data = load_dataset(cfg.dataset, cfg.data_root or None, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    try:
        model = build_model(cfg.arch, data.input_shape, data.n_classes, cfg.width)
    except (RuntimeError, MemoryError) as e:    # width=10**9: the allocation fails before anything else
        raise ConfigError(f"the {cfg.arch} of width {cfg.width} does not fit in memory "
                          f"({type(e).__name__}); lower width") from None
    names = select_names(model, cfg.layers)
    check_sizes(cfg, data, model)
    if cfg.family:      # enough distinct tasks, and enough examples for every task's support sets
        from .tasks import check
        check(cfg.family, data.y_train, data.n_classes, cfg.tasks_train, cfg.tasks_heldout, cfg.seed, cfg.shots)
    return Prepared(cfg, device, data, model, names)


def check_sizes(cfg: RunConfig, data: Splits, model: torch.nn.Module) -> None:
    """Limits that need the data or the model. Batches larger than the data are clipped to it,
    and the AE and denoiser take any D, latent size and channel count, so little is left."""
    batch = min(cfg.batch_size, len(data.y_train))
    if batch < 2 and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ConfigError(f"batch_size must be at least 2 here (now {cfg.batch_size}, {len(data.y_train)} training "
                          f"examples): BatchNorm layers need two examples per batch in training")


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed)
    return torch.Generator().manual_seed(seed)


def stage_timer(report, timings: dict):
    """stage(name) reports the stage's start and returns done(), which records its seconds in
    `timings`: how every stage chain (pipeline, transfer) times its stages."""
    import time

    def stage(name: str):
        t0 = time.perf_counter()
        report(name, 0.0, f"{name} started")
        return lambda: timings.__setitem__(name, round(time.perf_counter() - t0, 3))
    return stage
