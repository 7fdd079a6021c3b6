"""Plotly figures shared by the pages. Pure functions of data: no streamlit, no file reads."""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

# One colour per group everywhere: originals blue, generated red, each baseline family its own hue.
COLORS = {"base": "#222222", "originals": "#1f77b4", "original": "#1f77b4", "generated": "#d62728",
          "random": "#7f7f7f", "average": "#6a3d9a",
          # the noise family in five clearly different steps of one hue (light = little noise)
          "noise_0.001": "#fec44f", "noise_0.01": "#fe9929", "noise_0.05": "#ec7014", "noise_0.1": "#cc4c02",
          "noise_0.15": "#8c2d04"}
FAMILIES = {"noise": "#fe9929", "average": "#b07cd8", "gauss": "#2ca02c", "interp": "#e377c2"}
PRIMARY = ("originals", "generated")        # drawn larger and more opaque than baselines
LAYOUT = dict(margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0))
SIDE_LEGEND = {**LAYOUT, "legend": dict(orientation="v", x=1.01, y=1, xanchor="left")}   # for many groups


def color(group: str) -> str:
    if group in COLORS:
        return COLORS[group]
    for prefix, c in FAMILIES.items():
        if group.startswith(prefix):
            return c
    return qualitative.Safe[zlib.crc32(group.encode()) % len(qualitative.Safe)]


def line_label(text: str, line_color: str) -> dict:
    """A reference line's label: in the line's colour, on a white box, since it often lies over a bar or a curve."""
    return dict(text=text, font=dict(size=11, color=line_color), bgcolor="rgba(255,255,255,0.85)")


def pct_axis(fig: go.Figure, axis: str = "x", title: str = "test accuracy (%)", fmt: str = ".1%") -> go.Figure:
    fig.update_layout(**{f"{axis}axis": dict(title=title, tickformat=fmt)})
    return fig


def accuracy(df: pd.DataFrame, base_acc: float | None, kind: str = "histogram", step: float = 0.005) -> go.Figure:
    """Test-accuracy distributions per group (df: group, test_acc), overlaid; the base model and
    one-model groups as lines. `step`: histogram bin width (one test example is the honest one)."""
    fig = go.Figure()
    lines = {"base model": base_acc} if base_acc is not None else {}
    for group, part in df.groupby("group", sort=False):
        acc = part["test_acc"].dropna()
        if len(part) == 1:                       # one model (the soup): a line, not a 100 % bar
            lines[group] = acc.iloc[0] if len(acc) else None
        elif kind == "violin":
            # spanmode hard: the density stops at the data, never suggesting accuracies no model reached
            fig.add_trace(go.Violin(x=acc, name=group, orientation="h", line_color=color(group), points="all",
                                    spanmode="hard", pointpos=0, jitter=0.3, marker_size=3, box_visible=True, meanline_visible=True,
                                    hovertemplate=f"{group}<br>%{{x:.2%}}<extra></extra>"))
        else:
            fig.add_trace(go.Histogram(x=acc, name=group, marker_color=color(group), opacity=0.6,
                                       xbins=dict(start=-step / 2, size=step), histnorm="percent",
                                       hovertemplate=f"{group}<br>%{{x:.1%}}: %{{y:.1f}}% of models<extra></extra>"))
    for i, (name, acc) in enumerate(a for a in lines.items() if a[1] is not None):
        c = color("base" if name == "base model" else name)
        fig.add_vline(x=acc, line=dict(color=c, dash="dash"),
                      annotation=dict(line_label(f"{name} {acc:.1%}", c), yshift=-16 * i), annotation_position="top left")
    fig.update_layout(barmode="overlay", height=420, **LAYOUT,
                      yaxis_title="share of models (%)" if kind == "histogram" else None)
    if not fig.data and not lines:            # nothing selected: an empty 0-100 % axis, not -100 % to 500 %
        fig.update_layout(xaxis_range=[0, 1], yaxis_range=[0, 100])
        fig.add_annotation(text="no group selected", showarrow=False, font_color="#999", xref="paper",
                           yref="paper", x=0.5, y=0.5)
    return pct_axis(fig)


def losses(curves: dict[str, list], height: int = 260) -> go.Figure:
    """AE and DDPM training-loss curves side by side, log y (curves: {"ae": [[step, loss]...], "ddpm": ...})."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("autoencoder loss", "DDPM loss"), horizontal_spacing=0.08)
    for col, (key, c) in enumerate([("ae", "#ff7f0e"), ("ddpm", "#9467bd")], start=1):
        pts = np.asarray(curves.get(key) or [], dtype=float).reshape(-1, 2)
        fig.add_trace(go.Scatter(x=pts[:, 0], y=pts[:, 1], mode="lines", line_color=c, name=key,
                                 hovertemplate="step %{x}<br>loss %{y:.4g}<extra></extra>"), row=1, col=col)
        fig.update_xaxes(title_text="step", row=1, col=col, visible=len(pts) > 0)
        fig.update_yaxes(type="log", tickformat=".2g", row=1, col=col, visible=len(pts) > 0)
        if not len(pts):
            fig.add_annotation(text="not started yet", showarrow=False, font_color="#999",
                               xref=f"x{col if col > 1 else ''} domain", yref=f"y{col if col > 1 else ''} domain",
                               x=0.5, y=0.5)
    fig.update_layout(height=height, showlegend=False, margin=dict(l=10, r=10, t=30, b=10))
    return fig


def pipeline_dot() -> str:
    """The p-diff pipeline as a Graphviz DOT string (st.graphviz_chart draws it in the browser)."""
    node = 'node [shape=box style="rounded,filled" fontname="sans-serif" fontsize=11 fillcolor="#eef3fb" color="#1f77b4"]'
    return f"""digraph {{ rankdir=LR; bgcolor="transparent"; {node}; edge [color="#555555"];
  train [label="train a network\\nto convergence"];
  ckpt [label="keep training a few layers;\\nsave K checkpoints"];
  ae [label="autoencoder\\nparams ⇄ latents"];
  ddpm [label="DDPM on latents\\n(learn to denoise)"];
  gen [label="sample noise → latent\\n→ decode → N new params" fillcolor="#fde8e8" color="#d62728"];
  eval [label="evaluate every model"];
  q [label="new models, or copies\\nof the checkpoints?" shape=note fillcolor="#fff6d5" color="#b8860b"];
  train -> ckpt -> ae -> ddpm -> gen -> eval -> q; ckpt -> q [style=dashed label="compare" fontsize=10]; }}"""


def iou_heatmap(iou: np.ndarray, labels: list[str], blocks: list[tuple[str, int, int]]) -> go.Figure:
    """IoU-of-errors matrix, its colour scale spanning the data (values often sit between 0.6 and 1).
    A strip on the left colours each row by group, so the groups stay visible in any order; group
    blocks are outlined and named when the order keeps groups together."""
    finite = iou[np.isfinite(iou)]
    lo = float(np.floor(finite.min() * 20) / 20) if finite.size else 0.0      # round down to 0.05
    groups = [lab.split(" #")[0] for lab in labels]
    names = list(dict.fromkeys(groups))
    fig = make_subplots(rows=1, cols=2, column_widths=[0.025, 0.975], shared_yaxes=True, horizontal_spacing=0.005)
    steps = np.linspace(0, 1, len(names) + 1)
    scale = [[v, color(g)] for i, g in enumerate(names) for v in (steps[i], steps[i + 1])]
    fig.add_trace(go.Heatmap(z=[[names.index(g)] for g in groups], y=labels, x=["group"], showscale=False,
                             colorscale=scale, zmin=-0.5, zmax=len(names) - 0.5, customdata=[[g] for g in groups],
                             hovertemplate="%{y}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Heatmap(z=np.round(iou, 3), x=labels, y=labels, colorscale="Viridis", zmin=lo, zmax=1,
                             colorbar=dict(title="IoU", tickformat=".2f"),
                             hovertemplate="%{y}<br>%{x}<br>IoU %{z:.3f}<extra></extra>"), row=1, col=2)
    for group, a, b in blocks:
        fig.add_shape(type="rect", x0=a - 0.5, x1=b + 0.5, y0=a - 0.5, y1=b + 0.5, xref="x2", yref="y2",
                      line=dict(color=color(group), width=2))
        fig.add_annotation(x=(a + b) / 2, y=-0.5, text=group, showarrow=False, yshift=12, xref="x2", yref="y2",
                           font=dict(color=color(group)))
    fig.update_xaxes(showticklabels=False, showgrid=False, row=1, col=1)
    fig.update_xaxes(showgrid=False, nticks=12, tickangle=45, tickfont_size=9, row=1, col=2)
    fig.update_yaxes(showgrid=False, autorange="reversed", nticks=20, tickfont_size=9, row=1, col=1)
    fig.update_layout(height=660, margin=dict(l=10, r=10, t=30, b=10),
                      title=dict(text=f"colour scale {lo:.2f} to 1: " + ", ".join(names), font_size=12))
    return fig


def embedding(df: pd.DataFrame, by: str, axes: tuple[str, str] = ("", "")) -> go.Figure:
    """2-D scatter of models (df: x, y, group, label, test_acc, nn_idx, row); by 'group' or 'accuracy'.
    customdata holds the row in df, so a selection maps back to models. axes: the axis titles."""
    fig = go.Figure()
    df = df.assign(hover=[f"{lab}<br>nearest original #{nn}" if nn >= 0 else lab
                          for lab, nn in zip(df["label"], df["nn_idx"])])
    hover = "%{text}<extra></extra>"
    if by == "accuracy":
        fig.add_trace(go.Scatter(
            x=df["x"], y=df["y"], mode="markers", text=df["hover"], customdata=df["row"],
            marker=dict(color=df["test_acc"], colorscale="Plasma", size=7, colorbar=dict(title="test acc", tickformat=".1%"),
                        symbol=[0 if g == "generated" else 4 if g == "originals" else 2 for g in df["group"]]),
            hovertemplate=hover, name="models"))
    else:
        for group, part in df.groupby("group", sort=False):
            fig.add_trace(go.Scatter(x=part["x"], y=part["y"], mode="markers", name=group, text=part["hover"],
                                     customdata=part["row"], hovertemplate=hover,
                                     marker=dict(color=color(group), size=7 if group in PRIMARY else 5,
                                                 opacity=0.9 if group in PRIMARY else 0.6)))
    fig.update_layout(height=560, dragmode="lasso", **SIDE_LEGEND,
                      xaxis=dict(title=axes[0], showticklabels=False, zeroline=False),
                      yaxis=dict(title=axes[1], showticklabels=False, zeroline=False))
    return fig


def nn_hist(dists: dict[str, np.ndarray], threshold: float | None, space: str) -> go.Figure:
    """Nearest-checkpoint distances per group (train→train is the leave-one-out reference)."""
    fig = go.Figure()
    hi = max((np.nanmax(d) for d in dists.values() if len(d)), default=1.0)
    for name, d in dists.items():
        key = "originals" if name.startswith("train") else name
        fig.add_trace(go.Histogram(x=d, name=name, marker_color=color(key), opacity=0.6, histnorm="percent",
                                   xbins=dict(start=0, end=hi * 1.001, size=hi / 60)))
    if threshold is not None:
        fig.add_vline(x=threshold, line=dict(color="#444", dash="dot"),
                      annotation=line_label("replica threshold (5th pct of train→train)", "#444"),
                      annotation_position="top right")
    fig.update_layout(barmode="overlay", height=380, xaxis_title=f"distance to nearest checkpoint ({space} L2)",
                      yaxis_title="share of models (%)", **LAYOUT)
    return fig


def acc_vs_smax(models: pd.DataFrame, front: pd.DataFrame, side_legend: bool = True) -> go.Figure:
    """Accuracy against s_max for every group; baselines' Pareto front. Models that land on the same
    point are drawn once, sized by how many they are (the count is on hover): 200 generated models
    often sit on a handful of points. A point whose generated models are all dominated is hollow.
    side_legend=False puts the legend above the plot (long names, e.g. run ids, in a half-width column)."""
    fig = go.Figure()
    for group, part in models.dropna(subset=["test_acc", "smax"]).groupby("group", sort=False):
        agg = dict(n=("label", "size"), first=("label", "first"))
        if group == "generated" and "dominated" in part:
            agg["dominated"] = ("dominated", lambda d: bool(d.fillna(False).astype(bool).all()))
        pts = part.groupby(["smax", "test_acc"], sort=False).agg(**agg).reset_index()
        base = 8 if group in PRIMARY else 5
        sizes = base + 3 * np.sqrt(pts["n"] - 1)
        symbol = ["circle-open" if d else "circle" for d in pts["dominated"]] if "dominated" in pts else "circle"
        text = [f"{f}" if n == 1 else f"{n} {group} models here (e.g. {f})" for f, n in zip(pts["first"], pts["n"])]
        fig.add_trace(go.Scatter(x=pts["smax"], y=pts["test_acc"], mode="markers", name=group, text=text,
                                 marker=dict(color=color(group), symbol=symbol, size=sizes,
                                             opacity=0.9 if group in PRIMARY else 0.55),
                                 hovertemplate="%{text}<br>s_max %{x:.3f}, accuracy %{y:.2%}<extra></extra>"))
    if len(front):
        fig.add_trace(go.Scatter(x=front["smax"], y=front["test_acc"], mode="lines", line_shape="hv",
                                 name="baselines' Pareto front", line=dict(color="#111", dash="dash")))
    fig.update_layout(height=480, xaxis_title="s_max: highest IoU with any original (lower = more novel)",
                      **(SIDE_LEGEND if side_legend else LAYOUT))
    return pct_axis(fig, "y")


def param_pair(df: pd.DataFrame, gen_label: str, orig_label: str) -> go.Figure:
    """A generated vector and its nearest checkpoint, coordinate by coordinate, and their difference."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.65, 0.35], vertical_spacing=0.06)
    trace = go.Scattergl if len(df) > 5000 else go.Scatter
    for col, name, c in (("original", orig_label, COLORS["originals"]), ("generated", gen_label, COLORS["generated"])):
        fig.add_trace(trace(x=df["coord"], y=df[col], mode="lines", name=name, line=dict(color=c, width=1),
                            customdata=df["tensor"], hovertemplate="%{customdata}[%{x}]: %{y:.4g}<extra></extra>"),
                      row=1, col=1)
    fig.add_trace(trace(x=df["coord"], y=df["difference"], mode="lines", name="generated − original",
                        line=dict(color="#555", width=1)), row=2, col=1)
    starts = df.groupby("tensor", sort=False)["coord"].min()
    for name, x in starts.items():
        fig.add_vline(x=x - 0.5, line=dict(color="#bbb", width=1))
        fig.add_annotation(x=x, y=1.0, yref="paper", text=name, showarrow=False, xanchor="left", font_size=10)
    fig.update_yaxes(title_text="value", row=1, col=1)
    fig.update_yaxes(title_text="difference", row=2, col=1)
    fig.update_xaxes(title_text="coordinate (flattening order)", row=2, col=1)
    fig.update_layout(height=440, **{**LAYOUT, "margin": dict(l=10, r=10, t=60, b=10)})
    return fig


def curves(x, series: dict[str, tuple[np.ndarray, np.ndarray | None]], x_title: str, y_title: str,
           faint: dict[str, np.ndarray] | None = None, log_x: bool = False) -> go.Figure:
    """Mean curves with ±std bands (series: name -> (mean, std or None)); optional faint individual runs."""
    fig = go.Figure()
    for name, rows in (faint or {}).items():
        for y in rows:
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines", line=dict(color=color(name), width=0.7),
                                     opacity=0.3, showlegend=False, hoverinfo="skip"))
    for name, (mean, std) in series.items():
        if std is not None:
            band = np.concatenate([mean + std, (mean - std)[::-1]])
            fig.add_trace(go.Scatter(x=np.concatenate([x, x[::-1]]), y=band, fill="toself", mode="lines",
                                     line=dict(width=0),
                                     fillcolor=color(name), opacity=0.15, showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=x, y=mean, mode="lines+markers" if len(x) < 20 else "lines", name=name,
                                 line=dict(color=color(name), width=2.5),
                                 hovertemplate=f"{name}<br>%{{x}}: %{{y:.2%}}<extra></extra>"))
    ticks = dict(tickvals=list(x), ticktext=[str(v) for v in x]) if log_x else {}
    fig.update_layout(height=400, xaxis=dict(title=x_title, type="log" if log_x else "linear", **ticks), **LAYOUT)
    return pct_axis(fig, "y", y_title, ".2%")     # curves often differ by a tenth of a point: no repeated ticks


def log_worthy(values) -> bool:
    """Numbers spanning more than a factor 10 (all positive): a log axis spreads them evenly."""
    v = pd.to_numeric(pd.Series(list(values)), errors="coerce")
    return bool(v.notna().all() and len(v) and v.min() > 0 and v.max() / v.min() > 10)


def sweep_metric(agg: pd.DataFrame, x: str, color: str | None, y_title: str) -> go.Figure:
    """A sweep's metric against one key (agg from shape.sweep_means): the mean over seeds with its 95 %
    interval as error bars, one line per value of `color`."""
    fig = go.Figure()
    numeric = pd.api.types.is_numeric_dtype(agg[x])
    parts = agg.groupby(color, sort=False) if color else [(None, agg)]
    for i, (value, part) in enumerate(parts):
        part = part.sort_values(x) if numeric else part
        name = f"{color}={value}" if color else y_title
        c = color_of(str(value), i) if color else COLORS["generated"]
        fig.add_trace(go.Scatter(
            x=part[x] if numeric else part[x].astype(str), y=part["mean"], mode="lines+markers", name=name,
            line=dict(color=c, width=2), marker_size=8, customdata=part[["lo", "hi", "n"]].to_numpy(),
            error_y=dict(type="data", symmetric=False, array=(part["hi"] - part["mean"]).to_numpy(),
                         arrayminus=(part["mean"] - part["lo"]).to_numpy(), thickness=1.2, width=5),
            hovertemplate=f"{x}=%{{x}}<br>mean %{{y:.3f}}<br>95 %: %{{customdata[0]:.3f}} to "
                          f"%{{customdata[1]:.3f}}<br>%{{customdata[2]}} seeds<extra>{name}</extra>"))
    log_x = numeric and log_worthy(agg[x])
    ticks = dict(tickvals=sorted(agg[x].unique()), ticktext=[str(v) for v in sorted(agg[x].unique())]) if numeric else {}
    fig.update_layout(height=400, showlegend=bool(color), yaxis_title=y_title,
                      xaxis=dict(title=x, type="log" if log_x else "linear" if numeric else "category", **ticks),
                      **LAYOUT)
    return fig


def color_of(value: str, i: int) -> str:
    """A swept value's colour: the group colours where they apply (trajectory, ...), else the palette."""
    return COLORS.get(value) or qualitative.Plotly[i % len(qualitative.Plotly)]


def sweep_plane(df: pd.DataFrame, color: str) -> go.Figure:
    """Accuracy against novelty, one point per cell (df from load.sweep_table), coloured by a swept key."""
    fig = go.Figure()
    for i, (value, part) in enumerate(df.groupby(color, sort=False)):    # the grid's order: colours as sweep_metric
        fig.add_trace(go.Scatter(x=part["smax_mean"], y=part["gen_acc_median"], mode="markers", name=f"{color}={value}",
                                 marker=dict(size=10, color=color_of(str(value), i), line=dict(width=1, color="#fff")),
                                 text=part["run"],
                                 hovertemplate="%{text}<br>mean s_max %{x:.3f}<br>median accuracy %{y:.2f} %"
                                               "<extra></extra>"))
    fig.update_layout(height=420, xaxis_title="mean s_max of generated models (lower = more novel)",
                      yaxis_title="median test accuracy of generated models (%)", **SIDE_LEGEND)
    return fig


# ---- transfer runs ------------------------------------------------------------------------------------

TRANSFER_COLORS = {"average_of_tasks": "#6a3d9a", "nearest_task": "#1f77b4", "linear_probe_k1": "#a1d99b",
                   "linear_probe_k5": "#41ab5d", "linear_probe_k10": "#006d2c", "generated_median": "#f08080",
                   "generated_best": "#d62728", "oracle": "#222222", "generated": "#d62728", "random": "#7f7f7f"}


def _jitter(n: int, width: float = 0.3, seed: int = 0) -> np.ndarray:
    """Fixed offsets for a strip of n points (the same on every rerun)."""
    return (np.random.default_rng(seed).random(n) - 0.5) * 2 * width


def transfer_methods(df: pd.DataFrame, summary: pd.DataFrame) -> go.Figure:
    """Every method's zero-shot test accuracy on every held-out task (df: task, method, label, acc),
    one column per method in summary's order, with the median and its interval over tasks
    (summary: method, label, median, lo, hi, level); the oracle's median as a dashed ceiling."""
    fig = go.Figure()
    methods = list(summary["method"])
    for i, row in summary.reset_index(drop=True).iterrows():
        m, c = row["method"], TRANSFER_COLORS.get(row["method"], "#888")
        part = df[df["method"] == m]
        fig.add_trace(go.Scatter(x=i + _jitter(len(part), 0.18, i), y=part["acc"], mode="markers", name=row["label"],
                                 marker=dict(color=c, size=7, opacity=0.55), customdata=part[["task"]],
                                 showlegend=False,
                                 hovertemplate=f"{row['label']}<br>%{{customdata[0]}}: %{{y:.1%}}<extra></extra>"))
        fig.add_trace(go.Scatter(x=[i + 0.32], y=[row["median"]], mode="markers", showlegend=False,
                                 marker=dict(color=c, size=12, symbol="diamond", line=dict(color="white", width=1)),
                                 error_y=dict(type="data", symmetric=False, array=[row["hi"] - row["median"]],
                                              arrayminus=[row["median"] - row["lo"]], color=c, thickness=2, width=6),
                                 hovertemplate=(f"{row['label']}<br>median %{{y:.1%}} ({row['level']:.1%} "
                                                f"interval {row['lo']:.1%} to {row['hi']:.1%})<extra></extra>")))
    if "oracle" in methods:
        o = summary.set_index("method").loc["oracle", "median"]
        fig.add_hline(y=o, line=dict(color=TRANSFER_COLORS["oracle"], dash="dash", width=1),
                      annotation=line_label(f"oracle median {o:.1%}", TRANSFER_COLORS["oracle"]),
                      annotation_position="bottom left")
    ticks = [lbl.replace(" (", "<br>(").replace(", ", ",<br>").replace(" training ", "<br>training ")
             for lbl in summary["label"]]
    fig.update_layout(height=440, **LAYOUT, showlegend=False,
                      xaxis=dict(tickvals=list(range(len(methods))), ticktext=ticks, tickangle=0,
                                 range=[-0.6, len(methods) - 0.4]))
    return pct_axis(fig, "y", "zero-shot test accuracy (%)", ".0%")


def _vlines(fig: go.Figure, lines: dict[str, tuple[float, str, str]], y: tuple[float, float],
            fmt: str = "{:.1%}") -> None:
    """Vertical lines (name -> (x, colour, dash)) from y[0] to y[1], named in the legend with their
    value (labels on the plot overlap when lines are close)."""
    for name, (x, c, dash) in sorted(lines.items(), key=lambda kv: -kv[1][0]):
        shown = f"{name} {fmt.format(x)}" if dash != "dot" else name
        fig.add_trace(go.Scatter(x=[x, x], y=list(y), mode="lines", name=shown,
                                 line=dict(color=c, dash=dash, width=2 if dash == "solid" else 1.5),
                                 hovertemplate=f"{shown}<extra></extra>"))


def transfer_heads(heads: pd.DataFrame, baselines: dict[str, float], labels: dict[str, str]) -> go.Figure:
    """One held-out task: its generated heads' test accuracies as a strip (heads: head, acc, best,
    support_correct), the head chosen on the support set a star, each baseline and the oracle a line."""
    fig = go.Figure()
    y = _jitter(len(heads), 0.3, 1)
    rest, best = heads[~heads["best"]], heads[heads["best"]]
    fig.add_trace(go.Scatter(x=rest["acc"], y=y[~heads["best"].to_numpy()], mode="markers", name="generated heads",
                             marker=dict(color=TRANSFER_COLORS["generated"], size=9, opacity=0.6),
                             customdata=rest[["head", "support_correct"]],
                             hovertemplate="head %{customdata[0]}: %{x:.1%}<br>%{customdata[1]} support examples "
                                           "right<extra></extra>"))
    fig.add_trace(go.Scatter(x=best["acc"], y=y[heads["best"].to_numpy()], mode="markers",
                             name="best on the support set",
                             marker=dict(color=TRANSFER_COLORS["generated"], size=18, symbol="star",
                                         line=dict(color="#222", width=1)),
                             customdata=best[["head", "support_correct"]],
                             hovertemplate="head %{customdata[0]} (chosen on support): %{x:.1%}<br>"
                                           "%{customdata[1]} support examples right<extra></extra>"))
    _vlines(fig, {labels[m]: (v, TRANSFER_COLORS.get(m, "#888"), "solid" if m == "oracle" else "dash")
                  for m, v in baselines.items()}, (-0.45, 0.45))
    lo = min([*heads["acc"], *baselines.values()])
    fig.update_layout(height=480, **{**LAYOUT, "legend": dict(orientation="h", yanchor="top", y=-0.18, x=0)}, yaxis=dict(visible=False, range=[-0.5, 0.5]),
                      xaxis_range=[max(0.0, lo - 0.03), 1.005])
    return pct_axis(fig, "x", "test accuracy (%)", ".0%")


def transfer_finetune(df: pd.DataFrame, oracle: float) -> go.Figure:
    """One held-out task's fine-tuning curves on its support set (df: start, label, step, acc), the oracle dashed."""
    fig = go.Figure()
    for s, part in df.groupby("start", sort=False):
        fig.add_trace(go.Scatter(x=part["step"], y=part["acc"], mode="lines+markers", name=part["label"].iloc[0],
                                 line=dict(color=TRANSFER_COLORS.get(s, "#888"), width=2.5),
                                 hovertemplate=f"{part['label'].iloc[0]}<br>step %{{x}}: %{{y:.1%}}<extra></extra>"))
    fig.add_hline(y=oracle, line=dict(color=TRANSFER_COLORS["oracle"], dash="dash", width=1),
                  annotation=line_label(f"oracle {oracle:.1%}", TRANSFER_COLORS["oracle"]),
                  annotation_position="bottom right")
    fig.update_layout(height=380, **LAYOUT, xaxis_title="fine-tuning step on the support set")
    return pct_axis(fig, "y", "test accuracy (%)", ".0%")


def transfer_memorization(heads: pd.DataFrame, oracle_iou: float, threshold: float) -> go.Figure:
    """One held-out task: each generated head's highest IoU of test errors with a training head's
    (heads: head, max_iou, best), beside the oracle's; at `threshold` a head makes a training task's errors."""
    fig = go.Figure()
    y = _jitter(len(heads), 0.3, 2)
    b = heads["best"].to_numpy()
    fig.add_trace(go.Scatter(x=heads["max_iou"], y=y, mode="markers", name="generated heads",
                             marker=dict(color=TRANSFER_COLORS["generated"], size=np.where(b, 18, 9),
                                         symbol=np.where(b, "star", "circle"), opacity=0.7,
                                         line=dict(color="#222", width=np.where(b, 1, 0))),
                             customdata=heads[["head"]],
                             hovertemplate="head %{customdata[0]}: max IoU %{x:.2f}<extra></extra>"))
    _vlines(fig, {"oracle's errors": (oracle_iou, TRANSFER_COLORS["oracle"], "solid"),
                  f"memorized (IoU ≥ {threshold:g})": (threshold, "#999", "dot")}, (-0.45, 0.45), "{:.2f}")
    fig.update_layout(height=300, **SIDE_LEGEND, yaxis=dict(visible=False, range=[-0.5, 0.5]),
                      xaxis=dict(title="highest IoU of test errors with a training task's head", range=[0, 1.02]))
    return fig


def transfer_map(pts: pd.DataFrame, selected: int, nearest: int, counts: dict[int, int],
                 axes: tuple[str, str]) -> go.Figure:
    """Tasks by embedding (pts: kind, index, task, x, y): training tasks grey, held-out ones orange,
    the selected held-out task red, joined to its nearest training task (dashed) and to the training
    tasks its generated heads sit closest to (solid, wider for more heads)."""
    fig = go.Figure()
    train = pts[pts["kind"] == "training"].set_index("index")
    held = pts[pts["kind"] == "held-out"].set_index("index")
    me = held.loc[selected]
    most = max(counts.values(), default=1)
    for i, c in sorted(counts.items()):
        t = train.loc[i]
        fig.add_trace(go.Scatter(x=[me["x"], t["x"]], y=[me["y"], t["y"]], mode="lines", showlegend=False,
                                 line=dict(color=TRANSFER_COLORS["generated"], width=1 + 7 * c / most), opacity=0.4,
                                 hovertemplate=f"{c} generated head{'s' if c != 1 else ''} closest to "
                                               f"{t['task']}<extra></extra>"))
    t = train.loc[nearest]
    fig.add_trace(go.Scatter(x=[me["x"], t["x"]], y=[me["y"], t["y"]], mode="lines", name="nearest training task",
                             line=dict(color="#1f77b4", width=2, dash="dash"), hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name="generated heads closest to (width: how many)",
                             line=dict(color=TRANSFER_COLORS["generated"], width=4), opacity=0.35))
    fig.add_trace(go.Scatter(x=train["x"], y=train["y"], mode="markers", name="training tasks",
                             marker=dict(color="#9e9e9e", size=8), customdata=train[["task"]],
                             hovertemplate="training: %{customdata[0]}<extra></extra>"))
    fig.add_trace(go.Scatter(x=held["x"], y=held["y"], mode="markers", name="held-out tasks",
                             marker=dict(color="#ff9f1c", size=10, line=dict(color="white", width=1)),
                             customdata=held[["task"]], hovertemplate="held-out: %{customdata[0]}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[me["x"]], y=[me["y"]], mode="markers+text", name="selected task",
                             marker=dict(color=TRANSFER_COLORS["generated"], size=15, symbol="diamond",
                                         line=dict(color="#222", width=1)),
                             text=[me["task"]], textposition="top center",
                             hovertemplate=f"selected: {me['task']}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[t["x"]], y=[t["y"]], mode="text", text=[t["task"]], textposition="bottom center",
                             textfont=dict(color="#1f77b4"), showlegend=False, hoverinfo="skip"))
    fig.update_layout(height=520, **LAYOUT, xaxis_title=axes[0], yaxis_title=axes[1])
    return fig
