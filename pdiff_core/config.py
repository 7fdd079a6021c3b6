"""RunConfig: every knob of one p-diff run, its presets, and validation with one-line errors."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


class ConfigError(ValueError):
    """A bad option. The message is one line and says what to do."""


@dataclass
class RunConfig:
    preset: str = "digits-quick"
    seed: int = 0
    device: str = "auto"          # auto | cpu | cuda
    threads: int = 1              # CPU threads; 1 is fastest for small presets on shared cores, and the
                                  # numbers depend on it: same seed + same threads = same results
    # data and model
    dataset: str = "digits"
    data_root: str = ""           # folder for mnist/cifar, file path for npz
    arch: str = "mlp"
    width: int = 64               # hidden units (mlp) or base channels (cnn)
    layers: str = "last_bn"       # last_bn | head | all | comma-separated parameter names
    # stage 1: base training, then checkpoint collection of the selected parameters
    base_epochs: int = 10
    base_min_steps: int = 500     # base training takes at least this many optimizer steps (small datasets)
    base_lr: float = 3e-3
    batch_size: int = 128
    k: int = 200                  # checkpoints saved
    collect_lr: float = 0.3       # SGD lr of the collection phase; high enough that checkpoints differ
                                  # (halved and retried from the base model while collection diverges)
    zoo: str = "trajectory"       # trajectory | independent | mixed: how the K checkpoints relate
    zoo_runs: int = 4             # mixed: R continuations of K/R consecutive steps each
    zoo_steps: int = 10           # independent: SGD steps of each continuation (its last step is kept)
    # stage 2: parameter autoencoder
    latent_dim: int = 64
    ae_channels: int = 32         # widest conv channel count; the AE is sized to D, not to this alone
    ae_steps: int = 1000
    ae_lr: float = 2e-3
    ae_batch: int = 50
    in_noise: float = 0.001       # sigma on normalized parameters during AE training
    latent_noise: float = 0.1     # sigma on latents during AE training (makes the decoder robust)
    # stage 3: latent DDPM
    ddpm_steps: int = 1000
    ddpm_lr: float = 2e-3
    ddpm_batch: int = 50
    ddpm_channels: int = 64
    timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 2e-2
    # stage 4: generation
    n_generate: int = 200
    sampler: str = "dpm2m"        # dpm2m (DPM-Solver++ 2M) | ddim | ddpm; chosen by bench/sampler.py (README: Sampler)
    ddim_steps: int = 50          # steps of the dpm2m and ddim samplers; too few shrink samples toward the mean
    ddim_eta: float = 0.0         # DDIM noise: 0 deterministic, 1 = ancestral (DDPM-like) at the DDIM timesteps
    # stage 5: analysis (baselines, similarity, memorization, embeddings, use cases)
    analysis: bool = True
    eval_chunk: int = 16          # models per vmapped call; small keeps CPU activations in cache
    # transfer (family set): a frozen trunk, one binary head per task, a generator conditioned on the task
    family: str = ""              # "" = one task (plain p-diff) | subsets: "class subset S vs rest" tasks
    tasks_train: int = 64         # tasks whose heads the generator learns (k checkpoints each)
    tasks_heldout: int = 16       # tasks it never sees, drawn disjoint from the training tasks by seed
    shots: int = 5                # labelled examples per class: the task embedding and the k-shot baselines
    head_steps: int = 300         # Adam steps of each task's head before its k checkpoints are saved
    guidance: float = 1.0         # classifier-free guidance scale (1 = plain conditional sampling)
    p_uncond: float = 0.1         # share of DDPM training steps without the condition (what guidance needs)
    finetune_steps: int = 30      # SGD steps on the support set in the fine-tuning comparison
    executor: str = "local"       # where per-task collection runs: local | ray (results do not depend on it)
    workers: int = 1              # local: processes at once; ray without address: CPUs of the local cluster
    address: str = ""             # ray: an existing cluster's host:port

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown config key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(names))}")
        return cls(**d)


# digits-quick's wall time: the median over seeds 0-2 of `python -m pdiff_core run --preset digits-quick` on 2
# shared CPU cores, imports included (bench/quick.py). It ranged from 20.2 s (2026-11-29) to 62.4 s (2026-12-07,
# AMD EPYC, late afternoon; 45.6 s the same morning) on the 2-core hosts it was measured on, the same code; the
# README's demo click took 63.9 s to its chart that evening.
# Its description gives the range, and Home promises it for the quick demo until this machine has finished demo
# runs to go by.
DIGITS_QUICK_S = (20, 65)
DIGITS_QUICK_WORDS = f"{DIGITS_QUICK_S[0]}-{DIGITS_QUICK_S[1]}"

PRESETS: dict[str, dict] = {
    "digits-quick": dict(description="digits 8x8, MLP, last two BatchNorm layers (D=256); "
                                     f"about {DIGITS_QUICK_WORDS} s on 2 CPU cores"),
    "digits-independent": dict(description="digits-quick with an independent zoo: K ends of separate continuations "
                                           "from the base model, not K consecutive steps", zoo="independent"),
    "digits-mixed": dict(description="digits-quick with a mixed zoo: 4 trajectories of K/4 consecutive steps",
                         zoo="mixed", zoo_runs=4),
    "digits-cnn": dict(description="digits 8x8, small CNN, last two BatchNorm layers",
                       arch="cnn", width=16, base_epochs=25),
    "mnist1d-cnn": dict(description="MNIST-1D (generated offline), 1-D CNN, last two BatchNorm layers",
                        dataset="mnist1d", arch="cnn", width=32, base_epochs=40, base_lr=3e-3),
    "digits-whole": dict(description="digits 8x8, small MLP, every parameter generated (whole-model p-diff)",
                         arch="mlp", width=32, layers="all", collect_lr=0.02, latent_dim=64,
                         ae_steps=2000, ddpm_steps=1500),
    "digits-tasks": dict(description="transfer: 80 binary 'class subset vs rest' tasks on digits (64 to train the "
                                     "conditional generator, 16 held out); MLP trunk, generated binary head (D=130)",
                         family="subsets", k=20, latent_dim=32, ae_steps=1000, ddpm_steps=2000, n_generate=20),
    "mnist1d-tasks": dict(description="transfer on MNIST-1D: 80 binary 'class subset vs rest' tasks (64 train, 16 "
                                      "held out); MLP trunk, generated binary head",
                          family="subsets", dataset="mnist1d", base_epochs=40, k=20, latent_dim=32, ae_steps=1000,
                          ddpm_steps=2000, n_generate=20),
    "tiny-tasks": dict(description="tiny transfer smoke run: 8 training and 4 held-out digits tasks (a few seconds)",
                       family="subsets", width=16, base_epochs=5, base_min_steps=100, k=6, tasks_train=8,
                       tasks_heldout=4, head_steps=50, ae_steps=100, ddpm_steps=150, n_generate=6, ddim_steps=10,
                       latent_dim=8, ae_channels=16, ddpm_channels=16, finetune_steps=5),
    "cifar10-resnet18": dict(description="CIFAR-10 from a local folder, ResNet-18, last_bn, K=300; wants a GPU",
                             dataset="cifar10", data_root="data/cifar10", arch="resnet18", width=64,
                             base_epochs=30, base_lr=1e-3, k=300, collect_lr=0.01, batch_size=256, eval_chunk=50,
                             ae_steps=3000, ddpm_steps=3000, latent_dim=64),
    # The smallest real run: used by the test suite end to end.
    "tiny": dict(description="tiny end-to-end smoke run (a few seconds)",
                 width=16, base_epochs=5, base_min_steps=100, k=24, ae_steps=150, ddpm_steps=150, n_generate=16,
                 ddim_steps=10, latent_dim=16, ae_channels=16, ddpm_channels=16),
}


def preset_config(name: str, **overrides) -> RunConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'; choose one of: {', '.join(PRESETS)}")
    values = {k: v for k, v in PRESETS[name].items() if k != "description"}
    values.update(overrides)
    cfg = RunConfig.from_dict({"preset": name, **values})
    return cfg


# a field's type in words, for every message that asks for one
KIND_WORDS = {"int": "a whole number", "float": "a number", "str": "text", "bool": "true or false"}


def _coerce(field_type: type, key: str, text: str):
    try:
        if field_type is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        return field_type(text)
    except ValueError:
        raise ConfigError(f"--set {key}={text}: expected {KIND_WORDS[field_type.__name__]}") from None


def override_text(v) -> str:
    """A value as --set writes it, and parse_overrides reads it back: true/false, a float's repr."""
    return str(v).lower() if isinstance(v, bool) else repr(v) if isinstance(v, float) else str(v)


def parse_overrides(pairs: list[str]) -> dict:
    """Turn ['k=200', 'layers=head'] into typed values, with one-line errors."""
    types = {f.name: f.type for f in dataclasses.fields(RunConfig)}
    types = {k: {"int": int, "float": float, "str": str, "bool": bool}[t] for k, t in types.items()}
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects key=value, got '{pair}'")
        key, text = pair.split("=", 1)
        key = key.strip()
        if key not in types:
            raise ConfigError(f"unknown config key '{key}'; valid keys: {', '.join(sorted(types))}")
        if key in out:      # the last one silently winning hides a typo in the other
            raise ConfigError(f"--set {key} is given twice; give each key once")
        out[key] = _coerce(types[key], key, text.strip())
    return out


def validate(cfg: RunConfig) -> RunConfig:
    """Cheap checks of values alone. Dataset files, layer names and sizes that need the data are
    checked in prepare(). Every value that passes here runs: the AE and denoiser work from one
    channel and one latent dimension up, batches larger than the data are clipped."""
    kinds = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}
    for f in dataclasses.fields(cfg):   # a config from JSON (the app, config.json) may carry any type
        name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        want = kinds.get(name)
        v = getattr(cfg, f.name)
        if want and (not isinstance(v, want) or (isinstance(v, bool) and f.type != "bool")):
            raise ConfigError(f"{f.name} must be {KIND_WORDS[name]}, got {v!r}")
        if want and f.type == "float" and not math.isfinite(v):
            raise ConfigError(f"{f.name} must be a finite number, got {v!r}")
        if want and f.type == "int" and abs(v) > MAX_INT:   # torch takes sizes and seeds as 64-bit integers
            raise ConfigError(f"{f.name} must be at most {MAX_INT:,}, got a {len(str(abs(v)))}-digit number")
    positive = ["threads", "width", "base_epochs", "batch_size", "k", "latent_dim", "ae_channels", "ae_steps",
                "ae_batch", "ddpm_steps", "ddpm_batch", "ddpm_channels", "timesteps", "n_generate",
                "ddim_steps", "eval_chunk"]
    for name in positive:
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {v!r}")
    for name in ["base_lr", "collect_lr", "ae_lr", "ddpm_lr"]:
        v = getattr(cfg, name)
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ConfigError(f"{name} must be a positive number, got {v!r}")
    for name in ["base_lr", "ae_lr", "ddpm_lr"]:   # Adam moves each weight by about lr per step
        if getattr(cfg, name) > MAX_ADAM_LR:
            raise ConfigError(f"{name} must be at most {MAX_ADAM_LR:g} (Adam moves every weight by about that much "
                              f"per step, so training only diverges), got {getattr(cfg, name)!r}")
    if cfg.collect_lr > MAX_COLLECT_LR:   # collection halves a diverging rate a few times, not from any size
        raise ConfigError(f"collect_lr must be at most {MAX_COLLECT_LR:g}, got {cfg.collect_lr!r}; 0.3 (last_bn) to "
                          f"0.02 (all) are usual")
    for name in ["in_noise", "latent_noise"]:
        v = getattr(cfg, name)
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ConfigError(f"{name} must be a number >= 0, got {v!r}")
    if not (0 < cfg.beta_start < cfg.beta_end < 1):
        raise ConfigError(f"need 0 < beta_start < beta_end < 1, got {cfg.beta_start} and {cfg.beta_end}")
    if cfg.beta_start < MIN_BETA:
        raise ConfigError(f"beta_start must be at least {MIN_BETA:g}, got {cfg.beta_start:g}: a smaller first step "
                          f"rounds to no noise at all in float32, and sampling divides by it")
    if cfg.timesteps > MAX_TIMESTEPS:
        raise ConfigError(f"timesteps must be at most {MAX_TIMESTEPS}, got {cfg.timesteps}")
    log_abar = sum(math.log1p(-(cfg.beta_start + (cfg.beta_end - cfg.beta_start) * i / max(1, cfg.timesteps - 1)))
                   for i in range(cfg.timesteps))
    if log_abar < math.log(MIN_ALPHA_BAR):   # float32 rounds the signal left to 0: samplers divide 0 by 0
        raise ConfigError(f"the noise schedule leaves no signal (alpha_bar at the last step is {math.exp(log_abar):.1e}, "
                          f"below {MIN_ALPHA_BAR:g}); lower beta_end or timesteps")
    if cfg.k < 2:
        raise ConfigError(f"k must be at least 2 checkpoints, got {cfg.k}")
    _validate_zoo(cfg)
    if cfg.sampler not in SAMPLERS:
        raise ConfigError(f"sampler must be dpm2m, ddim or ddpm, got '{cfg.sampler}'")
    if not (isinstance(cfg.ddim_eta, (int, float)) and not isinstance(cfg.ddim_eta, bool)
            and math.isfinite(cfg.ddim_eta) and cfg.ddim_eta >= 0):
        raise ConfigError(f"ddim_eta must be a number >= 0 (0 deterministic DDIM, 1 DDPM-like), got {cfg.ddim_eta!r}")
    if cfg.ddim_steps > cfg.timesteps:
        raise ConfigError(f"ddim_steps ({cfg.ddim_steps}) cannot exceed timesteps ({cfg.timesteps}); lower ddim_steps")
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, got '{cfg.device}'")
    if cfg.threads > MAX_THREADS:      # torch crashes (segfault) on absurd thread counts
        raise ConfigError(f"threads must be at most {MAX_THREADS}, got {cfg.threads}; 1 or the number of cores is usual")
    if not 0 <= cfg.seed <= MAX_SEED:   # numpy and scikit-learn take seeds below 2**32; the analysis adds offsets
        raise ConfigError(f"seed must be >= 0 and at most {MAX_SEED}, got {cfg.seed}")
    _validate_transfer(cfg)
    return cfg


def _validate_transfer(cfg: RunConfig) -> None:
    if cfg.family not in ("", "subsets"):
        raise ConfigError(f"family must be empty (one task) or subsets (class-subset-vs-rest tasks), got '{cfg.family}'")
    for name in ("tasks_train", "tasks_heldout", "shots", "head_steps", "workers"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be a positive integer, got {getattr(cfg, name)!r}")
    if cfg.finetune_steps < 0:
        raise ConfigError(f"finetune_steps must be a whole number >= 0, got {cfg.finetune_steps!r}")
    if not cfg.guidance >= 0:
        raise ConfigError(f"guidance must be a number >= 0 (1 = plain conditional sampling), got {cfg.guidance!r}")
    if not 0 <= cfg.p_uncond < 1:
        raise ConfigError(f"p_uncond must lie in [0, 1), got {cfg.p_uncond!r}")
    if cfg.executor not in ("local", "ray"):
        raise ConfigError(f"executor must be local or ray, got '{cfg.executor}'")


MAX_SEED = 2 ** 31 - 1
MAX_INT = 2 ** 63 - 1
MAX_ADAM_LR = 1.0
MAX_COLLECT_LR = 10.0
MIN_BETA = 1e-6            # 1 - beta must differ from 1 in float32 (its resolution is 6e-8)
MIN_ALPHA_BAR = 1e-30      # the schedule's last alpha_bar, in float64; float32 keeps it and its square root
MAX_TIMESTEPS = 100_000
MAX_THREADS = 256
ZOO_KINDS = ("trajectory", "independent", "mixed")
SAMPLERS = ("dpm2m", "ddim", "ddpm")        # diffusion.sample's


def _validate_zoo(cfg: RunConfig) -> None:
    """The zoo kind and its sizes; a mixed zoo needs >= 2 steps per trajectory, or it is an independent one."""
    if cfg.zoo not in ZOO_KINDS:
        raise ConfigError(f"zoo must be trajectory (K consecutive steps), independent (K separate continuations) "
                          f"or mixed (zoo_runs trajectories), got '{cfg.zoo}'")
    for name in ("zoo_runs", "zoo_steps"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {v!r}")
    if isinstance(cfg.base_min_steps, bool) or not isinstance(cfg.base_min_steps, int) or cfg.base_min_steps < 0:
        raise ConfigError(f"base_min_steps must be a whole number >= 0 (0: base_epochs alone), got {cfg.base_min_steps!r}")
    if cfg.zoo == "mixed" and cfg.k < 2 * cfg.zoo_runs:
        raise ConfigError(f"zoo_runs ({cfg.zoo_runs}) is too many for k={cfg.k} in a mixed zoo: every trajectory "
                          f"needs at least 2 steps, so k >= 2*zoo_runs; lower zoo_runs to {cfg.k // 2} or less "
                          f"(or use zoo=independent)")


def resolve_device(name: str) -> str:
    """'auto' | 'cpu' | 'cuda' -> 'cpu' | 'cuda'. On CUDA it also turns on TF32 tensor cores for
    fp32 matmuls and convolutions (evaluation, fine-tuning). cuDNN's autotuning stays off (the
    default): it times candidate kernels for every new conv shape, and a run meets many."""
    import torch
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    if name == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    return name
