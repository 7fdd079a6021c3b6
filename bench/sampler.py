"""Sampler study (issue 10): which sampler returns the spread the DDPM learned, without a pull
toward the checkpoints' average, at a cost a 2-core CPU can pay?

    python bench/sampler.py                                   # digits-quick and mnist1d-cnn, seeds 0-2
    python bench/sampler.py --presets digits-quick --seeds 0 --n 200 --work /tmp/sampler-runs

Each (preset, seed) is trained ONCE by the real pipeline (`python -m pdiff_core run ... --set
analysis=false`, a fresh process, into --work; a finished run there is reused). Then, from that
run's saved AE and denoiser, every sampler setting draws N latents from the same start noise
(seed + 1, as the pipeline does), with the run's x0 clip; they are decoded, de-normalized and
evaluated on the test split. Per setting:

  spread      mean over latent dims of std(generated latents) / std(original latents)
  total spread  sqrt(total variance of generated latents / that of the originals): thin
              directions of the latent cloud weigh less here than in `spread`
  exact-eps spread  `spread` of the sampler alone at this run's scales: the exact eps of
              N(latent mean, latent std^2) per dim (diffusion.GaussianEps), 4000 samples, run's clip
  dNN ratio   median over generated of the raw L2 distance to the nearest original, divided by
              the median leave-one-out nearest distance among originals
  soup ratio  median raw distance of generated to the average of all K checkpoints, divided by
              the same median for the originals (< 1: pulled toward the `average` baseline)
  s_max       mean over generated of max over originals of the IoU of test error sets
  dominated   share of generated Pareto-dominated on (test correct count up, s_max down) by some
              baseline model (baselines.make_baselines(theta, codec, N, seed + 101), all families)
  acc         median test accuracy of generated; orig acc: median test accuracy of the originals
  time        seconds to sample the N latents (one thread, this CPU)
  gauss std   exact eps-predictor of N(mu, s^2) per dim (diffusion.GaussianEps, 4000 samples,
              64 dims, s = 1, 0.3 and 0.1): std of the samples / s. The sampler's own bias, no training.

Writes bench/SAMPLER_RESULTS.md (--out). Non-finite generated models are counted, left out of
the metrics.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pdiff_core import generator, runs  # noqa: E402
from pdiff_core.baselines import make_baselines  # noqa: E402
from pdiff_core.config import RunConfig  # noqa: E402
from pdiff_core import diffusion  # noqa: E402
from pdiff_core.diffusion import GaussianEps, Schedule  # noqa: E402
from pdiff_core.evaluate import Evaluator  # noqa: E402
from pdiff_core.metrics import correct_counts, dominated, error_sets, iou_matrix, leave_one_out, nearest  # noqa: E402
from pdiff_core.params import Codec  # noqa: E402
from pdiff_core.prepare import prepare  # noqa: E402

# (label, sampler, steps, eta)
SETTINGS = [("DPM-Solver++(2M)-25", "dpm2m", 25, 0.0), ("DPM-Solver++(2M)-50", "dpm2m", 50, 0.0),
            ("DPM-Solver++(2M)-100", "dpm2m", 100, 0.0),
            ("DDPM-1000", "ddpm", 1000, 0.0),
            ("DDIM-50 eta=0", "ddim", 50, 0.0), ("DDIM-50 eta=1", "ddim", 50, 1.0),
            ("DDIM-200 eta=0", "ddim", 200, 0.0), ("DDIM-200 eta=1", "ddim", 200, 1.0),
            ("DDIM-300 eta=0", "ddim", 300, 0.0),
            ("DDIM-1000 eta=0", "ddim", 1000, 0.0), ("DDIM-1000 eta=1", "ddim", 1000, 1.0)]
GAUSS_STDS = (1.0, 0.3, 0.1)
DEFAULT_PRESETS, DEFAULT_SEEDS = ["digits-quick", "mnist1d-cnn"], [0, 1, 2]
COLS = [("spread", "spread", ".3f"), ("spread_total", "total spread", ".3f"), ("gauss_run", "exact-eps spread", ".3f"), ("dnn", "dNN ratio", ".3f"), ("soup", "soup ratio", ".3f"),
        ("smax", "mean s_max", ".3f"), ("dominated", "dominated", ".1%"), ("acc", "median acc", ".2%"),
        ("time", "time s", ".2f")]
OUT: list[str] = []


def say(line: str = "") -> None:
    print(line, flush=True)
    OUT.append(line)


def is_default(setting) -> bool:
    cfg = RunConfig()
    _, kind, steps, eta = setting
    return kind == cfg.sampler and (kind == "ddpm" or (steps == cfg.ddim_steps and (kind != "ddim" or eta == cfg.ddim_eta)))


def label(setting) -> str:
    return setting[0] + (" (default)" if is_default(setting) else "")


def sample(net, sched, n, setting, gen, clip):
    _, kind, steps, eta = setting
    return diffusion.sample(net, sched, n, kind, steps, gen, eta=eta, clip=clip)


def gaussian_ratio(setting, std: float, n: int = 4000, dim: int = 64, seed: int = 0) -> float:
    """std of the samples / std of the data, for the exact eps of N(mu, std^2) per dimension."""
    sched = Schedule(1000)
    mu = torch.linspace(-1, 1, dim)
    net = GaussianEps(mu, torch.full((dim,), std), sched)
    x = sample(net, sched, n, setting, torch.Generator().manual_seed(seed), None)
    return float(x.std(dim=0).mean() / std)


def train(preset: str, seed: int, work: Path) -> Path:
    """The pipeline's own run, once; a finished one in `work` is reused."""
    run_id = f"sampler-{preset}-s{seed}"
    d = work / run_id
    if (d / "status.json").exists() and runs.read_status(d).get("state") == "done":
        return d
    if d.exists():
        raise SystemExit(f"{d} exists but is not a finished run; delete it or pick another --work")
    cmd = [sys.executable, "-m", "pdiff_core", "run", "--preset", preset, "--seed", str(seed),
           "--run-id", run_id, "--quiet", "--set", "analysis=false"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PDIFF_RUNS_DIR": str(work)}, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()[-800:]}")
    print(f"  trained {run_id} in {time.perf_counter() - t0:.1f} s", flush=True)
    return d


def smax_vs(preds: np.ndarray, e_orig: np.ndarray, y: np.ndarray) -> np.ndarray:
    return iou_matrix(error_sets(preds, y), e_orig).max(axis=1)


def study_run(d: Path, n: int) -> list[dict]:
    cfg = RunConfig.from_dict(json.loads((d / "config.json").read_text()))
    cfg.device = "cpu"
    torch.set_num_threads(cfg.threads)
    prep = prepare(cfg)
    model = prep.model
    model.load_state_dict(runs.read_safetensors(d / "base_model.safetensors")[0])
    tensors, meta = runs.read_safetensors(d / "originals.safetensors")
    theta, lat = tensors["params"], tensors["latents"].double()
    codec = Codec.from_metadata(meta)
    ae, den, scale = generator.load_generator(d, cfg)
    sched = Schedule(cfg.timesteps, cfg.beta_start, cfg.beta_end)
    ev = Evaluator(model, codec, chunk=cfg.eval_chunk)
    x, y = ev.features(prep.data.x_test), prep.data.y_test.numpy()

    def test_preds(vectors):
        return ev.evaluate(vectors, x, prep.data.y_test, features=True).preds

    o_preds = test_preds(theta)
    e_orig = error_sets(o_preds, y)
    loo = float(np.median(leave_one_out(theta)[1]))
    soup = theta.double().mean(0, keepdim=True)
    soup_o = float(np.median(torch.cdist(theta.double(), soup)[:, 0].numpy()))
    fams = make_baselines(theta, codec, n, cfg.seed + 101)
    b_preds = test_preds(torch.cat(list(fams.values())))
    b_ok = (b_preds >= 0).all(axis=1)
    b_corr, b_smax = correct_counts(b_preds, y)[b_ok], smax_vs(b_preds[b_ok], e_orig, y)
    orig_acc = float(np.median(correct_counts(o_preds, y) / len(y)))
    lat_sd = lat.std(0)
    lat_norm = (lat - scale["latent_mean"]) / scale["latent_std"]     # what the DDPM was trained on
    lat_norm_sd = float(lat_norm.std(0).median())
    # the sampler alone at this run's scales: exact eps of N(latent mean, latent std^2) per dim, run's clip
    exact = GaussianEps(lat_norm.mean(0), lat_norm.std(0), sched)

    rows = []
    for setting in SETTINGS:
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        t0 = time.perf_counter()
        with torch.no_grad():
            g = sample(den, sched, n, setting, gen, scale["x0_clip"])
        t = time.perf_counter() - t0
        with torch.no_grad():
            g_lat = g.double() * scale["latent_std"] + scale["latent_mean"]
            params = codec.denormalize(ae.decode(g_lat.float()).float())
        ok = torch.isfinite(params).all(dim=1)
        p = params[ok]
        preds = test_preds(p)
        corr, smax = correct_counts(preds, y), smax_vs(preds, e_orig, y)
        rows.append({
            "setting": setting[0], "n_finite": int(ok.sum()), "time": t,
            "spread": float((g_lat.std(0) / lat_sd).mean()),
            "spread_total": float((g_lat.var(0).sum() / lat.var(0).sum()).sqrt()),
            "gauss_run": float((sample(exact, sched, 4000, setting, torch.Generator().manual_seed(0), scale["x0_clip"])
                                .std(0) / lat_norm.std(0)).mean()),
            "dnn": float(np.median(nearest(p, theta)[1])) / loo,
            "soup": float(np.median(torch.cdist(p.double(), soup)[:, 0].numpy())) / soup_o,
            "smax": float(smax.mean()),
            "dominated": float(dominated(corr, smax, b_corr, b_smax).mean()),
            "acc": float(np.median(corr / len(y))), "orig_acc": orig_acc, "lat_norm_sd": lat_norm_sd,
        })
        r = rows[-1]
        print(f"  {setting[0]:<16} " + "  ".join(f"{name}={format(r[k], f)}" for k, name, f in COLS), flush=True)
    return rows


def table(header: list[str], lines: list[list[str]]) -> None:
    say("| " + " | ".join(header) + " |")
    say("|" + "---|" * len(header))
    for cells in lines:
        say("| " + " | ".join(cells) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=DEFAULT_PRESETS)
    ap.add_argument("--seeds", nargs="+", type=int, default=DEFAULT_SEEDS)
    ap.add_argument("--n", type=int, default=200, help="latents sampled per setting (the presets' N)")
    ap.add_argument("--work", help="runs directory for the trained runs (default: a temporary one)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "SAMPLER_RESULTS.md"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(args.work or tempfile.mkdtemp(prefix="pdiff-sampler-")).resolve()
    work.mkdir(parents=True, exist_ok=True)

    results: dict[tuple[str, int], list[dict]] = {}
    for preset in args.presets:
        for seed in args.seeds:
            print(f"{preset} seed {seed}", flush=True)
            results[preset, seed] = study_run(train(preset, seed, work), args.n)

    print("exact-Gaussian check", flush=True)
    gauss = {s[0]: [gaussian_ratio(s, sd) for sd in GAUSS_STDS] for s in SETTINGS}

    argv = "".join([f" --presets {' '.join(args.presets)}" if args.presets != DEFAULT_PRESETS else "",
                    f" --seeds {' '.join(map(str, args.seeds))}" if args.seeds != DEFAULT_SEEDS else "",
                    f" --n {args.n}" if args.n != 200 else ""])
    say("# Sampler study (issue 10)\n")
    say(f"{time.strftime('%Y-%m-%d %H:%M')}; {platform.machine()}, torch {torch.__version__}, 1 thread; "
        f"command: `python bench/sampler.py{argv}`; N={args.n} latents per setting, "
        f"seeds {', '.join(map(str, args.seeds))}, one trained run per (preset, seed), same start noise for "
        f"every setting. Definitions: the docstring of bench/sampler.py. Load average at the end "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: other work on the machine slows `time s`, "
        "compare the settings' times with each other.\n")
    say("## Exact Gaussian eps (no training): sample std / data std\n")
    table(["setting"] + [f"s = {sd}" for sd in GAUSS_STDS],
          [[label(s)] + [f"{v:.3f}" for v in gauss[s[0]]] for s in SETTINGS])
    say("")
    say("## Mean over seeds\n")
    for preset in args.presets:
        rs = [results[preset, s] for s in args.seeds]
        orig = np.mean([r[0]["orig_acc"] for r in rs])
        sd = np.mean([r[0]["lat_norm_sd"] for r in rs])
        say(f"**{preset}** (originals' median test accuracy {orig:.2%}; median per-dim std of the DDPM's "
            f"normalized latents {sd:.2f})\n")
        lines = []
        for i, setting in enumerate(SETTINGS):
            lines.append([label(setting)] + [format(np.mean([r[i][k] for r in rs]), f) for k, _, f in COLS]
                         + [str(min(r[i]["n_finite"] for r in rs))])
        table(["setting"] + [name for _, name, _ in COLS] + ["finite (min)"], lines)
        say("")
    say("## Per seed\n")
    lines = []
    for preset in args.presets:
        for s in args.seeds:
            for r in results[preset, s]:
                lines.append([preset, str(s), r["setting"]] + [format(r[k], f) for k, _, f in COLS])
    table(["preset", "seed", "setting"] + [name for _, name, _ in COLS], lines)
    Path(args.out).write_text("\n".join(OUT) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
