"""Page render times in a real browser: median per page over warm visits, after the first load.

    python bench/pages.py [--runs-dir DIR] [--rounds 5] [--shots DIR]

Without --runs-dir it first runs digits-quick from the CLI into a temporary folder. Then a fresh
`streamlit run app.py`, and headless Chromium clicks through every page `rounds` + 1 times: the
first round is the cold load (caches empty), the medians are over the rest. A visit's time is from
the click on the sidebar link until the page has finished its script run and shows its chart (or
its main element). --shots saves a full-page PNG of each page from the last round."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
import test_browser as tb  # noqa: E402  (the server and browser helpers of the browser tests)

BUDGET_S = 1.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs-dir", type=Path)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--shots", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs_dir = args.runs_dir
        if runs_dir is None:
            runs_dir = Path(tmp) / "runs"
            subprocess.run([sys.executable, "-m", "pdiff_core", "run", "--preset", "digits-quick", "--quiet"],
                           cwd=ROOT, env={**os.environ, "PDIFF_RUNS_DIR": str(runs_dir)}, check=True)
        times: dict[str, list[float]] = {}
        with tb.streamlit_server(runs_dir, Path(tmp) / "streamlit.log") as url, tb.chromium() as browser:
            page = tb.new_page(browser)
            page.goto(url)
            tb.wait_page(page, "p-diff Studio", '[data-testid="stGraphVizChart"]')
            for round_ in range(args.rounds + 1):
                last = round_ == args.rounds
                for label, title, selector in tb.PAGES:
                    s = tb.visit(page, label, title, selector, args.shots if last and args.shots else None)
                    times.setdefault(label, []).append(s)
    print(f"{'page':<16} {'first s':>8} {'median s':>9} {'max s':>6}  (median and max over {args.rounds} warm visits)")
    for label, t in times.items():
        med = float(np.median(t[1:]))
        print(f"{label:<16} {t[0]:>8.2f} {med:>9.2f} {max(t[1:]):>6.2f}  {'ok' if med <= BUDGET_S else 'OVER ' + str(BUDGET_S)}")


if __name__ == "__main__":
    main()
