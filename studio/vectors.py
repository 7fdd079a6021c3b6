"""A run's parameter vectors and the tensor names along them, read from its safetensors files.

No streamlit: studio/load.py caches these for the pages and studio/report.py calls them as they are."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pdiff_core import runs


def params(run_dir: Path, which: str) -> np.ndarray:
    """K×D / N×D float32 parameters of 'originals' or 'generated' (raw, not normalized)."""
    tensors, _ = runs.read_safetensors(Path(run_dir) / f"{which}.safetensors")
    return tensors["params"].numpy()


def param_names(run_dir: Path) -> list[tuple[str, int]]:
    """(name, size) of each flattened tensor in order, from the originals' metadata."""
    from pdiff_core.params import Codec     # here, not at the top: it imports torch (about 1 s)
    codec = Codec.from_metadata(runs.read_safetensors(Path(run_dir) / "originals.safetensors")[1])
    return list(zip(codec.names, codec.sizes))
