"""Transfer: task construction and split, embeddings, per-task collection on the executors, and
transfer.json rebuilt from transfer.npz on a real tiny-tasks run."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pdiff_core import metrics, newtask, runs, tasks, transfer
from pdiff_core.config import ConfigError, RunConfig, preset_config, validate
from pdiff_core.executors import map_units


def test_tasks_are_distinct_binary_subsets_split_disjoint_by_seed():
    ts = tasks.make_tasks("subsets", 10, 64, 16, seed=3)
    both = np.concatenate([ts.train, ts.heldout])
    assert both.shape == (80, 10) and ts.train.shape == (64, 10)
    assert len({m.tobytes() for m in both}) == 80, "a task appears twice"
    sizes = both.sum(1)
    assert sizes.min() >= 2 and sizes.max() <= 5
    assert all(m[0] for m in both if m.sum() == 5), "a half split must be kept once (with class 0)"
    again = tasks.make_tasks("subsets", 10, 64, 16, seed=3)
    assert (again.train == ts.train).all() and (again.heldout == ts.heldout).all()
    other = tasks.make_tasks("subsets", 10, 64, 16, seed=4)
    assert not (other.heldout == ts.heldout).all()
    assert len(tasks.all_subsets(10)) == 45 + 120 + 210 + 126
    with pytest.raises(tasks.TaskError, match="ask for fewer"):
        tasks.make_tasks("subsets", 4, 3, 2, seed=0)          # 4 classes: {0,1},{0,2},{0,3} only
    with pytest.raises(tasks.TaskError, match="a 3-class dataset has no 'subsets' task .* at least 4 classes"):
        tasks.make_tasks("subsets", 3, 1, 1, seed=0)          # said "need more than the 0 distinct tasks"
    with pytest.raises(tasks.TaskError, match="unknown task family"):
        tasks.make_tasks("pairs", 10, 4, 2, seed=0)


def test_labels_support_and_embedding_are_deterministic_and_data_derived():
    y = torch.tensor([0, 1, 2, 3, 1, 2, 0, 3, 2, 1] * 5)
    mask = np.array([False, True, True, False])
    yt = tasks.labels(mask, y)
    assert yt.tolist() == [int(v in (1, 2)) for v in y.tolist()]
    s1, s2 = tasks.support(yt, 3, seed=7), tasks.support(yt, 3, seed=7)
    assert torch.equal(s1, s2) and yt[s1].tolist() == [0, 0, 0, 1, 1, 1]
    assert not torch.equal(s1, tasks.support(yt, 3, seed=8))
    feats = torch.randn(len(y), 5)
    e = tasks.embedding(feats[s1], yt[s1])
    assert torch.allclose(e[:5], feats[s1[:3]].mean(0)) and torch.allclose(e[5:], feats[s1[3:]].mean(0))
    with pytest.raises(tasks.TaskError, match="fewer than shots"):
        tasks.support(yt, 100, seed=0)


def test_transfer_config_errors_are_one_line():
    for bad, needle in [({"family": "pairs"}, "family must be"), ({"shots": 0}, "shots must be a positive"),
                        ({"p_uncond": 1.0}, "p_uncond must lie"), ({"executor": "slurm"}, "executor must be"),
                        ({"guidance": -1.0}, "guidance must be")]:
        with pytest.raises(ConfigError, match=needle):
            validate(preset_config("tiny-tasks", **bad))


def _units(n=4):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(60, 6, generator=g)
    y = (h[:, 0] > 0).long()
    return [{"features": h, "labels": y, "seed": i, "head_steps": 200, "k": 3, "lr": 0.1, "batch": 16, "zoo": i % 2 == 0}
            for i in range(n)]


@pytest.mark.slow
def test_task_collection_gives_the_same_heads_in_one_process_and_two():
    units = _units()
    seen = []
    one = map_units(transfer.collect_task, units, "local", 1, done=lambda i, n: seen.append((i, n)))
    two = map_units(transfer.collect_task, units, "local", 2)
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    for a, b in zip(one, two):
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert one[0]["theta"].shape == (3, 14) and "theta" not in one[1]
    assert np.array_equal(one[0]["theta"][-1], one[0]["final"])
    acc = (transfer.predict(torch.from_numpy(one[1]["final"])[None], units[1]["features"])[0]
           == units[1]["labels"].numpy()).mean()
    assert acc > 0.9, acc                      # a linear head learns a linear task


# tiny_transfer: conftest's session fixture, one tiny-tasks run shared with test_app and test_browser


def test_tiny_transfer_run_writes_every_method_for_every_heldout_task(tiny_transfer):
    s = runs.read_json(tiny_transfer / "transfer.json")
    assert len(s["train_tasks"]) == 8 and len(s["heldout_tasks"]) == 4
    assert not set(s["train_tasks"]) & set(s["heldout_tasks"])
    keys = {"generated_median", "generated_best", "average_of_tasks", "nearest_task", "linear_probe", "oracle"}
    for t in s["heldout"]:
        assert keys <= set(t["zero_shot"]) and all(0 <= t["zero_shot"][k] <= 1 for k in keys)
    a = runs.read_npz(tiny_transfer / "transfer.npz")
    # a figure recomputed by hand from the raw predictions
    y = a["y_test"].astype(int)
    oracle = (a["pred_oracle"] == y).mean(1)
    assert s["zero_shot"]["oracle"]["median"] == pytest.approx(float(np.median(oracle)), abs=1e-6)
    best = a["support_correct_generated"].argmax(1)
    gen_best = (a["pred_generated"][np.arange(4), best] == y).mean(1)
    assert [t["zero_shot"]["generated_best"] for t in s["heldout"]] == pytest.approx(gen_best.tolist(), abs=1e-6)
    assert a["pred_finetune"].shape[:3] == (4, len(transfer.STARTS), 6)
    assert s["verdict"].startswith("On 4 held-out tasks")
    status = runs.read_status(tiny_transfer)
    assert status["state"] == "done" and {"collect", "autoencoder", "diffusion", "generate", "evaluate"} <= set(status["timings"])


def test_analyze_rebuilds_transfer_json_byte_for_byte(tiny_transfer, capsys, monkeypatch):
    from pdiff_core.__main__ import main
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(tiny_transfer.parent))     # the shared run may not be the last set
    before = (tiny_transfer / "transfer.json").read_bytes()
    (tiny_transfer / "transfer.json").unlink()
    assert main(["analyze", tiny_transfer.name]) == 0
    assert (tiny_transfer / "transfer.json").read_bytes() == before
    assert "held-out tasks" in capsys.readouterr().out
    assert main(["analyze", tiny_transfer.name, "--umap"]) == 2          # no parameter map: one line, nothing written
    assert "is a transfer run" in capsys.readouterr().err and not (tiny_transfer / "umap.npz").exists()


def test_config_round_trips_with_transfer_fields():
    cfg = preset_config("digits-tasks")
    assert RunConfig.from_dict(cfg.to_dict()) == cfg and cfg.family == "subsets" and cfg.tasks_train == 64


def test_a_new_task_from_raw_examples_gets_the_embedding_the_run_gave_it(tiny_transfer, tmp_path, capsys,
                                                                          monkeypatch):
    """A held-out task's own support set, handed in raw (the dataset's units, as a user would upload
    it), embeds exactly as in the run, and heads come out for it; bad files exit 2 with one line."""
    from pdiff_core.__main__ import main
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(tiny_transfer.parent))
    from pdiff_core.data import load_dataset
    cfg = RunConfig.from_dict(runs.read_json(tiny_transfer / "config.json"))
    data = load_dataset(cfg.dataset, seed=cfg.seed)
    a = runs.read_npz(tiny_transfer / "transfer.npz")
    n_t, j = len(a["train_tasks"]), 1
    y_tr = tasks.labels(a["heldout_tasks"][j], data.y_train)
    idx = tasks.support(y_tr, cfg.shots, cfg.seed * 7919 + transfer.SALT_SUPPORT * (n_t + j + 1))
    scale, mean, std = data.norm
    raw = ((data.x_train[idx] * std + mean) * scale).numpy()
    assert torch.allclose(data.standardize(raw), data.x_train[idx], atol=1e-5)
    out = newtask.generate_for_task(tiny_transfer, raw, y_tr[idx].numpy(), n=5)
    np.testing.assert_allclose(out["embedding"].numpy(), a["emb_heldout"][j], atol=1e-4)
    assert out["heads"].shape == (5, 2 * 16 + 2) and torch.isfinite(out["heads"]).all()
    np.savez(tmp_path / "task.npz", X=raw, y=y_tr[idx].numpy())
    assert main(["new-task", tiny_transfer.name, str(tmp_path / "task.npz"), "--n", "4"]) == 0
    said = capsys.readouterr().out
    assert "4 heads generated" in said
    # the median of an even count is the mean of the middle two, on the command line and the Transfer page alike
    acc = newtask.generate_for_task(tiny_transfer, raw, y_tr[idx].numpy(), n=4)["accuracy_on_examples"]
    assert f"accuracy on the given examples: {newtask.accuracy_words(acc)}" in said
    assert newtask.accuracy_words(np.array([0.5, 0.6, 0.7, 0.8])) == "best 80.0 %, median 65.0 %"
    assert main(["new-task", tiny_transfer.name, str(tmp_path / "nowhere.npz")]) == 2
    assert "nowhere.npz: no such file" in capsys.readouterr().err
    np.savez(tmp_path / "bad.npz", X=raw, y=np.full(len(raw), 1))
    assert main(["new-task", tiny_transfer.name, str(tmp_path / "bad.npz")]) == 2
    assert "at least one example of each label" in capsys.readouterr().err
    (tmp_path / "text.npz").write_text("not a zip")            # numpy would advise loading it unpickled
    np.savez(tmp_path / "words.npz", X=np.array([["a"]] * len(raw)), y=y_tr[idx].numpy())
    for name, needle in (("text.npz", "not a .npz (zip) file"), ("words.npz", "X and y must be numbers")):
        assert main(["new-task", tiny_transfer.name, str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert needle in err and "pickle" not in err and len(err.strip().splitlines()) == 1, err
    import io                                                 # an upload: a file object, read from its start
    buf = io.BytesIO((tmp_path / "task.npz").read_bytes())
    buf.read(10)
    x_up, y_up = newtask.read_task_file(buf, "upload.npz")
    np.testing.assert_array_equal(x_up, raw)


@pytest.mark.parametrize("sets, needle", [(["tasks_train=500"], "need more than the 501 distinct tasks"),
                                          (["shots=400"], "its support sets need 400")])
def test_impossible_task_sets_are_refused_before_a_run_directory_exists(runs_dir, capsys, sets, needle):
    from pdiff_core.__main__ import main
    args = ["run", "--preset", "tiny-tasks", "--run-id", "odd"] + [a for s in sets for a in ("--set", s)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err, err
    assert not (runs_dir / "odd").exists()


def test_too_few_held_out_tasks_show_no_difference_however_large():
    """[min, max] of 5 tasks covers their median 93.75 % of the time: no 95 % interval, so no difference.
    The bootstrap this replaces called 4 tasks of -3 to -43 pp a loss 'with 95 %'; a sign test gives p = 0.125."""
    assert metrics.paired(np.array([0.9]), np.array([0.5]))["differs"] is False
    five = metrics.paired(np.array([0.9, 0.92, 0.88, 0.91, 0.9]), np.array([0.5, 0.52, 0.49, 0.5, 0.51]))
    assert five["differs"] is False and five["level"] == pytest.approx(1 - 2 / 2 ** 5)
    assert (five["lo"], five["hi"]) == pytest.approx((0.39, 0.41))   # the range
    six = metrics.paired(np.array([0.9, 0.92, 0.88, 0.91, 0.9, 0.93]), np.array([0.5, 0.52, 0.49, 0.5, 0.51, 0.5]))
    assert six["differs"] is True and 0.35 < six["median"] < 0.45 and six["level"] == pytest.approx(1 - 2 / 2 ** 6)
    from pdiff_core.words import few_tasks_note, interval_words      # said once, in the verdict
    assert "With 5 held-out tasks no 95 % interval exists" in few_tasks_note(five) and few_tasks_note(six) is None
    assert interval_words(five, "{:.2f}".format) == "range 0.39 to 0.41" and interval_words(six, str).startswith("95 % interval")


def test_the_median_interval_over_tasks_covers_the_median_at_least_95_percent_of_the_time():
    """Its stated level is its coverage: 5000 draws of 16 tasks from a skewed distribution (median ln 2)."""
    d = metrics.median_ci(np.arange(16.0))
    assert (d["lo"], d["hi"], d["n"]) == (3.0, 12.0, 16)         # order statistics 4 and 13 of 16
    assert d["level"] == pytest.approx(1 - 2 * (1 + 16 + 120 + 560) / 2 ** 16)
    rng = np.random.default_rng(0)
    cover = np.mean([(c := metrics.median_ci(rng.exponential(size=16)))["lo"] <= np.log(2) <= c["hi"]
                     for _ in range(5000)])
    assert abs(cover - d["level"]) < 0.01 and cover >= 0.95, cover


def test_task_files_that_are_not_examples_get_one_line(tmp_path):
    """A single number as X raised a TypeError through the CLI and the Transfer page's upload; True/False labels
    are 1/0 labels."""
    import numpy as np
    from pdiff_core import newtask
    f = tmp_path / "t.npz"
    np.savez(f, X=np.float64(3), y=np.array([0, 1]))
    with pytest.raises(newtask.NewTaskError, match="X must hold one row per example, got a single number"):
        newtask.read_task_file(f)
    np.savez(f, X=np.zeros((2, 64)), y=np.array([False, True]))
    x, y = newtask.read_task_file(f)
    assert y.tolist() == [0, 1] and y.dtype.kind == "i"
