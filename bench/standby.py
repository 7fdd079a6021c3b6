"""Does the waiting worker pay? Runs launched as the app launches them (jobs.start), alternating between
a worker that did its imports before the click ("waiting", jobs.standby) and a fresh one.

    python bench/standby.py [--preset tiny digits-quick] [--pairs 3] [--lead 15]

"waiting" starts the worker `lead` seconds before jobs.start, as the page does while the user reads it
(its imports take 4-6 s here). The time is the app's click-to-results: from jobs.start to the run's
"finished" in status.json, and its two parts: to the run's "started" (the worker's imports, when it
has them to do, and the run's checks and data) and from there to "finished". CPU is the worker's
and its children's (the t-SNE helper), the waiting worker's imports included, so the two ways
should spend about the same."""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pdiff_core import jobs  # noqa: E402
from pdiff_core.config import preset_config  # noqa: E402


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def one(preset: str, waiting: bool, lead: float) -> tuple[float, float, float, float, str]:
    """(start-to-finished s, to started s, started to finished s, CPU s, how the worker began) of one run."""
    cpu0 = children_cpu()
    if waiting:
        jobs.standby()
        time.sleep(lead)
    t0 = time.time()
    rid = jobs.start(preset_config(preset))
    while (status := jobs.refresh(rid))["state"] in jobs.ACTIVE:
        time.sleep(0.1)
    if status["state"] != "done":
        raise SystemExit(f"{rid} {status['state']}: {status.get('error')}")
    jobs._children.pop(status["pid"]).wait()         # reaped: its CPU (and its helper's) is counted
    print(f"  {preset} {status.get('standby', 'fresh')}: {status['finished'] - t0:.1f} s, stages "
          + ", ".join(f"{k} {v:.1f}" for k, v in status["timings"].items()), file=sys.stderr, flush=True)
    return (status["finished"] - t0, status["started"] - t0, status["finished"] - status["started"],
            children_cpu() - cpu0, status.get("standby", "fresh"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", nargs="+", default=["tiny", "digits-quick"])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--lead", type=float, default=15.0, help="seconds the worker waits before the click")
    args = ap.parse_args()
    print("| preset | way | start to done s, each | median s | to started | started to done | CPU median s | worker |\n"
          "|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as runs_dir:
        os.environ["PDIFF_RUNS_DIR"], os.environ["PDIFF_STANDBY"] = runs_dir, "1"
        for preset in args.preset:
            got = {"waiting": [], "fresh": []}
            for _ in range(args.pairs):
                for way in got:
                    got[way].append(one(preset, way == "waiting", args.lead))
            med = {way: [statistics.median([r[i] for r in rows]) for i in range(4)] for way, rows in got.items()}
            for way, rows in got.items():
                print(f"| {preset} | {way} | {', '.join(f'{r[0]:.1f}' for r in rows)} | "
                      + " | ".join(f"{v:.2f}" for v in med[way]) + f" | {', '.join(sorted({r[4] for r in rows}))} |")
            print(f"| {preset} | waiting ÷ fresh | | "
                  + " | ".join(f"{w / f:.2f}x" for w, f in zip(med["waiting"], med["fresh"])) + " | |", flush=True)
        jobs.stop_all_started()


if __name__ == "__main__":
    main()
