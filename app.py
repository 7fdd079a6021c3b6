"""p-diff Studio: `streamlit run app.py`. A router: page list, sidebar run picker, ?run= in the URL."""
import streamlit as st

from studio import ui

st.set_page_config(page_title="p-diff Studio", page_icon=":material/blur_on:", layout="wide")
pages = {name: st.Page(path, title=title, icon=icon, default=name == "home")
         for name, (path, title, icon) in ui.PAGES.items()}
nav = st.navigation({
    "Studio": [pages[n] for n in ("home", "launch", "runs")],
    "Results": [pages[n] for n in ("accuracy", "similarity", "parameter_space", "memorization", "use_cases")],
})
ui.sync_url()
ui.sidebar()
nav.run()
