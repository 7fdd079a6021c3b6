"""Pure data shaping for the result pages and the HTML report: no streamlit, no file reads.

`studio/load.py` wraps each function in `st.cache_data` over a run's files; `studio/report.py`
calls them directly, so the app and the report draw the same numbers."""
from __future__ import annotations

import numpy as np
import pandas as pd


def model_label(group: str, index: int, acc: float | None = None) -> str:
    return f"{group} #{index}" + ("" if acc is None or not np.isfinite(acc) else f" ({acc:.1%})")


def accuracy_frame(metrics: dict) -> pd.DataFrame:
    """One row per model: group, index, val_acc, test_acc (NaN for a non-finite generated model)."""
    frames = [pd.DataFrame({"group": g, "index": np.arange(len(m["test_acc"])),
                            "val_acc": pd.to_numeric(m["val_acc"], errors="coerce"),
                            "test_acc": pd.to_numeric(m["test_acc"], errors="coerce")})
              for g, m in metrics["groups"].items()]
    return pd.concat(frames, ignore_index=True)


def summary_table(m: dict) -> pd.DataFrame:
    """Per group: n, best by validation (its test accuracy), max, mean, median, min, std of test accuracy."""
    base = m["base"]["test_acc"]
    rows = [{"group": "base model", "n": 1, "best (by val)": base, "max (test)": base, "mean": base,
             "median": base, "min": base, "std": 0.0}]
    for g, gm in m["groups"].items():
        s = gm["summary"]
        rows.append({"group": g, "n": s.get("n", 0), "best (by val)": gm["best_by_val"]["test_acc"],
                     "max (test)": s.get("max"), **{k: s.get(k) for k in ("mean", "median", "min", "std")}})
    return pd.DataFrame(rows).set_index("group").astype(float).astype({"n": int})


def models(acc: pd.DataFrame, a: dict[str, np.ndarray]) -> pd.DataFrame:
    """Every evaluated model, one row: group, index, test_acc, and its nearest original by raw L2
    (nn_idx, nn_dist), normalized L2 (nn_norm_dist), s_max (smax, smax_idx) and agreement with
    that nearest original. Originals get their leave-one-out neighbour among the other originals.
    acc: accuracy_frame(); a: analysis.npz."""
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


def iou_view(a: dict[str, np.ndarray], acc_frame: pd.DataFrame, order: str
             ) -> tuple[np.ndarray, list[str], list[tuple[str, int, int]]]:
    """The IoU matrix over originals then generated, reordered: 'group' (as stored), 'accuracy'
    (within each group, best first) or 'clustered' (average-linkage on 1 - IoU, groups mixed).
    Returns (matrix, label per row, [(group, first row, last row)] blocks for 'group'/'accuracy')."""
    acc = acc_frame.set_index(["group", "index"])["test_acc"]
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


def embedding(a: dict[str, np.ndarray], models_df: pd.DataFrame, space: str, method: str) -> pd.DataFrame:
    """2-D embedding of 'params' or 'latent' by 'pca'/'tsne'/'umap', joined with models()."""
    xy, groups, index = a[f"emb_{space}_{method}"], a[f"emb_{space}_group"].astype(str), a[f"emb_{space}_index"]
    pts = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "group": groups, "index": index})
    return pts.merge(models_df, on=["group", "index"], how="left")


def embedding_axes(a: dict[str, np.ndarray], space: str, method: str) -> tuple[str, str]:
    """Axis titles of a map: PCA's say how much of the variance each axis holds (runs analysed
    before that was stored say only "PC 1"); t-SNE and UMAP axes have no units to show."""
    name = {"pca": "PC", "tsne": "t-SNE", "umap": "UMAP"}[method]
    ratio = a.get(f"emb_{space}_{method}_explained")
    if ratio is None:
        return f"{name} 1", f"{name} 2"
    return tuple(f"{name} {i + 1} ({100 * r:.1f} % of variance)" for i, r in enumerate(ratio[:2]))


def embedding_methods(a: dict[str, np.ndarray], space: str) -> list[str]:
    return [m for m in ("pca", "tsne", "umap") if f"emb_{space}_{m}" in a]


def pareto_front(m: pd.DataFrame) -> pd.DataFrame:
    """The baselines' Pareto frontier on (test accuracy up, s_max down), as a step line. m: models()."""
    b = m[~m["group"].isin(["originals", "generated"])].dropna(subset=["test_acc", "smax"])
    b = b.sort_values(["smax", "test_acc"], ascending=[True, False])
    front = b[b["test_acc"] > b["test_acc"].cummax().shift(fill_value=-np.inf)]
    return front[["smax", "test_acc", "group", "index"]]


def param_pair(g: np.ndarray, o: np.ndarray, names: list[tuple[str, int]]) -> pd.DataFrame:
    """One generated vector next to an original: coordinate, tensor name, both values, difference."""
    tensor = np.repeat([n for n, _ in names], [s for _, s in names])
    return pd.DataFrame({"coord": np.arange(len(g)), "tensor": tensor, "generated": g, "original": o,
                         "difference": g - o})


def closest_pair(gen: pd.DataFrame) -> int | None:
    """Row of the generated model nearest to a checkpoint (gen: the generated rows of models(),
    reset index), or None when no distance is known: the pair the memorization page opens on."""
    return int(gen["nn_dist"].idxmin()) if gen["nn_dist"].notna().any() else None
