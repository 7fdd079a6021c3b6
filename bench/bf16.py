"""Is bf16 evaluation safe? The share of models whose test error set changes under bf16 autocast
against fp32, for every model of finished runs (originals, generated and every baseline family).

    python bench/bf16.py RUN [RUN ...] [--device cpu|cuda]

s_max and the replica rate compare exact error sets, so one flipped prediction in one model moves
them: bf16 can only become a default where this table shows no model changing. Predictions come
from the run's own files (base model, parameter files); nothing is rounded before comparing."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pdiff_core import runs  # noqa: E402
from pdiff_core.analysis import load_run  # noqa: E402
from pdiff_core.evaluate import Evaluator  # noqa: E402


def flips(run_dir: Path, device: str, prep=None) -> list[tuple[str, int, int, int, float]]:
    """Per group: (group, models, models whose error set changed, predictions changed, max |logit| gap).
    prep: the run's Prepared when its data is not a registered dataset (bench/gpu.py's synthetic data)."""
    run = load_run(run_dir, prep)
    base, meta = runs.read_safetensors(run_dir / "baselines.safetensors")
    groups = {g: grp.params for g, grp in run.groups.items()} | {g: base[g] for g in base}
    data = run.prep.data
    ev = Evaluator(run.model, run.codec, device, chunk=run.prep.cfg.eval_chunk)
    h = ev.features(data.x_test)
    y = data.y_test.to(device)
    out = []
    for g, thetas in groups.items():
        thetas = thetas[torch.isfinite(thetas).all(dim=1)]
        ref = ev.logits(thetas, h, features=True).float()
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            low = ev.logits(thetas, h, features=True).float()
        wrong_ref, wrong_low = ref.argmax(-1) != y, low.argmax(-1) != y
        changed = (wrong_ref != wrong_low).any(dim=1)
        out.append((g, len(thetas), int(changed.sum()), int((ref.argmax(-1) != low.argmax(-1)).sum()),
                    float((ref - low).abs().max())))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run ids (in RUNS_DIR) or run directories")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"bf16 autocast against fp32 on {args.device} ({torch.__version__})\n")
    print_header()
    for r in args.runs:
        d = Path(r) if Path(r).is_dir() else runs.run_path(r)
        cfg = runs.read_json(d / "config.json")
        print_rows(d.name, f"{cfg['dataset']}, {cfg['arch']}", flips(d, args.device))


def print_header() -> None:
    """The table's header, for print_rows (bench/gpu.py prints its table through both)."""
    print("| run | dataset, arch | group | models | error set changed | share | predictions changed | max logit gap |")
    print("|---|---|---|---|---|---|---|---|")


def print_rows(name: str, what: str, rows: list) -> None:
    for g, n, ch, p, gap in rows:
        print(f"| {name} | {what} | {g} | {n} | {ch} | {100 * ch / max(1, n):.1f} % | {p} | {gap:.3g} |")
    n_all, ch_all = sum(r[1] for r in rows), sum(r[2] for r in rows)
    print(f"| {name} | all groups | | {n_all} | {ch_all} | {100 * ch_all / max(1, n_all):.1f} % | | |")


if __name__ == "__main__":
    main()
