"""Parameter space: where generated models sit among the checkpoints and baselines, in 2-D."""
import streamlit as st

from studio import charts, figures, load, ui

ui.header("Parameter space")
r = ui.need_results()
ui.need_analysis(r)
ui.show_warnings(load.metrics(r))

c1, c2, c3 = st.columns([2, 2, 2])
space = c1.segmented_control("Vectors", list(figures.MAPS), default="params", key="ps_space",
                             format_func=figures.MAPS.get) or "params"
methods = load.embedding_methods(r, space)
method = c2.segmented_control("Method", methods, default=methods[0], key=f"ps_method_{space}",
                              format_func=figures.METHODS.get) or methods[0]
by = c3.segmented_control("Colour by", ["group", "accuracy"], default="group", key="ps_color") or "group"
umap_status = load.analysis(r)["embeddings"]["params"].get("umap", "")
if space == "params" and "umap" not in methods and umap_status.startswith("on demand"):
    # UMAP is not part of a run (pdiff_core/embed.py says why): one click computes it into umap.npz
    c2.button("Compute UMAP", key="ps_umap", on_click=ui.compute_umap, args=(r.path,),
              help="About 10 s the first time in this server (numba compiles UMAP), about 1 s after; saved with the run")
if st.session_state.get("umap_error"):
    st.error(st.session_state.pop("umap_error"))

df = load.embedding(r, space, method)
groups = list(dict.fromkeys(df["group"]))
shown = st.pills("Groups", groups, selection_mode="multi", default=groups, key=f"ps_groups_{space}")
view = df[df["group"].isin(shown)].reset_index(names="row")
event = st.plotly_chart(charts.embedding(view, by, load.embedding_axes(r, space, method)), key=f"ps_chart_{space}_{method}_{by}",
                        on_select="rerun", selection_mode=("points", "box", "lasso"))
st.caption("Hover a point for its model and accuracy. Drag a lasso or box (or click a point) to list models "
           "with their nearest original checkpoint. Baselines show a subsample of "
           f"{load.analysis(r)['embeddings']['params'].get('per_baseline_cap', '')} models each.")

rows = ui.selected_rows(event)
if rows:
    st.subheader(f"{len(rows)} selected")
    ui.model_table(view.loc[view["row"].isin(rows)])
