"""Sample & evaluate: draw latents around anchors, decode them into CNNs and evaluate them live."""

import numpy as np
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from hyperrep.evaluation.frontier import delta_statement
from hyperrep.pipeline import experiment, summaries
from hyperrep.pipeline.experiment import SampleRun
from hyperrep.runtime import settings
from hyperrep.runtime.progress import ThrottledProgress
from pages import shared

REGION = "Region from the latent map"
TOP = "Top-k % of the train split"

found = shared.artifacts()
model = shared.need_hyperrep(found)
zoo = shared.need_zoo(found)
if found.test_data is None:
    st.error(f"No test images: {found.problems.get('test data', 'unknown problem')}")
    st.stop()
table = shared.map_table(*found.model_args)
region = shared.current_region(found)
st.title("Sample & evaluate")
st.caption(
    "Fit a sampler on the anchors' latents, draw new latents, decode them into CNN weights and evaluate "
    f"them on the {len(found.test_data):,} test images: a first estimate on "
    f"{min(experiment.QUICK_IMAGES, len(found.test_data)):,} images arrives within seconds, the full numbers follow."
)

# -- controls --------------------------------------------------------------------------------------
strategy_column, anchor_column = st.columns(2)
with strategy_column:
    names = experiment.strategy_names()
    strategy = st.selectbox("Strategy", names, key=shared.kept("sample_strategy", "kde", names),
                            format_func=experiment.strategy_title)
    st.caption(experiment.strategy_description(strategy))
    params = {}
    for parameter in experiment.strategy_parameters(strategy):
        key = shared.kept(f"param_{strategy}_{parameter.name}", parameter.default, parameter.options or None)
        label = parameter.name.replace("_", " ")
        if parameter.kind == "choice":
            params[parameter.name] = st.selectbox(label, parameter.options, key=key)
        elif parameter.kind == "bool":
            params[parameter.name] = st.checkbox(label, key=key)
        elif parameter.kind == "int":
            params[parameter.name] = int(st.number_input(label, step=1, key=key))
        elif parameter.kind == "float":
            params[parameter.name] = float(st.number_input(label, format="%.4g", key=key))
        elif parameter.kind == "optional_float":
            value = st.number_input(f"{label} (empty = automatic)", format="%.4g", key=key)
            params[parameter.name] = None if value is None else float(value)
        else:
            params[parameter.name] = st.text_input(label, key=key)
with anchor_column:
    anchor_options = [REGION, TOP] if region is not None else [TOP]
    anchor_source = st.radio("Anchors", anchor_options, key=shared.kept("sample_anchors", anchor_options[0], anchor_options),
                             captions=[region["label"], ""] if region else None)
    if anchor_source == TOP:
        top = st.slider("k %", 1, 100, key=shared.kept("sample_top", 30),
                        help="the best k % (by test accuracy) of the train split's embedded models, all epochs")
    try:
        if anchor_source == REGION:
            anchor_rows, anchor_label = np.asarray(region["rows"]), f"anchors: {region['label']}"
        else:
            anchor_rows = experiment.top_train_anchors(table, top / 100)
            anchor_label = experiment.top_anchors_label(top / 100)
    except ValueError as err:
        anchor_rows, anchor_label = None, f"No anchors: {err}"
        st.warning(anchor_label)
    requested = st.number_input("Number of models", min_value=1, max_value=1_000_000, step=10,
                                key=shared.kept("sample_n", 100))
    seed = int(st.number_input("Seed", min_value=0, step=1, key=shared.kept("sample_seed", 0)))
    cost = experiment.strategy_cost(strategy, params, int(requested))
    if cost:
        st.caption(f"cost of the guidance: {cost}")
    if strategy in experiment.TRAINED_STRATEGIES:
        st.caption("trained on the anchors first (in the background, with a stop button); a trained sampler is "
                   "kept for the session and reused while the hyper-representation, anchors and parameters stay")
    clicked = st.button("Sample", type="primary", key="sample_button", icon=":material/casino:")

request = {"strategy": strategy, "params": params, "anchor_rows": anchor_rows, "anchor_label": anchor_label,
           "requested": int(requested), "seed": seed}
status_area = st.container()
results_area = st.container()
comparison_area = st.container()


# -- drawing the results -------------------------------------------------------------------------------
def group_colour(group: str) -> str:
    for start, colour in (("samples", "crimson"), ("anchors", "royalblue"), ("zoo", "darkgray"), ("B_T", "black"),
                          ("noise", "orange")):
        if group.startswith(start):
            return colour
    return "seagreen"


def accuracy_figure(groups: dict, title: str):
    long = summaries.accuracy_groups(groups)
    figure = px.histogram(long, x="accuracy", color="group", barmode="overlay", histnorm="percent", nbins=50,
                          title=title, range_x=[0, 1], color_discrete_map={g: group_colour(g) for g in groups})
    figure.update_traces(opacity=0.6)
    figure.update_layout(height=340, margin=dict(t=50, b=10), legend=dict(orientation="h", y=-0.2))
    return figure


def zoo_groups() -> dict:
    """The zoo's stored test accuracies at its last saved epoch."""
    last = max(zoo.epochs)
    return {f"zoo (epoch {last})": zoo.properties.loc[zoo.properties["epoch"] == last, "test_acc"].to_numpy()}


def reference_groups(run: SampleRun) -> dict:
    """Accuracies that need no evaluation: the anchors' and the zoo's last epoch, as stored."""
    return {"anchors": table["test_acc"].to_numpy()[run.anchor_rows]} | zoo_groups()


def show_results(run: SampleRun, area) -> None:
    with area:
        for level, message in run.messages:
            getattr(st, level)(message)
        full = run.full
        n, invalid = len(full.accuracy), full.n_invalid
        if invalid:
            st.warning(f"{invalid} of {n} decoded models are not finite (NaN/inf weights or outputs); "
                       "they are left out of every statistic.")
        valid = full.valid_accuracy()
        a, b, c, d = st.columns(4)
        a.metric("models", f"{n - invalid:,} / {n:,} finite")
        b.metric("mean test acc.", f"{valid.mean():.1%}" if valid.size else "–")
        c.metric("best", f"{valid.max():.1%}" if valid.size else "–")
        anchors_mean = table["test_acc"].to_numpy()[run.anchor_rows].mean()
        d.metric("anchors' mean", f"{anchors_mean:.1%}")
        groups = {"samples": full.accuracy} | reference_groups(run) | run.baselines
        st.plotly_chart(accuracy_figure(groups, f"test accuracy: {run.strategy} samples vs anchors, zoo and baselines"),
                        key="results_plot")
        summary = summaries.describe_accuracy(groups)
        st.dataframe(summary.style.format({c: "{:.1%}" for c in ("mean", "median", "best", "worst")}), hide_index=True)
        st.caption(f"samples: all {len(found.test_data):,} test images; anchors and zoo: their stored test accuracy; "
                   f"baselines: first {run.quick_images:,} test images. {run.anchor_label}. Seconds after the click: "
                   + " · ".join(f"{k} {v:.1f}" for k, v in run.timings.items()))


def add_frontier(figure, run: SampleRun) -> None:
    """The frontier of the anchors in use (its references and their upper envelope) and the
    samples' median distance and mean accuracy, on the novelty scatter."""
    curve, points = run.frontier.curve(0), run.frontier.table()
    figure.add_trace(go.Scatter(x=curve["distance"].tolist(), y=curve["accuracy"].tolist(), mode="lines", name="frontier",
                                line=dict(color="black", width=2)))
    figure.add_trace(go.Scatter(x=points["distance_median"].tolist(), y=points["accuracy_mean"].tolist(), mode="markers",
                                name="frontier references", text=points["label"].tolist(), hoverinfo="text+x+y",
                                marker=dict(color="gray", size=7, symbol="diamond")))
    delta = run.frontier_delta
    figure.add_trace(go.Scatter(x=[float(delta["distance"])], y=[float(delta["frontier_accuracy"] + delta["delta"])],
                                mode="markers", name="samples (median distance, mean accuracy)",
                                marker=dict(color="crimson", size=14, symbol="star")))


def show_comparisons(run: SampleRun, area) -> None:
    with area:
        map_column, novelty_column = st.columns(2)
        with map_column:
            st.subheader("Samples on the map")
            figure = go.Figure()
            figure.add_trace(go.Scattergl(x=table["map_x"], y=table["map_y"], mode="markers", name="zoo",
                                          marker=dict(size=5, color="lightgray"), hoverinfo="skip"))
            anchors = table.iloc[run.anchor_rows]
            figure.add_trace(go.Scattergl(x=anchors["map_x"], y=anchors["map_y"], mode="markers", name="anchors",
                                          marker=dict(size=6, color="royalblue", opacity=0.5), hoverinfo="skip"))
            if run.map_xy is not None:
                figure.add_trace(go.Scattergl(
                    x=run.map_xy[:, 0], y=run.map_xy[:, 1], mode="markers", name="samples",
                    marker=dict(size=11, color="crimson", symbol="x", line=dict(width=1, color="white")),
                    text=[f"sample {i}: acc. {a:.1%}" for i, a in enumerate(run.full.accuracy)], hoverinfo="text",
                ))
            figure.update_layout(height=420, margin=dict(t=10, b=10), legend=dict(orientation="h", y=-0.1))
            st.plotly_chart(figure, key="samples_map")
            st.caption("Samples placed between their 5 nearest embedded zoo models in latent space (no map refit).")
        with novelty_column:
            st.subheader("New or copies?")
            if run.novelty is not None:
                figure = px.scatter(run.novelty, x="distance", y="accuracy", color="group",
                                    hover_data=["nearest_model_id", "nearest_epoch", "misclassification_iou"],
                                    labels={"distance": "distance to nearest zoo model (any neuron order)",
                                            "accuracy": f"accuracy (first {run.quick_images:,} images)"})
                if run.frontier is not None:
                    add_frontier(figure, run)
                figure.update_layout(height=420, margin=dict(t=10, b=10), legend=dict(orientation="h", y=-0.2))
                st.plotly_chart(figure, key="novelty_plot")
                samples = run.novelty[run.novelty["group"] == "samples"]
                distance = summaries.finite_median(samples["distance"])
                overlap = summaries.finite_median(samples["misclassification_iou"])
                st.caption(
                    f"median distance {distance:.3g}, median mistake overlap (IoU) with the nearest zoo model "
                    f"{overlap:.2f}; a copy has distance 0 and IoU 1. The noise baseline adds Gaussian noise to "
                    "anchors at the samples' median distance."
                )
                if run.frontier_delta is not None:
                    st.markdown(delta_statement(run.frontier_delta, run.quick_images))
        if run.ensembles:
            st.subheader("Ensembles")
            columns = st.columns(len(run.ensembles))
            for column, (label, value) in zip(columns, run.ensembles.items()):
                column.metric(label, f"{value:.1%}" if np.isfinite(value) else "–")
            st.caption(f"averaged softmax of the members, on the first {run.quick_images:,} test images")
        with st.expander("Sampled models"):
            st.dataframe(run.members_table(), hide_index=True)


# -- running a request ------------------------------------------------------------------------------
def run_request(request: dict, sampler=None) -> SampleRun | None:
    """Sample (with `sampler` when it was trained already), first estimate, full evaluation; the run
    goes into the session as soon as it is evaluated."""
    strategy, params, anchor_rows = request["strategy"], request["params"], request["anchor_rows"]
    n, capped = settings.capped_request(request["requested"])
    if capped:
        st.warning(capped)
    if anchor_rows is None:
        st.error(request["anchor_label"])
        return None
    with status_area.status(f"Sampling {n} models with {strategy}…", expanded=True) as status:
        try:
            needed = experiment.guidance_images_needed(strategy, params)
            train, steps = None, None
            if needed:
                train = shared.training_images(zoo, needed, str(found.device))
                st.write(f"Guided latent steps on {len(train):,} training images…")
                steps = ThrottledProgress(st.progress(0.0).progress, "steps")
            if sampler is not None and sampler.steps_done_ < sampler.steps:
                st.write(f"Training stopped after {sampler.steps_done_:,} of {sampler.steps:,} steps: sampling with "
                         "the network trained so far.")
            run = experiment.start_run(model, strategy, params, anchor_rows, request["anchor_label"], n,
                                       request["seed"], found.model_key, activation=zoo.activation, train=train,
                                       progress=steps, sampler=sampler)
        except (ValueError, RuntimeError) as err:  # ArtifactError (no training images) is a ValueError
            status.update(label="Sampling failed", state="error")
            st.error(f"Could not sample: {err}")
            return None
        if capped:
            run.messages.append(("warning", capped))
        st.write(f"First estimate on {min(experiment.QUICK_IMAGES, len(found.test_data)):,} test images…")
        quick_data = experiment.first_estimate(run, zoo, found.test_data)
        estimate = results_area.empty()
        estimate.plotly_chart(accuracy_figure({"samples": run.quick.accuracy} | reference_groups(run),
                                              f"first estimate: {len(quick_data):,} test images"), key="quick_estimate")
        st.write(f"All {len(found.test_data):,} test images…")
        bar = st.progress(0.0)
        experiment.full_evaluation(run, zoo, found.test_data, progress=ThrottledProgress(bar.progress, "models"))
        st.session_state[shared.POPULATION] = run  # kept from here on, whatever happens next
        status.update(label=f"Evaluated {n} sampled models", state="complete", expanded=False)
    estimate.empty()
    return run


def comparisons(run: SampleRun) -> None:
    """Show the comparisons when they are done; else make sure they are computing in the background
    (started after sampling, or started again if the session lost the job) and look again each second."""
    if run.comparisons is not None:
        show_comparisons(run, comparison_area)
        return
    messages = len(run.messages)
    state = shared.comparison_state(run, zoo, model, table, found.test_data.first(run.quick_images))
    if state == "done" or len(run.messages) != messages:
        st.rerun()  # just finished or failed: their messages belong above the results
    if state == "running":
        with status_area:
            waiting_for_comparisons(run)


@st.fragment(run_every=1.0)
def waiting_for_comparisons(run: SampleRun) -> None:
    if shared.comparison_done(run):
        st.rerun(scope="app")
    st.status("Comparing with baselines, novelty and ensembles… (the samples are kept; other pages can be used meanwhile)",
              state="running", expanded=False)


def sample_and_compare(request: dict, sampler=None) -> None:
    finished = run_request(request, sampler)
    if finished is not None:
        shared.start_comparisons(finished, zoo, model, table, found.test_data.first(finished.quick_images))
        st.rerun()


def show_training(job: dict) -> None:
    """The running training's progress and its stop button, above the kept results."""
    with status_area:
        training_progress(job)
        st.button("Stop training and sample", key="stop_training", on_click=job["stop"].set, icon=":material/stop:",
                  help="ends training at the next step; the network trained so far draws the samples")


@st.fragment(run_every=0.5)
def training_progress(job: dict) -> None:
    if job["future"].done():
        st.rerun(scope="app")
    stopping = " (stopping…)" if job["stop"].is_set() else ""
    with st.status(f"Training {job['request']['strategy']} on {len(job['request']['anchor_rows']):,} anchors: "
                   f"step {job['done']:,} of {job['total']:,}{stopping}", state="running"):
        st.progress(job["done"] / max(job["total"], 1))


def trained_request() -> None:
    """Collect a finished background training and sample with it; show a running one."""
    try:
        finished = shared.finished_training()
    except (ValueError, RuntimeError) as err:
        status_area.error(f"Could not train the sampler: {err}")
        return
    if finished is not None:
        sample_and_compare(finished[0]["request"], finished[1])
    elif shared.TRAINING in st.session_state:
        show_training(st.session_state[shared.TRAINING])


if clicked and strategy in experiment.TRAINED_STRATEGIES and anchor_rows is not None:
    key = shared.trained_sampler_key(found.model_key, strategy, params, anchor_rows)
    kept = shared.trained_sampler(key)
    if kept is None:
        try:
            shared.start_training(model, key, request)
        except ValueError as err:
            status_area.error(f"Could not train the sampler: {err}")
        else:
            st.rerun()
    else:
        sample_and_compare(request, kept)
elif clicked:
    sample_and_compare(request)
else:
    trained_request()

run = st.session_state.get(shared.POPULATION)
if run is not None and run.model_key == found.model_key and not clicked:
    show_results(run, results_area)
    comparisons(run)
elif not clicked:
    with results_area:
        st.info("Choose a strategy and anchors, then press **Sample**.")
        if anchor_rows is not None:
            preview = {"anchors": table["test_acc"].to_numpy()[anchor_rows]} | zoo_groups()
            st.plotly_chart(accuracy_figure(preview, f"before sampling: the {len(anchor_rows):,} anchors vs the zoo"),
                            key="anchors_preview")
