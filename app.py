"""p-diff Studio: `streamlit run app.py`. A router: page list, sidebar run picker, ?run= in the URL."""
import traceback
from pathlib import Path

import streamlit as st

from pdiff_core.runs import DAMAGE, RunError
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
except DAMAGE as e:
    # a run file that parses but does not hold what this version wrote (a key gone, a wrong shape): one line
    # that says what to do; the traceback goes to the server's log, so that a bug stays findable
    traceback.print_exc()
    st.error(ui.damaged_page(e), icon=":material/error:")
