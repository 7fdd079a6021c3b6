"""Task families for transfer: many classification problems over the same inputs.

A task of the `subsets` family is binary: "is the class in S?" for a class subset S, with
2 <= |S| <= C/2 (a larger S is the complement of a smaller one, the same task with flipped
labels; for |S| = C/2 only the S holding class 0 is kept). The family's tasks are drawn by seed,
then split into training and held-out tasks: disjoint by construction.

A task's embedding comes from data, never from its label names: for a support set of `shots`
labelled examples per class (drawn from the task's train split), the mean trunk features of
each class, concatenated (negatives first). Any new task with a few labelled examples, even
one a user uploads, gets one the same way."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

FAMILIES = ("subsets",)
PROBE_SHOTS = (1, 5, 10)      # k-shot linear probes (transfer's baselines), examples per class


class TaskError(ValueError):
    """A family or split that cannot be built; the message says what to change."""


@dataclass
class TaskSet:
    train: np.ndarray        # (n_train, C) bool: class c is positive in task i
    heldout: np.ndarray      # (n_heldout, C) bool

    def names(self, which: str) -> list[str]:
        return [task_name(m) for m in getattr(self, which)]


def task_name(mask: np.ndarray) -> str:
    return "{" + ",".join(str(c) for c in np.flatnonzero(mask)) + "} vs rest"


def all_subsets(n_classes: int) -> list[tuple[int, ...]]:
    out = []
    for size in range(2, n_classes // 2 + 1):
        for s in itertools.combinations(range(n_classes), size):
            if 2 * size == n_classes and 0 not in s:
                continue
            out.append(s)
    return out


def make_tasks(family: str, n_classes: int, n_train: int, n_heldout: int, seed: int) -> TaskSet:
    if family not in FAMILIES:
        raise TaskError(f"unknown task family '{family}'; choose one of: {', '.join(FAMILIES)}")
    pool = all_subsets(n_classes)
    if not pool:        # 2 <= |S| <= C/2 needs C >= 4
        raise TaskError(f"a {n_classes}-class dataset has no '{family}' task (a subset of 2 to C/2 classes needs "
                        "at least 4 classes); use a dataset with more classes")
    if n_train + n_heldout > len(pool):
        raise TaskError(f"{n_train} training + {n_heldout} held-out tasks need more than the {len(pool)} distinct "
                        f"tasks of a {n_classes}-class dataset; ask for fewer")
    pick = np.random.default_rng(seed).permutation(len(pool))[:n_train + n_heldout]
    masks = np.zeros((len(pick), n_classes), bool)
    for row, i in enumerate(pick):
        masks[row, list(pool[i])] = True
    return TaskSet(train=masks[:n_train], heldout=masks[n_train:])


def check(family: str, y_train: torch.Tensor, n_classes: int, n_train: int, n_heldout: int, seed: int,
          shots: int) -> TaskSet:
    """The run's task set, or a TaskError before anything runs: more tasks than the family has, or a
    task with fewer train examples of a class than its support sets (or the probes) draw."""
    ts = make_tasks(family, n_classes, n_train, n_heldout, seed)
    need = max(shots, *PROBE_SHOTS)
    for mask in np.concatenate([ts.train, ts.heldout]):
        y = labels(mask, y_train)
        fewest = int(min((y == 0).sum(), (y == 1).sum()))
        if fewest < need:
            raise TaskError(f"task {task_name(mask)} has {fewest} train examples of one class; its support sets need "
                            f"{need} (shots={shots}, probes up to {max(PROBE_SHOTS)} per class): lower shots, or use a dataset with more examples per class")
    return ts


def labels(mask: np.ndarray, y: torch.Tensor) -> torch.Tensor:
    """The task's binary labels (1 = class in S) for original class labels y."""
    return torch.from_numpy(mask)[y].long()


def support(y_task: torch.Tensor, shots: int, seed: int) -> torch.Tensor:
    """Indices of `shots` examples of each binary class (negatives first), seeded."""
    g = torch.Generator().manual_seed(seed)
    idx = []
    for c in (0, 1):
        rows = torch.nonzero(y_task == c).flatten()
        if len(rows) < shots:
            raise TaskError(f"a task has {len(rows)} examples of one class, fewer than shots={shots}")
        idx.append(rows[torch.randperm(len(rows), generator=g)[:shots]])
    return torch.cat(idx)


def embedding(features: torch.Tensor, y_task: torch.Tensor) -> torch.Tensor:
    """Mean features of each class of a labelled set (negatives, then positives), concatenated."""
    return torch.cat([features[y_task == c].mean(0) for c in (0, 1)])
