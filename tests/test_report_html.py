"""The HTML report of a run (studio/report.py, `python -m pdiff_core report`): built from a real
tiny run; self-contained (plotly.js inlined once, nothing fetched); CLI exit codes."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from pdiff_core import runs
from pdiff_core.__main__ import main
from studio import report, shape
from tests.conftest import ROOT

FIGURE_DIV = 'class="plotly-graph-div"'


def expected_titles(run_dir) -> list[str]:
    a, an = runs.read_npz(run_dir / "analysis.npz"), runs.read_json(run_dir / "analysis.json")
    titles = ["Test-accuracy distributions", "IoU of test errors"]
    names = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
    for space, word in (("params", "parameters"), ("latent", "AE latents")):
        titles += [f"{word}, {names[m]}" for m in shape.embedding_methods(a, space)]
    titles += ["Distance to the nearest checkpoint (raw)", "Distance to the nearest checkpoint (normalized)",
               "Accuracy against novelty", "The closest pair"]
    if an["ensembles"].get("k"):
        titles.append("Ensembles")
    return titles + ["Initialization"]


def outside_scripts(text: str) -> str:
    """The document without the bodies of its inline scripts (plotly.js holds URL strings in code)."""
    return re.sub(r"(<script[^>]*>).*?(</script>)", r"\1\2", text, flags=re.S | re.I)


def assert_self_contained(text: str) -> None:
    markup = outside_scripts(text)
    fetched = re.findall(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", markup, flags=re.I)
    assert not fetched, fetched
    assert not re.search(r"<script[^>]*\bsrc\s*=", markup, re.I), "an external script"
    assert not re.search(r"<link\b", markup, re.I), "a stylesheet or font link"
    assert not re.search(r"@import|url\(\s*['\"]?(?:https?:)?//", markup, re.I), "a CSS fetch"


def test_markdown_subset():
    out = report.markdown("**Warning:** x < y\n\n**Headline.**\n\n- one **bold** bit\n- two")
    assert out == ("<p><strong>Warning:</strong> x &lt; y</p>\n<p><strong>Headline.</strong></p>\n"
                   "<ul><li>one <strong>bold</strong> bit</li><li>two</li></ul>")


def test_report_has_verdict_warnings_charts_and_config(tiny_run):
    text = report.build(tiny_run)
    an, cfg = runs.read_json(tiny_run / "analysis.json"), runs.read_json(tiny_run / "config.json")
    headline = next(l for l in an["verdict"].split("\n\n") if l.startswith("**") and not l.startswith("**Warning"))
    assert f"<strong>{headline.strip('*')}</strong>" in text.replace("&#x27;", "'")
    assert "<ul><li>Zoo:" in text                                  # the verdict's bullets as a list
    for w in runs.read_json(tiny_run / "metrics.json").get("warnings") or []:
        assert w.split("'")[0][:40] in text
    titles = expected_titles(tiny_run)
    assert text.count(FIGURE_DIV) == len(titles), (text.count(FIGURE_DIV), titles)
    for t in titles:
        assert f"<h3>{t}" in text.replace("&#x27;", "'"), t
    for key in cfg:
        assert f'<td class="k">{key}</td>' in text, key
    # the headline numbers as the app shows them: s_max is an IoU (0.527, not "53%"), d_traj beside the replica rate
    mem = an["memorization"]
    row = re.search(r"<th>o-o IoU</th>.*?</table>", text, re.S).group(0)
    names, cells = re.findall(r"<th>(.*?)</th>", row), re.findall(r"<td>(.*?)</td>", row)
    numbers = dict(zip(names, cells))
    assert numbers["mean s_max (an IoU)"] == f"{mem['groups']['generated']['smax_mean']:.3f}", numbers
    assert numbers["d_traj ÷ step (median)"] == f"{mem['trajectory']['groups']['generated']['ratio_to_step']:.1f}"
    assert names.index("d_traj ÷ step (median)") == names.index("replica rate") + 1
    # plotly.js inline exactly once, and nothing that a browser would fetch
    assert len(re.findall(r"<script>/\*\*\s*\* plotly\.js v", text)) == 1
    assert text.count("window.PlotlyConfig") == 1
    assert_self_contained(text)


def test_builder_imports_without_streamlit():
    code = "import sys, studio.report; assert 'streamlit' not in sys.modules, 'streamlit imported'"
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_cli_report(tiny_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(tiny_run.parent))
    out = tmp_path / "r.html"
    assert main(["report", "tiny", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out.resolve())
    assert out.read_text().count(FIGURE_DIV) == len(expected_titles(tiny_run))
    monkeypatch.chdir(tmp_path)                                    # default: ./report-RUN.html
    assert main(["report", "tiny"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "report-tiny.html")
    assert (tmp_path / "report-tiny.html").read_text() == out.read_text()     # deterministic


@pytest.mark.parametrize("setup,needle", [
    (None, "no run 'nope'"),
    ({"state": "running", "stage": "ddpm", "progress": 0.5}, "not finished (state: running)"),
])
def test_cli_report_refuses_unknown_or_unfinished_runs(runs_dir, capsys, setup, needle):
    if setup is not None:
        (runs_dir / "nope").mkdir(parents=True)
        (runs_dir / "nope" / "status.json").write_text(json.dumps(setup))
    assert main(["report", "nope"]) == 2
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], err


def test_done_run_without_analysis_is_refused(runs_dir, capsys):
    (runs_dir / "half").mkdir(parents=True)
    (runs_dir / "half" / "status.json").write_text(json.dumps({"state": "done"}))
    assert main(["report", "half"]) == 2
    assert "no analysis.json to report (state: done); recompute it with: python -m pdiff_core analyze half" in \
        capsys.readouterr().err
    (runs_dir / "half" / "transfer.json").write_text("{}")      # analyze then report looped on a transfer run
    assert main(["report", "half"]) == 2
    assert "is a transfer run" in capsys.readouterr().err


def test_metrics_of_the_wrong_shape_are_one_line(tiny_run, tmp_path, monkeypatch, capsys):
    """metrics.json whose groups is a list (valid JSON of the wrong shape) was an AttributeError traceback from
    `report`, and on four result pages of the app (test_app's damaged-run test)."""
    import shutil
    shutil.copytree(tiny_run, tmp_path / "bad")
    m = json.loads((tmp_path / "bad" / "metrics.json").read_text())
    (tmp_path / "bad" / "metrics.json").write_text(json.dumps({**m, "groups": list(m["groups"])}))
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(tmp_path))
    assert main(["report", "bad", "--out", str(tmp_path / "r.html")]) == 2
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(err) == 1 and "metrics.json is corrupt ('groups' is not an object of groups)" in err[0], err
    assert not (tmp_path / "r.html").exists()


def test_a_report_that_cannot_be_written_whole_leaves_the_old_one(tiny_run, tmp_path, monkeypatch, capsys):
    """A full disk (here: a 200 kB file-size limit) while writing: the existing file stays whole, no temporary
    file is left, one line says why. Before, --out was written in place and left a truncated report."""
    import resource
    import signal
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(tiny_run.parent))
    out = tmp_path / "old.html"
    out.write_text("the report from last week")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    before = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)      # the write fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))
    try:
        code = main(["report", "tiny", "--out", str(out)])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, before)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and "\n" not in err, err
    assert out.read_text() == "the report from last week"
    assert [p.name for p in tmp_path.iterdir()] == ["old.html"]
