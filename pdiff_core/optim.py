"""What the AE and DDPM loops share: the optimizer, the learning-rate schedule, and on CUDA
one training step captured as a CUDA graph."""
from __future__ import annotations

import math
import warnings
from typing import Callable

import torch


def adamw(params, lr: float, weight_decay: float, device: str) -> torch.optim.AdamW:
    """Fused AdamW. On CUDA the learning rate is a device tensor and the step count lives on the
    device (capturable), so a captured step reads the schedule's current value at each replay."""
    if device == "cuda":
        opt = torch.optim.AdamW(params, lr=torch.tensor(lr, device=device), weight_decay=weight_decay,
                                fused=True, capturable=True)
        for group in opt.param_groups:   # a float base rate: the schedule then fills the tensor from
            group["initial_lr"] = lr     # a Python number, with no device-to-host read per step
        return opt
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)


def warmup_cosine(opt: torch.optim.Optimizer, steps: int, warmup: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup` of the steps, then cosine decay to 0; valid for any steps >= 1.
    A tensor learning rate is updated in place (fill_), which is what a CUDA graph replay reads."""
    n_warm = max(1, int(warmup * steps))

    def factor(step: int) -> float:
        if step < n_warm:
            return (step + 1) / n_warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - n_warm) / max(1, steps - n_warm))))
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


class GraphedStep:
    """Calls `step` (one optimizer step; returns the loss tensor). On CUDA, after WARM eager calls
    on a side stream (cuDNN/cuBLAS choose kernels, the optimizer makes its state), the step is
    captured once as a CUDA graph and then replayed. The AE and DDPM steps are a few hundred
    tiny kernels, so on a GPU their time is launch overhead; a replay launches them at once.
    Random draws inside `step` must use the default CUDA generator (graph-safe), and autocast
    must have cache_enabled=False. If capture fails, the remaining steps run eagerly."""
    WARM = 3

    def __init__(self, step: Callable[[], torch.Tensor], device: str):
        self.step, self.calls, self.graph, self.loss = step, 0, None, None
        self.mode = "graph" if device == "cuda" else "eager"   # "eager (capture failed)" after a failure

    @property
    def note(self) -> str:
        """For progress messages: says on CUDA whether the steps run as a graph."""
        return {"graph": " (CUDA graph)", "eager": ""}.get(self.mode, f" ({self.mode})")

    def __call__(self) -> torch.Tensor:
        self.calls += 1
        if self.mode != "graph":
            return self.step()
        if self.calls <= self.WARM:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                loss = self.step()
            torch.cuda.current_stream().wait_stream(side)
            return loss
        if self.graph is None:
            try:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    self.loss = self.step()            # recorded, not run: the replay below runs it
                self.graph = graph
            except Exception as e:                     # a capture that fails must not lose the run
                warnings.warn(f"CUDA graph capture failed ({type(e).__name__}: {e}); continuing eagerly")
                self.mode = "eager (capture failed)"
                return self.step()
        self.graph.replay()
        return self.loss
