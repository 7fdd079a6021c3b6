"""Every accepted config runs, or is refused up front (issue 10, item 8).

Seeded random configs on the tiny preset go through the real CLI entry point in this process.
Each must either end in state `done`, or exit 2 with one line before any run directory exists.
Exit 1 (a failed run) or an uncaught exception is a failure; all of them are listed at the end.
"""
from __future__ import annotations

import json
import random
import signal
import time

import pytest

from pdiff_core import embed
from pdiff_core.__main__ import main

SEED = 20240610
DRAWS = 50
ANALYSIS_EVERY = 10         # every 10th draw runs the analysis too (about 2 s each)

# Fast defaults on top of the tiny preset, so a draw that runs takes about a second.
FAST = dict(base_epochs=1, base_min_steps=0, k=8, ae_steps=20, ddpm_steps=20, n_generate=4, ddim_steps=5,
            analysis=False)

# Candidate values per field: typed (ints are ints, floats are floats), small and edge values,
# tiny and huge rates, valid and invalid choices.
POOLS: dict[str, list] = {
    "seed": [0, 1, 7, 2 ** 31 - 1, 2 ** 31, -1],
    "device": ["cpu", "auto", "cuda", "tpu"],
    "threads": [1, 2, 0, -3, 100000],
    "dataset": ["digits", "digits", "npz", "imagenet"],
    "arch": ["mlp", "mlp", "cnn", "transformer"],
    "width": [1, 2, 3, 8, 0],
    "layers": ["last_bn", "head", "all", "bogus", "bn2.weight,bn2.bias", "fc1.weight", ""],
    "base_epochs": [1, 2, 0],
    "base_min_steps": [0, 30, -1],
    "base_lr": [1e-30, 1e-4, 3e-3, 1.0, 1e6, 0.0, -1.0],
    "batch_size": [1, 2, 7, 100000, 0],
    "k": [2, 3, 5, 1, 0],
    "collect_lr": [1e-30, 1e-3, 0.3, 10.0, 1e6, -0.1],
    "zoo": ["trajectory", "independent", "mixed", "mixed", "random"],
    "zoo_runs": [1, 2, 3, 5, 0],
    "zoo_steps": [1, 2, 5, 0],
    "latent_dim": [1, 2, 3, 17, 0],
    "ae_channels": [1, 2, 3, 5, 0],
    "ae_steps": [1, 2, 30, 0],
    "ae_lr": [1e-30, 2e-3, 1.0, 1e6, 0.0],
    "ae_batch": [1, 2, 1000, -1],
    "in_noise": [0.0, 0.001, 10.0, -1.0],
    "latent_noise": [0.0, 0.1, 100.0, -0.1],
    "ddpm_steps": [1, 2, 30, 0],
    "ddpm_lr": [1e-30, 2e-3, 1.0, 1e6, -1.0],
    "ddpm_batch": [1, 2, 1000, 0],
    "ddpm_channels": [1, 2, 3, 10, 12, 0],
    "timesteps": [1, 2, 10, 1000, 0],
    "beta_start": [1e-4, 1e-6, 1e-8, 0.0, 0.5, 1.5],
    "beta_end": [2e-2, 0.1, 0.3, 0.999, 1.0, 1e-5],
    "n_generate": [1, 2, 5, 0],
    "sampler": ["ddim", "ddpm", "ddpm", "euler"],
    "ddim_steps": [1, 2, 5, 50, 0],
    "ddim_eta": [0.0, 0.5, 1.0, 5.0, -1.0],
    "analysis": [False, True],
    "eval_chunk": [1, 3, 1000, 0],
}


def text(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v) if isinstance(v, float) else str(v)


# The cases measured in issue 10 come first, with the analysis on.
EDGES = [dict(latent_dim=1), dict(k=2), dict(n_generate=1), dict(k=2, n_generate=1, latent_dim=1),
         dict(ae_channels=1, ddpm_channels=1), dict(layers="all", analysis=False),
         dict(layers="all", collect_lr=10.0, analysis=False)]


def draws(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = [{**FAST, "analysis": True, **edge} for edge in EDGES]
    for i in range(n):
        cfg = dict(FAST, analysis=i % ANALYSIS_EVERY == 0)
        for key in rng.sample(sorted(POOLS), rng.randint(1, 5)):
            cfg[key] = rng.choice(POOLS[key])
        if cfg.get("sampler") == "ddpm" and cfg.get("timesteps", 1000) > 100:
            cfg["timesteps"] = rng.choice([1, 10, 50])   # ancestral sampling walks every timestep
        out.append(cfg)
    return out


def run_one(cfg: dict, runs_dir, monkeypatch) -> tuple[str, str]:
    """('done' | 'refused' | 'failing', detail)."""
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(runs_dir))
    argv = ["run", "--preset", "tiny", "--quiet"]
    for key, v in cfg.items():
        argv += ["--set", f"{key}={text(v)}"]
    try:
        code = main(argv)
    except SystemExit as e:          # argparse
        code = e.code
    except BaseException as e:       # an uncaught exception is a traceback for the user
        return "failing", f"uncaught {type(e).__name__}: {e}"
    made = [p for p in runs_dir.iterdir() if p.is_dir()] if runs_dir.exists() else []
    if code == 2:
        return ("refused", "") if not made else ("failing", f"exit 2 but run directory {made[0].name} exists")
    if len(made) != 1:
        return "failing", f"exit {code} with {len(made)} run directories"
    status = json.loads((made[0] / "status.json").read_text())
    if code == 0 and status.get("state") == "done":
        return "done", ""
    return "failing", f"exit {code}, state {status.get('state')}: {status.get('error') or status.get('message')}"


@pytest.mark.slow
def test_every_accepted_config_runs_or_is_refused_up_front(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(embed, "umap_available", lambda: False)   # umap's cold import alone takes 30-40 s
    sigterm = signal.getsignal(signal.SIGTERM)                     # the CLI installs its own handler
    counts, failures = {"done": 0, "refused": 0, "failing": 0}, []
    t0 = time.perf_counter()
    try:
        configs = draws(DRAWS, SEED)
        for i, cfg in enumerate(configs):
            outcome, detail = run_one(cfg, tmp_path / f"draw{i}", monkeypatch)
            counts[outcome] += 1
            if outcome == "failing":
                failures.append(f"draw {i}: {' '.join(f'{k}={text(v)}' for k, v in cfg.items())}\n    -> {detail}")
    finally:
        signal.signal(signal.SIGTERM, sigterm)
        embed.stop_helper()
    with capsys.disabled():
        print(f"\nfuzz: {counts['done']} done, {counts['refused']} refused, {counts['failing']} failing "
              f"of {len(configs)} configs in {time.perf_counter() - t0:.0f} s (seed {SEED})")
    assert counts["done"] >= 10 and counts["refused"] >= 10, counts   # the draws exercise both paths
    assert not failures, "configs that neither ran nor were refused up front:\n" + "\n".join(failures)


def test_autoencoder_and_denoiser_take_any_small_size():
    """No minimum channel count or latent size: GroupNorm groups divide the channels, an odd
    time-embedding width works, the AE pads D to its conv plan."""
    import torch
    from pdiff_core.autoencoder import ParamAutoencoder
    from pdiff_core.diffusion import Denoiser
    for latent in (1, 2, 3, 17):
        for ch in (1, 2, 3, 5, 10, 12):
            net = Denoiser(latent, ch)
            assert net(torch.randn(3, latent), torch.tensor([0, 5, 999])).shape == (3, latent)
        for dim in (1, 5, 70):
            ae = ParamAutoencoder(dim, latent, max_channels=1)
            z = ae.encode(torch.randn(2, dim))
            assert z.shape == (2, latent) and ae.decode(z).shape == (2, dim)


@pytest.mark.parametrize("overrides, words", [
    (dict(beta_start=1e-8), "beta_start must be at least"),
    (dict(beta_end=0.3), "leaves no signal"),
    (dict(ae_lr=5.0), "ae_lr must be at most 1"),
    (dict(threads=100000), "threads must be at most"),
    (dict(seed=2 ** 32), "seed must be >= 0 and at most"),
    (dict(analysis="yes"), "analysis must be true or false"),
    (dict(k=2.5), "k must be a whole number"),
    (dict(batch_size=1), "batch_size must be at least 2"),
])
def test_refusals_are_one_line_in_words(overrides, words):
    from pdiff_core.config import ConfigError, preset_config
    from pdiff_core.prepare import prepare
    with pytest.raises(ConfigError) as e:
        prepare(preset_config("tiny", **overrides))
    msg = str(e.value)
    assert words in msg and "\n" not in msg and "[" not in msg, msg
