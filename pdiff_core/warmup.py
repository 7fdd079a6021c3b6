"""CUDA's cold start off the critical path. A run's first CUDA use pays for the context, for
loading cuBLAS and cuDNN and for their first kernels (5.6 s of an 18.5 s digits-quick on an H200).
`start()` pays it in a background thread while the main thread loads data and builds the model.

Why a thread and not a warm worker process: the cost is per process, and CUDA cannot be forked
into one. The app's waiting worker (pdiff_core/standby.py) does a run's imports before the click
but not this: it would hold a CUDA context while idle, and no GPU session has measured it yet.
PyTorch releases the GIL inside its ops, so the thread's first kernels do not stall the Python
work beside it; the context itself is created under torch's init lock, which the main
thread's first CUDA call simply waits on. The thread draws no random numbers (that would move
the seeded generators) and never fails a run: an error is recorded and the run goes on cold.

PDIFF_CUDA_WARMUP=0 turns it off, so bench/coldstart.py can time both side by side."""
from __future__ import annotations

import os
import threading
import time

_state: dict = {"thread": None, "seconds": None, "error": None}


def _warm(device: str) -> None:
    import torch
    import torch.nn.functional as F
    t0 = time.perf_counter()
    try:
        torch.cuda.init()
        # the first kernels of base training and evaluation: TF32 matmul (cuBLAS), conv (cuDNN),
        # BatchNorm in training mode, cross-entropy and their backward; deterministic inputs only
        x = torch.linspace(-1, 1, 2 * 3 * 8 * 8, device=device).view(2, 3, 8, 8).requires_grad_()
        w = torch.linspace(-1, 1, 4 * 3 * 3 * 3, device=device).view(4, 3, 3, 3).requires_grad_()
        h = F.batch_norm(F.conv2d(x, w, padding=1), None, None, training=True).flatten(1)
        logits = h @ torch.linspace(-1, 1, h.shape[1] * 10, device=device).view(-1, 10)
        F.cross_entropy(logits, torch.arange(2, device=device)).backward()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            (logits.detach() @ logits.detach().T).sum()
        torch.cuda.synchronize(device)
        _state["seconds"] = round(time.perf_counter() - t0, 3)
    except Exception as e:      # a run never fails for its warm-up; its first CUDA call raises the real error
        _state["error"] = f"{type(e).__name__}: {e}".splitlines()[0]


def start(device: str) -> None:
    """Warm CUDA in the background, once per process; a no-op on the CPU or when turned off."""
    if device != "cuda" or _state["thread"] is not None or os.environ.get("PDIFF_CUDA_WARMUP") == "0":
        return
    _state["thread"] = threading.Thread(target=_warm, args=(device,), name="cuda-warmup", daemon=True)
    _state["thread"].start()


def result(wait: bool = True) -> dict:
    """{'started', 'seconds', 'error'} of this process's warm-up (waits for it to end unless told not to)."""
    thread = _state["thread"]
    if thread is not None and wait:
        thread.join()
    return {"started": thread is not None, "seconds": _state["seconds"], "error": _state["error"]}
