"""Sweeps: a grid of ordinary runs, run on this machine's cores or on a Ray cluster.

A sweep lives in RUNS_DIR/_sweeps/NAME/ (a folder no run id can name):
    sweep.json   the preset, the grid, the seeds, the executor and the cells (overrides, seed, run id)
    state.json   the driver's state: running / done / cancelled / interrupted, its pid, the cells going
    CANCEL       present once the sweep was cancelled: no new cell starts, going cells get their CANCEL
    driver.lock  flock'ed by the driver for its life: a second driver of the sweep is refused
    stage/RID    a going cell's run directory (local executor); it moves to RUNS_DIR/RID in one rename
    attempts/    earlier attempts of retried cells (a killed worker, a resumed failure), kept, not lost
Every cell is a normal run directory in RUNS_DIR once finished, tagged with the sweep's name, so
every page works on it. A cell directory appears there only whole: done, failed or cancelled.

This module defines, checks and reads sweeps; driver.py runs one, on executors.py's local processes
or Ray tasks; landing.py handles a cell's run directory on its way back."""
from __future__ import annotations

import itertools
import os
import re
import socket
import time
from pathlib import Path

import numpy as np

from . import jobs, runs
from .config import PRESETS, ConfigError, RunConfig, override_text, parse_overrides, preset_config, resolve_device, validate

SWEEPS = "_sweeps"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,59}$")
EXECUTORS = ("local", "ray")
# The headline figures a sweep plots against its keys, from each cell's analysis.json.
HEADLINE = {
    "gen_minus_orig": ("median test accuracy, generated − originals (pp)", ("accuracy", "median_difference", "diff"), 100),
    "replica_rate": ("replica rate (%)", ("memorization", "replica_rate"), 100),
    "traj_ratio": ("distance to the checkpoint path ÷ step length", ("memorization", "trajectory", "groups", "generated", "ratio_to_step"), 1),
    "smax_mean": ("mean s_max of generated models", ("memorization", "groups", "generated", "smax_mean"), 1),
    "dominated": ("share Pareto-dominated by a baseline (%)", ("memorization", "dominated_share"), 100),
    "ensemble_gain": ("ensemble gain, generated (pp)", ("ensembles", "gain_generated"), 100),
    "gen_acc_median": ("median test accuracy of generated models (%)", ("memorization", "groups", "generated", "acc_median"), 100),
}
# Preset sweeps: grids that answer a question.
SWEEP_PRESETS = {
    "k-memorization": dict(
        description="how memorization moves with the number of checkpoints K, for trajectory and independent zoos "
                    "(digits-quick, K in 10..200, 3 seeds: 30 runs)",
        preset="digits-quick", grid={"k": [10, 25, 50, 100, 200], "zoo": ["trajectory", "independent"]},
        seeds=[0, 1, 2]),
    "tiny-k": dict(description="a one-minute smoke sweep: the tiny preset, K 12 and 24, both zoo kinds, seed 0",
                   preset="tiny", grid={"k": [12, 24], "zoo": ["trajectory", "independent"]}, seeds=[0]),
}


class SweepError(ValueError):
    """A bad grid, name or sweep folder. One line that says what to do."""


def root() -> Path:
    return runs.runs_root() / SWEEPS


def folder(name: str, must_exist: bool = True) -> Path:
    if not NAME.match(name or ""):
        raise SweepError(f"'{name}' is not a valid sweep name (letters, digits, '_' and '-', at most 60)")
    path = root() / name
    if must_exist and not (path / "sweep.json").is_file():
        raise SweepError(f"no sweep '{name}' in {root()}; see `python -m pdiff_core sweep --list`")
    return path


# -----------------------------------------------------------------------------
# the grid

def parse_grid(pairs: list[str]) -> dict[str, list]:
    """["k=10,25", "zoo=trajectory,independent"] -> {"k": [10, 25], "zoo": [...]}, values typed as the
    config field is. Unknown keys, bad values, empty lists and repeated keys are SweepErrors."""
    if not pairs:
        raise SweepError("the grid is empty: give at least one --grid KEY=V1,V2,...")
    keys = set(RunConfig.__dataclass_fields__)
    grid: dict[str, list] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep:
            raise SweepError(f"--grid expects KEY=V1,V2,..., got '{pair}'")
        if key in ("preset", "seed"):
            raise SweepError(f"--grid {key}: use --preset and --seeds for that")
        if key not in keys:
            raise SweepError(f"unknown config key '{key}' in --grid; valid keys: {', '.join(sorted(keys))}")
        if key in grid:
            raise SweepError(f"--grid {key} is given twice; list all its values once: {key}=V1,V2")
        values = [v.strip() for v in text.split(",") if v.strip()]
        if key == "layers":     # a value naming several parameters joins them with '+': the comma separates values
            values = [v.replace("+", ",") for v in values]
        if not values:
            raise SweepError(f"--grid {key}= has no values; give {key}=V1,V2,...")
        try:
            typed = [parse_overrides([f"{key}={v}"])[key] for v in values]
        except ConfigError as e:
            raise SweepError(str(e).replace("--set", "--grid")) from None
        if len(set(map(repr, typed))) < len(typed):
            raise SweepError(f"--grid {key} repeats a value: {text}")
        grid[key] = typed
    return grid


def grid_text(grid: dict[str, list]) -> str:
    """parse_grid's inverse: one KEY=V1,V2,... a line (the Sweeps page's grid box). A layers value
    naming several parameters joins them with '+', since the comma separates values."""
    def value(key, v):
        text = override_text(v)
        return text.replace(",", "+") if key == "layers" else text
    return "\n".join(f"{k}={','.join(value(k, v) for v in vs)}" for k, vs in grid.items())


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SweepError(f"--seeds expects integers like 0,1,2, got '{text}'") from None
    if not seeds or len(set(seeds)) < len(seeds) or min(seeds) < 0:
        raise SweepError(f"--seeds needs distinct integers >= 0, like 0,1,2; got '{text}'")
    return seeds


def expand(name: str, preset: str, grid: dict[str, list], seeds: list[int]) -> list[dict]:
    """Every combination of the grid's values times every seed, each checked as a full config."""
    if preset not in PRESETS:
        raise SweepError(f"unknown preset '{preset}'; choose one of: {', '.join(PRESETS)}")
    cells = []
    for combo in itertools.product(*grid.values()):
        overrides = dict(zip(grid, combo))
        for seed in seeds:
            try:
                validate(preset_config(preset, seed=seed, **overrides))
            except ConfigError as e:
                raise SweepError(f"cell {overrides} seed {seed}: {e}") from None
            label = "-".join(f"{k}{runs.slug(str(v))}" for k, v in overrides.items())
            suffix = f"-s{seed}"
            rid = f"{name}-{len(cells):03d}-{label}"[:128 - len(suffix)] + suffix   # runs.RUN_ID: 128 at most
            cells.append({"index": len(cells), "overrides": overrides, "seed": seed, "run": rid})
    return cells


def config_of(sweep: dict, cell: dict) -> RunConfig:
    return preset_config(sweep["preset"], seed=cell["seed"], **cell["overrides"])


# -----------------------------------------------------------------------------
# the sweep folder

def default_workers(sweep: dict) -> int:
    """As many cells at once as this machine has cores for their threads."""
    threads = max(config_of(sweep, c).threads for c in sweep["cells"])
    return max(1, (os.cpu_count() or 1) // threads)


ADDRESS_TIMEOUT_S = 3.0
# The HTTP/2 client preface and an empty SETTINGS frame: a gRPC server (Ray's GCS) answers with its SETTINGS.
H2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def check_address(address: str) -> None:
    """A SweepError, within seconds, for an --address where no Ray cluster answers: ray.init retried
    a closed port for minutes and waited on a port that is not Ray's forever."""
    host, sep, port = address.split("://")[-1].rpartition(":")
    if not sep or not host or not port.isdigit():
        raise SweepError(f"--address must be HOST:PORT of a Ray cluster's head node, like 127.0.0.2:6379; got '{address}'")
    answer = b""
    try:
        with socket.create_connection((host, int(port)), timeout=ADDRESS_TIMEOUT_S) as conn:
            if os.environ.get("RAY_USE_TLS", "0").lower() in ("0", "false"):   # TLS: no plain HTTP/2 to check
                conn.sendall(H2_HELLO)
                answer = conn.recv(9)
            else:
                answer = b"\0\0\0\4"
    except socket.gaierror:
        raise SweepError(f"--address {address}: no host '{host}' is known; give the Ray head node's IP or name") from None
    except OSError:         # refused, unreachable, or silent past the timeout
        pass
    if answer[3:4] != b"\4":
        raise SweepError(f"no Ray cluster answers at {address}: start one with "
                         f"`ray start --head --node-ip-address {host} --port {port}` or drop --address")


def check_workers(workers: int | None) -> None:
    if workers is not None and workers < 1:
        raise SweepError(f"--workers must be at least 1, got {workers}")


def create(name: str | None, preset: str, grid: dict[str, list], seeds: list[int], executor: str = "local",
           workers: int | None = None, address: str | None = None) -> dict:
    """Check everything, then write sweep.json; nothing runs yet. Returns the sweep."""
    if executor not in EXECUTORS:
        raise SweepError(f"--executor must be local or ray, got '{executor}'")
    check_workers(workers)
    name = name or f"{runs.slug(preset)}-{time.strftime('%Y%m%d-%H%M%S')}"
    path = folder(name, must_exist=False)
    in_use = SweepError(f"a sweep named '{name}' exists already; pick another --name, or --resume {name}")
    if path.exists():
        raise in_use
    cells = expand(name, preset, grid, seeds)
    taken = [c["run"] for c in cells if (runs.runs_root() / c["run"]).exists()]
    if taken:
        raise SweepError(f"run directory {taken[0]} exists already; pick another --name")
    from .data import DataError, check_dataset
    cfgs = [config_of({"preset": preset}, cell) for cell in cells]
    for cfg in {(c.dataset, c.data_root): c for c in cfgs}.values():
        try:
            check_dataset(cfg.dataset, cfg.data_root or None)
        except DataError as e:
            raise SweepError(str(e)) from None
    from .prepare import layer_error     # torch (about 1 s), once a sweep is created: not for list or cancel
    for cfg in {(c.dataset, c.data_root, c.arch, c.width, c.layers): c for c in cfgs}.values():
        if error := layer_error(cfg):    # a bad name failed every cell's worker, and the sweep read 'done'
            raise SweepError(f"layers={cfg.layers} (arch {cfg.arch}): {error}")
    if executor == "ray" and address:          # a dead address hung ray.init; refused before the folder exists
        check_address(address)
    if executor == "local" or not address:      # the cells run on this machine: the device check `run` makes
        for device in {c.device for c in cfgs} - {"auto"}:      # auto never fails: no CUDA probe for it
            try:
                resolve_device(device)
            except ConfigError as e:
                raise SweepError(f"device={device}: {e}") from None
    sweep = {"name": name, "preset": preset, "grid": grid, "seeds": seeds, "executor": executor,
             "workers": workers, "address": address, "created": time.time(), "cells": cells}
    try:
        path.mkdir(parents=True)
    except FileExistsError:                     # another create of this name got here first
        raise in_use from None
    runs.write_json(path / "sweep.json", sweep)
    return sweep


def _whole(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# sweep.json's keys the code reads, with the type each must have
FIELDS = {"name": (str, "a string"), "preset": (str, "a string"), "grid": (dict, "an object"),
          "seeds": (list, "a list"), "executor": (str, "a string"), "created": ((int, float), "a number"),
          "cells": (list, "a list")}


def problem(sw: dict, name: str) -> str | None:
    """Why sweep.json (already an object) cannot be used as the code reads it, or None. Cell run ids are
    checked as run ids: a cell's folder is moved on resume, so '../x' would move a folder outside the runs."""
    for key, (kind, what) in FIELDS.items():
        if not isinstance(sw.get(key), kind) or isinstance(sw.get(key), bool):
            return f"'{key}' is missing or not {what}"
    if sw["name"] != name:
        return f"its name '{sw['name']}' is not its folder's '{name}'"
    if sw["preset"] not in PRESETS:
        return f"unknown preset '{sw['preset']}'"
    if sw["executor"] not in EXECUTORS:
        return f"executor '{sw['executor']}' is not local or ray"
    if not (sw.get("workers") is None or _whole(sw["workers"]) and sw["workers"] >= 1):
        return f"workers {sw.get('workers')!r} is not a whole number >= 1"
    if not sw["cells"]:
        return "it has no cells"
    for i, cell in enumerate(sw["cells"]):
        if not (isinstance(cell, dict) and isinstance(cell.get("overrides"), dict) and _whole(cell.get("seed"))
                and isinstance(cell.get("run"), str)):
            return f"cell {i} is not an object with overrides, a whole-number seed and a run id"
        if set(cell["overrides"]) != set(sw["grid"]):
            return f"cell {i} sets {sorted(cell['overrides'])}, not the grid's keys {sorted(sw['grid'])}"
        try:
            runs.run_path(cell["run"], must_exist=False)
        except runs.RunError as e:
            return f"cell {i}: {e}"
    if len({c["run"] for c in sw["cells"]}) < len(sw["cells"]):
        return "two cells share a run id"
    return None


def _remedy(name: str) -> str:
    return f"restore it, or remove the sweep's folder {root() / name} (its cells' runs stay in {runs.runs_root()})"


def load(name: str) -> dict:
    """sweep.json, checked: a SweepError that says what to do when it is damaged."""
    path = folder(name) / "sweep.json"
    sw = runs.read_json(path, remedy=_remedy(name))
    if why := problem(sw, name):
        raise SweepError(f"{path} is corrupt ({why}); {_remedy(name)}")
    return sw


def list_sweeps() -> list[dict]:
    """Every sweep's summary, newest first; a damaged one is {"name", "damaged": the one-line reason}, so
    it never hides the others."""
    if not root().is_dir():
        return []
    out = []
    for d in sorted(root().iterdir(), key=lambda p: p.stat().st_mtime, reverse=True):
        if not d.is_dir():
            continue
        if not (d / "sweep.json").is_file():    # it still takes the name: say so, and how to free it
            out.append({"name": d.name, "damaged": f"{d} holds no sweep.json (a create that stopped half-way?); "
                                                   f"delete that folder to use the name '{d.name}' again"})
            continue
        try:
            out.append(summary(load(d.name)))
        except (SweepError, runs.RunError) as e:
            out.append({"name": d.name, "damaged": str(e)})
        except runs.DAMAGE as e:
            out.append({"name": d.name, "damaged": f"{d} holds files this version did not write "
                                                   f"({runs.damage_words(e)}); delete the folder, or its state.json "
                                                   "to run it again"})
    return out


def read_state(name: str) -> dict:
    """state.json, with a driver that died mid-sweep turned into 'interrupted' (resume finishes it)."""
    path = folder(name) / "state.json"
    remedy = f"delete it: the sweep then reads as created, and `--resume {name}` runs its cells not done"
    state = runs.read_json(path, remedy=remedy) if path.exists() else {"state": "created"}
    if not isinstance(state.get("going") or {}, dict):
        raise runs.RunError(f"{path} is corrupt ('going' is a JSON {type(state['going']).__name__}, not an object); "
                            f"{remedy}")
    if state.get("state") == "running" and not jobs.alive(state.get("pid")):
        state = {**state, "state": "interrupted", "going": {}}
    return state


def cell_state(sweep: dict, cell: dict, state: dict) -> dict:
    """A cell's state: its run's once landed; going (with progress where the stage is visible); or pending."""
    landed = runs.runs_root() / cell["run"]
    if (landed / "status.json").is_file():
        s = runs.read_status(landed)
        return {"state": s.get("state", "failed"), "progress": 1.0, "message": s.get("error") or s.get("message", "")}
    going = (state.get("going") or {}).get(cell["run"])
    if going:
        staged = folder(sweep["name"]) / "stage" / cell["run"] / "status.json"
        s = runs.read_status(staged.parent) if staged.is_file() else {}
        s = s or going                      # a Ray cell's progress comes through the driver's Board
        return {"state": "running", "progress": s.get("progress") or 0.0,
                "message": s.get("message") or f"attempt {going.get('attempt', 1)} on {going.get('where', 'a worker')}"}
    return {"state": "pending", "progress": 0.0, "message": ""}


def summary(sweep: dict) -> dict:
    state = read_state(sweep["name"])
    counts: dict[str, int] = {}
    for cell in sweep["cells"]:
        s = cell_state(sweep, cell, state)["state"]
        counts[s] = counts.get(s, 0) + 1
    return {"name": sweep["name"], "preset": sweep["preset"], "executor": sweep["executor"],
            "created": sweep["created"], "cells": len(sweep["cells"]), "counts": counts, "state": state.get("state"),
            "grid": sweep["grid"], "seeds": sweep["seeds"]}


def cancel(name: str) -> str:
    """Stop the remaining cells; the driver, seeing this sweep's CANCEL file, passes it on to the
    going cells' runs (a dead driver's cells died with it)."""
    state = read_state(name)
    if state.get("state") == "done":        # nothing left to stop: it stays done
        raise SweepError(f"sweep {name} has already finished (done); nothing to cancel")
    (folder(name) / "CANCEL").write_text("cancelled\n")
    state = read_state(name)                # again: the driver may have ended meanwhile
    if state.get("state") != "running":
        write_state(name, state="cancelled", finished=time.time(), going={})
        return f"sweep {name} cancelled (no driver was running)"
    return f"sweep {name}: cancel sent; going cells stop at their next progress report"


def write_state(name: str, **fields) -> dict:
    path = folder(name) / "state.json"
    state = {**(runs.read_json(path) if path.exists() else {}), **fields, "updated": time.time()}
    runs.write_json(path, state)
    return state


def estimate(sweep: dict, workers: int | None = None) -> float | None:
    """Seconds the sweep should take here: per cell, the median of past runs of its preset on this
    machine (runs.estimate), spread over the workers; None without past runs."""
    per = runs.estimate(sweep["preset"], config_of(sweep, sweep["cells"][0]).device)
    if per is None:
        return None
    w = workers or sweep.get("workers") or default_workers(sweep)
    return per[0] * int(np.ceil(len(sweep["cells"]) / w))


# -----------------------------------------------------------------------------
# results

def headline(analysis: dict | None) -> dict:
    """The sweep's headline figures of one run (None where the run has no such figure)."""
    out = {}
    for key, (_, where, scale) in HEADLINE.items():
        v = analysis or {}
        for k in where:
            v = v.get(k) if isinstance(v, dict) else None
        out[key] = float(v) * scale if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    return out


def results(sweep: dict) -> list[dict]:
    """One row per cell: its keys, seed, run id, state, node and headline figures."""
    state = read_state(sweep["name"])
    rows = []
    for cell in sweep["cells"]:
        d = runs.runs_root() / cell["run"]
        s = cell_state(sweep, cell, state)
        try:                # one cell's damaged file blanks that cell's figures, not the whole sweep
            a = runs.read_json(d / "analysis.json") if (d / "analysis.json").exists() else None
            node = runs.read_json(d / "node.json") if (d / "node.json").exists() else {}
        except runs.RunError as e:
            a, node, s = None, {}, {**s, "message": str(e)}
        rows.append({**cell["overrides"], "seed": cell["seed"], "run": cell["run"], "state": s["state"],
                     "progress": s["progress"], "message": s["message"],
                     "node": node.get("node_id") or node.get("hostname"), **headline(a)})
    return rows


def mean_ci(values) -> tuple[float, float, float, int]:
    """Mean over seeds and its 95 % t-interval (NaN half-width with one seed)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float)
    if len(v) == 0:
        return np.nan, np.nan, np.nan, 0
    if len(v) == 1:
        return float(v[0]), np.nan, np.nan, 1
    from scipy import stats
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half), len(v)
