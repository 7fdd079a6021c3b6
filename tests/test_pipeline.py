"""End to end: a real tiny run writes the run-directory contract, reproducibly."""
import json

import numpy as np
import pytest
import torch

from pdiff_core import pipeline, runs
from pdiff_core.prepare import prepare
from pdiff_core.config import preset_config
from pdiff_core.params import Codec


def tiny(**kw):
    return preset_config("tiny", analysis=False, **kw)


def run_tiny(name, **kw):
    cfg = tiny(**kw)
    d = runs.run_path(name, must_exist=False)
    d.mkdir(parents=True)
    return cfg, d, pipeline.execute(cfg, d, prepare(cfg))


def test_tiny_run_writes_the_contract(runs_dir):
    cfg, d, metrics = run_tiny("a")
    for f in ["config.json", "status.json", "log.txt", "originals.safetensors", "generated.safetensors",
              "predictions.npz", "metrics.json", "base_model.safetensors", "ae.safetensors", "denoiser.safetensors"]:
        assert (d / f).exists(), f
    assert not list(d.glob(".*.tmp"))                          # no half-written leftovers
    status = runs.read_json(d / "status.json")
    assert status["state"] == "done" and status["progress"] == 1.0
    assert len(status["losses"]["ae"]) > 2 and len(status["losses"]["ddpm"]) > 2
    orig, meta = runs.read_safetensors(d / "originals.safetensors")
    gen, _ = runs.read_safetensors(d / "generated.safetensors")
    codec = Codec.from_metadata(meta)
    assert orig["params"].shape == (cfg.k, codec.dim) and gen["params"].shape == (cfg.n_generate, codec.dim)
    assert codec.names == ["bn1.weight", "bn1.bias", "bn2.weight", "bn2.bias"]
    base, _ = runs.read_safetensors(d / "base_model.safetensors")
    assert set(codec.names) <= set(base)
    pred = runs.read_npz(d / "predictions.npz")
    m = runs.read_json(d / "metrics.json")
    assert pred["originals"].shape == (cfg.k, m["n_test"]) and pred["generated"].shape == (cfg.n_generate, m["n_test"])
    # accuracies in metrics.json are recomputable from predictions.npz
    acc = (pred["generated"] == pred["y_test"]).mean(1)
    assert np.allclose(acc, m["groups"]["generated"]["test_acc"], atol=1e-6)
    assert len(m["groups"]["originals"]["val_acc"]) == cfg.k
    # the checkpoints really differ
    assert m["checkpoint_spread"]["mean_pairwise_l2"] > 0
    assert m["base"]["test_acc"] > 0.5                          # the base model learned digits


@pytest.mark.slow
def test_same_seed_gives_identical_metrics(runs_dir):
    _, d1, _ = run_tiny("s1", seed=3)
    _, d2, _ = run_tiny("s2", seed=3)
    assert (d1 / "metrics.json").read_bytes() == (d2 / "metrics.json").read_bytes()
    a, _ = runs.read_safetensors(d1 / "generated.safetensors")
    b, _ = runs.read_safetensors(d2 / "generated.safetensors")
    assert torch.equal(a["params"], b["params"])


def test_cancel_file_stops_cleanly(runs_dir):
    cfg = tiny()
    d = runs.run_path("c", must_exist=False)
    d.mkdir(parents=True)
    (d / "CANCEL").touch()
    with pytest.raises(pipeline.Cancelled):
        pipeline.execute(cfg, d, prepare(cfg))
    assert runs.read_json(d / "status.json")["state"] == "cancelled"
    assert not (d / "metrics.json").exists()


@pytest.mark.parametrize("where", ["at a progress report", "between two reports"])
def test_a_run_directory_deleted_under_its_run_stops_it_and_stays_deleted(runs_dir, monkeypatch, where):
    """`rm -rf` of a going run: the worker made the folder again and ended 'done' without config.json,
    which analyze and report then called damaged. Now the run stops as cancelled and writes nothing."""
    import shutil
    real = pipeline.train_ddpm

    def delete_then_train(*a, **k):
        shutil.rmtree(d)
        if where == "between two reports":        # the next write, not a progress report, finds it gone
            raise FileNotFoundError(2, "No such file or directory", str(d / "ae.safetensors"))
        return real(*a, **k)
    monkeypatch.setattr(pipeline, "train_ddpm", delete_then_train)
    cfg = tiny()
    d = runs.run_path("gone", must_exist=False)
    d.mkdir(parents=True)
    with pytest.raises(pipeline.Cancelled, match="was deleted while the run was going"):
        pipeline.execute(cfg, d, prepare(cfg))
    assert not d.exists()


def test_failure_leaves_failed_state_and_traceback(runs_dir, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("denoiser exploded")
    monkeypatch.setattr(pipeline, "train_ddpm", broken)     # inject a failure mid-run
    cfg = tiny()
    d = runs.run_path("f", must_exist=False)
    d.mkdir(parents=True)
    with pytest.raises(RuntimeError):
        pipeline.execute(cfg, d, prepare(cfg))
    status = runs.read_json(d / "status.json")
    assert status["state"] == "failed" and "denoiser exploded" in status["error"]
    log = (d / "log.txt").read_text()
    assert "Traceback" in log and "denoiser exploded" in log


def test_nonfinite_generation_is_counted_not_fatal(runs_dir, monkeypatch):
    real = pipeline.sample
    def with_nan(*a, **k):
        x = real(*a, **k)
        x[0] = float("nan")
        return x
    monkeypatch.setattr(pipeline, "sample", with_nan)
    _, d, m = run_tiny("n")
    m = runs.read_json(d / "metrics.json")
    assert m["generated_nonfinite"] == 1
    assert m["groups"]["generated"]["test_acc"][0] is None
    assert m["groups"]["generated"]["summary"]["n"] == len(m["groups"]["generated"]["test_acc"]) - 1


def test_run_ids_cannot_escape(runs_dir):
    for bad in ["..", "../x", "a/b", "", ".hidden", "x" * 200]:
        with pytest.raises(runs.RunError):
            runs.run_path(bad, must_exist=False)


@pytest.mark.slow
def test_diverging_collection_halves_the_rate_and_finishes(runs_dir):
    cfg = tiny(layers="all", collect_lr=10.0)
    d = runs.run_path("div", must_exist=False)
    d.mkdir(parents=True)
    m = pipeline.execute(cfg, d, prepare(cfg))
    assert runs.read_json(d / "status.json")["state"] == "done"
    assert m["zoo"]["lr_requested"] == 10.0 and m["zoo"]["lr"] == 10.0 / 2 ** m["zoo"]["lr_halvings"] < 10.0
    assert runs.read_json(d / "metrics.json")["zoo"]["lr"] == m["zoo"]["lr"]
    assert "diverged at collect_lr=10" in (d / "log.txt").read_text()


def test_collection_that_diverges_past_every_halving_fails_clearly(runs_dir, monkeypatch):
    from pdiff_core import collect
    monkeypatch.setattr(collect, "MAX_HALVINGS", 0)
    cfg = tiny(layers="all", collect_lr=10.0)
    d = runs.run_path("div", must_exist=False)
    d.mkdir(parents=True)
    with pytest.raises(ValueError, match="lower collect_lr"):
        pipeline.execute(cfg, d, prepare(cfg))
    status = runs.read_json(d / "status.json")
    assert status["state"] == "failed" and "collect_lr" in status["error"]


def test_json_writer_turns_nan_into_null(tmp_path):
    runs.write_json(tmp_path / "x.json", {"a": float("nan"), "b": [np.float32(1.5), float("inf")], "c": np.int64(3)})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": None, "b": [1.5, None], "c": 3}
