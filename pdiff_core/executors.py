"""Where a sweep's cells run: `local` (worker processes on this machine) or `ray` (tasks on a Ray cluster).

Both run a cell as the app runs a run: `python -m pdiff_core run --preset P --set ... --run-id ID`
in its own process, so a cell's numbers are those of the same run launched by hand. Both take:
    sweep, cells    what to run (sweep.json's dict, the cells not done yet)
    stage           the sweep's staging folder on the driver
    going(id, info) a cell started (info) or ended (None): the driver's state.json follows it
    landed(cell, d) a cell's finished run directory d in the stage: the driver moves it into place
    cancelled()     True once the sweep was cancelled: start nothing new, cancel what is going
A worker process killed from outside (SIGKILL, out of memory) is retried: once by the local pool,
up to RAY_RETRIES times by Ray; after that the cell ends 'failed' with the reason."""
from __future__ import annotations

import ctypes
import os
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from . import child_env, jobs, landing, runs, sweep as sweeps

LOCAL_RETRIES = 1
RAY_RETRIES = 2
POLL_S = 0.5
STOP_GRACE_S = 30.0     # a Ray cell asked to stop gets a SIGTERM after this long


def die_with_parent() -> None:
    """In the child before exec (Linux): SIGKILL when the process that started it dies, so a killed
    driver or Ray worker leaves no orphan run writing into a folder that resume will reuse."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except OSError:
        pass


def start_cell(cfg, run_id: str, runs_dir: Path) -> subprocess.Popen:
    runs_dir.mkdir(parents=True, exist_ok=True)
    out = open(runs_dir / f".{run_id}.out", "ab")
    env = child_env(PDIFF_RUNS_DIR=str(runs_dir), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(jobs.worker_command(cfg, run_id), stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env, preexec_fn=die_with_parent)
    out.close()
    return proc


def reap(proc: subprocess.Popen, block: bool) -> tuple[int, float] | None:
    """(exit code, peak RSS in MiB) of a finished child, via wait4; None while it runs."""
    pid, status, usage = os.wait4(proc.pid, 0 if block else os.WNOHANG)
    if pid == 0:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, round(usage.ru_maxrss / 1024, 1)


def ask_to_stop(run_dir: Path) -> bool:
    """A going cell's CANCEL file, read by its run at the next progress report, which then ends
    'cancelled with the sweep during STAGE' as a run cancelled from the app does. False while the
    run has not started reporting (no status.json yet): only a signal stops it then."""
    if not (run_dir / "status.json").exists():
        return False
    if not (run_dir / "CANCEL").exists():
        runs.write_cancel(run_dir, "cancelled with the sweep")
    return True


def move_output(runs_dir: Path, run_id: str) -> None:
    """The worker's stdout/stderr, kept beside its run as worker.out."""
    out = runs_dir / f".{run_id}.out"
    if out.exists() and (runs_dir / run_id).is_dir():
        os.replace(out, runs_dir / run_id / jobs.WORKER_OUT)


def last_words(runs_dir: Path, run_id: str) -> str:
    """The last non-empty line a cell's worker printed, wherever its output is now: the one line that
    says why a worker refused to start (e.g. no CUDA GPU), else hidden in the stage's .RUN_ID.out."""
    for path in (runs_dir / f".{run_id}.out", runs_dir / run_id / jobs.WORKER_OUT):
        lines = [line.strip() for line in jobs.tail(path, 20).splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return ""


# -----------------------------------------------------------------------------
# local: a pool of worker processes on this machine

def run_local(sweep, cells, stage, going, landed, cancelled, log) -> None:
    workers = sweep.get("workers") or sweeps.default_workers(sweep)
    queue = [(c, 1) for c in cells]
    live: dict[str, tuple[dict, int, subprocess.Popen]] = {}
    while queue or live:
        if cancelled():
            queue.clear()
            for rid in live:
                ask_to_stop(stage / rid)
        while queue and len(live) < workers:
            cell, attempt = queue.pop(0)
            proc = start_cell(sweeps.config_of(sweep, cell), cell["run"], stage)
            live[cell["run"]] = (cell, attempt, proc)
            going(cell["run"], {"attempt": attempt, "where": "local", "pid": proc.pid, "since": time.time()})
        for rid, (cell, attempt, proc) in list(live.items()):
            ended = reap(proc, block=False)
            if ended is None:
                continue
            code, peak = ended
            how = jobs.how_it_ended(code)
            del live[rid]
            going(rid, None)
            move_output(stage, rid)
            killed = code < 0 and code != -signal.SIGTERM and not cancelled()
            if killed and attempt <= LOCAL_RETRIES:
                log(f"  {rid}: worker {how}; retrying (attempt {attempt + 1})")
                if (stage / rid).exists():
                    landing.set_aside(stage / rid, sweep["name"])
                queue.insert(0, (cell, attempt + 1))
                continue
            node = {**landing.node_info("local"), "peak_rss_mib": peak, "attempt": attempt}
            if (stage / rid).is_dir():
                landing.finish_cell_dir(stage / rid, sweep["name"], node, reason=f"the worker process {how} without finishing")
            else:                                       # died before it made its folder: say what it said
                said = last_words(stage, rid)
                landing.failed_cell_dir(stage, sweep, cell, node,
                                        f"the worker process {how} before it started" + (f": {said}" if said else ""))
                move_output(stage, rid)                 # its output goes with it, as worker.out
            landed(cell, stage / rid)
        time.sleep(POLL_S)


# -----------------------------------------------------------------------------
# ray: one task per cell; the finished run directory comes back through Ray's object store

def cell_tmpdir() -> Path:
    """A private folder for one Ray cell, named after this host and worker pid. A worker killed with
    its driver cannot remove its own, so each new one first removes those of dead workers here."""
    prefix = f"pdiff-cell-{socket.gethostname()}-"
    for old in Path(tempfile.gettempdir()).glob(prefix + "*"):
        pid = old.name[len(prefix):].split("-")[0]
        if pid.isdigit() and not jobs.alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-"))


def ray_cell(cfg_dict: dict, run_id: str, sweep_name: str, board) -> bytes | None:
    """A Ray task: run one cell in a private temporary folder on whichever node Ray picked, report
    its progress to the driver's Board, then return its run directory as tar bytes (None: the sweep
    was cancelled before the cell started). On the Board's cancel it asks the cell to stop as the
    local pool does (ask_to_stop; SIGTERM before the run reports, or past STOP_GRACE_S), and the cell
    ends 'cancelled' and still ships. Not ray.cancel: its KeyboardInterrupt did not always reach a
    running task (QA saw both cells end 'done'), and the cell's directory was lost when it did."""
    import ray
    from .config import RunConfig
    if ray.get(board.start.remote(run_id)):
        return None
    tmp = cell_tmpdir()
    node = {**landing.node_info("ray"), "worker_pid": os.getpid()}
    proc, stopped = None, None
    try:
        proc = start_cell(RunConfig.from_dict(cfg_dict), run_id, tmp)
        while (ended := reap(proc, block=False)) is None:
            info = None
            if (tmp / run_id / "status.json").exists():
                s = runs.read_status(tmp / run_id)
                info = {"progress": s.get("progress") or 0.0, "message": s.get("message", ""),
                        "where": node.get("node_id", "")[:12] or node["hostname"]}
            if ray.get(board.update.remote(run_id, info)) and stopped is None:
                stopped = time.time()
                if not ask_to_stop(tmp / run_id):
                    proc.terminate()            # not reporting yet: its SIGTERM handler ends it 'cancelled'
            elif stopped is not None and time.time() - stopped > STOP_GRACE_S:
                proc.terminate()                # a run that does not read its CANCEL in time
            time.sleep(1.0)
        code, peak = ended
        move_output(tmp, run_id)
        if not (tmp / run_id / "config.json").exists():
            if stopped is not None:             # stopped before it wrote its run
                return None
            raise RuntimeError(f"the cell's worker process {jobs.how_it_ended(code)} before writing its run: "
                               + last_words(tmp, run_id))
        node.update(peak_rss_mib=peak,
                    task_peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
        landing.finish_cell_dir(tmp / run_id, sweep_name, node, reason=f"the worker process {jobs.how_it_ended(code)}")
        return landing.pack(tmp / run_id)
    finally:
        if proc is not None and proc.returncode is None:    # this task failed or was interrupted: no orphan cell
            proc.terminate()
            reap(proc, block=True)
        shutil.rmtree(tmp, ignore_errors=True)


class Board:
    """A Ray actor on the driver's side: going cells post their progress here (there is no shared
    filesystem to read it from), and the driver copies it into state.json for the app. It also
    carries the sweep's cancel to the tasks, which ask at start and with every update."""

    def __init__(self):
        self.cells: dict[str, dict] = {}
        self.started: set[str] = set()
        self.stop = False

    def start(self, run_id: str) -> bool:
        """A task begins its cell; True: the sweep was cancelled, run nothing."""
        self.started.add(run_id)
        return self.stop

    def update(self, run_id: str, info: dict | None) -> bool:
        """A going cell's progress (None: none yet); True: the sweep was cancelled, stop the cell."""
        if info is not None:
            self.cells[run_id] = {**info, "since": self.cells.get(run_id, {}).get("since", time.time())}
        return self.stop

    def cancel(self) -> set[str]:
        """Stop every cell; returns those already started (the others are the driver's to ray.cancel)."""
        self.stop = True
        return self.started

    def snapshot(self) -> dict:
        return self.cells


# Ray (2.5x) rewrites 127.0.0.1 into the machine's routable address (services.resolve_ip_for_localhost)
# and advertises that; another loopback address it keeps as given, so a cluster on this machine
# stays on loopback. Set PDIFF_RAY_NODE_IP to override.
LOOPBACK_IP = os.environ.get("PDIFF_RAY_NODE_IP", "127.0.0.2")


def ray_init(address: str | None, cpus: int):
    """Join the cluster at `address`, or start a local one on LOOPBACK_IP. Token authentication
    stays Ray's default (on for local clusters; a cluster started with RAY_AUTH_MODE=token asks the
    driver for the same token). Our package travels to every node through the runtime env."""
    import ray
    pkg = str(Path(__file__).resolve().parent)
    kwargs = dict(include_dashboard=False, log_to_driver=False, runtime_env={"py_modules": [pkg]})
    host = (address or "").split("://")[-1].rsplit(":", 1)[0]
    if address:
        sweeps.check_address(address)
    if not address:
        ray.init(num_cpus=cpus, _node_ip_address=LOOPBACK_IP, **kwargs)
    elif host.startswith("127.") or host == "localhost":
        ray.init(address=address, _node_ip_address=host, **kwargs)   # the node address the cluster was given
    else:
        ray.init(address=address, **kwargs)
    return ray


def run_ray(sweep, cells, stage, going, landed, cancelled, log) -> None:
    from ray.exceptions import RayError, TaskCancelledError
    cpus = sweep.get("workers") or os.cpu_count() or 1
    ray = ray_init(sweep.get("address"), cpus)
    try:
        task = ray.remote(max_retries=RAY_RETRIES, retry_exceptions=False)(ray_cell)
        board = ray.remote(num_cpus=0)(Board).remote()
        refs = {}
        for cell in cells:
            cfg = sweeps.config_of(sweep, cell)
            gpus = 1 if cfg.device == "cuda" else 0
            ref = task.options(num_cpus=cfg.threads, num_gpus=gpus, name=cell["run"]).remote(
                cfg.to_dict(), cell["run"], sweep["name"], board)
            refs[ref] = cell
        log(f"  {len(refs)} tasks submitted to the Ray cluster ({ray.cluster_resources().get('CPU', 0):g} CPUs)")
        sent_cancel, shown = False, {}
        while refs:
            if cancelled() and not sent_cancel:
                started = ray.get(board.cancel.remote())   # these stop their cells and ship them back
                for ref, cell in refs.items():
                    if cell["run"] not in started:         # not started yet: never will
                        ray.cancel(ref)
                sent_cancel = True
            done, _ = ray.wait(list(refs), num_returns=1, timeout=POLL_S)
            still = {c["run"] for c in refs.values()} - {refs[ref]["run"] for ref in done}
            for rid, info in ray.get(board.snapshot.remote()).items():   # live progress of going cells
                if rid in still and info != shown.get(rid):
                    shown[rid] = info
                    going(rid, info)
            for ref in done:
                cell = refs.pop(ref)
                going(cell["run"], None)
                cancelled_cell = lambda: landing.failed_cell_dir(stage, sweep, cell, {"executor": "ray"},
                                                                 "cancelled with the sweep", state="cancelled")
                try:
                    packed = ray.get(ref)       # None: cancelled before it started
                    staged = cancelled_cell() if packed is None else landing.unpack(packed, stage, cell["run"])
                except TaskCancelledError:
                    staged = cancelled_cell()
                except RayError as e:
                    reason = str(e).strip().splitlines()[-1][:500] if str(e).strip() else type(e).__name__
                    staged = landing.failed_cell_dir(stage, sweep, cell, {"executor": "ray"},
                                                     f"Ray task failed after {RAY_RETRIES} retries: {reason}")
                landed(cell, staged)
    finally:
        ray.shutdown()


# -----------------------------------------------------------------------------
# units of work inside one run (transfer's per-task collection): fn(item) for every item

def map_units(fn, items: list, executor: str = "local", workers: int = 1, address: str = "",
              done=lambda i, n: None) -> list:
    """[fn(item) for item in items], in order, on this machine's processes or a Ray cluster; done(i, n)
    after each. fn must be a module-level function, its items and results picklable. Results do
    not depend on where they ran (each unit seeds itself)."""
    n = len(items)
    if executor == "ray":
        ray = ray_init(address or None, workers)
        try:
            remote = ray.remote(num_cpus=1, max_retries=RAY_RETRIES)(fn)
            refs = [remote.remote(item) for item in items]
            pending = list(refs)
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                done(n - len(pending), n)
            return ray.get(refs)
        finally:
            ray.shutdown()
    if workers <= 1 or n <= 1:
        out = []
        for i, item in enumerate(items):
            out.append(fn(item))
            done(i + 1, n)
        return out
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    # spawn: a forked torch process can hang on locks its parent's threads held
    with ProcessPoolExecutor(min(workers, n), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
        out = [None] * n
        for k, fut in enumerate(as_completed(futures)):
            out[futures[fut]] = fut.result()
            done(k + 1, n)
    return out
