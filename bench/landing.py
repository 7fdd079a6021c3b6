"""How often the quick demo lands on a blank results page: click it N times in a real browser.

    python bench/landing.py                 # 12 demos, Home polling every 0.05 s (widens the race)
    python bench/landing.py --poll 0.5 -n 40   # as shipped (POLL_S = 0.5): the race is rare there
    python bench/landing.py --rev 32cae78   # another commit, e.g. one before the fix

A demo lands on its results by st.switch_page from Home, whose fragments poll the run every POLL_S seconds.
A poll the browser had sent before it heard of the switch was run after it under Home's page id, and the browser
then cleared the results page: the title drawn, then the main area empty (ui.drop_fragments). Each demo gets a
fresh Streamlit server on a fresh runs directory (the tiny preset, as the browser tests), from a copy of the tree
whose studio/ui.py polls every --poll seconds. Needs Debian's chromium and playwright (requirements-dev.txt).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def copy_tree(rev: str | None, poll: float) -> Path:
    """The working tree (or commit `rev`) in a temporary folder, with POLL_S set to `poll`."""
    dest = Path(tempfile.mkdtemp(prefix="landing-")) / "repo"
    if rev:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
        subprocess.run(["git", "-C", str(dest), "checkout", "-q", rev], check=True)
    else:
        shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(".git", ".venv*", "runs", "__pycache__"))
    ui = dest / "studio" / "ui.py"
    text, n = re.subn(r"^POLL_S = [0-9.]+", f"POLL_S = {poll}", ui.read_text(), flags=re.M)
    if n != 1:
        sys.exit("studio/ui.py has no POLL_S line to set")
    ui.write_text(text)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=12, help="demos to click")
    ap.add_argument("--poll", type=float, default=0.05, help="Home's polling interval, seconds")
    ap.add_argument("--rev", help="a commit to test instead of the working tree")
    args = ap.parse_args()
    repo = copy_tree(args.rev, args.poll)
    os.chdir(repo)
    sys.path.insert(0, str(repo))
    from tests import test_browser as tb          # the browser tests' own server, browser and waits
    from tests.conftest import wait_for
    blank = 0
    with tb.chromium() as browser:
        for i in range(args.n):
            tmp = Path(tempfile.mkdtemp(prefix="landing-run-"))
            runs_dir = tmp / "runs"
            with tb.streamlit_server(runs_dir, tmp / "streamlit.log") as url:
                page = tb.new_page(browser)
                page.goto(url)
                tb.wait_page(page, "p-diff Studio", f'button:has-text("{tb.DEMO_BUTTON}")')
                page.get_by_role("button", name=tb.DEMO_BUTTON).click()
                wait_for(lambda: tb.ended_state(runs_dir), timeout=300)
                try:
                    page.wait_for_selector(f'h1:has-text("Accuracy"), {tb.ERRORS}', timeout=60_000)
                    tb.wait_page(page, "Accuracy", tb.CHART, timeout_s=20)
                    verdict = "landed"
                except Exception as e:           # a Playwright timeout, or wait_page's AssertionError
                    blank += 1
                    verdict = "BLANK: " + str(e).splitlines()[0][:140]
                print(f"demo {i + 1}/{args.n}: {verdict}", flush=True)
                page.close()
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{blank} of {args.n} demos did not show their results (POLL_S {args.poll} s, "
          f"{args.rev or 'working tree'})")
    shutil.rmtree(repo.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
