"""The memorization verdict per zoo kind, side by side.

    python bench/zoo.py [--presets digits-quick mnist1d-cnn] [--zoos trajectory independent] [--seed 0]
    python bench/zoo.py --runs RUN_DIR [RUN_DIR ...]      # tabulate finished runs instead

Each (preset, zoo) runs `python -m pdiff_core run` in a fresh process (bench/quick.py), then
the table is read from each run's analysis.json: replica rate, the trajectory-distance figures,
mean s_max, share of exact error twins and the dominated share."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.quick import run_once  # noqa: E402
from pdiff_core.words import trajectory_figures, zoo_kind  # noqa: E402


def row(run_dir: Path) -> dict:
    a = json.loads((run_dir / "analysis.json").read_text())
    cfg = json.loads((run_dir / "config.json").read_text())
    mem = a["memorization"]
    g = mem["groups"]["generated"]
    traj = trajectory_figures(mem) or {}
    return {"preset": cfg["preset"], "zoo": zoo_kind(mem),
            "replica": g["replica_rate"], "ratio": g["median_ratio_raw"], "on_path": traj.get("on_path_rate"),
            "traj_step": traj.get("ratio_to_step"), "smax": g["smax_mean"], "smax_one": g["smax_one"],
            "dominated": mem["dominated_share"], "acc": a["accuracy"]["generated_median"],
            "headline": a["verdict"].split("**")[-2] if "**" in a["verdict"] else a["verdict"][:80]}


def fmt(v, spec):
    width = int("".join(c for c in spec.split(".")[0] if c.isdigit()) or 0)
    return "-".rjust(width) if v is None else format(v, spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["digits-quick", "mnist1d-cnn"])
    ap.add_argument("--zoos", nargs="+", default=["trajectory", "independent"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", nargs="+", help="finished run directories to tabulate")
    ap.add_argument("--keep", metavar="DIR", help="write the runs into DIR and keep them (default: a temporary folder)")
    args = ap.parse_args()
    if args.runs:
        rows = [row(Path(d)) for d in args.runs]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            runs_dir, rows = args.keep or tmp, []
            for preset in args.presets:
                for zoo in args.zoos:
                    rows.append(row(run_once(preset, args.seed, [f"zoo={zoo}"], runs_dir)["dir"]))
    print(f"{'preset':<14} {'zoo':<12} {'replica':>8} {'dNN/own':>8} {'on path':>8} {'dtraj/step':>10} "
          f"{'mean smax':>9} {'smax=1':>7} {'dominated':>9} {'gen acc':>8}")
    for r in rows:
        print(f"{r['preset']:<14} {r['zoo']:<12} {fmt(r['replica'], '>8.1%')} {fmt(r['ratio'], '>8.2f')} "
              f"{fmt(r['on_path'], '>8.1%')} {fmt(r['traj_step'], '>10.2f')} {fmt(r['smax'], '>9.3f')} "
              f"{fmt(r['smax_one'], '>7.1%')} {fmt(r['dominated'], '>9.1%')} {fmt(r['acc'], '>8.2%')}")
    print()
    for r in rows:
        print(f"{r['preset']} / {r['zoo']}: {r['headline']}")


if __name__ == "__main__":
    main()
