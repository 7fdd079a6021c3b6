"""p-diff Studio core: training, sampling and analysis of neural network diffusion. No streamlit here."""
import os
import sys

if "torch" not in sys.modules:
    # Idle OpenMP threads sleep instead of spinning. With several processes on 2 cores (the app's
    # workers, a test run beside a server), spinning threads made small training steps >10x slower.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .config import PRESETS, ConfigError, RunConfig, preset_config  # noqa: E402

__all__ = ["PRESETS", "ConfigError", "RunConfig", "preset_config"]
