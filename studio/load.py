"""Read and shape a run directory for the pages, cached on (run, modification times of its result files).

Every cached function takes a RunRef, whose `stamp` changes whenever a result file is (re)written,
so a rerun never re-reads or recomputes anything, and a re-analysed run is picked up at once."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import streamlit as st

from pdiff_core import jobs, runs

RESULT_FILES = ("config.json", "metrics.json", "predictions.npz", "originals.safetensors",
                "generated.safetensors", "baselines.safetensors", "analysis.json", "analysis.npz")
CACHE = dict(show_spinner=False, max_entries=16)


class RunRef(NamedTuple):
    id: str
    dir: str
    stamp: tuple          # (name, mtime_ns, size) of each result file present

    @property
    def path(self) -> Path:
        return Path(self.dir)

    def has(self, name: str) -> bool:
        return any(n == name for n, *_ in self.stamp)


def ref(run_id: str) -> RunRef:
    d = runs.run_path(run_id)
    stamp = []
    for name in RESULT_FILES:
        try:
            s = os.stat(d / name)
        except FileNotFoundError:
            continue
        stamp.append((name, s.st_mtime_ns, s.st_size))
    return RunRef(run_id, str(d), tuple(stamp))


# ---- raw files --------------------------------------------------------------------------------

@st.cache_data(**CACHE)
def config(r: RunRef) -> dict:
    return runs.read_json(r.path / "config.json")


@st.cache_data(**CACHE)
def metrics(r: RunRef) -> dict:
    return runs.read_json(r.path / "metrics.json")


@st.cache_data(**CACHE)
def predictions(r: RunRef) -> dict[str, np.ndarray]:
    return runs.read_npz(r.path / "predictions.npz")


@st.cache_data(**CACHE)
def params(r: RunRef, which: str) -> np.ndarray:
    """K×D / N×D float32 parameters of originals or generated models (raw, not normalized)."""
    tensors, _ = runs.read_safetensors(r.path / f"{which}.safetensors")
    return tensors["params"].numpy()


@st.cache_data(**CACHE)
def param_names(r: RunRef) -> list[tuple[str, int]]:
    """(name, size) of each flattened tensor in order, from the originals' metadata."""
    import json
    from math import prod
    _, meta = runs.read_safetensors(r.path / "originals.safetensors")
    return [(n, prod(s)) for n, s in zip(json.loads(meta["names"]), json.loads(meta["shapes"]))]


# ---- shaped -------------------------------------------------------------------------------------

@st.cache_data(**CACHE)
def accuracy_frame(r: RunRef) -> pd.DataFrame:
    """One row per model: group, index, val_acc, test_acc (NaN for a non-finite generated model)."""
    groups = metrics(r)["groups"]
    frames = [pd.DataFrame({"group": g, "index": np.arange(len(m["test_acc"])),
                            "val_acc": pd.to_numeric(m["val_acc"], errors="coerce"),
                            "test_acc": pd.to_numeric(m["test_acc"], errors="coerce")})
              for g, m in groups.items()]
    return pd.concat(frames, ignore_index=True)


@st.cache_data(**CACHE)
def summary_table(r: RunRef) -> pd.DataFrame:
    """Per group: n, best by validation (its test accuracy), max, mean, median, min, std of test accuracy."""
    m = metrics(r)
    rows = [{"group": "base model", "n": 1, "best (by val)": m["base"]["test_acc"], "max": m["base"]["test_acc"]}]
    for g, gm in m["groups"].items():
        s = gm["summary"]
        rows.append({"group": g, "n": s.get("n", 0), "best (by val)": gm["best_by_val"]["test_acc"],
                     **{k: s.get(k) for k in ("max", "mean", "median", "min", "std")}})
    return pd.DataFrame(rows).set_index("group")


@st.cache_data(**CACHE)
def metrics_csv(r: RunRef) -> bytes:
    df = accuracy_frame(r)
    base = metrics(r)["base"]
    df = pd.concat([pd.DataFrame([{"group": "base", "index": 0, **base}]), df], ignore_index=True)
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    return buf.getvalue().encode()


def runs_table(rows: list[dict]) -> pd.DataFrame:
    """The runs page's table from jobs.list_runs() rows (already small: no caching needed)."""
    out = []
    for row in rows:
        c, m = row.get("config") or {}, row.get("metrics") or {}
        g = m.get("groups", {})
        o, gen = g.get("originals", {}).get("summary", {}), g.get("generated", {}).get("summary", {})
        out.append({"run": row["run"], "state": row.get("state"), "progress": row.get("progress") or 0.0,
                    "preset": c.get("preset"), "dataset": c.get("dataset"), "arch": c.get("arch"),
                    "layers": c.get("layers"), "K": c.get("k"), "N": c.get("n_generate"),
                    "orig best": o.get("max"), "orig median": o.get("median"),
                    "gen best": gen.get("max"), "gen median": gen.get("median")})
    return pd.DataFrame(out, columns=["run", "state", "progress", "preset", "dataset", "arch", "layers", "K", "N",
                                      "orig best", "orig median", "gen best", "gen median"])


def log_tail(run_id: str, lines: int = 15) -> str:
    return jobs.tail(runs.run_path(run_id) / "log.txt", lines)
