import pytest
import torch

from pdiff_core import warmup
from pdiff_core.config import preset_config
from pdiff_core.prepare import prepare


def test_only_a_run_starts_the_warm_up_and_never_on_the_cpu(monkeypatch):
    """prepare() warms CUDA only when a run is about to start (warm=True): the app's launch form calls it
    to check input, and the Streamlit server must never hold a CUDA context. On the CPU it is a no-op."""
    calls = []
    monkeypatch.setattr(warmup, "start", lambda device: calls.append(device))
    prepare(preset_config("tiny", device="cpu"))
    assert calls == []
    prepare(preset_config("tiny", device="cpu"), warm=True)
    assert calls == ["cpu"]
    monkeypatch.undo()
    warmup.start("cpu")
    assert warmup.result() == {"started": False, "seconds": None, "error": None}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_warm_up_finishes_and_draws_no_random_numbers():
    """The thread must not move the seeded generators (same seed, same run) and must not fail."""
    torch.manual_seed(0)
    cpu, gpu = torch.get_rng_state(), torch.cuda.get_rng_state()
    warmup.start("cuda")
    r = warmup.result()
    assert r["started"] and r["error"] is None and r["seconds"] is not None, r
    assert torch.equal(torch.get_rng_state(), cpu) and torch.equal(torch.cuda.get_rng_state(), gpu)
