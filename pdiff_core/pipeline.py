"""Wires the stages into one run and reports stage and progress through a callback.

prepare() (prepare.py) does every check that can fail on bad input (config values, dataset files,
layer names, memory) before a run directory exists; run_pipeline() then writes the run directory,
and execute() keeps status.json, log.txt and the CANCEL file around it."""
from __future__ import annotations

import copy
import os
import time
import traceback
from pathlib import Path
from typing import Callable

import torch

from . import runs, warmup
from .autoencoder import latent_scale, train_autoencoder
from .collect import checkpoint_spread, collect_zoo, train_base
from .config import RunConfig
from .diffusion import Schedule, sample, train_ddpm
from .evaluate import Evaluator
from .generator import decode, save_generator
from .health import reference_accuracy, run_warnings
from .metrics import group_metrics, summarize
from .params import Codec
from .prepare import Prepared, prepare, seed_everything, stage_timer

# (stage, share of the whole run's progress bar)
STAGES = [("collect", 0.2), ("autoencoder", 0.25), ("diffusion", 0.25), ("generate", 0.05),
          ("evaluate", 0.1), ("analysis", 0.15)]


class Cancelled(Exception):
    pass


def run_pipeline(cfg: RunConfig, run_dir: Path, report: Callable[[str, float, str], None] = lambda *a: None,
                 prep: Prepared | None = None, log_loss: Callable[[str, int, float], None] = lambda *a: None) -> dict:
    """Run every stage and write the run directory. `report(stage, fraction, message)` is called
    often; it may raise Cancelled to stop. Returns metrics.json's content (a task-family run: its
    stage timings and base training, transfer.json being its record)."""
    prep = prep or prepare(cfg, warm=True)
    device, data, names = prep.device, prep.data, prep.names
    if device == "cpu":
        torch.set_num_threads(cfg.threads)
    if cfg.family:          # many tasks, a task-conditioned generator: its own stage chain
        from .transfer import run_transfer
        return run_transfer(cfg, run_dir, report, prep, log_loss)
    run_dir = Path(run_dir)
    runs.write_json(run_dir / "config.json", cfg.to_dict())
    if cfg.analysis:   # the analysis's helper process (t-SNE of a large map) loads scikit-learn while we train
        from .analysis import map_points
        from .embed import helper_pays, start_helper
        if helper_pays(map_points(cfg)):
            start_helper()
    gen = seed_everything(cfg.seed)
    model = copy.deepcopy(prep.model)
    timings: dict[str, float] = {}

    stage = stage_timer(report, timings)

    # 1. base model, then K checkpoints of the selected parameters
    done = stage("collect")
    base_info = train_base(model, data, cfg, device, gen, lambda f, m: report("collect", 0.4 * f, m))
    runs.append_log(run_dir, f"base model: {base_info['steps']} steps ({base_info['epochs']} epochs), best validation "
                             f"accuracy {100 * base_info['best_val_acc']:.1f} % at step {base_info['best_step']}")
    base_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    zoo = collect_zoo(model, names, data, cfg, device, gen, lambda f, m: report("collect", 0.4 + 0.6 * f, m),
                      log=lambda m: runs.append_log(run_dir, m))
    theta = zoo.theta
    model.load_state_dict(base_state)
    shapes = [tuple(base_state[n].shape) for n in names]
    codec = Codec.fit(names, shapes, theta)
    done()

    # 2. autoencoder on normalized checkpoints
    done = stage("autoencoder")
    z = codec.normalize(theta)
    ae = train_autoencoder(z, cfg, device, lambda f, m: report("autoencoder", f, m),
                           lambda s, l: log_loss("ae", s, l))
    with torch.no_grad():
        lat = ae.encode(z.to(device)).float().cpu()
        recon = codec.denormalize(ae.decode(lat.to(device)).float().cpu())
    # The DDPM sees latents scaled to unit variance; the scale is kept to undo it.
    lat_mean, lat_std, clip = latent_scale(lat)
    done()

    # 3. DDPM on the latents
    done = stage("diffusion")
    denoiser = train_ddpm((lat - lat_mean) / lat_std, cfg, device, lambda f, m: report("diffusion", f, m),
                          lambda s, l: log_loss("ddpm", s, l))
    done()

    # 4. generate N latents in one batched call, decode, de-normalize
    done = stage("generate")
    sched = Schedule(cfg.timesteps, cfg.beta_start, cfg.beta_end, device)
    sgen = torch.Generator(device).manual_seed(cfg.seed + 1)
    tick = lambda f, m: report("generate", 0.9 * f, m)
    with torch.no_grad():
        g_lat = sample(denoiser, sched, cfg.n_generate, cfg.sampler, cfg.ddim_steps, sgen, device, eta=cfg.ddim_eta,
                       clip=clip, tick=tick)
        g_lat, generated = decode(ae, codec, g_lat, lat_mean, lat_std)
        generated = generated.cpu()
    finite = torch.isfinite(generated).all(dim=1)
    done()

    # 5. evaluate base, originals and generated on val and test in batched calls
    done = stage("evaluate")
    ev = Evaluator(model, codec, device, chunk=cfg.eval_chunk)
    base_vec = codec.flatten(base_state)[None]
    res, feats = {}, {}
    for split in ("val", "test"):
        y = getattr(data, f"y_{split}")
        feats[split] = h = ev.features(getattr(data, f"x_{split}"))   # the shared prefix once for every group
        res[split] = {g: ev.evaluate(v, h, y, features=True, keep_logits=split == "test" and g != "base")
                      for g, v in [("base", base_vec), ("originals", theta), ("generated", generated)]}
        report("evaluate", 0.5 if split == "val" else 1.0, f"evaluated {split} split")
    recon_acc = ev.evaluate(recon, feats["test"], data.y_test, features=True).acc
    reference = reference_accuracy(data, cfg.seed)   # is the base model as good as a linear model?
    warnings = run_warnings(data.y_test.numpy(), res["test"]["base"].preds, res["test"]["originals"].preds, reference)
    done()

    meta = codec.to_metadata()
    runs.write_safetensors(run_dir / "base_model.safetensors", base_state)
    runs.write_safetensors(run_dir / "originals.safetensors", {"params": theta, "latents": lat,
                                                                 "trajectory": zoo.trajectory}, meta)
    runs.write_safetensors(run_dir / "generated.safetensors", {"params": generated, "latents": g_lat.cpu()}, meta)
    save_generator(run_dir, ae, denoiser, lat_mean, lat_std, clip, codec.dim)
    # the raw record every accuracy is computed from (metrics.json is a report of these)
    for split in ("val", "test"):
        runs.write_npz(run_dir / ("predictions.npz" if split == "test" else "predictions_val.npz"),
                       {f"y_{split}": getattr(data, f"y_{split}").numpy(),
                        **{g: r.preds for g, r in res[split].items()}})
    metrics = {
        "dataset": cfg.dataset, "arch": cfg.arch, "layers": cfg.layers, "param_names": names, "D": codec.dim,
        "K": cfg.k, "N": cfg.n_generate, "n_val": len(data.y_val), "n_test": len(data.y_test),
        "base": {"val_acc": float(res["val"]["base"].acc[0]), "test_acc": float(res["test"]["base"].acc[0])},
        "groups": {g: group_metrics(res["val"][g].preds, data.y_val.numpy(), res["test"][g].preds, data.y_test.numpy())
                   for g in ("originals", "generated")},
        "generated_nonfinite": int((~finite).sum()),
        "ae_reconstruction": {"mse_normalized": float(((codec.normalize(recon) - z) ** 2).mean()),
                              "test_acc": summarize(recon_acc)},
        "checkpoint_spread": checkpoint_spread(theta, zoo.trajectory),
        "zoo": zoo.info, "base_training": base_info, "reference": reference, "warnings": warnings,
    }
    metrics["groups"]["generated"]["finite"] = finite.tolist()
    runs.write_json(run_dir / "metrics.json", metrics)
    for w in warnings:
        runs.append_log(run_dir, f"warning: {w}")
    if (run_dir / "status.json").exists():
        runs.update_status(run_dir, warnings=warnings)

    if cfg.analysis:
        done = stage("analysis")
        from .analysis import run_analysis   # the last stage; it reads the files written above
        # the test logits are handed over, so the ensembles need not evaluate these models again
        run_analysis(run_dir, prep=prep, report=lambda f, m: report("analysis", f, m),
                     test_logits={g: res["test"][g].logits for g in ("originals", "generated")})
        done()
    metrics["timings"] = timings
    return metrics


def overall_progress(stage: str, fraction: float, analysis: bool = True) -> float:
    stages = [(s, w) for s, w in STAGES if analysis or s != "analysis"]
    total = sum(w for _, w in stages)
    before = 0.0
    for s, w in stages:
        if s == stage:
            return min(1.0, (before + w * fraction) / total)
        before += w
    return 0.0


def cancelled_by(cancel_file: Path) -> str:
    try:
        return cancel_file.read_text().strip().splitlines()[0][:80] or "cancelled by user"
    except (OSError, IndexError, UnicodeDecodeError):
        return "cancelled by user"


def execute(cfg: RunConfig, run_dir: Path, prep: Prepared | None = None, bars: bool = False) -> dict:
    """Run with status.json, log.txt, CANCEL-file checks and (optionally) tqdm bars.
    Ends in state done, failed or cancelled; never leaves 'running' behind."""
    run_dir = Path(run_dir)
    cancel_file = run_dir / "CANCEL"
    losses: dict[str, list] = {"ae": [], "ddpm": []}
    last = {"write": 0.0, "stage": None, "bar": None}
    t_start = time.time()

    def deleted(stage) -> Cancelled:    # a deleted run directory is not made again (runs.write_bytes): the run stops
        return Cancelled(f"{run_dir} was deleted while the run was going (during {stage}); the run stopped")

    def report(stage, fraction, message):
        if cancel_file.exists():        # its first line says who: the app, the sweep
            raise Cancelled(f"{cancelled_by(cancel_file)} during {stage}")
        if not run_dir.is_dir():
            raise deleted(stage)
        if stage != last["stage"]:
            runs.append_log(run_dir, f"[{stage}] {message}")
            if last["bar"] is not None:
                last["bar"].close()
            if bars:
                from tqdm import tqdm
                last["bar"] = tqdm(total=100, desc=f"{stage:<12}", bar_format="{desc} {bar} {n:3.0f}% {postfix}")
            last["stage"] = stage
        if last["bar"] is not None:
            last["bar"].n = round(100 * fraction)
            last["bar"].set_postfix_str(message, refresh=True)
        now = time.time()
        if now - last["write"] > 0.3 or fraction >= 1.0:
            last["write"] = now
            runs.update_status(run_dir, state="running", stage=stage, message=message,
                               progress=round(overall_progress(stage, fraction, cfg.analysis), 4), losses=losses)

    def log_loss(which, step, loss):
        losses[which].append([step, round(loss, 6)])

    runs.update_status(run_dir, state="running", stage="starting", progress=0.0, message="starting",
                       started=t_start, error=None, pid=os.getpid())
    runs.append_log(run_dir, f"run started: preset={cfg.preset} seed={cfg.seed} device={cfg.device}")
    try:
        metrics = run_pipeline(cfg, run_dir, report, prep, log_loss)
    except Cancelled as e:
        if run_dir.is_dir():            # a deleted run directory is not made again (runs.write_bytes)
            runs.append_log(run_dir, str(e))
            runs.update_status(run_dir, state="cancelled", message=str(e), finished=time.time(), losses=losses)
        raise
    except BaseException as e:
        if not run_dir.is_dir():        # deleted between two progress reports: a write failed on it
            raise deleted(last["stage"]) from None
        runs.append_log(run_dir, "FAILED\n" + traceback.format_exc())
        msg = f"{type(e).__name__}: {e}".splitlines()[0] if str(e) else type(e).__name__
        runs.update_status(run_dir, state="failed", message=msg, error=msg, finished=time.time(), losses=losses)
        raise
    finally:
        if last["bar"] is not None:
            last["bar"].close()
    runs.append_log(run_dir, f"run done in {time.time() - t_start:.1f}s; stage timings {metrics['timings']}")
    warm = warmup.result(wait=False)      # CUDA runs: how long the background warm-up took, or why it failed
    runs.update_status(run_dir, state="done", stage="done", progress=1.0, message="done", finished=time.time(),
                       timings=metrics["timings"], losses=losses, device=runs.machine_device(cfg.device),
                       **({"cuda_warmup": warm} if warm["started"] else {}))
    return metrics
