"""Memorization: are generated models new solutions, or near-copies of checkpoints (or of their average)?"""
import streamlit as st

from pdiff_core.words import ZOO_MEANING, pct, trajectory_figures, zoo_kind
from studio import figures, load, shape, ui

ui.header("Memorization")
r = ui.need_results()
ui.need_analysis(r)
an, a, m = load.analysis(r), load.arrays(r), load.models(r)
mem = an["memorization"]
st.info(an["verdict"], icon=":material/gavel:")
ui.numbers([("replica rate", mem["replica_rate"], "share of generated models closer to a checkpoint than the 5th "
                                                  "percentile of checkpoint-to-checkpoint nearest distances"),
            ("within train median", mem["within_train_median"], "share of generated models closer to a checkpoint "
                                                                "than the checkpoints' own median neighbour distance"),
            ("dominated by a baseline", mem["dominated_share"], "share of generated models for which some baseline "
                                                                "model is at least as accurate and at least as novel"),
            ("mean s_max", mem["groups"]["generated"].get("smax_mean"), "mean highest IoU with any original",
             "{:.3f}")],
           fmt=pct)
zoo, traj = zoo_kind(mem), trajectory_figures(mem)
if traj:
    ui.numbers([("on the training path", traj["on_path_rate"], "share of generated models no farther from the path "
                 "between consecutive checkpoints than the 5th percentile of the path's own wiggle (each "
                 "checkpoint's distance to its neighbours' chord)", pct),
                ("distance to path / step", traj["ratio_to_step"], "median distance to the nearest segment between "
                 "consecutive checkpoints, in mean step lengths", "{:.2f}×")])
st.caption(f"Zoo: **{zoo}**. {ZOO_MEANING.get(zoo, '')}")

st.subheader("Distance to the nearest checkpoint")
c1, c2 = st.columns([1, 3])
space = c1.segmented_control("Space", list(figures.DISTANCES), default="raw", key="mem_space",
                             format_func=figures.DISTANCES.get) or "raw"
baselines = an.get("baseline_groups", [])
extra = c2.multiselect("Add baselines", baselines, default=[], key="mem_extra")
fig, caption = figures.nn_hist(a, mem, space, extra)
st.plotly_chart(fig, key="mem_hist")
st.caption(caption)

st.subheader("Accuracy against novelty")
fig, caption = load.pareto_figure(r)
st.plotly_chart(fig, key="mem_pareto")
st.caption(f"{caption} Click legend entries to hide groups.")

st.subheader("Generated models")
gen = m[m["group"] == "generated"].reset_index(drop=True)
# keyed by run: a selected row kept across a switch of the active run named a row of another run (or none)
picked = ui.model_table(gen, key=f"mem_table_{r.id}", select=True, group=False)
st.caption("Sort by clicking a column header; select a row to compare its parameters with its nearest checkpoint.")
sel = picked.selection.rows
i = sel[0] if sel else shape.closest_pair(gen)
pair = figures.pair(gen, i)
if pair:
    g, o = pair
    st.markdown(f"**{gen.at[i, 'label']}** against its nearest checkpoint **original #{o}** "
                f"(raw L2 {gen.at[i, 'nn_dist']:.4g})" + ("" if sel else " — the closest pair; select a row for another"))
    st.plotly_chart(load.pair_figure(r, g, o), key="mem_pair")

st.divider()
st.download_button("Download report (HTML)", data=lambda: load.report_html(r), file_name=f"pdiff-report-{r.id}.html",
                   mime="text/html", on_click="ignore", icon=":material/download:",
                   help="One self-contained file for collaborators: the verdict, warnings, every chart of the result "
                        "pages (interactive) and the config; it opens offline, without the app.")
