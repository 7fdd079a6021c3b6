"""Runs: every run in a table; make one active, compare two, download, delete."""
import functools

import streamlit as st

from pdiff_core import jobs, runs
from studio import charts, load, ui

ui.header("Runs")
rows = jobs.list_runs()
if not rows:
    st.info("No runs yet. Run the quick demo on the home page, or launch one.")
    st.page_link(ui.page("launch"), label="Launch a run", icon=":material/rocket_launch:")
    st.stop()

table = load.runs_table(rows)
picked = ui.percent_table(
    table, ["orig best", "orig median", "gen best", "gen median"], hide_index=True, on_select="rerun",
    selection_mode="single-row", key="runs_table", width="stretch",
    config={"run": st.column_config.TextColumn(width=220), "K": st.column_config.NumberColumn(width=45),
            "N": st.column_config.NumberColumn(width=45), "arch": st.column_config.TextColumn(width=55)})
sel = picked.selection.rows
rid = table.iloc[sel[0]]["run"] if sel else ui.active_run()
st.caption("Select a row to act on it. Accuracies are on test; 'best' is the model chosen on validation, "
           "reported on test.")


def delete(run_id: str):
    st.session_state.pop("deleting", None)
    try:
        jobs.delete(run_id)
    except runs.RunError as e:
        st.session_state["delete_error"] = str(e)
        return
    if st.session_state.get("active_run") == run_id:
        ui.set_active(None)


if rid:
    r = load.ref(rid)
    st.subheader(f"`{rid}`")
    row = st.container(horizontal=True)
    row.button("Make active", icon=":material/check:", on_click=ui.set_active, args=(rid,),
               disabled=rid == ui.active_run())
    row.download_button("Generated params (.safetensors)", functools.partial((r.path / "generated.safetensors").read_bytes),
                            file_name=f"{rid}-generated.safetensors", mime="application/octet-stream",
                            disabled=not r.has("generated.safetensors"), icon=":material/download:")
    row.download_button("Metrics (.csv)", load.metrics_csv(r) if r.has("metrics.json") else b"",
                            file_name=f"{rid}-metrics.csv", mime="text/csv", disabled=not r.has("metrics.json"),
                            icon=":material/download:")
    row.button("Delete…", icon=":material/delete:", key="delete", on_click=st.session_state.update,
               kwargs={"deleting": rid})
    if st.session_state.get("deleting") == rid:
        st.warning(f"Delete `{rid}` and all its files? This cannot be undone.", icon=":material/delete:")
        ask = st.container(horizontal=True)
        ask.button("Delete", type="primary", key="confirm_delete", on_click=delete, args=(rid,))
        ask.button("Keep it", key="keep", on_click=st.session_state.pop, args=("deleting", None))
    if st.session_state.get("delete_error"):
        st.error(st.session_state.pop("delete_error"))
    ui.run_state(rid, jobs.refresh(rid), compact=True)

st.divider()
st.subheader("Compare two runs")
done = [row["run"] for row in rows if row.get("metrics")]
pair = st.multiselect("Runs to compare", done, default=done[:2] if len(done) >= 2 else None, max_selections=2,
                      key="compare")
if len(pair) == 2:
    refs = [load.ref(p) for p in pair]
    diff = load.config_diff(*refs)
    if diff is not None and len(diff):
        st.dataframe(diff, width="stretch")
    for col, r in zip(st.columns(2), refs):
        with col:
            st.markdown(f"**`{r.id}`**")
            df = load.accuracy_frame(r)
            st.plotly_chart(charts.accuracy(df[df["group"].isin(["originals", "generated"])],
                                            load.metrics(r)["base"]["test_acc"], "violin"), key=f"cmp-{r.id}")
            ui.summary_table(r, ["n", "best (by val)", "median", "std"])
else:
    st.caption("Pick two finished runs.")
