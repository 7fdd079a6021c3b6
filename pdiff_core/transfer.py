"""Transfer: task-conditioned p-diff, measured against what a user would do without it.

1. Trunk. The base model is trained once on the full C-class problem and frozen; its prefix (all
   but the classifier) gives features. Every task's head is a new binary Linear(features, 2).
2. Zoo over tasks. Per training task: a head trained from a seeded start on the task's train split,
   then K SGD steps saved (as p-diff collects). Per held-out task: its oracle, trained the same way
   on its full train split. One task is one unit of work on the sweep executors (local or Ray).
3. Generator. One autoencoder over every training task's checkpoints; a latent DDPM conditioned on
   the task embedding (tasks.embedding: per-class mean trunk features of a k-shot support set,
   several support draws per training task), with classifier-free guidance (`guidance`).
4. Held-out evaluation, each task on its own test split: M generated heads (median, and the best
   on the support set), the average of the training tasks' heads, the nearest training task's head
   (by embedding), k-shot linear probes (k = 1, 5, 10), fine-tuning curves from four starts on
   the support set, the oracle; and whether generated heads make a training task's errors.
transfer.npz holds the raw predictions; transfer.json is summarize(transfer.npz, config) alone,
so `python -m pdiff_core analyze RUN` rebuilds it byte for byte."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import runs, tasks
from .tasks import PROBE_SHOTS
from .autoencoder import latent_scale, train_autoencoder
from .collect import train_base
from .config import RunConfig
from .diffusion import Guided, Schedule, sample, train_ddpm
from .generator import decode, save_generator
from .metrics import error_sets, iou_matrix, median_ci, paired
from .optim import Optimizer
from .params import Codec
from .prepare import Prepared, seed_everything, stage_timer
from .words import transfer_verdict

EMB_DRAWS = 8                 # support sets drawn per training task: the generator sees how embeddings vary
STARTS = ("generated", "nearest_task", "average_of_tasks", "random")
HEAD_LR = 1e-2                # Adam, full batch: a linear head on frozen features converges in a few hundred steps
SALT_SUPPORT, SALT_PROBE, SALT_INIT, SALT_GEN = 101, 211, 307, 401


# -----------------------------------------------------------------------------
# heads: (n, D) vectors = [W (2 x F) row-major, b (2)]

def logits(theta: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """(n, D) heads on (N, F) features -> (n, N, 2)."""
    f = h.shape[1]
    w, b = theta[:, :2 * f].view(-1, 2, f), theta[:, 2 * f:]
    return torch.einsum("nf,mcf->mnc", h, w) + b[:, None, :]


def predict(theta: torch.Tensor, h: torch.Tensor) -> np.ndarray:
    return logits(theta, h).argmax(-1).to(torch.int8).numpy()


def random_head(n_features: int, seed: int) -> torch.Tensor:
    """nn.Linear's default initialization, from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    bound = 1 / n_features ** 0.5
    return (torch.rand(2 * n_features + 2, generator=g) * 2 - 1) * bound


def fit_head(theta: torch.Tensor, h: torch.Tensor, y: torch.Tensor, steps: int) -> torch.Tensor:
    theta = theta.clone().requires_grad_(True)
    opt = Optimizer([theta], HEAD_LR, "adam")
    for _ in range(steps):
        loss = F.cross_entropy(logits(theta[None], h)[0], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return theta.detach()


def sgd_path(theta: torch.Tensor, h: torch.Tensor, y: torch.Tensor, steps: int, lr: float, batch: int,
             gen: torch.Generator | None) -> torch.Tensor:
    """(steps + 1, D): the start, then the head after each SGD step (minibatches when gen is given,
    full batch otherwise)."""
    theta = theta.clone().requires_grad_(True)
    out = [theta.detach().clone()]
    for _ in range(steps):
        idx = torch.randint(len(y), (min(batch, len(y)),), generator=gen) if gen is not None else slice(None)
        loss = F.cross_entropy(logits(theta[None], h[idx])[0], y[idx])
        grad, = torch.autograd.grad(loss, theta)
        with torch.no_grad():
            theta -= lr * grad
        out.append(theta.detach().clone())
    return torch.stack(out)


def collect_task(unit: dict) -> dict:
    """One unit of work (runs on an executor): a task's head trained from a seeded start, then
    (zoo=True) its K next SGD steps; returns the K checkpoints (or the final head alone)."""
    torch.set_num_threads(1)
    h, y = unit["features"], unit["labels"]
    head = fit_head(random_head(h.shape[1], unit["seed"]), h, y, unit["head_steps"])
    if not unit["zoo"]:
        return {"final": head.numpy()}
    g = torch.Generator().manual_seed(unit["seed"] + 1)
    path = sgd_path(head, h, y, unit["k"], unit["lr"], unit["batch"], g)[1:]
    return {"theta": path.numpy(), "final": path[-1].numpy()}


# -----------------------------------------------------------------------------
# the stage chain

def run_transfer(cfg: RunConfig, run_dir: Path, report, prep: Prepared, log_loss) -> dict:
    from .executors import map_units
    device, data = prep.device, prep.data
    run_dir = Path(run_dir)
    runs.write_json(run_dir / "config.json", cfg.to_dict())
    timings: dict[str, float] = {}
    gen = seed_everything(cfg.seed)
    model = prep.model

    stage = stage_timer(report, timings)

    # 1. the trunk, then every task's heads (one unit of work per task)
    done = stage("collect")
    base_info = train_base(model, data, cfg, device, gen, lambda f, m: report("collect", 0.3 * f, m))
    model.eval().cpu()
    runs.write_safetensors(run_dir / "base_model.safetensors", model.state_dict())
    trunk = model[:-1]
    with torch.no_grad():
        feats = {s: trunk(getattr(data, f"x_{s}")).float() for s in ("train", "test")}   # heads never see val
    ts = tasks.make_tasks(cfg.family, data.n_classes, cfg.tasks_train, cfg.tasks_heldout, cfg.seed)
    masks = np.concatenate([ts.train, ts.heldout])
    y_tr = [tasks.labels(m, data.y_train) for m in masks]                                # each task's train labels
    units = [{"features": feats["train"], "labels": y_tr[i], "seed": cfg.seed * 100_003 + i,
              "head_steps": cfg.head_steps, "k": cfg.k, "lr": cfg.collect_lr, "batch": cfg.batch_size,
              "zoo": i < len(ts.train)} for i in range(len(masks))]
    out = map_units(collect_task, units, cfg.executor, cfg.workers, cfg.address,
                    done=lambda i, n: report("collect", 0.3 + 0.7 * i / n, f"task {i}/{n} collected"))
    n_t = len(ts.train)
    theta = torch.from_numpy(np.concatenate([o["theta"] for o in out[:n_t]]))          # (n_t * K, D)
    finals = torch.from_numpy(np.stack([o["final"] for o in out[:n_t]]))
    oracles = torch.from_numpy(np.stack([o["final"] for o in out[n_t:]]))
    runs.append_log(run_dir, f"trunk: best val acc {100 * base_info['best_val_acc']:.1f} % on {data.n_classes} "
                             f"classes; {n_t} training tasks x {cfg.k} checkpoints, {len(ts.heldout)} held out")
    done()

    # 2. embeddings: EMB_DRAWS support sets per training task; one per held-out task (its k-shot set)
    emb_train = torch.stack([torch.stack([
        tasks.embedding(feats["train"][s], y_tr[i][s])
        for s in [tasks.support(y_tr[i], cfg.shots, cfg.seed * 7919 + SALT_SUPPORT * (i + 1) + r) for r in range(EMB_DRAWS)]])
        for i in range(n_t)])                                                           # (n_t, R, E)
    sup = [tasks.support(y_tr[n_t + j], cfg.shots, cfg.seed * 7919 + SALT_SUPPORT * (n_t + j + 1))
           for j in range(len(ts.heldout))]
    emb_held = torch.stack([tasks.embedding(feats["train"][s], y_tr[n_t + j][s]) for j, s in enumerate(sup)])
    e_mean, e_std = emb_train.flatten(0, 1).mean(0), emb_train.flatten(0, 1).std(0).clamp(min=1e-6)
    z_train, z_held = (emb_train - e_mean) / e_std, (emb_held - e_mean) / e_std

    # 3. autoencoder over all training heads, conditional DDPM on their latents
    done = stage("autoencoder")
    codec = Codec.fit(["head.weight", "head.bias"], [(2, feats["train"].shape[1]), (2,)], theta)
    z = codec.normalize(theta)
    ae = train_autoencoder(z, cfg, device, lambda f, m: report("autoencoder", f, m), lambda s, l: log_loss("ae", s, l))
    with torch.no_grad():
        lat = ae.encode(z.to(device)).float().cpu()
    lat_mean, lat_std, clip = latent_scale(lat)
    done()
    done = stage("diffusion")
    rows = torch.arange(len(theta))
    cond = z_train[rows // cfg.k, rows % EMB_DRAWS]                                       # (n_t * K, E)
    net = train_ddpm((lat - lat_mean) / lat_std, cfg, device, lambda f, m: report("diffusion", f, m),
                     lambda s, l: log_loss("ddpm", s, l), cond=cond.to(device), p_uncond=cfg.p_uncond)
    done()

    # 4. generate M heads per held-out task
    done = stage("generate")
    sched = Schedule(cfg.timesteps, cfg.beta_start, cfg.beta_end, device)
    generated = []
    with torch.no_grad():
        for j in range(len(ts.heldout)):
            sgen = torch.Generator(device).manual_seed(cfg.seed * 7919 + SALT_GEN + j)
            g_lat = sample(Guided(net, z_held[j].to(device), cfg.guidance), sched, cfg.n_generate, cfg.sampler,
                           cfg.ddim_steps, sgen, device, eta=cfg.ddim_eta, clip=clip)
            generated.append(decode(ae, codec, g_lat, lat_mean, lat_std)[1].cpu())
            report("generate", (j + 1) / len(ts.heldout), f"held-out task {j + 1}/{len(ts.heldout)}")
    generated = torch.stack(generated)                                                   # (n_h, M, D)
    done()

    # 5. evaluate every method on every held-out task's test split
    done = stage("evaluate")
    arrays = evaluate_heldout(cfg, ts, feats, data, y_tr[n_t:], sup, z_train, z_held, finals, oracles, generated,
                              lambda f, m: report("evaluate", f, m))
    arrays.update(emb_train=z_train.numpy().astype(np.float32), emb_heldout=z_held.numpy().astype(np.float32),
                  emb_mean=e_mean.numpy(), emb_std=e_std.numpy())            # how a new task's embedding is scaled
    meta = codec.to_metadata()
    runs.write_safetensors(run_dir / "originals.safetensors", {"params": theta, "latents": lat}, meta)
    runs.write_safetensors(run_dir / "generated.safetensors", {"params": generated.flatten(0, 1)}, meta)
    save_generator(run_dir, ae, net, lat_mean, lat_std, clip, codec.dim)
    runs.write_npz(run_dir / "transfer.npz", arrays)
    summary = summarize(arrays, cfg)
    runs.write_json(run_dir / "transfer.json", summary)
    runs.append_log(run_dir, summary["verdict"])
    done()
    return {"timings": timings, "base_training": base_info}


def evaluate_heldout(cfg, ts, feats, data, y_train, sup, z_train, z_held, finals, oracles, generated, tick) -> dict:
    """Every method's test predictions on every held-out task (y_train: their train-split labels)."""
    n_h, h_test = len(ts.heldout), feats["test"]
    y_test = np.stack([tasks.labels(m, data.y_test).numpy() for m in ts.heldout]).astype(np.int8)
    average = finals.mean(0, keepdim=True)
    dist = torch.cdist(z_held, z_train.mean(1))                                          # (n_h, n_t)
    nearest = dist.argmin(1)
    out = {"train_tasks": ts.train, "heldout_tasks": ts.heldout, "y_test": y_test, "nearest_idx": nearest.numpy(),
           "pred_train_heads": predict(finals, h_test),                                  # (n_t, N)
           "pred_average_of_tasks": np.repeat(predict(average, h_test), n_h, 0),
           "pred_nearest_task": predict(finals[nearest], h_test),
           "pred_oracle": np.concatenate([predict(o[None], h_test) for o in oracles])}
    pred_gen, sup_correct, finetune = [], [], []
    probes = {k: [] for k in PROBE_SHOTS}
    for j, y_tr in enumerate(y_train):
        hs, ys = feats["train"][sup[j]], y_tr[sup[j]]
        pg = predict(generated[j], h_test)                                               # (M, N)
        pred_gen.append(pg)
        sup_correct.append((predict(generated[j], hs) == ys.numpy()[None]).sum(1))
        best = int(np.argmax(sup_correct[-1]))                                           # chosen on the support set
        starts = [generated[j][best], finals[nearest[j]], average[0],
                  random_head(h_test.shape[1], cfg.seed * 7919 + SALT_INIT + j)]
        finetune.append(np.stack([predict(sgd_path(s, hs, ys, cfg.finetune_steps, cfg.collect_lr, len(ys), None), h_test)
                                  for s in starts]))                                      # (starts, s + 1, N)
        for k in PROBE_SHOTS:
            idx = sup[j] if k == cfg.shots else tasks.support(y_tr, k, cfg.seed * 7919 + SALT_PROBE * (j + 1) + k)
            probes[k].append(linear_probe(feats["train"][idx], y_tr[idx], h_test, cfg.seed))
        tick((j + 1) / n_h, f"held-out task {j + 1}/{n_h} evaluated")
    # which training task's head each generated head sits closest to, in parameter space
    out["gen_nearest_train_head"] = torch.cdist(generated, finals[None].expand(n_h, -1, -1)).argmin(-1).numpy()
    out.update(pred_generated=np.stack(pred_gen), support_correct_generated=np.stack(sup_correct).astype(np.int32),
               pred_finetune=np.stack(finetune), n_support=np.int64(2 * cfg.shots),
               **{f"pred_linear_probe_k{k}": np.stack(v) for k, v in probes.items()})
    return out


def linear_probe(h: torch.Tensor, y: torch.Tensor, h_test: torch.Tensor, seed: int) -> np.ndarray:
    """scikit-learn logistic regression (lbfgs, C=1) on the k-shot support features."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1):
        clf = LogisticRegression(max_iter=1000, random_state=seed).fit(h.numpy(), y.numpy())
        return clf.predict(h_test.numpy()).astype(np.int8)


# -----------------------------------------------------------------------------
# transfer.json from transfer.npz alone

def median_steps(reach: list[int | None]) -> float | None:
    """Median over tasks of the steps to the oracle, a task that never got there counting as
    infinitely many; None when more than half never got there."""
    if 2 * sum(r is None for r in reach) > len(reach):
        return None
    return float(np.median([np.inf if r is None else r for r in reach]))


# -----------------------------------------------------------------------------
# figures from transfer.npz's raw predictions: transfer.json and the Transfer page both read these

def head_accuracy(a: dict) -> np.ndarray:
    """(n_h, M) test accuracy of every generated head of every held-out task."""
    return (a["pred_generated"] == a["y_test"].astype(np.int64)[:, None]).mean(-1)


def method_accuracy(a: dict) -> dict[str, np.ndarray]:
    """Every method's test accuracy on every held-out task, method -> (n_h,). The generated head
    'best' is the one with most support examples right: chosen without the test split."""
    y = a["y_test"].astype(np.int64)
    gen = head_accuracy(a)
    out = {"generated_median": np.median(gen, 1),
           "generated_best": gen[np.arange(len(y)), a["support_correct_generated"].argmax(1)]}
    for m in ("average_of_tasks", "nearest_task", *(f"linear_probe_k{k}" for k in PROBE_SHOTS), "oracle"):
        if f"pred_{m}" in a:                # every run has them; the page also draws a partial file
            out[m] = (a[f"pred_{m}"] == y).mean(-1)
    return out


def finetune_correct(a: dict) -> np.ndarray:
    """(n_h, starts, steps + 1) test examples right after each fine-tuning step, from each of STARTS."""
    return (a["pred_finetune"] == a["y_test"].astype(np.int64)[:, None, None]).sum(-1)


def max_iou_with_training_heads(a: dict, only: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Memorization across tasks: the highest IoU of each generated head's test errors with any
    training task's head's, (n_h, M), and the same for each held-out task's oracle, (n_h,); with
    `only`, rows for those held-out tasks alone (the Transfer page shows one task at a time)."""
    y = a["y_test"].astype(np.int64)
    mem, mem_oracle = [], []
    for j in range(len(y)) if only is None else only:
        e_train = error_sets(a["pred_train_heads"], y[j])
        mem.append(iou_matrix(error_sets(a["pred_generated"][j], y[j]), e_train).max(1))
        mem_oracle.append(iou_matrix(error_sets(a["pred_oracle"][j:j + 1], y[j]), e_train).max())
    return np.stack(mem), np.array(mem_oracle)


def summarize(a: dict, cfg: RunConfig) -> dict:
    y = a["y_test"].astype(np.int64)                                                    # (n_h, N)
    n_test = y.shape[1]
    accs = method_accuracy(a)
    methods = {k: accs[k] for k in ("generated_median", "generated_best", "average_of_tasks", "nearest_task")}
    if cfg.shots in PROBE_SHOTS:            # the probe with the support set's k, the one the verdict compares
        methods["linear_probe"] = accs[f"linear_probe_k{cfg.shots}"]
    methods["oracle"] = accs["oracle"]
    probes = {f"linear_probe_k{k}": accs[f"linear_probe_k{k}"] for k in PROBE_SHOTS}
    # fine-tuning: test accuracy per step, and steps until within one test example of the oracle
    ft = finetune_correct(a)                                                            # (n_h, starts, s + 1)
    oracle_correct = (a["pred_oracle"] == y).sum(-1)
    reach = [[next((int(s) for s in range(ft.shape[2]) if ft[j, i, s] >= oracle_correct[j] - 1), None)
              for i in range(len(STARTS))] for j in range(len(y))]
    mem, mem_oracle = max_iou_with_training_heads(a)
    names_h = [tasks.task_name(m) for m in a["heldout_tasks"]]
    per_task = [{"task": names_h[j], "nearest_training_task": tasks.task_name(a["train_tasks"][a["nearest_idx"][j]]),
                 "zero_shot": {**{k: float(v[j]) for k, v in methods.items()}, **{k: float(v[j]) for k, v in probes.items()}},
                 "finetune_steps_to_oracle": dict(zip(STARTS, reach[j])),
                 "finetune_test_acc": {st: (ft[j, i] / n_test).tolist() for i, st in enumerate(STARTS)},
                 "generated_max_iou_with_training_head": {"median": float(np.median(mem[j])), "max": float(mem[j].max())},
                 "oracle_max_iou_with_training_head": float(mem_oracle[j]),
                 "generated_nearest_training_heads": {tasks.task_name(a["train_tasks"][i]): int(c) for i, c in
                                                      zip(*np.unique(a["gen_nearest_train_head"][j], return_counts=True))}}
                for j in range(len(y))]
    summary_methods = {k: median_ci(v) for k, v in {**methods, **probes}.items()}
    vs = {f"generated_best - {b}": paired(methods["generated_best"], methods[b])
          for b in ("linear_probe", "nearest_task", "average_of_tasks", "oracle") if b in methods}
    curves = {s: (ft[:, i].mean(0) / n_test).tolist() for i, s in enumerate(STARTS)}
    steps = {s: median_steps([reach[j][i] for j in range(len(y))]) for i, s in enumerate(STARTS)}
    memorized = float((mem >= 0.95).mean())
    out = {
        "family": cfg.family, "dataset": cfg.dataset, "shots": cfg.shots, "n_test": n_test,
        "resolution": 1.0 / n_test, "train_tasks": [tasks.task_name(m) for m in a["train_tasks"]],
        "heldout_tasks": names_h, "generated_per_task": int(a["pred_generated"].shape[1]),
        "zero_shot": summary_methods, "comparisons": vs, "heldout": per_task,
        "finetune": {"starts": list(STARTS), "steps": int(ft.shape[2] - 1), "mean_test_acc": curves,
                     "median_steps_to_oracle": steps,
                     "reached_oracle": {s: float(np.mean([reach[j][i] is not None for j in range(len(y))]))
                                        for i, s in enumerate(STARTS)}},
        "memorization": {"threshold": 0.95, "share_generated_matching_a_training_head": memorized,
                         "median_max_iou": float(np.median(mem)),
                         "oracle_median_max_iou": float(np.median(mem_oracle))},
    }
    out["verdict"] = transfer_verdict(out)
    return runs.json_safe(out, digits=6)


def reanalyze(run_dir: Path) -> dict:
    """transfer.json again from transfer.npz and config.json (the `analyze` command)."""
    run_dir = Path(run_dir)
    cfg = RunConfig.from_dict(runs.read_json(run_dir / "config.json"))
    arrays = runs.read_npz(run_dir / "transfer.npz")
    summary = summarize(arrays, cfg)
    runs.write_json(run_dir / "transfer.json", summary)
    return summary
