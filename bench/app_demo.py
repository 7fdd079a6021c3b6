"""The quick demo clicked in the app against the same run from the CLI, side by side, same minutes.

    python bench/app_demo.py [--rounds 3]

Each round: `python -m pdiff_core run --preset digits-quick` in a fresh process (wall time, imports
included), then a fresh `streamlit run app.py` where headless Chromium clicks the quick-demo button
and waits until the Accuracy page shows its chart. Also printed: the worker's own time in each, and
the CPU the server and Chromium used while the app's run went (they share the machine's cores).
Needs Debian's chromium and playwright, as the browser tests do."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
import test_browser as tb  # noqa: E402  (the server and browser helpers of the browser tests)

PRESET = "digits-quick"


def chromium_cpu() -> float:
    total = 0.0
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and "chrom" in (p / "comm").read_text():
                total += tb.cpu_seconds(int(p.name))
        except OSError:
            pass
    return total


def worker_seconds(run_dir: Path) -> float:
    s = json.loads((run_dir / "status.json").read_text())
    return s["finished"] - s["started"]


def cli(runs_dir: Path, run_id: str) -> dict:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pdiff_core", "run", "--preset", PRESET, "--run-id", run_id, "--quiet"],
                   cwd=ROOT, env={**os.environ, "PDIFF_RUNS_DIR": str(runs_dir)}, check=True, capture_output=True)
    return {"wall": time.perf_counter() - t0, "worker": worker_seconds(runs_dir / run_id)}


def app(runs_dir: Path, log: Path, browser) -> dict:
    with tb.streamlit_server(runs_dir, log) as url:
        page = tb.new_page(browser)
        page.goto(url)
        tb.wait_page(page, "p-diff Studio", f'button:has-text("{tb.DEMO_BUTTON}")')
        server = tb.SERVERS[url].pid
        c0, ch0 = tb.cpu_seconds(server), chromium_cpu()
        t0 = time.perf_counter()
        page.get_by_role("button", name=tb.DEMO_BUTTON).click()
        page.wait_for_selector(f'h1:has-text("Accuracy"), {tb.ERRORS}', timeout=600_000)
        tb.wait_page(page, "Accuracy", tb.CHART)
        wall = time.perf_counter() - t0
        run_id = page.url.split("run=")[1].split("&")[0]
        out = {"wall": wall, "worker": worker_seconds(runs_dir / run_id),
               "server_cpu": tb.cpu_seconds(server) - c0, "chromium_cpu": chromium_cpu() - ch0}
        page.close()
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, tb.chromium() as browser:
        for i in range(args.rounds):
            c = cli(Path(tmp) / f"cli{i}", f"cli-{i}")
            a = app(Path(tmp) / f"app{i}", Path(tmp) / f"streamlit{i}.log", browser)
            rows.append((c, a))
            print(f"round {i}: CLI {c['wall']:.1f} s (worker {c['worker']:.1f}) | app click to results {a['wall']:.1f} s "
                  f"(worker {a['worker']:.1f}; server CPU {a['server_cpu']:.1f} s, chromium CPU {a['chromium_cpu']:.1f} s)"
                  f" | ratio {a['wall'] / c['wall']:.2f}", flush=True)
    cw, aw = np.median([c["wall"] for c, _ in rows]), np.median([a["wall"] for _, a in rows])
    print(f"\nmedian of {args.rounds}: CLI {cw:.1f} s, app {aw:.1f} s, app/CLI {aw / cw:.2f} "
          f"(target: at most 1.25); per-round ratios {[round(a['wall'] / c['wall'], 2) for c, a in rows]}")


if __name__ == "__main__":
    main()
