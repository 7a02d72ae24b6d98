"""Export: download the latest sampled population in hyperrep's population format (hyperrep.pipeline.export)."""

import streamlit as st

from hyperrep.pipeline import export
from pages import shared

found = shared.artifacts()
st.title("Export")
run = shared.need_population(found, "Nothing to export yet: sample a population first.")

table = run.members_table()
metadata = run.metadata(found.zoo, found.hyperrep)
weights, latents = run.population.weights, run.population.latents
stem = f"population-{run.strategy}-n{len(table)}-seed{run.seed}"
st.markdown(
    f"**{len(table)} models** sampled with `{run.strategy}` (seed {run.seed}); {run.anchor_label}. "
    f"The .zip is the population folder `hyperrep sample` writes ({export.WEIGHTS_FILE} + {export.TABLE_FILE}; "
    "`hyperrep.pipeline.export.read_population` reads either back). The weights are flat vectors in the public Model Zoo "
    "order (for each layer its weight, then its bias); `hyperrep.nets.cnn` turns a row into a state_dict."
)
if run.comparisons is None:
    st.caption("The comparisons (novelty, map position) are still running or failed; their columns are not in the table yet.")
left, middle, right = st.columns(3)
left.download_button(
    "Population (.zip)", export.population_zip(weights, latents, table, metadata), file_name=f"{stem}.zip",
    mime="application/zip", key="download_population", icon=":material/folder_zip:",
)
middle.download_button(
    f"Weights ({export.WEIGHTS_FILE})", export.population_safetensors(weights, latents, metadata),
    file_name=f"{stem}.safetensors", mime="application/octet-stream", key="download_weights", icon=":material/neurology:",
)
right.download_button(
    f"Per-model numbers ({export.TABLE_FILE})", export.population_csv(table), file_name=f"{stem}.csv", mime="text/csv",
    key="download_csv", icon=":material/table:",
)
st.dataframe(table, hide_index=True)
with st.expander("Metadata stored in the safetensors header"):
    st.json(metadata)
