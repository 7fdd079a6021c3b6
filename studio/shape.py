"""Pure data shaping for the result pages and the HTML report: no streamlit, no file reads.

`studio/load.py` reads a run's files (cached with `st.cache_data`) and hands them to these functions;
`studio/report.py` calls them too, so the app and the report draw the same numbers."""
from __future__ import annotations

import numpy as np
import pandas as pd

from pdiff_core import jobs, runs
from pdiff_core.words import best_test, interval_level, interval_words, pp_figures, trajectory_figures


def duration_words(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


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


def iou_models(a: dict[str, np.ndarray], models_df: pd.DataFrame) -> pd.DataFrame:
    """models() rows in the order of analysis.npz's iou and agree matrices, matched on their stored
    iou_labels / iou_index: row k here is row and column k of both matrices."""
    rows = pd.DataFrame({"group": a["iou_labels"].astype(str), "index": a["iou_index"]})
    return rows.merge(models_df, on=["group", "index"], how="left")


def embedding(a: dict[str, np.ndarray], models_df: pd.DataFrame, space: str, method: str) -> pd.DataFrame:
    """2-D embedding of 'params' or 'latent' by 'pca'/'tsne'/'umap', joined with models()."""
    xy, groups, index = a[f"emb_{space}_{method}"], a[f"emb_{space}_group"].astype(str), a[f"emb_{space}_index"]
    pts = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "group": groups, "index": index})
    return pts.merge(models_df, on=["group", "index"], how="left")


def embedding_axes(a: dict[str, np.ndarray], space: str, method: str) -> tuple[str, str]:
    """Axis titles of a map: PCA's say how much of the variance each axis holds (runs analysed
    before that was stored say only "PC 1"); t-SNE and UMAP axes have no units to show."""
    name = {"pca": "PC", "tsne": "t-SNE", "umap": "UMAP"}[method]
    return axes_with_variance(name, a.get(f"emb_{space}_{method}_explained"))


def axes_with_variance(name: str, ratio) -> tuple[str, str]:
    """'PC 1 (41.2 % of variance)', 'PC 2 (…)'; a bare 'PC 2' where the share is not known."""
    known = [] if ratio is None else [f"{name} {i + 1} ({100 * r:.1f} % of variance)" for i, r in enumerate(ratio[:2])]
    return tuple(known + [f"{name} {i + 1}" for i in range(len(known), 2)])


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


# ---- the Runs table, the Run page's timings, a sweep's means ----------------------------------------

RUN_ACCS = ["orig best", "orig median", "gen best", "gen median", "replica rate", "dominated"]   # fractions, shown
                                                                                                 # as percentages
NONE = "–"          # a text cell without a value (a number cell is left empty): never the word "None"
GEN_MINUS_ORIG, ENSEMBLE_GAIN = "gen − orig (pp, 95 %)", "ensemble gain (pp, 95 %)"


def difference_cell(d: dict | None) -> str | None:
    """A difference with its 95 % interval for a table cell, in pp; 'no difference' when the interval holds 0,
    whatever the sign of the point estimate (a table is read as fast as a verdict)."""
    if not d:
        return None
    diff, lo, hi = pp_figures(d)
    span = f"[{lo:+.1f}, {hi:+.1f}]"
    return f"{diff:+.1f} {span}" if d["differs"] else f"no difference {span}"


def runs_table(rows: list[dict]) -> pd.DataFrame:
    """The runs page's table from jobs.list_runs() rows: when, how long, name and tags, the headline
    numbers and the config options people compare on (already small: no caching needed)."""
    out = []
    for row in rows:
        try:
            out.append(run_row(row))
        except runs.DAMAGE as e:
            # a file that parses but not as written: that row says so, the table and every other run stay
            out.append({"run": row["run"], "state": f"damaged ({runs.damage_words(e)})"})
    cols = ["run", "name", "tags", "state", "created", "duration s", "preset", "dataset", "arch", "layers", "zoo",
            "sampler", "seed", "K", "N", "orig best", "orig median", "gen best", "gen median", GEN_MINUS_ORIG,
            "replica rate", "d_traj ÷ step", "dominated", "o-g (max)", ENSEMBLE_GAIN]
    df = pd.DataFrame(out, columns=cols)
    return df.astype({c: float for c in RUN_ACCS + ["duration s", "d_traj ÷ step", "o-g (max)"]})


def number(v) -> float | None:
    """A figure from a run file, or ValueError: a string there is damage, not a value to draw."""
    if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)):
        return v
    raise ValueError(f"{v!r} where a number belongs")


def run_row(row: dict) -> dict:
    """One run's row of runs_table; KeyError, TypeError, AttributeError or ValueError for a damaged file."""
    c, m, a = row.get("config") or {}, row.get("metrics") or {}, row.get("analysis") or {}
    g = m.get("groups", {})
    o, gen = g.get("originals", {}), g.get("generated", {})
    mem, notes = a.get("memorization") or {}, row.get("notes") or {}
    state = row.get("state")
    if state in jobs.ACTIVE:
        state = f"{state} {100 * (row.get('progress') or 0):.0f}%"
    started, finished = number(row.get("started")), number(row.get("finished"))
    return {
        "run": row["run"], "name": notes.get("name", ""), "tags": ", ".join(notes.get("tags", [])),
        "state": state, "created": pd.to_datetime(started, unit="s") if started else pd.NaT,
        "duration s": round(finished - started, 1) if started and finished else None,
        "preset": c.get("preset"), "dataset": c.get("dataset"), "arch": c.get("arch"), "layers": c.get("layers"),
        "zoo": c.get("zoo", "trajectory"), "sampler": c.get("sampler"), "seed": c.get("seed"),
        "K": c.get("k"), "N": c.get("n_generate"),
        "orig best": number(best_test(o)), "orig median": number(o.get("summary", {}).get("median")),
        "gen best": number(best_test(gen)), "gen median": number(gen.get("summary", {}).get("median")),
        GEN_MINUS_ORIG: difference_cell((a.get("accuracy") or {}).get("median_difference")) or NONE,
        "replica rate": number(mem.get("replica_rate")),
        # a trajectory's replica threshold is one step length: the distance to the path, in steps, beside it
        "d_traj ÷ step": number(traj_ratio(mem)),
        "dominated": number(mem.get("dominated_share")),
        "o-g (max)": number((a.get("similarity") or {}).get("og_max")),
        ENSEMBLE_GAIN: difference_cell(((a.get("ensembles") or {}).get("intervals") or {}).get("gain_generated"))
        or NONE}


def filter_runs(df: pd.DataFrame, text: str = "", states: list[str] | None = None) -> pd.DataFrame:
    """Rows whose run id, name, tags, preset, dataset, arch or zoo contain every word of `text`
    (case-insensitive), and whose state is among `states` (when given)."""
    keep = pd.Series(True, index=df.index)
    hay = (df[["run", "name", "tags", "preset", "dataset", "arch", "zoo"]].fillna("").astype(str)   # a damaged
           .agg(" ".join, axis=1).str.lower())                                                     # config: empty
    for word in text.lower().split():
        keep &= hay.str.contains(word, regex=False)
    if states:
        keep &= df["state"].astype(str).str.split().str[0].isin(states)
    return df[keep]


def timings_table(status: dict) -> pd.DataFrame:
    """status.json's `timings` (pipeline stages) then `analysis_timings`, one row per stage with its
    seconds; nested parts (maps: pca_tsne, umap_fit...) get a row each, anything else a note."""
    rows = [{"part": "pipeline", "stage": k, "seconds": v, "note": ""} for k, v in (status.get("timings") or {}).items()]
    if status.get("standby"):      # why its start was quick: its worker had imported torch before the click
        rows.insert(0, {"part": "pipeline", "stage": "worker", "seconds": None,
                        "note": f"a waiting worker took the run ({status['standby']})"})
    for k, v in (status.get("analysis_timings") or {}).items():
        if not isinstance(v, dict):
            rows.append({"part": "analysis", "stage": k, "seconds": v, "note": ""})
            continue
        extra = []
        for a, b in v.items():
            if isinstance(b, (int, float)) and not isinstance(b, bool) and not a.endswith("_mib"):
                rows.append({"part": "analysis", "stage": f"{k} / {a}", "seconds": b, "note": ""})
            else:
                extra.append(f"{a}: {b}")
        if extra:
            rows.append({"part": "analysis", "stage": k, "seconds": None, "note": ", ".join(extra)})
    df = pd.DataFrame(rows, columns=["part", "stage", "seconds", "note"])
    # text, so a row with only a note shows an empty cell rather than "None"
    df["seconds"] = [f"{v:.2f}" if pd.notna(v) else "" for v in df["seconds"]]
    return df


def sweep_means(df: pd.DataFrame, metric: str, x: str, color: str | None = None) -> pd.DataFrame:
    """Per (x, colour) value: the metric's mean over seeds, its 95 % interval and the seed count."""
    from pdiff_core import sweep
    by = [x] + ([color] if color else [])
    rows = [{**dict(zip(by, key if isinstance(key, tuple) else (key,))),
             **dict(zip(("mean", "lo", "hi", "n"), sweep.mean_ci(part[metric].tolist())))}
            for key, part in df.groupby(by, sort=False)]
    return pd.DataFrame(rows, columns=[*by, "mean", "lo", "hi", "n"])


# ---- transfer runs (transfer.json / transfer.npz: pdiff_core/transfer.py) ---------------------------

TRANSFER_METHODS = ("average_of_tasks", "nearest_task", "linear_probe_k1", "linear_probe_k5", "linear_probe_k10",
                    "generated_median", "generated_best", "oracle")        # the charts' fixed order, oracle last
TRANSFER_STARTS = ("generated", "nearest_task", "average_of_tasks", "random")   # transfer.STARTS (no torch import here)


def transfer_label(method: str, shots: int | None = None) -> str:
    """A method's name in words ("linear_probe" is the k-shot probe with the support set's k)."""
    if method.startswith("linear_probe"):
        k = method.rsplit("_k", 1)[1] if "_k" in method else shots
        return f"linear probe, {k}-shot"
    return {"generated_median": "generated (median head)", "generated_best": "generated (best on support)",
            "average_of_tasks": "average of training heads", "nearest_task": "nearest training task's head",
            "oracle": "oracle (full train split)", "generated": "generated (best on support)",
            "random": "random init"}.get(method, method)


def transfer_method_accs(a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """transfer.method_accuracy (what transfer.json's medians are taken over) in the charts' order."""
    from pdiff_core.transfer import method_accuracy
    out = method_accuracy(a)
    return {m: out[m] for m in TRANSFER_METHODS if m in out}


def transfer_zero_shot(a: dict[str, np.ndarray], names: list[str]) -> pd.DataFrame:
    """One row per (held-out task, method): task, method, label, acc; methods in TRANSFER_METHODS order."""
    rows = [{"task": names[j], "method": m, "label": transfer_label(m), "acc": float(v[j])}
            for m, v in transfer_method_accs(a).items() for j in range(len(v))]
    return pd.DataFrame(rows, columns=["task", "method", "label", "acc"])


def traj_ratio(mem: dict) -> float | None:
    """analysis.json's median distance of the generated models to the checkpoint path, in step lengths
    (None for an independent zoo, which has no path): shown beside every replica rate."""
    return (trajectory_figures(mem) or {}).get("ratio_to_step")


def transfer_summary(t: dict) -> pd.DataFrame:
    """transfer.json's medians over held-out tasks, one row per method in TRANSFER_METHODS order:
    method, label, median, lo, hi, n, level (the interval's coverage; 95 % before transfer.json had it)."""
    z = t["zero_shot"]
    rows = [{"method": m, "label": transfer_label(m), **{k: z[m].get(k) for k in ("median", "lo", "hi", "n")},
             "level": interval_level(z[m])} for m in TRANSFER_METHODS if m in z]
    return pd.DataFrame(rows, columns=["method", "label", "median", "lo", "hi", "n", "level"])


def transfer_tasks_table(t: dict) -> pd.DataFrame:
    """One row per held-out task: its nearest training task, each method's accuracy (fractions) and
    the fine-tuning steps each start took to come within one test example of the oracle (NaN: never)."""
    rows = []
    for h in t["heldout"]:
        steps = h.get("finetune_steps_to_oracle") or {}
        rows.append({"task": h["task"], "nearest training task": h["nearest_training_task"],
                     **{transfer_label(m): h["zero_shot"].get(m) for m in TRANSFER_METHODS},
                     **{f"steps to oracle from {transfer_label(s)}": steps.get(s) for s in TRANSFER_STARTS}})
    df = pd.DataFrame(rows)
    return df.astype({c: float for c in df.columns[2:]})


def transfer_heads(a: dict[str, np.ndarray], j: int) -> pd.DataFrame:
    """Held-out task j's generated heads: head, test acc, support examples right, best (chosen on
    the support set), the training head it sits closest to in parameter space (index) and the
    highest IoU of its test errors with any training head's."""
    from pdiff_core.transfer import head_accuracy, max_iou_with_training_heads
    acc, sup = head_accuracy(a)[j], a["support_correct_generated"][j]
    return pd.DataFrame({"head": np.arange(len(acc)), "acc": acc, "support_correct": sup,
                         "best": np.arange(len(acc)) == int(np.argmax(sup)),
                         "nearest_train_head": a["gen_nearest_train_head"][j],
                         "max_iou": max_iou_with_training_heads(a, [j])[0][0]})


def transfer_task_baselines(a: dict[str, np.ndarray], j: int) -> dict[str, float]:
    """Held-out task j: every method's test accuracy but the generated ones (method -> fraction)."""
    return {m: float(v[j]) for m, v in transfer_method_accs(a).items() if not m.startswith("generated")}


def transfer_oracle_iou(a: dict[str, np.ndarray], j: int) -> float:
    """The highest IoU of held-out task j's oracle test errors with any training head's."""
    from pdiff_core.transfer import max_iou_with_training_heads
    return float(max_iou_with_training_heads(a, [j])[1][0])


def transfer_finetune(a: dict[str, np.ndarray], j: int) -> pd.DataFrame:
    """Held-out task j's fine-tuning curves: one row per (start, step) with the test accuracy."""
    from pdiff_core.transfer import finetune_correct
    acc = finetune_correct(a)[j] / a["y_test"].shape[1]                                  # (starts, steps + 1)
    return pd.DataFrame([{"start": s, "label": transfer_label(s), "step": k, "acc": float(acc[i, k])}
                         for i, s in enumerate(TRANSFER_STARTS[:len(acc)]) for k in range(acc.shape[1])])


def transfer_map(a: dict[str, np.ndarray], train_names: list[str], heldout_names: list[str]
                 ) -> tuple[pd.DataFrame, tuple[float, ...]]:
    """Tasks by embedding in 2-D: PCA fit on the training tasks' mean embeddings (over support
    draws), applied to the held-out ones. Returns (points: kind, index, task, x, y; explained
    variance ratio per axis)."""
    from sklearn.decomposition import PCA
    train = a["emb_train"].astype(np.float64).mean(1)
    held = a["emb_heldout"].astype(np.float64)
    pca = PCA(n_components=min(2, *train.shape), random_state=0).fit(train)
    xy_t, xy_h = pca.transform(train), pca.transform(held)
    if xy_t.shape[1] < 2:                                                                # a single training task
        xy_t, xy_h = np.pad(xy_t, ((0, 0), (0, 2 - xy_t.shape[1]))), np.pad(xy_h, ((0, 0), (0, 2 - xy_h.shape[1])))
    pts = pd.concat([pd.DataFrame({"kind": "training", "index": np.arange(len(train)), "task": train_names,
                                   "x": xy_t[:, 0], "y": xy_t[:, 1]}),
                     pd.DataFrame({"kind": "held-out", "index": np.arange(len(held)), "task": heldout_names,
                                   "x": xy_h[:, 0], "y": xy_h[:, 1]})], ignore_index=True)
    return pts, tuple(float(r) for r in pca.explained_variance_ratio_)


def transfer_links(a: dict[str, np.ndarray], j: int) -> tuple[int, dict[int, int]]:
    """Held-out task j: its nearest training task by embedding, and {training task: how many of its
    generated heads sit closest to that task's head}."""
    idx, counts = np.unique(a["gen_nearest_train_head"][j], return_counts=True)
    return int(a["nearest_idx"][j]), {int(i): int(c) for i, c in zip(idx, counts)}


def pct(x) -> str:
    """A fraction as a percentage with one decimal ("–" for none)."""
    return "–" if x is None or x != x else f"{100 * x:.1f} %"


def pp(x) -> str:
    """A difference of fractions in percentage points, signed ("–" for none)."""
    return "–" if x is None or x != x else f"{100 * x:+.1f} pp"


def transfer_evidence(t: dict) -> tuple[list[str], list[str], str | None]:
    """The verdict's evidence in words, from transfer.json: (a line per method: median zero-shot
    accuracy over held-out tasks with its 95 % interval; a line per comparison of the generated head
    chosen on the support set, "no difference" when the interval holds 0; a plain sentence when the
    k-shot linear probe wins, else None)."""
    shots = t.get("shots")
    methods = [f"**{transfer_label(m)}**: {pct(z['median'])} ({interval_words(z, pct)})"
               for m, z in ((m, t["zero_shot"].get(m)) for m in TRANSFER_METHODS) if z]
    comps, wins = [], None
    for key, d in (t.get("comparisons") or {}).items():
        other = key.split(" - ", 1)[1]
        span = interval_words(d, pp)
        if interval_level(d) < 0.95:
            how = f"not shown different ({pp(d['median'])}, {span})"
        elif not d.get("differs"):
            how = f"no difference ({pp(d['median'])}, {span}, holds 0)"
        else:
            how = f"{'better' if d['median'] > 0 else 'worse'} by {pp(d['median'])[1:]} ({span})"
        comps.append(f"vs **{transfer_label(other, shots)}**: {how}")
        if other == "linear_probe" and d.get("differs") and d["median"] < 0:
            wins = (f"The {shots}-shot linear probe wins: a logistic regression on the same {2 * shots} labelled "
                    f"examples beats the generated head by {pp(-d['median'])[1:]} (median over tasks).")
    return methods, comps, wins
