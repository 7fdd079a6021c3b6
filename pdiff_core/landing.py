"""A sweep cell's run directory on its way into the runs folder: the node it ran on, a worker that
died without finishing turned into 'failed', a Ray cell's directory shipped as tar bytes, earlier
attempts set aside, and the one rename that lands it."""
from __future__ import annotations

import io
import os
import shutil
import socket
import tarfile
import time
from pathlib import Path

from . import runs, sweep as sweeps


def node_info(executor: str) -> dict:
    info = {"executor": executor, "hostname": socket.gethostname()}
    try:
        import ray
        if ray.is_initialized():
            node_id = ray.get_runtime_context().get_node_id()
            ip = next((n.get("NodeManagerAddress") for n in ray.nodes() if n.get("NodeID") == node_id), None)
            info.update(node_id=node_id, node_ip=ip)
    except Exception:
        pass
    return info


def finish_cell_dir(run_dir: Path, sweep_name: str, node: dict, reason: str | None = None) -> None:
    """Inside a cell's (staged) run directory: record the node, tag the run with the sweep, and turn
    a run whose process died without finishing into 'failed' with the reason."""
    runs.write_json(run_dir / "node.json", node)
    notes = runs.read_notes(run_dir)
    runs.write_notes(run_dir, notes.get("name", ""), [*notes.get("tags", []), sweep_name], notes.get("notes", ""))
    status = runs.read_status(run_dir) if (run_dir / "status.json").exists() else {}
    if status.get("state") not in ("done", "failed", "cancelled"):
        why = reason or "the worker process ended without finishing"
        runs.update_status(run_dir, state="failed", message=why, error=why, finished=time.time())


def failed_cell_dir(stage: Path, sweep: dict, cell: dict, node: dict, reason: str, state: str = "failed") -> Path:
    """A run directory for a cell that left none (its Ray task failed or was cancelled before shipping)."""
    d = stage / cell["run"]
    d.mkdir(parents=True, exist_ok=True)
    runs.write_json(d / "config.json", sweeps.config_of(sweep, cell).to_dict())
    now = time.time()
    runs.write_json(d / "status.json", {"state": state, "stage": state, "progress": 0.0, "message": reason,
                                        "error": reason if state == "failed" else None, "queued": now,
                                        "updated": now, "finished": now})
    runs.append_log(d, f"{state}: {reason}")
    finish_cell_dir(d, sweep["name"], node, reason)
    return d


def land(staged: Path, run_id: str) -> Path:
    """One rename from the sweep's stage into the runs folder: a reader sees no cell half-written."""
    dest = runs.run_path(run_id, must_exist=False)
    if dest.exists():
        raise sweeps.SweepError(f"run directory {dest} exists already; not overwriting it")
    os.replace(staged, dest)
    return dest


def pack(run_dir: Path) -> bytes:
    """A run directory as tar bytes (how a Ray task ships its cell back: no shared filesystem)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(run_dir, arcname=run_dir.name)
    return buf.getvalue()


def unpack(data: bytes, stage: Path, run_id: str) -> Path:
    """tar bytes from pack() into stage/run_id; only regular files and folders under run_id."""
    stage.mkdir(parents=True, exist_ok=True)
    tmp = stage / f".incoming-{run_id}"
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        for m in tar.getmembers():
            if not (m.isfile() or m.isdir()) or not (m.name == run_id or m.name.startswith(run_id + "/")) \
                    or ".." in Path(m.name).parts:
                raise sweeps.SweepError(f"refusing a cell archive with member '{m.name}'")
        tar.extractall(tmp, filter="data")
    os.replace(tmp / run_id, stage / run_id)
    tmp.rmdir()
    return stage / run_id


def set_aside(path: Path, sweep_name: str) -> None:
    """Move an earlier attempt of a cell to attempts/, numbered: retried cells lose nothing."""
    attempts = sweeps.folder(sweep_name) / "attempts"
    attempts.mkdir(exist_ok=True)
    i = 1
    while (attempts / f"{path.name}.{i}").exists():
        i += 1
    os.replace(path, attempts / f"{path.name}.{i}")
