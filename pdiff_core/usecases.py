"""The seed paper's use cases, measured against the originals: ensembles of generated models,
and generated parameters as a fine-tuning start. Each compared number carries a bootstrap
interval over test examples (metrics.difference), so a gap inside it is not called a gain."""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from .collect import minibatches
from .evaluate import Evaluator
from .optim import Optimizer
from .metrics import boot_accuracy, bootstrap_weights, correct, difference
from .params import NORM_LAYERS, Codec
from .prepare import Prepared

ENSEMBLE_KS = (1, 2, 5, 10, 20, 50)
ENSEMBLE_DRAWS = 50
INIT_STARTS = 4          # fine-tuning runs per kind of start
INIT_STEPS = 60


# -----------------------------------------------------------------------------
# ensembles

def ensemble_correct(logits: torch.Tensor, y: torch.Tensor, k: int, draws: int, gen: torch.Generator) -> np.ndarray:
    """(draws, B) bool: is the logit average of k distinct random models right on each example."""
    idx = torch.rand((draws, len(logits)), generator=gen).argsort(dim=1)[:, :k]
    return torch.stack([logits[i].mean(dim=0).argmax(-1) == y for i in idx]).cpu().numpy()


def ensembles(ev: Evaluator, params: dict[str, torch.Tensor], y_test: torch.Tensor, seed: int,
              h_test: torch.Tensor, known: dict[str, torch.Tensor] | None = None) -> tuple[dict, dict]:
    """Logit-averaged ensembles of k generated vs k originals, the same ks for both. `params`: each
    group's finite rows; h_test: the test split's prefix activations; known: test logits of those
    rows, where the caller has them."""
    y = y_test.to(ev.device)
    known = known or {}
    logits = {g: known[g] if known.get(g) is not None else ev.logits(params[g], h_test, features=True)
              for g in ("generated", "originals")}
    n = min(len(v) for v in logits.values())
    ks = sorted({min(k, n) for k in ENSEMBLE_KS}) if n else []
    res = {"k": ks, "draws": ENSEMBLE_DRAWS, "tolerance": 1 / len(y)}   # one test example
    arrays = {"ens_k": np.array(ks)}
    first_last = {}
    for g, lg in logits.items():
        gen = torch.Generator().manual_seed(seed)
        corr = [ensemble_correct(lg, y, k, ENSEMBLE_DRAWS, gen) for k in ks]
        acc = np.array([c.mean(axis=1) for c in corr])                       # (len(ks), draws)
        res[g], res[f"{g}_std"] = acc.mean(axis=1).tolist(), acc.std(axis=1).tolist()
        arrays[f"ens_{g}"], arrays[f"ens_{g}_std"] = acc.mean(axis=1), acc.std(axis=1)
        if ks:
            first_last[g] = (corr[0], corr[-1])
    if ks:
        # gains from 1 to k_max models, and generated minus originals, on the same resamples
        w = bootstrap_weights(len(y), seed)
        boot = {g: boot_accuracy(b, w).mean(0) - boot_accuracy(a, w).mean(0) for g, (a, b) in first_last.items()}
        point = {g: b.mean() - a.mean() for g, (a, b) in first_last.items()}
        res["gain_generated"], res["gain_originals"] = float(point["generated"]), float(point["originals"])
        res["intervals"] = {
            "gain_generated": difference(point["generated"], boot["generated"], len(y)),
            "gain_originals": difference(point["originals"], boot["originals"], len(y)),
            "gain_difference": difference(point["generated"] - point["originals"],
                                          boot["generated"] - boot["originals"], len(y)),
            "largest_difference": difference(
                first_last["generated"][1].mean() - first_last["originals"][1].mean(),
                boot_accuracy(first_last["generated"][1], w).mean(0)
                - boot_accuracy(first_last["originals"][1], w).mean(0), len(y)),
        }
        res["generated_gains_more"] = res["intervals"]["gain_difference"]["lo"] > 0
    return res, arrays


# -----------------------------------------------------------------------------
# generated parameters as a fine-tuning start

def fresh_init(model: torch.nn.Module, codec: Codec, seed: int) -> torch.Tensor:
    """A random start for the generated tensors, seeded. Layers with a random default init
    (Linear, Conv) use it (reset_parameters). Normalization layers' default is deterministic
    (weight 1, bias 0), so every start would be the same: their weights are drawn from
    N(1, s^2) and biases from N(0, s^2), s = that tensor's spread across the checkpoints."""
    net = copy.deepcopy(model)
    owners = {n.rsplit(".", 1)[0] for n in codec.names}
    spread = dict(zip(codec.names, codec.std))
    with torch.random.fork_rng(devices=[]):   # reset_parameters draws from the global RNG
        torch.manual_seed(seed)
        for name, m in net.named_modules():
            if name not in owners or not hasattr(m, "reset_parameters"):
                continue
            m.reset_parameters()
            if isinstance(m, NORM_LAYERS):
                with torch.no_grad():
                    for pname, centre in (("weight", 1.0), ("bias", 0.0)):
                        p, full = getattr(m, pname, None), f"{name}.{pname}"
                        if p is not None and full in spread:
                            p.copy_(centre + spread[full] * torch.randn_like(p))
    return codec.flatten({k: v.cpu() for k, v in net.state_dict().items()})


def pick(params: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """n distinct random rows."""
    return params[torch.randperm(len(params), generator=gen)[:n]]


def finetune(ev: Evaluator, starts: torch.Tensor, prep: Prepared, steps: int, gen: torch.Generator,
             h_val: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    """Fine-tune all starts at once (vmap; SGD state is per coordinate, so the runs stay
    independent) on the same minibatches. Returns (starts, steps+1) validation accuracy, and the
    final parameter vectors."""
    cfg, data, dev = prep.cfg, prep.data, ev.device
    for p in ev.model.parameters():
        p.requires_grad_(False)   # only the stacked vectors learn
    P = starts.clone().to(dev).requires_grad_(True)
    opt = Optimizer([P], cfg.collect_lr, "sgd", momentum=0.9)   # the collection phase's optimizer
    call = vmap(lambda p, h: functional_call(ev.suffix, ev.codec.unflatten(p), (h,)), in_dims=(0, None))
    x, y = data.x_train.to(dev), data.y_train.to(dev)       # once: no host-device copies per step
    batches = minibatches(len(y), min(cfg.batch_size, len(y)), gen, dev)

    def val_acc():   # the prefix is frozen, so h_val stands; a diverged start counts as wrong everywhere
        return np.nan_to_num(ev.evaluate(P.detach(), h_val, data.y_val, features=True).acc, nan=0.0)

    curve = [val_acc()]
    for _ in range(steps):
        idx = next(batches)
        with torch.no_grad():
            h = ev.prefix(x[idx])
        logits = call(P, h)                                                       # (S, b, classes)
        loss = F.cross_entropy(logits.flatten(0, 1), y[idx].repeat(len(P))) * len(P)   # sum of per-run means
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        curve.append(val_acc())
    return np.stack(curve, axis=1), P.detach().cpu()


def first_reach(curve: np.ndarray, target: float) -> int | None:
    """First step where a mean-of-starts accuracy curve reaches `target`. Both are float sums of
    counts / n_val: a curve exactly at the target can sit a rounding below it (240/270 against
    241/270 - 1/270), so the comparison allows 1e-9, far below one example over the starts."""
    hit = np.flatnonzero(curve >= target - 1e-9)
    return int(hit[0]) if len(hit) else None


def initialization(ev: Evaluator, model: torch.nn.Module, params: dict[str, torch.Tensor], prep: Prepared,
                   seed: int, h_val: torch.Tensor, h_test: torch.Tensor) -> tuple[dict, dict]:
    """Generated vs original vs random starts: same data, optimizer and steps for all. Curves are
    validation accuracy (what one would watch while choosing); the finals are reported on test,
    each kind against the random start with a bootstrap interval."""
    gen = torch.Generator().manual_seed(seed)
    starts = {"generated": pick(params["generated"], INIT_STARTS, gen),
              "original": pick(params["originals"], INIT_STARTS, gen),
              "random": torch.stack([fresh_init(model, ev.codec, seed + i) for i in range(INIT_STARTS)])}
    starts = {k: v for k, v in starts.items() if len(v)}
    acc, final = finetune(ev, torch.cat(list(starts.values())), prep, INIT_STEPS, gen, h_val)
    y_test = prep.data.y_test
    test_preds = ev.evaluate(final, h_test, y_test, features=True).preds
    corr = correct(test_preds, y_test.numpy())
    w = bootstrap_weights(len(y_test), seed)
    curves, finals, arrays, i = {}, {}, {"init_step": np.arange(INIT_STEPS + 1)}, 0
    for k, v in starts.items():
        arrays[f"init_{k}"] = acc[i:i + len(v)]
        curves[k] = acc[i:i + len(v)].mean(axis=0)
        finals[k] = corr[i:i + len(v)]
        i += len(v)
    arrays["init_test_correct"] = corr
    # target: the best final validation accuracy of any kind, less one validation example
    target = max(c[-1] for c in curves.values()) - 1 / len(prep.data.y_val)
    reach = {k: first_reach(c, target) for k, c in curves.items()}
    best = min(s for s in reach.values() if s is not None)   # the kind with the best final always reaches
    final_test = {k: float(c.mean()) for k, c in finals.items()}
    vs_random = {k: difference(final_test[k] - final_test["random"],
                               boot_accuracy(finals[k], w).mean(0) - boot_accuracy(finals["random"], w).mean(0),
                               len(y_test))
                 for k in finals if k != "random" and "random" in finals}
    res = {"kinds": list(starts), "starts": {k: len(v) for k, v in starts.items()}, "steps": INIT_STEPS,
           "optimizer": "SGD momentum 0.9 (the collection phase's)", "lr": prep.cfg.collect_lr,
           "batch_size": prep.cfg.batch_size, "step": list(range(INIT_STEPS + 1)),
           "random_init": "the layers' own init where it is random; normalization layers: weight ~ N(1, s^2), "
                          "bias ~ N(0, s^2), s = the tensor's spread across the checkpoints",
           "curves": {k: c.tolist() for k, c in curves.items()},
           "final": {k: float(c[-1]) for k, c in curves.items()},
           "final_test": final_test, "final_test_vs_random": vs_random,
           "auc": {k: float(c.mean()) for k, c in curves.items()},
           "target": float(target), "steps_to_target": reach,
           "fastest": [k for k, s in reach.items() if s == best]}
    return res, arrays
