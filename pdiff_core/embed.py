"""2-D maps of parameter vectors (PCA, t-SNE, UMAP), computed in a helper process.

t-SNE of a run's parameter points takes about 2.4 s on one core (digits-quick). The pipeline starts
the helper when a run with a large map starts (numpy and scikit-learn load while the run trains); the
analysis hands it the points and does everything else meanwhile. A small map (HELPER_MIN_POINTS) is
computed in the run's own process. The maps are the same numbers wherever they are
computed (one thread, fixed seeds); if the helper cannot start or dies, they are computed in
this process instead.

UMAP is not part of a run: its first fit in a process compiles numba code for about 8 s, more
than a whole digits-quick run's training now takes, so a run would wait for it. It is computed
on demand (analysis.add_umap: `python -m pdiff_core analyze RUN --umap`, or the Parameter
space page) into umap.npz, with the same seed and points it had inside the run.

This module imports numpy and scikit-learn only, so the helper never loads torch.

    python -m pdiff_core.embed     # the helper; requests arrive on stdin
"""
from __future__ import annotations

import atexit
import importlib.util
import json
import os
import resource
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits

from . import child_env

PCA_DIMS = 50            # t-SNE and UMAP run on this many principal components
# A smaller map is computed in the run's own process: its t-SNE takes about a second there (tiny's 169
# points: 0.9 s), while the helper costs about 3.5 s of CPU to start (numpy and scikit-learn load again).
# tiny runs took the same wall time either way and 27 % less CPU without it (9.10 against 9.51 s,
# 9.3 against 12.8 s of CPU, median of 5 each, alternating); on digits-quick's 801 points the helper saved
# 4.5 s of wall time (57.5 against 62.0 s, median of 3, alternating) for 3.8 s more CPU.
HELPER_MIN_POINTS = 300
UMAP_ON_DEMAND = ("on demand: python -m pdiff_core analyze RUN --umap, or the Parameter space page "
                  "(numba compiles it for about 8 s the first time in a process)")


class HelperError(RuntimeError):
    pass


# -----------------------------------------------------------------------------
# the maps

def pca(x: np.ndarray, dims: int, seed: int, explained: bool = False):
    """The first `dims` principal components; with explained=True also each one's share of the
    variance (a map's axes say how much of the spread they show)."""
    k = min(dims, x.shape[0], x.shape[1])
    fit = PCA(k, svd_solver="full", random_state=seed)
    out = fit.fit_transform(x)
    ratio = np.nan_to_num(fit.explained_variance_ratio_)
    if k < min(dims, 2):   # a map stays 2-D: one feature (latent_dim=1) or one point gives a flat second axis
        out = np.pad(out, ((0, 0), (0, min(dims, 2) - k)))
        ratio = np.pad(ratio, (0, min(dims, 2) - k))
    return (out, ratio) if explained else out


def tsne(x: np.ndarray, seed: int) -> np.ndarray:
    perplexity = min(30.0, max(2.0, (len(x) - 1) / 3))   # must stay below the point count
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(pca(x, PCA_DIMS, seed))


def umap_available() -> bool:
    """Whether umap-learn can be found, without importing it (that takes seconds)."""
    if "umap" in sys.modules:
        return sys.modules["umap"] is not None
    return importlib.util.find_spec("umap") is not None


def umap_embed(x: np.ndarray, seed: int, timings: dict) -> tuple[np.ndarray | None, str]:
    """UMAP and "ok", or None and why it was skipped. umap is imported here only: its cold
    import takes 30-40 s, and the GPU machine does not have it."""
    t0 = time.perf_counter()
    try:
        import umap
    except Exception as e:   # not installed, or a broken numba/llvmlite: the other maps still stand
        return None, f"skipped: umap-learn could not be imported ({type(e).__name__}: {e})"
    timings["umap_import"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    reducer = umap.UMAP(n_components=2, n_neighbors=min(15, len(x) - 1), random_state=seed, n_jobs=1)
    out = reducer.fit_transform(pca(x, PCA_DIMS, seed))
    timings["umap_fit"] = round(time.perf_counter() - t0, 3)   # the first fit in a process includes numba JIT
    return out, "ok"


def umap_status() -> str:
    """What a run's analysis.json says about UMAP: it is never computed inside a run."""
    return UMAP_ON_DEMAND if umap_available() else "skipped: umap-learn could not be imported (not installed)"


def param_maps(x: np.ndarray, seed: int) -> tuple[dict[str, np.ndarray], dict]:
    """{"pca", "tsne": (M, 2) float32, "pca_explained": (2,)}, and timings."""
    with threadpool_limits(1):           # t-SNE's result depends on the thread count
        t0 = time.perf_counter()
        maps = dict(zip(("pca", "pca_explained"), pca(x, 2, seed, explained=True)), tsne=tsne(x, seed))
        timings = {"pca_tsne": round(time.perf_counter() - t0, 3)}
    return {k: v.astype(np.float32) for k, v in maps.items()}, timings


# -----------------------------------------------------------------------------
# the helper process, seen from the parent

class Helper:
    """`python -m pdiff_core.embed`: answers one request per line on its stdin (input and
    output .npz paths) with one JSON line on its stdout. Its stderr is ours, so its warnings
    land in the run's log."""

    def __init__(self):
        self.dir = None
        env = child_env(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "pdiff_core.embed"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, bufsize=0)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _why(self) -> str:
        code = self.proc.poll()
        return "no answer" if code is None else f"exit code {code}; its last output is in the log"

    def request(self, x: np.ndarray, seed: int) -> Path:
        self._cleanup()
        self.dir = Path(tempfile.mkdtemp(prefix="pdiff-embed-"))   # only while a request is under way
        src, dst = self.dir / "in.npz", self.dir / "out.npz"
        np.savez(src, x=x, seed=np.int64(seed))
        try:
            self.proc.stdin.write(f"{src}\t{dst}\n".encode())
            self.proc.stdin.flush()
        except OSError as e:
            raise HelperError(f"could not send the request ({e}; {self._why()})") from e
        return dst

    def reply(self, dst: Path, wait) -> tuple[dict[str, np.ndarray], dict]:
        """Block until the answer; `wait()` is called every 0.2 s and may raise to give up."""
        buf, answer = b"", {}
        while answer.get("dst") != str(dst):   # skip the answer to an earlier request that nobody read
            while b"\n" not in buf:            # (an analysis that failed after sending it, in this process)
                ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
                if ready:
                    chunk = self.proc.stdout.read(4096)
                    if not chunk:
                        raise HelperError(f"the helper process ended ({self._why()})")
                    buf += chunk
                else:
                    wait()
            line, buf = buf.split(b"\n", 1)
            answer = json.loads(line)
        if not answer["ok"]:
            raise HelperError(answer["error"])
        with np.load(dst, allow_pickle=False) as z:
            maps = {k: z[k] for k in z.files}
        self._cleanup()
        return maps, answer["timings"]

    def _cleanup(self):
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def close(self):
        # The helper holds nothing worth a clean exit.
        self.proc.kill()
        self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()
        self._cleanup()


_helper: Helper | None = None


def start_helper() -> Helper | None:
    """Start the process-wide helper (or keep the running one); None where it cannot start."""
    global _helper
    if _helper is not None and not _helper.alive():
        stop_helper()
    if _helper is None:
        try:
            _helper = Helper()
        except OSError:
            _helper = None
    return _helper


def stop_helper():
    global _helper
    if _helper is not None:
        _helper.close()
        _helper = None


atexit.register(stop_helper)


def helper_pays(points: int) -> bool:
    """Whether a map of `points` points goes to the helper: a large one, or any once a helper is running
    (the pipeline starts it early for a run whose map it expects to be large)."""
    return points >= HELPER_MIN_POINTS or (_helper is not None and _helper.alive())


class PendingMaps:
    """param_maps(x, seed) (PCA and t-SNE) under way in the helper; result() falls back to this process.
    With helper=False they are computed in this process, by result()."""

    def __init__(self, x: np.ndarray, seed: int, helper: bool = True):
        self.x, self.seed, self.dst = x, seed, None
        if not helper:
            self.helper, self.note = None, f"in this process ({len(x)} points: quicker than starting the helper)"
            return
        self.helper, self.note = start_helper(), "helper process"
        if self.helper is None:
            self.note = "in this process (the helper process could not start)"
            return
        try:
            self.dst = self.helper.request(x, seed)
        except HelperError as e:
            self.note = f"in this process ({e})"
            stop_helper()

    def result(self, wait=lambda: None) -> tuple[dict[str, np.ndarray], str, dict]:
        """(PCA and t-SNE maps, UMAP's status as this process sees it, timings)."""
        status = umap_status()
        if self.dst is not None:
            try:
                maps, timings = self.helper.reply(self.dst, wait)
                return maps, status, {**timings, "where": self.note}
            except HelperError as e:
                self.note = f"in this process ({e})"
                stop_helper()
            except BaseException:       # cancelled: stop the work under way
                stop_helper()
                raise
        maps, timings = param_maps(self.x, self.seed)
        return maps, status, {**timings, "where": self.note}


# -----------------------------------------------------------------------------
# the helper process itself

def serve() -> None:
    """Answer requests until stdin ends: the parent closed it, or died."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)                        # anything a library prints goes to stderr, not into the protocol
    with threadpool_limits(1):
        for line in sys.stdin:
            src, dst = line.rstrip("\n").split("\t")
            try:
                with np.load(src, allow_pickle=False) as z:
                    x, seed = z["x"], int(z["seed"])
                os.unlink(src)
                maps, timings = param_maps(x, seed)
                tmp = dst + ".tmp.npz"
                np.savez(tmp, **maps)
                os.replace(tmp, dst)
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux
                answer = {"ok": True, "timings": {**timings, "helper_peak_rss_mib": round(peak)}}
            except Exception as e:
                answer = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            protocol.write(json.dumps({**answer, "dst": dst}) + "\n")   # dst names the request answered


if __name__ == "__main__":
    serve()
