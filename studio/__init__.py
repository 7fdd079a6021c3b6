"""The Streamlit app's helpers: `load` reads and shapes a run directory (cached), `charts` builds
plotly figures (no streamlit), `forms` maps the launch form to RunConfig (no streamlit), and `ui`
holds the widgets the pages share. Pages in pages/ stay thin views over these."""
