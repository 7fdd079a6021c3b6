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
from pdiff_core.params import Codec

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
def params(r: RunRef, which: str) -> np.ndarray:
    """K×D / N×D float32 parameters of originals or generated models (raw, not normalized)."""
    tensors, _ = runs.read_safetensors(r.path / f"{which}.safetensors")
    return tensors["params"].numpy()


@st.cache_data(**CACHE)
def param_names(r: RunRef) -> list[tuple[str, int]]:
    """(name, size) of each flattened tensor in order, from the originals' metadata."""
    codec = Codec.from_metadata(runs.read_safetensors(r.path / "originals.safetensors")[1])
    return list(zip(codec.names, codec.sizes))


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
    base = m["base"]["test_acc"]
    rows = [{"group": "base model", "n": 1, "best (by val)": base, "max (test)": base, "mean": base,
             "median": base, "min": base, "std": 0.0}]
    for g, gm in m["groups"].items():
        s = gm["summary"]
        rows.append({"group": g, "n": s.get("n", 0), "best (by val)": gm["best_by_val"]["test_acc"],
                     "max (test)": s.get("max"), **{k: s.get(k) for k in ("mean", "median", "min", "std")}})
    return pd.DataFrame(rows).set_index("group").astype(float).astype({"n": int})


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


def best_test(group: dict):
    """Test accuracy of the model chosen on validation: the only 'best' the app shows."""
    return (group.get("best_by_val") or {}).get("test_acc")


def runs_table(rows: list[dict]) -> pd.DataFrame:
    """The runs page's table from jobs.list_runs() rows (already small: no caching needed)."""
    out = []
    for row in rows:
        c, m = row.get("config") or {}, row.get("metrics") or {}
        g = m.get("groups", {})
        o, gen = g.get("originals", {}), g.get("generated", {})
        state = row.get("state")
        if state in jobs.ACTIVE:
            state = f"{state} {100 * (row.get('progress') or 0):.0f}%"
        out.append({"run": row["run"], "state": state, "dataset": c.get("dataset"), "arch": c.get("arch"),
                    "layers": c.get("layers"), "K": c.get("k"), "N": c.get("n_generate"),
                    "orig best": best_test(o), "orig median": o.get("summary", {}).get("median"),
                    "gen best": best_test(gen), "gen median": gen.get("summary", {}).get("median")})
    df = pd.DataFrame(out, columns=["run", "state", "dataset", "arch", "layers", "K", "N",
                                    "orig best", "orig median", "gen best", "gen median"])
    accs = ["orig best", "orig median", "gen best", "gen median"]
    return df.astype({c: float for c in accs})


def log_tail(run_id: str, lines: int = 15) -> str:
    return jobs.tail(runs.run_path(run_id) / "log.txt", lines)


@st.cache_data(**CACHE)
def config_diff(a: RunRef, b: RunRef) -> pd.DataFrame:
    """The options that differ between two runs, one row each."""
    ca, cb = config(a), config(b)
    keys = [k for k in dict.fromkeys([*ca, *cb]) if ca.get(k) != cb.get(k)]
    return pd.DataFrame({a.id: [ca.get(k) for k in keys], b.id: [cb.get(k) for k in keys]},
                        index=pd.Index(keys, name="option")).astype(str)


# ---- analysis.json / analysis.npz (format: pdiff_core/analysis.py docstring) ---------------------

@st.cache_data(**CACHE)
def analysis(r: RunRef) -> dict:
    return runs.read_json(r.path / "analysis.json")


@st.cache_data(**CACHE)
def arrays(r: RunRef) -> dict[str, np.ndarray]:
    return runs.read_npz(r.path / "analysis.npz")


def model_label(group: str, index: int, acc: float | None = None) -> str:
    return f"{group} #{index}" + ("" if acc is None or not np.isfinite(acc) else f" ({acc:.1%})")


@st.cache_data(**CACHE)
def models(r: RunRef) -> pd.DataFrame:
    """Every evaluated model, one row: group, index, test_acc, and its nearest original by raw L2
    (nn_idx, nn_dist), normalized L2 (nn_norm_dist), s_max (smax, smax_idx) and agreement with
    that nearest original. Originals get their leave-one-out neighbour among the other originals."""
    acc, a = accuracy_frame(r), arrays(r)
    out = acc.assign(nn_idx=-1, nn_dist=np.nan, nn_norm_dist=np.nan, smax=np.nan, smax_idx=-1, agree=np.nan)
    for g in acc["group"].unique():
        rows = np.flatnonzero(acc["group"].to_numpy() == g)
        if g == "originals":
            if len(a.get("train_nn_raw", rows)) != len(rows):                  # version 1 kept finite rows only
                rows = rows[np.isfinite(acc["test_acc"].to_numpy()[rows])]
            cols = {"nn_idx": "train_nn_raw_idx", "nn_dist": "train_nn_raw", "nn_norm_dist": "train_nn_norm",
                    "smax": "train_smax", "smax_idx": "train_smax_idx"}
        else:
            cols = {"nn_idx": f"{g}_nn_raw_idx", "nn_dist": f"{g}_nn_raw_dist", "nn_norm_dist": f"{g}_nn_norm_dist",
                    "smax": f"{g}_smax", "smax_idx": f"{g}_smax_idx", "agree": f"{g}_agree"}
        for col, key in cols.items():
            if key in a and len(a[key]) == len(rows):
                out.loc[rows, col] = a[key]
    if "generated_dominated" in a:
        out["dominated"] = pd.Series(pd.NA, index=out.index, dtype="boolean")
        gen = np.flatnonzero(out["group"].to_numpy() == "generated")
        out.loc[gen, "dominated"] = a["generated_dominated"]
    out["label"] = [model_label(g, i, t) for g, i, t in zip(out["group"], out["index"], out["test_acc"])]
    return out


@st.cache_data(**CACHE)
def iou_view(r: RunRef, order: str) -> tuple[np.ndarray, list[str], list[tuple[str, int, int]]]:
    """The IoU matrix over originals then generated, reordered: 'group' (as stored), 'accuracy'
    (within each group, best first) or 'clustered' (average-linkage on 1 - IoU, groups mixed).
    Returns (matrix, label per row, [(group, first row, last row)] blocks for 'group'/'accuracy')."""
    a, acc = arrays(r), accuracy_frame(r).set_index(["group", "index"])["test_acc"]
    iou, groups, index = a["iou"], a["iou_labels"].astype(str), a["iou_index"]
    accs = np.array([acc.get((g, i), np.nan) for g, i in zip(groups, index)])
    if order == "clustered":
        from scipy.cluster.hierarchy import leaves_list, linkage
        from scipy.spatial.distance import squareform
        ok = np.flatnonzero(np.isfinite(np.diag(iou)))
        dist = 1.0 - np.nan_to_num(iou[np.ix_(ok, ok)].astype(np.float64), nan=0.0)
        np.fill_diagonal(dist, 0.0)
        perm = np.concatenate([ok[leaves_list(linkage(squareform(dist, checks=False), "average"))],
                               np.setdiff1d(np.arange(len(iou)), ok)])
    else:
        key = -np.nan_to_num(accs, nan=-1.0) if order == "accuracy" else index
        perm = np.lexsort((key, [list(dict.fromkeys(groups)).index(g) for g in groups]))
    labels = [model_label(groups[i], int(index[i]), accs[i]) for i in perm]
    blocks = []
    if order != "clustered":
        for g in dict.fromkeys(groups):
            rows = np.flatnonzero(groups[perm] == g)
            blocks.append((g, int(rows[0]), int(rows[-1])))
    return iou[np.ix_(perm, perm)], labels, blocks


@st.cache_data(**CACHE)
def embedding(r: RunRef, space: str, method: str) -> pd.DataFrame:
    """2-D embedding of 'params' or 'latent' by 'pca'/'tsne'/'umap', joined with models()."""
    a = arrays(r)
    xy, groups, index = a[f"emb_{space}_{method}"], a[f"emb_{space}_group"].astype(str), a[f"emb_{space}_index"]
    pts = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "group": groups, "index": index})
    return pts.merge(models(r), on=["group", "index"], how="left")


def embedding_methods(r: RunRef, space: str) -> list[str]:
    return [m for m in ("pca", "tsne", "umap") if f"emb_{space}_{m}" in arrays(r)]


@st.cache_data(**CACHE)
def pareto_front(r: RunRef) -> pd.DataFrame:
    """The baselines' Pareto frontier on (test accuracy up, s_max down), as a step line."""
    m = models(r)
    b = m[~m["group"].isin(["originals", "generated"])].dropna(subset=["test_acc", "smax"])
    b = b.sort_values(["smax", "test_acc"], ascending=[True, False])
    front = b[b["test_acc"] > b["test_acc"].cummax().shift(fill_value=-np.inf)]
    return front[["smax", "test_acc", "group", "index"]]


@st.cache_data(**CACHE)
def param_pair(r: RunRef, gen_index: int, orig_index: int) -> pd.DataFrame:
    """One generated vector next to an original: coordinate, tensor name, both values, difference."""
    g, o = params(r, "generated")[gen_index], params(r, "originals")[orig_index]
    names = np.repeat([n for n, _ in param_names(r)], [s for _, s in param_names(r)])
    return pd.DataFrame({"coord": np.arange(len(g)), "tensor": names, "generated": g, "original": o,
                         "difference": g - o})


@st.cache_data(**CACHE)
def similarity_table(r: RunRef) -> pd.DataFrame:
    rows = analysis(r)["similarity"].get("groups", {})
    return pd.DataFrame(rows).T.rename(columns={"within": "within group", "to_originals": "to originals",
                                                "to_originals_max": "to most similar original (mean s_max)"})
