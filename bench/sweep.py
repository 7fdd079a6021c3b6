"""A sweep three ways, back to back: local executor in parallel, the same cells one after another,
and through Ray on a two-node cluster made on this machine.

    python bench/sweep.py [--from k-memorization] [--keep DIR] [--skip-serial] [--skip-ray]

Prints the wall times, the parallel/serial ratio, which Ray node ran each cell, whether every
cell's metrics.json is byte-identical across executors, and peak memory (driver, Ray worker task,
cell process). The Ray cluster: `ray start --head` plus `ray start --address`, one CPU each, on
loopback addresses, token authentication on (RAY_AUTH_MODE=token); it is stopped at the end."""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pdiff_core import sweep  # noqa: E402

HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"   # loopback addresses Ray keeps as given (see executors.LOOPBACK_IP)


def run_sweep(runs_dir: Path, name: str, spec: str, *extra: str) -> float:
    env = {**os.environ, "PDIFF_RUNS_DIR": str(runs_dir)}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "pdiff_core", "sweep", "--from", spec, "--name", name, *extra],
                       cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"sweep {name} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return wall


def cells(runs_dir: Path, name: str) -> list[dict]:
    return json.loads((runs_dir / "_sweeps" / name / "sweep.json").read_text())["cells"]


def node(runs_dir: Path, run: str) -> dict:
    return json.loads((runs_dir / run / "node.json").read_text())


def state(runs_dir: Path, name: str) -> dict:
    return json.loads((runs_dir / "_sweeps" / name / "state.json").read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_cli(*args: str, env: dict) -> None:
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", *args], env=env, check=True, capture_output=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="spec", default="k-memorization")
    ap.add_argument("--keep", type=Path, help="runs folder to keep the parallel local sweep in (for the app)")
    ap.add_argument("--skip-serial", action="store_true")
    ap.add_argument("--skip-ray", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    local_dir = args.keep or tmp / "local"
    name = args.spec

    wall_par = run_sweep(local_dir, name, args.spec, "--workers", str(os.cpu_count()))
    cs = cells(local_dir, name)
    st = state(local_dir, name)
    print(f"local, {os.cpu_count()} workers: {len(cs)} cells in {wall_par:.1f} s "
          f"(driver peak RSS {st['driver_peak_rss_mib']:.0f} MiB; cell processes peak "
          f"{max(node(local_dir, c['run'])['peak_rss_mib'] for c in cs):.0f} MiB)", flush=True)

    if not args.skip_serial:
        wall_ser = run_sweep(tmp / "serial", name, args.spec, "--workers", "1")
        print(f"local, 1 worker (one after another): {wall_ser:.1f} s; parallel / serial = {wall_par / wall_ser:.2f} "
              f"(the floor on {os.cpu_count()} cores is {1 / os.cpu_count():.2f})", flush=True)

    if not args.skip_ray:
        port = free_port()
        env = {**os.environ, "RAY_AUTH_MODE": "token"}
        subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "get-auth-token", "--generate"], env=env,
                       capture_output=True)        # makes ~/.ray/auth_token unless there is one
        try:
            ray_cli("start", "--head", "--node-ip-address", HEAD_IP, "--port", str(port), "--num-cpus", "1",
                    "--include-dashboard=false", "--disable-usage-stats", env=env)
            ray_cli("start", "--address", f"{HEAD_IP}:{port}", "--node-ip-address", WORKER_IP, "--num-cpus", "1",
                    "--disable-usage-stats", env=env)
            t0 = time.perf_counter()
            p = subprocess.run([sys.executable, "-m", "pdiff_core", "sweep", "--from", args.spec, "--name", name,
                                "--executor", "ray", "--address", f"{HEAD_IP}:{port}"],
                               cwd=ROOT, env={**env, "PDIFF_RUNS_DIR": str(tmp / "ray")}, capture_output=True, text=True)
            wall_ray = time.perf_counter() - t0
        finally:
            subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], capture_output=True)
        if p.returncode != 0:
            raise SystemExit(f"ray sweep failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
        nodes = [node(tmp / "ray", c["run"]) for c in cs]
        per_node: dict[str, int] = {}
        for n in nodes:
            key = f"{n.get('node_ip')} ({n.get('node_id', '')[:8]})"
            per_node[key] = per_node.get(key, 0) + 1
        same = sum((tmp / "ray" / c["run"] / "metrics.json").read_bytes() == (local_dir / c["run"] / "metrics.json").read_bytes()
                   for c in cs)
        st = state(tmp / "ray", name)
        print(f"ray, two nodes x 1 CPU (token auth on): {wall_ray:.1f} s; cells per node {per_node}; "
              f"metrics.json identical to the local executor's for {same} of {len(cs)} cells", flush=True)
        print(f"  peak RSS: driver {st['driver_peak_rss_mib']:.0f} MiB; Ray worker task "
              f"{max(n['task_peak_rss_mib'] for n in nodes):.0f} MiB; cell process "
              f"{max(n['peak_rss_mib'] for n in nodes):.0f} MiB", flush=True)

    # the question the preset sweep asks, averaged over seeds with 95 % intervals
    os.environ["PDIFF_RUNS_DIR"] = str(local_dir)
    sw = sweep.load(name)
    rows = sweep.results(sw)
    keys = list(sw["grid"])
    print(f"\n{name}: mean over seeds [95 % interval]")
    metrics = ["replica_rate", "traj_ratio", "smax_mean", "dominated", "gen_minus_orig", "gen_acc_median"]
    print(" | ".join(keys + metrics))
    for combo in dict.fromkeys(tuple(r[k] for k in keys) for r in rows):
        part = [r for r in rows if tuple(r[k] for k in keys) == combo]
        cells_ = []
        for m in metrics:
            mean, lo, hi, n = sweep.mean_ci([r[m] for r in part])
            cells_.append("-" if n == 0 else f"{mean:.3g} [{lo:.3g}, {hi:.3g}]" if n > 1 else f"{mean:.3g}")
        print(" | ".join([str(c) for c in combo] + cells_))
    print(f"\nruns: {local_dir}")


if __name__ == "__main__":
    main()
