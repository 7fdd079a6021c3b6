"""CUDA's cold start, with and without the background warm-up (pdiff_core/warmup.py), side by side.

    python bench/coldstart.py                      # digits-quick on the GPU, 3 alternating pairs
    python bench/coldstart.py --device cpu         # a dry run: the warm-up is a no-op on the CPU

Each run is a fresh `python -m pdiff_core run` process (bench/quick.py's run_once), so each one pays
CUDA's cold start; PDIFF_CUDA_WARMUP=0 turns the warm-up off. Pairs alternate so drift on a shared
machine hits both sides alike. Prints the wall time and the collect stage (where the first CUDA
work lands) per run, their medians, and the warm-up's own seconds from status.json."""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.quick import quality, run_once  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="digits-quick")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    sets = [*args.set, f"device={args.device}"]
    rows = {"warm": [], "cold": []}
    with tempfile.TemporaryDirectory() as runs_dir:
        for i in range(args.pairs):
            for side in (("cold", "warm") if i % 2 else ("warm", "cold")):
                r = run_once(args.preset, 0, sets, runs_dir, env={"PDIFF_CUDA_WARMUP": "1" if side == "warm" else "0"})
                warm = r["status"].get("cuda_warmup")
                rows[side].append((r["wall"], r["timings"].get("collect", float("nan")), warm, quality(r["metrics"])))
                print(f"pair {i} {side}: wall {r['wall']:.2f} s, collect {rows[side][-1][1]:.2f} s, warm-up {warm}",
                      flush=True)
    print(f"\n{args.preset} on {args.device}, {args.pairs} pairs: median wall / collect")
    for side, rs in rows.items():
        print(f"  {side:>4}: {np.median([r[0] for r in rs]):.2f} s / {np.median([r[1] for r in rs]):.2f} s")
    same = all(a[3]["gen_median"] == b[3]["gen_median"] for a, b in zip(rows["warm"], rows["cold"]))
    print(f"  same generated median test accuracy with and without the warm-up: {same}")


if __name__ == "__main__":
    main()
