"""Recompute a run's headline memorization figures from its raw files, apart from pdiff_core.

    python bench/verify_run.py RUN_DIR [RUN_DIR ...]

Reads predictions(_val).npz and the .safetensors files only (numpy and safetensors, no pdiff_core
import) and recomputes, by the DESIGN.md definitions: per-model exact test accuracy, each group's
median and its model chosen on validation (first on ties) as metrics.json gives them, s_max of every
generated and baseline model, and the Pareto dominance of generated models per baseline family and
by any. Prints them beside metrics.json's and analysis.json's numbers; exits 1 on any disagreement.
The tests use `recompute` as their independent reference."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file


def iou_rows(err: np.ndarray, err_o: np.ndarray) -> np.ndarray:
    """(n, B), (K, B) bool error sets -> (n, K) IoU, 1 where both sets are empty."""
    out = np.empty((len(err), len(err_o)))
    for i, e in enumerate(err):
        inter = (e & err_o).sum(axis=1)
        union = (e | err_o).sum(axis=1)
        out[i] = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
    return out


def recompute(run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    p = dict(np.load(run_dir / "predictions.npz", allow_pickle=False))
    y = p.pop("y_test")
    params = {g: load_file(str(run_dir / f"{g}.safetensors"))["params"] for g in ("originals", "generated")}
    if (run_dir / "baselines.safetensors").exists():
        params.update(load_file(str(run_dir / "baselines.safetensors")))
    out = {"correct": {}, "acc": {}, "smax": {}, "finite": {}}
    for g, preds in p.items():
        if g == "base":
            continue
        fin = (preds >= 0).all(axis=1) & np.isfinite(params[g]).all(axis=1)
        out["finite"][g] = fin
        out["correct"][g] = np.where(fin, (preds == y[None]).sum(axis=1), -1)
        out["acc"][g] = np.where(fin, out["correct"][g] / len(y), np.nan)
    fo = out["finite"]["originals"]
    err_o = p["originals"][fo] != y[None]
    for g in out["correct"]:
        if g == "originals":
            continue
        s = np.full(len(p[g]), np.nan)
        fin = out["finite"][g]
        if fin.any():
            s[fin] = iou_rows(p[g][fin] != y[None], err_o).max(axis=1)
        out["smax"][g] = s
    fg = out["finite"]["generated"]
    cg, sg = out["correct"]["generated"][fg], out["smax"]["generated"][fg]
    dom_any = np.zeros(fg.sum(), bool)
    out["dominated_by"] = {}
    for g in out["smax"]:
        if g == "generated":
            continue
        fb = out["finite"][g]
        cb, sb = out["correct"][g][fb], out["smax"][g][fb]
        dom = np.array([((cb >= c) & (sb <= s) & ((cb > c) | (sb < s))).any() for c, s in zip(cg, sg)], bool)
        out["dominated_by"][g] = float(dom.mean()) if len(dom) else float("nan")
        dom_any |= dom
    out["dominated_share"] = float(dom_any.mean()) if len(dom_any) else float("nan")
    out["smax_mean"] = float(np.nanmean(out["smax"]["generated"])) if fg.any() else float("nan")
    # metrics.json's figures: the median of finite models' test accuracy, and the test accuracy of the model
    # with the most validation examples right (the first of equals); predictions_val.npz of a run analysed
    # before it existed is not there
    val_path = run_dir / "predictions_val.npz"
    pv = dict(np.load(val_path, allow_pickle=False)) if val_path.exists() else None
    out["median"], out["best_by_val"] = {}, {}
    for g, fin in out["finite"].items():
        if fin.any():
            out["median"][g] = float(np.median(out["acc"][g][fin]))
            if pv is not None and g in pv:
                val_correct = np.where(fin, (pv[g] == pv["y_val"][None]).sum(axis=1), -1)
                out["best_by_val"][g] = float(out["acc"][g][int(np.argmax(val_correct))])
    return out


def agree(stored, value) -> bool:
    """analysis.json and metrics.json keep 6 significant digits."""
    return stored is not None and abs(stored - value) <= 1e-6 * max(1.0, abs(value))


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    missing = [d for d in argv if not (Path(d) / "analysis.json").is_file()]
    if missing:
        print(f"error: {missing[0]} is not an analysed run directory (no analysis.json); give RUN_DIR paths",
              file=sys.stderr)
        return 2
    bad = 0

    def row(name: str, value: float, stored) -> None:
        nonlocal bad
        ok = agree(stored, value)
        bad += not ok
        print(f"{name:<36} {value:>12.6f} {stored if stored is not None else float('nan'):>14.6f}"
              f"{'' if ok else '  <- differs'}")

    for d in argv:
        r = recompute(Path(d))
        a = json.loads((Path(d) / "analysis.json").read_text())["memorization"]
        groups = json.loads((Path(d) / "metrics.json").read_text())["groups"]
        print(f"\n{d}\n{'figure':<36} {'recomputed':>12} {'stored':>14}")
        for g, v in r["median"].items():
            row(f"{g}: median test acc", v, groups.get(g, {}).get("summary", {}).get("median"))
        for g, v in r["best_by_val"].items():
            row(f"{g}: best by val, test acc", v, (groups.get(g, {}).get("best_by_val") or {}).get("test_acc"))
        for g, v in r["dominated_by"].items():
            row(f"dominated by {g}", v, a["dominated_by"].get(g))
        row("dominated by any baseline", r["dominated_share"], a["dominated_share"])
        row("mean s_max of generated", r["smax_mean"], a["groups"]["generated"].get("smax_mean"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
