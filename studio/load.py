"""Read and shape a run directory for the pages, cached on (run, modification times of its result files).

Every cached function takes a RunRef, whose `stamp` changes whenever a result file is (re)written,
so a rerun never re-reads or recomputes anything, and a re-analysed run is picked up at once."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import streamlit as st

from pdiff_core import jobs, runs
from studio import figures, shape, vectors

RESULT_FILES = ("config.json", "metrics.json", "predictions.npz", "originals.safetensors",
                "generated.safetensors", "baselines.safetensors", "analysis.json", "analysis.npz", "umap.npz",
                "transfer.json", "transfer.npz")
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
    return runs.read_metrics(r.path / "metrics.json")


@st.cache_data(**CACHE)
def params(r: RunRef, which: str) -> np.ndarray:
    """K×D / N×D float32 parameters of originals or generated models (raw, not normalized)."""
    return vectors.params(r.path, which)


@st.cache_data(**CACHE)
def param_names(r: RunRef) -> list[tuple[str, int]]:
    """(name, size) of each flattened tensor in order, from the originals' metadata."""
    return vectors.param_names(r.path)


# ---- shaped -------------------------------------------------------------------------------------

@st.cache_data(**CACHE)
def accuracy_frame(r: RunRef) -> pd.DataFrame:
    """One row per model: group, index, val_acc, test_acc (NaN for a non-finite generated model)."""
    return shape.accuracy_frame(metrics(r))


@st.cache_data(**CACHE)
def summary_table(r: RunRef) -> pd.DataFrame:
    """Per group: n, best by validation (its test accuracy), max, mean, median, min, std of test accuracy."""
    return shape.summary_table(metrics(r))


@st.cache_data(**CACHE)
def metrics_csv(r: RunRef) -> bytes:
    df = accuracy_frame(r)
    m = metrics(r)
    df["best_by_val"] = [i == m["groups"][g]["best_by_val"]["index"] for g, i in zip(df["group"], df["index"])]
    df = pd.concat([pd.DataFrame([{"group": "base", "index": 0, **m["base"], "best_by_val": False}]), df],
                   ignore_index=True)
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    return buf.getvalue().encode()


def log_tail(run_id: str, lines: int = 15) -> str:
    return jobs.tail(runs.run_path(run_id) / "log.txt", lines)


def log_text(run_id: str) -> str:
    """The whole log.txt ('' when missing)."""
    try:
        return (runs.run_path(run_id) / "log.txt").read_text(errors="replace")
    except FileNotFoundError:
        return ""


@st.cache_data(**CACHE)
def config_table(r: RunRef) -> pd.DataFrame:
    """config.json as one row per option (values as text, so mixed types show as written)."""
    c = config(r)
    return pd.DataFrame({"value": [v if isinstance(v, str) else json.dumps(v) for v in c.values()]},
                        index=pd.Index(list(c), name="option"))


def config_diff(refs: list[RunRef]) -> pd.DataFrame:
    """The options that differ among the runs, one row each, one column per run."""
    cfgs = [config(r) for r in refs]
    keys = [k for k in dict.fromkeys(k for c in cfgs for k in c) if len({repr(c.get(k)) for c in cfgs}) > 1]
    return pd.DataFrame({r.id: [c.get(k) for k in keys] for r, c in zip(refs, cfgs)},
                        index=pd.Index(keys, name="option")).astype(str)


# ---- analysis.json / analysis.npz (format: pdiff_core/analysis.py docstring) ---------------------

@st.cache_data(**CACHE)
def analysis(r: RunRef) -> dict:
    return runs.read_json(r.path / "analysis.json")


@st.cache_data(**CACHE)
def arrays(r: RunRef) -> dict[str, np.ndarray]:
    return runs.read_analysis_arrays(r.path)


@st.cache_data(**CACHE)
def models(r: RunRef) -> pd.DataFrame:
    """Every evaluated model with its nearest original, s_max and agreement: see shape.models."""
    return shape.models(accuracy_frame(r), arrays(r))


@st.cache_data(**CACHE)
def iou_view(r: RunRef, order: str) -> tuple[np.ndarray, list[str], list[tuple[str, int, int]]]:
    """The IoU matrix reordered by 'group', 'accuracy' or 'clustered': see shape.iou_view."""
    return shape.iou_view(arrays(r), accuracy_frame(r), order)


@st.cache_data(**CACHE)
def embedding(r: RunRef, space: str, method: str) -> pd.DataFrame:
    """2-D embedding of 'params' or 'latent' by 'pca'/'tsne'/'umap', joined with models()."""
    return shape.embedding(arrays(r), models(r), space, method)


def embedding_axes(r: RunRef, space: str, method: str) -> tuple[str, str]:
    return shape.embedding_axes(arrays(r), space, method)


def embedding_methods(r: RunRef, space: str) -> list[str]:
    return shape.embedding_methods(arrays(r), space)


# ---- figures --------------------------------------------------------------------------------------
# plotly builds a figure slowly (about 0.2 s for these two, validating every property), and a page
# builds it again on each rerun; unpickling a cached one takes about 25 ms. The data under each figure
# is not cached apart: only the figure uses it

@st.cache_data(**CACHE)
def pareto_figure(r: RunRef):
    """Accuracy against s_max with the baselines' Pareto front (figures.acc_vs_smax): (figure, caption)."""
    m = models(r)
    return figures.acc_vs_smax(m, shape.pareto_front(m))


@st.cache_data(**CACHE)
def pair_figure(r: RunRef, gen_index: int, orig_index: int):
    """Generated model gen_index beside original orig_index, coordinate by coordinate (figures.param_pair)."""
    df = shape.param_pair(params(r, "generated")[gen_index], params(r, "originals")[orig_index], param_names(r))
    return figures.param_pair(df, gen_index, orig_index)


@st.cache_data(**CACHE)
def similarity_table(r: RunRef) -> pd.DataFrame:
    rows = analysis(r)["similarity"].get("groups", {})
    return pd.DataFrame(rows).T.rename(columns={"within": "within group", "to_originals": "to originals",
                                                "to_originals_max": "to most similar original (mean s_max)"})


@st.cache_data(**CACHE)
def report_html(r: RunRef) -> bytes:
    """The run's self-contained HTML report (studio/report.py), built when first downloaded."""
    from studio import report
    return report.build(r.path).encode()


# ---- sweeps (pdiff_core/sweep.py): small, re-read on every rerun while cells land -------------------

def sweep_keys(sw: dict) -> list[str]:
    return list(sw["grid"])


def sweep_table(sw: dict) -> pd.DataFrame:
    """One row per cell: the swept keys, seed, state, node, the headline figures (NaN where missing)
    and a link to the cell's run page."""
    from pdiff_core import sweep
    df = pd.DataFrame(sweep.results(sw))
    df[list(sweep.HEADLINE)] = df[list(sweep.HEADLINE)].astype(float)     # None -> NaN, never "None"
    df["link"] = "/run?run=" + df["run"]
    return df[[*sweep_keys(sw), "seed", "state", "node", "link", *sweep.HEADLINE, "run", "progress", "message"]]


# ---- transfer runs: transfer.json / transfer.npz (format: pdiff_core/transfer.py) --------------------

def is_transfer(r: RunRef) -> bool:
    """A run of a task family (config.json's `family` set): its results are transfer.json/.npz."""
    return r.has("config.json") and bool(config(r).get("family"))


@st.cache_data(**CACHE)
def transfer(r: RunRef) -> dict:
    return runs.read_json(r.path / "transfer.json")


@st.cache_data(**CACHE)
def transfer_arrays(r: RunRef) -> dict[str, np.ndarray]:
    return runs.read_npz(r.path / "transfer.npz")


@st.cache_data(**CACHE)
def transfer_zero_shot(r: RunRef) -> pd.DataFrame:
    """Every method's test accuracy on every held-out task, from the raw predictions: see shape.transfer_zero_shot."""
    return shape.transfer_zero_shot(transfer_arrays(r), transfer(r)["heldout_tasks"])


@st.cache_data(**CACHE)
def transfer_task(r: RunRef, j: int) -> tuple[pd.DataFrame, dict[str, float], pd.DataFrame, float]:
    """Held-out task j: (generated heads, baselines' accuracies, fine-tuning curves, the oracle's max IoU)."""
    a = transfer_arrays(r)
    return (shape.transfer_heads(a, j), shape.transfer_task_baselines(a, j), shape.transfer_finetune(a, j),
            shape.transfer_oracle_iou(a, j))


@st.cache_data(**CACHE)
def transfer_map(r: RunRef) -> tuple[pd.DataFrame, tuple[float, ...]]:
    """Tasks by embedding, PCA fit on the training tasks: see shape.transfer_map."""
    t = transfer(r)
    return shape.transfer_map(transfer_arrays(r), t["train_tasks"], t["heldout_tasks"])


@st.cache_data(max_entries=8, show_spinner=False)
def new_task_heads(r: RunRef, key: bytes, x, y) -> dict:
    """Heads for an uploaded task (cached on the run and the file's bytes, `key`), with the heads
    as a safetensors file for the download button."""
    from safetensors.torch import save
    from pdiff_core.newtask import generate_for_task
    out = generate_for_task(r.path, x, y)
    return {"accuracy_on_examples": out["accuracy_on_examples"], "nearest_training_task": out["nearest_training_task"],
            "file": save({"params": out["heads"].contiguous()}, out["codec"].to_metadata())}
