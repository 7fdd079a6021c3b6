"""Tests for pdiff_core.analysis and pdiff_core.baselines: hand-made cases with known answers,
then one real tiny run analysed twice (byte-identical analysis.json) and once with NaN models."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from pdiff_core import analysis as A
from pdiff_core import baselines as B
from pdiff_core import metrics as M
from pdiff_core import runs
from pdiff_core import usecases as U
from pdiff_core.params import Codec


# -----------------------------------------------------------------------------
# metrics

def test_iou_known_values_and_both_empty():
    y = np.array([0, 1, 2, 3])
    preds = np.array([[0, 1, 2, 3],    # no errors
                      [0, 1, 2, 3],    # no errors
                      [9, 9, 2, 3],    # errors {0, 1}
                      [0, 9, 9, 3]])   # errors {1, 2}
    iou = M.iou_matrix(M.error_sets(preds, y), M.error_sets(preds, y))
    assert iou[0, 1] == 1.0                      # both empty: defined as 1
    assert iou[0, 2] == 0.0                      # empty vs non-empty: nothing shared
    assert iou[2, 3] == pytest.approx(1 / 3)     # {0,1} & {1,2} = {1}; union has 3
    assert iou[2, 2] == 1.0
    np.testing.assert_array_equal(iou, iou.T)
    assert M.mean_offdiag(np.array([[1.0, 0.2], [0.4, 1.0]])) == pytest.approx(0.3)


def test_agreement_matrix():
    pa = np.array([[0, 1, 2, 3], [1, 1, 1, 1]])
    pb = np.array([[0, 1, 0, 0]])
    np.testing.assert_allclose(M.agreement_matrix(pa, pb), [[0.5], [0.25]])


def test_nearest_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(9, 5, generator=g, dtype=torch.float64)
    idx, d = M.nearest(a, b)
    for i in range(len(a)):
        dists = [float(torch.linalg.norm(a[i] - b[j])) for j in range(len(b))]
        assert idx[i] == int(np.argmin(dists))
        assert d[i] == pytest.approx(min(dists), rel=1e-12)


def test_nearest_resolves_tiny_distances_next_to_large_norms():
    # noise_0.001 sits 1e-4 from a checkpoint of norm ~1e3; the |a|^2+|b|^2-2ab shortcut loses it
    b = torch.full((3, 64), 100.0, dtype=torch.float64) + torch.arange(3, dtype=torch.float64)[:, None]
    a = b[1:2] + 1e-4 / 8
    idx, d = M.nearest(a, b)
    assert idx[0] == 1 and d[0] == pytest.approx(1e-4, rel=1e-6)


def test_leave_one_out_excludes_self():
    pts = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    idx, d = M.leave_one_out(pts)
    np.testing.assert_array_equal(idx, [1, 0, 1, 2])
    np.testing.assert_allclose(d, [1, 1, 2, 4])


def test_replica_rate_uses_strict_5th_percentile():
    train = np.arange(1.0, 101.0)                        # 5th percentile (linear) = 5.95
    rate, thr = M.replica_rate(np.array([1.0, 5.9, 5.95, 6.0, 100.0]), train)
    assert thr == pytest.approx(5.95)
    assert rate == pytest.approx(2 / 5)                  # 5.95 itself is not below


def test_pareto_dominance_needs_one_strict():
    acc = np.array([0.90, 0.80, 0.95])
    smax = np.array([0.50, 0.90, 0.20])
    acc_b, smax_b = np.array([0.90, 0.85]), np.array([0.50, 0.80])   # b0 ties g0 exactly; b1 beats g1 on both
    np.testing.assert_array_equal(M.dominated(acc, smax, acc_b, smax_b), [False, True, False])
    np.testing.assert_array_equal(M.dominated(acc, smax, acc_b, smax_b, strict=False), [True, True, False])


def test_ensemble_accuracy_averages_logits_of_distinct_models():
    # 3 models, 4 examples, class 1 is right everywhere. Model m is wrong only on example m,
    # with a small margin (-1) against a large right margin (+2): any 2 averaged are right.
    y = torch.ones(4, dtype=torch.long)
    right = torch.tensor([0.0, 2.0])
    wrong = torch.tensor([0.0, -1.0])
    logits = torch.stack([torch.stack([wrong if i == m else right for i in range(4)]) for m in range(3)])
    gen = torch.Generator().manual_seed(0)
    acc = [U.ensemble_correct(logits, y, k, draws=30, gen=gen).mean(axis=1) for k in (1, 2, 3)]
    np.testing.assert_allclose([a.mean() for a in acc], [0.75, 1.0, 1.0])
    np.testing.assert_allclose([a.std() for a in acc], [0.0, 0.0, 0.0], atol=1e-12)


def test_clean_rounds_and_replaces_nan():
    out = A.clean({"a": np.float64(1 / 3), "b": float("nan"), "c": np.array([1, 2]), "d": np.bool_(True)})
    assert out == {"a": 0.333333, "b": None, "c": [1, 2], "d": True}
    json.dumps(out, allow_nan=False)


# -----------------------------------------------------------------------------
# baselines

def codec_two_tensors() -> Codec:
    return Codec(["a", "b"], [(2,), (3,)], mean=[0.0, 10.0], std=[1.0, 100.0])


def test_noise_is_sigma_in_normalized_units_per_tensor():
    theta = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])   # K = 1, so every row's source is known
    out = B.noise(theta, codec_two_tensors(), 0.1, 20000, torch.Generator().manual_seed(0))
    assert out.shape == (20000, 5)
    diff = (out - theta).double()
    np.testing.assert_allclose(diff.mean(0), 0, atol=0.2)
    np.testing.assert_allclose(diff[:, :2].std(0), 0.1, rtol=0.05)     # tensor a: std 1
    np.testing.assert_allclose(diff[:, 2:].std(0), 10.0, rtol=0.05)    # tensor b: std 100


def test_average_and_average16():
    theta = torch.eye(20)
    np.testing.assert_allclose(B.average(theta), theta.mean(0, keepdim=True))
    sub = B.average_subsets(theta, 30, torch.Generator().manual_seed(0))
    assert sub.shape == (30, 20)
    assert ((sub > 0).sum(1) == 16).all()             # 16 distinct checkpoints per mean
    np.testing.assert_allclose(sub[sub > 0], 1 / 16)
    np.testing.assert_allclose(B.average_subsets(theta[:5], 3, torch.Generator()), theta[:5].mean(0).expand(3, -1))


def test_gaussian_matches_per_coordinate_moments():
    g = torch.Generator().manual_seed(1)
    theta = torch.randn(50, 4, generator=g) * torch.tensor([0.1, 1.0, 5.0, 0.0]) + torch.tensor([3.0, -1.0, 0.0, 7.0])
    out = B.gaussian(theta, 40000, torch.Generator().manual_seed(2))
    assert out.shape == (40000, 4)
    np.testing.assert_allclose(out.mean(0), theta.mean(0), atol=0.06)
    np.testing.assert_allclose(out.std(0), theta.std(0), rtol=0.03, atol=1e-6)


def test_interpolation_is_a_convex_pair():
    theta = torch.eye(6)
    out = B.interpolation(theta, 500, torch.Generator().manual_seed(0))
    assert out.shape == (500, 6)
    np.testing.assert_allclose(out.sum(1), 1, atol=1e-6)
    assert ((out > 0).sum(1) <= 2).all() and (out >= 0).all()
    assert ((out > 0).sum(1) == 2).float().mean() > 0.99   # a != b, lambda strictly inside (0, 1)
    assert abs(out.max(1).values.mean() - 0.75) < 0.02      # E[max(lam, 1 - lam)] = 3/4


def test_make_baselines_names_shapes_and_seed():
    theta = torch.randn(24, 5, generator=torch.Generator().manual_seed(0))
    codec = Codec.fit(["a", "b"], [(2,), (3,)], theta)
    fams = B.make_baselines(theta, codec, 7, seed=3)
    assert list(fams) == ["noise_0.001", "noise_0.01", "noise_0.05", "noise_0.1", "noise_0.15",
                          "average", "average16", "gaussian", "interpolation"]
    assert len(fams) == B.N_FAMILIES        # what the parameter map's size (analysis.map_points) counts on
    assert {k: tuple(v.shape) for k, v in fams.items()} == {k: (1 if k == "average" else 7, 5) for k in fams}
    again = B.make_baselines(theta, codec, 7, seed=3)
    assert all(torch.equal(fams[k], again[k]) for k in fams)
    assert not torch.equal(fams["gaussian"], B.make_baselines(theta, codec, 7, seed=4)["gaussian"])


# -----------------------------------------------------------------------------
# initialization use case

def small_prep():
    from pdiff_core.config import RunConfig
    from pdiff_core.data import Splits
    from pdiff_core.models import mlp
    from pdiff_core.params import select_names
    from pdiff_core.prepare import Prepared
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(90, 4, generator=g), torch.randint(3, (90,), generator=g)
    data = Splits("toy", x[:60], y[:60], x[60:75], y[60:75], x[75:], y[75:], (4,), 3)
    torch.manual_seed(0)
    model = mlp((4,), 3, width=8)
    cfg = RunConfig(batch_size=16, collect_lr=0.3)
    return Prepared(cfg, "cpu", data, model, select_names(model, "last_bn"))


def test_fresh_init_starts_differ_and_normalization_layers_centre_on_their_default():
    prep = small_prep()
    model = prep.model
    with torch.no_grad():
        model.bn2.weight.fill_(3.0)
    theta = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    codec = Codec.fit(prep.names, [tuple(model.state_dict()[n].shape) for n in prep.names], theta)
    starts = torch.stack([U.fresh_init(model, codec, seed=s) for s in range(40)])
    assert len({tuple(r.tolist()) for r in starts}) == 40          # every random start is its own
    torch.testing.assert_close(starts, torch.stack([U.fresh_init(model, codec, seed=s) for s in range(40)]))
    parts = [codec.unflatten(r) for r in starts]
    w = torch.stack([p["bn2.weight"] for p in parts])
    b = torch.stack([p["bn1.bias"] for p in parts])
    spread = dict(zip(codec.names, codec.std))
    assert abs(w.mean().item() - 1.0) < 0.1 and abs(b.mean().item()) < 0.1    # around 1 and 0
    assert w.std().item() == pytest.approx(spread["bn2.weight"], rel=0.15)    # with the checkpoints' spread
    assert model.bn2.weight[0].item() == 3.0          # the model passed in is untouched


def test_first_reach_counts_a_curve_exactly_one_example_below_the_best_as_reached():
    """4 starts at 240 of 270 right against a best of 241: one example below, so reached, although
    the float mean of the curve is a rounding below best - 1/270."""
    n, curve = 270, np.stack([np.full(3, 240 / 270)] * 4).mean(axis=0)
    target = np.mean([241 / n] * 4) - 1 / n
    assert curve[0] < target                                   # the rounding the comparison must allow
    assert U.first_reach(curve, target) == 0
    assert U.first_reach(np.array([239 / n, 240 / n]), 241 / n - 1 / n) == 1     # two below: not yet
    assert U.first_reach(np.full(2, 239 / n), 241 / n - 1 / n) is None


def test_finetune_runs_stay_independent_under_vmap():
    from pdiff_core.evaluate import Evaluator
    prep = small_prep()
    shapes = [tuple(prep.model.state_dict()[n].shape) for n in prep.names]
    starts = 1 + 0.3 * torch.randn(3, 32, generator=torch.Generator().manual_seed(1))
    codec = Codec.fit(prep.names, shapes, starts)
    ev = Evaluator(prep.model, codec, "cpu")
    h_val = ev.features(prep.data.x_val)
    together, final = U.finetune(ev, starts, prep, 8, torch.Generator().manual_seed(5), h_val)
    alone, final1 = U.finetune(ev, starts[1:2], prep, 8, torch.Generator().manual_seed(5), h_val)
    torch.testing.assert_close(final[1:2], final1)
    assert together.shape == (3, 9)
    np.testing.assert_allclose(together[1], alone[0])   # batching 3 runs must not change run 1
    assert not np.allclose(together[:, 0], together[:, -1])   # and the runs did learn something


# -----------------------------------------------------------------------------
# a real tiny run

def test_analyze_twice_is_identical_and_never_duplicates(tiny_run, monkeypatch):
    from pdiff_core.__main__ import main
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(tiny_run.parent))    # the CLI finds the run by its id
    monkeypatch.setitem(sys.modules, "umap", None)                  # as when the run was made (its UMAP status)
    first = (tiny_run / "analysis.json").read_bytes()
    first_npz = runs.read_npz(tiny_run / "analysis.npz")
    assert main(["analyze", tiny_run.name]) == 0       # the CLI: prep rebuilt from config.json
    assert (tiny_run / "analysis.json").read_bytes() == first
    second_npz = runs.read_npz(tiny_run / "analysis.npz")
    assert first_npz.keys() == second_npz.keys()
    for k in first_npz:
        np.testing.assert_array_equal(first_npz[k], second_npz[k], err_msg=k)

    a = json.loads(first)
    base = a["baseline_groups"]
    metrics = runs.read_json(tiny_run / "metrics.json")
    preds = runs.read_npz(tiny_run / "predictions.npz")
    assert list(metrics["groups"]) == ["originals", "generated", *base]
    assert sorted(preds) == sorted(["y_test", "base", "originals", "generated", *base])
    assert len(metrics["groups"]["gaussian"]["test_acc"]) == 16
    assert preds["gaussian"].shape == (16, len(preds["y_test"]))
    tensors, _ = runs.read_safetensors(tiny_run / "baselines.safetensors")
    assert sorted(tensors) == sorted(base) and tensors["average"].shape == (1, 64)
    assert a["embeddings"]["params"]["umap"].startswith("skipped") and "emb_params_umap" not in first_npz
    assert "timings" not in json.dumps(a) and "analysis_timings" in runs.read_status(tiny_run)
    assert a["verdict"].count("%") >= 3


def test_tiny_run_files_agree_with_definitions(tiny_run):
    a = json.loads((tiny_run / "analysis.json").read_text())
    z = runs.read_npz(tiny_run / "analysis.npz")
    theta = runs.read_safetensors(tiny_run / "originals.safetensors")[0]["params"]
    gen = runs.read_safetensors(tiny_run / "generated.safetensors")[0]["params"]
    d = torch.cdist(gen.double(), theta.double())
    np.testing.assert_allclose(z["generated_nn_raw_dist"], d.min(1).values, rtol=1e-9)
    np.testing.assert_array_equal(z["generated_nn_raw_idx"], d.argmin(1))
    k = len(theta)
    iou = z["iou"].astype(np.float64)
    assert iou.shape == (k + 16, k + 16) and list(z["iou_labels"][[0, k]]) == ["originals", "generated"]
    assert a["similarity"]["og_max"] == pytest.approx(iou[:k, k:].max(0).mean(), abs=1e-5)
    np.testing.assert_allclose(z["generated_smax"], iou[:k, k:].max(0), atol=1e-6)
    rate = np.mean(z["generated_nn_raw_dist"] < np.percentile(z["train_nn_raw"], 5))
    assert a["memorization"]["replica_rate"] == pytest.approx(rate)
    assert z["init_generated"].shape == (4, U.INIT_STEPS + 1)
    assert a["ensembles"]["k"] == [1, 2, 5, 10, 16]
    assert z["emb_params_tsne"].shape == (len(z["emb_params_group"]), 2)
    from pdiff_core.analysis import map_points
    from pdiff_core.config import RunConfig
    cfg = RunConfig.from_dict(runs.read_json(tiny_run / "config.json"))
    assert len(z["emb_params_group"]) <= map_points(cfg) <= len(z["emb_params_group"]) + 16   # average: 1 of 16


def test_nonfinite_generated_models_are_excluded(tiny_run, tmp_path):
    import shutil
    run_dir = tmp_path / "nan"
    shutil.copytree(tiny_run, run_dir)
    tensors, meta = runs.read_safetensors(run_dir / "generated.safetensors")
    tensors["params"][[0, 5]] = float("nan")            # as the pipeline records a diverged sample
    runs.write_safetensors(run_dir / "generated.safetensors", tensors, meta)
    preds = runs.read_npz(run_dir / "predictions.npz")
    preds["generated"][[0, 5]] = -1
    runs.write_npz(run_dir / "predictions.npz", preds)
    metrics = runs.read_json(run_dir / "metrics.json")
    gm = metrics["groups"]["generated"]
    for i in (0, 5):
        gm["val_acc"][i] = gm["test_acc"][i] = None
        gm["finite"][i] = False
    runs.write_json(run_dir / "metrics.json", metrics)

    a = A.run_analysis(run_dir)
    z = runs.read_npz(run_dir / "analysis.npz")
    assert a["counts"]["generated"] == {"n": 16, "finite": 14}
    assert np.isnan(z["generated_smax"][[0, 5]]).all() and (z["generated_nn_raw_idx"][[0, 5]] == -1).all()
    assert np.isfinite(z["generated_smax"][1:5]).all()
    assert not z["generated_dominated"][[0, 5]].any()
    assert np.isnan(z["iou"][24]).all()                 # rows 0-23 are the originals; 24 is generated 0
    ok = np.ones(16, bool)
    ok[[0, 5]] = False
    smax_mean = a["memorization"]["groups"]["generated"]["smax_mean"]
    assert smax_mean == pytest.approx(z["generated_smax"][ok].mean(), abs=1e-5)
    assert 0 not in z["emb_params_index"][z["emb_params_group"] == "generated"]
    assert a["verdict"]


def _nan_rows(run_dir, group):
    t, meta = runs.read_safetensors(run_dir / f"{group}.safetensors")
    t["params"][:] = float("nan")
    runs.write_safetensors(run_dir / f"{group}.safetensors", t, meta)


def _drop_a_row(run_dir, group):
    t, meta = runs.read_safetensors(run_dir / f"{group}.safetensors")
    t["params"] = t["params"][1:].clone()
    runs.write_safetensors(run_dir / f"{group}.safetensors", t, meta)


def _to_double(run_dir, group):
    t, meta = runs.read_safetensors(run_dir / f"{group}.safetensors")
    t["params"] = t["params"].double()
    runs.write_safetensors(run_dir / f"{group}.safetensors", t, meta)


def _set_preds(run_dir, key, edit):
    p = runs.read_npz(run_dir / "predictions.npz")
    p[key] = edit(p[key])
    runs.write_npz(run_dir / "predictions.npz", p)


def _drop_preds(run_dir, group):
    p = runs.read_npz(run_dir / "predictions.npz")
    del p[group]
    runs.write_npz(run_dir / "predictions.npz", p)


@pytest.mark.parametrize("damage, says", [
    (lambda d: _nan_rows(d, "generated"), "all 16 generated models of bad have non-finite parameters or predictions: "
                                          "the generator diverged"),
    (lambda d: _nan_rows(d, "originals"), "all 24 originals models of bad have non-finite"),
    (lambda d: _drop_a_row(d, "originals"), "originals.safetensors holds params (23, "),
    (lambda d: _to_double(d, "generated"), "generated.safetensors holds torch.float64 params, not float32"),
    (lambda d: _drop_preds(d, "generated"), "predictions.npz holds nothing for generated"),
    (lambda d: (d / "metrics.json").write_text("[1, 2]"), "metrics.json is corrupt (a JSON list, not an object)"),
    # predictions edited into what no model of this dataset predicts were analysed as all wrong, and written
    (lambda d: _set_preds(d, "generated", lambda p: np.full_like(p, 999)), "holds generated predictions that are "
                                                                           "not class labels of this dataset"),
    (lambda d: _set_preds(d, "generated", lambda p: p + 0.5), "(dtype float64"),
    (lambda d: _set_preds(d, "y_test", lambda y: (y + 1) % 10), "predictions.npz's y_test are not the labels of "
                                                                 "the run's test split"),
    (lambda d: runs.write_json(d / "metrics.json", {k: v for k, v in runs.read_json(d / "metrics.json").items()
                                                    if k != "base"}), "metrics.json has no 'base' results"),
])
def test_damaged_or_all_nonfinite_inputs_are_refused_before_anything_is_written(tiny_run, tmp_path, damage, says):
    """One line that says what is wrong, and no file rewritten: before, an all-NaN generator crashed
    in the ensembles after metrics.json and the predictions had been overwritten."""
    import hashlib
    import shutil
    run_dir = tmp_path / "bad"
    shutil.copytree(tiny_run, run_dir)
    damage(run_dir)
    before = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in run_dir.iterdir()}
    with pytest.raises(runs.RunError) as e:
        A.run_analysis(run_dir)
    assert says in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in run_dir.iterdir()} == before


def test_a_cancel_or_failure_late_in_the_analysis_rewrites_nothing(tiny_run, tmp_path):
    """Cancelled at the parameter maps (the last step), or failing there: every file as it was. Before,
    baselines.safetensors, the predictions and metrics.json were rewritten before the ensembles ran."""
    import hashlib
    import shutil

    from pdiff_core.pipeline import Cancelled
    run_dir = tmp_path / "late"
    shutil.copytree(tiny_run, run_dir)
    baselines = json.loads((tiny_run / "analysis.json").read_text())["baseline_groups"]
    for name in ("predictions.npz", "predictions_val.npz"):     # as a run with analysis off leaves them
        p = runs.read_npz(run_dir / name)
        runs.write_npz(run_dir / name, {k: v for k, v in p.items() if k not in baselines})
    m = runs.read_json(run_dir / "metrics.json")
    m["groups"] = {g: v for g, v in m["groups"].items() if g not in baselines}
    runs.write_json(run_dir / "metrics.json", m)
    for name in ("baselines.safetensors", "analysis.json", "analysis.npz"):
        (run_dir / name).unlink()
    before = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in run_dir.iterdir()}

    def cancel(fraction, message):
        if fraction >= 0.7:
            raise Cancelled("cancelled by the user")
    with pytest.raises(Cancelled):
        A.run_analysis(run_dir, report=cancel)
    assert {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in run_dir.iterdir()} == before
    A.run_analysis(run_dir)     # and a whole analysis does rewrite them: the check above can fail
    after = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in run_dir.iterdir()}
    assert {n for n in after if after[n] != before.get(n)} >= {"baselines.safetensors", "predictions.npz",
                                                                "predictions_val.npz", "metrics.json", "analysis.json"}


def test_tiny_run_headlines_recomputed_from_raw_files(tiny_run):
    """Accuracy, s_max and dominance recomputed from predictions.npz and the parameter files by
    bench/verify_run.py, which imports nothing from pdiff_core."""
    from bench.verify_run import recompute
    r = recompute(tiny_run)
    a = json.loads((tiny_run / "analysis.json").read_text())
    z = runs.read_npz(tiny_run / "analysis.npz")
    metrics = runs.read_json(tiny_run / "metrics.json")
    for g, c in r["correct"].items():
        assert metrics["groups"][g]["test_correct"] == c.tolist(), g
        np.testing.assert_array_equal(np.array(metrics["groups"][g]["test_acc"], float), r["acc"][g])
    for g, s in r["smax"].items():
        np.testing.assert_array_equal(z[f"{g}_smax"], s, err_msg=g)
    mem = a["memorization"]
    for g, v in r["dominated_by"].items():
        assert mem["dominated_by"][g] == pytest.approx(v, abs=1e-9), g
    assert mem["dominated_share"] == pytest.approx(r["dominated_share"], abs=1e-9)
    # the best-by-validation model is chosen from predictions_val.npz, never from test
    val = runs.read_npz(tiny_run / "predictions_val.npz")
    for g in ("originals", "generated"):
        counts = np.where((val[g] >= 0).all(1), (val[g] == val["y_val"]).sum(1), -1)
        assert metrics["groups"][g]["best_by_val"]["index"] == int(np.argmax(counts))


def test_verify_run_exits_1_on_any_figure_that_disagrees(tiny_run, tmp_path, capsys):
    """bench/verify_run.py passes the run as written, and flags each figure it prints when one is changed:
    it used to set its exit code from the per-family dominance alone."""
    import shutil
    from bench.verify_run import main
    assert main([str(tiny_run)]) == 0
    edits = {"dominated by any baseline": ("analysis.json", lambda d: d["memorization"].update(dominated_share=0.0)),
             "mean s_max of generated": ("analysis.json",
                                         lambda d: d["memorization"]["groups"]["generated"].update(smax_mean=0.1)),
             "generated: best by val": ("metrics.json",
                                        lambda d: d["groups"]["generated"]["best_by_val"].update(test_acc=0.5)),
             "originals: median test acc": ("metrics.json",
                                            lambda d: d["groups"]["originals"]["summary"].update(median=0.5))}
    for i, (figure, (name, edit)) in enumerate(edits.items()):
        run = tmp_path / f"r{i}"
        shutil.copytree(tiny_run, run)
        d = runs.read_json(run / name)
        edit(d)
        runs.write_json(run / name, d)
        capsys.readouterr()
        assert main([str(run)]) == 1, figure
        flagged = [line for line in capsys.readouterr().out.splitlines() if line.endswith("<- differs")]
        assert len(flagged) == 1 and flagged[0].startswith(figure), (figure, flagged)


def test_accuracy_difference_and_intervals_are_reported(tiny_run):
    a = json.loads((tiny_run / "analysis.json").read_text())
    d = a["accuracy"]["median_difference"]
    assert d["lo"] <= d["diff"] <= d["hi"] and d["resolution"] == pytest.approx(1 / a["accuracy"]["n_test"])
    assert d["differs"] == (d["lo"] > 0 or d["hi"] < 0)
    for key in ("gain_generated", "gain_originals", "gain_difference"):
        iv = a["ensembles"]["intervals"][key]
        assert iv["lo"] <= iv["diff"] <= iv["hi"]
    assert set(a["initialization"]["final_test_vs_random"]) == {"generated", "original"}
    assert a["memorization"]["zoo"]["kind"] == "trajectory"
    assert a["memorization"]["trajectory"]["segments"] == 23


def test_umap_on_demand_refuses_an_analysis_that_does_not_match_the_parameters(tiny_run, tmp_path, monkeypatch):
    """add_umap recomputes the map's points from the parameter files; an analysis.npz whose rows
    are not those points gets one line saying what to do, and no umap.npz. A umap.npz for other
    rows is never merged into the arrays pages read."""
    import shutil
    from pdiff_core.__main__ import main
    run = tmp_path / "runs" / "r"
    shutil.copytree(tiny_run, run)
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(run.parent))
    arrays = runs.read_npz(run / "analysis.npz")
    arrays["emb_params_index"] = arrays["emb_params_index"][::-1].copy()
    runs.write_npz(run / "analysis.npz", arrays)
    with pytest.raises(runs.RunError, match="does not match its parameter files; run `python -m pdiff_core analyze r`"):
        A.add_umap(run)
    assert main(["analyze", "r", "--umap"]) == 2 and not (run / "umap.npz").exists()
    stale = {"emb_params_umap": np.zeros((len(arrays["emb_params_group"]), 2), np.float32),
             "emb_params_group": arrays["emb_params_group"], "emb_params_index": np.flip(arrays["emb_params_index"])}
    runs.write_npz(run / "umap.npz", stale)
    assert "emb_params_umap" not in runs.read_analysis_arrays(run)
    stale["emb_params_index"] = arrays["emb_params_index"]
    runs.write_npz(run / "umap.npz", stale)
    assert "emb_params_umap" in runs.read_analysis_arrays(run)
