"""Latent map: the stored 2-D map of every embedded zoo model; choose a region of anchors on it."""

import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from hyperrep.pipeline import summaries
from hyperrep.sampling import regions
from pages import shared

SLIDERS = "Filters (accuracy, epochs, top-k %)"
MAP = "Map selection (lasso, box or click)"

found = shared.artifacts()
model = shared.need_hyperrep(found)
table = shared.map_table(*found.model_args)
method = model.projection.get("method", "stored")
st.title("Latent map")
st.caption(
    f"{len(table):,} zoo checkpoints (model × epoch) encoded to {model.model.latent_dim}-D latents and laid out "
    f"in 2-D by the stored {method} map. Hover for a model; pick anchors for sampling with the filters "
    "or by drawing on the map."
)

hidden = {"row", "map_x", "map_y"}
colour_options = [c for c in ("test_acc", "epoch", "lr", "seed") if c in table.columns]
colour_options += [c for c in table.columns if c not in hidden and c not in colour_options]
map_column, region_column = st.columns([3, 1])

with region_column:
    st.subheader("Region")
    source = st.radio("Choose anchors by", [SLIDERS, MAP], key=shared.kept("region_source", SLIDERS, [SLIDERS, MAP]))
    splits = ["all"] + sorted(table["split"].unique())
    epochs = sorted(table["epoch"].unique().tolist())
    disabled = source != SLIDERS
    split = st.selectbox("Split", splits, key=shared.kept("region_split", "train" if "train" in splits else "all", splits),
                         disabled=disabled)
    chosen_epochs = st.multiselect("Epochs", epochs, key=shared.kept("region_epochs", [], epochs),
                                   placeholder="all epochs", disabled=disabled)
    accuracy = st.slider("Test accuracy", 0.0, 1.0, step=0.01, key=shared.kept("region_accuracy", (0.0, 1.0)),
                         disabled=disabled)
    top = st.slider("Top-k % by test accuracy", 1, 100, key=shared.kept("region_top", 30), disabled=disabled,
                    help="keep the best k % of the filtered models (the paper's anchors: top 30 % of the train split)")

region_rows, region_label, region_problem = None, "", None
if source == SLIDERS:
    try:
        region_rows, region_label = regions.region_from_filters(
            table, split=None if split == "all" else split, epochs=chosen_epochs, accuracy=accuracy, top_percent=top,
        )
    except ValueError as err:
        region_problem = f"Empty region: {err}"

with map_column:
    colour = st.selectbox("Colour by", colour_options, key=shared.kept("map_colour", colour_options[0], colour_options))
    categorical = not summaries.is_numeric(table[colour]) or colour in ("split", "init")
    figure = px.scatter(
        table, x="map_x", y="map_y", color=table[colour].astype(str) if categorical else colour,
        custom_data=["row"], render_mode="webgl",
        hover_data={c: True for c in ("model_id", "epoch", "test_acc", "split") if c in table.columns} | {"map_x": False, "map_y": False},
        color_continuous_scale="Viridis", labels={"color": colour},
    )
    figure.update_traces(marker=dict(size=6, opacity=0.8))
    if region_rows is not None:
        picked = table.iloc[region_rows]
        figure.add_trace(go.Scattergl(
            x=picked["map_x"], y=picked["map_y"], mode="markers", name=f"region ({len(picked)})",
            marker=dict(size=11, color="rgba(0,0,0,0)", line=dict(color="crimson", width=1.5)), hoverinfo="skip",
        ))
    figure.update_layout(height=560, margin=dict(t=10, b=10, l=10, r=10), dragmode="lasso" if source == MAP else "zoom",
                         legend=dict(orientation="h", y=-0.08), xaxis_title=None, yaxis_title=None)
    event = st.plotly_chart(figure, key="latent_map", on_select="rerun", selection_mode=("points", "box", "lasso"))

if source == MAP:
    try:
        region_rows, region_label = regions.region_from_selection(event.selection if event else None, len(table))
    except ValueError:
        region_problem = "Nothing selected yet: draw a lasso or a box on the map (toolbar, top right) or click points."

with region_column:
    if region_rows is None:
        st.warning(region_problem)
        st.session_state.pop(shared.REGION, None)
    else:
        st.session_state[shared.REGION] = {
            "rows": region_rows.tolist(), "label": region_label, "model_key": found.model_key, "source": source,
        }
        picked = table.iloc[region_rows]
        st.metric("anchors", f"{len(picked):,}")
        st.metric("mean test acc.", f"{picked['test_acc'].mean():.1%}",
                  help=f"range {picked['test_acc'].min():.1%} – {picked['test_acc'].max():.1%}")
        st.caption(region_label)
        st.page_link("pages/sample.py", label="Sample from this region", icon=":material/casino:")

if region_rows is not None:
    compare = regions.region_comparison(table, region_rows)
    histogram = px.histogram(compare, x="test_acc", color="group", barmode="overlay", nbins=40, histnorm="percent",
                             title="test accuracy: region vs all embedded models",
                             color_discrete_map={"all embedded models": "darkgray", "region": "crimson"})
    histogram.update_layout(height=260, margin=dict(t=40, b=10))
    st.plotly_chart(histogram, key="region_histogram")
