import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
torch.set_num_threads(1)   # as runs do: on shared 2-core machines two threads ran up to 20x slower


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    """A private runs directory for one test."""
    d = tmp_path / "runs"
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(d))
    return d


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The tiny preset with the analysis stage on, as the pipeline runs it, shared by the tests that
    only read it. UMAP is made unimportable (its cold import alone takes 30-40 s), which also tests
    the graceful skip."""
    from pdiff_core.analysis import one_thread
    from pdiff_core.config import preset_config
    from pdiff_core.pipeline import execute
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("runs")
    mp.setenv("PDIFF_RUNS_DIR", str(root))
    mp.setitem(sys.modules, "umap", None)
    run_dir = root / "tiny"
    run_dir.mkdir()
    with one_thread():
        execute(preset_config("tiny"), run_dir)
    yield run_dir
    mp.undo()
