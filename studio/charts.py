"""Plotly figures shared by the pages. Pure functions of data: no streamlit, no file reads."""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

# One colour per group everywhere: originals blue, generated red, each baseline family its own hue.
COLORS = {"base": "#222222", "originals": "#1f77b4", "generated": "#d62728", "random": "#7f7f7f"}
FAMILIES = {"noise": "#8c8c8c", "soup": "#6a3d9a", "average": "#9467bd", "avg": "#9467bd",
            "gauss": "#2ca02c", "interp": "#8c564b"}
LAYOUT = dict(margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0))


def color(group: str) -> str:
    if group in COLORS:
        return COLORS[group]
    for prefix, c in FAMILIES.items():
        if group.startswith(prefix):
            return c
    return qualitative.Safe[zlib.crc32(group.encode()) % len(qualitative.Safe)]


def pct_axis(fig: go.Figure, axis: str = "x", title: str = "test accuracy (%)") -> go.Figure:
    fig.update_layout(**{f"{axis}axis": dict(title=title, tickformat=".0%")})
    return fig


def accuracy(df: pd.DataFrame, base_acc: float | None, kind: str = "histogram") -> go.Figure:
    """Test-accuracy distributions per group (df: group, test_acc), overlaid; the base model as a line."""
    fig = go.Figure()
    for group, part in df.groupby("group", sort=False):
        acc = part["test_acc"].dropna()
        if kind == "violin":
            fig.add_trace(go.Violin(x=acc, name=group, orientation="h", line_color=color(group), points="all",
                                    pointpos=0, jitter=0.3, marker_size=3, box_visible=True, meanline_visible=True,
                                    hovertemplate=f"{group}<br>%{{x:.2%}}<extra></extra>"))
        else:
            fig.add_trace(go.Histogram(x=acc, name=group, marker_color=color(group), opacity=0.6,
                                       xbins=dict(size=0.005), histnorm="percent",
                                       hovertemplate=f"{group}<br>%{{x:.1%}}: %{{y:.1f}}% of models<extra></extra>"))
    if base_acc is not None:
        fig.add_vline(x=base_acc, line=dict(color=COLORS["base"], dash="dash"),
                      annotation_text=f"base model {base_acc:.1%}", annotation_position="top left")
    fig.update_layout(barmode="overlay", height=420, **LAYOUT,
                      yaxis_title="share of models (%)" if kind == "histogram" else None)
    return pct_axis(fig)


def losses(curves: dict[str, list], height: int = 260) -> go.Figure:
    """AE and DDPM training-loss curves side by side, log y (curves: {"ae": [[step, loss]...], "ddpm": ...})."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("autoencoder loss", "DDPM loss"), horizontal_spacing=0.08)
    for col, (key, c) in enumerate([("ae", "#ff7f0e"), ("ddpm", "#9467bd")], start=1):
        pts = np.asarray(curves.get(key) or [], dtype=float).reshape(-1, 2)
        fig.add_trace(go.Scatter(x=pts[:, 0], y=pts[:, 1], mode="lines", line_color=c, name=key,
                                 hovertemplate="step %{x}<br>loss %{y:.4g}<extra></extra>"), row=1, col=col)
        fig.update_xaxes(title_text="step", row=1, col=col)
        fig.update_yaxes(type="log", row=1, col=col)
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
