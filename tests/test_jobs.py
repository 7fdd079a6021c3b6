"""Background workers: start, several at once, cancel, a killed worker reported as failed, uploads, delete."""
import io
import os
import re
import select
import signal
import threading
import time

import numpy as np
import pytest

from pdiff_core import jobs, runs
from pdiff_core.config import parse_overrides, preset_config
from pdiff_core.data import DataError

FAST = dict(analysis=False)


def wait(run_id, states=("done", "failed", "cancelled"), timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = jobs.refresh(run_id)
        if status.get("state") in states:
            return status
        time.sleep(0.2)
    raise AssertionError(f"{run_id} still {jobs.refresh(run_id).get('state')} after {timeout} s")


@pytest.fixture(autouse=True)
def _stop_workers():
    yield
    jobs.stop_all_started()


def test_worker_command_rebuilds_the_config():
    cfg = preset_config("digits-quick", k=37, layers="bn2.weight,bn2.bias", in_noise=0.0025, analysis=False,
                        sampler="ddpm")
    cmd = jobs.worker_command(cfg, "x")
    pairs = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"]
    assert preset_config(cmd[cmd.index("--preset") + 1], **parse_overrides(pairs)) == cfg
    assert cmd[-3:] == ["--run-id", "x", "--quiet"]


def waiting_worker(timeout: float = 120):
    """The worker jobs.standby() started, once it says its imports are done."""
    jobs.standby()
    proc = jobs._standby["proc"]
    assert proc is not None, "no worker was started"
    assert select.select([proc.stdout], [], [], timeout)[0], f"the waiting worker was not ready in {timeout} s"
    return proc


@pytest.mark.slow
def test_two_runs_at_once_both_finish(runs_dir, monkeypatch):
    """The first run goes to a worker that did its imports before (jobs.standby), the second to a fresh one:
    the same config gives the same predictions either way."""
    monkeypatch.setenv("PDIFF_STANDBY", "1")
    waiting = waiting_worker()
    a = jobs.start(preset_config("tiny", seed=1, **FAST))
    jobs.standby()                  # a worker of ours is going: no second one waits beside it
    assert jobs._standby["proc"] is None
    b = jobs.start(preset_config("tiny", seed=1, **FAST))
    first = runs.read_status(runs.run_path(a))
    assert first["state"] in ("queued", "running") and first["pid"] == waiting.pid   # shown at once, with its pid
    assert first["standby"] == "imports done"
    assert runs.read_status(runs.run_path(b))["pid"] not in (None, waiting.pid)
    assert "standby" not in runs.read_status(runs.run_path(b))
    assert {r["run"] for r in jobs.list_runs()} == {a, b}
    for rid in (a, b):
        status = wait(rid)
        assert status["state"] == "done", status
        assert (runs.run_path(rid) / "metrics.json").exists()
        assert status["losses"]["ae"] and status["losses"]["ddpm"]
    assert waiting.wait(timeout=30) == 0
    pa, pb = (runs.read_npz(runs.run_path(r) / "predictions.npz") for r in (a, b))
    assert pa.keys() == pb.keys() and all(np.array_equal(pa[k], pb[k]) for k in pa)


@pytest.mark.slow
def test_a_waiting_worker_is_used_only_where_a_fresh_one_would_be_the_same(runs_dir, monkeypatch, tmp_path):
    """A waiting worker started for another runs directory (or another environment) is stopped, not
    used; PDIFF_STANDBY=0 starts none; one whose app has gone (end of its input) exits by itself."""
    monkeypatch.setenv("PDIFF_STANDBY", "0")
    jobs.standby()
    assert jobs._standby["proc"] is None
    monkeypatch.setenv("PDIFF_STANDBY", "1")
    jobs.standby()
    first = jobs._standby["proc"]
    jobs.standby()
    assert jobs._standby["proc"] is first                       # still the one: nothing changed
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(tmp_path / "elsewhere"))
    jobs.standby()
    second = jobs._standby["proc"]
    assert second is not first and first.poll() is not None     # the stale one was stopped
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(runs_dir))
    assert jobs._hand_to_standby(runs_dir, ["run"], jobs.worker_env()) is None and second.poll() is not None
    third = waiting_worker()
    jobs._standby.update(proc=None, key=None)
    third.stdin.close()                                          # as when the app's server exits
    assert third.wait(timeout=30) == 0


@pytest.mark.slow
@pytest.mark.parametrize("waiting", [False, True], ids=["fresh", "waiting"])
def test_worker_that_dies_at_startup_shows_its_error(runs_dir, monkeypatch, waiting):
    """Its one line reaches the run's status from a fresh worker, and from a waiting one given the run
    while still importing (it once lost all its output there: the app had stopped reading its "ready")."""
    if waiting:
        monkeypatch.setenv("PDIFF_STANDBY", "1")
        jobs.standby()
        pid = jobs._standby["proc"].pid
    rid = jobs.start(preset_config("tiny", dataset="npz", data_root="/nonexistent/data.npz", **FAST))
    status = wait(rid, timeout=120)
    assert status["state"] == "failed"
    assert "npz file not found" in status["error"]
    assert (status["pid"] == pid and status["standby"] == "still importing") if waiting else status["pid"]


@pytest.mark.slow
def test_a_waiting_worker_whose_imports_failed_says_why_in_the_run(runs_dir, monkeypatch, tmp_path):
    """An import error in the waiting worker is not lost: the run it is given fails with it, as a fresh
    worker's would."""
    (tmp_path / "torch.py").write_text("raise ImportError('a broken torch, for this test')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("PDIFF_STANDBY", "1")
    pid = waiting_worker().pid
    rid = jobs.start(preset_config("tiny", **FAST))
    status = wait(rid, timeout=60)
    assert status["state"] == "failed" and status["pid"] == pid
    assert "exited with code 1" in status["error"] and "ImportError: a broken torch, for this test" in status["error"]


@pytest.mark.slow
def test_cancel_stops_the_worker(runs_dir):
    rid = jobs.start(preset_config("digits-quick", **FAST))
    wait(rid, states=("running",), timeout=120)
    jobs.cancel(rid)
    status = wait(rid)
    assert status["state"] == "cancelled", status
    assert re.fullmatch(r"cancelled from the app during (collect|autoencoder|diffusion|generate|evaluate|analysis)",
                        status["message"]), status      # who, and where


def test_a_cancel_file_is_never_read_half_written(runs_dir):
    """The app's and a sweep's CANCEL files appear whole: a run that read one between its creation and its
    text ended "cancelled by user" (a third of the reads did, in a loop beside the writer)."""
    from pdiff_core import executors
    run_dir = runs.run_path("r", must_exist=False)
    run_dir.mkdir(parents=True)
    runs.write_json(run_dir / "status.json", {"state": "queued", "pid": None})
    texts, done = [], threading.Event()

    def reader():                       # as the run reads it at each progress report
        while not done.is_set():
            try:
                texts.append((run_dir / "CANCEL").read_text())
            except FileNotFoundError:
                pass

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(400):
            jobs.cancel("r") if i % 2 else executors.ask_to_stop(run_dir)
            (run_dir / "CANCEL").unlink()
    finally:
        done.set()
        thread.join()
    assert texts and set(texts) <= {"cancelled from the app\n", "cancelled with the sweep\n"}, set(texts)


@pytest.mark.slow
def test_killed_worker_is_reported_failed_on_disk(runs_dir):
    rid = jobs.start(preset_config("digits-quick", **FAST))
    pid = runs.read_status(runs.run_path(rid))["pid"]
    wait(rid, states=("running",), timeout=120)
    os.killpg(pid, signal.SIGKILL)
    status = wait(rid, timeout=30)
    assert status["state"] == "failed"
    assert "was killed by SIGKILL" in status["error"]
    assert runs.read_status(runs.run_path(rid))["state"] == "failed"     # not left "running" for other readers


def test_a_dead_pid_from_another_app_process_is_failed(runs_dir):
    run_dir = runs.run_path("orphan", must_exist=False)
    run_dir.mkdir(parents=True)
    runs.write_json(run_dir / "config.json", preset_config("tiny").to_dict())
    runs.write_json(run_dir / "status.json", {"state": "running", "stage": "diffusion", "progress": 0.5,
                                              "pid": 2 ** 22 + 12345, "updated": time.time()})
    runs.append_log(run_dir, "[diffusion] step 10")
    status = jobs.refresh("orphan")
    assert status["state"] == "failed" and "[diffusion] step 10" in status["error"]


@pytest.mark.slow
def test_delete_refuses_a_going_run_then_deletes(runs_dir):
    rid = jobs.start(preset_config("digits-quick", **FAST))
    with pytest.raises(runs.RunError, match="still going"):
        jobs.delete(rid)
    jobs.cancel(rid)
    wait(rid)
    jobs.delete(rid)
    assert not (runs_dir / rid).exists()


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_upload_is_validated_and_stored_in_the_runs_dir(runs_dir):
    rng = np.random.default_rng(0)
    good = npz_bytes(X=rng.normal(size=(90, 5)).astype(np.float32), y=np.arange(90) % 3)
    path = jobs.save_upload("mine.npz", good)
    assert path.parent == runs_dir / jobs.UPLOADS and path.read_bytes() == good
    assert jobs.save_upload("mine.npz", good) == path                       # same bytes, same file
    with pytest.raises(DataError, match="never unpickled"):
        jobs.save_upload("evil.npz", npz_bytes(X=np.array([{"a": 1}] * 40, dtype=object), y=np.zeros(40)))
    with pytest.raises(DataError, match="lacks"):
        jobs.save_upload("wrong.npz", npz_bytes(features=np.zeros((40, 2))))
    with pytest.raises(DataError, match=".npz"):
        jobs.save_upload("data.csv", b"1,2,3")
    assert sorted(p.name for p in (runs_dir / jobs.UPLOADS).iterdir()) == [path.name]   # no leftovers
    assert runs.list_runs() == []                                            # uploads are not runs
