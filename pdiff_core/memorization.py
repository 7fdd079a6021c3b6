"""Are generated models new, or copies of checkpoints? The measures of analysis.json's "similarity" and
"memorization", for generated models and every baseline family, against the originals:
    similarity    IoU of error sets and prediction agreement, originals and generated together
    neighbours    each model's nearest checkpoint (raw and normalized L2), its s_max and agreement
    replicas      distances against the originals' own leave-one-out distances (DESIGN.md)
    pareto        which generated models a baseline beats on accuracy and s_max at once
    trajectory    d_traj, the distance to the path between consecutive checkpoints
All on exact predictions (metrics.py); a non-finite model is -1 / NaN in every per-model array."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .metrics import (accuracy, agreement_matrix, chord_reference, correct_counts, dominated, error_sets,
                      finite_rows, iou_matrix, leave_one_out, mean_offdiag, nearest, replica_rate,
                      replica_threshold, share, step_lengths, trajectory_distance)
from .params import Codec


@dataclass
class Group:
    """One group of models, rows aligned with its parameter file and predictions(_val).npz."""
    params: torch.Tensor   # (n, D) raw parameters
    preds: np.ndarray      # (n, n_test) test predictions, -1 where not finite
    val_preds: np.ndarray  # (n, n_val) validation predictions, -1 where not finite
    y: np.ndarray          # test labels
    y_val: np.ndarray

    @property
    def finite(self) -> np.ndarray:
        return torch.isfinite(self.params).all(dim=1).numpy() & finite_rows(self.preds)

    @property
    def counts(self) -> np.ndarray:
        """(n,) exact test correct counts, -1 where not finite."""
        return np.where(self.finite, correct_counts(self.preds, self.y), -1)

    @property
    def acc(self) -> np.ndarray:
        return np.where(self.finite, accuracy(self.preds, self.y), np.nan)


def similarity(groups: dict[str, Group], y: np.ndarray, dev: str = "cpu") -> tuple[dict, dict]:
    """IoU and agreement over originals then generated, and the four summary statistics."""
    o, g = groups["originals"], groups["generated"]
    preds = np.concatenate([o.preds, g.preds])
    ok = np.concatenate([o.finite, g.finite])
    iou = np.full((len(ok), len(ok)), np.nan)
    agree = np.full_like(iou, np.nan)
    iou[np.ix_(ok, ok)] = iou_matrix(error_sets(preds[ok], y), error_sets(preds[ok], y), dev)
    agree[np.ix_(ok, ok)] = agreement_matrix(preds[ok], preds[ok], dev)
    K = len(o.acc)
    oo, og = iou[:K, :K][np.ix_(o.finite, o.finite)], iou[:K, K:][np.ix_(o.finite, g.finite)]
    gg = iou[K:, K:][np.ix_(g.finite, g.finite)]
    stats = {"oo": mean_offdiag(oo), "gg": mean_offdiag(gg),
             "og": float(og.mean()) if og.size else float("nan"),
             "og_max": float(og.max(axis=0).mean()) if og.size else float("nan")}
    labels = np.array(["originals"] * K + ["generated"] * len(g.acc))
    index = np.concatenate([np.arange(K), np.arange(len(g.acc))])
    return stats, {"iou": iou.astype(np.float32), "agree": agree.astype(np.float32),
                   "iou_labels": labels, "iou_index": index}


def group_similarity(grp: Group, orig: Group, y: np.ndarray, smax_mean: float | None, dev: str = "cpu") -> dict:
    """Mean IoU within a group, to the originals, and of each model to its closest original."""
    e, eo = error_sets(grp.preds[grp.finite], y), error_sets(orig.preds[orig.finite], y)
    to_orig = iou_matrix(e, eo, dev)
    return {"within": mean_offdiag(iou_matrix(e, e, dev)),
            "to_originals": float(to_orig.mean()) if to_orig.size else float("nan"),
            "to_originals_max": smax_mean}


def neighbours(grp: Group, orig: Group, codec: Codec, y: np.ndarray, name: str, dev: str = "cpu") -> dict:
    """Nearest checkpoint (raw and normalized L2), s_max and agreement, per model of a group."""
    n, ok = len(grp.acc), grp.finite
    of = np.flatnonzero(orig.finite)                  # original rows that may be neighbours
    out = {f"{name}_{k}": np.full(n, -1, np.int64) for k in ("nn_raw_idx", "nn_norm_idx", "smax_idx")}
    out.update({f"{name}_{k}": np.full(n, np.nan) for k in ("nn_raw_dist", "nn_norm_dist", "smax", "agree")})
    if not ok.any():
        return out
    p, po = grp.params[ok], orig.params[of]
    for space, a, b in (("raw", p, po), ("norm", codec.normalize(p.double()), codec.normalize(po.double()))):
        idx, d = nearest(a, b, dev)
        out[f"{name}_nn_{space}_idx"][ok], out[f"{name}_nn_{space}_dist"][ok] = of[idx], d
    iou = iou_matrix(error_sets(grp.preds[ok], y), error_sets(orig.preds[of], y), dev)
    out[f"{name}_smax"][ok], out[f"{name}_smax_idx"][ok] = iou.max(axis=1), of[iou.argmax(axis=1)]
    near = orig.preds[out[f"{name}_nn_raw_idx"][ok]]
    out[f"{name}_agree"][ok] = (grp.preds[ok] == near).mean(axis=1)
    return out


def train_reference(orig: Group, codec: Codec, y: np.ndarray, dev: str = "cpu") -> dict:
    """Leave-one-out among the originals: the distance and s_max of each to its nearest other one.
    Full-length arrays (-1 / NaN for a non-finite original), like every per-model array."""
    k, of = len(orig.acc), np.flatnonzero(orig.finite)
    out = {}
    for space, p in (("raw", orig.params[of]), ("norm", codec.normalize(orig.params[of].double()))):
        idx, d = leave_one_out(p, dev)
        out[f"train_nn_{space}"], out[f"train_nn_{space}_idx"] = np.full(k, np.nan), np.full(k, -1, np.int64)
        out[f"train_nn_{space}"][of], out[f"train_nn_{space}_idx"][of] = d, of[idx]
    e = error_sets(orig.preds[of], y)
    iou = iou_matrix(e, e, dev)
    np.fill_diagonal(iou, -np.inf)
    out["train_smax"], out["train_smax_idx"] = np.full(k, np.nan), np.full(k, -1, np.int64)
    out["train_smax"][of], out["train_smax_idx"][of] = iou.max(axis=1), of[iou.argmax(axis=1)]
    return out


def _dist_stats(d: np.ndarray) -> dict:
    return {"median": float(np.median(d)), "mean": float(d.mean()), "p5": float(np.percentile(d, 5)),
            "min": float(d.min()), "max": float(d.max())}


def ratio(a: float, b: float) -> float:
    """a / b, NaN (null in analysis.json) when b is 0: identical checkpoints have no distance scale."""
    return float(a / b) if b > 0 else float("nan")


def group_memorization(name: str, grp: Group, nb: dict, train: dict[str, np.ndarray]) -> dict:
    """Summary of one group against the training LOO distances `train` {"raw": ..., "norm": ...}."""
    ok = grp.finite
    if not ok.any():
        return {"acc_mean": None}
    d = {space: nb[f"{name}_nn_{space}_dist"][ok] for space in ("raw", "norm")}
    smax = nb[f"{name}_smax"][ok]
    return {
        "acc_mean": float(grp.acc[ok].mean()), "acc_median": float(np.median(grp.acc[ok])),
        "nn_raw_median": float(np.median(d["raw"])), "nn_norm_median": float(np.median(d["norm"])),
        "median_ratio_raw": ratio(np.median(d["raw"]), np.median(train["raw"])),
        "median_ratio_norm": ratio(np.median(d["norm"]), np.median(train["norm"])),
        "replica_rate": replica_rate(d["raw"], train["raw"])[0],
        "replica_rate_norm": replica_rate(d["norm"], train["norm"])[0],
        "within_train_median": share(d["raw"] < np.median(train["raw"])),
        "smax_mean": float(smax.mean()), "smax_median": float(np.median(smax)),
        "smax_one": share(smax == 1.0),   # makes exactly the errors of some original
        "agree_mean": float(nb[f"{name}_agree"][ok].mean()),
    }


def pareto(gen: Group, base: dict[str, Group], nb: dict) -> tuple[dict, np.ndarray]:
    """Which generated models some baseline model beats on (test accuracy up, s_max down), on
    exact correct counts: a tie in accuracy is a tie, never a win either way."""
    ok = gen.finite
    cnt, smax = gen.counts[ok], nb["generated_smax"][ok]
    flags, by, matched = np.zeros(len(ok), bool), {}, {}
    for g, b in base.items():
        cnt_b, smax_b = b.counts[b.finite], nb[f"{g}_smax"][b.finite]
        d = dominated(cnt, smax, cnt_b, smax_b)
        by[g], matched[g] = share(d), share(dominated(cnt, smax, cnt_b, smax_b, strict=False))
        flags[ok] |= d
    return {"dominated_share": share(flags[ok]), "dominated_by": by, "matched_by": matched}, flags


def trajectory_stats(groups: dict[str, Group], codec: Codec, traj: np.ndarray, dev: str = "cpu") -> tuple[dict | None, dict]:
    """d_traj (DESIGN.md) for generated and every baseline: the distance to the nearest segment
    between consecutive checkpoints, raw and normalized, against the mean step length and against
    the path's own wiggle (each interior checkpoint's distance to its neighbours' chord).
    None for an independent zoo, which has no segments."""
    orig = groups["originals"]
    of = np.flatnonzero(orig.finite)
    theta, t = orig.params[of], np.asarray(traj)[of]
    steps = step_lengths(theta, t)
    if len(steps) == 0:
        return None, {}
    chord = chord_reference(theta, t, dev)
    on_path = float(np.percentile(chord, 5)) if len(chord) else None
    res = {"segments": int(len(steps)), "mean_step_raw": float(steps.mean()),
           "mean_step_norm": float(step_lengths(codec.normalize(theta.double()), t).mean()),
           "chord_raw": {"median": float(np.median(chord)), "p5": on_path} if len(chord) else None,
           "groups": {}}
    arrays = {"train_chord_raw": chord}
    for g, grp in groups.items():
        if g == "originals":
            continue
        n, ok = len(grp.finite), grp.finite
        d, seg, lam = np.full(n, np.nan), np.full(n, -1, np.int64), np.full(n, np.nan)
        dn = np.full(n, np.nan)
        if ok.any():
            d[ok], s, lam[ok] = trajectory_distance(grp.params[ok], theta, t, dev)
            seg[ok] = of[s]
            dn[ok] = trajectory_distance(codec.normalize(grp.params[ok].double()), codec.normalize(theta.double()), t, dev)[0]
            res["groups"][g] = {
                "median_raw": float(np.median(d[ok])), "median_norm": float(np.median(dn[ok])),
                "ratio_to_step": ratio(np.median(d[ok]), steps.mean()),
                "on_path_rate": share(d[ok] < on_path) if on_path is not None else None}
        arrays.update({f"{g}_traj_dist": d, f"{g}_traj_dist_norm": dn, f"{g}_traj_seg": seg, f"{g}_traj_lam": lam})
    return res, arrays


def memorization(groups: dict[str, Group], base: dict[str, Group], codec: Codec, y: np.ndarray,
                 sim: dict, zoo: dict, traj: np.ndarray, dev: str = "cpu") -> tuple[dict, dict]:
    """Nearest checkpoints, s_max, replica rates, Pareto dominance and trajectory distances for
    generated and baselines. Also fills sim["groups"], the per-group IoU statistics."""
    orig, arrays = groups["originals"], train_reference(groups["originals"], codec, y, dev)
    train = {space: arrays[f"train_nn_{space}"][orig.finite] for space in ("raw", "norm")}
    per_group, sim["groups"] = {}, {}
    for g, grp in {"generated": groups["generated"], **base}.items():
        nb = neighbours(grp, orig, codec, y, g, dev)
        arrays.update(nb)
        per_group[g] = group_memorization(g, grp, nb, train)
        sim["groups"][g] = group_similarity(grp, orig, y, per_group[g].get("smax_mean"), dev)
    dom, arrays["generated_dominated"] = pareto(groups["generated"], base, arrays)
    gm = per_group["generated"]
    mem = {"train_nn_raw": _dist_stats(train["raw"]), "train_nn_norm": _dist_stats(train["norm"]),
           "replica_threshold_raw": replica_threshold(train["raw"]),
           "replica_threshold_norm": replica_threshold(train["norm"]),
           "train_smax_one": share(arrays["train_smax"][orig.finite] == 1.0),
           **{k: gm.get(k) for k in ("replica_rate", "replica_rate_norm", "within_train_median",
                                     "median_ratio_raw", "median_ratio_norm")},
           **dom, "groups": per_group, "zoo": zoo}
    mem["trajectory"], a = trajectory_stats({**groups, **base}, codec, traj, dev)
    arrays.update(a)
    return mem, arrays
