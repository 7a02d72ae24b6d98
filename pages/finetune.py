"""Fine-tune: do sampled models learn faster than training from scratch (B_T) or fine-tuning zoo models (B_F)?"""

import time

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch

from hyperrep import app_state
from hyperrep.evaluate import fine_tune, zoo_training_settings
from hyperrep.files import ArtifactError
from hyperrep.sampling import scratch_baseline, zoo_baseline
from pages import shared

COLOURS = {"samples": "crimson", "B_T (from scratch)": "gray", "B_F (zoo, last epoch)": "royalblue"}

found = shared.artifacts()
model = shared.need_hyperrep(found)
zoo = shared.need_zoo(found)
st.title("Fine-tune")
run = shared.need_population(found, "Sample a population first (Sample & evaluate); it is fine-tuned here next to the baselines.")
if found.test_data is None:
    st.error(f"No test images: {found.problems.get('test data', 'unknown problem')}")
    st.stop()

settings = zoo_training_settings(zoo)
st.caption(
    f"The {run.strategy} samples, {app_state.MAX_FINETUNE_MODELS} at most, are trained for a few epochs next to "
    "B_T (fresh initialisations, as the zoo was started) and B_F (zoo models at their last epoch), with the zoo's "
    f"optimiser ({settings.optimizer}, batch {settings.batch_size}). Bands: 95 % confidence interval of the mean."
)
a, b, c, d = st.columns(4)
members = a.number_input("Models per population", min_value=2, max_value=app_state.MAX_FINETUNE_MODELS, step=1,
                         key=shared.kept("ft_models", min(8, app_state.MAX_FINETUNE_MODELS)))
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
    finite = torch.as_tensor(np.asarray(run.full.finite))
    samples = run.population.weights[finite][: int(members)]
    if len(samples) < 2:
        st.error("Fewer than 2 finite sampled models: sample again with another strategy or region.")
        st.stop()
    try:
        if other:
            train, test = shared.other_dataset_images(found.zoo_key, other, int(train_images), int(test_images),
                                                      str(found.device))
        else:
            train = shared.training_images(zoo, int(train_images), str(found.device))
            test = app_state.first_images(found.test_data, int(test_images))
    except (ArtifactError, ValueError) as err:
        st.error(f"No training images: {err}")
        st.stop()
    populations = {
        "samples": samples,
        "B_T (from scratch)": scratch_baseline(zoo, len(samples), run.seed).weights,
        "B_F (zoo, last epoch)": zoo_baseline(zoo, len(samples), run.seed).weights,
    }
    results, start = {}, time.perf_counter()
    with st.status("Fine-tuning…", expanded=True) as status:
        for label, weights in populations.items():
            bar = st.progress(0.0, f"{label}: training")
            results[label] = fine_tune(
                model.arch, zoo.activation, weights, train, test, epochs=int(epochs), settings=settings, seed=run.seed,
                progress=lambda done, total, bar=bar, label=label: bar.progress(done / max(total, 1), f"{label}: {done}/{total}"),
            )
            bar.progress(1.0, f"{label}: done")
        status.update(label=f"Fine-tuned 3 × {len(samples)} models in {time.perf_counter() - start:.0f} s",
                      state="complete", expanded=False)
    st.session_state[shared.FINETUNE] = {"model_key": found.model_key, "results": results,
                                         "test_images": len(test), "train_images": len(train),
                                         "dataset": other or None}

stored = st.session_state.get(shared.FINETUNE)
if stored is None or stored["model_key"] != found.model_key:
    st.info("Press **Fine-tune** to train the three populations.")
    st.stop()

curves = app_state.learning_curves(stored["results"])
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
