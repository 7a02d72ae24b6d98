"""Overview: what is loaded (zoo, hyper-representation, device), headline numbers, a guided path."""

import streamlit as st

from hyperrep.pipeline import summaries
from hyperrep.runtime import settings
from pages import shared

found = shared.artifacts()
st.title("hyperrep explorer")
st.markdown(
    "A *hyper-representation* is an autoencoder trained on the weights of a **model zoo** — hundreds "
    "of small CNNs trained on the same task. Its latent space can be mapped, sampled and decoded "
    "into **new network weights** that work without training "
    "(Schürholt et al., *Hyper-Representations as Generative Models*, NeurIPS 2022)."
)

zoo_column, model_column = st.columns(2)
with zoo_column:
    st.subheader("Zoo")
    if found.zoo is None:
        st.warning(found.problems.get("zoo", "no zoo loaded"))
    else:
        zoo = found.zoo
        headline = summaries.zoo_headline(zoo)
        st.markdown(
            f"**{zoo.name}** · `{zoo.path}`  \n"
            f"{zoo.architecture.name} ({zoo.architecture.n_params:,} parameters, {zoo.activation}) "
            f"on {headline['dataset']}"
        )
        a, b, c = st.columns(3)
        a.metric("models", f"{zoo.n_models:,}")
        b.metric("saved epochs", f"{min(zoo.epochs)}–{max(zoo.epochs)}")
        c.metric("median test acc.", f"{headline['median_acc']:.1%}",
                 help=f"median test accuracy of the zoo's models at their last saved epoch ({headline['last_epoch']})")
        st.caption("splits: " + ", ".join(f"{name} {len(ids)}" for name, ids in zoo.splits.items()))
with model_column:
    st.subheader("Hyper-representation")
    if found.hyperrep is None:
        st.warning(found.problems.get("hyperrep", "no hyper-representation loaded"))
    else:
        model = found.hyperrep
        st.markdown(f"`{model.path}` · latent dimension **{model.model.latent_dim}**")
        numbers = summaries.headline_metrics(model.metrics)
        for column, (label, value) in zip(st.columns(max(1, min(3, len(numbers)))), numbers[:3]):
            column.metric(label, value, help=summaries.METRIC_HELP.get(label))
        reference = dict(numbers).get("same predictions, zoo mean model")
        if reference:
            st.caption(f"Held-out (test-split) models, encoded and decoded. For reference, the zoo's mean "
                       f"weight vector, one fixed network, makes the same predictions on {reference} of the images.")
        if len(numbers) > 3:
            with st.expander("all training metrics"):
                st.table({label: [value] for label, value in numbers})
        st.caption(f"{len(model.latent_table):,} embedded zoo models on the stored 2-D map")
threads = (f" with up to {settings.cpu_threads()} CPU thread(s), fewer while other processes keep cores busy"
           if found.device.type == "cpu" else "")
st.caption(f"device: `{found.device}`{threads} (override with HYPERREP_DEVICE, HYPERREP_THREADS)")
for note in found.notes:
    st.info(note)

st.subheader("A guided path")
st.page_link("pages/zoo.py", label="1 · Zoo — how the models learned: accuracy per epoch, the table of models", icon=":material/grid_view:")
st.page_link("pages/latent_map.py", label="2 · Latent map — every model as a point; lasso a region or pick one with sliders", icon=":material/map:")
st.page_link("pages/sample.py", label="3 · Sample & evaluate — draw new latents, decode them, watch their accuracy arrive", icon=":material/casino:")
st.page_link("pages/finetune.py", label="4 · Fine-tune — do sampled models train faster than from scratch?", icon=":material/trending_up:")
st.page_link("pages/export.py", label="5 · Export — download the population as safetensors + CSV", icon=":material/download:")
