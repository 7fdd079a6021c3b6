"""Streamlit pieces shared by the pages: the active run, the sidebar picker, guards, live progress."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import streamlit as st

from pdiff_core import jobs, runs
from pdiff_core.config import DIGITS_QUICK_WORDS, ConfigError, preset_config

from . import charts, load, shape

PAGES = {  # name -> (file, title, icon); app.py builds the navigation from this
    "home": ("pages/home.py", "Home", ":material/home:"),
    "launch": ("pages/launch.py", "Launch", ":material/rocket_launch:"),
    "runs": ("pages/runs.py", "Runs", ":material/table_rows:"),
    "run": ("pages/run.py", "Run", ":material/receipt_long:"),
    "sweeps": ("pages/sweeps.py", "Sweeps", ":material/grid_view:"),
    "accuracy": ("pages/accuracy.py", "Accuracy", ":material/bar_chart:"),
    "similarity": ("pages/similarity.py", "Similarity", ":material/grid_on:"),
    "parameter_space": ("pages/parameter_space.py", "Parameter space", ":material/scatter_plot:"),
    "memorization": ("pages/memorization.py", "Memorization", ":material/content_copy:"),
    "use_cases": ("pages/use_cases.py", "Use cases", ":material/construction:"),
    "transfer": ("pages/transfer.py", "Transfer", ":material/swap_horiz:"),
}
BADGE = {"queued": ("gray", ":material/schedule:"), "running": ("blue", ":material/progress_activity:"),
         "done": ("green", ":material/check_circle:"), "failed": ("red", ":material/error:"),
         "cancelled": ("orange", ":material/cancel:")}
# the demo button's run; the browser tests point it at "tiny" (the same path on smaller data: 4 s, not 20)
DEMO_PRESET = os.environ.get("PDIFF_DEMO_PRESET", "digits-quick")
# Live views redraw this often while a run is going: at 1 s the server and the browser took about half
# a core on 2-core machines, slowing the very run they watch (the demo took 24 % longer than the CLI).
LIVE_EVERY_S = 2.0
POLL_S = 0.5         # state checks are cheap (a status.json read): results appear this soon after a run ends
SECTIONS = {"Studio": ["home", "launch", "runs", "sweeps", "run"],
            "Results": ["accuracy", "similarity", "parameter_space", "memorization", "use_cases", "transfer"]}
_run = threading.local()    # per script-run thread: .routed is set by app.py just before it runs the page


def page(name: str) -> str:
    return PAGES[name][0]


def navigation():
    """The app's st.navigation (app.py's router) over PAGES, in SECTIONS."""
    pages = {name: st.Page(path, title=title, icon=icon, default=name == "home")
             for name, (path, title, icon) in PAGES.items()}
    return st.navigation({section: [pages[n] for n in names] for section, names in SECTIONS.items()})


def routed() -> None:
    """app.py's last call before nav.run(): the page about to run was reached through the router."""
    _run.routed = True


def header(title: str) -> None:
    """Every page's first call. Besides the title: a fresh server treats a pages/ folder as the old
    multipage layout until some session calls st.navigation, so a shared deep link
    (/accuracy?run=...) opened first thing would run this file without the router (app.py).
    Then declare the navigation here, which ends that mode for the server (public API:
    st.navigation), and rerun: the rerun goes through app.py, as a first visit to / would."""
    if not getattr(_run, "routed", False):
        navigation()
        st.rerun()
    _run.routed = False
    follow = st.session_state.get("follow")
    if follow and title in ("Accuracy", "Transfer") and follow == active_run():
        del st.session_state["follow"]      # the launched run's results are shown: landed (see land)
    st.title(title)
    missing = missing_run()
    if missing:
        st.warning(f"No run '{missing}' in RUNS_DIR (`{runs.runs_root()}`): the link names a run that is "
                   "not there (deleted, or from another machine).", icon=":material/search_off:")
        st.page_link(page("runs"), label="See all runs", icon=":material/table_rows:")


# ---- which run ----------------------------------------------------------------------------------

def choices() -> list[tuple[str, str]]:
    """(run id, state) of every run, newest first, with dead workers already marked failed."""
    root = runs.runs_root()
    if not root.is_dir():
        return []
    dirs = [d for d in root.iterdir() if runs.RUN_ID.match(d.name) and (d / "status.json").exists()]
    dirs.sort(key=lambda d: d.stat().st_mtime, reverse=True)
    return [(d.name, jobs.refresh(d.name).get("state", "failed")) for d in dirs]


def bare(value) -> str | None:
    """The run id in a ?run= or picker value, or None. Tolerates the "ID · state" labels that
    older versions leaked into links (run ids hold no spaces, so the id is unambiguous)."""
    rid = str(value or "").split(" · ")[0].strip()
    return rid if runs.RUN_ID.match(rid) and rid not in (".", "..") else None


def active_run() -> str | None:
    """The run the pages show: this session's pick, else the URL's ?run=, else (only when neither
    names one) the going or newest run. A named run that does not exist is no run: None, and
    missing_run() says which, so a link never silently shows another run."""
    asked = st.session_state.get("active_run") or st.query_params.get("run")
    rows = dict(choices())
    rid = bare(asked)
    if asked and rid not in rows:
        st.session_state["missing_run"] = str(asked)
        rid = None
    else:
        st.session_state.pop("missing_run", None)
        if not asked:
            rid = ([r for r, s in rows.items() if s in jobs.ACTIVE] or list(rows) or [None])[0]
    if rid != st.session_state.get("active_run") and (rid or not asked):
        st.session_state["active_run"] = rid
    return rid


def missing_run() -> str | None:
    """The run a link or this session asked for that is not in RUNS_DIR, or None."""
    active_run()
    return st.session_state.get("missing_run")


def set_active(rid: str | None) -> None:
    """Make `rid` (a bare run id, or None for none) the active run, in this session and in ?run=."""
    rid = bare(rid)
    st.session_state["active_run"] = rid
    st.session_state.pop("missing_run", None)
    if rid:
        st.query_params["run"] = rid
    elif "run" in st.query_params:
        del st.query_params["run"]


def sync_url() -> None:
    """Keep ?run= in the URL (page switches drop query params), so a reload or a shared link keeps it.
    Only ever a bare id of an existing run; a link to a missing run keeps its ?run= as it was."""
    rid = active_run()
    if rid and st.query_params.get("run") != rid:
        st.query_params["run"] = rid


def sidebar() -> None:
    rows = choices()
    with st.sidebar:
        if not rows:
            st.caption("No runs yet.")
            return
        ids, states = [r for r, _ in rows], dict(rows)
        current = active_run()
        # The value is the bare id; only the label carries the state. Streamlit keeps a selectbox's
        # value as its label and hands back a label that no longer matches any option as a plain
        # string ("ID · queued" once the run is running), so the key changes with every label:
        # a fresh widget whenever the active run or any state changes.
        key = f"picker-{abs(hash((current, tuple(rows))))}"
        st.selectbox("Active run", ids, index=ids.index(current) if current in ids else None, key=key,
                     format_func=lambda r: f"{r} · {states.get(r, '?')}", placeholder="Pick a run",
                     on_change=lambda: set_active(bare(st.session_state[key])))
        if current:
            badge(states.get(current, "failed"))


def badge(state: str) -> None:
    c, icon = BADGE.get(state, ("gray", None))
    st.badge(state, color=c, icon=icon)


# ---- guards: a page without its run or results says why and stops -------------------------------

def need_run() -> str:
    """The active run's id; otherwise explain why there is none and stop the page."""
    rid = active_run()
    if rid is None and missing_run():
        st.stop()                        # header() said which run is missing, with the runs list
    if rid is None:
        st.info("No runs yet. Start with the quick demo on the home page, or launch a run.")
        st.page_link(page("home"), label="Home: run the quick demo", icon=":material/home:")
        st.stop()
    return rid


def need_results() -> load.RunRef:
    """The active run's RunRef once it has metrics.json; otherwise explain why not and stop the page."""
    rid = need_run()
    status = jobs.refresh(rid)
    r = load.ref(rid)
    if load.is_transfer(r):             # a task-family run has no metrics.json: its results are elsewhere
        st.info("This is a transfer run: its results are on the Transfer page", icon=":material/swap_horiz:")
        st.page_link(page("transfer"), label="Transfer", icon=":material/swap_horiz:")
        st.stop()
    if not r.has("metrics.json"):
        run_state(rid, status)
        st.stop()
    if status.get("state") != "done":   # e.g. evaluated, but the analysis stage failed or is still going
        run_state(rid, status, compact=True)
    return r


def damaged_page(e: Exception) -> str:
    """One line for a page that could not read the active run's files (app.py's last resort)."""
    what = runs.damage_words(e)
    try:
        rid = active_run()
    except Exception:           # the run list itself is what failed: no run to name
        rid = None
    if not rid:
        return f"This page failed ({what}); the server's log has the details."
    return (f"This page could not read run `{rid}` ({what}): its files are damaged or were not written by this "
            f"version. `python -m pdiff_core analyze {rid}` rebuilds its analysis; if the page still fails, "
            "delete the run and run it again.")


def need_analysis(r: load.RunRef) -> None:
    if not (r.has("analysis.json") and r.has("analysis.npz")):
        st.info(f"Analysis not computed yet: run `python -m pdiff_core analyze {r.id}`")
        st.stop()


def run_state(rid: str, status: dict, compact: bool = False) -> None:
    """A run's state in words: progress while going, the error when failed, a note when cancelled."""
    state, msg = status.get("state", "failed"), status.get("message") or ""
    if state in jobs.ACTIVE:
        st.info(f"Run `{rid}` is {state}: {status.get('stage', '')}, {100 * (status.get('progress') or 0):.0f} %. "
                f"Results appear here when it is done.", icon=":material/progress_activity:")
        if not compact:
            st.page_link(page("run"), label="Watch it live", icon=":material/monitoring:")
        rerun_on_change(rid, state)
    elif state == "failed":
        st.error(f"Run `{rid}` failed: {status.get('error') or msg}", icon=":material/error:")
    elif state == "cancelled":
        st.warning(f"Run `{rid}` was cancelled ({msg}).", icon=":material/cancel:")
    elif state == "done" and (lost := missing_result(r := load.ref(rid))):
        # finished, then a result file went missing: a results page would be blank
        st.error(f"Run `{rid}` is done but its {lost} is missing: the run directory is damaged; "
                 f"{runs.remedy_for(r.path / lost)}", icon=":material/error:")
    if state in ("failed", "cancelled") and not compact:
        tail = load.log_tail(rid)
        if tail:
            st.code(tail, language=None)


def missing_result(r: load.RunRef) -> str | None:
    """The first result file a finished run lacks (metrics.json; a transfer run's transfer.npz and .json)."""
    files = ("transfer.npz", "transfer.json") if load.is_transfer(r) else ("metrics.json",)
    return next((f for f in files if not r.has(f)), None)


def rerun_on_change(rid: str, state: str, every: float = POLL_S) -> None:
    """While `rid` is queued or running, check its state every `every` s and rerun the whole page
    when it changes, so a page showing a going run follows it (results appear when it is done)."""
    @st.fragment(run_every=every)
    def poll():
        if jobs.refresh(rid).get("state", "failed") != state:
            st.rerun()
    if state in jobs.ACTIVE:
        poll()


PCT = st.column_config.NumberColumn(format="%.2f %%")
OPTION_COLUMN = {"_index": st.column_config.TextColumn(width="medium")}   # option names in full


def percent_table(df, pct: list[str], config: dict | None = None, **kwargs):
    """st.dataframe with the `pct` columns (fractions) shown as percentages with two decimals."""
    shown = df.assign(**{c: df[c] * 100 for c in pct})
    return st.dataframe(shown, column_config={**{c: PCT for c in pct}, **(config or {})}, **kwargs)


def summary_table(r: load.RunRef, columns: list[str] | None = None) -> None:
    df = load.summary_table(r)
    df = df[columns] if columns else df
    percent_table(df, [c for c in df if c != "n"], width="stretch", height=35 * len(df) + 38)


def reference_note(m: dict) -> None:
    """The base model beside the logistic-regression reference (same splits), then the run's warnings."""
    ref = m.get("reference")
    if ref:
        base = m["base"]
        st.caption(f"Base model: test {100 * base['test_acc']:.1f} % (val {100 * base['val_acc']:.1f} %). "
                   f"Reference, {ref['method']}: test {100 * ref['test_acc']:.1f} % (val {100 * ref['val_acc']:.1f} %).")
    zoo = m.get("zoo")
    if zoo and zoo.get("lr_halvings"):
        st.caption(f"Checkpoint collection diverged at collect_lr {zoo['lr_requested']:g} and ran at {zoo['lr']:g}.")
    show_warnings(m)


def show_warnings(m: dict) -> None:
    """The run's warnings (metrics.json), on every page that reads its results: a broken run's figures mean
    nothing anywhere (Memorization carries them in its verdict)."""
    for w in runs.warnings_of(m):
        st.warning(w, icon=":material/warning:")


# ---- launching and watching ---------------------------------------------------------------------

def start_run(cfg) -> str:
    rid = jobs.start(cfg)
    set_active(rid)
    st.session_state["follow"] = rid      # land on the results when this one finishes
    return rid


def demo_label() -> str:
    """The demo button's promise: the median of this machine's finished demo runs, else the benchmark's range."""
    est = runs.estimate(DEMO_PRESET)
    seconds = f"{est[0]:.0f}" if est else DIGITS_QUICK_WORDS
    return f"Run the quick demo (digits, about {seconds} s)"


def estimate_note(preset: str, device: str = "auto") -> str:
    """The launch form's time estimate for a preset, in words."""
    est = runs.estimate(preset, device)
    if est is None:
        return "No past runs of this preset here yet, so no time estimate."
    seconds, n = est
    return f"About {shape.duration_words(seconds)} (median of {n} past run{'s' if n != 1 else ''} of this preset here)."


def quick_demo_button() -> None:
    st.button(demo_label(), type="primary", icon=":material/play_arrow:", on_click=_start_demo)
    jobs.standby()      # a worker does its imports while the user reads: the click then skips them
    if error := st.session_state.pop("demo_error", None):
        st.error(error, icon=":material/error:")


def _start_demo() -> None:
    """The demo button's callback (a callback, as every button here: the router's rerun loses return values)."""
    try:
        cfg = preset_config(DEMO_PRESET)
    except ConfigError as e:                  # PDIFF_DEMO_PRESET names no preset
        st.session_state["demo_error"] = f"PDIFF_DEMO_PRESET: {e}"
        return
    start_run(cfg)


def watch() -> None:
    """Live progress of the runs that are going (the active one in full), or the active run's final state."""
    if any(s in jobs.ACTIVE for _, s in choices()):
        _follow()
        _live()
        return
    st.session_state["_going"] = None
    land()      # the launched run is done: here, in the full run, never from the polling fragment
    rid = active_run()
    if rid:
        status = jobs.refresh(rid)
        if status.get("state") == "done":
            st.success(f"Run `{rid}` is done.", icon=":material/check_circle:")
            st.page_link(page("accuracy"), label="See its results", icon=":material/bar_chart:")
        else:
            run_state(rid, status)


@st.fragment(run_every=POLL_S)
def _follow() -> None:
    """Draws nothing: notices a run starting, finishing or changing state within POLL_S, then redraws
    the whole page; that full run lands on the results of the run this session launched (watch). Never
    switch pages from here: a switch asked from a fragment sometimes showed the results page blank (its
    title drawn, then the main area emptied; 3 of 70 demo tries in a browser)."""
    rows = [(r, s) for r, s in choices() if s in jobs.ACTIVE]
    before = st.session_state.get("_going")
    st.session_state["_going"] = rows
    if before is not None and before != rows:
        st.rerun()


def land() -> None:
    """The run this session launched, once done: make it active and switch to its results. `follow` is
    cleared on arrival (header), not here: should the switch be overtaken by the browser's next rerun of
    this page, that rerun asks again (the demo once stayed on Home for good)."""
    follow = st.session_state.get("follow")
    if follow and jobs.refresh(follow).get("state") == "done":
        set_active(follow)
        drop_fragments()
        st.switch_page(page("transfer" if load.is_transfer(load.ref(follow)) else "accuracy"))


def drop_fragments() -> None:
    """Forget this session's fragments, just before a switch of page. A timer of the page being left (_follow,
    _live) may have sent a rerun of its fragment already; Streamlit queues it behind the switch, then runs it under
    the old page's id, and the browser clears the new page for it: the results drawn, then the main area empty
    (once in CI; with POLL_S at 0.05 s, 13 of 23 demos before this, 0 of 29 after: bench/landing.py). A rerun
    of a fragment the session no longer holds is dropped (AppSession.has_fragment). A full run forgets them too,
    but only once it ends: the switch ends this one early. The storage is not public API; without it nothing is
    dropped, as before."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx
    storage = getattr(get_script_run_ctx(), "fragment_storage", None)
    if storage is not None:
        storage.clear()


@st.fragment(run_every=LIVE_EVERY_S)
def _live() -> None:
    going = [r for r, s in choices() if s in jobs.ACTIVE]
    focus = active_run()
    if focus in going:
        progress(focus, jobs.refresh(focus))
    others = [r for r in going if r != focus]
    if others:
        st.caption("Also going:")
        for rid in others:
            s = jobs.refresh(rid)
            a, b = st.columns([4, 1], vertical_alignment="center")
            a.progress(float(s.get("progress") or 0), text=f"`{rid}` · {s.get('stage', '')} · {s.get('message', '')}")
            b.button("Watch", key=f"watch-{rid}", on_click=set_active, args=(rid,))


def progress(rid: str, status: dict) -> None:
    """Progress bar, stage, loss curves, log tail and a Cancel button for one going run."""
    elapsed = time.time() - (status.get("started") or status.get("queued") or time.time())
    head, btn = st.columns([5, 1], vertical_alignment="center")
    head.markdown(f"**`{rid}`** · {status.get('state')} · {elapsed:.0f} s")
    if btn.button("Cancel", key=f"cancel-{rid}", icon=":material/stop_circle:"):
        jobs.cancel(rid)
        st.toast(f"Cancelling {rid}: it stops at its next progress report.")
    st.progress(float(status.get("progress") or 0),
                text=f"**{status.get('stage', '')}**: {status.get('message', '')}")
    curves = status.get("losses") or {}
    if any(curves.values()):
        st.plotly_chart(charts.losses(curves), key=f"losses-{rid}", config={"displayModeBar": False})
    st.code(load.log_tail(rid, 8) or "(no log yet)", language=None)


# ---- widgets and callbacks the result pages share -----------------------------------------------

def compute_umap(run_dir: Path) -> None:
    """Button callback: the run's UMAP map (pdiff_core.analysis.add_umap); a failure is shown once."""
    from pdiff_core.analysis import add_umap
    with st.spinner("UMAP of the parameter points (numba compiles it the first time)..."):
        try:
            status = add_umap(run_dir)
        except runs.RunError as e:
            status = str(e)
    if status != "ok":
        st.session_state["umap_error"] = f"UMAP {status}"


def numbers(items: list[tuple], fmt: str = "{:.3f}") -> None:
    """A row of st.metric cards: (label, value, help[, format]); a format is a str.format pattern or a function
    (words.pct for shares)."""
    for col, (label, value, help_, *own) in zip(st.columns(len(items)), items):
        f = own[0] if own else fmt
        shown = "-" if value is None or value != value else f(value) if callable(f) else f.format(value)
        col.metric(label, shown, help=help_, border=True)


def selected_rows(event) -> list[int]:
    """Rows (the charts' customdata) of the points picked in an st.plotly_chart selection."""
    rows = set()
    for p in event.selection.points:
        c = p.get("customdata")
        c = next(iter(c.values())) if isinstance(c, dict) else c[0] if isinstance(c, list) else c
        if c is not None:
            rows.add(int(c))
    return sorted(rows)


def model_table(df, key: str | None = None, select: bool = False, group: bool = True):
    """Models with their nearest original: the shared table of the parameter-space and memorization pages."""
    cols = {"label": "model", "group": "group", "test_acc": "test acc", "nn_idx": "nearest original",
            "nn_dist": "distance (raw L2)", "nn_norm_dist": "distance (normalized)", "smax": "s_max",
            "smax_idx": "most similar original", "agree": "agreement", "dominated": "dominated"}
    cols = {k: v for k, v in cols.items() if k in df and (group or k != "group")}
    num = st.column_config.NumberColumn(format="%.3f")     # one format for every distance and s_max
    config = {"s_max": num, "distance (raw L2)": num, "distance (normalized)": num,
              "model": st.column_config.TextColumn(width="medium")}
    shown = df[list(cols)].rename(columns=cols)
    return percent_table(shown, [c for c in ("test acc", "agreement") if c in shown], config, hide_index=True,
                         key=key, on_select="rerun" if select else "ignore", selection_mode="single-row",
                         width="stretch")
