"""The figures that a result page and the offline HTML report both draw, with the words beside them.

Each function takes the data as both callers already hold it (analysis.json's sections,
analysis.npz's arrays, shape.models() rows) and returns the figure with its caption, so the app
and the report cannot drift apart. The pages keep their own widgets, keys and layout. No
streamlit: `python -m pdiff_core report` builds the report without a server."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from studio import charts

ACC_SHOWN = ("originals", "generated", "average")     # accuracy groups drawn at first; baselines on demand
DISTANCES = {"raw": "raw", "norm": "normalized"}        # nearest-checkpoint distance spaces, in words
MAPS = {"params": "parameters", "latent": "AE latents"}  # what a 2-D map embeds
METHODS = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
IOU_MEANING = ("IoU of two models = |errors in common| / |errors of either| on the test split; 1 means the same "
               "mistakes.")


def nonfinite_warning(m: dict) -> str | None:
    """metrics.json's generated vectors that were not evaluated, in words; None when every one was finite."""
    n = m.get("generated_nonfinite")
    return f"{n} generated parameter vectors were not finite and were not evaluated." if n else None


def nn_hist(a: dict[str, np.ndarray], mem: dict, space: str, extra=()) -> tuple[go.Figure, str]:
    """Distances to the nearest checkpoint in `space` ('raw' or 'norm'): checkpoints among themselves
    (leave-one-out), the generated models and the `extra` baseline groups. mem: analysis.json's memorization."""
    dists = {"train→train": a[f"train_nn_{space}"], "generated": a[f"generated_nn_{space}_dist"],
             **{g: a[f"{g}_nn_{space}_dist"] for g in extra}}
    fig = charts.nn_hist(dists, mem[f"replica_threshold_{space}"], DISTANCES[space])
    return fig, (f"Median generated distance is {mem[f'median_ratio_{space}']:.2f}× the checkpoints' own "
                 "(leave-one-out) median: below 1 means closer to a checkpoint than checkpoints are to each other.")


def acc_vs_smax(models: pd.DataFrame, front: pd.DataFrame) -> tuple[go.Figure, str]:
    """Accuracy against s_max for every model (shape.models), with the baselines' Pareto front."""
    return charts.acc_vs_smax(models, front), ("Up is more accurate, left is more novel (lower s_max). Hollow red "
                                               "circles are generated models that some baseline model Pareto-dominates.")


def pair(gen: pd.DataFrame, i: int | None) -> tuple[int, int] | None:
    """(generated index, index of its nearest original) of row i of the generated models (gen: their
    rows of shape.models(), reset index); None without a row or without a known nearest original."""
    if i is None or gen.at[i, "nn_idx"] < 0:
        return None
    return int(gen.at[i, "index"]), int(gen.at[i, "nn_idx"])


def param_pair(df: pd.DataFrame, g: int, o: int) -> go.Figure:
    """Generated model g beside original o, coordinate by coordinate (df: shape.param_pair)."""
    return charts.param_pair(df, f"generated #{g}", f"original #{o}")


def ensembles(ens: dict, a: dict[str, np.ndarray]) -> tuple[go.Figure, str]:
    """Ensemble accuracy against size k, generated and originals, with analysis.json's statement on it.
    Only for a run with an ensemble curve (ens['k'] set)."""
    fig = charts.curves(a["ens_k"], {"generated": (a["ens_generated"], a["ens_generated_std"]),
                                     "originals": (a["ens_originals"], a["ens_originals_std"])},
                        "ensemble size k (models whose logits are averaged)", "test accuracy", log_x=True)
    return fig, ens.get("statement", "")


def initialization(init: dict, a: dict[str, np.ndarray]) -> tuple[go.Figure, str]:
    """Validation accuracy while fine-tuning from each kind of start (mean thick, single starts faint),
    with analysis.json's statement on it."""
    series = {k: (np.asarray(init["curves"][k]), None) for k in init["kinds"]}
    faint = {k: a[f"init_{k}"] for k in init["kinds"] if f"init_{k}" in a}
    fig = charts.curves(a["init_step"], series, "fine-tuning step", "validation accuracy", faint=faint)
    return fig, init.get("statement", "")
