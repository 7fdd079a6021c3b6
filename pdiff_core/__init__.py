"""p-diff Studio core: training, sampling and analysis of neural network diffusion. No streamlit here."""
import os
import sys

if "torch" not in sys.modules:
    # Idle OpenMP threads sleep instead of spinning. With several processes on 2 cores (the app's
    # workers, a test run beside a server), spinning threads made small training steps >10x slower.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .config import PRESETS, ConfigError, RunConfig, preset_config  # noqa: E402


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a `python -m pdiff_core...` child process (a run's worker, the
    analysis helper): this package importable from any working directory, plus `extra`."""
    project = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [project, os.environ.get("PYTHONPATH")])),
            **extra}


__all__ = ["PRESETS", "ConfigError", "RunConfig", "preset_config", "child_env"]
