"""Runs: every run in a table; make one active, compare two, download, delete."""
import functools
import time

import pandas as pd
import streamlit as st

from pdiff_core import jobs, runs
from studio import charts, load, shape, ui

ui.header("Runs")
rows = jobs.list_runs()
if not rows:
    st.info("No runs yet. Run the quick demo on the home page, or launch one.")
    st.page_link(ui.page("launch"), label="Launch a run", icon=":material/rocket_launch:")
    st.stop()

table = shape.runs_table(rows)
f1, f2 = st.columns([3, 2])
text = f1.text_input("Filter", key="runs_filter", placeholder="words in the run id, name, tags, preset, dataset, arch or zoo")
states = f2.multiselect("State", list(runs.STATES), key="runs_states")
shown = shape.filter_runs(table, text, states).reset_index(drop=True)
picked = ui.percent_table(
    shown, shape.RUN_ACCS, hide_index=True, on_select="rerun", selection_mode="single-row",
    # keyed by the rows shown: a selection is a row number, so a filter, a deletion or a run started in another
    # tab would otherwise make it name another run (or none: an IndexError), and every button act on that run
    key=f"runs_table-{abs(hash(tuple(shown['run'])))}", width="stretch",
    config={"run": st.column_config.TextColumn(width=200), "K": st.column_config.NumberColumn(width=45),
            "N": st.column_config.NumberColumn(width=45), "arch": st.column_config.TextColumn(width=55),
            "created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
            "duration s": st.column_config.NumberColumn(format="%.0f"), "seed": st.column_config.NumberColumn(width=45),
            "d_traj ÷ step": st.column_config.NumberColumn(format="%.1f"),
            "o-g (max)": st.column_config.NumberColumn(format="%.3f")})     # an IoU, as Similarity shows it
sel = picked.selection.rows
rid = shown.iloc[sel[0]]["run"] if sel else ui.active_run()
st.caption(f"{len(shown)} of {len(table)} runs. Click a column header to sort; select a row to act on it. Accuracies "
           "are on test; 'best' is the model chosen on validation, reported on test. gen − orig: median test "
           "accuracy, generated minus originals; ensemble gain: generated ensembles from 1 to the largest k; both "
           "with their 95 % interval, and 'no difference' when it holds 0. Replica rate: generated models closer to a "
           "checkpoint than the 5th percentile of checkpoint-to-checkpoint distances; on a trajectory or mixed zoo "
           "that threshold is one step length, so read d_traj ÷ step beside it (the distance to the checkpoint path, "
           "in step lengths; empty for an independent zoo, which has no path).")
# kept until the next deletion is asked for: a one-shot message was lost when another rerun overtook the delete's
if st.session_state.get("deleted"):
    st.success(f"Deleted `{st.session_state['deleted']}`.", icon=":material/delete:")


def delete(run_id: str):
    st.session_state.pop("deleting", None)
    try:
        jobs.delete(run_id)
    except runs.RunError as e:
        st.session_state["delete_error"] = str(e)
        return
    if st.session_state.get("active_run") == run_id:
        ui.set_active(None)
    st.session_state["deleted"] = run_id


def save_notes(run_id: str, path) -> None:
    """A callback, so the form's values are saved before the page reruns."""
    get = st.session_state.get
    runs.write_notes(path, get(f"note_name_{run_id}", ""), get(f"note_tags_{run_id}", ""), get(f"note_text_{run_id}", ""))


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
               kwargs={"deleting": rid, "deleted": None})
    if st.session_state.get("deleting") == rid:
        st.warning(f"Delete `{rid}` and all its files? This cannot be undone.", icon=":material/delete:")
        ask = st.container(horizontal=True)
        ask.button("Delete", type="primary", key="confirm_delete", on_click=delete, args=(rid,))
        ask.button("Keep it", key="keep", on_click=st.session_state.pop, args=("deleting", None))
    if st.session_state.get("delete_error"):
        st.error(st.session_state.pop("delete_error"))
    ui.run_state(rid, jobs.refresh(rid), compact=True)
    with st.expander("Name, tags and notes", icon=":material/edit_note:"):
        notes = runs.read_notes(r.path)
        with st.form(f"notes-{rid}", border=False):
            st.text_input("Name", notes.get("name", ""), key=f"note_name_{rid}")
            st.text_input("Tags (comma-separated)", ", ".join(notes.get("tags", [])), key=f"note_tags_{rid}")
            st.text_area("Notes", notes.get("notes", ""), key=f"note_text_{rid}")
            st.form_submit_button("Save", icon=":material/save:", on_click=save_notes, args=(rid, r.path))
        # read from the file, on every rerun: a one-shot message was lost when another rerun overtook the save's
        notes_file = r.path / "notes.json"
        if notes_file.exists():
            saved = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(notes_file.stat().st_mtime))
            st.caption(f":material/save: Saved {saved}, in the run directory's notes.json.")

st.divider()
st.subheader("Compare runs")
done = [row["run"] for row in rows if row.get("metrics") and row.get("config")]   # a damaged config: not comparable
pair = st.multiselect("Runs to compare (any number)", done, default=done[:2] if len(done) >= 2 else None,
                      key="compare")
refs = []
for p in pair:              # a run whose files cannot be drawn is left out with its reason; the others are compared
    try:
        r = load.ref(p)
        load.accuracy_frame(r)
        if r.has("analysis.json") and r.has("analysis.npz"):
            load.arrays(r)["generated_nn_raw_dist"], load.models(r)
        refs.append(r)
    except runs.DAMAGE as e:     # RunError is a ValueError
        st.warning(f"`{p}` is left out of the comparison: its files are damaged ({runs.damage_words(e)}).",
                   icon=":material/warning:")
if len(refs) >= 2:
    diff = load.config_diff(refs)
    if len(diff):
        st.markdown("**Options that differ**")
        st.dataframe(diff, width="stretch", column_config=ui.OPTION_COLUMN)
    else:
        st.caption("The runs share every option (only their seeds' randomness differs).")
    acc = pd.concat([load.accuracy_frame(r).query("group in ['originals', 'generated']")
                     .assign(group=lambda d, r=r: r.id + " · " + d["group"]) for r in refs])
    st.plotly_chart(charts.accuracy(acc, None, "violin"), key="cmp-acc")
    st.caption("Test accuracy on one shared axis: originals and generated models of each run.")
    analysed = [r for r in refs if r.has("analysis.json") and r.has("analysis.npz")]
    if analysed:
        c1, c2 = st.columns(2)
        with c1:
            dists = {r.id: load.arrays(r)["generated_nn_raw_dist"] for r in analysed}
            st.plotly_chart(charts.nn_hist(dists, None, "raw"), key="cmp-nn")
            st.caption("Generated models' distance to their nearest checkpoint, per run (raw L2: comparable only "
                       "between runs that generate the same layers).")
        with c2:
            plane = pd.concat([load.models(r).query("group == 'generated'").assign(group=r.id) for r in analysed])
            st.plotly_chart(charts.acc_vs_smax(plane.drop(columns=["dominated"], errors="ignore"), pd.DataFrame(),
                                               side_legend=False), key="cmp-plane")
            st.caption("Accuracy against novelty (s_max) of every run's generated models; sized by count.")
else:
    st.caption("Pick two or more finished runs.")
