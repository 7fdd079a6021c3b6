"""Analysis, the pipeline's last stage: are generated models new, or copies of checkpoints?

    run_analysis(run_dir, prep=None, report=lambda fraction, message: None) -> dict

reads originals/generated.safetensors, metrics.json and predictions.npz of a finished run,
builds the baselines (baselines.py), evaluates them with the batched Evaluator, and writes:

* ``baselines.safetensors``: one (n, D) float32 tensor of raw parameters per baseline group,
  metadata = the Codec (same as originals.safetensors) plus ``groups`` (JSON list) and ``seed``.
* ``predictions.npz``: gains one int64 (n, n_test) array of test predictions per baseline group.
* ``metrics.json``: ``groups`` gains one entry per baseline group, same structure as
  ``originals`` (``val_acc``, ``test_acc``, ``summary``, ``best_by_val``).
* ``analysis.json`` (deterministic: no timings; floats rounded to 6 significant digits;
  NaN written as null) and ``analysis.npz``. Both are documented key by key in
  docs/analysis-format.md. In short:

  analysis.json
    version, seed, groups[all, in order], baseline_groups[list], counts{group: {n, finite}}
    baselines{noise_sigmas, average16_size, n_per_group}
    similarity{oo, gg, og, og_max, groups{group: {within, to_originals, to_originals_max}}}
    memorization{train_nn_raw{...}, train_nn_norm{...}, replica_threshold_raw, replica_threshold_norm,
                 train_smax_one, replica_rate, replica_rate_norm, within_train_median,
                 median_ratio_raw, median_ratio_norm, dominated_share, dominated_by{baseline: share},
                 matched_by{baseline: share},
                 groups{group: {acc_mean, nn_raw_median, nn_norm_median, median_ratio_raw,
                                median_ratio_norm, replica_rate, replica_rate_norm,
                                within_train_median, smax_mean, smax_median, smax_one, agree_mean}}}
    ensembles{k, draws, tolerance, generated, originals, generated_std, originals_std,
              gain_generated, gain_originals, generated_gains_more, statement}
    initialization{kinds, starts, steps, optimizer, lr, batch_size, step, curves{kind: [...]},
                   final{kind}, auc{kind}, target, steps_to_target{kind}, fastest[list], statement}
    embeddings{params{space, methods, pca_dims, per_baseline_cap, points{group: n}, umap},
               latent{methods, pca_dims, points{group: n}}}
    verdict  (one plain-language paragraph)

  analysis.npz (every per-model array has one row per model of its group, in the order of
  predictions.npz / the .safetensors files; rows of non-finite models hold -1 / NaN)
    iou, agree            (K+N, K+N) over originals then generated
    iou_labels, iou_index (K+N,) group name and index within the group of each row
    train_nn_raw, train_nn_raw_idx, train_nn_norm, train_nn_norm_idx, train_smax, train_smax_idx
                          (K,) leave-one-out among originals
    {group}_nn_raw_idx, {group}_nn_raw_dist, {group}_nn_norm_idx, {group}_nn_norm_dist,
    {group}_smax, {group}_smax_idx, {group}_agree     for generated and every baseline group
    generated_dominated   (N,) bool, True when a baseline model Pareto-dominates it
    ens_k, ens_generated, ens_originals (+ _std)       ensemble curves
    init_step, init_generated, init_original, init_random   (starts, steps+1) val accuracy
    emb_params_pca, emb_params_tsne, emb_params_umap (if umap-learn is installed): (M, 2)
    emb_params_group, emb_params_index (M,)
    emb_latent_pca, emb_latent_tsne (L, 2), emb_latent_group, emb_latent_index (L,)

Groups: originals, generated, noise_0.001, noise_0.01, noise_0.05, noise_0.1, noise_0.15,
average (the soup, 1 model), average16, gaussian, interpolation. Fractions are in [0, 1].
Stage timings go to status.json (``analysis_timings``), never into analysis.json.
The metric functions (iou_matrix, agreement_matrix, error_sets, nearest, ...) are public,
so pages can compute views the files do not store.
"""
from __future__ import annotations

import copy
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits
from torch.func import functional_call, vmap

from . import runs
from .baselines import NOISE_SIGMAS, SUBSET, make_baselines
from .collect import minibatches
from .config import RunConfig
from .embed import PCA_DIMS, PendingMaps, pca, tsne   # sklearn imported here, so one_thread() also limits its BLAS
from .evaluate import Evaluator
from .params import Codec
from .pipeline import Prepared, group_metrics, prepare

VERSION = 1
ENSEMBLE_KS = (1, 2, 5, 10, 20, 50)
ENSEMBLE_DRAWS = 50
INIT_STARTS = 4          # fine-tuning runs per kind of start
INIT_STEPS = 60
EMBED_PER_BASELINE = 50  # points per baseline family in the embeddings keep t-SNE/UMAP fast
# seed offsets, so each random part has its own stream and adding one changes no other
SALT_BASELINES, SALT_ENSEMBLE, SALT_INIT, SALT_EMBED = 101, 102, 103, 104


# -----------------------------------------------------------------------------
# metrics on hand-checkable inputs (DESIGN.md definitions)

def error_sets(preds: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(n, B) bool: E(m) as a row, True where model m is wrong."""
    return np.asarray(preds) != np.asarray(y)[None]


def count_both(a: np.ndarray, b: np.ndarray, device: str = "cpu") -> np.ndarray:
    """(na, B), (nb, B) bool -> (na, nb) counts of columns where both are True, as one matmul on
    `device`. Exact: 0 and 1 survive float32/TF32/bf16 inputs, and float32 sums hold integers
    exactly below 2**24."""
    dt = torch.float32 if a.shape[1] < 2 ** 24 else torch.float64
    ta, tb = (torch.as_tensor(m).to(device, dt) for m in (a, b))
    return (ta @ tb.T).double().cpu().numpy()


def iou_matrix(ea: np.ndarray, eb: np.ndarray, device: str = "cpu") -> np.ndarray:
    """|E(a) & E(b)| / |E(a) | E(b)|, and 1 when both error sets are empty."""
    inter = count_both(ea, eb, device)
    union = ea.sum(1)[:, None] + eb.sum(1)[None] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union == 0, 1.0, inter / union)


def agreement_matrix(pa: np.ndarray, pb: np.ndarray, device: str = "cpu") -> np.ndarray:
    """A(a, b): fraction of examples where a and b predict the same label (one count per label)."""
    labels = np.union1d(np.unique(pa), np.unique(pb))
    return sum(count_both(pa == c, pb == c, device) for c in labels) / pa.shape[1]


def mean_offdiag(m: np.ndarray) -> float:
    n = len(m)
    return float((m.sum() - np.trace(m)) / (n * (n - 1))) if n > 1 else float("nan")


def _cdist(a: torch.Tensor, b: torch.Tensor, device: str) -> torch.Tensor:
    # the direct formula, not |a|^2 + |b|^2 - 2ab: tiny distances (noise 0.001) stay exact
    return torch.cdist(a.to(device, torch.float64), b.to(device, torch.float64),
                       compute_mode="donot_use_mm_for_euclid_dist")


def nearest(a: torch.Tensor, b: torch.Tensor, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """For each row of a: index of and L2 distance to the nearest row of b."""
    d, idx = _cdist(a, b, device).min(dim=1)
    return idx.cpu().numpy(), d.cpu().numpy()


def leave_one_out(b: torch.Tensor, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """For each row of b: its nearest other row (training -> training reference)."""
    d = _cdist(b, b, device)
    d.fill_diagonal_(float("inf"))
    d, idx = d.min(dim=1)
    return idx.cpu().numpy(), d.cpu().numpy()


def replica_threshold(train_d: np.ndarray, q: float = 5.0) -> float:
    return float(np.percentile(train_d, q))


def replica_rate(d: np.ndarray, train_d: np.ndarray, q: float = 5.0) -> tuple[float, float]:
    """Share of d strictly below the q-th percentile of the training LOO distances, and that threshold."""
    thr = replica_threshold(train_d, q)
    return share(d < thr), thr


def share(mask: np.ndarray) -> float:
    return float(np.mean(mask)) if len(mask) else float("nan")


def dominated(acc: np.ndarray, smax: np.ndarray, acc_b: np.ndarray, smax_b: np.ndarray,
              strict: bool = True) -> np.ndarray:
    """(n,) bool: some (acc_b, smax_b) has accuracy >= and s_max <=, with at least one strict
    when `strict` (Pareto dominance); with strict=False ties count too ("matched")."""
    geq = acc_b[None] >= acc[:, None]
    leq = smax_b[None] <= smax[:, None]
    better = (acc_b[None] > acc[:, None]) | (smax_b[None] < smax[:, None])
    return (geq & leq & (better if strict else True)).any(axis=1)


def ensemble_accuracy(logits: torch.Tensor, y: torch.Tensor, ks: list[int], draws: int,
                      gen: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over `draws` random k-subsets of the accuracy of the averaged logits."""
    n = len(logits)
    means, stds = [], []
    for k in ks:
        idx = torch.rand((draws, n), generator=gen).argsort(dim=1)[:, :k]      # k distinct models per draw
        acc = torch.stack([(logits[i].mean(dim=0).argmax(-1) == y).double().mean() for i in idx])
        means.append(acc.mean().item())
        stds.append(acc.std(unbiased=False).item())
    return np.array(means), np.array(stds)


# -----------------------------------------------------------------------------
# reading a run

@dataclass
class Group:
    """One group of models, rows aligned with its parameter file and predictions.npz."""
    params: torch.Tensor   # (n, D) raw parameters
    preds: np.ndarray      # (n, n_test) test predictions, -1 where not finite
    val: np.ndarray        # (n,) validation accuracy, NaN where not finite
    acc: np.ndarray        # (n,) test accuracy, NaN where not finite

    @property
    def finite(self) -> np.ndarray:
        return np.isfinite(self.acc)


def _accs(values: list) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


@dataclass
class RunInputs:
    prep: Prepared
    model: torch.nn.Sequential    # the base model, trained weights loaded
    codec: Codec
    metrics: dict                 # metrics.json
    preds: dict[str, np.ndarray]  # predictions.npz
    groups: dict[str, Group]      # originals, generated
    latents: dict[str, torch.Tensor]


def load_run(run_dir: Path, prep: Prepared | None) -> RunInputs:
    """Everything the analysis reads from a run directory (prep is rebuilt from config.json)."""
    if prep is None:
        prep = prepare(RunConfig.from_dict(runs.read_json(run_dir / "config.json")))
    model = copy.deepcopy(prep.model)   # prep holds the untrained model; the weights are on disk
    model.load_state_dict(runs.read_safetensors(run_dir / "base_model.safetensors")[0])
    metrics = runs.read_json(run_dir / "metrics.json")
    preds = runs.read_npz(run_dir / "predictions.npz")
    groups, latents = {}, {}
    for name in ("originals", "generated"):
        tensors, meta = runs.read_safetensors(run_dir / f"{name}.safetensors")
        gm = metrics["groups"][name]
        groups[name] = Group(tensors["params"], preds[name], _accs(gm["val_acc"]), _accs(gm["test_acc"]))
        latents[name] = tensors["latents"]
    return RunInputs(prep, model, Codec.from_metadata(meta), metrics, preds, groups, latents)


# -----------------------------------------------------------------------------
# stages

def evaluate_baselines(ev: Evaluator, prep: Prepared, fams: dict[str, torch.Tensor],
                       feats: dict[str, torch.Tensor]) -> dict[str, Group]:
    """Every baseline family (baselines.make_baselines) in one batched evaluation per split;
    `feats` holds each split's shared-prefix activations (Evaluator.features)."""
    allp = torch.cat(list(fams.values()))
    data = prep.data
    val = ev.evaluate(allp, feats["val"], data.y_val, features=True)
    test = ev.evaluate(allp, feats["test"], data.y_test, features=True)
    out, i = {}, 0
    for name, p in fams.items():
        s = slice(i, i + len(p))
        out[name] = Group(p, test.preds[s], val.acc[s], test.acc[s])
        i += len(p)
    return out


def write_baselines(run_dir: Path, base: dict[str, Group], codec: Codec, metrics: dict,
                    preds: dict, seed: int) -> None:
    """baselines.safetensors, plus the baseline rows of predictions.npz and metrics.json.
    Keys are overwritten, so running the analysis again never duplicates a group."""
    meta = {**codec.to_metadata(), "groups": json.dumps(list(base)), "seed": str(seed)}
    runs.write_safetensors(run_dir / "baselines.safetensors", {g: b.params for g, b in base.items()}, meta)
    runs.write_npz(run_dir / "predictions.npz", {**preds, **{g: b.preds for g, b in base.items()}})
    for g, b in base.items():
        metrics["groups"][g] = group_metrics(b.val, b.acc)
    runs.write_json(run_dir / "metrics.json", metrics)


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


def group_memorization(name: str, grp: Group, nb: dict, train: dict[str, np.ndarray]) -> dict:
    """Summary of one group against the training LOO distances `train` {"raw": ..., "norm": ...}."""
    ok = grp.finite
    if not ok.any():
        return {"acc_mean": None}
    d = {space: nb[f"{name}_nn_{space}_dist"][ok] for space in ("raw", "norm")}
    smax = nb[f"{name}_smax"][ok]
    return {
        "acc_mean": float(grp.acc[ok].mean()),
        "nn_raw_median": float(np.median(d["raw"])), "nn_norm_median": float(np.median(d["norm"])),
        "median_ratio_raw": float(np.median(d["raw"]) / np.median(train["raw"])),
        "median_ratio_norm": float(np.median(d["norm"]) / np.median(train["norm"])),
        "replica_rate": replica_rate(d["raw"], train["raw"])[0],
        "replica_rate_norm": replica_rate(d["norm"], train["norm"])[0],
        "within_train_median": share(d["raw"] < np.median(train["raw"])),
        "smax_mean": float(smax.mean()), "smax_median": float(np.median(smax)),
        "smax_one": share(smax == 1.0),   # makes exactly the errors of some original
        "agree_mean": float(nb[f"{name}_agree"][ok].mean()),
    }


def pareto(gen: Group, base: dict[str, Group], nb: dict) -> tuple[dict, np.ndarray]:
    """Which generated models some baseline model beats on (test accuracy up, s_max down)."""
    ok = gen.finite
    acc, smax = gen.acc[ok], nb["generated_smax"][ok]
    flags, by, matched = np.zeros(len(gen.acc), bool), {}, {}
    for g, b in base.items():
        acc_b, smax_b = b.acc[b.finite], nb[f"{g}_smax"][b.finite]
        d = dominated(acc, smax, acc_b, smax_b)
        by[g], matched[g] = share(d), share(dominated(acc, smax, acc_b, smax_b, strict=False))
        flags[ok] |= d
    return {"dominated_share": share(flags[ok]), "dominated_by": by, "matched_by": matched}, flags


def memorization(groups: dict[str, Group], base: dict[str, Group], codec: Codec, y: np.ndarray,
                 sim: dict, dev: str = "cpu") -> tuple[dict, dict]:
    """Nearest checkpoints, s_max, replica rates and Pareto dominance for generated and baselines.
    Also fills sim["groups"], the per-group IoU statistics."""
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
           **dom, "groups": per_group}
    return mem, arrays


def ensembles(ev: Evaluator, groups: dict[str, Group], prep: Prepared, seed: int,
              h_test: torch.Tensor, known: dict[str, torch.Tensor] | None = None) -> tuple[dict, dict]:
    """Logit-averaged ensembles of k generated vs k originals; the same ks for both.
    h_test: the test split's shared-prefix activations (Evaluator.features); known: the test
    logits of each group's finite rows, where the caller has them."""
    y = prep.data.y_test.to(ev.device)
    known = known or {}
    logits = {g: known[g] if known.get(g) is not None else   # stays on the device
              ev.logits(groups[g].params[groups[g].finite], h_test, features=True)
              for g in ("generated", "originals")}
    n = min(len(v) for v in logits.values())
    ks = sorted({min(k, n) for k in ENSEMBLE_KS}) if n else []
    res = {"k": ks, "draws": ENSEMBLE_DRAWS, "tolerance": 1 / len(y)}   # one test example
    arrays = {"ens_k": np.array(ks)}
    for g, lg in logits.items():
        m, s = ensemble_accuracy(lg, y, ks, ENSEMBLE_DRAWS, torch.Generator().manual_seed(seed))
        res[g], res[f"{g}_std"] = m.tolist(), s.tolist()
        arrays[f"ens_{g}"], arrays[f"ens_{g}_std"] = m, s
    if ks:
        res["gain_generated"] = res["generated"][-1] - res["generated"][0]
        res["gain_originals"] = res["originals"][-1] - res["originals"][0]
        res["generated_gains_more"] = bool(res["gain_generated"] > res["gain_originals"])
        res["statement"] = ensemble_statement(res)
    return res, arrays


def ensemble_statement(r: dict) -> str:
    i = r["k"].index(10) if 10 in r["k"] else len(r["k"]) - 1
    gg, go = r["gain_generated"], r["gain_originals"]
    text = (f"Averaging the logits of {r['k'][i]} generated models gives {100 * r['generated'][i]:.1f} % test "
            f"accuracy against {100 * r['originals'][i]:.1f} % for {r['k'][i]} originals; from 1 to {r['k'][-1]} "
            f"models, generated ensembles gain {100 * gg:+.1f} points and original ones {100 * go:+.1f}")
    if abs(gg - go) < r["tolerance"]:
        return text + ", less than one test example apart: no evidence of extra diversity."
    if gg > go and r["generated"][-1] > r["originals"][-1]:
        return text + ". Generated ensembles gain more and end higher: evidence of useful diversity."
    if gg > go:
        return text + (". Generated ensembles gain more but end no higher than the originals' ensembles: the gain "
                       "repairs weaker single models rather than showing useful diversity.")
    return text + ". Original ensembles gain more: no evidence that generated models are more diverse."


# -----------------------------------------------------------------------------
# use case: generated parameters as a fine-tuning start

def fresh_init(model: torch.nn.Module, codec: Codec, seed: int) -> torch.Tensor:
    """The selected layers with their own default initialization (reset_parameters), seeded."""
    net = copy.deepcopy(model)
    owners = {n.rsplit(".", 1)[0] for n in codec.names}
    with torch.random.fork_rng(devices=[]):   # reset_parameters draws from the global RNG
        torch.manual_seed(seed)
        for name, m in net.named_modules():
            if name in owners and hasattr(m, "reset_parameters"):
                m.reset_parameters()
    return codec.flatten({k: v.cpu() for k, v in net.state_dict().items()})


def pick(grp: Group, n: int, gen: torch.Generator) -> torch.Tensor:
    """n distinct random finite rows of a group."""
    ok = np.flatnonzero(grp.finite)
    return grp.params[ok[torch.randperm(len(ok), generator=gen)[:n].numpy()]]


def finetune(ev: Evaluator, starts: torch.Tensor, prep: Prepared, steps: int, gen: torch.Generator,
             h_val: torch.Tensor) -> np.ndarray:
    """Fine-tune all starts at once (vmap; SGD state is per coordinate, so the runs stay
    independent) on the same minibatches. Returns (starts, steps+1) validation accuracy."""
    cfg, data, dev = prep.cfg, prep.data, ev.device
    for p in ev.model.parameters():
        p.requires_grad_(False)   # only the stacked vectors learn
    P = starts.clone().to(dev).requires_grad_(True)
    opt = torch.optim.SGD([P], lr=cfg.collect_lr, momentum=0.9)   # the collection phase's optimizer
    call = vmap(lambda p, h: functional_call(ev.suffix, ev.codec.unflatten(p), (h,)), in_dims=(0, None))
    x, y = data.x_train.to(dev), data.y_train.to(dev)       # once: no host-device copies per step
    batches = minibatches(len(y), min(cfg.batch_size, len(y)), gen, dev)

    def val_acc():   # the prefix is frozen, so h_val stands; a diverged start counts as wrong everywhere
        return np.nan_to_num(ev.evaluate(P.detach(), h_val, data.y_val, features=True).acc, nan=0.0)

    curve = [val_acc()]
    for _ in range(steps):
        idx = next(batches)
        with torch.no_grad():
            h = ev.prefix(x[idx])
        logits = call(P, h)                                                       # (S, b, classes)
        loss = F.cross_entropy(logits.flatten(0, 1), y[idx].repeat(len(P))) * len(P)   # sum of per-run means
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        curve.append(val_acc())
    return np.stack(curve, axis=1)


def initialization(ev: Evaluator, model: torch.nn.Module, groups: dict[str, Group], prep: Prepared,
                   seed: int, h_val: torch.Tensor) -> tuple[dict, dict]:
    """Generated vs original vs fresh starts: same data, optimizer and steps for all.
    h_val: the validation split's shared-prefix activations (Evaluator.features)."""
    gen = torch.Generator().manual_seed(seed)
    starts = {"generated": pick(groups["generated"], INIT_STARTS, gen),
              "original": pick(groups["originals"], INIT_STARTS, gen),
              "random": torch.stack([fresh_init(model, ev.codec, seed + i) for i in range(INIT_STARTS)])}
    starts = {k: v for k, v in starts.items() if len(v)}
    acc = finetune(ev, torch.cat(list(starts.values())), prep, INIT_STEPS, gen, h_val)
    curves, arrays, i = {}, {"init_step": np.arange(INIT_STEPS + 1)}, 0
    for k, v in starts.items():
        arrays[f"init_{k}"] = acc[i:i + len(v)]
        curves[k] = acc[i:i + len(v)].mean(axis=0)
        i += len(v)
    # target: the best final accuracy of any kind, less one validation example
    target = max(c[-1] for c in curves.values()) - 1 / len(prep.data.y_val)
    reach = {k: first_reach(c, target) for k, c in curves.items()}
    best = min(s for s in reach.values() if s is not None)   # the kind with the best final always reaches
    res = {"kinds": list(starts), "starts": {k: len(v) for k, v in starts.items()}, "steps": INIT_STEPS,
           "optimizer": "SGD momentum 0.9 (the collection phase's)", "lr": prep.cfg.collect_lr,
           "batch_size": prep.cfg.batch_size, "step": list(range(INIT_STEPS + 1)),
           "curves": {k: c.tolist() for k, c in curves.items()},
           "final": {k: float(c[-1]) for k, c in curves.items()},
           "auc": {k: float(c.mean()) for k, c in curves.items()},
           "target": float(target), "steps_to_target": reach,
           "fastest": [k for k, s in reach.items() if s == best]}
    res["statement"] = init_statement(res)
    return res, arrays


def first_reach(curve: np.ndarray, target: float) -> int | None:
    hit = np.flatnonzero(curve >= target)
    return int(hit[0]) if len(hit) else None


def init_statement(r: dict) -> str:
    reach = ", ".join(f"{k} {'never' if s is None else s}" for k, s in r["steps_to_target"].items())
    final = ", ".join(f"{k} {100 * v:.1f} %" for k, v in r["final"].items())
    who = ("all starts equally" if len(r["fastest"]) == len(r["kinds"])
           else " and ".join(r["fastest"]) + (" starts" if len(r["fastest"]) > 1 else " start"))
    return (f"Fine-tuning the generated layers from {', '.join(r['kinds'])} starts ({r['steps']} SGD steps, same "
            f"data for all): fastest to come within one validation example of the best final accuracy "
            f"({100 * r['target']:.1f} %) is {who} (steps: {reach}; final validation accuracy: {final}).")


# -----------------------------------------------------------------------------
# embeddings (PCA, t-SNE, UMAP): seeded, on PCA-reduced inputs

def embedding_points(groups: dict[str, torch.Tensor], base: dict[str, torch.Tensor], codec: Codec, seed: int):
    """Normalized parameters of the finite originals, generated and a seeded subsample of each
    baseline family. Parameters only, so the maps can start before the baselines are evaluated."""
    gen = torch.Generator().manual_seed(seed)
    xs, names, index = [], [], []
    for g, params in {**groups, **base}.items():
        idx = np.flatnonzero(torch.isfinite(params).all(dim=1).numpy())
        if g in base and len(idx) > EMBED_PER_BASELINE:
            idx = np.sort(idx[torch.randperm(len(idx), generator=gen)[:EMBED_PER_BASELINE].numpy()])
        xs.append(codec.normalize(params[idx].double()).numpy())
        names += [g] * len(idx)
        index.append(idx)
    return np.concatenate(xs), np.array(names), np.concatenate(index)


def param_embeddings(groups, base, codec, seed) -> tuple[dict, dict, PendingMaps]:
    """PCA, t-SNE and UMAP of normalized parameters: what was embedded now, and the maps
    started in the helper process (embed.py), to be collected with finish_param_embeddings."""
    x, names, index = embedding_points(groups, base, codec, seed)
    info = {"space": "normalized", "methods": ["pca", "tsne"], "pca_dims": min(PCA_DIMS, *x.shape),
            "per_baseline_cap": EMBED_PER_BASELINE,
            "points": {g: int((names == g).sum()) for g in dict.fromkeys(names)}}
    return info, {"emb_params_group": names, "emb_params_index": index}, PendingMaps(x, seed)


def finish_param_embeddings(info: dict, arrays: dict, pending: PendingMaps, wait) -> tuple[dict, dict, dict]:
    maps, info["umap"], timings = pending.result(wait)
    arrays.update({f"emb_params_{m}": v for m, v in maps.items()})
    if "umap" in maps:
        info["methods"].append("umap")
    return info, arrays, timings


def latent_embeddings(groups, latents, seed) -> tuple[dict, dict]:
    ok = {g: groups[g].finite for g in ("originals", "generated")}
    lat = np.concatenate([latents[g][ok[g]].double().numpy() for g in ok])
    arrays = {"emb_latent_group": np.concatenate([[g] * int(ok[g].sum()) for g in ok]).astype(str),
              "emb_latent_index": np.concatenate([np.flatnonzero(ok[g]) for g in ok]),
              "emb_latent_pca": pca(lat, 2, seed).astype(np.float32),
              "emb_latent_tsne": tsne(lat, seed).astype(np.float32)}
    info = {"methods": ["pca", "tsne"], "pca_dims": min(PCA_DIMS, *lat.shape),
            "points": {g: int(v.sum()) for g, v in ok.items()}}
    return info, arrays


# -----------------------------------------------------------------------------
# verdict and output

def pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.0f} %"


def num(v: float | None, fmt: str = ".2f") -> str:
    return "n/a" if v is None else format(v, fmt)


def verdict(sim: dict, mem: dict, ens: dict) -> str:
    """One plain-language paragraph from the (cleaned) numbers; None means not computable."""
    g = mem["groups"]["generated"]
    if g.get("acc_mean") is None:
        return "No generated model has finite parameters, so there is nothing to compare."
    parts = [
        f"{pct(g['replica_rate'])} of generated models are replicas (closer to a checkpoint than the 5th percentile "
        f"of the checkpoints' own nearest-neighbour distances) and {pct(g['within_train_median'])} are within the "
        f"training set's own median neighbour distance of a checkpoint; their median nearest-checkpoint distance is "
        f"{num(g['median_ratio_raw'])}x the checkpoints' own.",
        f"Their errors overlap the most similar checkpoint's at IoU {num(sim['og_max'])} on average "
        f"(checkpoints among themselves {num(sim['oo'])}, generated among themselves {num(sim['gg'])}), and "
        f"{pct(g['smax_one'])} make exactly the test errors of some checkpoint (checkpoints: "
        f"{pct(mem['train_smax_one'])}).",
    ]
    matched = {k: v for k, v in mem["matched_by"].items() if v}
    if matched:
        best = max(matched, key=matched.get)
        parts.append(f"{pct(mem['dominated_share'])} of generated models are Pareto-dominated by a baseline model "
                     f"(at least as accurate and at least as novel, one of them strictly); the {best} baseline "
                     f"alone is as accurate or better at the same or better novelty for {pct(matched[best])} of "
                     f"generated models.")
    else:
        parts.append("No baseline model reaches a generated model's accuracy at the same novelty.")
    if "statement" in ens:
        parts.append(ens["statement"])
    if (g["replica_rate"] or 0) >= 0.5:
        parts.append("In plain words: most generated models are near-copies of training checkpoints.")
    elif (g["within_train_median"] or 0) >= 0.5:
        parts.append("In plain words: generated models sit closer to the checkpoints than the checkpoints sit to "
                     "each other; they look more like copies than new solutions.")
    elif (g["smax_one"] or 0) >= 0.5:
        parts.append("In plain words: by distance, generated models are not near-copies of the checkpoints, but "
                     "most of them make exactly the same mistakes as one.")
    else:
        parts.append("In plain words: by distance, generated models are not near-copies of the checkpoints.")
    if (mem["dominated_share"] or 0) >= 0.5:
        parts.append("A cheap baseline does at least as well for most of them, "
                     "so the diffusion model adds little here.")
    return " ".join(parts)


def clean(obj):
    """JSON-safe and stable: numpy to Python, NaN to None, floats to 6 significant digits."""
    return runs.json_safe(obj, digits=6)


@contextmanager
def one_thread():
    """Run torch, BLAS and OpenMP (t-SNE) on one thread, then restore. The work here is many
    small ops, so a second thread gains little; on a busy 2-core machine two OpenMP threads run
    several times slower than one, and t-SNE's result depends on the thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(before)


def run_analysis(run_dir: Path, prep: Prepared | None = None, report=lambda fraction, message: None,
                 test_logits: dict[str, torch.Tensor] | None = None) -> dict:
    """The analysis stage; returns analysis.json's content. `report` may raise Cancelled.
    test_logits: the evaluate stage's test logits of the finite originals and generated rows,
    when it runs in the same process; without them they are recomputed from the run directory."""
    with one_thread():
        return analyze(Path(run_dir), prep, report, test_logits)


def analyze(run_dir: Path, prep: Prepared | None, report, test_logits: dict | None = None) -> dict:
    timings = {}
    t_all = t_last = time.perf_counter()
    cpu0 = time.process_time()

    def lap(name):   # stage timings go to status.json only: analysis.json must be reproducible
        nonlocal t_last
        now = time.perf_counter()
        timings[name], t_last = round(now - t_last, 3), now

    report(0.0, "loading the run")
    run = load_run(run_dir, prep)
    prep, codec, groups, seed, y = run.prep, run.codec, run.groups, run.prep.cfg.seed, run.preds["y_test"]
    ev = Evaluator(run.model, codec, prep.device, chunk=prep.cfg.eval_chunk)
    # the prefix before the first generated parameter never changes: its activations once per split
    feats = {split: ev.features(getattr(prep.data, f"x_{split}")) for split in ("val", "test")}
    lap("load")

    report(0.05, "building and evaluating baselines")
    fams = make_baselines(groups["originals"].params, codec, prep.cfg.n_generate, seed + SALT_BASELINES)
    # the parameter maps (t-SNE, UMAP) run in the helper process, beside everything below
    maps_started = param_embeddings({g: grp.params for g, grp in groups.items()}, fams, codec, seed + SALT_EMBED)
    base = evaluate_baselines(ev, prep, fams, feats)
    write_baselines(run_dir, base, codec, run.metrics, run.preds, seed + SALT_BASELINES)
    lap("baselines")

    report(0.25, "similarity and memorization")
    sim, arrays = similarity(groups, y, ev.device)       # the count matrices run on the GPU when there is one
    mem, a = memorization(groups, base, codec, y, sim, ev.device)
    arrays.update(a)
    lap("memorization")

    report(0.4, "ensembles")
    ens, a = ensembles(ev, groups, prep, seed + SALT_ENSEMBLE, feats["test"], test_logits)
    arrays.update(a)
    lap("ensembles")

    report(0.5, "fine-tuning from generated, original and random starts")
    init, a = initialization(ev, run.model, groups, prep, seed + SALT_INIT, feats["val"])
    arrays.update(a)
    lap("initialization")

    report(0.6, "latent embeddings")
    emb = {"params": None}
    emb["latent"], a = latent_embeddings(groups, run.latents, seed + SALT_EMBED)
    arrays.update(a)
    lap("latent")

    report(0.7, "parameter maps (t-SNE, UMAP)")
    emb["params"], a, timings["maps"] = finish_param_embeddings(
        *maps_started, wait=lambda: report(0.8, "parameter maps (t-SNE, UMAP)"))
    arrays.update(a)
    lap("maps_wait")

    counts = {g: {"n": len(grp.acc), "finite": int(grp.finite.sum())} for g, grp in {**groups, **base}.items()}
    result = clean({
        "version": VERSION, "seed": seed,
        "groups": list({**groups, **base}), "baseline_groups": list(base),
        "counts": counts,
        "baselines": {"noise_sigmas": list(NOISE_SIGMAS), "average16_size": min(SUBSET, len(groups["originals"].acc)),
                      "n_per_group": {g: len(b.acc) for g, b in base.items()}},
        "similarity": sim, "memorization": mem, "ensembles": ens, "initialization": init, "embeddings": emb,
    })
    result["verdict"] = verdict(result["similarity"], result["memorization"], result["ensembles"])
    runs.write_npz(run_dir / "analysis.npz", arrays)   # npz first: whoever sees the new json finds its npz
    runs.write_json(run_dir / "analysis.json", result)
    timings["total"] = round(time.perf_counter() - t_all, 3)
    timings["cpu_total"] = round(time.process_time() - cpu0, 3)   # CPU seconds: less noisy on a shared machine
    runs.update_status(run_dir, analysis_timings=timings)
    report(1.0, "analysis done")
    return result
