import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
torch.set_num_threads(1)   # as runs do: on shared 2-core machines two threads ran up to 20x slower
# No waiting worker (jobs.standby) behind the in-process AppTests: each test's own runs directory would stop
# the last one and start another, 5.5 s of CPU each. The browser tests' servers and test_jobs turn it on.
os.environ["PDIFF_STANDBY"] = "0"


# pytest-xdist runs the tests on two workers (pyproject's addopts), and each worker builds the fixtures its
# tests need. The tests that share one of the two fixtures that take 30-40 s (a demo run clicked in the browser,
# a sweep) go to one worker, so that each is built once; they are handed out first, as the longest work.
SHARED = ("demo_run", "tiny_sweep")


@pytest.hookimpl(tryfirst=True)     # before xdist's own hook, which reads the groups
def pytest_collection_modifyitems(items):
    group = {item: next((name for name in SHARED if name in getattr(item, "fixturenames", ())), None)
             for item in items}
    for item, name in group.items():
        if name:
            item.add_marker(pytest.mark.xdist_group(name))
            # "slow" (pyproject's markers): the shared fixtures are a clicked demo and a sweep of worker
            # processes; the other slow tests carry the mark themselves
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: group[item] is None)      # stable: the order within each part is kept


def wait_for(what, timeout: float = 120, every: float = 0.2):
    """what()'s first truthy value, polled every `every` s; fails the test after `timeout` s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = what()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    """A private runs directory for one test."""
    d = tmp_path / "runs"
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(d))
    return d


@contextmanager
def executed(tmp_path_factory, preset: str, name: str, overrides: dict | None = None, **modules):
    """`preset` (with `overrides` of its config) run in this process on one thread, as the pipeline runs it,
    in its own runs directory (PDIFF_RUNS_DIR points there while it runs; `modules` patch sys.modules);
    yields the run directory.
    Both are restored before the yield: two session runs that both kept the variable set left a test
    reading whichever was made last, and a patched module stayed patched for the whole session (a test
    that names a run by id sets PDIFF_RUNS_DIR to run_dir.parent; one that re-runs it patches alike)."""
    from pdiff_core.analysis import one_thread
    from pdiff_core.config import preset_config
    from pdiff_core.pipeline import execute
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("runs")
    mp.setenv("PDIFF_RUNS_DIR", str(root))
    for module, value in modules.items():
        mp.setitem(sys.modules, module, value)
    run_dir = root / name
    run_dir.mkdir()
    try:
        with one_thread():
            execute(preset_config(preset, **(overrides or {})), run_dir)
    finally:
        mp.undo()
    yield run_dir


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The tiny preset with the analysis stage on, shared by the tests that only read it. UMAP is
    made unimportable (its cold import alone takes 30-40 s), which also tests the graceful skip."""
    with executed(tmp_path_factory, "tiny", "tiny", umap=None) as run_dir:
        yield run_dir


@pytest.fixture(scope="session")
def tiny_transfer(tmp_path_factory):
    """One real tiny-tasks run, shared by the tests that read it (test_transfer, test_app's and the browser's
    Transfer page, which copies it into its runs directory)."""
    with executed(tmp_path_factory, "tiny-tasks", "tt") as run_dir:
        yield run_dir


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory):
    """A real tiny sweep from the CLI, k=12,24 x seeds 0,1 on the local executor, two cells at once, in its own
    runs directory, shared by the tests that only read it (test_sweep, test_app's Sweeps page): (runs dir,
    sweep.json, the CLI's output)."""
    from pdiff_core import runs
    root = tmp_path_factory.mktemp("sweep_runs")
    env = dict(os.environ, PDIFF_RUNS_DIR=str(root), PYTHONUNBUFFERED="1")
    done = subprocess.run([sys.executable, "-m", "pdiff_core", "sweep", "--preset", "tiny", "--grid", "k=12,24",
                           "--seeds", "0,1", "--name", "t", "--workers", "2"],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
    assert done.returncode == 0, done.stdout
    return root, runs.read_json(root / "_sweeps" / "t" / "sweep.json"), done.stdout


def fake_sweep(name: str, damage=lambda sw: None) -> dict:
    """A created, never-run tiny sweep (k=12, seed 0) in PDIFF_RUNS_DIR, its sweep.json written directly
    (create's checks import torch); damage(sw) edits it first. Returns the sweep.json written."""
    from pdiff_core import runs, sweep
    sw = {"name": name, "preset": "tiny", "grid": {"k": [12]}, "seeds": [0], "executor": "local", "workers": None,
          "address": None, "created": time.time(), "cells": sweep.expand(name, "tiny", {"k": [12]}, [0])}
    damage(sw)
    (sweep.root() / name).mkdir(parents=True)
    runs.write_json(sweep.root() / name / "sweep.json", sw)
    return sw
