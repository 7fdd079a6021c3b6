import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_core_imports_without_streamlit_or_umap():
    """The GPU machine has neither (nor ray): pdiff_core must not import them at module level."""
    code = ("import sys, pdiff_core, pdiff_core.pipeline, pdiff_core.analysis, pdiff_core.jobs, pdiff_core.__main__,"
            " pdiff_core.sweep, pdiff_core.driver, pdiff_core.landing, pdiff_core.executors, pdiff_core.generator;"
            "bad = [m for m in ('streamlit', 'umap', 'plotly', 'ray') if m in sys.modules];"
            "assert not bad, bad")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


@pytest.mark.slow
def test_what_trains_nothing_imports_no_torch(tmp_path):
    """torch costs about 1 s to import. A sweep's driver, a Ray worker's executor, the CLI's list and
    presets, a run refused for a bad value, and the app's Home page on a first visit (no runs yet) read JSON
    or check values only, so they must not pay it."""
    code = ("import sys, pdiff_core.__main__, pdiff_core.sweep, pdiff_core.driver, pdiff_core.executors, pdiff_core.jobs;"
            "from pdiff_core.__main__ import main; main(['presets']); main(['list']);"
            "assert main(['run', '--preset', 'tiny', '--set', 'k=-1']) == 2;"
            "from streamlit.testing.v1 import AppTest;"
            "at = AppTest.from_file('app.py', default_timeout=60).run(); assert not at.exception, at.exception;"
            "assert any('Run the quick demo' in b.label for b in at.button), [b.label for b in at.button];"
            "assert 'torch' not in sys.modules, [m for m in sys.modules if m.startswith('torch')][:5]")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PDIFF_RUNS_DIR": str(tmp_path)})
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("package", ["pdiff_core", "studio"])
def test_no_module_imports_itself_back(package):
    """The stages layer one way (a sweep's definition, then its cells' landing, executors, driver; the
    generator below both pipelines; the app's shaping below its charts and views): a cycle, even
    through a lazy import inside a function, means two modules hold one concern between them."""
    import ast
    core = ROOT / package
    names = {p.stem for p in core.glob("*.py")}
    deps = {}
    for p in core.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level == 1 or node.module == package:       # from . import x, from .x import, from studio import x
                found |= {node.module} if node.level and node.module else {a.name for a in node.names}
            elif node.level == 0 and (node.module or "").startswith(package + "."):   # from studio.x import y
                found.add(node.module.split(".")[1])
        deps[p.stem] = found & names - {p.stem}

    def reach(start):
        seen, todo = set(), [start]
        while todo:
            for d in deps[todo.pop()] - seen:
                seen.add(d)
                todo.append(d)
        return seen
    cycles = sorted(m for m in deps if m in reach(m))
    assert not cycles, f"these modules import themselves back through others: {cycles}"
