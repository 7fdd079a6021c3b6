"""Does torch.compile pay for itself on the demo's DDPM stage on this CPU? Eager against compiled, side by side.

    python bench/compile.py [--preset digits-quick] [--steps 200]

Runs the stage's own diffusion.train_ddpm (stand-in latents of the real shape; a step's cost does not
depend on the values), once as it is and once with its Denoiser wrapped in torch.compile, in one process,
one thread, as runs use. Compilation is timed separately: it pays only if compile s < steps x (eager -
compiled) ms/step. It is timed twice: cold, into a fresh inductor cache (a user's first run), and warm, in
a fresh process that reads the cache the first compile wrote (a later run on the same machine)."""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

# cold: nothing cached yet; the warm child process is handed the same directory
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="pdiff-inductor-")
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pdiff_core import diffusion  # noqa: E402
from pdiff_core.config import preset_config  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="digits-quick")
    ap.add_argument("--steps", type=int, default=200, help="timed steps per variant")
    ap.add_argument("--compile-only", action="store_true", help="(internal) print one compile's seconds")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = preset_config(a.preset)
    x = torch.randn(cfg.k, cfg.latent_dim)
    quiet = dict(device="cpu", tick=lambda *_: None, log_loss=lambda *_: None)
    eager_net = diffusion.Denoiser

    def train(steps: int, compiled: bool) -> float:
        """Seconds of one train_ddpm of `steps` steps; compiled: its Denoiser under torch.compile. A new
        Denoiser of the same shape reuses the graphs compiled for the first, so only the first call compiles."""
        make = (lambda *args, **kw: torch.compile(eager_net(*args, **kw))) if compiled else eager_net
        with mock.patch.object(diffusion, "Denoiser", make):
            t0 = time.perf_counter()
            diffusion.train_ddpm(x, dataclasses.replace(cfg, ddpm_steps=steps), **quiet)
            return time.perf_counter() - t0

    if a.compile_only:
        print(train(2, True))       # the first steps compile forward and backward
        return
    cold = train(2, True)
    child = [sys.executable, __file__, "--preset", a.preset, "--compile-only"]
    warm = float(subprocess.run(child, check=True, capture_output=True, text=True).stdout.split()[-1])
    train(20, False)                # warm-up
    # alternating blocks, median of each: the two variants share the machine's load as it drifts
    n_block = max(1, a.steps // 5)
    blocks = [(train(n_block, False) / n_block, train(n_block, True) / n_block) for _ in range(5)]
    e, c = (statistics.median(b[i] for b in blocks) for i in (0, 1))
    n = cfg.ddpm_steps
    print(f"{a.preset}: torch {torch.__version__}, one thread, DDPM {n} steps, batch {min(cfg.ddpm_batch, cfg.k)}, "
          f"{cfg.ddpm_channels} channels\n")
    print("| variant | ms/step | stage s | compile s | stage + compile s |")
    print("|---|---|---|---|---|")
    print(f"| eager | {1e3 * e:.2f} | {n * e:.1f} | 0 | {n * e:.1f} |")
    for name, comp in (("compiled, cold cache", cold), ("compiled, warm cache", warm)):
        print(f"| {name} | {1e3 * c:.2f} | {n * c:.1f} | {comp:.1f} | {n * c + comp:.1f} |")
    pays = ["pays" if n * c + comp < n * e else "does not pay" for comp in (cold, warm)]
    print(f"\nspeed-up per step {e / c:.2f}x; for a {n}-step stage compiling {pays[0]} cold and {pays[1]} warm.")


if __name__ == "__main__":
    try:
        main()
    finally:
        if "--compile-only" not in sys.argv:     # the parent made the cache; it removes it
            shutil.rmtree(os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)
