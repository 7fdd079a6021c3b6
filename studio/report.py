"""One self-contained HTML file of a finished run, for collaborators without the app.

The verdict, the run's warnings, its config and every chart of the result pages, drawn by the
same `studio.charts` figures over the same `studio.shape` data as the pages, interactive
(plotly.js is inlined once, in the first figure). Opening it needs no network: no CDN, no fonts.
No streamlit here: `python -m pdiff_core report RUN` imports this lazily."""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from pdiff_core import runs
from pdiff_core.words import ZOO_MEANING, pct, zoo_kind
from studio import charts, figures, shape, vectors

PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}
CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 0 auto;
       max-width: 1100px; padding: 1.5rem 2rem 4rem; color: #222; line-height: 1.45; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2.4rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
.sub { color: #666; margin-top: 0; }
.verdict { background: #eef3fb; border-left: 4px solid #1f77b4; padding: .6rem 1.2rem; border-radius: 4px; }
.warnings { background: #fff6d5; border-left: 4px solid #b8860b; padding: .6rem 1.2rem; border-radius: 4px; }
table { border-collapse: collapse; font-size: .9rem; margin: .6rem 0; }
th, td { border: 1px solid #ddd; padding: .25rem .6rem; text-align: right; }
th { background: #f5f5f5; } td.k, th.k { text-align: left; } td.v { text-align: left; font-family: monospace; }
.caption { color: #666; font-size: .88rem; margin-top: .2rem; }
.figure { margin: 1.2rem 0 1.8rem; }
"""


def markdown(text: str) -> str:
    """The verdict's Markdown subset as HTML: paragraphs, '- ' bullet lists, **bold**. Everything escaped."""
    out = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = [l for l in block.splitlines() if l.strip()]
        items, para = [], []
        for line in lines:
            if line.lstrip().startswith(("- ", "* ")):
                items.append(inline(line.lstrip()[2:]))
            elif items:                                   # a continuation of the last bullet
                items[-1] += " " + inline(line.strip())
            else:
                para.append(inline(line.strip()))
        if para:
            out.append(f"<p>{' '.join(para)}</p>")
        if items:
            out.append("<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>")
    return "\n".join(out)


def inline(text: str) -> str:
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(text))


def fmt_value(v) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def config_table(cfg: dict) -> str:
    rows = "".join(f'<tr><td class="k">{html.escape(str(k))}</td><td class="v">{html.escape(fmt_value(v))}</td></tr>'
                   for k, v in cfg.items())
    return f'<table class="config"><tr><th class="k">option</th><th class="k">value</th></tr>{rows}</table>'


def numbers_table(items: list[tuple]) -> str:
    """One row of headline numbers: (name, value, format), a format a str.format pattern or a function (pct)."""
    cells = [(n, "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v))
              else f(v) if callable(f) else f.format(v)) for n, v, f in items]
    return ("<table><tr>" + "".join(f"<th>{html.escape(n)}</th>" for n, _ in cells) + "</tr><tr>"
            + "".join(f"<td>{html.escape(v)}</td>" for _, v in cells) + "</tr></table>")


def summary_html(m: dict) -> str:
    df = shape.summary_table(m)
    pct = {c: "{:.2%}".format for c in df.columns if c != "n"}
    return df.to_html(formatters=pct, na_rep="n/a", border=0, classes="summary")


def page_figures(run_dir: Path, m: dict, an: dict, a: dict[str, np.ndarray]) -> list[tuple[str, str, go.Figure, str]]:
    """(section, title, figure, caption) for every chart of the result pages, in page order."""
    out = []
    acc = shape.accuracy_frame(m)
    fig = charts.accuracy(acc, m["base"]["test_acc"], "histogram", 1 / m["n_test"])
    # the accuracy page's first view: its other groups a legend click away
    fig.for_each_trace(lambda t: t.update(visible=True if t.name in figures.ACC_SHOWN else "legendonly"))
    out.append(("Accuracy", "Test-accuracy distributions", fig,
                f"{m['n_test']} test examples; bin width one example. Click legend entries to show the baseline "
                "groups or hide one; dashed lines: the base model and one-model groups."))

    iou, labels, blocks = shape.iou_view(a, acc, "group")
    out.append(("Similarity", "IoU of test errors", charts.iou_heatmap(iou, labels, blocks),
                f"{figures.IOU_MEANING} Originals then generated, by index."))

    models = shape.models(acc, a)
    cap = an.get("embeddings", {}).get("params", {}).get("per_baseline_cap", "")
    for space, name in figures.MAPS.items():
        if f"emb_{space}_group" not in a:
            continue
        for method in shape.embedding_methods(a, space):
            view = shape.embedding(a, models, space, method).reset_index(names="row")
            fig = charts.embedding(view, "group", shape.embedding_axes(a, space, method)).update_layout(dragmode="zoom")
            title = f"{name}, {figures.METHODS[method]}"
            out.append(("Parameter space", title, fig, "Hover a point for its model, accuracy and nearest original. "
                        f"Baselines show a subsample of {cap} models each."))

    mem = an["memorization"]
    for space, words in figures.DISTANCES.items():
        out.append(("Memorization", f"Distance to the nearest checkpoint ({words})", *figures.nn_hist(a, mem, space)))
    out.append(("Memorization", "Accuracy against novelty", *figures.acc_vs_smax(models, shape.pareto_front(models))))
    gen = models[models["group"] == "generated"].reset_index(drop=True)
    i = shape.closest_pair(gen)
    pair = figures.pair(gen, i)
    if pair and (run_dir / "generated.safetensors").exists():
        g, o = pair
        df = shape.param_pair(vectors.params(run_dir, "generated")[g], vectors.params(run_dir, "originals")[o],
                              vectors.param_names(run_dir))
        out.append(("Memorization", f"The closest pair: generated #{g} and original #{o}", figures.param_pair(df, g, o),
                    f"The generated model nearest to a checkpoint (raw L2 {gen.at[i, 'nn_dist']:.4g}), coordinate "
                    "by coordinate."))

    ens = an.get("ensembles") or {}
    if ens.get("k") and "ens_k" in a:
        out.append(("Use cases", "Ensembles", *figures.ensembles(ens, a)))
    init = an.get("initialization") or {}
    if init.get("kinds") and "init_step" in a:
        out.append(("Use cases", "Initialization", *figures.initialization(init, a)))
    return out


def build(run_dir: Path) -> str:
    """The report of the finished run in run_dir, as one HTML string. RunError when it has no analysis."""
    run_dir = Path(run_dir)
    run_id = run_dir.name
    state = runs.read_status(run_dir).get("state")
    if (run_dir / "transfer.json").exists():
        raise runs.RunError(f"run '{run_id}' is a transfer run: the report covers single-task runs; its results are "
                            f"on the app's Transfer page, or: python -m pdiff_core show {run_id}")
    if not (run_dir / "analysis.json").exists():
        raise runs.RunError(f"run '{run_id}' has no analysis.json to report (state: {state}); "
                            + (f"recompute it with: python -m pdiff_core analyze {run_id}" if state == "done"
                               else "report it once it is done"))
    cfg, m = runs.read_json(run_dir / "config.json"), runs.read_metrics(run_dir / "metrics.json")
    an, a = runs.read_json(run_dir / "analysis.json"), runs.read_analysis_arrays(run_dir)
    sim, mem = an["similarity"], an["memorization"]
    zoo = zoo_kind(mem)
    nonfinite = figures.nonfinite_warning(m)
    warnings = [*runs.warnings_of(m), *([nonfinite] if nonfinite else [])]

    parts = [f"<h1>p-diff report: {html.escape(run_id)}</h1>",
             f'<p class="sub">{html.escape(str(m["dataset"]))} · {html.escape(str(m["arch"]))} · layers '
             f'{html.escape(str(m["layers"]))} · D={m["D"]} · K={m["K"]} · N={m["N"]} · {m["n_test"]} test examples'
             f" · zoo: {html.escape(zoo)} · state: {html.escape(str(state))}</p>",
             "<h2>Verdict</h2>", f'<div class="verdict">{markdown(an.get("verdict") or "")}</div>',
             "<h2>Warnings</h2>",
             ('<div class="warnings"><ul>' + "".join(f"<li>{html.escape(w)}</li>" for w in warnings) + "</ul></div>")
             if warnings else "<p>None.</p>",
             "<h2>Numbers</h2>", summary_html(m),
             '<p class="caption">Test accuracy; "best (by val)" is the model chosen on the validation split, reported '
             "on test.</p>",
             numbers_table([("o-o IoU", sim["oo"], "{:.3f}"), ("g-g IoU", sim["gg"], "{:.3f}"),
                            ("o-g IoU", sim["og"], "{:.3f}"), ("o-g IoU (max)", sim["og_max"], "{:.3f}"),
                            ("replica rate", mem["replica_rate"], pct),
                            ("d_traj ÷ step (median)", shape.traj_ratio(mem), "{:.1f}"),
                            ("within train median", mem["within_train_median"], pct),
                            ("dominated by a baseline", mem["dominated_share"], pct),
                            ("mean s_max (an IoU)", mem["groups"]["generated"].get("smax_mean"), "{:.3f}")]),
             f'<p class="caption">Zoo: {html.escape(zoo)}. {html.escape(ZOO_MEANING.get(zoo, ""))}</p>']
    section = None
    for n, (sec, title, fig, caption) in enumerate(page_figures(run_dir, m, an, a)):
        if sec != section:
            parts.append(f"<h2>{html.escape(sec)}</h2>")
            section = sec
        div = fig.to_html(full_html=False, include_plotlyjs=n == 0, div_id=f"fig-{n}", config=PLOTLY_CONFIG)
        parts.append(f'<div class="figure"><h3>{html.escape(title)}</h3>{div}'
                     f'<div class="caption">{markdown(caption)}</div></div>')
    parts += ["<h2>Config</h2>", config_table(cfg),
              '<p class="caption">Made by p-diff Studio from the run directory (config.json, metrics.json, '
              "analysis.json, analysis.npz). Reproduce it with: python -m pdiff_core run --preset "
              f"{html.escape(str(cfg.get('preset', '')))} with the options above.</p>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>p-diff report: {html.escape(run_id)}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def write(run_id: str, out: Path | None = None) -> Path:
    """Build the report of run `run_id` and write it to `out` (default: ./report-RUNID.html)."""
    html_text = build(runs.run_path(run_id))
    out = Path(out) if out else Path(f"report-{run_id}.html")
    runs.write_bytes(out, html_text.encode("utf-8"))    # an existing report is replaced whole or kept
    return out
