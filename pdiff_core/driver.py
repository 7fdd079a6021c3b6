"""The sweep driver: one process per sweep that holds its lock, hands the cells not yet done to the
sweep's executor, follows them in state.json, and lands each finished cell in the runs folder.
`launch` starts it in the background for the app; `python -m pdiff_core sweep` runs it in the
foreground."""
from __future__ import annotations

import fcntl
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

from . import child_env, executors, landing, runs, sweep as sweeps


def hold_lock(name: str) -> int:
    """The driver's exclusive lock on its sweep (driver.lock), held for the driver's life and dropped by
    the OS when it dies: two drivers passing the 'is running' check at once would run every cell twice."""
    fd = os.open(sweeps.folder(name) / "driver.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise sweeps.SweepError(f"sweep {name} is running (another driver holds it); wait for it, or --cancel {name}") from None
    return fd


def run(name: str, resume: bool = False, log=print, workers: int | None = None) -> dict:
    """Run every cell not yet done, on the sweep's executor; returns the final summary. With resume,
    cells that failed or were cancelled run again (their old directories go to attempts/).
    workers: this drive's workers instead of the sweep's own."""
    sweeps.check_workers(workers)
    sweep = sweeps.load(name)                      # checked before anything is moved
    lock = hold_lock(name)
    try:
        return _drive({**sweep, "workers": workers or sweep.get("workers")}, resume, log)
    finally:
        os.close(lock)


def _drive(sweep: dict, resume: bool, log) -> dict:
    name = sweep["name"]
    path = sweeps.folder(name)
    state = sweeps.read_state(name)
    if state.get("state") == "running" and state.get("pid") != os.getpid():
        raise sweeps.SweepError(f"sweep {name} is running (driver pid {state.get('pid')}); cancel it first")
    if state.get("state") not in (None, "created") and not resume:
        raise sweeps.SweepError(f"sweep {name} has run before; use --resume {name} to finish it")
    (path / "CANCEL").unlink(missing_ok=True)
    stage = path / "stage"
    for d in stage.iterdir() if stage.is_dir() else []:       # a killed driver's half-run cells
        landing.set_aside(d, name)
    todo = []
    for cell in sweep["cells"]:
        landed = runs.runs_root() / cell["run"]
        if (landed / "status.json").exists() and runs.read_status(landed).get("state") == "done":
            continue
        if landed.exists():
            landing.set_aside(landed, name)
        todo.append(cell)
    t0 = time.time()
    sweeps.write_state(name, state="running", pid=os.getpid(), started=t0, going={}, host=socket.gethostname(),
                       resumed=resume, todo=len(todo))
    log(f"sweep {name}: {len(todo)} of {len(sweep['cells'])} cells to run on the {sweep['executor']} executor")
    cancelled = lambda: (path / "CANCEL").exists()

    going_now: dict[str, dict] = {}         # the driver is the only writer of state.json's "going"

    def going(run_id: str, info: dict | None) -> None:
        if info is None:
            going_now.pop(run_id, None)
        else:
            going_now[run_id] = info
        sweeps.write_state(name, going=dict(going_now))

    def landed(cell: dict, staged: Path) -> None:
        dest = landing.land(staged, cell["run"])
        s = runs.read_status(dest)
        log(f"  {cell['run']}: {s.get('state')}" + (f" ({s.get('error')})" if s.get("error") else ""))

    try:
        run_cells = executors.run_ray if sweep["executor"] == "ray" else executors.run_local
        run_cells(sweep, todo, stage, going=going, landed=landed, cancelled=cancelled, log=log)
    except BaseException as e:
        sweeps.write_state(name, state="interrupted", finished=time.time(), going={}, error=f"{type(e).__name__}: {e}")
        raise
    final = "cancelled" if cancelled() else "done"
    peak = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)   # the driver's own, MiB
    sweeps.write_state(name, state=final, finished=time.time(), going={}, wall_s=round(time.time() - t0, 2),
                       driver_peak_rss_mib=peak)
    out = sweeps.summary(sweep)
    log(f"sweep {name}: {final} in {time.time() - t0:.1f} s; cells: {out['counts']}")
    return out


def launch(name: str) -> int:
    """Start the driver of a created sweep in the background (the app does this); returns its pid.
    Its output goes to driver.out in the sweep folder; it outlives the app's server."""
    path = sweeps.folder(name)
    state = sweeps.read_state(name)
    if state.get("state") == "running":     # a second Resume (another tab): its driver would be refused, and
        raise sweeps.SweepError(           # its pid in state.json made the live sweep read 'interrupted'
            f"sweep {name} is running (driver pid {state.get('pid')}); wait for it, or cancel it")
    with open(path / "driver.out", "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pdiff_core", "sweep", "--resume", name], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=child_env(PDIFF_RUNS_DIR=str(runs.runs_root()), PYTHONUNBUFFERED="1"),
                                start_new_session=True)
    if sweeps.read_state(name).get("pid") != proc.pid:     # unless the driver has written its own state already
        sweeps.write_state(name, state="running", pid=proc.pid, going={}, started=time.time())
    return proc.pid
