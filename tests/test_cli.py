"""Every CLI error path exits 2 with one clear line and leaves no run 'running'."""
import json
import subprocess
import sys

import numpy as np
import pytest

from pdiff_core.__main__ import main
from tests.conftest import ROOT, wait_for


def run_cli(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as e:        # argparse errors
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line_error(code, err, *needles):
    assert code == 2
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:")
    for n in needles:
        assert n in lines[0]


def no_running_runs(runs_dir):
    for status in runs_dir.glob("*/status.json"):
        assert json.loads(status.read_text())["state"] != "running"


@pytest.mark.parametrize("argv,needles", [
    (["run", "--preset", "nope"], ["unknown preset 'nope'", "digits-quick"]),
    (["run", "--set", "dataset=imagenet"], ["unknown dataset 'imagenet'", "digits"]),
    (["run", "--set", "layers=bn7.weight"], ["bn7.weight", "last_bn", "bn1.weight"]),
    (["run", "--set", "ae_steps=-5"], ["ae_steps must be a positive integer", "-5"]),
    (["run", "--set", "k=12", "--set", "k=13"], ["--set k is given twice; give each key once"]),
    (["run", "--set", "k=0"], ["k must be"]),
    (["run", "--set", "k=many"], ["k=many: expected a whole number"]),
    (["run", "--set", "nonsense=1"], ["unknown config key 'nonsense'"]),
    (["run", "--set", "k"], ["key=value"]),
    (["run", "--set", "sampler=euler"], ["sampler must be"]),
    (["run", "--set", "dataset=mnist", "--set", "data_root=/nonexistent/mnist"], ["/nonexistent/mnist", "train-images-idx3-ubyte"]),
    (["run", "--set", "dataset=cifar10", "--set", "data_root=/nonexistent/c10"], ["/nonexistent/c10", "cifar-10"]),
    (["run", "--seed", "-1"], ["seed must be >= 0"]),
    # Python's integers are unbounded, torch's are 64-bit: a 400-digit latent_dim failed mid-run with a TypeError
    (["run", "--preset", "tiny", "--set", "latent_dim=" + "1" * 400], ["latent_dim must be at most", "400-digit"]),
    (["run", "--preset", "tiny", "--set", "k=" + "9" * 30], ["k must be at most 9,223,372,036,854,775,807"]),
    (["run", "--bogus"], ["unrecognized arguments", "(see python -m pdiff_core --help)"]),
    (["run", "--device", "tpu"], ["invalid choice", "(see python -m pdiff_core run --help)"]),
    (["frobnicate"], ["invalid choice", "(see python -m pdiff_core --help)"]),
    (["run", "--preset", "tiny", "--set", "width=1000000000000"], ["does not fit in memory", "lower width"]),
    # sizes the machine cannot hold: refused from shapes before a run directory exists (they failed mid-run)
    (["run", "--preset", "tiny", "--set", "latent_dim=1000000000"], ["does not fit in memory", "lower latent_dim"]),
    (["run", "--preset", "tiny", "--set", "n_generate=100000000"], ["does not fit in memory", "lower n_generate"]),
    (["run", "--preset", "tiny", "--set", "k=100000000"], ["does not fit in memory", "lower k"]),
    (["run", "--preset", "tiny", "--set", "ddpm_channels=100000000"], ["does not fit in memory", "lower ddpm_channels"]),
    (["run", "--preset", "tiny", "--set", f"latent_dim={2 ** 62}"], ["does not fit in memory", "lower latent_dim"]),
    (["run", "--preset", "tiny", "--set", f"ddpm_channels={2 ** 62}"], ["does not fit in memory", "lower ddpm_channels"]),
    (["run", "--preset", "tiny", "--set", "arch=cnn", "--set", f"width={2 ** 62}"], ["does not fit in memory", "lower width"]),
    (["show", "no-such-run"], ["no run 'no-such-run'"]),
    (["show", "../etc"], ["not a valid run id"]),
    (["analyze", ".."], ["not a valid run id"]),
])
def test_bad_arguments_exit_2_with_one_line(capsys, runs_dir, argv, needles):
    code, out, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, *needles)
    assert not runs_dir.exists() or not any(runs_dir.iterdir())     # nothing was created


def test_the_memory_check_refuses_no_preset():
    """Every preset's lower bound, at 10,000 validation and test examples (more than any built-in set), stays far
    below a small machine's memory: the check only stops sizes nothing could run."""
    import torch
    from pdiff_core.config import PRESETS, preset_config
    from pdiff_core.models import build_model
    from pdiff_core.params import select_names
    from pdiff_core.data import DATASETS
    from pdiff_core.prepare import GIB, memory_need
    for name in PRESETS:
        cfg = preset_config(name)
        shape, n_classes = DATASETS[cfg.dataset].example
        with torch.device("meta"):
            model = build_model(cfg.arch, shape, n_classes, cfg.width)
        assert sum(memory_need(cfg, model, select_names(model, cfg.layers), 10_000, 10_000, n_classes).values()) < 2 * GIB


def test_cuda_requested_without_gpu(capsys, runs_dir):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code, out, err = run_cli(capsys, "run", "--device", "cuda")
    assert_one_line_error(code, err, "no CUDA GPU")


def test_bad_npz_dataset(capsys, runs_dir, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, X=np.random.rand(50, 4), y=np.arange(50) + 3)
    code, out, err = run_cli(capsys, "run", "--set", "dataset=npz", "--set", f"data_root={bad}")
    assert_one_line_error(code, err, "bad.npz", "label")
    code, out, err = run_cli(capsys, "run", "--set", "dataset=npz", "--set", f"data_root={tmp_path / 'missing.npz'}")
    assert_one_line_error(code, err, "missing.npz")


def test_corrupt_run_directory(capsys, runs_dir):
    d = runs_dir / "broken"
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")
    (d / "status.json").write_text('{"state": "done"}')
    (d / "metrics.json").write_text("{not json")
    code, out, err = run_cli(capsys, "show", "broken")
    assert code == 2 and "metrics.json is corrupt" in err and len(err.strip().splitlines()) == 1
    # list still works and shows the other columns
    code, out, err = run_cli(capsys, "list")
    assert code == 0 and "broken" in out
    assert (d / "metrics.json").read_text() == "{not json"        # nothing on disk was touched


def test_existing_run_id_is_refused(capsys, runs_dir):
    d = runs_dir / "taken"
    d.mkdir(parents=True)
    (d / "status.json").write_text('{"state": "done"}')
    code, out, err = run_cli(capsys, "run", "--preset", "tiny", "--run-id", "taken")
    assert_one_line_error(code, err, "already exists")
    assert json.loads((d / "status.json").read_text()) == {"state": "done"}
    # any folder or file there: a run without status.json, the user's own data
    (runs_dir / "mine").mkdir()
    (runs_dir / "mine" / "metrics.json").write_text("{}")
    (runs_dir / "afile").write_text("x")
    for rid in ("mine", "afile"):
        code, out, err = run_cli(capsys, "run", "--preset", "tiny", "--run-id", rid)
        assert_one_line_error(code, err, f"'{rid}' already exists")
    assert sorted(p.name for p in (runs_dir / "mine").iterdir()) == ["metrics.json"]
    code, out, err = run_cli(capsys, "run", "--preset", "tiny", "--run-id", "")
    assert_one_line_error(code, err, "not a valid run id")


def test_damaged_runs_are_listed_and_refused_in_one_line(capsys, runs_dir):
    """Valid JSON of the wrong shape, a finished run without its metrics, a run without config.json:
    `list` shows every run, `show` and `analyze` say what is wrong in one line, and nothing is rewritten."""
    files = {"liststatus": {"config.json": "{}", "status.json": "[1, 2]"},
             "badgroups": {"config.json": "{}", "status.json": '{"state": "done"}', "metrics.json": '{"groups": []}'},
             "nometrics": {"config.json": "{}", "status.json": '{"state": "done"}'},
             "noconfig": {"status.json": '{"state": "done"}', "metrics.json": "{}"},
             "unknownstate": {"config.json": "{}", "status.json": '{"state": "going"}'},
             "going": {"config.json": "{}", "status.json": '{"state": "running"}'}}
    for rid, fs in files.items():
        (runs_dir / rid).mkdir(parents=True)
        for name, text in fs.items():
            (runs_dir / rid / name).write_text(text)
    code, out, err = run_cli(capsys, "list")
    assert code == 0 and not err, err
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:]}
    assert rows == {"liststatus": "failed", "badgroups": "done", "nometrics": "done", "noconfig": "done",
                    "unknownstate": "failed", "going": "running"}, out
    code, out, err = run_cli(capsys, "show", "unknownstate")
    assert code == 0 and "state 'going', not one of" in out
    for rid, needles in {"badgroups": ["badgroups/metrics.json is corrupt ('groups' is not an object"],
                         "nometrics": ["metrics.json is missing from a finished run"]}.items():
        code, out, err = run_cli(capsys, "show", rid)
        assert_one_line_error(code, err, *needles)
    code, out, err = run_cli(capsys, "analyze", "nometrics")       # not "the run may still be going"
    assert_one_line_error(code, err, "metrics.json is missing from a finished run; delete the run")
    (runs_dir / "early").mkdir()
    (runs_dir / "early" / "config.json").write_text("{}")
    (runs_dir / "early" / "status.json").write_text('{"state": "cancelled"}')
    code, out, err = run_cli(capsys, "analyze", "early")
    assert_one_line_error(code, err, "run 'early' is cancelled and never wrote metrics.json: there is nothing to analyze")
    files["early"] = {"config.json": "{}", "status.json": '{"state": "cancelled"}'}
    code, out, err = run_cli(capsys, "analyze", "going")
    assert_one_line_error(code, err, "is running", "once it ends")
    code, out, err = run_cli(capsys, "analyze", "liststatus")
    assert_one_line_error(code, err, "status.json is corrupt (a JSON list, not an object)")
    for rid, fs in files.items():
        assert {p.name: p.read_text() for p in (runs_dir / rid).iterdir()} == fs


def test_analyze_of_a_run_whose_data_folder_is_gone_says_where_to_put_it(capsys, runs_dir):
    """The dataset's own advice is a new run's ('pass --set data_root'), which analyze does not take."""
    from pdiff_core.config import preset_config
    d = runs_dir / "m"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(preset_config("tiny", dataset="mnist", data_root="/nowhere").to_dict()))
    (d / "status.json").write_text('{"state": "done"}')
    (d / "metrics.json").write_text('{"groups": {}}')
    code, out, err = run_cli(capsys, "analyze", "m")
    assert_one_line_error(code, err, "MNIST files not found", "put the files back where run m's config.json says "
                          "(data_root '/nowhere'), or set data_root there")
    assert "--set" not in err


def test_a_corrupt_transfer_summary_is_rebuilt_not_deleted(capsys, runs_dir):
    """transfer.json is computed from transfer.npz by `analyze` (test_transfer checks it byte for byte), but a
    corrupt one told the user to delete the run and run it again, which throws away every result."""
    d = runs_dir / "tt"
    d.mkdir(parents=True)
    (d / "status.json").write_text('{"state": "done"}')
    (d / "transfer.json").write_text('{"verdict": "On 4 held-')
    code, out, err = run_cli(capsys, "show", "tt")
    assert_one_line_error(code, err, "transfer.json is corrupt", "run `python -m pdiff_core analyze tt` to rebuild it")
    assert "delete" not in err


def test_each_damaged_file_names_the_command_that_rebuilds_it(tmp_path):
    """analyze keeps an existing umap.npz, so a corrupt one was sent to a command that left it corrupt."""
    from pdiff_core.runs import remedy_for
    assert remedy_for(tmp_path / "r" / "umap.npz") == ("delete it, or run `python -m pdiff_core analyze r --umap` "
                                                       "to recompute it")
    for name in ("analysis.json", "analysis.npz", "transfer.json"):
        assert remedy_for(tmp_path / "r" / name) == "run `python -m pdiff_core analyze r` to rebuild it"
    assert remedy_for(tmp_path / "r" / "metrics.json") == "delete the run and run it again"
    # a missing file says the same ("the run did not get that far" was said of a finished run's lost file)
    from pdiff_core import runs
    with pytest.raises(runs.RunError, match="analysis.npz is missing: the run stopped before writing it, or it was "
                                            "removed; run `python -m pdiff_core analyze r` to rebuild it"):
        runs.read_npz(tmp_path / "r" / "analysis.npz")


def test_output_files_and_head_counts_are_checked_up_front(capsys, runs_dir, tmp_path):
    d = runs_dir / "r"
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")
    (d / "status.json").write_text('{"state": "done"}')
    (d / "transfer.npz").write_bytes(b"")
    code, out, err = run_cli(capsys, "report", "r", "--out", str(tmp_path))
    assert_one_line_error(code, err, "is a folder", f"give a file name in it, e.g. {tmp_path / 'report-r.html'}")
    code, out, err = run_cli(capsys, "new-task", "r", str(tmp_path / "t.npz"), "--out", str(tmp_path))
    assert_one_line_error(code, err, "is a folder", f"e.g. {tmp_path / 'heads.safetensors'}")
    code, out, err = run_cli(capsys, "report", "r", "--out", str(tmp_path / "no" / "r.html"))
    assert_one_line_error(code, err, "does not exist")
    for n in ("0", "-1", "100000000"):
        code, out, err = run_cli(capsys, "new-task", "r", str(tmp_path / "t.npz"), "--n", n)
        assert_one_line_error(code, err, "--n must be from 1 to")


def test_output_never_overwrites_a_runs_files(capsys, runs_dir, tmp_path):
    """`report --out` and `new-task --out` wrote over any file they were given: a run's metrics.json became
    HTML, its base model a set of heads. A path inside the runs directory, or an existing file of another
    kind, is refused in one line and left as it was."""
    d = runs_dir / "r"
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")
    (d / "status.json").write_text('{"state": "done"}')
    (d / "metrics.json").write_text('{"groups": {}}')
    (d / "transfer.npz").write_bytes(b"")
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    code, out, err = run_cli(capsys, "report", "r", "--out", str(d / "metrics.json"))
    assert_one_line_error(code, err, "is inside 'r', a folder of the runs directory", "write it elsewhere")
    code, out, err = run_cli(capsys, "new-task", "r", str(tmp_path / "t.npz"), "--out", str(d / "transfer.npz"))
    assert_one_line_error(code, err, "is inside 'r', a folder of the runs directory")
    mine = tmp_path / "notes.txt"
    mine.write_text("mine")
    code, out, err = run_cli(capsys, "report", "r", "--out", str(mine))
    assert_one_line_error(code, err, "exists and is not a .html file")
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before and mine.read_text() == "mine"


def test_a_report_of_an_analysis_that_lacks_its_keys_is_one_line(capsys, tiny_run, tmp_path, monkeypatch):
    import shutil
    from pdiff_core import runs
    shutil.copytree(tiny_run, tmp_path / "runs" / "r")
    an = runs.read_json(tmp_path / "runs" / "r" / "analysis.json")
    runs.write_json(tmp_path / "runs" / "r" / "analysis.json", {k: v for k, v in an.items() if k != "memorization"})
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(tmp_path / "runs"))
    code, out, err = run_cli(capsys, "report", "r", "--out", str(tmp_path / "r.html"))
    assert_one_line_error(code, err, "run r's files do not hold what a report reads (KeyError: 'memorization')",
                          "`python -m pdiff_core analyze r` rebuilds its analysis")
    assert not (tmp_path / "r.html").exists()


def test_one_damaged_run_does_not_take_the_list_from_the_others(capsys, runs_dir):
    """A metrics.json whose groups parse but hold a string where the summary belongs crashed `list` for every run."""
    for rid, summary in (("good", {"median": 0.9}), ("bad", "x")):
        (runs_dir / rid).mkdir(parents=True)
        (runs_dir / rid / "config.json").write_text('{"dataset": "digits"}')
        (runs_dir / rid / "status.json").write_text('{"state": "done"}')
        (runs_dir / rid / "metrics.json").write_text(json.dumps({"groups": {"originals": {"summary": summary}}}))
    code, out, err = run_cli(capsys, "list")
    assert code == 0 and not err, err
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert rows["good"].split()[1] == "done" and "/90.0" in rows["good"]
    assert rows["bad"].split()[1] == "damaged:" and "AttributeError" in rows["bad"] and "show bad" in rows["bad"]


def test_presets_and_empty_list(capsys, runs_dir):
    code, out, _ = run_cli(capsys, "presets")
    assert code == 0 and "digits-quick" in out and "cifar10-resnet18" in out and "digits-whole" in out
    code, out, _ = run_cli(capsys, "list")
    assert code == 0 and "no runs" in out


@pytest.mark.slow
def test_output_into_a_closed_pipe_ends_quietly(runs_dir):
    """`python -m pdiff_core presets | head -1`: the reader is gone before the output is written. It said
    'error: [Errno 32] Broken pipe' and exited 2 (or 120 from the exit-time flush); as other tools, quietly 0."""
    import os
    p = subprocess.Popen([sys.executable, "-m", "pdiff_core", "presets"], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=dict(os.environ))
    p.stdout.close()                        # before the process writes: its first write meets a closed pipe
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 0 and err == "", (p.returncode, err)


@pytest.mark.slow
def test_real_process_exit_code(runs_dir):
    """The same through `python -m pdiff_core`, as a user types it."""
    p = subprocess.run([sys.executable, "-m", "pdiff_core", "run", "--set", "layers=nope"],
                       cwd=ROOT, capture_output=True, text=True, env={**__import__("os").environ})
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1 and "nope" in p.stderr
    no_running_runs(runs_dir)


@pytest.mark.slow
def test_sigterm_ends_the_run_cancelled_and_stops_its_helper(runs_dir):
    """`kill`, `timeout` or a job scheduler: the run ends 'cancelled', not 'running' forever,
    and the analysis's helper process goes with it."""
    import os
    import signal
    proc = subprocess.Popen([sys.executable, "-m", "pdiff_core", "run", "--preset", "tiny", "--quiet",
                             "--run-id", "term", "--set", "ddpm_steps=5000",
                             "--set", "n_generate=40"], cwd=ROOT,   # a map of 424 points: the helper starts
                            env={**os.environ, "PDIFF_RUNS_DIR": str(runs_dir)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    status, children = runs_dir / "term" / "status.json", f"/proc/{proc.pid}/task/{proc.pid}/children"
    wait_for(lambda: status.exists() and json.loads(status.read_text()).get("stage") == "diffusion", every=0.1)
    helpers = [int(p) for p in open(children).read().split()] if os.path.exists(children) else []
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    s = json.loads(status.read_text())
    assert s["state"] == "cancelled" and "SIGTERM" in s["message"], s
    assert helpers, "the run started no helper process"
    for pid in helpers:
        assert not os.path.exists(f"/proc/{pid}"), f"helper {pid} outlived its run"


def test_the_command_line_sees_a_dead_run_as_failed_as_the_app_does(runs_dir, capsys):
    """A `run` killed with SIGKILL leaves status.json 'running': list and show said so forever, and
    analyze and report refused it ('analyze it once it ends'). Now its dead pid makes it failed on disk."""
    import time

    from pdiff_core import runs
    from pdiff_core.config import preset_config
    run_dir = runs.run_path("k9", must_exist=False)
    run_dir.mkdir(parents=True)
    runs.write_json(run_dir / "config.json", preset_config("tiny").to_dict())
    runs.write_json(run_dir / "status.json", {"state": "running", "stage": "diffusion", "progress": 0.5,
                                              "pid": 2 ** 22 + 12345, "updated": time.time()})   # above pid_max
    runs.append_log(run_dir, "[diffusion] step 10")
    code, out, _ = run_cli(capsys, "list")
    assert code == 0 and "k9" in out and "running" not in out and "failed" in out, out
    code, out, _ = run_cli(capsys, "show", "k9")
    assert code == 0 and out.startswith("run k9: failed") and "[diffusion] step 10" in out, out
    assert runs.read_status(run_dir)["state"] == "failed"
    code, _, err = run_cli(capsys, "report", "k9")
    assert_one_line_error(code, err, "not finished (state: failed)")


def test_a_lone_warning_string_is_one_warning(capsys, runs_dir):
    """metrics.json's warnings as one string printed one letter a line (and drew one box per letter in the app)."""
    from pdiff_core import runs
    assert runs.warnings_of({"warnings": "base model under-trained"}) == ["base model under-trained"]
    assert runs.warnings_of({"warnings": ["a", "b"]}) == ["a", "b"] and runs.warnings_of({}) == []
