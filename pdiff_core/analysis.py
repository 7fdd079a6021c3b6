"""Analysis, the pipeline's last stage: are generated models new, or copies of checkpoints?

    run_analysis(run_dir, prep=None, report=lambda fraction, message: None) -> dict

Reads the run's raw files (originals/generated.safetensors, predictions.npz,
predictions_val.npz, config.json), builds the baselines (baselines.py), evaluates them, and
writes baselines.safetensors, the baseline rows of predictions(_val).npz, metrics.json's
groups (recomputed from predictions), analysis.json and analysis.npz. Every accuracy, s_max
and dominance figure comes from predictions as integer counts (metrics.py), never from the
rounded numbers of a report. The formats are documented key by key in docs/analysis-format.md.

The metric definitions live in metrics.py, the similarity and memorization measures built on them in
memorization.py, the use cases in usecases.py, the words in words.py.
"""
from __future__ import annotations

import copy
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from . import runs
from .baselines import N_FAMILIES, NOISE_SIGMAS, SUBSET, make_baselines
from .config import RunConfig
from .data import DataError, Splits
from .embed import PCA_DIMS, PendingMaps, helper_pays, pca, tsne, umap_embed   # sklearn imported here, so one_thread() also limits its BLAS
from .evaluate import Evaluator
from .memorization import Group, memorization, similarity
from .metrics import correct, group_metrics, median_difference
from .params import Codec
from .prepare import Prepared, prepare
from .words import ensemble_statement, init_statement, verdict
from .usecases import ensembles, initialization

VERSION = 2
EMBED_PER_BASELINE = 50  # points per baseline family in the embeddings keep t-SNE/UMAP fast
# seed offsets, so each random part has its own stream and adding one changes no other
SALT_BASELINES, SALT_ENSEMBLE, SALT_INIT, SALT_EMBED, SALT_BOOT = 101, 102, 103, 104, 105


# -----------------------------------------------------------------------------
# reading a run

@dataclass
class RunInputs:
    prep: Prepared
    model: torch.nn.Sequential    # the base model, trained weights loaded
    codec: Codec
    metrics: dict                 # metrics.json
    preds: dict[str, np.ndarray]  # predictions.npz
    val_preds: dict[str, np.ndarray]
    groups: dict[str, Group]      # originals, generated
    latents: dict[str, torch.Tensor]
    trajectory: np.ndarray        # (K,) trajectory id of each checkpoint


def load_run(run_dir: Path, prep: Prepared | None) -> RunInputs:
    """Everything the analysis reads from a run directory (prep is rebuilt from config.json).
    A run written before predictions_val.npz existed gets it now, from its parameters."""
    if prep is None:
        cfg = RunConfig.from_dict(runs.read_json(run_dir / "config.json"))
        try:
            prep = prepare(cfg)
        except DataError as e:      # its advice is a new run's (--set data_root), which analyze does not take
            raise runs.RunError(f"{str(e).split('; ')[0]}; put the files back where run {run_dir.name}'s "
                                f"config.json says (data_root '{cfg.data_root}'), or set data_root there to where "
                                "they are now") from None
    model = copy.deepcopy(prep.model)   # prep holds the untrained model; the weights are on disk
    try:
        model.load_state_dict(runs.read_safetensors(run_dir / "base_model.safetensors")[0])
    except RuntimeError as e:           # missing keys or shapes: not this config's model
        raise damaged(run_dir, f"base_model.safetensors does not fit the model of config.json "
                               f"({str(e).splitlines()[0]})") from None
    metrics = runs.read_metrics(run_dir / "metrics.json")
    if not isinstance(metrics.get("base"), dict):    # the analysis keeps it; every reader needs it: refused first
        raise damaged(run_dir, "metrics.json has no 'base' results")
    preds = runs.read_npz(run_dir / "predictions.npz")
    tensors = {name: runs.read_safetensors(run_dir / f"{name}.safetensors") for name in ("originals", "generated")}
    try:
        codec = Codec.from_metadata(tensors["originals"][1])
    except (KeyError, ValueError) as e:
        raise damaged(run_dir, f"originals.safetensors has no valid layout metadata ({e})") from None
    val_path = run_dir / "predictions_val.npz"
    val_preds = runs.read_npz(val_path) if val_path.exists() else None
    check_inputs(run_dir, codec.dim, metrics, tensors, preds, val_preds, prep.data)
    if val_preds is None:
        ev = Evaluator(model, codec, prep.device, chunk=prep.cfg.eval_chunk)
        vecs = {"base": codec.flatten(model.state_dict())[None],
                **{g: tensors[g][0]["params"] for g in ("originals", "generated")}}
        val_preds = {"y_val": prep.data.y_val.numpy(),
                     **{g: ev.evaluate(v, prep.data.x_val, prep.data.y_val).preds for g, v in vecs.items()}}
        runs.write_npz(val_path, val_preds)
    y, y_val = preds["y_test"], val_preds["y_val"]
    groups = {g: Group(t["params"], preds[g], val_preds[g], y, y_val) for g, (t, _) in tensors.items()}
    fixes = {"originals": "the collection diverged; lower collect_lr", "generated": "the generator diverged; lower "
             "ddpm_lr or ae_lr"}
    for g, fix in fixes.items():        # nothing to compare: said before any file is rewritten
        if not groups[g].finite.any():
            raise runs.RunError(f"all {len(groups[g].finite)} {g} models of {run_dir.name} have non-finite "
                                f"parameters or predictions: {fix}, and run again")
    orig = tensors["originals"][0]
    traj = orig["trajectory"].numpy() if "trajectory" in orig else np.zeros(len(orig["params"]), np.int64)
    return RunInputs(prep, model, codec, metrics, preds, val_preds, groups,
                     {g: t["latents"] for g, (t, _) in tensors.items()}, traj)


def damaged(run_dir: Path, what: str) -> runs.RunError:
    return runs.RunError(f"run {run_dir.name} is damaged: {what}; delete the run and run it again")


def check_inputs(run_dir: Path, dim: int, metrics: dict, tensors: dict, preds: dict, val_preds: dict,
                 data: Splits) -> None:
    """Every file the analysis reads agrees with the others and with the dataset (`data`, the run's splits),
    checked before it writes anything: a prediction file edited into other labels would otherwise be
    analysed, and the run's good results overwritten with its zeros."""
    rows = {}
    for g, (t, _) in tensors.items():
        for key in ("params", "latents"):
            if key not in t:
                raise damaged(run_dir, f"{g}.safetensors has no '{key}'")
        n = rows[g] = len(t["params"])
        if t["params"].dtype != torch.float32:     # what the pipeline writes; a float64 one failed deep in a matmul
            raise damaged(run_dir, f"{g}.safetensors holds {t['params'].dtype} params, not float32")
        if t["params"].ndim != 2 or t["params"].shape[1] != dim or len(t["latents"]) != n:
            raise damaged(run_dir, f"{g}.safetensors holds params {tuple(t['params'].shape)} and latents "
                                   f"{tuple(t['latents'].shape)}, not {n} rows of {dim} parameters")
    for split, arrays, y in (("predictions.npz", preds, "y_test"), ("predictions_val.npz", val_preds, "y_val")):
        if arrays is None:              # predictions_val.npz of an old run: recomputed from checked parameters
            continue
        if y not in arrays or arrays[y].ndim != 1:
            raise damaged(run_dir, f"{split} has no {y} labels")
        if not np.array_equal(arrays[y], getattr(data, y).numpy()):
            raise damaged(run_dir, f"{split}'s {y} are not the labels of the run's {y.split('_')[1]} split")
        for g, a in arrays.items():     # model predictions: integer classes, -1 for a non-finite model
            if g != y and (a.dtype.kind not in "iu" or (a.size and not (-1 <= a.min() and a.max() < data.n_classes))):
                seen = f", values {a.min()} to {a.max()}" if a.dtype.kind in "iuf" and a.size else ""
                raise damaged(run_dir, f"{split} holds {g} predictions that are not class labels of this "
                                       f"dataset (dtype {a.dtype}{seen})")
        for g, n in rows.items():
            if g not in arrays or arrays[g].shape != (n, len(arrays[y])):
                got = tuple(arrays[g].shape) if g in arrays else "nothing"
                raise damaged(run_dir, f"{split} holds {got} for {g}, not ({n}, {len(arrays[y])})")


# -----------------------------------------------------------------------------
# stages

def evaluate_baselines(ev: Evaluator, prep: Prepared, fams: dict[str, torch.Tensor],
                       feats: dict[str, torch.Tensor]) -> dict[str, Group]:
    """Every baseline family (baselines.make_baselines) in one batched evaluation per split;
    `feats` holds each split's shared-prefix activations (Evaluator.features)."""
    allp = torch.cat(list(fams.values()))
    data = prep.data
    val = ev.evaluate(allp, feats["val"], data.y_val, features=True)
    test = ev.evaluate(allp, feats["test"], data.y_test, features=True)
    out, i = {}, 0
    for name, p in fams.items():
        s = slice(i, i + len(p))
        out[name] = Group(p, test.preds[s], val.preds[s], data.y_test.numpy(), data.y_val.numpy())
        i += len(p)
    return out


def write_groups(run_dir: Path, run: RunInputs, base: dict[str, Group], seed: int) -> None:
    """baselines.safetensors, the baseline rows of predictions(_val).npz, and metrics.json's groups,
    every group's accuracies recomputed from its predictions. Keys are overwritten, so running the
    analysis again never duplicates a group."""
    meta = {**run.codec.to_metadata(), "groups": json.dumps(list(base)), "seed": str(seed)}
    runs.write_safetensors(run_dir / "baselines.safetensors", {g: b.params for g, b in base.items()}, meta)
    runs.write_npz(run_dir / "predictions.npz", {**run.preds, **{g: b.preds for g, b in base.items()}})
    runs.write_npz(run_dir / "predictions_val.npz", {**run.val_preds, **{g: b.val_preds for g, b in base.items()}})
    groups = run.metrics["groups"]
    for g, grp in {**run.groups, **base}.items():
        finite = groups.get(g, {}).get("finite")
        groups[g] = group_metrics(np.where(grp.finite[:, None], grp.val_preds, -1), grp.y_val,
                                  np.where(grp.finite[:, None], grp.preds, -1), grp.y)
        if finite is not None:
            groups[g]["finite"] = finite
    runs.write_json(run_dir / "metrics.json", run.metrics)


# -----------------------------------------------------------------------------
# embeddings (PCA, t-SNE, UMAP): seeded, on PCA-reduced inputs

def embedding_points(groups: dict[str, torch.Tensor], base: dict[str, torch.Tensor], codec: Codec, seed: int):
    """Normalized parameters of the finite originals, generated and a seeded subsample of each
    baseline family. Parameters only, so the maps can start before the baselines are evaluated."""
    gen = torch.Generator().manual_seed(seed)
    xs, names, index = [], [], []
    for g, params in {**groups, **base}.items():
        idx = np.flatnonzero(torch.isfinite(params).all(dim=1).numpy())
        if g in base and len(idx) > EMBED_PER_BASELINE:
            idx = np.sort(idx[torch.randperm(len(idx), generator=gen)[:EMBED_PER_BASELINE].numpy()])
        xs.append(codec.normalize(params[idx].double()).numpy())
        names += [g] * len(idx)
        index.append(idx)
    return np.concatenate(xs), np.array(names), np.concatenate(index)


def param_embeddings(groups, base, codec, seed) -> tuple[dict, dict, PendingMaps]:
    """PCA, t-SNE and UMAP of normalized parameters: what was embedded now, and the maps
    started in the helper process (embed.py) for a large map, to be collected with finish_param_embeddings."""
    x, names, index = embedding_points(groups, base, codec, seed)
    info = {"space": "normalized", "methods": ["pca", "tsne"], "pca_dims": min(PCA_DIMS, *x.shape),
            "per_baseline_cap": EMBED_PER_BASELINE,
            "points": {g: int((names == g).sum()) for g in dict.fromkeys(names)}}
    return info, {"emb_params_group": names, "emb_params_index": index}, PendingMaps(x, seed, helper_pays(len(x)))


def map_points(cfg) -> int:
    """At most how many points a run's parameter map holds (embedding_points): every checkpoint and
    generated model, and up to EMBED_PER_BASELINE of each baseline family's n_generate."""
    return cfg.k + cfg.n_generate + N_FAMILIES * min(cfg.n_generate, EMBED_PER_BASELINE)


def finish_param_embeddings(info: dict, arrays: dict, pending: PendingMaps, wait) -> tuple[dict, dict, dict]:
    maps, info["umap"], timings = pending.result(wait)
    arrays.update({f"emb_params_{m}": v for m, v in maps.items()})
    if "umap" in maps:
        info["methods"].append("umap")
    return info, arrays, timings


def add_umap(run_dir: Path) -> str:
    """UMAP of the parameter map's points, on demand, into umap.npz beside analysis.npz: the same
    points and seed the run's t-SNE used (embed.py says why UMAP is not part of a run). Reads
    parameter files only. Returns UMAP's status: "ok", or why it was skipped."""
    run_dir = Path(run_dir)
    a = runs.read_npz(run_dir / "analysis.npz")
    if "emb_params_group" not in a:
        raise runs.RunError(f"{run_dir.name} has no parameter map (a transfer run?); UMAP applies to plain runs")
    seed = int(runs.read_json(run_dir / "config.json")["seed"]) + SALT_EMBED
    tensors = {g: runs.read_safetensors(run_dir / f"{g}.safetensors") for g in ("originals", "generated")}
    base, meta = runs.read_safetensors(run_dir / "baselines.safetensors")
    x, names, index = embedding_points({g: t["params"] for g, (t, _) in tensors.items()},
                                       {g: base[g] for g in json.loads(meta["groups"])},
                                       Codec.from_metadata(tensors["originals"][1]), seed)
    if not (np.array_equal(names, a["emb_params_group"]) and np.array_equal(index, a["emb_params_index"])):
        raise runs.RunError(f"analysis.npz of {run_dir.name} does not match its parameter files; "
                            f"run `python -m pdiff_core analyze {run_dir.name}` first")
    with one_thread():
        u, status = umap_embed(x, seed, {})
    if u is not None:
        runs.write_npz(run_dir / "umap.npz", {"emb_params_umap": u.astype(np.float32),
                                              "emb_params_group": names, "emb_params_index": index})
    return status


def latent_embeddings(groups, latents, seed) -> tuple[dict, dict]:
    ok = {g: groups[g].finite for g in ("originals", "generated")}
    lat = np.concatenate([latents[g][ok[g]].double().numpy() for g in ok])
    xy, explained = pca(lat, 2, seed, explained=True)
    arrays = {"emb_latent_group": np.concatenate([[g] * int(ok[g].sum()) for g in ok]).astype(str),
              "emb_latent_index": np.concatenate([np.flatnonzero(ok[g]) for g in ok]),
              "emb_latent_pca": xy.astype(np.float32), "emb_latent_pca_explained": explained.astype(np.float32),
              "emb_latent_tsne": tsne(lat, seed).astype(np.float32)}
    info = {"methods": ["pca", "tsne"], "pca_dims": min(PCA_DIMS, *lat.shape),
            "points": {g: int(v.sum()) for g, v in ok.items()}}
    return info, arrays


# -----------------------------------------------------------------------------
# output

def clean(obj):
    """JSON-safe and stable: numpy to Python, NaN to None, floats to 6 significant digits."""
    return runs.json_safe(obj, digits=6)


@contextmanager
def one_thread():
    """Run torch, BLAS and OpenMP (t-SNE) on one thread, then restore. The work here is many
    small ops, so a second thread gains little; on a busy 2-core machine two OpenMP threads run
    several times slower than one, and t-SNE's result depends on the thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(before)


def run_analysis(run_dir: Path, prep: Prepared | None = None, report=lambda fraction, message: None,
                 test_logits: dict[str, torch.Tensor] | None = None) -> dict:
    """The analysis stage; returns analysis.json's content. `report` may raise Cancelled.
    test_logits: the evaluate stage's test logits of the finite originals and generated rows,
    when it runs in the same process; without them they are recomputed from the run directory."""
    with one_thread():
        return analyze(Path(run_dir), prep, report, test_logits)


def zoo_of(cfg: RunConfig, traj: np.ndarray) -> dict:
    return {"kind": cfg.zoo, "trajectories": int(len(np.unique(traj)))}


def analyze(run_dir: Path, prep: Prepared | None, report, test_logits: dict | None = None) -> dict:
    timings = {}
    t_all = t_last = time.perf_counter()
    cpu0 = time.process_time()

    def lap(name):   # stage timings go to status.json only: analysis.json must be reproducible
        nonlocal t_last
        now = time.perf_counter()
        timings[name], t_last = round(now - t_last, 3), now

    report(0.0, "loading the run")
    run = load_run(run_dir, prep)
    prep, codec, groups, seed, y = run.prep, run.codec, run.groups, run.prep.cfg.seed, run.preds["y_test"]
    ev = Evaluator(run.model, codec, prep.device, chunk=prep.cfg.eval_chunk)
    # the prefix before the first generated parameter never changes: its activations once per split
    feats = {split: ev.features(getattr(prep.data, f"x_{split}")) for split in ("val", "test")}
    lap("load")

    report(0.05, "building and evaluating baselines")
    fams = make_baselines(groups["originals"].params, codec, prep.cfg.n_generate, seed + SALT_BASELINES)
    # the parameter maps (PCA, t-SNE) of a large map run in the helper process, beside everything below
    maps_started = param_embeddings({g: grp.params for g, grp in groups.items()}, fams, codec, seed + SALT_EMBED)
    base = evaluate_baselines(ev, prep, fams, feats)
    lap("baselines")

    report(0.25, "similarity and memorization")
    sim, arrays = similarity(groups, y, ev.device)       # the count matrices run on the GPU when there is one
    mem, a = memorization(groups, base, codec, y, sim, zoo_of(prep.cfg, run.trajectory), run.trajectory, ev.device)
    arrays.update(a)
    o, g = groups["originals"], groups["generated"]
    acc = {"n_test": int(len(y)), "resolution": 1 / len(y),
           "originals_median": float(np.median(o.acc[o.finite])),
           "generated_median": float(np.median(g.acc[g.finite])) if g.finite.any() else None,
           "median_difference": median_difference(correct(g.preds[g.finite], y), correct(o.preds[o.finite], y),
                                                  seed + SALT_BOOT) if g.finite.any() else None}
    lap("memorization")

    report(0.4, "ensembles")
    finite_params = {k: grp.params[grp.finite] for k, grp in groups.items()}
    ens, a = ensembles(ev, finite_params, prep.data.y_test, seed + SALT_ENSEMBLE, feats["test"], test_logits)
    if ens["k"]:
        ens["statement"] = ensemble_statement(ens)
    arrays.update(a)
    lap("ensembles")

    report(0.5, "fine-tuning from generated, original and random starts")
    init, a = initialization(ev, run.model, finite_params, prep, seed + SALT_INIT, feats["val"], feats["test"])
    init["statement"] = init_statement(init)
    arrays.update(a)
    lap("initialization")

    report(0.6, "latent embeddings")
    emb = {"params": None}
    emb["latent"], a = latent_embeddings(groups, run.latents, seed + SALT_EMBED)
    arrays.update(a)
    lap("latent")

    report(0.7, "parameter maps (t-SNE, UMAP)")
    emb["params"], a, timings["maps"] = finish_param_embeddings(
        *maps_started, wait=lambda: report(0.8, "parameter maps (t-SNE, UMAP)"))
    arrays.update(a)
    lap("maps_wait")

    counts = {g: {"n": len(grp.finite), "finite": int(grp.finite.sum())} for g, grp in {**groups, **base}.items()}
    warnings = runs.warnings_of(run.metrics)
    result = clean({
        "version": VERSION, "seed": seed,
        "groups": list({**groups, **base}), "baseline_groups": list(base),
        "counts": counts, "warnings": warnings,
        "baselines": {"noise_sigmas": list(NOISE_SIGMAS), "average16_size": min(SUBSET, len(o.finite)),
                      "n_per_group": {g: len(b.finite) for g, b in base.items()}},
        "accuracy": acc, "similarity": sim, "memorization": mem, "ensembles": ens, "initialization": init,
        "embeddings": emb,
    })
    result["verdict"] = verdict(result, warnings)
    # every file is written here, after the last step that can fail or be cancelled: a failure leaves the run as it was
    write_groups(run_dir, run, base, seed + SALT_BASELINES)
    runs.write_npz(run_dir / "analysis.npz", arrays)   # npz first: whoever sees the new json finds its npz
    runs.write_json(run_dir / "analysis.json", result)
    timings["total"] = round(time.perf_counter() - t_all, 3)
    timings["cpu_total"] = round(time.process_time() - cpu0, 3)   # CPU seconds: less noisy on a shared machine
    runs.update_status(run_dir, analysis_timings=timings)
    report(1.0, "analysis done")
    return result
