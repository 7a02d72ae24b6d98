"""Two zoos side by side: why models that share a start can be rebuilt from each other and the
models of a seed zoo cannot (references without a latent, hyperrep.zoo.references; latent maps)."""

import plotly.express as px
import streamlit as st

from hyperrep.evaluation.heldout import heldout_reconstruction
from hyperrep.pipeline import artifacts as artifact_files, experiment
from hyperrep.pipeline.report_files import report_budget_differences, report_choices, report_of, report_summary
from hyperrep.pipeline.shipped import BUILDING, load_zoo, shipped_artifacts
from hyperrep.runtime import settings
from hyperrep.sampling.regions import map_table
from hyperrep.zoo.references import zoo_references
from pages import shared

COMPONENTS = 32  # PCA components of the linear ceiling
REBUILT_LABEL, NEAREST_LABEL = "autoencoder's rebuild: same predictions", "nearest train model, trained epochs: same predictions"

LESSON = """
Every hidden neuron of a CNN can trade places with another of its layer (with its incoming and
outgoing weights) without changing what the network computes. **Models that share a start** keep
their neurons in the same roles: training moves each of them a little away from the same point,
so neuron *i* of one model corresponds to neuron *i* of the next. Their weight vectors then live in
one basin: their average is itself a working model, the nearest other model is close, and a
linear map fitted on some of them rebuilds the rest. **In a seed zoo** every model starts from its
own random draw, so its neurons take their roles in an order of their own. Averaging such weights
mixes unrelated neurons, no training model is much closer than any other, and no linear map
rebuilds a held-out model. That is the symmetry the paper's permutation augmentation and
layer-wise normalisation were designed for, and the reason a seed zoo is the real test of a
hyper-representation. The figures below are measured live on each zoo's test split, at its last
saved epoch, on the first 1,000 test images. Under each map: how the zoo's hyper-representation
rebuilds the held-out models (every epoch it was trained on) against looking up the nearest
training model; in a seed zoo that lookup is the bar a rebuild has to clear. Where a committed
`hyperrep report` was made from that hyper-representation, its table follows: what sampling from
it gives, against noisy copies of the anchors at the same distance.
"""


@st.cache_resource(max_entries=4, show_spinner="Loading the zoo…")
def cached_zoo(path: str, key: str):
    """A shipped zoo, or what a shipped build has finished so far; `key` = fingerprint."""
    return load_zoo(path)


@st.cache_data(max_entries=8, show_spinner="Rebuilding held-out models without a latent…")
def references(path: str, key: str, epoch: int, device_name: str) -> dict:
    zoo = cached_zoo(path, key)
    source = artifact_files.dataset_source(zoo.manifest)
    data = shared.cached_test_data(str(source.data_dir) if source.data_dir else None, source.rule, device_name)
    return zoo_references(zoo, [epoch], data.first(experiment.QUICK_IMAGES), components=(COMPONENTS,))


@st.cache_data(max_entries=8, show_spinner="Rebuilding the held-out models through the hyper-representation…")
def rebuilds(zoo_path: str, zoo_key: str, model_path: str, model_key: str, device_name: str) -> dict:
    zoo = cached_zoo(zoo_path, zoo_key)
    model = shared.cached_hyperrep(model_path, model_key, device_name)
    source = artifact_files.dataset_source(zoo.manifest)
    data = shared.cached_test_data(str(source.data_dir) if source.data_dir else None, source.rule, device_name)
    return heldout_reconstruction(model, zoo, data.first(experiment.QUICK_IMAGES).to("cpu"), resamples=1000)


def show_rebuilds(found: dict) -> None:
    """The hyper-representation's held-out rebuilds against the nearest training model, with CIs."""
    cells = {key: found[key] for key in ("agreement", "ratio")}
    first, second = st.columns(2)
    for column, name in ((first, "rebuilt"), (second, "nearest")):
        mean, low, high = cells["agreement"][name]
        label = REBUILT_LABEL if name == "rebuilt" else NEAREST_LABEL
        column.metric(label, f"{mean:.1%}", help=f"95 % CI [{low:.1%}, {high:.1%}] over the {found['models']} test models")
    gain, low, high = cells["agreement"]["rebuilt_minus_nearest"]
    ratio, lo_r, hi_r = cells["ratio"]["rebuilt"]
    st.caption(f"Rebuilt − nearest: {gain:+.1%} [{low:+.1%}, {high:+.1%}] of the images; rebuilt accuracy ratio "
               f"{ratio:.2f} [{lo_r:.2f}, {hi_r:.2f}]; R² {found['rsq']['rebuilt']:.2f} (nearest "
               f"{found['rsq']['nearest']:.2f}); {found['states']} test-split states, {found['images']} test images, "
               "95 % bootstrap CIs over models. Command: `.venv/bin/python bench/hyperrep_quality.py FOLDER --heldout`.")


def design(zoo) -> str:
    build = zoo.manifest.get("build") or {}
    if "init_families" not in build:
        return "imported or unknown design"
    families = build["init_families"]
    init = build.get("init")
    if families is None:
        return f"seed zoo: each model from its own {init} initialisation"
    return f"{families} shared start{'s' if families > 1 else ''} ({init})"


def show_zoo(item, found: shared.Artifacts, hyperreps: list, side: str) -> None:
    path, building = item.path, item.kind == BUILDING
    key = artifact_files.fingerprint(path / "partial" if building else path)
    zoo = cached_zoo(str(path), key)
    epoch = zoo.epochs[-1]
    st.subheader(zoo.name)
    state = f"build in progress: {zoo.n_models} models finished" if building else f"{zoo.n_models} models"
    st.caption(f"`{path}` · {state} · {design(zoo)} · epoch {epoch} of saved {zoo.epochs}")
    try:
        f = references(str(path), key, epoch, str(found.device))
    except ValueError as err:  # e.g. a build with too few finished models for a test split
        st.warning(f"No references yet: {err}")
        return
    mean, near, pca = f["mean_model"], f["nearest"], f["pca"][COMPONENTS]
    first, second = st.columns(2)
    first.metric("test models' accuracy", f"{f['test_acc']:.1%}", help=f"{f['test_states']} test-split models")
    second.metric("mean model's accuracy", f"{mean['acc_reconstructed']:.1%}",
                  help="the train split's average weight vector, run as one model")
    first.metric("mean model: same predictions", f"{mean['prediction_agreement']:.1%}",
                 help="share of test images it classifies as the test models do")
    second.metric("nearest train model: same predictions", f"{near['prediction_agreement']:.1%}",
                  help="each test model against its nearest (L2) train-split model")
    first.metric("nearest ÷ median distance", f"{near['distance_ratio']:.2f}",
                 help="how much closer the nearest train model is than the median one (1.00: no closer)")
    second.metric(f"PCA-{COMPONENTS} ceiling: accuracy kept", f"{pca['kept_above_chance']:.0%}",
                  help="PCA fitted on the train split rebuilds each test model; share of the test models' "
                       "accuracy above chance (10 %) the rebuilds keep")
    st.caption(f"PCA-{COMPONENTS} R² {pca['rsq']:.2f}, same predictions {pca['prediction_agreement']:.1%}; "
               f"nearest train model at median L2 distance {near['distance']:.2f}; "
               f"{f['train_states']} train-split models" + (
                   f"; weights at cosine {f['init_cosine']:.2f} with their epoch-0 state" if f["init_cosine"] is not None else ""))
    own = [h for h in hyperreps if h.zoo == path.resolve()]
    if not own:
        st.info("No shipped hyper-representation of this zoo yet.")
        return
    model = shared.cached_hyperrep(str(own[0].path), artifact_files.fingerprint(own[0].path), str(found.device))
    table = map_table(model.latent_table, model.map_coords)
    figure = px.scatter(table, x="map_x", y="map_y", color="test_acc", render_mode="webgl",
                        color_continuous_scale="Viridis", hover_data=["model_id", "epoch", "split"],
                        title=f"latent map of {own[0].path.name} ({model.projection.get('method', 'stored')})")
    figure.update_layout(height=380, margin=dict(l=0, r=0, t=40, b=0))
    st.plotly_chart(figure, width="stretch", key=f"two_zoos_map_{side}")
    st.markdown(f"**How {own[0].path.name} rebuilds the held-out models**")
    show_rebuilds(rebuilds(str(path), key, str(own[0].path), artifact_files.fingerprint(own[0].path), str(found.device)))
    show_report(own[0].path)


def show_report(hyperrep_path) -> None:
    """The committed `hyperrep report` made from this hyper-representation, if there is one."""
    folder = report_of(hyperrep_path)
    if folder is None:
        return
    st.markdown(f"**What sampling from {hyperrep_path.name} gives** (`{folder.name}/report.md`)")
    st.dataframe(report_summary(folder), hide_index=True)
    st.caption("Mean test accuracy with its 95 % bootstrap CI; Δ = accuracy minus the frontier of noisy and "
               "averaged copies of the anchors at the same distance to the nearest train model (at the anchors' "
               "epochs), with its CI (above 0: better than a noisy copy that far away). The command that made it is "
               "in the report.")
    choices = report_choices(folder)
    if choices is not None:
        st.markdown("**Chosen on validation images, reported on test images**")
        st.dataframe(choices, hide_index=True)
    differences = report_budget_differences(folder)
    if differences is not None:
        st.markdown("**Guided latent steps vs weight steps at equal budgets** (same starts, same training images)")
        st.dataframe(differences, hide_index=True)
        st.caption("Each Δ difference is of two Δ against the frontier, with a bootstrap CI paired over the shared "
                   "starts: above 0, the first named is ahead; a CI holding 0 cannot tell them apart.")


found = shared.artifacts()
st.title("Two zoos")
st.markdown(LESSON)
artifacts = shipped_artifacts()
zoos = [a for a in artifacts if a.kind in (artifact_files.ZOO, BUILDING)]
hyperreps = [a for a in artifacts if a.kind == artifact_files.HYPERREP]
if len(zoos) < 2:
    st.info(f"This page compares two shipped zoos; {len(zoos)} found in the artifacts folder "
            "(data/, or HYPERREP_ARTIFACTS).")
    st.stop()
names = [a.path.name for a in zoos]
left_default = settings.default_zoo_path().name if settings.default_zoo_path().name in names else names[0]
right_default = next(n for n in names if n != left_default)
pick_left, pick_right = st.columns(2)
left = pick_left.selectbox("Left zoo", names, key=shared.kept("two_zoos_left", left_default, names))
right = pick_right.selectbox("Right zoo", names, key=shared.kept("two_zoos_right", right_default, names))
for column, name, side in zip(st.columns(2), (left, right), ("left", "right")):
    with column:
        show_zoo(zoos[names.index(name)], found, hyperreps, side)
