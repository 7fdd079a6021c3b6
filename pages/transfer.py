"""Transfer: does a task-conditioned generator give a good head for a task it never saw, against
what a user would do without it (nearest task's head, average head, k-shot linear probe, fine-tuning)?"""
import streamlit as st

from pdiff_core import jobs
from studio import charts, load, shape, ui

ui.header("Transfer")
rid = ui.need_run()
r = load.ref(rid)
if not load.is_transfer(r):
    st.info("Transfer needs a run of a task family: launch digits-tasks", icon=":material/swap_horiz:")
    st.page_link(ui.page("launch"), label="Launch", icon=":material/rocket_launch:")
    st.stop()
status = jobs.refresh(rid)
if not (r.has("transfer.json") and r.has("transfer.npz")):
    ui.run_state(rid, status)
    st.stop()
if status.get("state") != "done":
    ui.run_state(rid, status, compact=True)
t = load.transfer(r)
names = t["heldout_tasks"]

# ---- the answer, then the evidence ----
st.info(t["verdict"], icon=":material/gavel:")     # it says so when there are too few tasks for 95 %
methods, comps, wins = shape.transfer_evidence(t)
if wins:
    st.markdown(f"**{wins}**")
left, right = st.columns(2)
with left:
    st.markdown(f"Zero-shot test accuracy, median over {len(names)} held-out tasks:\n\n"
                + "\n".join(f"- {line}" for line in methods))
with right:
    st.markdown("Generated head chosen on the support set, per-task difference:\n\n"
                + "\n".join(f"- {line}" for line in comps))
st.caption(f"{t['dataset']} · {len(t['train_tasks'])} training tasks, {len(names)} held-out · {t['shots']}-shot "
           f"support sets · {t['generated_per_task']} generated heads per task · {t['n_test']} test examples "
           f"(one is {100 * t['resolution']:.2f} pp). Intervals: for the median over held-out tasks, from their order "
           "statistics (distribution-free, at least 95 %; fewer than 6 tasks reach no 95 % interval, and then no "
           "difference is claimed); a difference whose interval holds 0 is no difference, whatever its sign.")

# ---- every held-out task ----
st.subheader("All held-out tasks")
st.plotly_chart(charts.transfer_methods(load.transfer_zero_shot(r), shape.transfer_summary(t)), key="tr_methods")
st.caption("One point per held-out task; the diamond is the median over tasks with its interval (95 %, or "
           "the range when there are too few tasks for 95 %: hover to see its level).")
table = shape.transfer_tasks_table(t)
acc_cols = [c for c in table.columns[2:] if not c.startswith("steps")]
steps = st.column_config.NumberColumn(format="%d", help="fine-tuning steps on the support set until within one "
                                                         "test example of the oracle; – never within the steps run")
ui.percent_table(table, acc_cols, {**{c: st.column_config.NumberColumn(format="%.1f %%") for c in acc_cols},
                                   **{c: steps for c in table.columns if c.startswith("steps")},
                                   "task": st.column_config.TextColumn(pinned=True)},
                 hide_index=True, width="stretch", placeholder="–", key="tr_table")

# ---- one held-out task ----
st.subheader("One held-out task")
asked = st.query_params.get("task")
if st.session_state.get("tr_task") not in names:
    st.session_state["tr_task"] = asked if asked in names else names[0]
task = st.selectbox("Held-out task", names, key="tr_task")
if st.query_params.get("task") != task:
    st.query_params["task"] = task
j = names.index(task)
h = t["heldout"][j]
heads, baselines, finetune, oracle_iou = load.transfer_task(r, j)
labels = {m: shape.transfer_label(m) for m in baselines}
best = heads[heads["best"]].iloc[0]
st.markdown(f"Nearest training task by embedding: **{h['nearest_training_task']}**. The generated head chosen on "
            f"the support set scores **{shape.pct(best['acc'])}** ({int(best['support_correct'])} of "
            f"{2 * t['shots']} support examples right); the oracle **{shape.pct(baselines.get('oracle'))}**.")
a, b = st.columns(2)
with a:
    st.markdown("**Generated heads against the baselines**")
    st.plotly_chart(charts.transfer_heads(heads, baselines, labels), key="tr_heads")
with b:
    st.markdown("**Fine-tuning on the support set**")
    st.plotly_chart(charts.transfer_finetune(finetune, baselines["oracle"]), key="tr_finetune")
mem = t["memorization"]
st.markdown("**Memorization: do generated heads make a training task's errors?**")
st.plotly_chart(charts.transfer_memorization(heads, oracle_iou, mem["threshold"]), key="tr_memo")
st.caption(f"Over all held-out tasks, {shape.pct(mem['share_generated_matching_a_training_head'])} of generated "
           f"heads reach IoU ≥ {mem['threshold']:g} with a training head (median highest IoU "
           f"{mem['median_max_iou']:.2f}; the oracles' {mem['oracle_median_max_iou']:.2f}).")

# ---- the map ----
st.subheader("Tasks by embedding")
pts, ratio = load.transfer_map(r)
nearest, counts = shape.transfer_links(load.transfer_arrays(r), j)
st.plotly_chart(charts.transfer_map(pts, j, nearest, counts, shape.axes_with_variance("PC", ratio)), key="tr_map")
st.caption("PCA fit on the training tasks' embeddings (per-class mean trunk features of a support set, averaged "
           "over support draws), applied to the held-out tasks. Red lines: the training tasks whose heads the "
           "selected task's generated heads sit closest to in parameter space, wider for more heads.")

# ---- a task of your own: a few labelled examples in, generated heads out (no gradient step) ----
st.subheader("Your own task")
st.caption("Upload an .npz with X (rows in the dataset's raw units, e.g. digits pixels 0 to 16) and y (1 for your "
           "class, 0 for the rest). Its embedding comes from this run's trunk, as for the held-out tasks; the "
           "generator then samples heads for it. The accuracy shown is on your own examples (the support set).")
up = st.file_uploader("Task file (.npz)", type=["npz"], key="transfer_task")
if up is not None:
    import io
    from pdiff_core.newtask import NewTaskError, accuracy_words, read_task_file
    try:
        x, y = read_task_file(io.BytesIO(up.getvalue()), up.name)
        with st.spinner("embedding the task and sampling heads"):
            out = load.new_task_heads(r, up.getvalue(), x, y)
    except NewTaskError as e:
        st.error(str(e), icon=":material/error:")
    else:
        acc = out["accuracy_on_examples"]
        st.markdown(f"{len(acc)} heads for your task ({len(y)} examples, {int(y.sum())} positive). Nearest training "
                    f"task by embedding: **{out['nearest_training_task']}**. Accuracy on your examples: "
                    f"{accuracy_words(acc)}.")
        st.download_button("Generated heads (.safetensors)", out["file"], file_name=f"{rid}-heads.safetensors",
                           mime="application/octet-stream", icon=":material/download:")
