"""Sweeps: grids, both executors on the tiny preset (a real local Ray cluster), faults, resume, cancel."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pdiff_core import driver, executors, runs, sweep
from pdiff_core.__main__ import main
from tests.conftest import ROOT, fake_sweep, wait_for


def cli(runs_dir: Path, *args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, PDIFF_RUNS_DIR=str(runs_dir), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "pdiff_core", "sweep", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def state(runs_dir: Path, name: str) -> dict:
    path = runs_dir / "_sweeps" / name / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}


# ---- the grid -----------------------------------------------------------------------------------

def test_grid_expands_to_every_combination_times_seeds(runs_dir):
    grid = sweep.parse_grid(["k=12,24", "zoo=trajectory,independent", "latent_noise=0.1,0.05"])
    assert grid == {"k": [12, 24], "zoo": ["trajectory", "independent"], "latent_noise": [0.1, 0.05]}
    cells = sweep.expand("g", "tiny", grid, [0, 3])
    assert len(cells) == 2 * 2 * 2 * 2
    combos = {(c["overrides"]["k"], c["overrides"]["zoo"], c["overrides"]["latent_noise"], c["seed"]) for c in cells}
    assert len(combos) == 16
    assert len({c["run"] for c in cells}) == 16 and all(runs.RUN_ID.match(c["run"]) for c in cells)
    cfg = sweep.config_of({"preset": "tiny"}, cells[5])
    assert (cfg.k, cfg.zoo, cfg.latent_noise, cfg.seed, cfg.width) == (
        cells[5]["overrides"]["k"], cells[5]["overrides"]["zoo"], cells[5]["overrides"]["latent_noise"],
        cells[5]["seed"], 16)                                           # the rest from the preset


@pytest.mark.parametrize("args, needle", [
    (["--grid", "nope=1,2"], "unknown config key 'nope'"),
    (["--grid", "k=10,x"], "--grid k=x: expected a whole number"),
    (["--grid", "k="], "has no values"),
    ([], "the grid is empty"),
    (["--grid", "k=1,12"], "k must be at least 2"),
    (["--grid", "zoo=trajectory,sideways"], "zoo must be"),
    (["--grid", "k=12", "--grid", "k=24"], "given twice"),
    (["--grid", "k=12", "--seeds", "0,x"], "--seeds expects integers"),
    (["--grid", "k=12", "--seeds", ""], "--seeds needs distinct integers"),     # not silently seed 0
    (["--grid", "k=12", "--executor", "slurm"], "--executor must be local or ray"),
    (["--grid", "seed=1,2"], "use --preset and --seeds"),
    (["--grid", "dataset=nosuch"], "nosuch"),
    (["--grid", "layers=last_bn,nope"], "layers=nope (arch mlp): unknown layer"),   # checked before any cell runs
])
def test_bad_grids_exit_2_with_one_line_before_anything_runs(runs_dir, capsys, args, needle):
    assert main(["sweep", "--preset", "tiny", "--name", "bad", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and err.count("\n") == 0, err
    assert not (runs_dir / "_sweeps" / "bad").exists() and not list(runs_dir.glob("bad-*"))


def test_cell_run_ids_stay_valid_and_distinct_at_the_longest_name_and_seed():
    """Ids were cut at 120 characters before '-sSEED' was added: up to 132, past runs.RUN_ID's 128."""
    name = "n" * 60
    cells = sweep.expand(name, "tiny", {"collect_lr": [0.3000001, 0.3000002], "base_lr": [0.0030000001],
                                        "ae_lr": [0.0020000001], "ddpm_lr": [0.0020000001]},
                         [1000000, 999999])
    ids = [c["run"] for c in cells]
    assert len(set(ids)) == len(ids) == 4 and all(runs.RUN_ID.match(i) for i in ids), ids
    assert max(map(len, ids)) == 128


def test_a_name_in_use_is_refused_and_nothing_is_touched(runs_dir, capsys):
    sweep.create("taken", "tiny", {"k": [12]}, [0])
    before = (runs_dir / "_sweeps" / "taken" / "sweep.json").read_bytes()
    assert main(["sweep", "--preset", "tiny", "--grid", "k=24", "--name", "taken"]) == 2
    assert "exists already" in capsys.readouterr().err
    assert (runs_dir / "_sweeps" / "taken" / "sweep.json").read_bytes() == before
    assert main(["sweep", "--resume", "nosuch"]) == 2
    assert "no sweep 'nosuch'" in capsys.readouterr().err


# ---- a damaged or shared sweep folder ---------------------------------------------------------------

@pytest.fixture
def no_cells(monkeypatch):
    """The local executor replaced by a recorder: a drive that gets that far runs nothing (and is quick)."""
    drives = []
    monkeypatch.setattr(executors, "run_local", lambda sw, cells, *a, **k: drives.append((sw, cells)))
    return drives


@pytest.mark.parametrize("damage, why", [
    (lambda sw: sw.pop("cells"), "'cells' is missing or not a list"),
    (lambda sw: sw.pop("created"), "'created' is missing or not a number"),
    (lambda sw: sw.pop("preset"), "'preset' is missing or not a string"),
    (lambda sw: sw.update(cells="x"), "'cells' is missing or not a list"),
    (lambda sw: sw.update(name="other"), "its name 'other' is not its folder's 'bad'"),
    (lambda sw: sw["cells"][0].update(run=".."), "cell 0: '..' is not a valid run id"),
])
def test_a_damaged_sweep_is_listed_as_such_and_refused_in_one_line(runs_dir, capsys, no_cells, damage, why):
    fake_sweep("good")
    fake_sweep("bad", damage)
    assert main(["sweep", "--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith("good ") and "1 pending" in line for line in out), out
    (bad,) = [line for line in out if line.startswith("bad ")]
    assert "damaged" in bad and why in bad and "delete the run" not in bad, bad
    assert main(["sweep", "--resume", "bad"]) == 2
    err = capsys.readouterr().err.strip()
    assert why in err and "remove the sweep's folder" in err and err.count("\n") == 0, err
    assert not no_cells


def test_a_damaged_state_file_is_listed_as_such_and_hides_no_other_sweep(runs_dir, capsys):
    """A state.json whose 'going' parses as a list crashed `sweep --list` (and the Sweeps page) for every sweep."""
    from pdiff_core import runs
    fake_sweep("good")
    fake_sweep("bad")
    runs.write_json(sweep.root() / "bad" / "state.json", {"state": "created", "going": [1]})
    assert main(["sweep", "--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith("good ") and "1 pending" in line for line in out), out
    (bad,) = [line for line in out if line.startswith("bad ")]
    assert "damaged" in bad and "'going' is a JSON list, not an object" in bad and "delete it" in bad, bad


def test_a_cell_run_id_outside_the_runs_folder_moves_nothing(runs_dir, capsys, no_cells):
    victim = runs_dir.parent / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    fake_sweep("evil", lambda sw: sw["cells"][0].update(run="../victim"))
    assert main(["sweep", "--resume", "evil"]) == 2
    assert "cell 0: '../victim' is not a valid run id" in capsys.readouterr().err
    assert (victim / "keep.txt").read_text() == "mine" and not (runs_dir / "_sweeps" / "evil" / "attempts").exists()


def test_a_second_driver_is_refused_while_one_holds_the_sweep(runs_dir, capsys, no_cells):
    import fcntl
    fake_sweep("two")
    with open(runs_dir / "_sweeps" / "two" / "driver.lock", "w") as held:    # the first driver, as the OS sees it
        fcntl.flock(held, fcntl.LOCK_EX)
        assert main(["sweep", "--resume", "two"]) == 2
        assert "sweep two is running (another driver holds it)" in capsys.readouterr().err
        assert not no_cells and not (runs_dir / "_sweeps" / "two" / "state.json").exists()
    assert main(["sweep", "--resume", "two"]) == 1 and len(no_cells) == 1    # released: the next one drives (1: no cell ran)


def test_a_sweep_folder_without_sweep_json_is_listed_with_how_to_free_its_name(runs_dir, capsys):
    """A create that stopped between its mkdir and sweep.json left a folder that took the name ('exists
    already') but that --list never showed."""
    fake_sweep("good")
    (runs_dir / "_sweeps" / "half").mkdir()
    (runs_dir / "_sweeps" / "stray.txt").write_text("not a sweep")           # a file there is no sweep at all
    assert main(["sweep", "--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    (half,) = [line for line in out if line.startswith("half ")]
    assert "holds no sweep.json" in half and "delete that folder to use the name 'half' again" in half, out
    assert any(line.startswith("good ") for line in out) and not any("stray" in line for line in out), out


def test_launching_a_running_sweep_is_refused_and_keeps_its_driver(runs_dir):
    """A second Resume (another tab) started a driver that the lock refused, and its pid replaced the live
    driver's in state.json: the sweep read 'interrupted' while its cells ran."""
    fake_sweep("busy")
    sweep.write_state("busy", state="running", pid=os.getpid(), going={})     # a live driver: this process
    with pytest.raises(sweep.SweepError, match=r"sweep busy is running \(driver pid \d+\); wait for it, or cancel it"):
        driver.launch("busy")
    s = sweep.read_state("busy")
    assert s["state"] == "running" and s["pid"] == os.getpid()
    assert not (runs_dir / "_sweeps" / "busy" / "driver.out").exists()


def test_two_creates_of_one_name_at_once_give_the_one_line_error(runs_dir, monkeypatch):
    """The other create makes the folder between this one's 'exists' check and its mkdir."""
    expand = sweep.expand
    def racing(name, *a):
        (runs_dir / "_sweeps" / name).mkdir(parents=True)
        return expand(name, *a)
    monkeypatch.setattr(sweep, "expand", racing)
    with pytest.raises(sweep.SweepError, match="a sweep named 'race' exists already"):
        sweep.create("race", "tiny", {"k": [12]}, [0])
    assert not any((runs_dir / "_sweeps" / "race").iterdir())


def test_a_device_this_machine_lacks_is_refused_at_creation(runs_dir, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(sweep.SweepError, match="device=cuda: .*no CUDA GPU is visible; use --device cpu"):
        sweep.create("gpu", "tiny", {"device": ["cpu", "cuda"]}, [0])
    assert not (runs_dir / "_sweeps" / "gpu").exists()


@pytest.mark.slow
def test_a_cell_that_exits_before_starting_says_why(runs_dir, monkeypatch):
    """Its worker's one line, not only its exit code (the line was left in the stage's hidden .RID.out)."""
    from pdiff_core import jobs
    monkeypatch.setattr(jobs, "worker_command", lambda cfg, rid: [
        sys.executable, "-c", "import sys; print('error: no CUDA GPU is visible; use --device cpu'); print(); sys.exit(2)"])
    sw = fake_sweep("early")
    driver.run("early", log=lambda m: None)
    d = runs_dir / sw["cells"][0]["run"]
    assert runs.read_status(d)["error"] == ("the worker process exited with code 2 before it started: "
                                           "error: no CUDA GPU is visible; use --device cpu")
    assert "no CUDA GPU" in (d / "worker.out").read_text()
    assert not list((runs_dir / "_sweeps" / "early" / "stage").iterdir())


def test_cancel_leaves_a_finished_sweep_done(runs_dir, capsys):
    fake_sweep("fin")
    runs.write_json(runs_dir / "_sweeps" / "fin" / "state.json", {"state": "done"})
    assert main(["sweep", "--cancel", "fin"]) == 2
    assert "sweep fin has already finished (done); nothing to cancel" in capsys.readouterr().err
    assert sweep.read_state("fin")["state"] == "done" and not (runs_dir / "_sweeps" / "fin" / "CANCEL").exists()


def test_resume_checks_and_uses_its_workers(runs_dir, capsys, no_cells):
    fake_sweep("w")
    assert main(["sweep", "--resume", "w", "--workers", "0"]) == 2
    assert "--workers must be at least 1, got 0" in capsys.readouterr().err and not no_cells
    main(["sweep", "--resume", "w", "--workers", "3"])
    assert no_cells[0][0]["workers"] == 3


# ---- the local executor -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def local_sweep(tiny_sweep):
    """Four tiny cells (k=12,24 × seeds 0,1) on the local executor, two at once: (runs dir, sweep dict, CLI
    output). conftest's tiny_sweep, shared with test_app's Sweeps page."""
    runs_dir, _, out = tiny_sweep
    mp = pytest.MonkeyPatch()
    mp.setenv("PDIFF_RUNS_DIR", str(runs_dir))
    yield runs_dir, sweep.load("t"), out
    mp.undo()


def test_local_sweep_makes_ordinary_tagged_runs(local_sweep):
    runs_dir, sw, out = local_sweep
    assert [(c["overrides"], c["seed"]) for c in sw["cells"]] == [
        ({"k": 12}, 0), ({"k": 12}, 1), ({"k": 24}, 0), ({"k": 24}, 1)] and sw["executor"] == "local"
    for cell in sw["cells"]:
        d = runs_dir / cell["run"]
        assert runs.read_status(d)["state"] == "done"
        cfg = runs.read_json(d / "config.json")
        assert (cfg["k"], cfg["seed"]) == (cell["overrides"]["k"], cell["seed"])
        assert sw["name"] in runs.read_notes(d)["tags"]
        node = runs.read_json(d / "node.json")
        assert node["executor"] == "local" and node["peak_rss_mib"] > 50 and node["attempt"] == 1
        assert (d / "analysis.json").exists() and (d / "worker.out").exists()
    assert {r["run"] for r in runs.list_runs()} == {c["run"] for c in sw["cells"]}   # the runs table sees them
    assert not any((runs_dir / "_sweeps" / "t" / "stage").iterdir()), "a cell was left in the stage"
    st = state(runs_dir, "t")
    assert st["state"] == "done" and st["going"] == {} and st["driver_peak_rss_mib"] > 0
    rows = sweep.results(sw)
    a = runs.read_json(runs_dir / sw["cells"][1]["run"] / "analysis.json")
    assert rows[1]["replica_rate"] == pytest.approx(100 * a["memorization"]["replica_rate"])
    assert rows[1]["smax_mean"] == pytest.approx(a["memorization"]["groups"]["generated"]["smax_mean"])
    assert "4 of 4 cells to run" in out


def test_a_cells_damaged_analysis_blanks_its_figures_not_the_sweep(runs_dir):
    """A corrupt analysis.json in one cell raised out of sweep.results, and the Sweeps page lost the whole sweep."""
    sw = fake_sweep("dmg")
    d = runs_dir / sw["cells"][0]["run"]
    d.mkdir(parents=True)
    (d / "analysis.json").write_text("{not json")
    (row,) = sweep.results(sw)
    assert "analysis.json is corrupt" in row["message"] and row["gen_minus_orig"] is None, row
    runs.write_json(d / "analysis.json", {"accuracy": {"median_difference": {"diff": "x"}}, "memorization": []})
    (row,) = sweep.results(sw)
    assert all(row[k] is None for k in sweep.HEADLINE), row


def test_a_layers_value_of_several_parameters_joins_them_with_plus():
    """--grid layers=bn2.weight,bn2.bias silently made two cells; '+' keeps one value of two names."""
    assert sweep.parse_grid(["layers=bn2.weight+bn2.bias,head"]) == {"layers": ["bn2.weight,bn2.bias", "head"]}


@pytest.mark.parametrize("grid", [*(s["grid"] for s in sweep.SWEEP_PRESETS.values()),
                                  {"layers": ["bn2.weight,bn2.bias", "head"], "latent_noise": [0.1, 0.05],
                                   "analysis": [True, False], "zoo": ["trajectory"]}])
def test_grid_text_is_read_back_as_the_same_grid(grid):
    """The Sweeps page fills its grid box with grid_text (a preset sweep's grid): parse_grid gives the grid back."""
    assert sweep.parse_grid(sweep.grid_text(grid).splitlines()) == grid


def test_mean_ci_is_a_t_interval_over_seeds():
    m, lo, hi, n = sweep.mean_ci([1.0, 2.0, 3.0, None])
    assert (m, n) == (2.0, 3) and lo == pytest.approx(2 - 4.302653 / 3 ** 0.5) and hi == pytest.approx(2 + 4.302653 / 3 ** 0.5)
    assert sweep.mean_ci([5.0])[0] == 5.0 and sweep.mean_ci([]) [3] == 0


@pytest.mark.slow
def test_a_killed_local_worker_is_retried_once(tmp_path):
    runs_dir = tmp_path / "runs"
    # no analysis stage: this checks the retry, and the analysis only costs time here
    proc = cli(runs_dir, "--preset", "tiny", "--grid", "k=12", "--grid", "analysis=false", "--name", "kill",
               "--workers", "1")
    try:
        staged = runs_dir / "_sweeps" / "kill" / "stage"
        # kill the worker once it is training (its run folder exists and reports a stage past collect)
        def training():
            g = state(runs_dir, "kill").get("going") or {}
            rid = next(iter(g), None)
            if rid and (staged / rid / "status.json").exists():
                s = runs.read_status(staged / rid)
                return (rid, g[rid]["pid"]) if s.get("stage") in ("autoencoder", "diffusion") else None
        rid, pid = wait_for(training)
        os.kill(pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert "killed by SIGKILL; retrying (attempt 2)" in out
    d = runs_dir / rid
    assert runs.read_status(d)["state"] == "done" and runs.read_json(d / "node.json")["attempt"] == 2
    first = runs_dir / "_sweeps" / "kill" / "attempts" / f"{rid}.1"
    assert runs.read_status(first)["state"] == "running", "the killed attempt is kept as it was left"


@pytest.mark.slow
def test_a_killed_driver_resumes_with_only_the_missing_cells(tmp_path):
    runs_dir = tmp_path / "runs"
    proc = cli(runs_dir, "--preset", "tiny", "--grid", "k=12,16,20", "--grid", "analysis=false", "--name", "res",
               "--workers", "1", "--seeds", "0")
    try:
        sw_cells = lambda: json.loads((runs_dir / "_sweeps" / "res" / "sweep.json").read_text())["cells"]
        wait_for(lambda: (runs_dir / "_sweeps" / "res" / "sweep.json").exists())
        first = sw_cells()[0]["run"]
        wait_for(lambda: (runs_dir / first / "status.json").exists(), timeout=300)      # one cell landed
        wait_for(lambda: (state(runs_dir, "res").get("going") or {}), timeout=60)      # the next one going
        going = next(iter(state(runs_dir, "res")["going"].values()))["pid"]
        proc.kill()                                                                    # SIGKILL the driver
        proc.wait(timeout=30)
    finally:
        proc.kill()
    wait_for(lambda: not Path(f"/proc/{going}").exists() or
             Path(f"/proc/{going}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z", timeout=30)
    env = dict(os.environ, PDIFF_RUNS_DIR=str(runs_dir))
    os.environ["PDIFF_RUNS_DIR"] = str(runs_dir)
    try:
        assert sweep.read_state("res")["state"] == "interrupted"
        assert sum(c["state"] == "done" for c in sweep.results(sweep.load("res"))) == 1
    finally:
        del os.environ["PDIFF_RUNS_DIR"]
    done = subprocess.run([sys.executable, "-m", "pdiff_core", "sweep", "--resume", "res"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 of 3 cells to run" in done.stdout
    assert first not in done.stdout, "the finished cell ran again"
    cells = json.loads((runs_dir / "_sweeps" / "res" / "sweep.json").read_text())["cells"]
    assert all(runs.read_status(runs_dir / c["run"])["state"] == "done" for c in cells)
    assert len(list((runs_dir / "_sweeps" / "res" / "attempts").iterdir())) == 1   # the half-run cell, kept


def test_a_going_cell_is_asked_to_stop_through_its_cancel_file_once_it_reports(tmp_path):
    """Both executors stop a cell this way; before its run reports (no status.json) only a signal can."""
    cell = tmp_path / "cell"
    cell.mkdir()
    assert executors.ask_to_stop(cell) is False and not (cell / "CANCEL").exists()
    runs.write_json(cell / "status.json", {"state": "running"})
    assert executors.ask_to_stop(cell) is True
    assert (cell / "CANCEL").read_text() == "cancelled with the sweep\n"
    (cell / "CANCEL").write_text("cancelled from the app\n")       # asked already: its reason is kept
    assert executors.ask_to_stop(cell) is True and (cell / "CANCEL").read_text() == "cancelled from the app\n"


@pytest.mark.slow
def test_cancel_stops_the_going_cell_and_the_remaining_ones(tmp_path, monkeypatch):
    runs_dir = tmp_path / "runs"
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(runs_dir))
    proc = cli(runs_dir, "--preset", "tiny", "--grid", "k=12,16", "--grid", "analysis=false", "--name", "can",
               "--workers", "1")
    try:
        staged = runs_dir / "_sweeps" / "can" / "stage"
        wait_for(lambda: any((d / "status.json").exists() for d in staged.iterdir()) if staged.is_dir() else False)
        assert "cancel sent" in sweep.cancel("can")
        out, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 1, out
    rows = sweep.results(sweep.load("can"))
    assert [r["state"] for r in rows] == ["cancelled", "pending"], rows
    assert rows[0]["message"].startswith("cancelled with the sweep during "), rows
    assert sweep.read_state("can")["state"] == "cancelled"


# ---- the Ray executor ---------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["closed port", "silent port", "unknown host", "no port"])
def test_a_ray_address_where_no_cluster_answers_is_refused_in_one_line_before_anything_exists(
        runs_dir, capsys, monkeypatch, where):
    """ray.init retried a closed port for minutes and waited on a port that is not Ray's for ever; an unknown
    host failed only after the sweep's folder existed, left 'interrupted'."""
    monkeypatch.setattr(sweep, "ADDRESS_TIMEOUT_S", 0.5)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    if where == "closed port":
        sock.close()
    else:
        sock.listen()                     # connections are accepted (by the kernel) and never answered
    address, needle = {"closed port": (f"127.0.0.1:{port}", f"no Ray cluster answers at 127.0.0.1:{port}: start one"),
                       "silent port": (f"127.0.0.1:{port}", "no Ray cluster answers"),
                       "unknown host": ("notahost:6379", "no host 'notahost' is known"),
                       "no port": ("notahost", "--address must be HOST:PORT")}[where]
    try:
        t0 = time.time()
        assert main(["sweep", "--preset", "tiny", "--grid", "k=12", "--name", "bad", "--executor", "ray",
                     "--address", address]) == 2
    finally:
        sock.close()
    err = capsys.readouterr().err.strip()
    assert needle in err and err.count("\n") == 0 and time.time() - t0 < 10, err
    assert not (runs_dir / "_sweeps" / "bad").exists()


def test_ray_executor_matches_local_retries_a_killed_worker_and_cancels(local_sweep, tmp_path, monkeypatch):
    """Two of the local sweep's cells (k=12,24, seed 0) as Ray tasks on a real local cluster (token
    authentication on, loopback address only). The first lands with metrics.json identical to the local run's.
    The Ray worker running the second is SIGKILLed: Ray retries it, and the retry removes the dead worker's
    temporary folder (it was left). Then the sweep is cancelled: the retried cell stops at once and lands
    'cancelled', with its log (ray.cancel left it running to 'done')."""
    pytest.importorskip("ray")
    local_dir, local_sweep_, _ = local_sweep
    local = {(c["overrides"]["k"], c["seed"]): c for c in local_sweep_["cells"]}
    cells = sweep.expand("loc", "tiny", {"k": [12, 24]}, [0])      # the ray sweep's cells, as it names them
    runs_dir = tmp_path / "runs"
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(runs_dir))
    proc = cli(runs_dir, "--preset", "tiny", "--grid", "k=12,24", "--seeds", "0", "--name", "loc",
               "--executor", "ray", "--workers", "2")

    def parent(pid: int) -> int:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])

    def processes():
        """(pid, command line) of the driver's descendants: Ray's processes and the cells (not another test's)."""
        for p in Path("/proc").iterdir():
            try:
                pid = up = int(p.name)
                cmd = (p / "cmdline").read_bytes().split(b"\0")
                while up > 1 and up != proc.pid:
                    up = parent(up)
            except (ValueError, OSError):
                continue
            if up == proc.pid:
                yield pid, cmd

    def cell_process(run_id: str):
        """(pid, parent pid) of the cell's run process; its parent is the Ray worker running the task."""
        for pid, cmd in processes():
            if b"--run-id" in cmd and cmd[cmd.index(b"--run-id") + 1] == run_id.encode():
                return pid, parent(pid)

    def private_of(pid: int) -> Path:
        """The cell process's PDIFF_RUNS_DIR: its Ray task's temporary folder."""
        env = dict(e.split(b"=", 1) for e in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in e)
        return Path(env[b"PDIFF_RUNS_DIR"].decode())

    def gcs_address():
        for _, cmd in processes():
            if cmd[0].endswith(b"gcs_server"):           # it writes the port it chose into the session folder
                arg = dict(a.decode().split("=", 1) for a in cmd if b"=" in a)
                port = Path(arg["--session-dir"]) / f"gcs_server_port_{arg['--node-id']}"
                return port.exists() and f"{arg['--node-ip-address']}:{port.read_text().strip()}"

    killed = None
    try:
        cell_pid, killed = wait_for(lambda: cell_process(cells[1]["run"]), timeout=180)
        private = private_of(cell_pid)                                  # the task's temporary folder
        sweep.check_address(wait_for(gcs_address))                  # a real Ray GCS passes the address check
        time.sleep(2)
        os.kill(killed, signal.SIGKILL)
        wait_for(lambda: (cell_process(cells[1]["run"]) or (0, killed))[1] != killed, timeout=180)  # the retry runs
        # the retry has written its run (config.json): a cell stopped before that has no directory to ship back.
        # It is then held (SIGSTOP) until the first cell has landed, so that it cannot finish before the cancel
        # on a loaded machine (another test on the other core); it goes on with the cancel.
        retry = wait_for(lambda: (r := cell_process(cells[1]["run"])) and
                         (private_of(r[0]) / cells[1]["run"] / "config.json").exists() and r, timeout=180)
        os.kill(retry[0], signal.SIGSTOP)
        try:
            wait_for(lambda: (runs_dir / cells[0]["run"] / "status.json").exists(), timeout=300)  # the first landed
            assert "cancel sent" in sweep.cancel("loc")
        finally:
            os.kill(retry[0], signal.SIGCONT)
        t0 = time.time()
        out, _ = proc.communicate(timeout=600)
        stopped_in = time.time() - t0
    finally:
        if proc.poll() is None:            # the driver did not finish: stop it, and the cluster it started
            proc.kill()
            subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], capture_output=True)
    assert proc.returncode == 1, out
    ray_cells = runs.read_json(runs_dir / "_sweeps" / "loc" / "sweep.json")["cells"]
    assert [c["run"] for c in ray_cells] == [c["run"] for c in cells], ray_cells
    first, second = (runs_dir / c["run"] for c in cells)
    assert runs.read_status(first)["state"] == "done", out
    twin = local[(cells[0]["overrides"]["k"], cells[0]["seed"])]["run"]       # the same config, run locally
    assert (first / "metrics.json").read_bytes() == (local_dir / twin / "metrics.json").read_bytes()
    node = runs.read_json(first / "node.json")
    assert node["executor"] == "ray" and len(node["node_id"]) > 20 and node["node_ip"] == executors.LOOPBACK_IP
    status = runs.read_status(second)
    assert status["state"] == "cancelled" and status["progress"] < 1 and stopped_in < 30, (status, stopped_in, out)
    assert status["message"].startswith("cancelled with the sweep during "), status    # as a local cell says it
    assert (second / "log.txt").exists(), "the cancelled run's own directory came back"
    assert runs.read_json(second / "node.json")["worker_pid"] not in (None, killed), "the retry ran it"
    assert not private.exists(), "the killed worker's temporary folder was left"
    assert sweep.read_state("loc")["state"] == "cancelled"
    assert "Token authentication is enabled" in out
