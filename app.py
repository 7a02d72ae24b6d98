"""hyperrep explorer: the Streamlit entry point.

Run with `streamlit run app.py`. This frame sets up the page, loads the artifacts named in the
sidebar (defaults: HYPERREP_ZOO / HYPERREP_MODEL, else data/zoo and data/hyperrep) and hands over
to the page chosen in the navigation. The pages only lay out and call the hyperrep package.
"""

import streamlit as st

from pages import shared

shared.leave_legacy_router()
st.set_page_config(page_title="hyperrep explorer", page_icon=":material/hub:", layout="wide")

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon=":material/home:", default=True),
    st.Page("pages/zoo.py", title="Zoo", icon=":material/grid_view:"),
    st.Page("pages/latent_map.py", title="Latent map", icon=":material/map:"),
    st.Page("pages/sample.py", title="Sample & evaluate", icon=":material/casino:"),
    st.Page("pages/finetune.py", title="Fine-tune", icon=":material/trending_up:"),
    st.Page("pages/export.py", title="Export", icon=":material/download:"),
    st.Page("pages/two_zoos.py", title="Two zoos", icon=":material/compare:"),
]

navigation = st.navigation(PAGES)
shared.init_session_defaults()
found = shared.load_artifacts()
st.session_state["_artifacts"] = found
shared.sidebar(found)
navigation.run()
