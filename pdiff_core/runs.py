"""The run directory: where it lives, atomic writers and readers, status, and listing.

Every file is written to a temporary name in the same folder and moved into place with
os.replace, so a reader (the app, a notebook) never sees half a file."""
from __future__ import annotations

import io
import json
import os
import re
import tempfile
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from safetensors import safe_open

if TYPE_CHECKING:   # torch (~1 s) loads only where tensors are read or written: run lists and a sweep's driver need none
    import torch

STATES = ("queued", "running", "done", "failed", "cancelled")
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class RunError(ValueError):
    """A missing, unsafe or corrupt run directory."""


# what reading a run file that parses but does not hold what the pipeline wrote raises (a key gone, a string where
# a number belongs, a list where an object does): each reader that must not let one such run take down the others
# catches these and says which run is damaged
DAMAGE = (KeyError, TypeError, AttributeError, IndexError, ValueError)


def damage_words(e: Exception) -> str:
    """Such an error on one line, for the message that names the damaged run: "KeyError: 'similarity'"."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def runs_root() -> Path:
    return Path(os.environ.get("PDIFF_RUNS_DIR") or "runs").resolve()


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:60] or "run"


def new_run_id(preset: str, seed: int) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = f"{stamp}-{slug(preset)}-s{seed}"
    root, rid, i = runs_root(), base, 1
    while (root / rid).exists():
        i += 1
        rid = f"{base}-{i}"
    return rid


def run_path(run_id: str, must_exist: bool = True) -> Path:
    """A run id is a slug inside the runs root; anything that could point outside is refused."""
    if not RUN_ID.match(run_id or "") or run_id in (".", ".."):
        raise RunError(f"'{run_id}' is not a valid run id (letters, digits, '.', '_', '-' only)")
    path = runs_root() / run_id
    if path.resolve().parent != runs_root():
        raise RunError(f"run id '{run_id}' points outside the runs directory {runs_root()}")
    if must_exist and not path.is_dir():
        raise RunError(f"no run '{run_id}' in {runs_root()}; see `python -m pdiff_core list`")
    return path


def write_cancel(run_dir: Path, why: str) -> None:
    """Ask the run in run_dir to stop at its next progress report. The CANCEL file's first line says who asked
    (pipeline.cancelled_by); it is written whole or not at all: a run that read it half-written (empty) said
    "cancelled by user"."""
    write_bytes(run_dir / "CANCEL", f"{why}\n".encode())


def write_bytes(path: Path, data: bytes) -> None:
    """Any file a command writes: a temporary name in the same folder, then os.replace (a full disk or a
    kill leaves the old file whole). The folder must exist: a run directory deleted under its worker is
    not made again (the worker then stops, see pipeline.execute)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def json_safe(obj, digits: int | None = None):
    """numpy to Python, NaN/inf to None: strict JSON that every reader accepts. With `digits`,
    floats are rounded to that many significant digits (stable files across tiny float noise)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [json_safe(v, digits) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        if not np.isfinite(obj):
            return None
        return float(f"{obj:.{digits}g}") if digits else obj
    return obj


def write_json(path: Path, obj) -> None:
    write_bytes(Path(path), json.dumps(json_safe(obj), indent=1, allow_nan=False).encode())


def remedy_for(path: Path) -> str:
    """What to do about a damaged run file: the analysis's files (and a transfer run's transfer.json, computed
    from transfer.npz) are rebuilt by analyze, the rest by a new run."""
    path = Path(path)
    if path.name.startswith("umap."):      # analyze alone keeps an existing umap.npz: --umap recomputes it
        return f"delete it, or run `python -m pdiff_core analyze {path.parent.name} --umap` to recompute it"
    if path.name.startswith("analysis.") or path.name == "transfer.json":
        return f"run `python -m pdiff_core analyze {path.parent.name}` to rebuild it"
    return "delete the run and run it again"


def missing(path: Path, remedy: str | None = None) -> str:
    """A run file that is not there: the run stopped before writing it, or it was removed since; what to do."""
    return f"{path} is missing: the run stopped before writing it, or it was removed; {remedy or remedy_for(path)}"


def read_json(path: Path, remedy: str | None = None) -> dict:
    """A run file's JSON object; RunError, saying what to do, for a missing, unreadable or wrong-shaped one.
    remedy: what to do about a damaged file that is not a run's (a sweep's); by default a run's remedy."""
    try:
        obj = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RunError(missing(path, remedy)) from None
    except (ValueError, UnicodeDecodeError, OSError) as e:   # OSError: a folder or an unreadable file there
        raise RunError(f"{path} is corrupt ({e}); {remedy or remedy_for(path)}") from None
    if not isinstance(obj, dict):         # every run file is an object: a list or number is damage
        raise RunError(f"{path} is corrupt (a JSON {type(obj).__name__}, not an object); {remedy or remedy_for(path)}")
    return obj


def warnings_of(d: dict) -> list[str]:
    """A metrics.json's or status.json's warnings as a list of sentences (a lone string is one warning, not one
    per letter)."""
    w = d.get("warnings") or []
    return [w] if isinstance(w, str) else [str(x) for x in w] if isinstance(w, list) else [str(w)]


def read_metrics(path: Path) -> dict:
    """metrics.json, with its per-group results as an object of objects (what every reader walks); RunError,
    saying what to do, for any other shape."""
    m = read_json(path)
    groups = m.get("groups")
    if not (isinstance(groups, dict) and all(isinstance(g, dict) for g in groups.values())):
        raise RunError(f"{path} is corrupt ('groups' is not an object of groups); {remedy_for(path)}")
    return m


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save as st_save_bytes    # here: torch costs about 1 s to import
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    write_bytes(Path(path), st_save_bytes(tensors, metadata=metadata))


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata; never unpickles anything."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}
    except FileNotFoundError:
        raise RunError(missing(path)) from None
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise RunError(f"{path} is not a valid safetensors file ({e}); {remedy_for(path)}") from None


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    write_bytes(Path(path), buf.getvalue())


def read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        if Path(path).is_file() and not zipfile.is_zipfile(path):   # else numpy's "load it unsafely" advice
            raise ValueError("not a .npz (zip) archive")
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise RunError(missing(path)) from None
    except Exception as e:
        raise RunError(f"{path} is corrupt ({e}); {remedy_for(path)}") from None


def read_status(run_dir: Path) -> dict:
    """status.json; an unreadable one, or one in no known state, reads as failed with the reason."""
    try:
        status = read_json(Path(run_dir) / "status.json")
    except RunError as e:
        return {"state": "failed", "stage": "", "progress": 0.0, "message": str(e), "error": str(e)}
    if status.get("state") not in STATES:
        why = (f"{Path(run_dir) / 'status.json'} is corrupt (state {status.get('state')!r}, not one of "
               f"{', '.join(STATES)}); delete the run and run it again")
        return {**status, "state": "failed", "message": why, "error": why}
    return status


def read_analysis_arrays(run_dir: Path) -> dict[str, np.ndarray]:
    """analysis.npz, with umap.npz's map when it was computed for these same points."""
    a = read_npz(Path(run_dir) / "analysis.npz")
    path = Path(run_dir) / "umap.npz"
    if path.exists() and "emb_params_group" in a:
        u = read_npz(path)
        if np.array_equal(u["emb_params_group"], a["emb_params_group"]) and \
                np.array_equal(u["emb_params_index"], a["emb_params_index"]):
            a["emb_params_umap"] = u["emb_params_umap"]
    return a


def update_status(run_dir: Path, **fields) -> dict:
    """Read-modify-write of status.json; only the worker of a run writes it."""
    path = Path(run_dir) / "status.json"
    status = json.loads(path.read_text()) if path.exists() else {}
    status.update(fields, updated=time.time())
    write_json(path, status)
    return status


def append_log(run_dir: Path, line: str) -> None:
    # log.txt is append-only, so a reader seeing a partial last line is harmless
    with open(Path(run_dir) / "log.txt", "a") as f:
        f.write(time.strftime("%H:%M:%S ") + line.rstrip() + "\n")


def read_notes(run_dir: Path) -> dict:
    """notes.json: the user's name, tags and notes for a run ({} when none were written), in the shape
    write_notes gives them: a file written by hand or by another tool (tags null, a number or one string)
    must not break the Runs table of every run."""
    path = Path(run_dir) / "notes.json"
    if not path.exists():
        return {}
    try:
        raw = read_json(path)
    except RunError:
        return {}
    return clean_notes(raw.get("name"), raw.get("tags"), raw.get("notes"))


def clean_notes(name, tags, notes) -> dict:
    """name and notes as stripped text, tags as a sorted list of distinct words (from a list, or one
    comma-separated string); anything else (None, a number) counts as empty."""
    if isinstance(tags, str):
        tags = tags.split(",")
    tags = tags if isinstance(tags, (list, tuple)) else []

    def text(v) -> str:
        return v.strip() if isinstance(v, str) else ""
    return {"name": text(name), "tags": sorted({text(t) for t in tags} - {""}), "notes": text(notes)}


def write_notes(run_dir: Path, name: str = "", tags: list[str] | str = (), notes: str = "") -> dict:
    """Name, tags (a list, or one comma-separated string) and free-text notes, kept in the run
    directory so they travel with it; results are never touched."""
    clean = clean_notes(name, tags, notes)
    write_json(Path(run_dir) / "notes.json", clean)
    return clean


def list_runs() -> list[dict]:
    """One summary dict per run directory, newest first; unreadable runs show as failed."""
    root = runs_root()
    if not root.is_dir():
        return []
    out = []
    for d in sorted(root.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True):
        if not d.is_dir() or not RUN_ID.match(d.name) or not ((d / "config.json").exists()
                                                               or (d / "status.json").exists()):
            continue
        row = {"run": d.name, **read_status(d), "notes": read_notes(d)}
        try:
            row["config"] = read_json(d / "config.json")
        except RunError:
            row["config"] = {}
        for name, read in (("metrics", read_metrics), ("analysis", read_json)):   # the runs table's headline numbers
            try:
                row[name] = read(d / f"{name}.json") if (d / f"{name}.json").exists() else None
            except RunError:
                row[name] = None
        out.append(row)
    return out


def machine_device(name: str | None) -> str:
    """'auto' | 'cpu' | 'cuda' -> the device such a run gets on this machine (never raises)."""
    if name in ("cpu", "cuda"):
        return name
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def estimate(preset: str, device: str | None = "auto") -> tuple[float, int] | None:
    """(median seconds, how many runs) of this preset's finished ('done') runs in the runs root that
    ran on the same device, from status.json's `finished - started`; None when there are none.
    A run's device is the one its worker recorded, else its config's (auto: this machine's)."""
    root = runs_root()
    if not root.is_dir():
        return None
    found = []      # (the device the run recorded, else the one its config asked for; its seconds)
    for d in root.iterdir():
        if not RUN_ID.match(d.name) or not (d / "status.json").is_file():
            continue
        try:
            status, cfg = read_json(d / "status.json"), read_json(d / "config.json")
        except RunError:
            continue
        if status.get("state") != "done" or cfg.get("preset") != preset:
            continue
        started, finished = status.get("started"), status.get("finished")
        if not isinstance(started, (int, float)) or not isinstance(finished, (int, float)) or finished < started:
            continue
        found.append((status.get("device") or cfg.get("device"), finished - started))
    if not found:          # a first visit: no torch import (about 1 s) to find this machine's device
        return None
    want = machine_device(device)
    seconds = [s for dev, s in found if machine_device(dev) == want]
    return (float(np.median(seconds)), len(seconds)) if seconds else None
