"""Sweeps: a grid of ordinary runs (pdiff_core/sweep.py). Start one, watch its cells, plot a headline
figure against the swept keys with 95 % intervals over seeds, and reach every cell's run."""
import time

import streamlit as st

from pdiff_core import driver, jobs, runs, sweep
from pdiff_core.config import PRESETS
from studio import charts, load, shape, ui

# A cell has its run's states, but waits as 'pending' (it has no run yet), coloured as a queued run.
CELL_COLORS = {"pending": ui.BADGE["queued"][0], **{s: ui.BADGE[s][0] for s in runs.STATES if s != "queued"}}
LANDED = tuple(s for s in runs.STATES if s not in jobs.ACTIVE)     # a cell's run is over, whichever way
TILES_PER_ROW = 4


def from_preset_sweep():
    """Picking a preset sweep fills the form with its preset, grid and seeds."""
    spec = sweep.SWEEP_PRESETS.get(st.session_state["sw_from"])
    if spec:
        st.session_state["sw_preset"] = spec["preset"]
        st.session_state["sw_grid"] = sweep.grid_text(spec["grid"])
        st.session_state["sw_seeds"] = ",".join(map(str, spec["seeds"]))


def form_values():
    """The form as create()'s arguments, or the one-line SweepError that stops it."""
    get = st.session_state.get
    lines = [ln.strip() for ln in get("sw_grid", "").splitlines() if ln.strip()]
    workers = int(get("sw_workers") or 0) or None
    return (get("sw_name", "").strip() or None, get("sw_preset"), sweep.parse_grid(lines),
            sweep.parse_seeds(get("sw_seeds", "")), get("sw_executor", "local"), workers)


def preview() -> tuple[int, str]:
    """Cell count and time estimate of the form's sweep, built in memory: nothing is written."""
    name, preset, grid, seeds, _, workers = form_values()
    cells = sweep.expand(name or "preview", preset, grid, seeds)
    if name:
        sweep.folder(name, must_exist=False)                     # checks the name's spelling
    seconds = sweep.estimate({"preset": preset, "cells": cells, "workers": workers})
    if seconds is None:
        return len(cells), f"no past runs of {preset} here, so no time estimate"
    return len(cells), f"about {shape.duration_words(seconds)}"


def launch():
    """A callback: create (every check) then start the driver; select the new sweep."""
    try:
        name, preset, grid, seeds, executor, workers = form_values()
        sw = sweep.create(name, preset, grid, seeds, executor=executor, workers=workers)
        driver.launch(sw["name"])
    except sweep.SweepError as e:
        st.session_state["sw_error"] = str(e)
        return
    st.session_state.pop("sw_error", None)
    st.query_params["sweep"] = sw["name"]


def resume(name: str):
    """A callback: the driver's resume; another tab may have resumed it first."""
    try:
        driver.launch(name)
    except sweep.SweepError as e:
        st.toast(str(e), icon=":material/info:")


BIG_SWEEP = 100   # cells above which Launch asks for a tick first
DEFAULTS = {"sw_preset": ui.DEMO_PRESET, "sw_grid": "k=10,25\nzoo=trajectory,independent", "sw_seeds": "0,1,2",
            "sw_workers": 0, "sw_name": ""}


def new_sweep(expanded: bool) -> None:
    for k, v in DEFAULTS.items():            # defaults through the state only: the preset sweep's fill may set them
        st.session_state.setdefault(k, v)
    with st.expander("New sweep", icon=":material/add:", expanded=expanded):
        a, b = st.columns(2)
        a.selectbox("Start from a preset sweep", ["(none)", *sweep.SWEEP_PRESETS], key="sw_from",
                    on_change=from_preset_sweep,
                    help="; ".join(f"{k}: {v['description']}" for k, v in sweep.SWEEP_PRESETS.items()))
        b.selectbox("Run preset", list(PRESETS), key="sw_preset")
        st.text_area("Grid: one KEY=V1,V2,... a line (any config option)", key="sw_grid", height=100)
        c, d, e, f = st.columns(4)
        c.text_input("Seeds", key="sw_seeds")
        d.selectbox("Executor", sweep.EXECUTORS, key="sw_executor",
                    help="local: worker processes here; ray: a Ray cluster (RAY_ADDRESS)")
        e.number_input("Workers (0: as many as the cores allow)", 0, 256, key="sw_workers")
        f.text_input("Name (optional)", key="sw_name", placeholder="preset and time")
        try:
            n, took = preview()
            problem = None
            st.caption(f"{n} cell{'' if n == 1 else 's'} (runs) · {took}.")
            if n > BIG_SWEEP:       # a typo in a grid (k=10,...,1000 or 50 seeds) should not start thousands of runs
                st.warning(f"{n} runs is a large sweep ({took} here); check the grid and seeds.", icon=":material/warning:")
                if not st.checkbox(f"Start all {n} runs", key=f"sw_big_ok_{n}"):    # keyed by n: a bigger grid asks again
                    problem = "confirm the large sweep"
        except sweep.SweepError as err:
            problem = str(err)
            st.error(problem, icon=":material/error:")
        if st.session_state.get("sw_error") and st.session_state["sw_error"] != problem:
            st.error(st.session_state["sw_error"], icon=":material/error:")
        st.button("Launch sweep", type="primary", icon=":material/rocket_launch:", key="sw_launch",
                  on_click=launch, disabled=problem is not None)


def pick(sweeps: list[dict]) -> dict | None:
    """The sweep in ?sweep= (so links work), else the newest; the choice goes back into the URL. A link to a
    sweep that cannot be shown (missing, or damaged: its warning is above) shows none until one is picked,
    and keeps its ?sweep=, as a link to a missing run does."""
    names = [s["name"] for s in sweeps]
    asked = st.query_params.get("sweep")
    current = asked or names[0]
    about = {s["name"]: f"{s['name']} · {s['preset']} · {s['cells']} cell{'' if s['cells'] == 1 else 's'}" for s in sweeps}
    # keyed by the current pick: a launch (which sets ?sweep=) gets a fresh widget showing the new sweep
    chosen = st.selectbox("Sweep", names, index=names.index(current) if current in names else None,
                          key=f"sw_pick-{current}", format_func=about.get, placeholder="Choose a sweep")
    if chosen is None:
        return None
    if st.query_params.get("sweep") != chosen:
        st.query_params["sweep"] = chosen
    return next(s for s in sweeps if s["name"] == chosen)


def cell_label(row, keys: list[str]) -> str:
    return " · ".join(f"{k}={row[k]}" for k in keys) + f" · seed {row['seed']}"


def cell_grid(sw: dict, state: str, landed: int) -> None:
    """One tile per cell: state (coloured), progress, message. Reruns the whole page when the sweep's
    state or the number of landed cells changes, so the results below follow the cells as they finish."""
    @st.fragment(run_every=ui.LIVE_EVERY_S)
    def tiles():
        df, keys = load.sweep_table(sw), load.sweep_keys(sw)
        if sweep.read_state(sw["name"]).get("state") != state or df["state"].isin(LANDED).sum() != landed:
            st.rerun()
        counts = df["state"].value_counts()
        st.caption(" · ".join(f"{counts.get(s, 0)} {s}" for s in CELL_COLORS if counts.get(s, 0)))
        with st.container(key="sweep_cells"):
            for start in range(0, len(df), TILES_PER_ROW):
                for col, (_, row) in zip(st.columns(TILES_PER_ROW), df.iloc[start:start + TILES_PER_ROW].iterrows()):
                    with col.container(border=True):
                        st.markdown(f"**{cell_label(row, keys)}** :{CELL_COLORS.get(row['state'], 'gray')}"
                                    f"-badge[{row['state']}]")
                        st.progress(float(row["progress"] or 0), text=str(row["message"] or " ")[:80])
    tiles()


def results(sw: dict) -> None:
    df, keys = load.sweep_table(sw), load.sweep_keys(sw)
    have = [k for k in sweep.HEADLINE if df[k].notna().any()]
    if not have:
        st.caption("No results yet: figures appear as cells finish.")
        return
    a, b, c = st.columns(3)
    metric = a.selectbox("Metric", have, format_func=lambda k: sweep.HEADLINE[k][0], key="sw_metric")
    x = b.selectbox("x", keys, key="sw_x")
    others = [k for k in keys if k != x]
    color = c.selectbox("Colour", ["(none)", *others], index=1 if others else 0, key="sw_color")
    color = None if color == "(none)" else color
    label = sweep.HEADLINE[metric][0]
    st.plotly_chart(charts.sweep_metric(shape.sweep_means(df, metric, x, color), x, color, label), key="sw_chart")
    st.caption("Mean over seeds; bars: 95 % t-interval (none with one seed). Cells without the figure are left out.")
    if df["smax_mean"].notna().any():
        st.plotly_chart(charts.sweep_plane(df, color or x), key="sw_plane")
        st.caption("Accuracy against novelty: one point per cell (hover for its run).")
    # one number of decimals per column, and a dash (not "None") where a cell has no such figure
    fmt = {k: st.column_config.NumberColumn(SHORT.get(k, k), format="%.2f" if scale == 100 else "%.3f", help=text)
           for k, (text, _, scale) in sweep.HEADLINE.items()}
    st.dataframe(df.drop(columns=["run", "progress", "message"]), hide_index=True, width="stretch", key="sw_table",
                 placeholder="–",
                 column_config={**fmt, "link": st.column_config.LinkColumn("run", display_text=r"/run\?run=(.*)")})
    st.caption("One row per cell; percentages in points. Click a run to open its record.")


# column titles of the cell table (the full wording is each column's help)
SHORT = {"gen_minus_orig": "gen − orig (pp)", "replica_rate": "replicas (%)", "traj_ratio": "d_traj ÷ step",
         "smax_mean": "mean s_max", "dominated": "dominated (%)", "ensemble_gain": "ensemble gain (pp)",
         "gen_acc_median": "gen median acc (%)"}
ui.header("Sweeps")
listed = sweep.list_sweeps()
sweeps = [s for s in listed if not s.get("damaged")]
new_sweep(expanded=not sweeps)
for s in listed:                 # a damaged sweep says why, one line, and hides none of the others
    if s.get("damaged"):
        st.warning(f"Sweep '{s['name']}' cannot be shown: {s['damaged']}", icon=":material/broken_image:")
asked = st.query_params.get("sweep")
if asked and asked not in {s["name"] for s in listed}:
    st.warning(f"No sweep '{asked}' in `{sweep.root()}`: the link names a sweep that is not there (deleted, or "
               "from another machine).", icon=":material/search_off:")
if not sweeps:
    if not listed:
        st.info("No sweeps yet. Start one above, or from the command line: "
                "`python -m pdiff_core sweep --from k-memorization`", icon=":material/grid_view:")
    st.stop()

s = pick(sweeps)
if s is None:
    st.stop()
sw, state = sweep.load(s["name"]), sweep.read_state(s["name"]).get("state")
head = st.container(horizontal=True, vertical_alignment="center")
with head:
    st.markdown(f"**`{sw['name']}`** · {sw['preset']} · {sw['executor']} · "
                f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(sw['created']))}")
    ui.badge(state or "created")
    if state == "running":
        st.button("Cancel sweep", icon=":material/stop_circle:", key="sw_cancel",
                  on_click=lambda: st.toast(sweep.cancel(sw["name"])))
    elif any(c["state"] != "done" for c in sweep.results(sw)):
        # the driver's resume: failed and cancelled cells run again, done ones are kept
        st.button("Resume", icon=":material/play_arrow:", key="sw_resume", on_click=resume, args=(sw["name"],))
if state == "running":
    cell_grid(sw, state, sum(c["state"] in LANDED for c in sweep.results(sw)))
elif state == "interrupted":
    st.warning(f"The driver stopped mid-sweep. Resume finishes it: `python -m pdiff_core sweep --resume {sw['name']}`.")
results(sw)
