"""Background workers: start a run in its own process, cancel it, tell whether it is still alive.

The app never trains in its own process. start() writes config.json and a "queued" status.json,
then launches `python -m pdiff_core run ... --run-id ID --quiet` in a new session, with its
stdout and stderr going to worker.out in the run directory. refresh() turns a run whose status
says queued/running but whose process is gone into "failed", with the last lines it printed, so
nothing is left "running" forever. Several runs may go at once: each is its own process.

standby() starts the next worker early (pdiff_core/standby.py), while the page with the launch
button is open, so that start() hands it the run with its imports done; it is used only when its
environment and this package's code are still what a fresh worker would get."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from . import child_env, runs
from .config import PRESETS, RunConfig, override_text

WORKER_OUT = "worker.out"
UPLOADS = "_uploads"          # inside the runs root; not a valid run id, so never listed as a run
START_GRACE_S = 15.0          # a queued run without a pid yet is given this long before it counts as dead
ACTIVE = ("queued", "running")
_children: dict[int, subprocess.Popen] = {}   # workers started by this process, polled so they get reaped
_standby: dict = {"proc": None, "key": None}  # the waiting worker, and what it was started with
_standby_lock = threading.Lock()              # the app's sessions each run in a thread of one server


def _overrides(cfg: RunConfig) -> list[str]:
    """--set pairs for every value that differs from the preset's, so the worker rebuilds cfg exactly."""
    preset = RunConfig(**{k: v for k, v in PRESETS[cfg.preset].items() if k != "description"})
    pairs = []
    for f in dataclasses.fields(RunConfig):
        v = getattr(cfg, f.name)
        if f.name != "preset" and v != getattr(preset, f.name):
            pairs += ["--set", f"{f.name}={override_text(v)}"]
    return pairs


def worker_command(cfg: RunConfig, run_id: str) -> list[str]:
    return [sys.executable, "-m", "pdiff_core", "run", "--preset", cfg.preset, *_overrides(cfg),
            "--run-id", run_id, "--quiet"]


def worker_env() -> dict[str, str]:
    return child_env(PDIFF_RUNS_DIR=str(runs.runs_root()), PYTHONUNBUFFERED="1")


def _standby_key(env: dict[str, str]) -> tuple:
    """What a waiting worker must share with a fresh one: the environment (thread counts and paths are
    read at import) and this package's code (an edit since it started would not be in it)."""
    code = max(p.stat().st_mtime_ns for p in Path(__file__).parent.glob("*.py"))
    return tuple(sorted(env.items())), code


def standby() -> None:
    """Have a worker waiting with its imports done (about 5.5 s of CPU), for the next start(). Only when no
    worker of ours is going: on 2 cores its imports would slow a going run down. PDIFF_STANDBY=0: never."""
    if os.environ.get("PDIFF_STANDBY") == "0" or any(alive(pid) for pid in list(_children)):
        return
    env = worker_env()
    key = _standby_key(env)
    with _standby_lock:
        proc = _standby["proc"]
        if proc is not None and proc.poll() is None and _standby["key"] == key:
            return
        _drop_standby()
        proc = subprocess.Popen([sys.executable, "-m", "pdiff_core.standby"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
        _standby.update(proc=proc, key=key)


def _drop_standby() -> None:
    proc = _standby["proc"]
    _standby.update(proc=None, key=None)
    if proc is not None:
        proc.kill()                         # it holds no run: nothing is lost
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()


def _hand_to_standby(run_dir: Path, argv: list[str], env: dict[str, str]) -> subprocess.Popen | None:
    """Give the run to the waiting worker, or None when there is none that matches a fresh worker (it is
    then stopped). Its pid goes into status.json first: with its imports done, it writes status at once."""
    with _standby_lock:
        proc, key = _standby["proc"], _standby["key"]
        if proc is None or proc.poll() is not None or key != _standby_key(env):
            _drop_standby()
            return None
        _standby.update(proc=None, key=None)
    ready = bool(select.select([proc.stdout], [], [], 0)[0])   # its "ready" line: the imports are done
    how = "imports done" if ready else "still importing"
    runs.update_status(run_dir, pid=proc.pid, standby=how, message=f"waiting worker process {proc.pid} took "
                                                                   f"the run ({how})")
    try:
        proc.stdin.write(json.dumps({"argv": argv, "out": str(run_dir / WORKER_OUT)}).encode() + b"\n")
        proc.stdin.close()
    except OSError:                         # it died just now: a fresh worker instead
        proc.kill()
        proc.wait()
        return None
    finally:
        proc.stdout.close()
    return proc


def start(cfg: RunConfig, run_id: str | None = None) -> str:
    """Launch a worker for an already validated cfg (the waiting one, if any); returns the run id at once."""
    run_id = run_id or runs.new_run_id(cfg.preset, cfg.seed)
    run_dir = runs.run_path(run_id, must_exist=False)
    run_dir.mkdir(parents=True, exist_ok=False)
    runs.write_json(run_dir / "config.json", cfg.to_dict())
    now = time.time()
    runs.write_json(run_dir / "status.json", {
        "state": "queued", "stage": "queued", "progress": 0.0, "message": "starting the worker process",
        "error": None, "pid": None, "queued": now, "updated": now})
    env, command = worker_env(), worker_command(cfg, run_id)
    proc = _hand_to_standby(run_dir, command[3:], env)       # argv after `python -m pdiff_core`
    if proc is None:
        with open(run_dir / WORKER_OUT, "ab") as out:
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        # The worker needs seconds to import torch before its first status write, so this lands first.
        runs.update_status(run_dir, pid=proc.pid, message=f"worker process {proc.pid} started")
    _children[proc.pid] = proc
    return run_id


def cancel(run_id: str) -> None:
    """Ask the worker to stop at its next progress report (it ends in state "cancelled")."""
    run_dir = runs.run_path(run_id)
    runs.write_cancel(run_dir, "cancelled from the app")
    status = refresh(run_id)
    if status.get("state") == "queued" and not alive(status.get("pid")):
        runs.update_status(run_dir, state="cancelled", message="cancelled before the worker started",
                           finished=time.time())


def delete(run_id: str) -> None:
    """Remove a run directory; refuses while its worker is alive."""
    run_dir = runs.run_path(run_id)
    if refresh(run_id).get("state") in ACTIVE:
        raise runs.RunError(f"run '{run_id}' is still going; cancel it and wait for it to stop first")
    shutil.rmtree(run_dir)


def alive(pid) -> bool:
    """Whether process pid still runs (a zombie has exited); our own children are reaped on the way."""
    if not pid:
        return False
    if pid in _children:                                    # our own child: poll() also reaps the zombie
        return _children[pid].poll() is None
    if Path("/proc/self/stat").exists():                   # Linux: a zombie has exited too
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a text file ('' when missing); reads at most the last 64 KiB."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def how_it_ended(code: int) -> str:
    """A finished process's exit, as the run's and the sweep cell's errors say it."""
    return f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"


def _death_note(run_dir: Path, pid) -> str:
    proc = _children.pop(pid, None) if pid else None
    code = proc.returncode if proc is not None else None
    how = how_it_ended(code) if code is not None else "is gone"
    out, log = ([l for l in tail(run_dir / name, 40).splitlines() if l.strip()] for name in (WORKER_OUT, "log.txt"))
    errors = [l for l in out if l.startswith(("error:", "run failed:"))]
    crashed = any(l.startswith("Traceback") for l in out)   # then its last line names the exception
    detail = (out if crashed else errors or log or out or ["no output"])[-1].strip()
    return f"the worker process {pid or ''} {how} without finishing; last output: {detail}"[:600]


def refresh(run_id: str) -> dict:
    """status.json of a run, with dead workers of queued/running runs turned into "failed" on disk."""
    run_dir = runs.run_path(run_id)
    status = runs.read_status(run_dir)
    if status.get("state") not in ACTIVE:
        return status
    pid = status.get("pid")
    if alive(pid):
        return status
    if not pid:
        born = status.get("queued") or status.get("started") or status.get("updated") or 0
        if status.get("state") == "running" or time.time() - born < START_GRACE_S:
            return status           # a foreground CLI run records no pid: nothing to judge it by
    status = runs.read_status(run_dir)  # it may have finished between the two reads
    if status.get("state") not in ACTIVE:
        return status
    note = _death_note(run_dir, pid)
    return runs.update_status(run_dir, state="failed", message=note, error=note, finished=time.time())


def list_runs() -> list[dict]:
    """runs.list_runs() with liveness applied to every queued/running run."""
    rows = runs.list_runs()
    for row in rows:
        if row.get("state") in ACTIVE:
            row.update(refresh(row["run"]))
    return rows


def save_upload(filename: str, data: bytes) -> Path:
    """Validate an uploaded .npz dataset (never unpickled) and store it under the runs root.
    Returns its path, for data_root; raises DataError with one line when it is not usable."""
    from .data import DataError, check_dataset, load_dataset
    if not filename.lower().endswith(".npz"):
        raise DataError(f"{filename}: upload a .npz file saved with np.savez")
    folder = runs.runs_root() / UPLOADS
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / f"{hashlib.sha256(data).hexdigest()[:12]}-{runs.slug(Path(filename).stem)}.npz"
    if dest.exists():
        return dest
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".upload.", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        check_dataset("npz", tmp)
        load_dataset("npz", tmp)            # full read: NaNs, label gaps and split sizes are caught here
        os.replace(tmp, dest)
    except BaseException as e:
        os.unlink(tmp)
        if isinstance(e, DataError):
            raise DataError(str(e).replace(tmp, filename)) from None
        raise
    return dest


def stop_all_started() -> None:
    """Terminate workers this process started, and the waiting one (for tests and shutdown hooks)."""
    with _standby_lock:
        _drop_standby()
    for pid, proc in list(_children.items()):
        if proc.poll() is None:
            os.killpg(pid, signal.SIGTERM)
            proc.wait(timeout=30)
        _children.pop(pid, None)
