"""A new task, no gradient step: a user's few labelled examples (an .npz of X and binary y) are
embedded with a transfer run's frozen trunk, and its task-conditioned generator samples heads for
them. The `new-task` command and the Transfer page's upload both come here."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from . import runs, tasks
from .config import RunConfig
from .diffusion import Guided, Schedule, sample
from .generator import decode, load_generator
from .params import Codec
from .transfer import predict


class NewTaskError(ValueError):
    """An unusable task file; the message says what to fix."""


def read_task_file(path, name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """X (n, *input) in the dataset's raw units and y (n,) in {0, 1}, from an .npz path or file
    object (an upload); never unpickled."""
    path_, path = path, name or str(path)
    if not hasattr(path_, "seek") and not Path(path_).is_file():
        raise NewTaskError(f"{path}: no such file; give the path of an .npz saved with np.savez(path, X=X, y=y)")
    try:
        if not zipfile.is_zipfile(path_):        # else numpy suggests loading it "unsafely" (unpickling)
            raise NewTaskError(f"{path}: not a .npz (zip) file; save the examples with np.savez(path, X=X, y=y)")
        if hasattr(path_, "seek"):
            path_.seek(0)
        with np.load(path_, allow_pickle=False) as z:
            if "X" not in z.files or "y" not in z.files:
                raise NewTaskError(f"{path}: save the examples as X and their labels (0/1) as y with np.savez")
            x, y = z["X"], z["y"]
    except MemoryError:     # a header that claims more rows than memory holds
        raise NewTaskError(f"{path}: its arrays are larger than this machine's memory; give fewer examples") from None
    except (OSError, ValueError, EOFError) as e:
        if isinstance(e, NewTaskError):
            raise
        raise NewTaskError(f"{path}: not a readable .npz file ({e})") from None
    if x.ndim == 0:
        raise NewTaskError(f"{path}: X must hold one row per example, got a single number")
    if y.dtype == bool:     # True/False are the natural 1/0 labels
        y = y.astype(np.int64)
    if y.ndim != 1 or len(y) != len(x) or not np.isin(y, (0, 1)).all():
        raise NewTaskError(f"{path}: y must be one label per row of X, each 0 (rest) or 1 (the task's class)")
    if min((y == 0).sum(), (y == 1).sum()) < 1:
        raise NewTaskError(f"{path}: give at least one example of each label (0 and 1)")
    if not (np.issubdtype(x.dtype, np.number) and np.issubdtype(y.dtype, np.number)):
        raise NewTaskError(f"{path}: X and y must be numbers, got {x.dtype} and {y.dtype}")
    if not np.isfinite(x).all():
        raise NewTaskError(f"{path}: X holds NaN or infinite values")
    return x, y


def accuracy_words(acc: np.ndarray) -> str:
    """The new task's heads on the user's own examples, as the CLI and the Transfer page both say it."""
    return f"best {100 * acc.max():.1f} %, median {100 * np.median(acc):.1f} %"


def generate_for_task(run_dir: Path, x_raw: np.ndarray, y: np.ndarray, n: int | None = None, seed: int = 0) -> dict:
    """Embed a new task from its labelled examples with the run's trunk, then sample heads for it
    from the run's conditional generator. Returns the heads, their accuracy on the given examples,
    and the nearest training task by embedding."""
    from .data import load_dataset
    from .models import build_model
    run_dir = Path(run_dir)
    cfg = RunConfig.from_dict(runs.read_json(run_dir / "config.json"))
    data = load_dataset(cfg.dataset, cfg.data_root or None, seed=cfg.seed)
    if int(np.prod(np.shape(x_raw)[1:])) != int(np.prod(data.input_shape)):
        raise NewTaskError(f"X rows have shape {tuple(np.shape(x_raw)[1:])}; this run's inputs are {data.input_shape}")
    model = build_model(cfg.arch, data.input_shape, data.n_classes, cfg.width)
    model.load_state_dict(runs.read_safetensors(run_dir / "base_model.safetensors")[0])
    model.eval()
    arrays = runs.read_npz(run_dir / "transfer.npz")
    with torch.no_grad():
        h = model[:-1](data.standardize(x_raw)).float()
    yt = torch.as_tensor(y).long()
    e = (tasks.embedding(h, yt) - torch.from_numpy(arrays["emb_mean"])) / torch.from_numpy(arrays["emb_std"])
    codec = Codec.from_metadata(runs.read_safetensors(run_dir / "originals.safetensors")[1])
    ae, net, scale = load_generator(run_dir, cfg)
    sched = Schedule(cfg.timesteps, cfg.beta_start, cfg.beta_end)
    with torch.no_grad():
        g = sample(Guided(net, e, cfg.guidance), sched, n or cfg.n_generate, cfg.sampler, cfg.ddim_steps,
                   torch.Generator().manual_seed(seed), eta=cfg.ddim_eta, clip=scale["x0_clip"])
        heads = decode(ae, codec, g, scale["latent_mean"], scale["latent_std"])[1]
    correct = (predict(heads, h) == y[None]).mean(1)
    nearest = int(torch.cdist(e[None], torch.from_numpy(arrays["emb_train"]).mean(1)).argmin())
    return {"heads": heads, "accuracy_on_examples": correct, "embedding": e,
            "nearest_training_task": tasks.task_name(arrays["train_tasks"][nearest]), "codec": codec}
