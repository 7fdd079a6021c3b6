"""pdiff_core.metrics on hand-made inputs with known answers: exact counts, ties, trajectory
distances against brute force, and bootstrap intervals."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pdiff_core import metrics as M


def test_counts_and_accuracy_mark_nonfinite_rows():
    y = np.array([0, 1, 2, 1])
    preds = np.array([[0, 1, 2, 1], [0, 0, 0, 0], [-1, -1, -1, -1]])
    np.testing.assert_array_equal(M.correct_counts(preds, y), [4, 1, -1])
    acc = M.accuracy(preds, y)
    assert acc[0] == 1.0 and acc[1] == 0.25 and np.isnan(acc[2])


def test_group_metrics_chooses_on_validation_first_index_on_ties():
    y_val, y_test = np.array([0, 1, 1]), np.array([0, 1])
    val = np.array([[0, 0, 0], [0, 1, 0], [0, 0, 1]])     # models 1 and 2 tie on validation (2 of 3)
    test = np.array([[0, 1], [0, 0], [0, 1]])              # model 2 is better on test: must not matter
    m = M.group_metrics(val, y_val, test, y_test)
    assert m["best_by_val"] == {"index": 1, "val_acc": 2 / 3, "test_acc": 0.5}
    assert m["val_correct"] == [1, 2, 2] and m["test_correct"] == [2, 1, 2]
    assert m["summary"]["max"] == 1.0                       # the max is a statistic, not a choice


def test_dominance_on_counts_keeps_ties_that_rounding_breaks():
    # 2/3 and 666667/1000000 round to the same 6 decimals but differ; integer counts on one split
    # make an exact tie a tie. A float 0.666667 read back from a report would beat 2/3 strictly.
    n = 3
    g_count, b_count = np.array([2]), np.array([2])
    smax, smax_b = np.array([0.5]), np.array([0.5])
    assert not M.dominated(g_count, smax, b_count, smax_b)[0]          # exact tie: not dominated
    assert M.dominated(g_count, smax, b_count, smax_b, strict=False)[0]
    rounded = np.array([round(2 / n, 6)])
    assert M.dominated(np.array([2 / n]), smax, rounded, smax_b)[0]   # what rounding did: a false win


def test_pareto_needs_one_strict():
    c, s = np.array([90, 80, 95]), np.array([0.50, 0.90, 0.20])
    cb, sb = np.array([90, 85]), np.array([0.50, 0.80])
    np.testing.assert_array_equal(M.dominated(c, s, cb, sb), [False, True, False])


def brute_segment_distance(p, a, b, grid=20001):
    lam = np.linspace(0, 1, grid)
    pts = a[None] + lam[:, None] * (b - a)[None]
    return np.linalg.norm(pts - p[None], axis=1).min()


def test_trajectory_distance_matches_brute_force_and_respects_trajectories():
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(6, 5, generator=g, dtype=torch.float64)
    traj = np.array([0, 0, 0, 1, 1, 2])          # segments (0,1), (1,2), (3,4); row 5 stands alone
    p = torch.randn(7, 5, generator=g, dtype=torch.float64) * 2
    d, seg, lam = M.trajectory_distance(p, theta, traj)
    t = theta.numpy()
    for i in range(len(p)):
        want = min(brute_segment_distance(p[i].numpy(), t[a], t[a + 1]) for a in (0, 1, 3))
        assert d[i] == pytest.approx(want, rel=1e-6, abs=1e-9)
        assert seg[i] in (0, 1, 3) and 0 <= lam[i] <= 1
    # a point on the path is at distance 0, and on a segment that is not a step it is not
    mid = 0.3 * theta[0] + 0.7 * theta[1]
    assert M.trajectory_distance(mid[None], theta, traj)[0][0] == pytest.approx(0, abs=1e-12)
    across = 0.5 * theta[2] + 0.5 * theta[3]     # rows 2 and 3 belong to different trajectories
    assert M.trajectory_distance(across[None], theta, traj)[0][0] > 1e-3
    assert np.isnan(M.trajectory_distance(p, theta, np.arange(6))[0]).all()   # independent: no segment


def test_chord_reference_is_each_interior_points_distance_to_its_neighbours_chord():
    theta = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0], [3.0, 0.0]], dtype=torch.float64)
    np.testing.assert_allclose(M.chord_reference(theta, np.zeros(4)), [1.0, 1 / np.sqrt(5)])
    assert len(M.chord_reference(theta, np.array([0, 0, 1, 1]))) == 0
    np.testing.assert_allclose(M.step_lengths(theta, np.zeros(4)), [np.sqrt(2), np.sqrt(2), 1.0])


def test_bootstrap_difference_sees_a_real_gap_and_not_noise():
    rng = np.random.default_rng(0)
    n = 400
    truth = rng.random(n) < 0.8
    a = np.tile(truth, (5, 1))
    same = M.median_difference(a, a.copy(), seed=1)
    assert same["diff"] == 0 and not same["differs"] and same["resolution"] == 1 / n
    better = a.copy()
    better[:, np.flatnonzero(~truth)[:40]] = True        # 40 more examples right: +10 pp
    d = M.median_difference(better, a, seed=1)
    assert d["differs"] and d["lo"] > 0 and d["diff"] == pytest.approx(0.1)
    one = a.copy()
    one[:, np.flatnonzero(~truth)[0]] = True             # one example apart: within the noise
    assert not M.median_difference(one, a[:, ::-1].copy(), seed=1)["differs"]
    w = M.bootstrap_weights(n, seed=3)
    assert w.shape == (M.N_BOOT, n) and (w.sum(1) == n).all()
    np.testing.assert_array_equal(w, M.bootstrap_weights(n, seed=3))
