"""Accuracy: test-accuracy distributions per group, overlaid and toggleable, with the base model marked."""
import streamlit as st

from pdiff_core.words import compared
from studio import charts, figures, load, ui

ui.header("Accuracy")
r = ui.need_results()
df, m = load.accuracy_frame(r), load.metrics(r)
groups = list(dict.fromkeys(df["group"]))
kind = st.segmented_control("Chart", ["histogram", "violin"], default="histogram", key="acc_kind") or "histogram"
shown = st.pills("Groups", groups, selection_mode="multi", default=[g for g in groups if g in figures.ACC_SHOWN],
                 key="acc_groups", help="Baseline groups join in when picked; one-model groups are drawn as lines")
st.plotly_chart(charts.accuracy(df[df["group"].isin(shown)], m["base"]["test_acc"], kind, 1 / m["n_test"]),
                key="acc_chart")
st.caption(f"{m['dataset']} · {m['arch']} · layers {m['layers']} · D={m['D']} · K={m['K']} · N={m['N']} · "
           f"{m['n_test']} test examples. Click legend entries to hide or show a group.")
if nonfinite := figures.nonfinite_warning(m):
    st.warning(nonfinite)
ui.reference_note(m)
ui.summary_table(r)
st.caption("'best (by val)' is the model chosen on the validation split, reported on test.")
if r.has("analysis.json"):
    d = (load.analysis(r).get("accuracy") or {}).get("median_difference")
    if d:
        st.markdown(compared(d, "Median test accuracy, generated minus originals"))
        st.caption("The interval is a 95 % bootstrap over test examples; a difference whose interval holds 0 is "
                   "no difference, whatever its sign.")
