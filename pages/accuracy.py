"""Accuracy: test-accuracy distributions per group, overlaid and toggleable, with the base model marked."""
import streamlit as st

from studio import charts, load, ui

DEFAULT = ("originals", "generated", "average")
ui.header("Accuracy")
r = ui.need_results()
df, m = load.accuracy_frame(r), load.metrics(r)
groups = list(dict.fromkeys(df["group"]))
kind = st.segmented_control("Chart", ["histogram", "violin"], default="histogram", key="acc_kind") or "histogram"
shown = st.pills("Groups", groups, selection_mode="multi", default=[g for g in groups if g in DEFAULT],
                 key="acc_groups", help="Baseline groups join in when picked; one-model groups are drawn as lines")
st.plotly_chart(charts.accuracy(df[df["group"].isin(shown)], m["base"]["test_acc"], kind, 1 / m["n_test"]),
                key="acc_chart")
st.caption(f"{m['dataset']} · {m['arch']} · layers {m['layers']} · D={m['D']} · K={m['K']} · N={m['N']} · "
           f"{m['n_test']} test examples. Click legend entries to hide or show a group.")
if m.get("generated_nonfinite"):
    st.warning(f"{m['generated_nonfinite']} generated parameter vectors were not finite and were not evaluated.")
ui.summary_table(r)
st.caption("'best (by val)' is the model chosen on the validation split, reported on test.")
