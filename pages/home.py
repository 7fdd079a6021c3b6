"""Home: what p-diff is, the question this app asks, and the quick demo (the empty state)."""
import streamlit as st

from studio import charts, ui

ui.header("p-diff Studio")
st.markdown(
    "**p-diff** (neural network diffusion) trains a network, keeps training a few of its layers while saving "
    "*K* checkpoints of them, learns an autoencoder and a diffusion model over those checkpoints, and then "
    "*samples new parameters* from noise. The paper reports that the sampled models match or beat the "
    "checkpoints they were trained on.\n\n"
    "**The memorization question.** A 2025 follow-up (Zeng et al.) found that the sampled weights sit very close "
    "to training checkpoints, or to their average, and make the same mistakes. A generator that only hands back "
    "its training data looks just as good by accuracy. This app puts the two side by side: accuracy, error "
    "similarity, distance to the nearest checkpoint, and simple baselines (noise, averaging, a Gaussian fit) "
    "that show what a genuinely new model would have to beat.")
st.graphviz_chart(charts.pipeline_dot(), width="stretch")

if not ui.choices():
    st.subheader("Start here")
    st.write("No runs yet. The quick demo trains a small MLP on the 8×8 digits, collects 200 checkpoints of its "
             "last two BatchNorm layers, generates 200 new ones and analyses them.")
    ui.quick_demo_button()
else:
    ui.watch()
    st.page_link(ui.page("launch"), label="Launch another run", icon=":material/rocket_launch:")
