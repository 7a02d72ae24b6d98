"""Export: download the latest sampled population (safetensors weights + CSV of per-model numbers)."""

import streamlit as st

from hyperrep import app_state
from pages import shared

found = shared.artifacts()
st.title("Export")
run = shared.need_population(found, "Nothing to export yet: sample a population first.")

table = run.members_table()
metadata = app_state.export_metadata(run, found.zoo, found.hyperrep)
stem = f"population-{run.strategy}-n{len(table)}-seed{run.seed}"
st.markdown(
    f"**{len(table)} models** sampled with `{run.strategy}` (seed {run.seed}); {run.anchor_label}. "
    "The weights are flat vectors in the public Model Zoo order (for each layer its weight, then its bias); "
    "`hyperrep.cnn` turns a row into a state_dict."
)
left, right = st.columns(2)
left.download_button(
    "Weights (.safetensors)", app_state.population_safetensors(run.population.weights, run.population.latents, metadata),
    file_name=f"{stem}.safetensors", mime="application/octet-stream", key="download_weights", icon=":material/neurology:",
)
right.download_button(
    "Per-model numbers (.csv)", app_state.population_csv(table), file_name=f"{stem}.csv", mime="text/csv",
    key="download_csv", icon=":material/table:",
)
st.dataframe(table, hide_index=True)
with st.expander("Metadata stored in the safetensors header"):
    st.json(metadata)
