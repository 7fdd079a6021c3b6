"""The reference classifier and the run warnings."""
import numpy as np
import pytest

from pdiff_core import health
from pdiff_core.data import load_dataset


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def test_reference_is_deterministic_and_sane(digits):
    a = health.reference_accuracy(digits, seed=0)
    b = health.reference_accuracy(digits, seed=0)
    assert a == b
    assert set(a) >= {"method", "val_acc", "test_acc"}
    assert "logistic regression" in a["method"] and "sample" not in a["method"]
    n = len(digits.y_test)
    assert a["n_test"] == n and a["test_acc"] == a["test_correct"] / n
    assert 0.93 < a["test_acc"] <= 1.0 and 0.93 < a["val_acc"] <= 1.0   # digits is nearly linearly separable


def test_reference_is_fitted_on_train_only(digits):
    """Scrambling the val and test labels changes the scores, never the fit: the predictions stay."""
    import copy
    ref = health.reference_accuracy(digits, seed=0)
    other = copy.copy(digits)
    other.y_test = (digits.y_test + 1) % 10
    scrambled = health.reference_accuracy(other, seed=0)
    assert scrambled["test_correct"] < ref["test_correct"] and scrambled["val_acc"] == ref["val_acc"]


def test_reference_subsamples_a_big_train_split(digits, monkeypatch):
    monkeypatch.setattr(health, "REF_MAX_VALUES", 64 * 1100)            # digits: 64 features -> 1,100 rows
    a = health.reference_accuracy(digits, seed=1)
    assert f"1100 of {len(digits.y_train)}" in a["method"]
    assert a == health.reference_accuracy(digits, seed=1)
    assert a != health.reference_accuracy(digits, seed=2)               # another sample, another fit


def case(n=100, majority=30, base_correct=95, orig_correct=(90, 92, 94), ref_correct=95, same=False):
    """Labels with the most frequent class holding `majority` of n; predictions right on the first
    `c` examples and wrong (label + 1) on the rest."""
    y = np.concatenate([np.zeros(majority, int), np.arange(n - majority) % 7 + 1])
    rng = np.random.default_rng(0)
    y = y[rng.permutation(n)]

    def preds(c, shift=0):
        p = (y + 1) % 10
        right = (np.arange(n) + shift) % n < c
        p[right] = y[right]
        return p
    orig = np.stack([preds(c, 0 if same else 3 * i) for i, c in enumerate(orig_correct)])
    return y, preds(base_correct), orig, {"test_correct": ref_correct, "n_test": n}


def test_a_healthy_run_has_no_warnings():
    assert health.run_warnings(*case()) == []


def test_base_below_reference_warns_past_3_points():
    w = health.run_warnings(*case(base_correct=91, ref_correct=95))     # 4 points below
    assert len(w) == 1 and "under-trained" in w[0] and "91.0 %" in w[0] and "95.0 %" in w[0]
    assert health.run_warnings(*case(base_correct=92, ref_correct=95)) == []   # exactly 3 points: no warning
    assert health.run_warnings(*case(base_correct=91)[:3], reference=None) == []   # nothing to compare with


def test_originals_near_chance_warn():
    assert health.chance_correct(case()[0]) == 30
    w = health.run_warnings(*case(orig_correct=(20, 35, 90)))           # median 35, chance 30
    assert len(w) == 1 and "near chance" in w[0] and "30.0 %" in w[0] and "most frequent class" in w[0]
    assert health.run_warnings(*case(orig_correct=(20, 36, 90))) == []  # 6 points above chance
    y, b, o, r = case(orig_correct=(90, 92, 94))
    o[:2] = -1                                                          # two non-finite models count as wrong
    assert any("near chance" in s for s in health.run_warnings(y, b, o, r))


def test_identical_checkpoint_predictions_warn():
    w = health.run_warnings(*case(orig_correct=(92, 92, 92), same=True))
    assert len(w) == 1 and "identical test predictions" in w[0] and "All 3" in w[0]
    assert health.run_warnings(*case(orig_correct=(92, 92, 92))) == []   # same accuracy, different errors
    y, b, o, r = case(orig_correct=(92,))
    assert health.run_warnings(y, b, o, r) == []                          # one checkpoint is not a zoo


def test_checkpoints_sharing_one_error_set_warn():
    """Checkpoints that differ only in which wrong label they give have one error set between them:
    IoU and s_max are then 1 for anything that errs alike, which a label check alone misses."""
    y, b, o, r = case(orig_correct=(92, 92, 92), same=True)
    wrong = np.flatnonzero(o[0] != y)
    o[1, wrong[0]] = (y[wrong[0]] + 2) % 10                              # another wrong label, the same errors
    w = health.run_warnings(y, b, o, r)
    assert len(w) == 1 and "same 8 test errors" in w[0] and "All 3 finite" in w[0] and "IoU" in w[0]
    o[2, wrong[0]] = y[wrong[0]]                                         # one checkpoint gets that example right
    assert health.run_warnings(y, b, o, r) == []
    o[2] = -1                                                            # non-finite: not a checkpoint that errs
    w = health.run_warnings(y, b, o, r)
    assert len(w) == 1 and "All 2 finite" in w[0]
