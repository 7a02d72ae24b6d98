"""Zoo: how the models learned (accuracy per epoch), accuracy histograms, a filterable table."""

import plotly.express as px
import streamlit as st

from hyperrep.pipeline import summaries
from hyperrep.sampling.anchors import select_rows
from pages import shared

found = shared.artifacts()
zoo = shared.need_zoo(found)
table = shared.zoo_table(*found.zoo_key)
st.title(f"Zoo · {zoo.name}")
st.caption(
    f"{zoo.n_models} {zoo.architecture.name} models ({zoo.activation}), saved at epochs {zoo.epochs}; "
    "each line is one model, each point one saved checkpoint."
)

colour_options = ["none"] + summaries.categorical_columns(table)
metric_options = [c for c in ("test_acc", "train_acc", "test_loss", "train_loss") if c in table.columns]
left, right = st.columns(2)
metric = left.selectbox("Quantity", metric_options, key=shared.kept("zoo_metric", metric_options[0], metric_options))
default_colour = "init" if "init" in colour_options else "none"
colour = right.selectbox("Colour by", colour_options, key=shared.kept("zoo_colour", default_colour, colour_options))

trajectories = px.line(
    table, x="epoch", y=metric, line_group="model_id", color=None if colour == "none" else colour,
    hover_data=[c for c in ("model_id", "seed", "lr", "init", "split") if c in table.columns],
    title=f"{metric} vs epoch", render_mode="webgl",
)
trajectories.update_traces(opacity=0.35, line_width=1)
trajectories.update_layout(height=420, margin=dict(t=40, b=10))
st.plotly_chart(trajectories, key="zoo_trajectories")

histograms = px.histogram(
    table, x=metric, facet_col="epoch", facet_col_wrap=min(6, len(zoo.epochs)), nbins=30,
    title=f"{metric} per saved epoch",
)
histograms.for_each_annotation(lambda a: a.update(text=a.text.replace("epoch=", "epoch ")))
histograms.update_layout(height=300 if len(zoo.epochs) <= 6 else 520, margin=dict(t=60, b=10), showlegend=False)
st.plotly_chart(histograms, key="zoo_histograms")

with st.expander("Accuracy quantiles per epoch"):
    st.dataframe(zoo.summary().style.format("{:.3f}", subset=["mean", "min", "q05", "q25", "median", "q75", "q95", "max"]))

st.subheader("Models")
a, b, c = st.columns(3)
epochs = a.multiselect("Epochs", zoo.epochs, key=shared.kept("zoo_table_epochs", [max(zoo.epochs)], zoo.epochs),
                       placeholder="all epochs")
split_options = ["all"] + sorted(table["split"].unique())
split = b.selectbox("Split", split_options, key=shared.kept("zoo_table_split", "all", split_options))
accuracy = c.slider("Test accuracy", 0.0, 1.0, step=0.01, key=shared.kept("zoo_table_acc", (0.0, 1.0)))
try:
    shown = table.iloc[select_rows(table, split=None if split == "all" else split, epochs=epochs or None, accuracy=accuracy)]
except ValueError:
    shown = table.iloc[:0]
st.caption(f"{len(shown):,} of {len(table):,} rows")
st.dataframe(
    shown, hide_index=True, height=360,
    column_config={
        "test_acc": st.column_config.ProgressColumn("test_acc", format="%.3f", min_value=0.0, max_value=1.0),
        "train_acc": st.column_config.ProgressColumn("train_acc", format="%.3f", min_value=0.0, max_value=1.0),
    },
)
