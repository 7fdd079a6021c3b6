"""CLI: python -m pdiff_core {run,list,show,presets,analyze,report,sweep}. Bad input exits 2 with one line."""
from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from . import jobs, runs
from .config import PRESETS, ConfigError, parse_overrides, preset_config, validate
from .words import best_test


class Parser(argparse.ArgumentParser):
    def error(self, message):   # one line instead of usage + message; prog is "python -m pdiff_core [command]"
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def cmd_presets(args) -> int:
    for name, p in PRESETS.items():
        print(f"{name:<18} {p['description']}")
    return 0


def best(group: dict) -> str:
    """'best/median': best is chosen on validation and reported on test, like everywhere."""
    b, s = best_test(group), group.get("summary", {}).get("median")
    return f"{pct(b):>6}/{pct(s):<6} "


def cmd_list(args) -> int:
    rows = jobs.list_runs()       # a run whose process died reads failed, as in the app, not running forever
    if not rows:
        print(f"no runs in {runs.runs_root()}; start one with: python -m pdiff_core run --preset digits-quick")
        return 0
    print(f"{'run':<40} {'state':<10} {'dataset':<10} {'arch':<9} {'layers':<8} "
          f"{'orig best/med':>13} {'gen best/med':>13}")
    for r in rows:
        try:
            c, m = r.get("config", {}), r.get("metrics") or {}
            groups = m.get("groups") if isinstance(m.get("groups"), dict) else {}   # a damaged file: shown as '?'
            o, g = groups.get("originals") or {}, groups.get("generated") or {}
            print(f"{r['run']:<40} {r.get('state', '?'):<10} {c.get('dataset', '?'):<10} {c.get('arch', '?'):<9} "
                  f"{str(c.get('layers', '?'))[:8]:<8} {best(o)}{best(g)}")
        except runs.DAMAGE as e:   # one damaged run, not the list
            print(f"{r['run']:<40} damaged: {runs.damage_words(e)}; `show {r['run']}` says more")
    return 0


@contextmanager
def reading(path: Path):
    """A run file that parses but lacks what every such file has is damaged: one line, not a traceback."""
    try:
        yield
    except (KeyError, TypeError, AttributeError, IndexError) as e:
        raise runs.RunError(f"{path} is damaged ({runs.damage_words(e)}); delete the run and run it again") from None


def cmd_show(args) -> int:
    run_dir = runs.run_path(args.run)
    status = jobs.refresh(args.run)
    print(f"run {args.run}: {status.get('state')} ({status.get('message', '')})")
    if (run_dir / "transfer.json").exists():
        with reading(run_dir / "transfer.json"):
            print(runs.read_json(run_dir / "transfer.json")["verdict"])
        return 0
    if not has_metrics(run_dir, status.get("state")):
        return 0
    with reading(run_dir / "metrics.json"):
        show_metrics(runs.read_metrics(run_dir / "metrics.json"))
    apath = run_dir / "analysis.json"
    if apath.exists():
        a = runs.read_json(apath)
        if a.get("verdict"):
            print("\n" + str(a["verdict"]))
    return 0


def has_metrics(run_dir: Path, state: str | None) -> bool:
    """Whether the run wrote metrics.json; a finished run without it is damaged, said in one line."""
    if (run_dir / "metrics.json").exists():
        return True
    if state == "done":
        raise runs.RunError(f"{run_dir / 'metrics.json'} is missing from a finished run; delete the run and "
                            "run it again")
    return False


def show_metrics(m: dict) -> None:
    print(f"dataset={m['dataset']} arch={m['arch']} layers={m['layers']} D={m['D']} K={m['K']} N={m['N']}")
    ref = m.get("reference")
    print(f"base model: val {pct(m['base']['val_acc'])}  test {pct(m['base']['test_acc'])}"
          + (f"   reference: val {pct(ref['val_acc'])}  test {pct(ref['test_acc'])} ({ref['method']})" if ref else ""))
    if m.get("zoo"):
        z = m["zoo"]
        print(f"zoo: {z['kind']}, {z['runs']} run(s), {z['steps_per_run']} steps per run, collect_lr {z['lr']:g}"
              + (f" (asked {z['lr_requested']:g}; halved {z['lr_halvings']}x after divergence)" if z.get("lr_halvings") else ""))
    for w in runs.warnings_of(m):
        print(f"warning: {w}")
    print("test accuracy %; best = the model chosen on validation, its test accuracy; max = the highest test "
          "accuracy (a statistic, not a choice)")
    print(f"{'group':<22} {'n':>4} {'max':>6} {'mean':>6} {'median':>6} {'min':>6} {'std':>5}  best")
    for g, gm in m["groups"].items():
        s = gm["summary"]
        if s.get("n", 0) == 0:
            print(f"{g:<22} {0:>4}  (no finite models)")
            continue
        print(f"{g:<22} {s['n']:>4} {pct(s['max']):>6} {pct(s['mean']):>6} {pct(s['median']):>6} "
              f"{pct(s['min']):>6} {pct(s['std']):>5}  {pct(gm['best_by_val']['test_acc'])}")
    if m.get("generated_nonfinite"):
        print(f"warning: {m['generated_nonfinite']} generated vectors were not finite and were not evaluated")


def cmd_run(args) -> int:
    overrides = parse_overrides(args.set or [])
    for key in ("device", "seed"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    cfg = validate(preset_config(args.preset, **overrides))   # values alone, before torch's 1 s import
    from .pipeline import Cancelled, execute, prepare     # prepare checks what needs the data
    prep = prepare(cfg, warm=True)  # every bad-input error happens here, before a run directory exists
    if args.run_id is not None:
        run_dir = runs.run_path(args.run_id, must_exist=False)
        # only a run the app queued (jobs.start) is taken over; any other file or folder there is kept
        if run_dir.exists() and runs.read_status(run_dir).get("state") != "queued":
            raise runs.RunError(f"'{args.run_id}' already exists in {runs.runs_root()}; pick another --run-id")
    else:
        run_dir = runs.run_path(runs.new_run_id(cfg.preset, cfg.seed), must_exist=False)
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"run {run_dir.name} -> {run_dir}", flush=True)

    def terminated(signum, frame):   # `kill`, `timeout`, a job scheduler: end as cancelled, helper stopped
        raise Cancelled(f"stopped by {signal.Signals(signum).name}")
    signal.signal(signal.SIGTERM, terminated)
    try:
        execute(cfg, run_dir, prep, bars=not args.quiet)
    except Cancelled as e:
        print(f"cancelled: {e}", file=sys.stderr)
        return 3
    except Exception as e:
        print(f"run failed: {type(e).__name__}: {e} (traceback in {run_dir / 'log.txt'})", file=sys.stderr)
        return 1
    args.run = run_dir.name
    return cmd_show(args)


def cmd_analyze(args) -> int:
    run_dir = runs.run_path(args.run)
    runs.read_json(run_dir / "status.json")                        # missing or corrupt: refused, nothing written
    state = jobs.refresh(args.run).get("state")                     # a dead worker's run: failed, analysable
    if state in ("queued", "running"):
        raise runs.RunError(f"run '{args.run}' is {state}: its worker writes these files; analyze it once it ends")
    if runs.read_json(run_dir / "config.json").get("family"):
        if args.umap:
            raise runs.RunError(f"{args.run} is a transfer run: it has no parameter map for UMAP; drop --umap")
        from .transfer import reanalyze
        print(reanalyze(run_dir)["verdict"])
        print(f"transfer summary written to {run_dir / 'transfer.json'} (from transfer.npz)")
        return 0
    if not has_metrics(run_dir, state):     # cancelled or failed before the evaluate stage wrote it
        raise runs.RunError(f"run '{args.run}' is {state} and never wrote metrics.json: there is nothing to analyze")
    from .analysis import add_umap, run_analysis
    if not args.umap or not (run_dir / "analysis.npz").exists():
        run_analysis(run_dir, report=lambda f, m: None)
        print(f"analysis written to {run_dir / 'analysis.json'}")
    if args.umap:
        status = add_umap(run_dir)
        print(f"UMAP map written to {run_dir / 'umap.npz'}" if status == "ok" else f"UMAP {status}")
        return 0 if status == "ok" else 1
    return cmd_show(args)


def cmd_report(args) -> int:
    state = jobs.refresh(args.run).get("state")
    if state != "done":
        raise runs.RunError(f"run '{args.run}' is not finished (state: {state}); "
                            "report a run that is done")
    out_file(args.out, f"report-{args.run}.html")
    from studio.report import write     # plotly and the figures only here: `import pdiff_core` stays light
    try:
        print(write(args.run, args.out).resolve())
    except runs.RunError:
        raise
    except runs.DAMAGE as e:
        raise runs.RunError(f"run {args.run}'s files do not hold what a report reads ({runs.damage_words(e)}); "
                            f"`python -m pdiff_core analyze {args.run}` "
                            "rebuilds its analysis, and if that fails, delete the run and run it again") from None
    return 0


def cmd_sweep(args) -> int:
    from . import driver, sweep
    if args.list:
        for s in sweep.list_sweeps():
            if s.get("damaged"):
                print(f"{s['name']:<40} damaged: {s['damaged']}")
                continue
            counts = ", ".join(f"{n} {k}" for k, n in s["counts"].items())
            print(f"{s['name']:<40} {s['state'] or 'created':<12} {s['executor']:<6} {s['cells']:>4} cells: {counts}")
        return 0
    if args.cancel:
        print(sweep.cancel(args.cancel))
        return 0
    if args.resume:
        name = args.resume
    else:
        if args.from_ and args.grid:
            raise sweep.SweepError("give either --from NAME (a preset sweep) or --grid, not both")
        spec = sweep.SWEEP_PRESETS.get(args.from_) if args.from_ else None
        if args.from_ and spec is None:
            raise sweep.SweepError(f"unknown preset sweep '{args.from_}'; choose one of: {', '.join(sweep.SWEEP_PRESETS)}")
        grid = spec["grid"] if spec else sweep.parse_grid(args.grid or [])
        seeds = sweep.parse_seeds(args.seeds) if args.seeds is not None else spec["seeds"] if spec else [0]
        preset = args.preset or (spec["preset"] if spec else "digits-quick")
        name = sweep.create(args.name or (args.from_ and f"{args.from_}-{time.strftime('%Y%m%d-%H%M%S')}"), preset,
                            grid, seeds, args.executor, args.workers, args.address)["name"]
        print(f"sweep {name} -> {sweep.folder(name)}", flush=True)
    out = driver.run(name, resume=bool(args.resume), log=lambda m: print(m, flush=True),
                     workers=args.workers if args.resume else None)   # a new sweep keeps them in sweep.json
    return 0 if out["counts"].get("done", 0) == out["cells"] else 1


def out_file(path: str | None, example: str) -> None:
    """--out names a file to write: refused up front if it is a folder or its folder does not exist."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise runs.RunError(f"--out {path} is a folder; give a file name in it, e.g. {p / example}")
    if not p.parent.is_dir():
        raise runs.RunError(f"--out {path}: the folder {p.parent} does not exist; create it or choose another")
    root, rp = runs.runs_root().resolve(), p.resolve()
    if root in rp.parents and rp.parent != root:     # a run's (or sweep's) own files are never written over
        raise runs.RunError(f"--out {path} is inside '{rp.relative_to(root).parts[0]}', a folder of the runs "
                            f"directory, whose files only the pipeline writes; write it elsewhere, e.g. ./{example}")
    suffix = Path(example).suffix
    if p.exists() and p.suffix != suffix:
        raise runs.RunError(f"--out {path} exists and is not a {suffix} file; give a new name or a {suffix} file "
                            "to replace")


MAX_HEADS = 10_000   # heads for one new task; more is an allocation, not a question


def cmd_new_task(args) -> int:
    from .newtask import accuracy_words, generate_for_task, read_task_file
    run_dir = runs.run_path(args.run)
    if not (run_dir / "transfer.npz").exists():
        raise runs.RunError(f"run '{args.run}' is not a finished transfer run (no transfer.npz); "
                            "run a task family first, e.g. --preset digits-tasks")
    out_file(args.out, "heads.safetensors")
    if args.n is not None and not 1 <= args.n <= MAX_HEADS:
        raise runs.RunError(f"--n must be from 1 to {MAX_HEADS} heads, got {args.n}")
    x, y = read_task_file(args.task)
    out = generate_for_task(run_dir, x, y, args.n, args.seed)
    acc = out["accuracy_on_examples"]
    print(f"{len(acc)} heads generated for the task in {args.task} ({len(y)} examples, {int(y.sum())} positive); "
          f"nearest training task by embedding: {out['nearest_training_task']}")
    print(f"accuracy on the given examples: {accuracy_words(acc)}")
    if args.out:
        runs.write_safetensors(Path(args.out), {"params": out["heads"]}, out["codec"].to_metadata())
        print(f"heads written to {args.out} (rows: heads; metadata: tensor names and shapes)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m pdiff_core", description="p-diff Studio: neural network diffusion, headless")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=Parser)
    r = sub.add_parser("run", help="run the whole pipeline in the foreground")
    r.add_argument("--preset", default="digits-quick", help="see `presets`")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value (repeatable)")
    r.add_argument("--device", choices=["auto", "cpu", "cuda"])
    r.add_argument("--seed", type=int)
    r.add_argument("--run-id", help="name of the run directory (default: time-preset-seed)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.set_defaults(fn=cmd_run)
    sub.add_parser("list", help="table of runs").set_defaults(fn=cmd_list)
    s = sub.add_parser("show", help="metrics summary of a run")
    s.add_argument("run")
    s.set_defaults(fn=cmd_show)
    sub.add_parser("presets", help="list presets").set_defaults(fn=cmd_presets)
    a = sub.add_parser("analyze", help="(re)compute analysis.json/.npz of a finished run")
    a.add_argument("run")
    a.add_argument("--umap", action="store_true", help="also compute the UMAP map of parameters into umap.npz "
                                                       "(about 10 s the first time in a process: numba compiles)")
    a.set_defaults(fn=cmd_analyze)
    rp = sub.add_parser("report", help="one self-contained HTML file of a finished run (verdict, charts, config)")
    rp.add_argument("run")
    rp.add_argument("--out", help="file to write (default: ./report-RUN.html)")
    rp.set_defaults(fn=cmd_report)
    nt = sub.add_parser("new-task", help="generate heads for a new task from its labelled examples (transfer runs)")
    nt.add_argument("run")
    nt.add_argument("task", help=".npz with X (rows in the dataset's raw units) and y (0/1 labels)")
    nt.add_argument("--n", type=int, help="heads to generate (default: the run's n_generate)")
    nt.add_argument("--seed", type=int, default=0)
    nt.add_argument("--out", help="write the heads to this .safetensors file")
    nt.set_defaults(fn=cmd_new_task)
    sw = sub.add_parser("sweep", help="a grid of runs on this machine (local) or a Ray cluster (ray)")
    sw.add_argument("--preset", help="the runs' preset (default digits-quick)")
    sw.add_argument("--grid", action="append", metavar="KEY=V1,V2,...", help="a swept config key (repeatable)")
    sw.add_argument("--from", dest="from_", metavar="SWEEP_PRESET", help="a preset sweep: k-memorization")
    sw.add_argument("--seeds", help="comma-separated seeds (default 0)")
    sw.add_argument("--name", help="the sweep's name (default: preset and time)")
    sw.add_argument("--executor", default="local", help="local (worker processes here) or ray")
    sw.add_argument("--workers", type=int, help="local: runs at once (default cores / threads); ray without "
                                                "--address: CPUs of the local cluster; with --resume: for this drive only")
    sw.add_argument("--address", help="ray: join this cluster (host:port) instead of starting a local one")
    sw.add_argument("--resume", metavar="NAME", help="run the cells of sweep NAME that are not done yet")
    sw.add_argument("--cancel", metavar="NAME", help="stop sweep NAME: no new cells; going ones are cancelled")
    sw.add_argument("--list", action="store_true", help="list sweeps")
    sw.set_defaults(fn=cmd_sweep)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.fn(args)
        sys.stdout.flush()          # a closed pipe fails here, inside the try, not at the interpreter's exit
        return code
    except BrokenPipeError:         # `show RUN | head`: the reader has what it wanted; as other Unix tools, quietly
        sys.stdout = open(os.devnull, "w")          # the interpreter's final flush must not fail again
        return 0
    except (ConfigError, runs.RunError, ValueError, OSError) as e:   # SweepError is a ValueError; OSError: a file
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    code = main()
    gc.freeze()   # interpreter exit then skips collecting torch's and sklearn's objects: 0.5 s less per run
    sys.exit(code)
