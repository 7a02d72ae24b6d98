"""Fine-tune: do sampled models learn faster than training from scratch (B_T) or fine-tuning zoo models (B_F)?"""

import time

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from hyperrep.evaluation.evaluate import zoo_training_settings
from hyperrep.io.files import ArtifactError
from hyperrep.pipeline import experiment
from hyperrep.pipeline.finetune_study_files import study_of, study_summary
from hyperrep.pipeline.summaries import learning_curves
from hyperrep.runtime.settings import MAX_FINETUNE_MODELS
from pages import shared

COLOURS = {"samples": "crimson", experiment.SCRATCH: "gray", experiment.ZOO_MODELS: "royalblue"}

found = shared.artifacts()
model = shared.need_hyperrep(found)
zoo = shared.need_zoo(found)
st.title("Fine-tune")
STUDY_TEXT = ("The figure has one panel per amount of fine-tuning data: mean test accuracy of each population after "
              "each epoch, with 95 % CI bars. Samplers are drawn on anchors chosen on validation images; baselines are "
              "the anchors themselves (B_F), noisy copies of the anchors at the samplers' distance, and B_T trained "
              "from scratch with the zoo's init and with kaiming-uniform. The table gives Δ against B_T "
              "(kaiming-uniform) with its CI; study.md has every Δ and the readings.")
study = study_of(model.path)
if study is None:
    st.caption("No committed fine-tuning study of this hyper-representation (`hyperrep finetune-study --hyperrep "
               "DIR --out docs/NAME` makes one).")
else:
    with st.expander("Measured: the committed fine-tuning study of this hyper-representation"):
        st.markdown(f"`{study.name}/study.md`")
        st.image(str(study / "study.png"))
        st.markdown(STUDY_TEXT)
        st.dataframe(study_summary(study), hide_index=True)
run = shared.need_population(found, "Sample a population first (Sample & evaluate); it is fine-tuned here next to the baselines.")
if found.test_data is None:
    st.error(f"No test images: {found.problems.get('test data', 'unknown problem')}")
    st.stop()

settings = zoo_training_settings(zoo)
st.caption(
    f"The {run.strategy} samples, {MAX_FINETUNE_MODELS} at most, are trained for a few epochs next to "
    "B_T (fresh initialisations, as the zoo was started) and B_F (zoo models at their last epoch), with the zoo's "
    f"optimiser ({settings.optimizer}, batch {settings.batch_size}). Bands: 95 % confidence interval of the mean."
)
a, b, c, d = st.columns(4)
members = a.number_input("Models per population", min_value=2, max_value=MAX_FINETUNE_MODELS, step=1,
                         key=shared.kept("ft_models", min(8, MAX_FINETUNE_MODELS)))
epochs = b.number_input("Epochs", min_value=1, max_value=10, step=1, key=shared.kept("ft_epochs", 2))
train_images = c.select_slider("Training images", [500, 1000, 2000, 5000, 10_000, 50_000],
                               key=shared.kept("ft_train_images", 2000))
test_images = d.select_slider("Test images", [500, 1000, 2000, 5000, 10_000], key=shared.kept("ft_test_images", 1000))
learning_rate = st.number_input("Learning rate", min_value=1e-6, max_value=1.0, format="%.2e",
                                key=shared.kept("ft_lr", float(settings.lr)))
other = st.text_input("On another dataset (transfer learning): a folder of IDX, CIFAR-10, SVHN or STL-10 files; "
                      "empty: the zoo's own dataset", key=shared.kept("ft_other_data", "")).strip()
clicked = st.button("Fine-tune", type="primary", key="finetune_button", icon=":material/trending_up:")

if clicked:
    settings.lr = float(learning_rate)
    try:
        if other:
            train, test = shared.other_dataset_images(found.zoo_key, other, int(train_images), int(test_images),
                                                      str(found.device))
        else:
            train = shared.training_images(zoo, int(train_images), str(found.device))
            test = found.test_data.first(int(test_images))
    except (ArtifactError, ValueError) as err:
        st.error(f"No training images: {err}")
        st.stop()
    start = time.perf_counter()
    with st.status("Fine-tuning…", expanded=True) as status:
        bars = {}

        def progress_for(label: str):
            bars[label] = st.progress(0.0, f"{label}: training")
            return lambda done, total: bars[label].progress(done / max(total, 1), f"{label}: {done}/{total}")

        try:
            results = experiment.fine_tune_comparison(run, zoo, train, test, members=int(members), epochs=int(epochs),
                                                      settings=settings, progress_for=progress_for)
        except ValueError as err:
            status.update(label="Nothing to fine-tune", state="error")
            st.error(f"{err}.")
            st.stop()
        size = len(results["samples"].accuracy)
        status.update(label=f"Fine-tuned 3 × {size} models in {time.perf_counter() - start:.0f} s",
                      state="complete", expanded=False)
    st.session_state[shared.FINETUNE] = {"model_key": found.model_key, "results": results,
                                         "test_images": len(test), "train_images": len(train),
                                         "dataset": other or None}

stored = st.session_state.get(shared.FINETUNE)
if stored is None or stored["model_key"] != found.model_key:
    st.info("Press **Fine-tune** to train the three populations.")
    st.stop()

curves = learning_curves(stored["results"])
figure = go.Figure()
for label, part in curves.groupby("population", sort=False):
    colour = COLOURS.get(label, "black")
    figure.add_trace(go.Scatter(x=np.r_[part["epoch"], part["epoch"][::-1]], y=np.r_[part["high"], part["low"][::-1]],
                                fill="toself", fillcolor=colour, opacity=0.2, line=dict(width=0), hoverinfo="skip",
                                showlegend=False))
    figure.add_trace(go.Scatter(x=part["epoch"], y=part["mean"], mode="lines+markers", name=label, line=dict(color=colour)))
figure.update_layout(height=420, xaxis_title="fine-tuning epoch", yaxis_title=f"test accuracy ({stored['test_images']:,} images)",
                     yaxis_tickformat=".0%", margin=dict(t=20, b=10), legend=dict(orientation="h", y=-0.2))
st.plotly_chart(figure, key="finetune_plot")
st.dataframe(curves.style.format({"mean": "{:.1%}", "low": "{:.1%}", "high": "{:.1%}"}), hide_index=True)
where = f"of `{stored['dataset']}` (transfer learning)" if stored.get("dataset") else "of the training split"
st.caption(f"trained on {stored['train_images']:,} images {where}; epoch 0 = before fine-tuning")
