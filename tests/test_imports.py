import subprocess
import sys

from tests.conftest import ROOT


def test_core_imports_without_streamlit_or_umap():
    """The GPU machine has neither (nor ray): pdiff_core must not import them at module level."""
    code = ("import sys, pdiff_core, pdiff_core.pipeline, pdiff_core.analysis, pdiff_core.jobs, pdiff_core.__main__,"
            " pdiff_core.sweep, pdiff_core.executors;"
            "bad = [m for m in ('streamlit', 'umap', 'plotly', 'ray') if m in sys.modules];"
            "assert not bad, bad")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
