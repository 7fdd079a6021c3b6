"""The metric definitions of DESIGN.md, on raw inputs: predictions, labels, parameter vectors.

Accuracies are integer correct counts (exact: ties stay ties), never rounded report numbers.
Every function here is small enough to check by hand; the analysis and the benchmarks share them."""
from __future__ import annotations

import math

import numpy as np
import torch

N_BOOT = 1000   # bootstrap resamples over test examples (DESIGN.md: intervals)


# -----------------------------------------------------------------------------
# accuracy from predictions

def correct(preds: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(n, B) bool: model m is right on example i. Rows of -1 (non-finite model) are all False."""
    return np.asarray(preds) == np.asarray(y)[None]


def finite_rows(preds: np.ndarray) -> np.ndarray:
    """A non-finite parameter vector keeps its row with predictions -1 (evaluate.py)."""
    preds = np.asarray(preds)
    return (preds >= 0).all(axis=1) if preds.shape[1] else np.ones(len(preds), bool)


def correct_counts(preds: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(n,) int64 correct counts; -1 for a non-finite model."""
    c = correct(preds, y).sum(axis=1).astype(np.int64)
    return np.where(finite_rows(preds), c, -1)


def accuracy(preds: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(n,) float accuracy (count / B), NaN for a non-finite model."""
    c = correct_counts(preds, y)
    return np.where(c >= 0, c / max(len(y), 1), np.nan)


def summarize(acc: np.ndarray) -> dict:
    a = np.asarray(acc, float)
    a = a[np.isfinite(a)]
    if len(a) == 0:
        return {"n": 0}
    return {"n": int(len(a)), "max": float(a.max()), "mean": float(a.mean()), "median": float(np.median(a)),
            "min": float(a.min()), "std": float(a.std())}


def best_by_val(val_counts: np.ndarray) -> int:
    """The model chosen on validation: most correct, the first index on a tie. -1 if none is finite."""
    val_counts = np.asarray(val_counts)
    return int(np.argmax(val_counts)) if (val_counts >= 0).any() else -1


def group_metrics(val_preds: np.ndarray, y_val: np.ndarray, test_preds: np.ndarray, y_test: np.ndarray) -> dict:
    """metrics.json's entry for one group, from predictions alone. 'best_by_val' is chosen on
    validation and reported on test; 'summary.max' is the maximum test accuracy, not a choice."""
    vc, tc = correct_counts(val_preds, y_val), correct_counts(test_preds, y_test)
    val, test = accuracy(val_preds, y_val), accuracy(test_preds, y_test)
    best = best_by_val(vc)
    return {
        "val_correct": vc.tolist(), "test_correct": tc.tolist(),
        "val_acc": [None if c < 0 else float(v) for c, v in zip(vc, val)],
        "test_acc": [None if c < 0 else float(v) for c, v in zip(tc, test)],
        "summary": summarize(test),
        "best_by_val": {"index": best, "val_acc": float(val[best]) if best >= 0 else None,
                        "test_acc": float(test[best]) if best >= 0 else None},
    }


# -----------------------------------------------------------------------------
# error sets, IoU, agreement

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
    """|E(a) & E(b)| / |E(a) | E(b)|, and 1 when both error sets are empty. Integer counts, one
    division: equal fractions give equal floats, so s_max ties stay ties."""
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


def share(mask: np.ndarray) -> float:
    return float(np.mean(mask)) if len(mask) else float("nan")


def dominated(correct_g: np.ndarray, smax: np.ndarray, correct_b: np.ndarray, smax_b: np.ndarray,
              strict: bool = True) -> np.ndarray:
    """(n,) bool: some baseline model has accuracy >= and s_max <=, with at least one strict when
    `strict` (Pareto dominance); with strict=False ties count too ("matched"). Pass integer correct
    counts on the same test split, so equal accuracies compare equal."""
    geq = correct_b[None] >= correct_g[:, None]
    leq = smax_b[None] <= smax[:, None]
    better = (correct_b[None] > correct_g[:, None]) | (smax_b[None] < smax[:, None])
    return (geq & leq & (better if strict else True)).any(axis=1)


# -----------------------------------------------------------------------------
# distances in parameter space

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


def segments(traj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) row indices of consecutive checkpoints of the same trajectory."""
    traj = np.asarray(traj)
    i = np.flatnonzero(traj[:-1] == traj[1:])
    return i, i + 1


def segment_distance(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                     device: str = "cpu") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each row of p: min over segments (a_j, b_j) of min over lam in [0, 1] of
    |p - (a_j + lam (b_j - a_j))|. Returns (distance, segment j, lam). Closed form: lam* =
    <p - a, delta> / |delta|^2 clipped to [0, 1], in float64. The segment is picked with
    matmuls (|p-a|^2 - 2 lam <p-a, delta> + lam^2 |delta|^2); the distance to the picked one
    is then recomputed directly, so tiny distances stay exact."""
    p, a, b = (t.to(device, torch.float64) for t in (p, a, b))
    delta = b - a
    dd = (delta * delta).sum(1)                                            # (S,)
    pa2 = _cdist(p, a, device) ** 2                                        # (n, S), direct formula
    proj = p @ delta.T - (a * delta).sum(1)[None]                          # <p - a, delta>
    lam = torch.where(dd > 0, proj / dd.clamp(min=1e-300), torch.zeros_like(proj)).clamp(0, 1)
    j = (pa2 - 2 * lam * proj + lam ** 2 * dd).argmin(dim=1)
    lam_j = lam.gather(1, j[:, None])[:, 0]
    d = (p - a[j] - lam_j[:, None] * delta[j]).norm(dim=1)
    return d.cpu().numpy(), j.cpu().numpy(), lam_j.cpu().numpy()


def trajectory_distance(p: torch.Tensor, theta: torch.Tensor, traj: np.ndarray,
                        device: str = "cpu") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """d_traj (DESIGN.md): distance of each row of p to the nearest segment between consecutive
    checkpoints of one trajectory. (distance, segment start row, lam); NaN when no segment exists."""
    i, j = segments(traj)
    if len(i) == 0:
        n = len(p)
        return np.full(n, np.nan), np.full(n, -1, np.int64), np.full(n, np.nan)
    d, s, lam = segment_distance(p, theta[i], theta[j], device)
    return d, i[s], lam


def chord_reference(theta: torch.Tensor, traj: np.ndarray, device: str = "cpu") -> np.ndarray:
    """The path's own wiggle, the leave-one-out reference for d_traj: for each interior checkpoint
    of a trajectory, its distance to the chord between its two neighbours. A generated model no
    farther from the path than this is on the path, however short the steps are."""
    traj = np.asarray(traj)
    mid = np.flatnonzero((traj[1:-1] == traj[:-2]) & (traj[1:-1] == traj[2:])) + 1
    if len(mid) == 0:
        return np.zeros(0)
    out = [segment_distance(theta[m:m + 1], theta[m - 1:m], theta[m + 1:m + 2], device)[0][0] for m in mid]
    return np.array(out)


def step_lengths(theta: torch.Tensor, traj: np.ndarray) -> np.ndarray:
    i, j = segments(traj)
    return (theta[j].double() - theta[i].double()).norm(dim=1).numpy()


# -----------------------------------------------------------------------------
# uncertainty: bootstrap over test examples (DESIGN.md: intervals)

def bootstrap_weights(n_examples: int, seed: int, resamples: int = N_BOOT) -> np.ndarray:
    """(R, B) how often each example is drawn in each resample: a resampled accuracy of a model is
    its correct-row @ w / B, so every statistic of every model shares the same resamples."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_examples, size=(resamples, n_examples))
    w = np.zeros((resamples, n_examples), np.float64)
    np.add.at(w, (np.arange(resamples)[:, None], idx), 1.0)
    return w


def boot_accuracy(corr: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(n, B) bool correct rows -> (n, R) resampled accuracies."""
    return np.asarray(corr, np.float64) @ w.T / w.shape[1]


def difference(point: float, boot: np.ndarray, n_examples: int) -> dict:
    """A compared difference with its 95 % bootstrap interval and its resolution (one example).
    'differs' is False whenever the interval contains 0: then it is no difference, whatever its sign."""
    lo, hi = (float(v) for v in np.percentile(boot, [2.5, 97.5]))
    return {"diff": float(point), "lo": lo, "hi": hi, "resolution": 1.0 / n_examples,
            "differs": bool(lo > 0 or hi < 0)}


def median_difference(corr_a: np.ndarray, corr_b: np.ndarray, seed: int) -> dict:
    """median accuracy of group a minus that of group b, rows = finite models, same test split."""
    n = corr_a.shape[1]
    w = bootstrap_weights(n, seed)
    boot = np.median(boot_accuracy(corr_a, w), axis=0) - np.median(boot_accuracy(corr_b, w), axis=0)
    return difference(np.median(corr_a.mean(1)) - np.median(corr_b.mean(1)), boot, n)


# -----------------------------------------------------------------------------
# the median over a few tasks (transfer): order statistics, not a bootstrap

def median_ci(values: np.ndarray) -> dict:
    """Median over held-out tasks with its distribution-free 95 % interval: the order statistics
    (x_(j), x_(n+1-j)) with the largest j whose binomial coverage is still >= 95 %. Tasks are few (16 by
    default), where a bootstrap of the median is too narrow: with 4 tasks it gave [min, max] and called it
    95 %, when [min, max] of 4 covers the median 87.5 % of the time. Fewer than 6 tasks reach no 95 %
    interval: then lo, hi are the range and `level` (the interval's coverage) says how sure it is."""
    v = np.sort(np.asarray(values, float))
    n = len(v)
    below = np.cumsum([math.comb(n, i) for i in range(n + 1)]) / 2.0 ** n     # P(Bin(n, 1/2) <= i)
    j = max([i + 1 for i in range(n // 2) if below[i] <= 0.025], default=1)   # 1-based order statistic
    level = max(0.0, 1 - 2 * below[j - 1])
    return {"median": float(np.median(v)), "lo": float(v[j - 1]), "hi": float(v[n - j]), "mean": float(v.mean()),
            "n": n, "level": float(level)}


def paired(a: np.ndarray, b: np.ndarray) -> dict:
    """Median over tasks of a - b (per-task differences) with its interval; a difference only if a 95 %
    interval exists and excludes 0 (one task, or five, can show none however large)."""
    d = median_ci(np.asarray(a, float) - np.asarray(b, float))
    return {**d, "differs": bool(d["level"] >= 0.95 and (d["lo"] > 0 or d["hi"] < 0))}
