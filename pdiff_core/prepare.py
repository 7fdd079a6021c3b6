"""Everything that can fail on bad input, done before a run directory exists: config values,
dataset files, layer names. The pipeline and the analysis both start from a Prepared."""
from __future__ import annotations

import functools
import os
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


# One example's shape and the class count of each dataset, fixed by its format: enough to build the
# model and check layer names (as you type on Launch, and for every cell of a sweep) without reading any data
# (npz reads its .npy headers).
SHAPES = {"digits": ((1, 8, 8), 10), "mnist1d": ((1, 40), 10), "mnist": ((1, 28, 28), 10),
          "fashion_mnist": ((1, 28, 28), 10), "cifar10": ((3, 32, 32), 10), "cifar100": ((3, 32, 32), 100)}


def _input_shape(dataset: str, data_root: str):
    if dataset in SHAPES:
        return SHAPES[dataset]
    if dataset == "npz":
        from .data import DataError, _npz_headers
        try:
            meta = _npz_headers(os.path.expanduser(data_root)) if data_root and os.path.isfile(
                os.path.expanduser(data_root)) else {}
        except DataError:
            return None                       # the data_root check says what is wrong with the file
        x = meta.get("X_train") or meta.get("X")
        return (tuple(x[0][1:]), 2) if x and len(x[0]) > 1 else None   # the class count does not change names
    return None


@functools.lru_cache(maxsize=64)
def _layer_error(arch: str, shape: tuple, n_classes: int, width: int, layers: str) -> str | None:
    try:
        with torch.device("meta"):            # names only: no memory, no initialization time
            model = build_model(arch, shape, n_classes, width)
        select_names(model, layers)
    except ValueError as e:
        return str(e)
    return None


def layer_error(cfg: RunConfig) -> str | None:
    """The layer-name check that prepare() does, from the dataset's known input shape: cheap enough for
    every keystroke (no data is loaded; a model is built once per architecture, shape and width).
    None when the names are fine, or when the shape is not known without the data (Launch checks then)."""
    shape = _input_shape(cfg.dataset, cfg.data_root)
    if shape is None:
        return None
    return _layer_error(cfg.arch, tuple(shape[0]), shape[1], cfg.width, cfg.layers)


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
