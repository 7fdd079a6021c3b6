"""p-diff Studio: `streamlit run app.py`. A router: page list, sidebar run picker, ?run= in the URL."""
from pathlib import Path

import streamlit as st

from pdiff_core.runs import RunError
from studio import ui

# a local icon: a material-symbol icon is fetched from an external font host, which fails offline
st.set_page_config(page_title="p-diff Studio", page_icon=str(Path(__file__).parent / "studio" / "icon.png"),
                   layout="wide")
nav = ui.navigation()
try:
    ui.sync_url()
    ui.sidebar()
    ui.routed()
    nav.run()
except RunError as e:   # a damaged run file: its one-line message says what to do, never a traceback
    st.error(str(e), icon=":material/error:")
