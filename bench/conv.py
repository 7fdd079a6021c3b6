"""Would the denoiser's k=3 convs run faster on this CPU as one explicit matmul? Side by side, one process.

    python bench/conv.py [--presets digits-quick,tiny] [--steps 150] [--rounds 5]

oneDNN's conv reaches about 30 GFLOP/s on the denoiser's 64->64 convs here, a matmul of the same work
(an im2col of 3 shifted copies, then one GEMM) about 75 (bench/floor.py). This times the stage's own
diffusion.train_ddpm with its Conv1d layers as they are and with each k=3 conv computed as that matmul
(an autograd Function: forward one batched GEMM, backward two GEMMs and three shifted adds), in
alternating rounds so that this host's drift hits both alike. The rewrite is exact to rounding: it is
checked against F.conv1d before timing. One thread, as runs use."""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pdiff_core import diffusion  # noqa: E402
from pdiff_core.config import preset_config  # noqa: E402


class Conv3(torch.autograd.Function):
    """conv1d, kernel 3, padding 1, on (B, C, L): y[b] = W (O x 3C) @ U[b] (3C x L), U the shifted copies."""

    @staticmethod
    def forward(ctx, x, w, b):
        B, C, L = x.shape
        u = x.new_zeros(B, 3, C, L)
        u[:, 0, :, 1:], u[:, 1], u[:, 2, :, :-1] = x[:, :, :-1], x, x[:, :, 1:]
        u = u.view(B, 3 * C, L)
        wm = w.permute(0, 2, 1).reshape(len(w), 3 * C)
        ctx.save_for_backward(u, wm)
        return torch.baddbmm(b[None, :, None], wm.expand(B, -1, -1), u)

    @staticmethod
    def backward(ctx, gy):
        u, wm = ctx.saved_tensors
        (B, K, L), O = u.shape, len(wm)
        gw = (gy.transpose(0, 1).reshape(O, B * L) @ u.transpose(0, 1).reshape(K, B * L).t())
        gu = torch.matmul(wm.t(), gy).view(B, 3, K // 3, L)
        gx = gu[:, 1].clone()
        gx[:, :, :-1] += gu[:, 0, :, 1:]
        gx[:, :, 1:] += gu[:, 2, :, :-1]
        return gx, gw.view(O, 3, K // 3).permute(0, 2, 1), gy.sum((0, 2))


class MatmulConv1d(nn.Conv1d):
    def forward(self, x):
        return Conv3.apply(x, self.weight, self.bias) if self.kernel_size == (3,) else super().forward(x)


def check() -> float:
    """Largest difference, relative to the largest value, of output and gradients against nn.Conv1d."""
    torch.manual_seed(0)
    ref = nn.Conv1d(64, 64, 3, padding=1)
    mm = MatmulConv1d(64, 64, 3, padding=1)
    mm.load_state_dict(ref.state_dict())
    x = torch.randn(50, 64, 16, requires_grad=True)
    g = torch.randn(50, 64, 16)
    outs = [[m(x), *torch.autograd.grad(m(x), [x, m.weight, m.bias], g)] for m in (ref, mm)]
    return max(((a - b).abs().max() / a.abs().max()).item() for a, b in zip(*outs))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="digits-quick,tiny")
    ap.add_argument("--steps", type=int, default=150, help="timed steps per round and variant")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(1)
    print(f"one thread, torch {torch.__version__}; matmul conv against F.conv1d: largest relative "
          f"difference {check():.1e}\n")
    print("| preset | F.conv1d ms/step | matmul ms/step | speed-up |")
    print("|---|---|---|---|")
    quiet = dict(device="cpu", tick=lambda *_: None, log_loss=lambda *_: None)
    conv_nn = type("nn", (), {"Conv1d": MatmulConv1d, "__getattr__": lambda self, k: getattr(nn, k)})()
    for preset in a.presets.split(","):
        cfg = preset_config(preset)
        x = torch.randn(cfg.k, cfg.latent_dim)

        def ms_per_step(matmul: bool, steps: int) -> float:
            with mock.patch.object(diffusion, "nn", conv_nn if matmul else nn):
                t0 = time.perf_counter()
                diffusion.train_ddpm(x, dataclasses.replace(cfg, ddpm_steps=steps), **quiet)
                return (time.perf_counter() - t0) / steps * 1000

        ms_per_step(False, 20), ms_per_step(True, 20)          # warm both paths
        times = {False: [], True: []}
        for r in range(a.rounds):
            for matmul in ((False, True) if r % 2 == 0 else (True, False)):
                times[matmul].append(ms_per_step(matmul, a.steps))
        conv, mm = statistics.median(times[False]), statistics.median(times[True])
        print(f"| {preset} | {conv:.1f} ({min(times[False]):.1f}-{max(times[False]):.1f}) | "
              f"{mm:.1f} ({min(times[True]):.1f}-{max(times[True]):.1f}) | {conv / mm:.2f}x |")


if __name__ == "__main__":
    main()
