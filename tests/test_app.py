"""The Streamlit app through streamlit.testing.v1.AppTest: every page with no runs and with a finished
run, the launch form's validation, launching, and failed / cancelled / dead runs."""
import functools
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from pdiff_core import jobs, runs
from pdiff_core.config import DIGITS_QUICK_WORDS, preset_config
from studio import shape
from tests.conftest import ROOT, executed, fake_sweep

try:
    from streamlit.components.v2 import manifest_scanner
except ImportError:         # a Streamlit without v2 components: nothing is scanned, nothing to keep
    manifest_scanner = None
if manifest_scanner is not None:
    # Each new AppTest scans every installed distribution's metadata for Streamlit v2 components before its
    # first run: 0.6 s of a 0.66 s Launch page render here (375 distributions), paid once by nearly every test
    # in this file. No package is installed during a test session, so this process scans once and keeps the
    # answer (a server scans once, at its start).
    _scan = functools.cache(manifest_scanner.scan_component_manifests)
    manifest_scanner.scan_component_manifests = lambda *a, **kw: list(_scan(*a, **kw))

APP = str(ROOT / "app.py")
TIMEOUT = 60           # AppTest's default of 3 s is too short for a first import of torch on a busy machine
PAGES = ["home", "launch", "runs", "sweeps", "run", "accuracy", "similarity", "parameter_space", "memorization",
         "use_cases", "transfer"]
RESULT_PAGES = PAGES[5:]
FAMILY_PAGES = ["transfer"]     # results of a task-family run only: on any other run they say so
RUN_PAGES = [p for p in PAGES if p != "sweeps"]     # the pages that show the active run's state


@pytest.fixture(scope="session")
def finished_run(tiny_run):
    """One real tiny run, analysis included: conftest's, shared with test_analysis and test_cli (a second
    tiny run from the CLI cost each test worker another 9-10 s)."""
    return tiny_run.parent, tiny_run.name


def app(page: str, run: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if page != "home":
        at.switch_page(f"pages/{page}.py")
    if run:
        at.query_params["run"] = run
    return at.run()


def texts(elements) -> str:
    return " | ".join(str(e.value) for e in elements)


def assert_clean(at: AppTest) -> None:
    assert not at.exception, texts(at.exception)
    assert not at.error, texts(at.error)


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_with_no_runs(page, runs_dir):
    at = app(page)
    assert_clean(at)
    if page in RESULT_PAGES:
        assert "No runs yet" in texts(at.info)


def test_empty_state_offers_the_quick_demo(runs_dir):
    at = app("home")
    # no past demo run here: the benchmark's range (DIGITS_QUICK_WORDS)
    assert [b.label for b in at.button] == [f"Run the quick demo (digits, about {DIGITS_QUICK_WORDS} s)"]
    assert "memorization" in texts(at.markdown).lower()


def test_a_demo_preset_that_does_not_exist_is_one_line_and_starts_nothing(runs_dir, monkeypatch):
    from studio import ui
    monkeypatch.setattr(ui, "DEMO_PRESET", "nope")     # as PDIFF_DEMO_PRESET=nope sets it
    at = app("home")
    at.button[0].click().run()
    assert not at.exception and "PDIFF_DEMO_PRESET: unknown preset 'nope'" in texts(at.error), texts(at.error)
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


def test_a_launched_run_that_already_finished_lands_on_its_results(finished_run, monkeypatch):
    """A run this session launched can finish between the poll that noticed it change and the rerun that
    poll asked for (a 4 s tiny run did, and the demo then stayed on Home): the next render lands anyway."""
    root, rid = finished_run
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(root))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["follow"] = rid
    at.run()
    assert_clean(at)
    assert "follow" not in at.session_state and at.title[0].value == "Accuracy", [t.value for t in at.title]


def test_a_landing_overtaken_by_another_rerun_is_asked_again(finished_run, monkeypatch):
    """The switch to the results can be overtaken by the browser's next rerun of Home. The launched run is
    forgotten only once its results page shows, so that rerun lands."""
    import streamlit as st
    root, rid = finished_run
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(root))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["follow"] = rid
    with monkeypatch.context() as m:
        m.setattr(st, "switch_page", lambda *a, **k: None)    # the switch is lost: Home renders instead
        at.run()
    assert_clean(at)
    assert at.title[0].value == "p-diff Studio" and at.session_state["follow"] == rid
    at.run()                                                   # the next rerun of Home
    assert_clean(at)
    assert at.title[0].value == "Accuracy" and "follow" not in at.session_state, [t.value for t in at.title]


def test_landing_drops_the_polling_fragments_before_it_switches(finished_run, tmp_path, monkeypatch):
    """A timer of Home's polling fragments can have sent a rerun already when the launched run's end is noticed.
    Streamlit queued it behind the switch and ran it under Home's page id, and the browser then cleared the
    results page: its title drawn, then the main area empty (once in CI; 13 of 23 demos with POLL_S at 0.05 s).
    So when the switch is asked, the session must hold no fragment such a rerun could name."""
    import shutil
    import streamlit as st
    root, rid = finished_run
    runs_dir = tmp_path / "runs"
    shutil.copytree(root / rid, runs_dir / rid)
    fake_run(runs_dir, "other", {"state": "running"})      # going (a foreground run records no pid): Home polls
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(runs_dir))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["follow"] = rid
    at.run()
    assert_clean(at)
    held = at._fragment_storage._fragments                  # the session's fragments (AppTest keeps them)
    assert at.title[0].value == "p-diff Studio" and len(held) >= 2, list(held)     # _follow and _live
    runs.update_status(runs_dir / "other", state="cancelled")
    at_switch, switch = [], st.switch_page
    monkeypatch.setattr(st, "switch_page", lambda *a, **k: (at_switch.append(len(held)), switch(*a, **k)))
    at.run()
    assert_clean(at)
    assert at.title[0].value == "Accuracy" and at_switch == [0], (at_switch, [t.value for t in at.title])


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_with_a_finished_run(page, finished_run, monkeypatch):
    root, rid = finished_run
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(root))
    at = app(page, rid)
    assert_clean(at)
    if page in FAMILY_PAGES:                     # a plain run: the page says what it needs, draws nothing
        assert "needs a run of a task family" in texts(at.info), texts(at.info)
        assert not at.get("plotly_chart")
        return
    # memorization's verdict is an st.info; the sweeps page says it has no sweeps
    assert not at.info or page in ("memorization", "sweeps"), texts(at.info)
    if page in RESULT_PAGES:
        assert at.get("plotly_chart"), f"{page} drew no chart"
    assert at.query_params["run"] == [rid] or at.query_params["run"] == rid


@pytest.mark.parametrize("page", RESULT_PAGES)
def test_a_rerun_of_a_result_page_reads_no_run_file_again(page, finished_run, transfer_run, monkeypatch):
    """Pages read a run through load's caches, keyed on the run and its files' modification times: the
    second render of a page (a click, a widget, a second visit) reads none of its result files again.
    status.json is the exception: the run picker reads each run's state on every render."""
    root, rid = transfer_run if page in FAMILY_PAGES else finished_run
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(root))
    at = app(page, rid)
    assert_clean(at)
    reads = []
    for name in ("read_json", "read_safetensors", "read_npz", "read_analysis_arrays"):
        real = getattr(runs, name)
        def spy(path, *args, _real=real, **kwargs):
            reads.append(Path(path).name)
            return _real(path, *args, **kwargs)
        monkeypatch.setattr(runs, name, spy)
    at.run()
    assert_clean(at)
    assert at.get("plotly_chart"), f"{page} drew no chart on its rerun"
    again = [n for n in reads if n != "status.json"]
    assert not again, f"a rerun of {page} read {again} again"
    assert "status.json" in reads                                   # the spies saw the page's reads


def test_analysis_pages_explain_a_missing_analysis(finished_run, tmp_path, monkeypatch):
    import shutil
    root, rid = finished_run
    copy = tmp_path / "runs"
    shutil.copytree(root / rid, copy / rid)
    for name in ("analysis.json", "analysis.npz"):
        (copy / rid / name).unlink()
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(copy))
    for page in ("similarity", "parameter_space", "memorization", "use_cases"):
        at = app(page, rid)
        assert_clean(at)
        assert f"python -m pdiff_core analyze {rid}" in texts(at.info)
    assert app("accuracy", rid).get("plotly_chart")                     # accuracy needs metrics.json only


def test_a_runs_warnings_show_on_every_result_page(finished_run, tmp_path, monkeypatch):
    """A broken run's figures mean nothing on any page: its warnings (metrics.json) show on each result page, the
    Memorization page in its verdict. They were missing from Similarity, Parameter space and Use cases."""
    import shutil
    root, rid = finished_run
    copy = tmp_path / "runs"
    shutil.copytree(root / rid, copy / rid)
    warning = "All 24 finite original checkpoints make the same 9 test errors: a planted warning"
    m = runs.read_json(copy / rid / "metrics.json")
    runs.write_json(copy / rid / "metrics.json", {**m, "warnings": [warning]})
    an = runs.read_json(copy / rid / "analysis.json")
    runs.write_json(copy / rid / "analysis.json", {**an, "verdict": f"**Warning:** {warning}\n\n{an['verdict']}"})
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(copy))
    for page in ("accuracy", "similarity", "parameter_space", "use_cases"):
        at = app(page, rid)
        assert_clean(at)
        assert warning in texts(at.warning), (page, texts(at.warning))
    at = app("memorization", rid)
    assert warning in texts(at.info) and warning not in texts(at.warning)    # once, in the verdict


def test_one_damaged_run_leaves_the_runs_page_and_its_comparison_to_the_others(finished_run, tmp_path, monkeypatch):
    """A run file that parses but not as written (a date as a word, a string where a share belongs, an analysis.npz
    without its arrays) replaced the whole Runs page with a traceback. Its row now says it is damaged, and the
    comparison leaves it out with its reason."""
    import shutil
    root, rid = finished_run
    copy = tmp_path / "runs"
    for name in ("good", "late", "shares", "arrays"):
        shutil.copytree(root / rid, copy / name)
    status = runs.read_json(copy / "late" / "status.json")
    runs.write_json(copy / "late" / "status.json", {**status, "started": "yesterday"})
    an = runs.read_json(copy / "shares" / "analysis.json")
    runs.write_json(copy / "shares" / "analysis.json", {**an, "memorization": {**an["memorization"],
                                                                              "replica_rate": "most"}})
    np.savez(copy / "arrays" / "analysis.npz", x=np.zeros(1))
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(copy))
    at = app("runs", "good")
    assert_clean(at)
    table = at.dataframe[0].value.set_index("run")
    assert table.at["good", "state"] == "done" and table.at["arrays", "state"] == "done"
    assert table.at["late", "state"].startswith("damaged (ValueError") and "'yesterday'" in table.at["late", "state"]
    assert table.at["shares", "state"].startswith("damaged (ValueError: 'most' where a number belongs")
    at.multiselect(key="compare").set_value(["good", "arrays", "late"]).run()
    assert_clean(at)
    assert "`arrays` is left out of the comparison" in texts(at.warning), texts(at.warning)
    assert len(at.get("plotly_chart")) == 3                  # good and late: accuracy, distances, novelty


def test_a_result_file_that_parses_but_lacks_its_keys_gets_one_line_not_a_traceback(finished_run, tmp_path,
                                                                                    monkeypatch):
    """The last resort in app.py: a page that cannot read what it needs from a run says which run and what to do."""
    import shutil
    root, rid = finished_run
    shutil.copytree(root / rid, tmp_path / "runs" / rid)
    an = runs.read_json(tmp_path / "runs" / rid / "analysis.json")
    runs.write_json(tmp_path / "runs" / rid / "analysis.json", {k: v for k, v in an.items() if k != "similarity"})
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(tmp_path / "runs"))
    at = app("similarity", rid)
    assert not at.exception, texts(at.exception)
    (error,) = [e.value for e in at.error]
    assert error.startswith(f"This page could not read run `{rid}` (KeyError: 'similarity')") and "\n" not in error
    assert f"python -m pdiff_core analyze {rid}" in error


def test_similarity_pair_reads_the_iou_row_of_the_model_it_names(finished_run, tmp_path, monkeypatch):
    """The matrices' rows are found by their stored labels (iou_labels / iou_index), not assumed to follow
    the models table: with the rows stored generated first, the pair's IoU and agreement stay the same."""
    import shutil
    root, rid = finished_run
    copy = tmp_path / "runs"
    shutil.copytree(root / rid, copy / rid)
    a = runs.read_npz(copy / rid / "analysis.npz")
    perm = np.arange(len(a["iou"]))[::-1]
    runs.write_npz(copy / rid / "analysis.npz", {**a, "iou": a["iou"][np.ix_(perm, perm)],
                                                 "agree": a["agree"][np.ix_(perm, perm)],
                                                 "iou_labels": a["iou_labels"][perm], "iou_index": a["iou_index"][perm]})
    m = shape.models(shape.accuracy_frame(runs.read_json(root / rid / "metrics.json")), a)
    gen = m[m["group"] == "generated"].dropna(subset=["smax"]).reset_index(drop=True)
    g, o = int(gen.at[gen["smax"].idxmax(), "index"]), int(gen.at[gen["smax"].idxmax(), "smax_idx"])
    k = int((a["iou_labels"] == "originals").sum())                   # as stored: originals then generated
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(copy))
    at = app("similarity", rid)
    assert_clean(at)
    shown = {x.label: x.value for x in at.metric}
    assert shown["IoU of errors"] == f"{a['iou'][k + g, o]:.3f}", shown
    assert shown["agreement"] == f"{a['agree'][k + g, o]:.1%}", shown


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """A real tiny run cut to seconds, with 2 generated models: a run of another size than finished_run's."""
    cut = dict(k=4, n_generate=2, base_min_steps=0, ae_steps=20, ddpm_steps=20, ddim_steps=5)
    with executed(tmp_path_factory, "tiny", "small", cut) as run_dir:
        return run_dir.parent, run_dir.name


def test_a_selected_generated_model_does_not_follow_a_switch_to_another_run(finished_run, small_run, tmp_path,
                                                                            monkeypatch):
    """The Memorization table's selected row was kept when the sidebar switched the active run: row 15 of a
    16-model run, on a run of 2 generated models, was a KeyError traceback (and on a larger run, another model)."""
    import shutil
    (root, rid), (small_root, small) = finished_run, small_run
    for src in (root / rid, small_root / small):
        shutil.copytree(src, tmp_path / src.name)
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(tmp_path))
    at = app("memorization", rid)
    table = next(k for k in at.session_state._state.filtered_state if k.startswith("mem_table"))   # its key, whatever it is
    at.session_state[table] = {"selection": {"rows": [15], "columns": [], "cells": []}}
    at.run()
    assert_clean(at)
    assert "**generated #15" in texts(at.markdown)
    at.session_state["active_run"] = small                # as the sidebar's picker sets it
    at.query_params["run"] = small
    at.run()
    assert_clean(at)
    assert "the closest pair; select a row for another" in texts(at.markdown)


def set_number(at: AppTest, key: str, value):
    at.text_input(key=key).set_value(str(value))      # number fields are text: what was typed is what is parsed
    return at.run()


def test_launch_form_rejects_bad_values(runs_dir):
    at = set_number(app("launch"), "opt_k", 0)
    assert "k must be a positive integer" in texts(at.error)
    at.button(key="launch_button").click().run()
    assert "k must be a positive integer" in texts(at.error)
    assert not runs_dir.exists() or not any(runs_dir.iterdir())           # nothing was started

    at = set_number(app("launch"), "opt_ddim_steps", 5000)
    assert "ddim_steps (5000) cannot exceed timesteps" in texts(at.error)

    # a number field once read '1e3' as 1, '2.5' as 2 and an emptied field as 0, and launched that
    for key, typed, needle in [("opt_ddpm_steps", "1e3", "ddpm_steps must be a whole number, got '1e3'"),
                               ("opt_n_generate", "2.5", "n_generate must be a whole number, got '2.5'"),
                               ("opt_latent_noise", "", "latent_noise must be a number, got ''"),
                               ("opt_latent_noise", "abc", "latent_noise must be a number, got 'abc'"),
                               ("opt_latent_noise", "nan", "latent_noise must be a finite number")]:
        at = set_number(app("launch"), key, typed)
        assert needle in texts(at.error), (typed, texts(at.error))
        at.button(key="launch_button").click().run()
        assert needle in texts(at.error)
    assert not runs_dir.exists() or not any(runs_dir.iterdir())
    at = set_number(app("launch"), "opt_ddpm_steps", " 300 ")
    assert_clean(at)
    from studio import forms
    assert forms.build("digits-quick", {"ddpm_steps": " 300 ", "latent_noise": "0.05"}).ddpm_steps == 300

    at = app("launch")
    at.text_input(key="opt_layers").set_value("no_such.weight").run()   # layer names are checked as you type
    assert "unknown layer name(s) no_such.weight" in texts(at.error)
    assert "[" not in texts(at.error)                                    # in words, not a Python list
    at.text_input(key="opt_layers").set_value("bn2.weight, bn2.bias").run()
    assert_clean(at)
    at.selectbox(key="opt_dataset").set_value("cifar10").run()           # no files needed to check layer names
    at.selectbox(key="opt_arch").set_value("resnet18").run()
    assert "unknown layer name(s) bn2.weight, bn2.bias" in texts(at.error)
    assert not runs_dir.exists() or not any(runs_dir.iterdir())

    at = app("launch")
    at.selectbox(key="opt_dataset").set_value("npz").run()
    at.button(key="launch_button").click().run()
    assert "npz" in texts(at.error) and "data_root" in texts(at.error)
    assert not runs_dir.exists() or not [p for p in runs_dir.iterdir() if p.name != jobs.UPLOADS]


def test_launch_refuses_a_run_that_cannot_fit_in_memory(runs_dir):
    """latent_dim=10**9 once passed every check and started a worker that failed on its first allocation."""
    at = set_number(app("launch"), "opt_latent_dim", 10 ** 9)
    at.button(key="launch_button").click().run()
    assert "does not fit in memory" in texts(at.error) and "lower latent_dim" in texts(at.error)
    assert not runs_dir.exists() or not any(runs_dir.iterdir())           # nothing was started


@pytest.mark.slow
def test_launch_starts_a_worker_and_shows_it(runs_dir):
    at = app("launch")
    at.selectbox(key="preset").set_value("tiny").run()
    assert at.text_input(key="opt_k").value == str(preset_config("tiny").k)   # the preset filled the form
    at.button(key="launch_button").click().run()
    assert_clean(at)
    (rid,) = [p.name for p in runs_dir.iterdir()]
    try:
        assert at.query_params["run"] in ([rid], rid)
        assert any(rid in str(m.value) for m in at.markdown), "the live panel does not show the new run"
        assert at.get("progress") or at.info
    finally:
        jobs.cancel(rid)
        deadline = time.time() + 120
        while jobs.refresh(rid)["state"] in jobs.ACTIVE and time.time() < deadline:
            time.sleep(0.2)
        jobs.stop_all_started()


def fake_run(root: Path, rid: str, status: dict, log: str = "", preset: str = "tiny") -> None:
    d = root / rid
    d.mkdir(parents=True)
    runs.write_json(d / "config.json", preset_config(preset).to_dict())
    runs.write_json(d / "status.json", {"stage": "diffusion", "progress": 0.5, "updated": time.time(), **status})
    (d / "log.txt").write_text(log)


@pytest.mark.parametrize("page", RUN_PAGES)
def test_failed_cancelled_and_dead_runs_render_their_state(page, runs_dir):
    preset = "tiny-tasks" if page in FAMILY_PAGES else "tiny"         # runs of the kind the page shows
    fake_run(runs_dir, "broke", {"state": "failed", "error": "RuntimeError: out of memory"}, "Traceback ...\n", preset)
    fake_run(runs_dir, "stopped", {"state": "cancelled", "message": "cancelled by user during diffusion"}, "", preset)
    fake_run(runs_dir, "dead", {"state": "running", "pid": 2 ** 22 + 4321}, "12:00:00 [diffusion] step 40\n", preset)
    for rid, kind, text in [("broke", "error", "out of memory"), ("stopped", "warning", "cancelled"),
                            ("dead", "error", "without finishing")]:
        at = app(page, rid)
        assert not at.exception, texts(at.exception)
        assert text in texts(getattr(at, kind)), f"{page}/{rid}: {texts(getattr(at, kind))}"
    assert runs.read_status(runs_dir / "dead")["state"] == "failed"


def test_a_damaged_run_says_what_is_wrong_and_leaves_the_other_runs_alone(finished_run, runs_dir):
    """JSON of the wrong shape, a truncated file, a finished run without metrics.json: that run's pages show
    one message saying what to do, never a traceback, and every page of a good run beside it still works."""
    import shutil
    root, rid = finished_run
    damage = {"liststatus": ("status.json", "[]", "status.json is corrupt (a JSON list, not an object)"),
              "listconfig": ("config.json", "[1, 2, 3]", "config.json is corrupt (a JSON list, not an object)"),
              "truncconfig": ("config.json", None, "config.json is corrupt"),
              "truncanalysis": ("analysis.json", None, "python -m pdiff_core analyze truncanalysis"),
              "nometrics": ("metrics.json", "", "metrics.json is missing"),
              "listgroups": ("metrics.json", '{"groups": ["originals"]}', "metrics.json is corrupt ('groups' is not")}
    shutil.copytree(root / rid, runs_dir / "good")
    for name, (file, text, _) in damage.items():
        shutil.copytree(root / rid, runs_dir / name)
        path = runs_dir / name / file
        if text == "":
            path.unlink()
        else:
            path.write_text(text if text is not None else path.read_text()[: len(path.read_text()) // 2])
    for page in ("home", "launch", "runs", "sweeps", "run", "accuracy", "memorization"):
        assert_clean(app(page, "good"))
    for name, (_, _, needle) in damage.items():
        for page in {"truncanalysis": ("accuracy", "memorization"), "nometrics": ("accuracy", "similarity"),
                     "listgroups": ("accuracy", "similarity", "parameter_space", "memorization")}.get(
                name, ("run", "accuracy")):
            at = app(page, name)
            assert not at.exception, f"{page}/{name}: {texts(at.exception)}"
            assert needle in texts(at.error), f"{page}/{name}: {texts(at.error)}"


def test_runs_page_deletes_after_confirmation(runs_dir):
    fake_run(runs_dir, "old", {"state": "cancelled", "message": "cancelled by user"})
    at = app("runs", "old")
    at.button(key="delete").click().run()
    assert (runs_dir / "old").exists()                                    # asked first, nothing deleted yet
    assert "cannot be undone" in texts(at.warning)
    at.button(key="confirm_delete").click().run()
    assert_clean(at)
    assert not (runs_dir / "old").exists()
    assert "No runs yet" in texts(at.info)


def test_run_page_is_the_complete_record_of_a_finished_run(finished_run, monkeypatch):
    root, rid = finished_run
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(root))
    at = app("run", rid)
    assert_clean(at)
    status = runs.read_json(root / rid / "status.json")
    assert status["losses"]["ae"] and status["losses"]["ddpm"], "losses are kept after the run ends"
    assert len(at.get("plotly_chart")) == 1                               # AE and DDPM losses, side by side
    heads = [h.value for h in at.subheader]
    assert heads == ["Training losses", *(["Warnings"] if status.get("warnings") else []), "Stage timings",
                     "Configuration"], heads
    stages = set(at.dataframe[0].value["stage"])
    assert {"collect", "autoencoder", "diffusion", "analysis", "maps / pca_tsne"} <= stages, stages
    config = at.dataframe[1].value
    assert set(runs.read_json(root / rid / "config.json")) == set(config.index)
    assert at.code[0].value.strip() == (root / rid / "log.txt").read_text().strip()   # the whole log
    seconds = at.dataframe[0].value.set_index("stage")["seconds"]
    assert seconds["maps"] == "" and "nan" not in set(seconds), dict(seconds)   # a row with only a note
    assert f"Run `{rid}` is done." in texts(at.success)


def test_run_page_of_a_going_run_is_live(runs_dir):
    fake_run(runs_dir, "going", {"state": "running", "losses": {"ae": [[0, 1.0], [10, 0.5]], "ddpm": []},
                                 "message": "diffusion step 40", "standby": "imports done"},
             "12:00:00 [autoencoder] step 10\n")
    at = app("run", "going")
    assert_clean(at)
    worker = at.dataframe[0].value.set_index("stage").loc["worker"]          # how its worker began
    assert worker["note"] == "a waiting worker took the run (imports done)" and worker["seconds"] == ""
    assert at.get("progress") and at.button(key="cancel-going")
    assert at.get("plotly_chart"), "no loss curves while going"
    assert "[autoencoder] step 10" in " ".join(c.value for c in at.code)
    assert "No run" not in texts(at.warning)
    fake_run(runs_dir, "going-t", {"state": "running", "message": "diffusion step 40"}, "", "tiny-tasks")
    for page in RESULT_PAGES:                                           # results say it is going, then appear
        assert "is running" in texts(app(page, "going-t" if page in FAMILY_PAGES else "going").info)


@pytest.mark.parametrize("page", ["home", "runs", "run", "accuracy", "memorization"])
def test_a_link_to_an_unknown_run_says_so_and_shows_no_other(page, finished_run, monkeypatch):
    root, rid = finished_run
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(root))
    at = app(page, "nope")
    assert not at.exception, texts(at.exception)
    assert "No run 'nope' in RUNS_DIR" in texts(at.warning)
    assert any(l.proto.page.rstrip("/").endswith("runs") for l in at.get("page_link")), "no link to the runs list"
    assert at.query_params["run"] in (["nope"], "nope")                  # the link is left as it was
    if page in RESULT_PAGES + ["run"]:
        assert not at.get("plotly_chart"), f"{page} showed another run"
    assert at.selectbox[0].value is None                                 # the picker names no run either


def test_run_links_hold_a_bare_id(runs_dir):
    fake_run(runs_dir, "a1", {"state": "cancelled", "message": "cancelled by user"})
    fake_run(runs_dir, "b2", {"state": "running", "message": "going"})
    at = app("runs", "b2 · queued")                                       # a link an older version leaked
    assert at.query_params["run"] in (["b2"], "b2")
    picker = at.selectbox[0]
    assert picker.value == "b2" and "b2 · running" in picker.options      # value bare, label formatted
    picker.set_value("a1").run()
    assert at.query_params["run"] in (["a1"], "a1")
    runs.update_status(runs_dir / "a1", state="failed", error="boom")     # its label changes under the picker
    at.run()
    assert at.query_params["run"] in (["a1"], "a1") and at.selectbox[0].value == "a1"


def done_run(root: Path, rid: str, preset: str, seconds: float, device: str = "cpu", state: str = "done") -> None:
    fake_run(root, rid, {"state": state, "started": 1000.0, "finished": 1000.0 + seconds, "device": device})
    cfg = runs.read_json(root / rid / "config.json")
    runs.write_json(root / rid / "config.json", {**cfg, "preset": preset})


def test_time_estimate_is_the_median_of_finished_runs_of_the_preset_on_this_device(runs_dir):
    from studio import ui
    assert runs.estimate("digits-quick") is None
    assert ui.demo_label() == f"Run the quick demo (digits, about {DIGITS_QUICK_WORDS} s)"
    for i, sec in enumerate([30, 10, 50]):
        done_run(runs_dir, f"q{i}", "digits-quick", sec)
    done_run(runs_dir, "gpu", "digits-quick", 3, device="cuda")           # another device
    done_run(runs_dir, "other", "tiny", 1000)                             # another preset
    done_run(runs_dir, "broke", "digits-quick", 1, state="failed")        # not finished
    assert runs.estimate("digits-quick", "cpu") == (30.0, 3)
    assert runs.estimate("digits-quick", "cuda") == (3.0, 1)
    assert runs.estimate("tiny", "cpu") == (1000.0, 1)
    assert runs.estimate("digits-mixed", "cpu") is None
    at = app("launch")
    at.selectbox(key="opt_device").set_value("cpu").run()
    assert "About 30 s (median of 3 past runs of this preset here)" in texts(at.caption)
    at.selectbox(key="preset").set_value("digits-mixed").run()
    assert "No past runs of this preset here yet" in texts(at.caption)
    at.selectbox(key="preset").set_value("tiny").run()
    at.selectbox(key="opt_device").set_value("cpu").run()
    assert "About 16.7 min (median of 1 past run of this preset here)" in texts(at.caption)


def test_deleting_clears_the_selection_and_confirms(runs_dir):
    fake_run(runs_dir, "old", {"state": "cancelled", "message": "cancelled by user"})
    fake_run(runs_dir, "keep", {"state": "cancelled", "message": "cancelled by user"})
    at = app("runs", "old")
    at.button(key="delete").click().run()
    at.button(key="confirm_delete").click().run()
    assert_clean(at)
    assert not (runs_dir / "old").exists() and (runs_dir / "keep").exists()
    assert "Deleted `old`" in texts(at.success)
    assert "confirm_delete" not in [b.key for b in at.button]
    assert "old" not in [r for r in at.dataframe[0].value["run"]]
    at.run()                                      # another rerun (a filter, a click) must not lose the message
    assert "Deleted `old`" in texts(at.success)
    select_run_row(at, 0).button(key="delete").click().run()     # until the next deletion is asked for
    assert "Deleted `old`" not in texts(at.success)


def select_run_row(at: AppTest, row: int) -> AppTest:
    """Select row `row` of the Runs table, as a click on it does."""
    table = next(k for k in at.session_state._state.filtered_state if k.startswith("runs_table"))
    at.session_state[table] = {"selection": {"rows": [row], "columns": [], "cells": []}}
    return at.run()


def test_a_selected_run_is_never_another_after_the_table_changes(runs_dir):
    """The Runs table's selection is a row number. Filtering (or a deletion, or a run started in another tab)
    kept it: the last row selected, then a filter leaving one row, was an IndexError traceback, and a new run
    above the selected one made every button act on that new run instead."""
    for rid in ("alpha", "bravo", "charlie"):
        fake_run(runs_dir, rid, {"state": "cancelled", "message": "cancelled by user"})
        time.sleep(0.01)                                  # newest first: charlie, bravo, alpha
    at = app("runs", "alpha")                                 # the active run: what the page acts on unselected
    assert list(at.dataframe[0].value["run"]) == ["charlie", "bravo", "alpha"]
    def heading():                                        # the run the page's buttons act on
        return [s.value for s in at.subheader][0]
    select_run_row(at, 1)
    assert heading() == "`bravo`"
    at.text_input(key="runs_filter").input("charlie").run()      # one row left, and row 1 is gone
    assert_clean(at)
    assert heading() == "`alpha`"
    at.text_input(key="runs_filter").input("").run()
    select_run_row(at, 0)
    assert heading() == "`charlie`"
    fake_run(runs_dir, "delta", {"state": "cancelled", "message": "cancelled by user"})   # launched in another tab
    at.run()
    assert_clean(at)
    assert heading() == "`alpha`"                              # not `delta`, now in row 0


def three_runs(finished_run, root: Path) -> list[str]:
    """Copies of the finished tiny run, each with its own seed in config.json and its own name."""
    import shutil
    src_root, rid = finished_run
    ids = []
    for i, seed in enumerate((0, 7, 9)):
        d = root / f"cmp{i}"
        shutil.copytree(src_root / rid, d)
        cfg = runs.read_json(d / "config.json")
        runs.write_json(d / "config.json", {**cfg, "seed": seed})
        ids.append(d.name)
    runs.write_notes(root / "cmp1", "second", "baseline, k-sweep", "a note")
    return ids


def test_runs_table_filters_and_compares_three_runs_on_shared_axes(finished_run, tmp_path, monkeypatch):
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(tmp_path))
    ids = three_runs(finished_run, tmp_path)
    at = app("runs", ids[0])
    assert_clean(at)
    table = at.dataframe[0].value
    assert sorted(table["run"]) == ids and {"created", "duration s", "replica rate", "d_traj ÷ step", "dominated",
                                            "o-g (max)", shape.ENSEMBLE_GAIN, shape.GEN_MINUS_ORIG, "zoo",
                                            "tags"} <= set(table.columns)
    # the replica rate with the distance to the path beside it, and differences with their interval (DESIGN.md)
    a = runs.read_json(tmp_path / ids[0] / "analysis.json")
    row = table.set_index("run").loc[ids[0]]
    assert row["d_traj ÷ step"] == pytest.approx(a["memorization"]["trajectory"]["groups"]["generated"]["ratio_to_step"])
    # shares as percentages; the IoU as the Similarity page shows it, not as a percentage
    assert row["replica rate"] == pytest.approx(100 * a["memorization"]["replica_rate"])
    assert row["o-g (max)"] == pytest.approx(a["similarity"]["og_max"])
    for col, d in ((shape.GEN_MINUS_ORIG, a["accuracy"]["median_difference"]),
                   (shape.ENSEMBLE_GAIN, a["ensembles"]["intervals"]["gain_generated"])):
        assert row[col].endswith(f"[{100 * d['lo'] + 0.0:+.1f}, {100 * d['hi'] + 0.0:+.1f}]"), (col, row[col], d)
        assert row[col].startswith("no difference") != d["differs"], (col, row[col], d)
    assert table.set_index("run").at["cmp1", "tags"] == "baseline, k-sweep"
    at.text_input(key="runs_filter").input("k-sweep").run()
    assert list(at.dataframe[0].value["run"]) == ["cmp1"]
    at.multiselect(key="compare").set_value(ids).run()
    assert_clean(at)
    diff = [d.value for d in at.dataframe if d.value.index.name == "option"]
    assert diff and list(diff[0].index) == ["seed"] and list(diff[0].columns) == ids
    charts = [c for c in at.get("plotly_chart")]
    assert len(charts) == 3                                   # accuracy, distances, accuracy vs novelty
    import json                                               # run ids as a side legend squeezed the half-width plot
    assert json.loads(charts[2].proto.spec)["layout"]["legend"]["orientation"] == "h"


def test_a_table_never_shows_a_difference_inside_its_interval_as_a_gain():
    """The Runs table showed an ensemble gain of +0.8 as a bare number while the verdict said no difference."""
    assert shape.difference_cell({"diff": 0.0082, "lo": -0.0025, "hi": 0.0192, "differs": False}) == \
        "no difference [-0.2, +1.9]"
    assert shape.difference_cell({"diff": -0.0139, "lo": -0.0361, "hi": -0.0012, "differs": True}) == "-1.4 [-3.6, -0.1]"
    assert shape.difference_cell(None) is None
    row = shape.runs_table([{"run": "noanalysis", "state": "done", "config": {"preset": "tiny"}}]).iloc[0]
    assert row[shape.GEN_MINUS_ORIG] == row[shape.ENSEMBLE_GAIN] == "–"     # a dash, never the word "None"


def test_run_name_tags_and_notes_are_saved_in_the_run_directory(runs_dir):
    fake_run(runs_dir, "mine", {"state": "cancelled", "message": "cancelled by user"})
    at = app("runs", "mine")
    assert "Saved" not in texts(at.caption)                  # nothing saved yet
    at.text_input[1].input("my run")                         # [0] is the filter
    at.text_input[2].input("a, b ,a")
    at.text_area[0].input("why I ran it")
    at.button[[b.label for b in at.button].index("Save")].click().run()
    assert_clean(at)
    assert runs.read_notes(runs_dir / "mine") == {"name": "my run", "tags": ["a", "b"], "notes": "why I ran it"}
    assert re.search(r":material/save: Saved 20\d\d-\d\d-\d\d \d\d:\d\d:\d\d, in the run directory's notes\.json",
                     texts(at.caption)), texts(at.caption)         # read from the file: no later rerun loses it
    assert at.dataframe[0].value.set_index("run").at["mine", "name"] == "my run"


def test_notes_written_by_another_tool_do_not_break_the_runs_table(runs_dir):
    """notes.json is part of the run directory's contract, so notebooks write it too: tags null (or a number)
    was a TypeError traceback on the Runs page, for every run; tags as one string showed each letter as a tag."""
    import json
    for rid, notes in {"nulltags": {"name": "x", "tags": None}, "numtags": {"tags": 5, "name": 7},
                       "onestring": {"tags": "baseline, k", "notes": ["not", "text"]}}.items():
        fake_run(runs_dir, rid, {"state": "cancelled", "message": "cancelled by user"})
        (runs_dir / rid / "notes.json").write_text(json.dumps(notes))
    at = app("runs", "onestring")
    assert_clean(at)
    table = at.dataframe[0].value.set_index("run")
    assert table.at["onestring", "tags"] == "baseline, k" and table.at["nulltags", "name"] == "x"
    assert table.at["numtags", "tags"] == "" and table.at["numtags", "name"] == ""
    assert at.text_input(key="note_tags_onestring").value == "baseline, k"
    assert at.text_area(key="note_text_onestring").value == ""


def test_launch_form_is_kept_in_the_url_so_a_reload_keeps_it(runs_dir):
    at = app("launch")
    at.selectbox(key="preset").set_value("tiny").run()
    at.text_input(key="opt_k").set_value("77").run()
    at.selectbox(key="opt_sampler").set_value("ddpm").run()
    assert at.query_params["preset"] in (["tiny"], "tiny")
    sets = at.query_params["set"]
    assert sorted([sets] if isinstance(sets, str) else sets) == ["k=77", "sampler=ddpm"]
    again = AppTest.from_file(APP, default_timeout=TIMEOUT)                 # a new session: what a reload is
    again.switch_page("pages/launch.py")
    again.query_params["preset"] = "tiny"
    again.query_params["set"] = ["k=77", "sampler=ddpm", "dataset=nope", "k2=1"]   # junk is dropped
    again.run()
    assert_clean(again)
    assert again.selectbox(key="preset").value == "tiny"
    assert again.text_input(key="opt_k").value == "77" and again.selectbox(key="opt_sampler").value == "ddpm"
    assert again.selectbox(key="opt_dataset").value == preset_config("tiny").dataset
    at.text_input(key="opt_k").set_value(str(preset_config("tiny").k)).run()   # back to the preset's: out of the URL
    at.selectbox(key="opt_sampler").set_value(preset_config("tiny").sampler).run()
    assert "set" not in at.query_params


def test_pca_map_axes_say_how_much_variance_they_hold(finished_run, monkeypatch):
    import json
    import numpy as np
    root, rid = finished_run
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(root))
    at = app("parameter_space", rid)
    assert_clean(at)
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    with np.load(root / rid / "analysis.npz", allow_pickle=False) as a:
        share = a["emb_params_pca_explained"]
    titles = [fig["layout"][ax]["title"]["text"] for ax in ("xaxis", "yaxis")]
    assert titles == [f"PC {i + 1} ({100 * share[i]:.1f} % of variance)" for i in range(2)], titles
    assert share[0] >= share[1] > 0


def test_accuracy_chart_labels_each_line_with_its_value_on_a_box_in_its_colour(finished_run, monkeypatch):
    """The base model's and the average's lines carry their test accuracy, read from metrics.json; each label
    sits on an opaque box in its line's colour, since it often lies over a tall bar."""
    import json
    root, rid = finished_run
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(root))
    at = app("accuracy", rid)
    assert_clean(at)
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    m = runs.read_json(root / rid / "metrics.json")
    labels = boxed_line_labels(fig)
    assert len(labels) == len(fig["layout"]["annotations"])     # every label belongs to a line
    assert f"base model {m['base']['test_acc']:.1%}" in labels, list(labels)
    assert any(t.startswith("average ") for t in labels), list(labels)


def boxed_line_labels(fig: dict) -> list[str]:
    """The texts of the labels that sit on a chart's reference lines (plotly's add_vline/add_hline), after
    asserting that each is in its line's colour on a white box."""
    lines = {}
    for s in fig["layout"].get("shapes", []):
        if s.get("xref") == "x" and s["x0"] == s["x1"]:
            lines[("x", s["x0"])] = s["line"]["color"]
        elif s.get("yref") == "y" and s["y0"] == s["y1"]:
            lines[("y", s["y0"])] = s["line"]["color"]
    found = []
    for a in fig["layout"].get("annotations", []):
        key = ("x", a.get("x")) if a.get("xref") == "x" else ("y", a.get("y")) if a.get("yref") == "y" else None
        if key in lines:
            assert a["font"]["color"] == lines[key] and a["bgcolor"].startswith("rgba(255,255,255"), a
            found.append(a["text"])
    return found


def test_memorization_and_transfer_line_labels_are_boxed_in_their_colour(finished_run, transfer_run, monkeypatch):
    """As on the Accuracy chart: the replica threshold, and each transfer chart's oracle line."""
    import json
    root, rid = finished_run
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(root))
    at = app("memorization", rid)
    assert_clean(at)
    found = [t for c in at.get("plotly_chart") for t in boxed_line_labels(json.loads(c.proto.spec))]
    assert any(t.startswith("replica threshold") for t in found), found
    root, rid = transfer_run
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(root))
    at = app("transfer", rid)
    assert_clean(at)
    found = [t for c in at.get("plotly_chart") for t in boxed_line_labels(json.loads(c.proto.spec))]
    assert any(t.startswith("oracle median ") for t in found) and any(t.startswith("oracle ") and "median" not in t
                                                                       for t in found), found


# ---- the Sweeps page --------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def finished_sweep(tiny_sweep):
    """A real tiny sweep from the CLI, k=12,24 × seeds 0,1, in its own runs directory: (runs dir, sweep.json).
    conftest's tiny_sweep, the one test_sweep reads too."""
    root, sw, _ = tiny_sweep
    assert sw["name"] == "t"
    assert all(runs.read_status(root / c["run"])["state"] == "done" for c in sw["cells"])
    return root, sw


def test_sweeps_page_with_no_sweeps_says_so(runs_dir):
    at = app("sweeps")
    assert_clean(at)
    assert "No sweeps yet" in texts(at.info) and "python -m pdiff_core sweep --from k-memorization" in texts(at.info)
    assert "12 cells (runs)" in texts(at.caption)                         # the form's default: 2 × 2 × 3 seeds


def test_a_preset_sweep_fills_the_form(runs_dir):
    at = app("sweeps")
    at.selectbox(key="sw_from").set_value("k-memorization").run()
    assert_clean(at)
    assert at.text_area(key="sw_grid").value == "k=10,25,50,100,200\nzoo=trajectory,independent"
    assert at.text_input(key="sw_seeds").value == "0,1,2" and at.selectbox(key="sw_preset").value == "digits-quick"
    assert "30 cells (runs)" in texts(at.caption)


def test_a_bad_grid_is_one_line_and_creates_nothing(runs_dir):
    at = app("sweeps")
    at.text_area(key="sw_grid").set_value("k=12,24\nnope=1,2").run()
    assert len(at.error) == 1 and "unknown config key 'nope'" in at.error[0].value, texts(at.error)
    assert "\n" not in at.error[0].value
    assert at.button(key="sw_launch").disabled                          # nothing to launch until it is fixed
    at.text_area(key="sw_grid").set_value("k=0").run()
    assert "k must be a positive integer" in texts(at.error)
    at.text_input(key="sw_seeds").set_value("0,0").run()
    assert "--seeds needs distinct integers" in texts(at.error)
    assert not (runs_dir / "_sweeps").exists() or not any((runs_dir / "_sweeps").iterdir())


def test_a_large_sweep_asks_for_a_tick_before_launch(runs_dir):
    """10,000 cells started at one click, with no word; now Launch waits for 'Start all N runs'."""
    at = app("sweeps")
    assert not at.button(key="sw_launch").disabled and not at.warning     # the default 12 cells: no question
    at.text_area(key="sw_grid").set_value("k=" + ",".join(str(k) for k in range(10, 60))).run()   # 50 x 3 seeds
    assert_clean(at)
    assert "150 runs is a large sweep" in texts(at.warning) and at.button(key="sw_launch").disabled
    at.checkbox(key="sw_big_ok_150").check().run()
    assert not at.button(key="sw_launch").disabled
    at.text_input(key="sw_seeds").set_value("0,1,2,3").run()               # 200 cells: asked again
    assert at.button(key="sw_launch").disabled
    assert not (runs_dir / "_sweeps").exists() or not any((runs_dir / "_sweeps").iterdir())


def plotly_array(v):
    """A trace's array as plotly's JSON has it: a list, or base64 binary {"dtype", "bdata"}."""
    import base64

    import numpy as np
    return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"]) if isinstance(v, dict) else np.asarray(v)


def test_sweeps_page_plots_the_mean_over_seeds_and_links_every_run(finished_sweep, monkeypatch):
    import json

    import numpy as np
    root, sw = finished_sweep
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(root))
    at = app("sweeps")
    assert_clean(at)
    assert at.query_params["sweep"] in (["t"], "t")
    assert not at.get("progress"), "a finished sweep shows no live cell grid"
    metric = at.selectbox(key="sw_metric").value
    assert metric == "gen_minus_orig" and at.selectbox(key="sw_x").value == "k"
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    (trace,) = chart["data"]
    xs, ys = plotly_array(trace["x"]), plotly_array(trace["y"])
    assert list(xs) == [12, 24], xs
    for k, mean in zip(xs, ys):
        figs = [100 * runs.read_json(root / c["run"] / "analysis.json")["accuracy"]["median_difference"]["diff"]
                for c in sw["cells"] if c["overrides"]["k"] == k]
        assert len(figs) == 2 and mean == pytest.approx(np.mean(figs)), (k, mean, figs)
    assert len(at.get("plotly_chart")) == 2                              # and the accuracy-novelty plane
    table = at.dataframe[0].value
    assert len(table) == 4 and set(table["state"]) == {"done"}
    assert list(table["link"]) == [f"/run?run={c['run']}" for c in sw["cells"]]
    assert "None" not in table.astype(str).to_string()


def test_a_running_sweep_shows_its_cells_live_and_cancels(runs_dir):
    """A sweep whose driver is alive (this process stands in for it): one tile per cell with its state
    and progress, and Cancel writes the sweep's CANCEL file."""
    from pdiff_core import sweep
    sw = sweep.create("live", "tiny", {"k": [12, 24]}, [0, 1])
    runs.write_json(runs_dir / "_sweeps" / "live" / "state.json",
                    {"state": "running", "pid": os.getpid(), "going": {sw["cells"][0]["run"]: {"attempt": 1}}})
    at = app("sweeps")
    assert_clean(at)
    assert at.query_params["sweep"] in (["live"], "live")
    assert len(at.get("progress")) == 4                                    # a tile per cell
    tiles = texts(at.markdown)
    assert "k=12 · seed 0** :blue-badge[running]" in tiles and tiles.count(":gray-badge[pending]") == 3, tiles
    assert "3 pending · 1 running" in texts(at.caption)
    at.button(key="sw_cancel").click().run()
    assert (runs_dir / "_sweeps" / "live" / "CANCEL").is_file()


def test_a_damaged_sweep_says_why_and_hides_none_of_the_others(runs_dir):
    fake_sweep("good")
    fake_sweep("bad", lambda sw: sw.pop("cells"))                          # the newest: once the default pick
    at = app("sweeps")
    assert_clean(at)
    (warning,) = [w.value for w in at.warning]
    assert warning.startswith("Sweep 'bad' cannot be shown: ") and "'cells' is missing or not a list" in warning
    assert "\n" not in warning and at.query_params["sweep"] in (["good"], "good")
    assert "**`good`**" in texts(at.markdown)


def test_a_link_to_a_missing_sweep_says_so_and_keeps_the_link(runs_dir):
    fake_sweep("good")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.switch_page("pages/sweeps.py")
    at.query_params["sweep"] = "nosuch"
    at.run()
    assert_clean(at)
    assert "No sweep 'nosuch'" in texts(at.warning) and "not there" in texts(at.warning)
    assert at.query_params["sweep"] in (["nosuch"], "nosuch") and "`good`" not in texts(at.markdown)
    at.selectbox(key="sw_pick-nosuch").set_value("good").run()               # picking one shows it
    assert_clean(at)
    assert at.query_params["sweep"] in (["good"], "good") and "**`good`**" in texts(at.markdown)


# ---- transfer runs (a task family) -------------------------------------------------------------------

@pytest.fixture(scope="session")
def transfer_run(tiny_transfer):
    """One real tiny-tasks run: conftest's, shared with test_transfer and test_browser."""
    assert runs.read_json(tiny_transfer / "status.json")["state"] == "done"
    return tiny_transfer.parent, tiny_transfer.name


def test_a_finished_transfer_run_without_its_result_files_says_what_to_do(transfer_run, tmp_path, monkeypatch):
    """Without transfer.json (which analyze rebuilds from transfer.npz) or transfer.npz, the Transfer page of a
    finished transfer run showed only its badge: no message, nothing to do."""
    import shutil
    root, rid = transfer_run
    for copy, lost in (("nojson", "transfer.json"), ("nonpz", "transfer.npz")):
        shutil.copytree(root / rid, tmp_path / copy)
        (tmp_path / copy / lost).unlink()
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(tmp_path))
    at = app("transfer", "nojson")
    assert not at.exception
    assert "transfer.json is missing" in texts(at.error) and "python -m pdiff_core analyze nojson" in texts(at.error)
    at = app("transfer", "nonpz")
    assert not at.exception
    assert "transfer.npz is missing" in texts(at.error) and "delete the run and run it again" in texts(at.error)


def test_transfer_page_shows_the_verdict_evidence_and_charts(transfer_run, monkeypatch):
    import numpy as np
    root, rid = transfer_run
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(root))
    at = app("transfer", rid)
    assert_clean(at)
    t = runs.read_json(root / rid / "transfer.json")
    assert t["verdict"] in texts(at.info)
    assert len(at.get("plotly_chart")) == 5                  # all tasks, heads, fine-tuning, memorization, map
    shown = texts(at.markdown)
    # the oracle's median in the bullets is the one recomputed here from the raw predictions
    a = runs.read_npz(root / rid / "transfer.npz")
    oracle = np.median((a["pred_oracle"] == a["y_test"]).mean(-1))
    assert f"**oracle (full train split)**: {100 * oracle:.1f} %" in shown, shown
    for key, d in t["comparisons"].items():                 # an interval holding 0 is never a gain
        if not d["differs"]:                                  # 4 tasks: too few for any 95 % interval
            assert ("no difference" if d["level"] >= 0.95 else "not shown different") in shown
            assert "better by" not in shown and "worse by" not in shown
    assert "None" not in shown
    # the first held-out task is picked and kept in the URL; its fine-tuning curves come from transfer.npz
    first = t["heldout_tasks"][0]
    assert at.query_params["task"] in ([first], first)
    curves = at.get("plotly_chart")[2].proto.spec
    import json
    spec = json.loads(curves)
    line = next(tr for tr in spec["data"] if tr.get("name", "").startswith("generated"))
    y0 = (a["pred_finetune"][0, 0, 0] == a["y_test"][0]).mean()
    assert abs(plotly_array(line["y"])[0] - y0) < 1e-9
    # another task: the URL follows
    last = t["heldout_tasks"][-1]
    at.selectbox(key="tr_task").set_value(last).run()
    assert_clean(at)
    assert at.query_params["task"] in ([last], last)


def test_a_transfer_link_opens_on_its_task(transfer_run, monkeypatch):
    root, rid = transfer_run
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(root))
    task = runs.read_json(root / rid / "transfer.json")["heldout_tasks"][1]
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.switch_page("pages/transfer.py")
    at.query_params["run"], at.query_params["task"] = rid, task
    at.run()
    assert_clean(at)
    assert at.selectbox(key="tr_task").value == task


@pytest.mark.parametrize("page", ["accuracy", "memorization"])
def test_result_pages_point_a_transfer_run_to_the_transfer_page(page, transfer_run, monkeypatch):
    root, rid = transfer_run
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(root))
    at = app(page, rid)
    assert_clean(at)
    assert "This is a transfer run: its results are on the Transfer page" in texts(at.info)
    assert any(l.proto.page.rstrip("/").endswith("transfer") for l in at.get("page_link"))
    assert not at.get("plotly_chart")


def test_transfer_page_on_a_plain_run_says_it_needs_a_task_family(finished_run, monkeypatch):
    root, rid = finished_run
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(root))
    at = app("transfer", rid)
    assert_clean(at)
    assert "Transfer needs a run of a task family: launch digits-tasks" in texts(at.info)
    assert not at.get("plotly_chart")
