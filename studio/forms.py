"""The launch form's layout and its mapping to RunConfig. No streamlit: the page draws it."""
from __future__ import annotations

import dataclasses
import re

from pdiff_core.config import (KIND_WORDS, PRESETS, SAMPLERS, ZOO_KINDS, ConfigError, RunConfig, override_text,
                               parse_overrides, preset_config, validate)
from pdiff_core.data import DATASETS, dataset_names
from pdiff_core.models import MODELS
from pdiff_core.params import SUBSETS

TYPES = {f.name: {"int": int, "float": float, "str": str, "bool": bool}[f.type] for f in dataclasses.fields(RunConfig)}
# The options everyone touches, in a 4-column grid under the preset and seed; the rest go in "More options".
MAIN = ["dataset", "arch", "layers", "device", "k", "zoo", "n_generate", "ae_steps", "ddpm_steps", "sampler",
        "ddim_steps", "ddim_eta", "in_noise", "latent_noise"]
MORE = {
    "Data and model": ["width", "base_epochs", "base_min_steps", "base_lr", "batch_size"],
    "Checkpoint collection": ["collect_lr", "zoo_runs", "zoo_steps"],
    "Autoencoder": ["latent_dim", "ae_channels", "ae_lr", "ae_batch"],
    "Diffusion": ["ddpm_lr", "ddpm_batch", "ddpm_channels", "timesteps", "beta_start", "beta_end"],
    "Evaluation and analysis": ["analysis", "eval_chunk"],
}
BUILTIN_DATA = tuple(n for n, d in DATASETS.items() if not d.needs_root)    # the others need data_root
CHOICES = {"dataset": dataset_names(), "arch": list(MODELS), "sampler": list(SAMPLERS), "device": ["auto", "cpu", "cuda"],
           "zoo": list(ZOO_KINDS)}
LABELS = {
    "dataset": "dataset", "arch": "architecture", "layers": "layers to generate", "k": "K checkpoints",
    "n_generate": "N generated", "ae_steps": "AE steps", "ddpm_steps": "DDPM steps", "sampler": "sampler",
    "ddim_steps": "sampler steps", "ddim_eta": "DDIM η", "in_noise": "AE input noise σ", "latent_noise": "AE latent noise σ",
    "n_classes": "classes", "data_root": "data folder or .npz path", "base_epochs": "base training epochs",
    "base_lr": "base learning rate", "collect_lr": "collection learning rate", "eval_chunk": "models per eval batch",
    "analysis": "run the analysis stage", "zoo": "zoo kind", "zoo_runs": "trajectories (mixed zoo)",
    "zoo_steps": "steps per run (independent zoo)", "base_min_steps": "base training min steps",
}
HELP = {
    "layers": f"one of {', '.join(SUBSETS)} (last_bn: the last two normalization layers, the paper's choice; "
              "head: the last linear layer; all: every parameter), or comma-separated parameter names "
              "such as bn2.weight,bn2.bias",
    "ddim_steps": "steps of the dpm2m and ddim samplers (ddpm takes every timestep); too few shrink samples "
                  "toward their mean (README: Sampler)",
    "sampler": "dpm2m: DPM-Solver++ 2M, the default (README: Sampler); ddim; ddpm: ancestral, every timestep",
    "ddim_eta": "DDIM noise: 0 is deterministic given the start noise, 1 with all steps is ancestral DDPM",
    "in_noise": "σ added to normalized parameters while training the autoencoder (paper: 0.001)",
    "latent_noise": "σ added to latents while training the autoencoder (paper: 0.1); makes the decoder robust",
    "data_root": f"needed by {', '.join(n for n, d in DATASETS.items() if d.needs_root and n != 'npz')} (a folder) "
                 "and npz (a file)",
    "collect_lr": "SGD learning rate while collecting checkpoints; high enough that checkpoints differ. "
                  "If collection diverges it restarts at half the rate (the rate used is in the run's metrics)",
    "k": "checkpoints in the zoo: for the trajectory zoo, one per optimizer step of the collection phase",
    "zoo": "trajectory: K consecutive SGD steps of one continuation from the base model (p-diff's own); "
           "independent: K continuations, each with its own data order, keeping each one's last step; "
           "mixed: R continuations (the 'trajectories' option) of K/R consecutive steps each",
    "zoo_runs": "mixed zoo only: R continuations of K/R steps each (K must be at least 2R)",
    "zoo_steps": "independent zoo only: SGD steps of each continuation; its last step is the checkpoint",
    "base_min_steps": "small datasets give few steps per epoch; base training takes at least this many steps "
                      "(and keeps the weights that score best on validation)",
    "device": "auto picks CUDA when a GPU is visible",
}


def label(name: str) -> str:
    return LABELS.get(name, name.replace("_", " "))


def preset_values(preset: str) -> dict:
    return preset_config(preset).to_dict()


def preset_label(name: str) -> str:
    return f"{name}: {PRESETS[name]['description']}"


NUMERIC = (int, float)


def form_value(name: str, value):
    """What the form's field holds: numbers as the text a user edits (a text field, since a number field
    read '1e3' as 1 and an emptied field as 0, silently), everything else as it is."""
    if TYPES.get(name) in NUMERIC and not isinstance(value, bool) and isinstance(value, NUMERIC):
        return repr(value) if isinstance(value, float) else str(value)
    return value


def typed(values: dict) -> dict:
    """The form's values with each number field's text parsed as --set parses it; ConfigError in one line."""
    out = {}
    for k, v in values.items():
        if TYPES.get(k) in NUMERIC and isinstance(v, str):
            try:
                (v,) = parse_overrides([f"{k}={v.strip()}"]).values()
            except ConfigError:
                raise ConfigError(f"{k} must be {KIND_WORDS[TYPES[k].__name__]}, got '{v}'") from None
        out[k] = v
    return out


def to_query(preset: str, values: dict) -> list[str]:
    """'key=value' for each form value that differs from the preset's (as --set writes them): the page
    keeps these in its URL, so a reload, or a shared link, brings the form back."""
    base, out = preset_values(preset), []
    for k, v in values.items():
        try:
            (v,) = typed({k: v}).values()
        except ConfigError:               # half-typed: left out of the URL until it parses
            continue
        if k not in TYPES or k == "preset" or v == base.get(k):
            continue
        out.append(f"{k}={override_text(v)}")
    return out


def from_query(pairs: list[str]) -> dict:
    """The form values of to_query's pairs; a pair that does not parse, or names no choice, is dropped."""
    out = {}
    for pair in pairs:
        try:
            (k, v), = parse_overrides([pair]).items()
        except ValueError:
            continue
        if k != "preset" and (k not in CHOICES or v in CHOICES[k]):
            out[k] = v
    return out


def build(preset: str, values: dict) -> RunConfig:
    """RunConfig from the preset and the form's values, through the core's validation (one-line ValueError)."""
    fields = typed({k: v for k, v in values.items() if k in TYPES and k != "preset"})
    return validate(preset_config(preset, **fields))


def field_of(message: str) -> str | None:
    """Which form field an error message is about: the first option name it mentions."""
    if message.startswith("--set "):
        message = message[6:]
    if "data_root" in message:
        return "data_root"
    names = sorted(TYPES, key=len, reverse=True)           # 'ddim_steps' before 'steps'-like prefixes
    hits = [(m.start(), n) for n in names for m in [re.search(rf"\b{re.escape(n)}\b", message)] if m]
    if hits:
        return min(hits)[1]
    low = message.lower()
    if "layer" in low:
        return "layers"
    if any(w in low for w in ("npz", "data_root", "dataset", "files not found", "examples", "labels")):
        return "data_root"
    if "cuda" in low:
        return "device"
    return None
