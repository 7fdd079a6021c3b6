"""BatchNorm in evaluation: F.batch_norm against its eval-mode affine map (evaluate.EvalBatchNorm),
side by side on every model of a finished run (originals, generated, baselines), test split.

    python bench/batchnorm.py RUN_DIR [--device cpu|cuda]

Prints the median of 3 timings of each, and how many models' predictions differ."""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pdiff_core import runs  # noqa: E402
from pdiff_core.analysis import load_run  # noqa: E402
from pdiff_core.evaluate import Evaluator  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("run_dir")
ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
args = ap.parse_args()
torch.set_num_threads(1)
run = load_run(Path(args.run_dir), None)
base, meta = runs.read_safetensors(Path(args.run_dir) / "baselines.safetensors")
thetas = torch.cat([run.groups["originals"].params, run.groups["generated"].params] + [v for v in base.values()])
data = run.prep.data
out = {}
for rnd in range(3):
    for affine in (False, True):
        ev = Evaluator(run.model, run.codec, args.device, chunk=run.prep.cfg.eval_chunk, affine_bn=affine)
        h = ev.features(data.x_test)
        if args.device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        r = ev.evaluate(thetas, h, data.y_test, features=True, keep_logits=True)
        if args.device == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        out.setdefault(affine, []).append(dt)
        if rnd == 0:
            out[("p", affine)] = r.preds
            out[("l", affine)] = r.logits
print(f"{len(thetas)} models x {len(data.y_test)} test images")
for a in (False, True):
    print(f"{'affine map' if a else 'F.batch_norm'}: median {np.median(out[a]):.3f} s  ({', '.join(f'{v:.3f}' for v in out[a])})")
diff = (out[("p", False)] != out[("p", True)]).any(axis=1)
print("models whose test predictions differ:", int(diff.sum()), "of", len(diff))
print("max |logit difference|:", float((out[("l", False)] - out[("l", True)]).abs().max()))
