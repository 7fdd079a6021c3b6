"""Is this run's setup sane? A reference classifier on the same splits, and plain one-line
warnings when the base model or the checkpoint zoo cannot support any conclusion.

Every check compares integer correct counts (exact), never rounded percentages."""
from __future__ import annotations

import numpy as np
import torch

from .data import Splits

REF_MAX_VALUES = 20_000_000   # train rows x features the reference fits on (a seeded row sample beyond it):
                              # ~15-60 s of lbfgs on one thread at worst (CIFAR: 6,510 of 42,500 rows)
REF_MAX_ITER = 1000
BASE_GAP_PP = 3          # warn when the base model is more than this many points below the reference
CHANCE_GAP_PP = 5        # warn when the originals' median is within this many points of chance


def _flat(x) -> np.ndarray:
    return x.reshape(len(x), -1).double().numpy()


def reference_accuracy(data: Splits, seed: int = 0) -> dict:
    """scikit-learn LogisticRegression (lbfgs, C=1) on the flattened features, each standardized
    with the train split's mean and std; fitted on train, reported on val and test. Seeded and
    single-threaded, so the same splits and seed give the same numbers."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    n_train, features = len(data.y_train), int(np.prod(data.x_train.shape[1:]))
    rows = max(1000, REF_MAX_VALUES // max(1, features))
    keep, note = slice(None), ""
    if n_train > rows:   # sample before flattening: a float64 copy of all of CIFAR's train split is 1 GB
        keep = torch.from_numpy(np.sort(np.random.default_rng(seed).permutation(n_train)[:rows]))
        note = f", fitted on a seeded sample of {rows} of {n_train} train rows"
    x_tr, y_tr = _flat(data.x_train[keep]), data.y_train[keep].numpy()
    with threadpool_limits(1):
        scaler = StandardScaler().fit(x_tr)
        clf = LogisticRegression(max_iter=REF_MAX_ITER, random_state=seed)
        clf.fit(scaler.transform(x_tr), y_tr)
        out = {}
        for split in ("val", "test"):
            y = getattr(data, f"y_{split}").numpy()
            pred = clf.predict(scaler.transform(_flat(getattr(data, f"x_{split}"))))
            c = int((pred == y).sum())
            out[split] = (c, len(y))
    return {"method": f"logistic regression (scikit-learn, lbfgs, C=1, max_iter {REF_MAX_ITER}) on flattened "
                      f"train-standardized features{note}",
            "val_acc": out["val"][0] / out["val"][1], "test_acc": out["test"][0] / out["test"][1],
            "val_correct": out["val"][0], "test_correct": out["test"][0],
            "n_val": out["val"][1], "n_test": out["test"][1], "iterations": int(np.max(clf.n_iter_))}


def chance_correct(y_test: np.ndarray) -> int:
    """Correct count of always predicting the test split's most frequent class (our 'chance')."""
    return int(np.bincount(np.asarray(y_test)).max())


def run_warnings(y_test: np.ndarray, base_preds: np.ndarray, originals_preds: np.ndarray,
                 reference: dict | None = None) -> list[str]:
    """Plain one-line warnings from raw test predictions: base_preds (B,) or (1, B),
    originals_preds (K, B) with -1 rows for non-finite models, reference from reference_accuracy."""
    y = np.asarray(y_test)
    n = len(y)
    base = np.asarray(base_preds).reshape(-1)
    orig = np.asarray(originals_preds).reshape(-1, n)
    pct = lambda c: f"{100 * c / n:.1f} %"
    out = []
    base_c = int((base == y).sum())
    if reference is not None:
        ref_c = int(reference["test_correct"])
        if 100 * (ref_c - base_c) > BASE_GAP_PP * n:
            out.append(f"The base model is under-trained: {pct(base_c)} test accuracy, more than {BASE_GAP_PP} points "
                       f"below the logistic-regression reference ({pct(ref_c)}); train it longer or with another "
                       f"base_lr before reading anything into the checkpoints.")
    counts = (orig == y[None]).sum(axis=1)
    chance = chance_correct(y)
    med = float(np.median(counts))
    if 100 * (med - chance) <= CHANCE_GAP_PP * n:
        out.append(f"The original checkpoints are near chance: median test accuracy {100 * med / n:.1f} %, within "
                   f"{CHANCE_GAP_PP} points of chance ({pct(chance)}, always predicting the test split's most "
                   f"frequent class); collection likely diverged, lower collect_lr.")
    if len(orig) > 1 and (orig == orig[:1]).all():
        out.append(f"All {len(orig)} original checkpoints make identical test predictions: the zoo is one model "
                   f"as far as the test set can tell, so every similarity figure is trivially 1; raise collect_lr "
                   f"or use another zoo kind.")
        return out
    # IoU and s_max compare error sets, not labels: checkpoints that differ only in which wrong label they
    # give (digits-quick's seed 0: 200 checkpoints, one error set) leave every error-set figure trivially 1
    wrong = orig[~(orig == -1).all(axis=1)] != y[None]          # finite models only: a -1 row errs everywhere
    if len(wrong) > 1 and (wrong == wrong[:1]).all():
        out.append(f"All {len(wrong)} finite original checkpoints make the same {int(wrong[0].sum())} test errors "
                   f"(their predictions differ only in which wrong label): the error-set figures (IoU, s_max, error "
                   f"twins) are trivially 1 for any model that errs alike and cannot tell copies from new models; "
                   f"judge novelty by distance here, or use a harder task whose checkpoints err differently (the "
                   f"mnist1d-cnn preset's do; on digits neither a 10x collect_lr nor another zoo kind did).")
    return out
