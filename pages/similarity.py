"""Similarity: do generated models make the same mistakes as the checkpoints? IoU of error sets."""
import streamlit as st

from studio import charts, figures, load, shape, ui

ui.header("Similarity")
r = ui.need_results()
ui.need_analysis(r)
ui.show_warnings(load.metrics(r))
sim, a = load.analysis(r)["similarity"], load.arrays(r)
ui.numbers([("o-o", sim["oo"], "mean IoU between two different originals"),
            ("g-g", sim["gg"], "mean IoU between two different generated models"),
            ("o-g", sim["og"], "mean IoU over all original × generated pairs"),
            ("o-g (max)", sim["og_max"], "mean over generated models of the IoU with their most similar original")],
           fmt="{:.3f}")
st.caption(f"{figures.IOU_MEANING} o-g (max) close to 1 means each generated model has an original that errs "
           "exactly like it.")

order = st.segmented_control("Order", ["group", "accuracy", "clustered"], default="group", key="sim_order",
                             help="group: originals then generated, by index; accuracy: best first within each "
                                  "group; clustered: similar models next to each other, groups mixed") or "group"
iou, labels, blocks = load.iou_view(r, order)
st.plotly_chart(charts.iou_heatmap(iou, labels, blocks), key="sim_heatmap")

st.subheader("Compare a pair")
pool = shape.iou_models(a, load.models(r))          # row k: row and column k of a["iou"] and a["agree"]
gen = pool[pool["group"] == "generated"].dropna(subset=["smax"])
default_a = int(gen["smax"].idxmax()) if len(gen) else 0              # the most copy-like generated model
default_b = int(pool.index[(pool["group"] == "originals") & (pool["index"] == gen.loc[default_a, "smax_idx"])][0]) \
    if len(gen) else min(1, len(pool) - 1)
ca, cb = st.columns(2)
i = ca.selectbox("Model A", pool.index, index=default_a, format_func=lambda k: pool.at[k, "label"], key="sim_a")
j = cb.selectbox("Model B", pool.index, index=default_b, format_func=lambda k: pool.at[k, "label"], key="sim_b")
ui.numbers([("accuracy A", pool.at[i, "test_acc"], None), ("accuracy B", pool.at[j, "test_acc"], None),
            ("IoU of errors", a["iou"][i, j], "|E(A) ∩ E(B)| / |E(A) ∪ E(B)|", "{:.3f}"),
            ("agreement", a["agree"][i, j], "share of test examples where A and B predict the same label")],
           fmt="{:.1%}")

with st.expander("Baselines: the same statistics for every baseline group"):
    st.dataframe(load.similarity_table(r), width="stretch")
