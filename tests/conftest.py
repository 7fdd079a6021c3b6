import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
torch.set_num_threads(2)


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    """A private runs directory for one test."""
    d = tmp_path / "runs"
    monkeypatch.setenv("PDIFF_RUNS_DIR", str(d))
    return d
