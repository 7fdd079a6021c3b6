"""Run: the complete record of one run, finished or not: state or error, AE and DDPM loss curves,
warnings, stage timings, the full configuration and the whole log. Live while the run is going."""
import streamlit as st

from pdiff_core import jobs, runs
from studio import charts, load, shape, ui


def record(rid: str, status: dict) -> None:
    state = status.get("state", "failed")
    r = load.ref(rid)
    if state in jobs.ACTIVE:
        ui.progress(rid, status)                      # bar, stage, loss curves, log tail, Cancel
    else:
        head = st.container(horizontal=True, vertical_alignment="center")
        with head:
            st.markdown(f"**`{rid}`**")
            ui.badge(state)
        if state == "done":
            st.success(f"Run `{rid}` is done.", icon=":material/check_circle:")
            st.page_link(ui.page("accuracy"), label="See its results", icon=":material/bar_chart:")
        else:
            ui.run_state(rid, status, compact=True)
        st.subheader("Training losses")
        curves = status.get("losses") or {}
        if any(curves.values()):
            st.plotly_chart(charts.losses(curves), key=f"record-losses-{rid}")
        else:
            st.caption("No loss recorded: the run stopped before the autoencoder trained.")
    warnings = list(dict.fromkeys([*runs.warnings_of(status),
                                   *(runs.warnings_of(load.metrics(r)) if r.has("metrics.json") else [])]))
    if warnings:
        st.subheader("Warnings")
        for w in warnings:
            st.warning(w, icon=":material/warning:")
    timings = shape.timings_table(status)
    if len(timings):
        st.subheader("Stage timings")
        st.dataframe(timings, hide_index=True, width="stretch", height=35 * len(timings) + 38,
                     column_config={"stage": st.column_config.TextColumn(width="medium"),
                                    "seconds": st.column_config.TextColumn(width="small"),
                                    "note": st.column_config.TextColumn(width="large")})
    st.subheader("Configuration")
    if r.has("config.json"):
        st.dataframe(load.config_table(r), width="stretch", height=35 * len(load.config(r)) + 38,
                     column_config=ui.OPTION_COLUMN)
    else:
        st.caption("No config.json.")
    text = load.log_text(rid)
    with st.expander(f"Log ({text.count(chr(10))} lines)", expanded=True):
        st.code(text or "(no log yet)", language=None)


@st.fragment(run_every=ui.LIVE_EVERY_S)
def record_live(rid: str) -> None:
    record(rid, jobs.refresh(rid))


ui.header("Run")
rid = ui.need_run()
status = jobs.refresh(rid)
state = status.get("state", "failed")
if state in jobs.ACTIVE:
    ui.rerun_on_change(rid, state)                  # finished, failed or started: redraw the page
    record_live(rid)
else:
    record(rid, status)
