"""Does the t-SNE helper process pay? Runs with and without it, alternating, so host drift hits both alike.

    python bench/helper.py [--preset tiny digits-quick] [--pairs 3]

Each run is `python -m pdiff_core run` in a fresh process (imports included). "Without" patches
embed.HELPER_MIN_POINTS in that process so that no map goes to the helper; "with" sets it to 0, so that
every map does (the default, 300 points, sends digits-quick's 801 there and keeps tiny's 169 here).
Prints the median wall time and CPU (the run's process and its children) of each way, and their ratio."""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = ("import sys, pdiff_core.embed as e; e.HELPER_MIN_POINTS = int(sys.argv[1]); "
         "from pdiff_core.__main__ import main; sys.exit(main(sys.argv[2:]))")
WAYS = {"with the helper": 0, "without": 10**9}


def one(preset: str, min_points: int, runs_dir: str) -> tuple[float, float, str]:
    """(wall s, CPU s, where the maps were computed) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    run_id = f"{preset}-{min_points}-{time.time_ns()}"
    p = subprocess.run([sys.executable, "-c", CHILD, str(min_points), "run", "--preset", preset, "--quiet",
                        "--run-id", run_id], cwd=ROOT, env={**os.environ, "PDIFF_RUNS_DIR": runs_dir},
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(f"run failed ({p.returncode}): {p.stderr.strip()[-500:]}")
    where = json.loads((Path(runs_dir) / run_id / "status.json").read_text())["analysis_timings"]["maps"]["where"]
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall, cpu, where


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", nargs="+", default=["tiny", "digits-quick"])
    ap.add_argument("--pairs", type=int, default=3)
    args = ap.parse_args()
    print("| preset | way | wall s, each | wall median s | CPU median s | maps computed |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as runs_dir:
        for preset in args.preset:
            got = {way: [] for way in WAYS}
            for _ in range(args.pairs):
                for way, min_points in WAYS.items():
                    got[way].append(one(preset, min_points, runs_dir))
            for way, rows in got.items():
                print(f"| {preset} | {way} | {', '.join(f'{w:.1f}' for w, _, _ in rows)} | "
                      f"{statistics.median([w for w, _, _ in rows]):.2f} | {statistics.median([c for _, c, _ in rows]):.2f} | {rows[0][2]} |")
            w, wo = ([statistics.median([r[i] for r in got[way]]) for i in (0, 1)] for way in WAYS)
            print(f"| {preset} | with ÷ without | | {w[0] / wo[0]:.2f}x | {w[1] / wo[1]:.2f}x | |")


if __name__ == "__main__":
    main()
