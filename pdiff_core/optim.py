"""The optimizers every training loop uses, their learning-rate schedules, on CUDA one
training step captured as a CUDA graph, and fit(): the AE and DDPM stages' shared loop.

Optimizer runs torch.optim's functional Adam(W) and SGD updates (the same kernels, so the same
numbers as torch.optim.Adam, AdamW and SGD: tests/test_optim.py checks bit for bit) and keeps
the per-parameter state those classes keep. It does not use torch.optim.Optimizer: the first
call of one in a process imports torch._dynamo, 1.4 s on 2 CPU cores, which every run and
every run's subprocess paid on its critical path."""
from __future__ import annotations

import math
import warnings
from typing import Callable

import torch
from torch.optim.adam import adam as adam_update
from torch.optim.sgd import sgd as sgd_update


class Optimizer:
    """kind: adam | adamw (decoupled weight decay) | sgd (momentum, no dampening). lr is a float,
    or a 0-d device tensor (capturable CUDA steps: a graph replay reads its current value)."""

    def __init__(self, params, lr: float | torch.Tensor, kind: str = "adam", weight_decay: float = 0.0,
                 momentum: float = 0.0, fused: bool | None = None, capturable: bool = False):
        if kind not in ("adam", "adamw", "sgd"):
            raise ValueError(f"unknown optimizer kind {kind!r}; use adam, adamw or sgd")
        self.params, self.kind, self.lr = list(params), kind, lr
        self.base_lr = float(lr)
        self.weight_decay, self.momentum, self.fused, self.capturable = weight_decay, momentum, fused, capturable
        self.state: dict[torch.Tensor, dict] = {}

    def zero_grad(self, set_to_none: bool = True):
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()    # as torch.optim does: the same gradient tensors, zeroed

    def set_lr(self, value: float):
        if torch.is_tensor(self.lr):
            self.lr.fill_(value)        # in place: what a captured CUDA graph reads
        else:
            self.lr = value

    @torch.no_grad()
    def step(self):
        ps = [p for p in self.params if p.grad is not None]
        grads = [p.grad for p in ps]
        if self.kind == "sgd":
            bufs = [self.state.get(p, {}).get("momentum_buffer") for p in ps]
            sgd_update(ps, grads, bufs, weight_decay=self.weight_decay, momentum=self.momentum, lr=self.lr,
                       dampening=0.0, nesterov=False, maximize=False)
            for p, b in zip(ps, bufs):
                self.state[p] = {"momentum_buffer": b}
            return
        for p in ps:
            if p not in self.state:     # as torch.optim.Adam initializes its state
                on_device = self.capturable or bool(self.fused)
                self.state[p] = {"step": torch.zeros((), dtype=torch.float32, device=p.device) if on_device
                                 else torch.tensor(0.0, dtype=torch.float32),
                                 "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                                 "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
        st = [self.state[p] for p in ps]
        adam_update(ps, grads, [s["exp_avg"] for s in st], [s["exp_avg_sq"] for s in st], [],
                    [s["step"] for s in st], capturable=self.capturable, fused=self.fused,
                    decoupled_weight_decay=self.kind == "adamw", amsgrad=False, beta1=0.9, beta2=0.999,
                    lr=self.lr, weight_decay=self.weight_decay, eps=1e-8, maximize=False)


def adamw(params, lr: float, weight_decay: float, device: str) -> Optimizer:
    """Fused AdamW. On CUDA the learning rate is a device tensor and the step count lives on the
    device (capturable), so a captured step reads the schedule's current value at each replay."""
    if device == "cuda":
        return Optimizer(params, torch.tensor(lr, device=device), "adamw", weight_decay, fused=True, capturable=True)
    return Optimizer(params, lr, "adamw", weight_decay, fused=True)


class Schedule:
    """lr = base lr x factor(step): set for step 0 now, and for the next step at each .step()
    (torch.optim.lr_scheduler.LambdaLR's numbers)."""

    def __init__(self, opt: Optimizer, factor: Callable[[int], float]):
        self.opt, self.factor, self.count = opt, factor, 0
        opt.set_lr(opt.base_lr * factor(0))

    def step(self):
        self.count += 1
        self.opt.set_lr(self.opt.base_lr * self.factor(self.count))


def warmup_cosine(opt: Optimizer, steps: int, warmup: float = 0.1) -> Schedule:
    """Linear warm-up over `warmup` of the steps, then cosine decay to 0; valid for any steps >= 1."""
    n_warm = max(1, int(warmup * steps))

    def factor(step: int) -> float:
        if step < n_warm:
            return (step + 1) / n_warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - n_warm) / max(1, steps - n_warm))))
    return Schedule(opt, factor)


class CosineAnnealing:
    """torch.optim.lr_scheduler.CosineAnnealingLR(opt, total) to eta_min 0, with its recursive
    update (so its numbers, to the last bit), for a float learning rate."""

    def __init__(self, opt: Optimizer, total: int):
        self.opt, self.total, self.count = opt, total, 0

    def step(self):
        self.count += 1
        t, T = self.count, self.total
        self.opt.lr = (1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T)) * self.opt.lr


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


def fit(one_step: Callable[[], torch.Tensor], opt: Optimizer, steps: int, device: str, tick, log_loss,
        what: str) -> None:
    """The loop the AE and DDPM stages share: warm-up + cosine schedule over `steps`, the step
    (replayed as a CUDA graph on CUDA), and every 25 steps the loss logged and progress reported."""
    sched = warmup_cosine(opt, steps)
    train_step = GraphedStep(one_step, device)
    for step in range(steps):
        loss = train_step()
        sched.step()
        if step % 25 == 0 or step == steps - 1:
            log_loss(step, loss.item())
            tick((step + 1) / steps, f"{what} step {step + 1}/{steps}" + train_step.note)
