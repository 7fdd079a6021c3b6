"""p-diff Studio core: training, sampling and analysis of neural network diffusion. No streamlit here."""
from .config import PRESETS, ConfigError, RunConfig, preset_config

__all__ = ["PRESETS", "ConfigError", "RunConfig", "preset_config"]
