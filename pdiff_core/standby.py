"""A run's worker process started before the run is asked for: `python -m pdiff_core.standby`.

A fresh worker spends about 5.5 s of CPU importing torch and scikit-learn before its first step
(a tiny run's own work is about 4 s). jobs.standby() starts this process while the user is still
on the page with the launch button; it does those imports, says "ready" on stdout, and waits for
one JSON line on stdin: {"argv": [...], "out": path}. It then sends its stdout and stderr to
`out` and runs `python -m pdiff_core <argv>` in this same process, exactly as a fresh worker
would. So the process model does not change: one process per run, the app's child, in its own
session, its pid in status.json, its exit code the run's.

End of input before a job means the app that started it has gone: it exits quietly. An import
that fails here is not lost: it is written to the run's output, as a fresh worker would have."""
from __future__ import annotations

import gc
import importlib
import json
import os
import sys
import traceback

# What a run imports: torch and every stage, then the parts of scikit-learn that the data split, the digits
# loader and the health reference import on first use (without them, a handed-over run still spent 2.5 s
# importing before it started; with them, 0.1 s: bench/standby.py)
IMPORTS = ("pdiff_core.pipeline", "pdiff_core.analysis", "sklearn.model_selection", "sklearn.datasets",
           "sklearn.linear_model", "sklearn.preprocessing")


def main() -> int:
    try:
        for name in IMPORTS:
            importlib.import_module(name)
        from .__main__ import main as cli
        failed = None
    except BaseException:       # the run that comes reports it, in its worker.out
        failed = traceback.format_exc()
    try:
        os.write(1, b"ready\n")
    except OSError:             # the app took this worker before its imports ended, and stopped listening
        pass
    line = sys.stdin.readline()
    if not line:
        return 0
    job = json.loads(line)
    out = os.open(job["out"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    for fd, to in ((out, 1), (out, 2), (null, 0)):
        os.dup2(fd, to)
    os.close(out)
    os.close(null)
    if failed:
        print(failed, file=sys.stderr, end="")
        return 1
    return cli(job["argv"])


if __name__ == "__main__":
    code = main()
    gc.freeze()   # as __main__: exit skips collecting torch's and scikit-learn's objects
    sys.exit(code)
