"""Use cases: do generated models help as an ensemble, or as a starting point for fine-tuning?"""
import streamlit as st

from studio import figures, load, ui

ui.header("Use cases")
r = ui.need_results()
ui.need_analysis(r)
ui.show_warnings(load.metrics(r))
an, a = load.analysis(r), load.arrays(r)

st.subheader("Ensembles")
ens = an["ensembles"]
if ens.get("k"):
    fig, statement = figures.ensembles(ens, a)
    st.plotly_chart(fig, key="uc_ens")
    st.markdown(statement)
    st.caption(f"Mean ± std over {ens['draws']} random draws of k models. If generated models were diverse, "
               "their ensembles would gain more from k = 1 to large k than the originals' do. Intervals: 95 % "
               "bootstrap over test examples; a gain whose interval holds 0 is no gain.")
else:
    st.info("No ensemble curve: too few finite generated models.")

st.subheader("Initialization")
init = an["initialization"]
fig, statement = figures.initialization(init, a)
st.plotly_chart(fig, key="uc_init")
st.markdown(statement)
st.caption(f"Each start is fine-tuned on the same minibatches with {init['optimizer']}, lr {init['lr']}; thick lines "
           f"are the mean of {max(init['starts'].values())} starts, thin lines single starts. Random starts: "
           f"{init.get('random_init', 'the layers default init')}. Curves are validation accuracy; the finals "
           "above are on test.")
