"""Everything that can fail on bad input, done before a run directory exists: config values,
dataset files, layer names. The pipeline and the analysis both start from a Prepared."""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from . import warmup
from .config import ConfigError, RunConfig, resolve_device, validate
from .data import Splits, check_dataset, example_shape, load_dataset
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
    with torch.device("meta"):   # shapes only: sizes are checked before anything large is allocated
        shaped = _build(cfg, data)
    names = select_names(shaped, cfg.layers)
    check_memory(cfg, shaped, names, len(data.y_val), len(data.y_test), data.n_classes)
    torch.manual_seed(cfg.seed)
    model = _build(cfg, data)
    check_sizes(cfg, data, model)
    if cfg.family:      # enough distinct tasks, and enough examples for every task's support sets
        from .tasks import check
        check(cfg.family, data.y_train, data.n_classes, cfg.tasks_train, cfg.tasks_heldout, cfg.seed, cfg.shots)
    return Prepared(cfg, device, data, model, names)


def _build(cfg: RunConfig, data: Splits) -> torch.nn.Sequential:
    try:
        return build_model(cfg.arch, data.input_shape, data.n_classes, cfg.width)
    except (*TOO_BIG, MemoryError) as e:    # width=10**12: its size overflows, or the allocation fails
        raise ConfigError(f"the {cfg.arch} of width {cfg.width} does not fit in memory "
                          f"({type(e).__name__}); lower width") from None


def check_sizes(cfg: RunConfig, data: Splits, model: torch.nn.Module) -> None:
    """Limits that need the data or the model. Batches larger than the data are clipped to it,
    and the AE and denoiser take any D, latent size and channel count, so little is left."""
    batch = min(cfg.batch_size, len(data.y_train))
    if batch < 2 and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ConfigError(f"batch_size must be at least 2 here (now {cfg.batch_size}, {len(data.y_train)} training "
                          f"examples): BatchNorm layers need two examples per batch in training")


GIB = 2 ** 30
TOO_BIG = (RuntimeError, OverflowError, TypeError)   # what torch raises for a size beyond 64 bits


def memory_need(cfg: RunConfig, model: torch.nn.Module, names: list[str], n_val: int, n_test: int,
                n_classes: int) -> dict[str, int]:
    """Bytes held by the run's largest tensors, keyed by the options that size them. A lower bound
    (activations and temporary copies left out), from shapes alone: `model` may be on the meta device."""
    from .autoencoder import ParamAutoencoder
    from .baselines import N_FAMILIES
    from .diffusion import Denoiser
    dim = sum(t.numel() for n, t in model.state_dict().items() if n in names)
    k = cfg.k * (cfg.tasks_train if cfg.family else 1)
    n = cfg.n_generate * (cfg.tasks_heldout if cfg.family else 1)
    n_rows = n * (N_FAMILIES if cfg.analysis and not cfg.family else 1)   # with the baselines' families
    row = 4 * dim + 8 * (n_val + n_test) + 4 * n_test * n_classes    # a vector, its predictions, its test logits
    return {"width": _trained_bytes(lambda: model),
            "k": k * (row + 2 * 4 * dim),                        # + the normalized and reconstructed checkpoints
            "latent_dim or ae_channels": _trained_bytes(lambda: ParamAutoencoder(dim, cfg.latent_dim, cfg.ae_channels)),
            "ddpm_channels or latent_dim": _trained_bytes(lambda: Denoiser(cfg.latent_dim, cfg.ddpm_channels)),
            "n_generate": n_rows * row + 2 * 4 * n * (cfg.ddpm_channels * Denoiser.LENGTH + cfg.latent_dim)}  # sampling


def _trained_bytes(make) -> int:
    """float32 weights, gradients and Adam's two moments of the module make() builds on the meta device;
    a size past torch's 64-bit sizes counts as infinite."""
    try:
        with torch.device("meta"):
            return 16 * sum(p.numel() for p in make().parameters())
    except TOO_BIG:
        return math.inf


def total_memory() -> int | None:
    """This machine's physical memory in bytes; None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(cfg: RunConfig, model: torch.nn.Module, names: list[str], n_val: int, n_test: int,
                 n_classes: int) -> None:
    """Refuse a run that cannot fit in this machine's memory, whatever else runs: it would fail (or be
    killed) mid-run, after its run directory exists."""
    need, ram = memory_need(cfg, model, names, n_val, n_test, n_classes), total_memory()
    if ram and sum(need.values()) > ram:
        most = max(need, key=need.get)
        needs, share = ((f"at least {_gib(sum(need.values()))}", f"{_gib(need[most])} of it") if need[most] < math.inf
                        else ("tensors too large for 64-bit sizes", "most of it"))
        raise ConfigError(f"this run does not fit in memory: it needs {needs}, more than this machine's {_gib(ram)} "
                          f"({share} from {most}); lower {most.split(' or ')[0]}")


def _gib(size: int) -> str:
    gib = size / GIB
    return f"{gib:,.1f} GiB" if gib < 1e6 else f"{gib:.1e} GiB"


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
    shape = example_shape(cfg.dataset, cfg.data_root)
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
