"""GPU check: ResNet-18 (CIFAR variant), last_bn (D=2048), K=300, N=200, evaluation on
10,000 images, analysis included, every stage timed.

    python bench/gpu.py              # on a CUDA machine (one H200 in our checks)
    python bench/gpu.py --dry-run    # tiny sizes on the CPU: checks the script end to end

The data is SYNTHETIC and CIFAR-shaped (3x32x32, 10 classes): real CIFAR-10 cannot be
downloaded on the GPU machine. `--data easy` is the first version (every model scored 100 %, so
GPU runs said nothing about accuracy, IoU or s_max); `--data hard` (the default) is meant to put
ResNet-18 at roughly 80-90 % test accuracy: `--noise` sets its difficulty, and its default is NOT
YET CALIBRATED on a GPU (`python bench/gpu.py --calibrate` prints base-model accuracy per noise
level; pick the level that lands in 80-90 %)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pdiff_core import pipeline, runs, warmup  # noqa: E402
from pdiff_core.prepare import Prepared  # noqa: E402
from pdiff_core.config import preset_config, resolve_device  # noqa: E402
from pdiff_core.data import Splits  # noqa: E402
from pdiff_core.evaluate import Evaluator, evaluate_loop  # noqa: E402
from pdiff_core.models import build_model  # noqa: E402
from pdiff_core.params import Codec, select_names  # noqa: E402

# the original p-diff v2 code on the same kind of H200 (synthetic data, bf16), from issue 5
REFERENCE = {"collect (300 steps)": 2.4, "autoencoder (500 steps)": 4.0, "diffusion (1000 steps)": 6.3,
             "generate 200 (one at a time)": 270.0, "evaluate (per-model loop, 10k images)": 8.6}


def synthetic_cifar(n_train: int, n_val: int, n_test: int, seed: int = 0) -> Splits:
    """Class-dependent low-frequency patterns plus noise: learnable, CIFAR-shaped."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.nn.functional.interpolate(torch.randn(10, 3, 4, 4, generator=g), size=32, mode="bilinear")

    def make(n):
        y = torch.randint(0, 10, (n,), generator=g)
        return protos[y] + 1.5 * torch.randn(n, 3, 32, 32, generator=g), y
    (xt, yt), (xv, yv), (xs, ys) = make(n_train), make(n_val), make(n_test)
    return Splits("synthetic-cifar", xt, yt, xv, yv, xs, ys, (3, 32, 32), 10)


def synthetic_cifar_hard(n_train: int, n_val: int, n_test: int, seed: int = 0, noise: float = 2.5) -> Splits:
    """Overlapping classes: each class is a mixture of 4 patterns at 8x8 detail, every image a random
    pattern of its class, shifted by up to 4 px, at a random contrast (0.4 to 1.6), plus noise. Errors
    then depend on the image and on the model, as on CIFAR-10, instead of every model scoring 100 %."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.nn.functional.interpolate(torch.randn(10, 4, 3, 8, 8, generator=g).flatten(0, 1), size=32,
                                             mode="bilinear").view(10, 4, 3, 32, 32)

    def make(n):
        y = torch.randint(0, 10, (n,), generator=g)
        x = protos[y, torch.randint(0, 4, (n,), generator=g)]
        shifts = torch.randint(-4, 5, (n, 2), generator=g)
        x = torch.stack([torch.roll(xi, (int(a), int(b)), dims=(1, 2)) for xi, (a, b) in zip(x, shifts)])
        gain = 0.4 + 1.2 * torch.rand(n, 1, 1, 1, generator=g)
        return gain * x + noise * torch.randn(n, 3, 32, 32, generator=g), y
    (xt, yt), (xv, yv), (xs, ys) = make(n_train), make(n_val), make(n_test)
    return Splits("synthetic-cifar-hard", xt, yt, xv, yv, xs, ys, (3, 32, 32), 10)


# dense peaks of one H200 SXM (NVIDIA's datasheet), for model-images per second against peak
H200_PEAK_FLOPS = {"tf32": 494e12, "bf16": 989e12}


def suffix_flops_per_image(ev: Evaluator, x: torch.Tensor) -> float:
    """FLOPs of the per-model part (after the shared prefix) for one image, counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        ev.suffix(ev.prefix(x[:1]))
    return float(fc.get_total_flops())


def calibrate(device: str, sizes: dict, levels: list[float], **over) -> None:
    """Base-model (ResNet-18) test accuracy on the hard data at each noise level (`over`: config
    overrides, which the dry run uses to stay small)."""
    from pdiff_core.collect import train_base
    for noise in levels:
        data = synthetic_cifar_hard(**sizes, noise=noise)
        cfg = preset_config("cifar10-resnet18", device=device, dataset="synthetic-cifar", data_root="",
                            **{"base_epochs": 15, **over})
        torch.manual_seed(0)
        model = build_model(cfg.arch, data.input_shape, data.n_classes, cfg.width)
        t0 = time.perf_counter()
        info = train_base(model, data, cfg, device, torch.Generator().manual_seed(0), lambda f, m: None)
        with torch.no_grad():
            model.eval()
            acc = float((torch.cat([model(xb.to(device)).argmax(-1).cpu() for xb in torch.split(data.x_test, 1000)])
                         == data.y_test).double().mean())
        print(f"noise {noise}: ResNet-18 test accuracy {100 * acc:.1f} % (best val {100 * info['best_val_acc']:.1f} %, "
              f"{info['steps']} steps, {time.perf_counter() - t0:.0f} s)", flush=True)


def echo_log(path: Path, t0: float, stop: threading.Event):
    """Print the run's log lines as they come, with elapsed time: a run cut off by a timeout
    still shows which stage it was in."""
    seen, last = 0, None
    while not stop.wait(0.25):
        if path.exists():
            lines = path.read_text().splitlines()
            for line in lines[seen:]:
                print(f"  [{time.perf_counter() - t0:7.2f} s] {line[:160]}", flush=True)
            seen = len(lines)
        try:                                             # the status message shows the analysis' sub-steps
            msg = runs.read_json(path.parent / "status.json").get("message")
        except Exception:                                # mid-write
            continue
        if msg != last:
            print(f"  [{time.perf_counter() - t0:7.2f} s]   {str(msg)[:150]}", flush=True)
            last = msg


def time_variants(base, codec, theta, x, y, cfg, device, clock, ref) -> dict:
    """Evaluation variants on the same vectors and images: times, and agreement with the fp32
    per-model loop. Tells which of bf16 autocast, cuDNN autotuning and other chunk sizes pay on
    this GPU. (channels_last cannot be tried: vmap does not support it.)"""
    out = {}
    for name, bf16, bench, chunk, x_batch in [
            ("as the pipeline (TF32)", False, False, cfg.eval_chunk, 1000),
            ("bf16 autocast", True, False, cfg.eval_chunk, 1000),
            ("cudnn.benchmark", False, True, cfg.eval_chunk, 1000),
            ("chunk 200", False, False, 200, 1000),
            ("chunk 10", False, False, 10, 1000),
            ("x_batch 250", False, False, cfg.eval_chunk, 250),
            ("bf16 + benchmark", True, True, cfg.eval_chunk, 1000)]:
        try:
            ev = Evaluator(base, codec, device, chunk, x_batch)
            torch.backends.cudnn.benchmark = bench
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
                t, res = clock(lambda: ev.evaluate(theta, x, y))
        except Exception as e:                           # one failing variant must not hide the others
            print(f"  {name:<28} failed: {type(e).__name__}: {str(e)[:120]}", flush=True)
            continue
        finally:
            torch.backends.cudnn.benchmark = False
        out[name] = dict(seconds=round(t, 4), agree_pct=round(100 * float((res.preds == ref.preds).mean()), 4),
                         max_acc_diff_pp=round(100 * float(np.abs(res.acc - ref.acc).max()), 3))
        print(f"  {name:<28} {t:7.3f} s   agreement with loop {out[name]['agree_pct']:.3f}%   "
              f"max accuracy difference {out[name]['max_acc_diff_pp']:.2f} pp", flush=True)
    return out


def probe(cfg, data, base, codec, thetas, device):
    """For the notes, in this already-warm process: (i) the base model's training step time once
    warm, to set against the collect stage's; (ii) which CUDA kernels one batched evaluation
    spends its time in."""
    try:
        net = build_model(cfg.arch, data.input_shape, data.n_classes, cfg.width).to(device).train()
        opt = torch.optim.Adam(net.parameters(), lr=cfg.base_lr)
        xb, yb = data.x_train[:cfg.batch_size].to(device), data.y_train[:cfg.batch_size].to(device)
        for i in range(35):
            if i == 5:
                torch.cuda.synchronize()
                t = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(net(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        torch.cuda.synchronize()
        print(f"probe: warm base-training step {1000 * (time.perf_counter() - t) / 30:.2f} ms "
              f"(batch {cfg.batch_size})", flush=True)
        from torch.profiler import ProfilerActivity, profile
        ev, x, y = Evaluator(base, codec, device, cfg.eval_chunk, 1000), data.x_test[:2000], data.y_test[:2000]
        ev.evaluate(thetas[:50], x, y)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            ev.evaluate(thetas[:50], x, y)
            torch.cuda.synchronize()
        rows = sorted(prof.key_averages(), key=lambda e: -e.self_device_time_total)
        total = sum(e.self_device_time_total for e in rows)
        print(f"probe: CUDA kernels of one evaluation (50 vectors x 2000 images), {total / 1e3:.1f} ms in all:")
        for e in rows[:12]:
            print(f"  {100 * e.self_device_time_total / total:5.1f}%  {e.count:5d}x  {e.key[:110]}")
    except Exception as e:                                # probes are extras: never lose the figures
        print(f"probe failed: {type(e).__name__}: {e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU")
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    ap.add_argument("--no-variants", action="store_true", help="skip timing the evaluation variants")
    ap.add_argument("--pipeline-only", action="store_true", help="time the pipeline only (for repeats)")
    ap.add_argument("--data", choices=["hard", "easy"], default="hard", help="synthetic data (see above)")
    ap.add_argument("--noise", type=float, default=2.5, help="--data hard: noise sigma (difficulty)")
    ap.add_argument("--calibrate", type=float, nargs="*", metavar="NOISE",
                    help="only train the base model at these noise levels and print its test accuracy")
    ap.add_argument("--probe", action="store_true",
                    help="also: steady-state base-training step time and a CUDA kernel profile of evaluation")
    args = ap.parse_args()
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU visible; use --dry-run to check the script on the CPU")
    device = resolve_device("cpu" if dry else "cuda")   # the same CUDA math settings as a user's run
    warmup.start(device)             # as a user's run does: CUDA's cold start overlaps making the data
    sizes = dict(n_train=512, n_val=256, n_test=256) if dry else dict(n_train=20000, n_val=5000, n_test=10000)
    over = dict(width=8, k=12, n_generate=8, ae_steps=20, ddpm_steps=20, base_epochs=1, ddim_steps=5) if dry else \
        dict(k=300, n_generate=200, ae_steps=500, ddpm_steps=1000, base_epochs=1, eval_chunk=50)
    cfg = preset_config("cifar10-resnet18", device=device, dataset="synthetic-cifar", data_root="", **over)
    if args.calibrate is not None:
        return calibrate(device, sizes, args.calibrate or [1.5, 2.0, 2.5, 3.0, 3.5],
                         **(dict(width=8, base_epochs=1, base_min_steps=20) if dry else {}))

    t0 = time.perf_counter()
    data = synthetic_cifar_hard(**sizes, noise=args.noise) if args.data == "hard" else synthetic_cifar(**sizes)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.arch, data.input_shape, data.n_classes, cfg.width)
    prep = Prepared(cfg, device, data, model, select_names(model, cfg.layers))
    t_data = time.perf_counter() - t0
    if not dry:
        torch.cuda.reset_peak_memory_stats()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PDIFF_RUNS_DIR"] = tmp
        d = runs.run_path("gpu-check", must_exist=False)
        d.mkdir(parents=True)
        t0 = time.perf_counter()
        stop = threading.Event()
        threading.Thread(target=echo_log, args=(d / "log.txt", t0, stop), daemon=True).start()
        metrics = pipeline.execute(cfg, d, prep)
        stop.set()
        if not dry:
            torch.cuda.synchronize()
        total = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated() / 2 ** 30 if not dry else float("nan")
        status = runs.read_json(d / "status.json")
        timings, analysis_timings = status["timings"], status.get("analysis_timings", {})
        print(f"pipeline done in {total:.2f} s; stages {timings}", flush=True)   # early, in case of a timeout
        print(f"CUDA warm-up (background, overlapping the data): {warmup.result()}", flush=True)

        ev_times, variants = None, {}
        if not args.pipeline_only:
            # ratio (a) on this model: per-model loop vs batched (with and without the shared prefix)
            theta, meta = runs.read_safetensors(d / "generated.safetensors")
            codec = Codec.from_metadata(meta)
            base = build_model(cfg.arch, data.input_shape, data.n_classes, cfg.width)
            base.load_state_dict(runs.read_safetensors(d / "base_model.safetensors")[0])
            x, y = data.x_test.to(device), data.y_test.to(device)

            def clock(fn, warm=None):
                (warm or fn)()                               # warm-up (kernel choice, allocator)
                if not dry:
                    torch.cuda.synchronize()
                t = time.perf_counter()
                out = fn()
                if not dry:
                    torch.cuda.synchronize()
                return time.perf_counter() - t, out
            t_loop, ref = clock(lambda: evaluate_loop(base.to(device), codec, theta["params"].to(device), x, y),
                                warm=lambda: evaluate_loop(base.to(device), codec, theta["params"][:3].to(device), x, y))
            t_full, full = clock(lambda: Evaluator(base, codec, device, cfg.eval_chunk, 1000, share_prefix=False)
                                 .evaluate(theta["params"], x, y))
            t_pre, pre = clock(lambda: Evaluator(base, codec, device, cfg.eval_chunk, 1000).evaluate(theta["params"], x, y))
            agree = float((ref.preds == pre.preds).mean())
            if not dry and not args.no_variants:
                print("evaluation variants (200 vectors, test images):")
                try:
                    variants = time_variants(base, codec, theta["params"], x, y, cfg, device, clock, ref)
                except Exception as e:                       # the main figures above must still be printed
                    print(f"  variants failed: {type(e).__name__}: {e}")
            flops = suffix_flops_per_image(Evaluator(base, codec, device, cfg.eval_chunk, 1000), x)
            mips = len(theta["params"]) * len(y) / t_pre            # model-images per second
            ev_times = {"loop": t_loop, "vmap": t_full, "prefix": t_pre, "agree": agree, "variants": variants,
                        "model_images_per_s": mips, "suffix_gflops_per_image": flops / 1e9,
                        "share_of_peak": {k: mips * flops / v for k, v in H200_PEAK_FLOPS.items()}}
            if args.probe and not dry:
                probe(cfg, data, base, codec, theta["params"], device)
            from bench.bf16 import flips, print_header, print_rows   # the bf16 table on this (hard synthetic) data
            bf16_rows = flips(d, device, prep)
            ev_times["bf16_flips"] = bf16_rows
            print("\nbf16 autocast against fp32: models whose test error set changes")
            print_header()
            print_rows("gpu-check", f"synthetic-cifar-{args.data}, resnet18", bf16_rows)

    o, g = metrics["groups"]["originals"]["summary"], metrics["groups"]["generated"]["summary"]
    print(f"\nGPU check ({'DRY RUN on CPU, tiny sizes' if dry else torch.cuda.get_device_name()}), "
          f"SYNTHETIC CIFAR-shaped data: {sizes}")
    print(f"ResNet-18 {cfg.layers} D={metrics['D']} K={cfg.k} N={cfg.n_generate}")
    print(f"{'stage':<14} {'seconds':>8}")
    for k, v in timings.items():
        print(f"{k:<14} {v:>8.2f}")
    print(f"{'end to end':<14} {total:>8.2f}   (data generation {t_data:.2f} s not included)")
    print("analysis sub-steps: " + ", ".join(f"{k} {v}" for k, v in analysis_timings.items()))
    print(f"peak GPU memory during the pipeline: {peak:.2f} GiB")
    if ev_times:
        print(f"evaluation of {cfg.n_generate} vectors on {sizes['n_test']} images: loop {t_loop:.3f} s, "
              f"vmap {t_full:.3f} s, vmap+prefix {t_pre:.3f} s -> ratio (a) {t_loop / t_pre:.1f}x, "
              f"prefix {t_full / t_pre:.2f}x; prediction agreement with loop {100 * agree:.2f}%")
    if ev_times:
        print(f"model-images per second (vmap+prefix): {ev_times['model_images_per_s']:.3g}; per-model part "
              f"{ev_times['suffix_gflops_per_image']:.3g} GFLOP per image -> "
              + ", ".join(f"{100 * v:.2f} % of the H200's dense {k} peak" for k, v in ev_times['share_of_peak'].items())
              + (" (dry run: CPU, the ratio means nothing)" if dry else ""))
    print(f"test acc % originals median {100 * o['median']:.2f}, generated median {100 * g.get('median', float('nan')):.2f}")
    print("reference (original p-diff v2, same H200): " + ", ".join(f"{k} {v} s" for k, v in REFERENCE.items()))
    if args.out:
        Path(args.out).write_text(json.dumps({"timings": timings, "analysis_timings": analysis_timings,
                                              "total": total, "peak_gib": peak,
                                              "eval": ev_times,
                                              "dry_run": dry}, indent=1))


if __name__ == "__main__":
    main()
