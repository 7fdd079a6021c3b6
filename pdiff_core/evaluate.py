"""Evaluate many parameter vectors at once: one module, torch.func.functional_call under vmap.

The stages before the first generated parameter give the same activations for every model,
so they run once per input batch (shared prefix) and only the rest runs per model."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from .params import Codec


@dataclass
class EvalResult:
    acc: np.ndarray      # (n,) float; NaN for a non-finite vector
    preds: np.ndarray    # (n, B) int64; -1 for a non-finite vector
    finite: np.ndarray   # (n,) bool
    logits: torch.Tensor | None = None   # (finite rows, B, classes) on the device, if asked for


def split_at_first_generated(model: nn.Sequential, names: list[str]) -> int:
    """Index of the first top-level stage that owns a generated tensor."""
    heads = {n.split(".", 1)[0] for n in names}
    for i, key in enumerate(model._modules):
        if key in heads:
            return i
    raise ValueError(f"none of the generated names {names[:3]}... belong to the model")


class EvalBatchNorm(nn.Module):
    """BatchNorm in eval mode as the affine map it is, x * scale + shift, with the same parameter
    and buffer names, so functional_call loads generated vectors into it unchanged. Under vmap,
    F.batch_norm with per-model weights went through cuDNN's BN kernel, 35 % of GPU evaluation."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        self.eps = bn.eps
        self.weight, self.bias = bn.weight, bn.bias
        self.register_buffer("running_mean", bn.running_mean)
        self.register_buffer("running_var", bn.running_var)
        self.register_buffer("num_batches_tracked", bn.num_batches_tracked)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.rsqrt(self.running_var + self.eps)          # as the CPU kernel: invstd, then x * a + b
        if self.weight is not None:
            scale = scale * self.weight
        shift = -self.running_mean * scale
        if self.bias is not None:
            shift = shift + self.bias
        shape = (-1,) + (1,) * (x.dim() - 2)                       # channels are dim 1
        return x * scale.view(shape) + shift.view(shape)


def affine_batchnorm(module: nn.Module) -> nn.Module:
    """Every BatchNorm inside `module` swapped for EvalBatchNorm (in place; returns it)."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and child.track_running_stats:
            setattr(module, name, EvalBatchNorm(child))
        else:
            affine_batchnorm(child)
    return module


class Evaluator:
    def __init__(self, model: nn.Sequential, codec: Codec, device: str = "cpu",
                 chunk: int = 16, x_batch: int = 2048, share_prefix: bool = True, affine_bn: bool = True):
        """affine_bn: BatchNorm as its eval-mode affine map (EvalBatchNorm); False keeps F.batch_norm
        (bench/batchnorm.py compares the two)."""
        self.model = copy.deepcopy(model).to(device).eval()   # eval: BatchNorm uses the base model's running stats
        self.codec, self.device, self.chunk, self.x_batch = codec, device, chunk, x_batch
        cut = split_at_first_generated(self.model, codec.names) if share_prefix else 0
        self.prefix, self.suffix = self.model[:cut], self.model[cut:]   # slices keep the stage names
        if affine_bn:   # the same Parameter objects: requires_grad set on self.model still holds
            self.suffix = affine_batchnorm(self.suffix)
        self._call = vmap(lambda p, x: functional_call(self.suffix, p, (x,)), in_dims=(0, None))

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The shared prefix's activations, on the device: pass them with features=True to
        evaluate the same inputs many times (fine-tuning curves) without recomputing them."""
        return torch.cat([self.prefix(xs.to(self.device)) for xs in torch.split(x, self.x_batch)])

    @torch.no_grad()
    def logits(self, thetas: torch.Tensor, x: torch.Tensor, features: bool = False) -> torch.Tensor:
        """(n, D) parameter vectors, (B, ...) inputs -> (n, B, classes) logits."""
        thetas = thetas.to(self.device, torch.float32)
        out = []
        for xs in torch.split(x, self.x_batch):
            h = xs.to(self.device) if features else self.prefix(xs.to(self.device))   # once for all n models
            out.append(torch.cat([self._call(self.codec.unflatten(t), h)
                                  for t in torch.split(thetas, self.chunk)]))
        return torch.cat(out, dim=1)

    @torch.no_grad()
    def evaluate(self, thetas: torch.Tensor, x: torch.Tensor, y: torch.Tensor, features: bool = False,
                 keep_logits: bool = False) -> EvalResult:
        thetas = torch.as_tensor(thetas, dtype=torch.float32)
        n = thetas.shape[0]
        finite = torch.isfinite(thetas).all(dim=1)
        preds = torch.full((n, len(y)), -1, dtype=torch.long)
        acc = torch.full((n,), float("nan"), dtype=torch.float64)
        logits = None
        if finite.any():
            logits = self.logits(thetas[finite], x, features)
            p = logits.argmax(-1).cpu()
            finite = finite.cpu()                            # thetas may already sit on the device
            preds[finite] = p
            acc[finite] = (p == y.cpu()).double().mean(dim=1)
        return EvalResult(acc.numpy(), preds.numpy(), finite.numpy(), logits if keep_logits else None)


@torch.no_grad()
def evaluate_loop(model: nn.Module, codec: Codec, thetas: torch.Tensor, x: torch.Tensor,
                  y: torch.Tensor) -> EvalResult:
    """The plain reference: load each vector into a module and run it. Used by tests and bench."""
    net = copy.deepcopy(model).eval()
    preds, accs = [], []
    for theta in torch.as_tensor(thetas, dtype=torch.float32):
        net.load_state_dict(codec.unflatten(theta), strict=False)
        p = net(x).argmax(-1)
        preds.append(p)
        accs.append((p == y).double().mean().item())
    return EvalResult(np.array(accs), torch.stack(preds).cpu().numpy(), np.ones(len(accs), bool))
