"""The Streamlit explorer, driven headlessly with AppTest on a tiny zoo and hyper-representation.

The app reads HYPERREP_ZOO / HYPERREP_MODEL / HYPERREP_DATA, so these tests point it at artifacts
built in the test session. The UI-free helpers the pages call are tested directly at the end.
"""

from __future__ import annotations

import io
import json
import math
import threading
import tomllib
from concurrent import futures
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import point_app_at
from safetensors.torch import load as load_safetensors
from streamlit.runtime.pages_manager import PagesManager
from streamlit.testing.v1 import AppTest

from hyperrep.ae.artifact import load_hyperrep
from hyperrep.evaluation.frontier import anchors_population
from hyperrep.images.datasets import load_split
from hyperrep.io.files import ArtifactError, read_tensors, write_tensors
from hyperrep.nets.cnn import CNN_S
from hyperrep.nets.permutations import index_dict
from hyperrep.nets.population import evaluate_population
from hyperrep.pipeline import artifacts, experiment, export, summaries
from hyperrep.runtime import progress, settings
from hyperrep.sampling import baselines, regions, samplers as sampling
from hyperrep.sampling.baselines import anchor_weights
from hyperrep.zoo.format import Zoo, zoo_dataset_rule

APP = Path(__file__).resolve().parent.parent / "app.py"
PAGES = ["pages/overview.py", "pages/zoo.py", "pages/latent_map.py", "pages/sample.py", "pages/finetune.py", "pages/export.py",
         "pages/two_zoos.py"]


@pytest.fixture()
def app_env(monkeypatch, tiny_zoo_path, tiny_hyperrep_path, idx_dir, tmp_path):
    """Point the app at the tiny artifacts (2,000 test images) and keep imports in tmp_path."""
    point_app_at(monkeypatch, tmp_path, zoo=tiny_zoo_path, model=tiny_hyperrep_path, data=idx_dir)
    return {"zoo": tiny_zoo_path, "model": tiny_hyperrep_path, "data": idx_dir}


def start(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    if page is not None:
        at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def texts(elements) -> str:
    return "\n".join(str(element.value) for element in elements)


def metric(at: AppTest, label: str) -> str:
    values = [m.value for m in at.metric if m.label == label]
    assert values, f"no metric {label!r}; have {[m.label for m in at.metric]}"
    return values[0]


def sample(at: AppTest, n: int, strategy: str | None = None, wait: bool = True) -> AppTest:
    """Press Sample; with `wait`, also let the background comparisons finish and show them."""
    if strategy is not None:
        at.selectbox(key="sample_strategy").set_value(strategy).run()
    at.number_input(key="sample_n").set_value(n)
    at.button(key="sample_button").click().run()
    assert not at.exception, at.exception
    if wait:
        wait_for_comparisons(at)
    return at


def wait_for_comparisons(at: AppTest) -> AppTest:
    """Wait for the background comparison job of the session (if any), then rerun the page to show it
    (in the browser a fragment looks every second; AppTest does not run timed fragments)."""
    if "comparison_job" in at.session_state:
        futures.wait([at.session_state["comparison_job"]["future"]], timeout=120)
        at.run()
        assert not at.exception, at.exception
    return at


def chart_keys(at: AppTest) -> list[str]:
    return [chart.proto.id.rsplit("-", 1)[-1] for chart in at.get("plotly_chart")]


# -- pages --------------------------------------------------------------------------------------


def test_overview_names_the_loaded_artifacts(app_env):
    at = start()
    zoo = Zoo.load(app_env["zoo"])
    assert "tiny" in texts(at.markdown)
    assert metric(at, "models") == "12"
    assert metric(at, "saved epochs") == "0–2"
    last = zoo.properties[zoo.properties["epoch"] == 2]["test_acc"].median()
    assert metric(at, "median test acc.") == f"{last:.1%}"
    assert "latent dimension **8**" in texts(at.markdown)
    agreement = load_hyperrep(app_env["model"]).metrics["quality"]["test"]["mean_model"]["prediction_agreement"]
    assert f"same predictions on {agreement:.1%} of the images" in texts(at.caption)
    assert "device: `cpu`, up to 1 thread(s)" in texts(at.sidebar.caption)
    assert not at.error


def test_pages_always_run_inside_the_frame(app_env, monkeypatch):
    """Without the steady-state patch every AppTest run starts in Streamlit's legacy pages/ router;
    the app must still end up running app.py (sidebar, navigation) around the requested page."""
    monkeypatch.undo()
    for name, value in (("HYPERREP_ZOO", app_env["zoo"]), ("HYPERREP_MODEL", app_env["model"]),
                        ("HYPERREP_DATA", app_env["data"])):
        monkeypatch.setenv(name, str(value))
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert at.title[0].value == "hyperrep explorer" and at.text_input(key="zoo_path")
    at.switch_page("pages/sample.py").run()
    assert at.title[0].value == "Sample & evaluate"
    assert at.text_input(key="zoo_path") and at.text_input(key="model_path"), (
        "a page ran without app.py around it: Streamlit's legacy pages/ router was not left "
        "(pages/shared.py, leave_legacy_router)")


def test_the_legacy_router_workaround_still_applies():
    """pages/shared.leave_legacy_router turns Streamlit's legacy pages/ router off through the class
    attribute PagesManager.uses_pages_directory; test_pages_always_run_inside_the_frame checks that it
    works. This says clearly what broke when a Streamlit release drops the attribute, and that
    pyproject.toml allows only the Streamlit version the suite passed on."""
    import streamlit
    from packaging.requirements import Requirement

    assert "uses_pages_directory" in vars(PagesManager), (
        f"Streamlit {streamlit.__version__} has no PagesManager.uses_pages_directory: the legacy pages/ router "
        "workaround (pages/shared.py, leave_legacy_router) no longer applies; adapt it before allowing this release")
    root = APP.parent
    pinned = [line for line in (root / "requirements.txt").read_text().splitlines() if line.startswith("streamlit==")]
    allowed = next(Requirement(d) for d in tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
                   if d.startswith("streamlit"))
    assert pinned == [f"streamlit=={streamlit.__version__}"] and streamlit.__version__ in allowed.specifier, (
        f"tests run on Streamlit {streamlit.__version__}; requirements.txt pins {pinned}, pyproject allows {allowed}")
    assert not allowed.specifier.contains("1.68.0") and not allowed.specifier.contains("1.66.0"), (
        f"pyproject allows untested Streamlit releases: {allowed}")


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_without_errors(app_env, page):
    at = start(page)
    assert not at.error, texts(at.error)
    assert at.title, "every page has a title"


def test_zoo_page_plots_and_filters_the_table(app_env):
    at = start("pages/zoo.py")
    assert {"zoo_trajectories", "zoo_histograms"} <= set(chart_keys(at))
    table = Zoo.load(app_env["zoo"]).properties
    assert f"{(table['epoch'] == 2).sum()} of {len(table)} rows" in texts(at.caption)
    at.multiselect(key="zoo_table_epochs").set_value([0, 1, 2])
    at.slider(key="zoo_table_acc").set_value((0.5, 1.0)).run()
    expected = int(table["test_acc"].between(0.5, 1.0).sum())
    assert f"{expected} of {len(table)} rows" in texts(at.caption)


def test_latent_map_region_from_widgets(app_env):
    at = start("pages/latent_map.py")
    assert "latent_map" in chart_keys(at)
    at.selectbox(key="region_split").set_value("train")
    at.slider(key="region_accuracy").set_value((0.3, 1.0))
    at.slider(key="region_top").set_value(50).run()
    table = load_hyperrep(app_env["model"]).latent_table
    pool = table[(table["split"] == "train") & table["test_acc"].between(0.3, 1.0)]["test_acc"].to_numpy()
    expected = int((pool >= np.quantile(pool, 0.5)).sum())
    assert metric(at, "anchors") == str(expected)
    region = at.session_state["region"]
    assert len(region["rows"]) == expected
    assert table.iloc[region["rows"]]["test_acc"].min() >= np.quantile(pool, 0.5)


def test_widget_choices_survive_page_switches(app_env):
    at = start("pages/latent_map.py")
    at.slider(key="region_top").set_value(55)
    at.selectbox(key="map_colour").set_value("epoch").run()
    at.switch_page("pages/zoo.py").run()
    at.switch_page("pages/latent_map.py").run()
    assert at.slider(key="region_top").value == 55 and at.selectbox(key="map_colour").value == "epoch"


def test_empty_region_warns_and_the_app_keeps_working(app_env):
    at = start("pages/latent_map.py")
    at.slider(key="region_accuracy").set_value((0.99, 1.0)).run()
    assert "Empty region" in texts(at.warning)
    assert "region" not in at.session_state
    at.switch_page("pages/sample.py").run()
    assert not at.exception and not at.error
    assert at.radio(key="sample_anchors").options == ["Top-k % of the train split"]


def test_sample_flow_evaluates_the_decoded_models(app_env):
    at = start("pages/sample.py")
    assert chart_keys(at) == ["anchors_preview"]
    sample(at, 5, strategy="gaussian")
    assert not at.error, texts(at.error)
    run = at.session_state["population"]
    assert run.strategy == "gaussian" and run.population.weights.shape == (5, 2464)
    assert {"results_plot", "samples_map", "novelty_plot"} <= set(chart_keys(at))
    assert metric(at, "models") == "5 / 5 finite"
    test = load_split("test", app_env["data"])
    direct = evaluate_population(CNN_S, "tanh", run.population.weights, test)
    np.testing.assert_allclose(run.full.accuracy, direct.accuracy, atol=1e-6)
    assert metric(at, "mean test acc.") == f"{direct.accuracy.mean():.1%}"
    assert run.quick_images == 1000 and run.map_xy.shape == (5, 2)
    assert set(run.novelty["group"]) == {"samples", next(k for k in run.baselines if k.startswith("noise"))}
    assert (run.novelty["distance"] > 0).all()
    assert "B_T (random init)" in run.baselines and len(run.baselines["B_T (random init)"]) == 5
    summary = at.dataframe[0].value
    assert list(summary["group"])[:3] == ["samples", "anchors", "zoo (epoch 2)"]


def test_new_or_copies_draws_the_frontier_of_the_anchors_in_use(app_env):
    at = start("pages/sample.py")
    sample(at, 6, strategy="kde")
    run = at.session_state["population"]
    frontier, delta = run.frontier, run.frontier_delta
    assert [p.label for p in frontier.points][:2] == ["anchors", "noise σ=0.02"]
    assert frontier.points[0].distance.max() == 0.0  # the anchors in use are zoo models
    zoo, table = Zoo.load(app_env["zoo"]), load_hyperrep(app_env["model"]).latent_table
    anchors = anchors_population(anchor_weights(zoo, table, run.anchor_rows), 12, run.seed)  # those of the run
    first = evaluate_population(CNN_S, "tanh", anchors.weights, load_split("test", app_env["data"]).subset(np.arange(1000)))
    assert frontier.points[0].accuracy[:, 0] == pytest.approx(first.accuracy)
    figure = json.loads(next(c for c in at.get("plotly_chart") if c.proto.id.endswith("novelty_plot")).proto.spec)
    traces = {trace["name"]: trace for trace in figure["data"]}
    curve = frontier.curve(0)
    np.testing.assert_allclose(np.array(traces["frontier"]["x"], dtype=float), curve["distance"])
    np.testing.assert_allclose(np.array(traces["frontier"]["y"], dtype=float), curve["accuracy"])  # None -> NaN
    points = frontier.table()
    np.testing.assert_allclose(traces["frontier references"]["y"], points["accuracy_mean"])
    samples = run.novelty[run.novelty["group"] == "samples"]
    assert delta["distance"] == pytest.approx(np.median(samples["distance"]))
    assert delta["delta"] == pytest.approx(np.nanmean(run.quick.accuracy) - frontier.accuracy_at(delta["distance"], 0))
    star = traces["samples (median distance, mean accuracy)"]
    assert star["y"][0] == pytest.approx(np.nanmean(run.quick.accuracy))
    assert_delta_statement(at, delta)


def assert_delta_statement(at: AppTest, delta: dict) -> None:
    """The page states the samples' Δ with its CI, in the words of frontier.delta_statement."""
    statement = texts(at.markdown)
    if np.isfinite(delta["delta"]):
        assert f"Δ = {100 * delta['delta']:+.1f} pp [95 % CI {100 * delta['delta_lo']:+.1f}, {100 * delta['delta_hi']:+.1f}]" in statement
    else:
        assert "no Δ to state" in statement


def test_guided_sampler_on_the_sample_page(app_env):
    """The guided sampler is a strategy of the Sample page: its parameters and cost are shown, its
    samples are the package's (experiment.draw_population on the same training images) and they
    get the same comparisons and frontier Δ as every other sampler."""
    at = start("pages/sample.py")
    at.selectbox(key="sample_strategy").set_value("guided").run()
    assert at.selectbox(key="param_guided_base").value == "kde" and "gaussian" in at.selectbox(key="param_guided_base").options
    assert at.number_input(key="param_guided_step_size").value == pytest.approx(0.1)
    at.number_input(key="param_guided_steps").set_value(3)
    at.number_input(key="param_guided_images").set_value(64)
    at.number_input(key="sample_n").set_value(5).run()
    assert "cost of the guidance: 3 steps × 64 images × 5 models = 960 " in texts(at.caption)
    sample(at, 5)
    assert not at.error, texts(at.error)
    run = at.session_state["population"]
    assert run.strategy == "guided" and run.params == {"base": "kde", "steps": 3, "images": 64, "step_size": 0.1}
    assert metric(at, "models") == "5 / 5 finite"
    assert {"results_plot", "samples_map", "novelty_plot"} <= set(chart_keys(at))
    zoo, hyperrep = Zoo.load(app_env["zoo"]), load_hyperrep(app_env["model"])
    train = zoo_dataset_rule(zoo.manifest, app_env["data"]).training_images(64, 0, app_env["data"])
    direct = experiment.draw_population(hyperrep, "guided", run.params, run.anchor_rows, 5, run.seed,
                                        activation=zoo.activation, train=train)
    torch.testing.assert_close(run.population.latents, direct.latents, atol=1e-5, rtol=1e-5)
    start_only = experiment.draw_population(hyperrep, "kde", {}, run.anchor_rows, 5, run.seed)
    assert not torch.allclose(run.population.latents, start_only.latents, atol=1e-4)  # the steps moved them
    delta = run.frontier_delta
    assert delta is not None and delta["distance"] == pytest.approx(
        np.median(run.novelty.loc[run.novelty["group"] == "samples", "distance"]))
    figure = json.loads(next(c for c in at.get("plotly_chart") if c.proto.id.endswith("novelty_plot")).proto.spec)
    assert {"frontier", "samples (median distance, mean accuracy)"} <= {trace["name"] for trace in figure["data"]}
    assert_delta_statement(at, delta)


def test_guided_sampler_with_bad_parameters_is_a_clear_error(app_env):
    at = start("pages/sample.py")
    at.selectbox(key="sample_strategy").set_value("guided").run()
    at.number_input(key="param_guided_images").set_value(0)
    sample(at, 3, wait=False)
    assert "images must be at least 1" in texts(at.error)
    assert "population" not in at.session_state


def test_sample_uses_the_region_from_the_map_page(app_env):
    at = start("pages/latent_map.py")
    at.slider(key="region_top").set_value(100)
    at.selectbox(key="region_split").set_value("all").run()
    at.switch_page("pages/sample.py").run()
    assert at.radio(key="sample_anchors").value == "Region from the latent map"
    sample(at, 3, strategy="uniform")
    run = at.session_state["population"]
    assert len(run.anchor_rows) == 36 and "all splits" in run.anchor_label


def test_too_few_anchors_is_a_clear_error(app_env):
    at = start("pages/latent_map.py")
    at.slider(key="region_top").set_value(1).run()
    assert metric(at, "anchors") == "1"
    at.switch_page("pages/sample.py").run()
    sample(at, 3, strategy="gaussian")
    assert "needs at least 2 anchors, got 1" in texts(at.error)
    assert "population" not in at.session_state
    assert at.button(key="sample_button")  # the page is still there


def test_a_too_large_request_is_capped_with_a_message(app_env, monkeypatch):
    monkeypatch.setattr(settings, "MAX_SAMPLES", 4)
    at = start("pages/sample.py")
    sample(at, 50, strategy="kde")
    assert "asked for 50 models; capped at 4" in texts(at.warning)
    assert len(at.session_state["population"].population.weights) == 4


def test_non_finite_decoded_models_are_reported_not_fatal(app_env, tmp_path, monkeypatch):
    broken = tmp_path / "broken_hyperrep"
    broken.mkdir()
    for path in Path(app_env["model"]).iterdir():
        if path.is_file():
            (broken / path.name).write_bytes(path.read_bytes())
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps(config | {"zoo": str(app_env["zoo"])}))
    state = read_tensors(broken / "model.safetensors")
    state["decoder.nec2vec.bias"][0] = float("nan")  # every decoded model is NaN
    write_tensors(broken / "model.safetensors", state)
    monkeypatch.setenv("HYPERREP_MODEL", str(broken))
    at = start("pages/sample.py")
    sample(at, 4, strategy="uniform")
    assert "4 of 4 decoded models are not finite" in texts(at.warning)
    assert metric(at, "models") == "0 / 4 finite"
    assert not at.exception


def test_invalid_and_corrupt_paths_are_errors_in_the_sidebar(app_env, tmp_path):
    at = start()
    at.text_input(key="zoo_path").set_value(str(tmp_path / "nowhere")).run()
    assert not at.exception
    assert "nowhere: directory not found" in texts(at.sidebar.error)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "zoo.json").write_text("{not json")
    at.text_input(key="zoo_path").set_value(str(corrupt)).run()
    assert "not valid JSON" in texts(at.sidebar.error)
    at.switch_page("pages/zoo.py").run()
    assert "No zoo loaded" in texts(at.warning) and not at.exception
    at.text_input(key="model_path").set_value(str(app_env["zoo"])).run()
    assert "not a hyper-representation" in texts(at.sidebar.error)
    at.text_input(key="zoo_path").set_value(str(app_env["zoo"])).run()
    at.switch_page("pages/latent_map.py").run()
    assert "No hyper-representation loaded" in texts(at.warning)


def write_modelzoo(root: Path, zoo: Zoo, count: int) -> None:
    """A public Model Zoo directory (ray-tune layout) holding the first `count` models of `zoo`."""
    for position, model_id in enumerate(zoo.model_ids.tolist()[:count]):
        folder = root / f"NN_tune_trainable_{position}_seed={model_id}"
        folder.mkdir(parents=True)
        (folder / "params.json").write_text(json.dumps({"seed": model_id, "model::nlin": "tanh"}))
        rows = zoo.properties[zoo.properties["model_id"] == model_id]
        lines = [json.dumps({"training_iteration": int(r.epoch), "test_acc": float(r.test_acc), "test_loss": 1.0,
                             "train_acc": 0.5, "train_loss": 1.0}) for r in rows.itertuples()]
        (folder / "result.json").write_text("\n".join(lines) + "\n")
        for position_epoch, epoch in enumerate(zoo.epochs):
            (folder / f"checkpoint_{epoch}").mkdir()
            state = zoo.architecture.vector_to_state_dict(zoo.weights[position, position_epoch])
            torch.save(state, folder / f"checkpoint_{epoch}" / "checkpoints")


def test_a_public_model_zoo_directory_is_imported(app_env, tmp_path):
    source = tmp_path / "tune_zoo_f_mnist_uniform"
    write_modelzoo(source, Zoo.load(app_env["zoo"]), 3)
    at = start()
    at.text_input(key="zoo_path").set_value(str(source)).run()
    assert not at.exception and not at.sidebar.error
    assert "3 models, epochs [0, 1, 2]" in texts(at.sidebar.caption)
    assert metric(at, "models") == "3"
    assert any("imported 3 of 3 models" in info for info in texts(at.info).splitlines())


def test_a_paper_artifact_is_embedded_with_the_zoo(app_env, tmp_path):
    tiny = load_hyperrep(app_env["model"]).model
    config = tiny.config
    paper_config = {
        "model::type": "transformer", "model::encoding": "neuron", "model::i_dim": 2464, "model::index_dict": index_dict(CNN_S),
        "model::N_attention_blocks": config.n_blocks, "model::N_attention_heads": config.n_heads,
        "model::dim_attention_embedding": config.d_model, "model::attention_hidden_dim": config.d_ff,
        "model::latent_dim": config.latent_dim, "model::dropout": 0.0, "model::normalize": True,
        "model::compression": "linear", "model::bottleneck": config.bottleneck, "model::decoder_bias": False,
    }
    paper = tmp_path / "paper_ae"
    paper.mkdir()
    (paper / "config_ae.json").write_text(json.dumps(paper_config))
    torch.save({k: v for k, v in tiny.state_dict().items() if k.startswith(("encoder.", "decoder."))},
               paper / "checkpoint_ae.pt")
    at = start()
    at.text_input(key="model_path").set_value(str(paper)).run()
    assert not at.exception and not at.sidebar.error, texts(at.sidebar.error)
    assert "latent dim 8, 36 embedded models" in texts(at.sidebar.caption)
    at.switch_page("pages/latent_map.py").run()
    assert "stored PCA (computed on load) map" in texts(at.caption)
    own = load_hyperrep(app_env["model"])
    with torch.no_grad():
        expected = tiny.encode(Zoo.load(app_env["zoo"]).weights.reshape(-1, 2464))
    hyperrep = artifacts.paper_hyperrep(paper, Zoo.load(app_env["zoo"]))
    torch.testing.assert_close(hyperrep.latents, expected, atol=1e-5, rtol=1e-5)
    assert hyperrep.latent_table[["model_id", "epoch"]].equals(own.latent_table[["model_id", "epoch"]])


def held_comparisons(monkeypatch) -> threading.Event:
    """Make the background comparisons wait for the returned event (as slow ones would)."""
    release, original = threading.Event(), experiment.compare

    def slow_compare(*args, **kwargs):
        assert release.wait(timeout=120), "the test never released the comparisons"
        return original(*args, **kwargs)

    monkeypatch.setattr(experiment, "compare", slow_compare)
    return release


def test_samples_are_kept_when_leaving_the_page_during_the_comparisons(app_env, monkeypatch):
    release = held_comparisons(monkeypatch)
    at = start("pages/sample.py")
    sample(at, 4, strategy="kde", wait=False)
    run = at.session_state["population"]  # stored as soon as it is evaluated
    assert run.full is not None and run.comparisons is None
    assert "results_plot" in chart_keys(at) and "novelty_plot" not in chart_keys(at)
    at.run()  # a rerun mid-comparison keeps the samples and the running job
    assert at.session_state["population"] is run and not at.session_state["comparison_job"]["future"].done()
    at.switch_page("pages/finetune.py").run()
    assert not at.exception and "Sample a population first" not in texts(at.info)
    assert at.button(key="finetune_button") and "The kde samples" in texts(at.caption)
    at.switch_page("pages/export.py").run()
    assert len(at.dataframe[0].value) == 4 and "still running" in texts(at.caption)
    release.set()
    at.switch_page("pages/sample.py").run()
    wait_for_comparisons(at)
    assert at.session_state["population"] is run and run.comparisons is not None
    assert {"results_plot", "samples_map", "novelty_plot"} <= set(chart_keys(at))


def test_comparisons_lost_by_the_session_are_started_again(app_env):
    at = start("pages/sample.py")
    sample(at, 3, strategy="kde", wait=False)
    futures.wait([at.session_state["comparison_job"]["future"]], timeout=120)
    del at.session_state["comparison_job"]  # e.g. a job that never ran: the page starts it again
    at.run()
    wait_for_comparisons(at)
    assert at.session_state["population"].comparisons is not None and "novelty_plot" in chart_keys(at)


def test_failed_comparisons_keep_the_samples(app_env, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no memory left")

    monkeypatch.setattr(experiment, "compare", broken)
    at = start("pages/sample.py")
    sample(at, 3, strategy="kde")
    assert "The comparisons failed (RuntimeError: no memory left); the samples are kept." in texts(at.error)
    assert metric(at, "models") == "3 / 3 finite" and at.session_state["population"].comparisons is None
    at.run()  # a failed job is reported once, not started over and over
    assert isinstance(at.session_state["comparison_job"]["future"].exception(), RuntimeError)
    assert texts(at.error).count("The comparisons failed") == 1


def test_fine_tune_and_export_after_sampling(app_env):
    at = start("pages/sample.py")
    sample(at, 4, strategy="kde")
    at.switch_page("pages/finetune.py").run()
    at.number_input(key="ft_models").set_value(2)
    at.number_input(key="ft_epochs").set_value(1)
    at.select_slider(key="ft_train_images").set_value(500)
    at.select_slider(key="ft_test_images").set_value(500)
    at.button(key="finetune_button").click().run()
    assert not at.exception and not at.error, texts(at.error)
    assert "finetune_plot" in chart_keys(at)
    curves = at.dataframe[0].value
    assert list(curves["population"].unique()) == ["samples", "B_T (from scratch)", "B_F (zoo, last epoch)"]
    assert list(curves["epoch"]) == [0, 1] * 3 and (curves["members"] == 2).all()
    assert (curves["low"] <= curves["mean"]).all() and (curves["mean"] <= curves["high"]).all()

    at.switch_page("pages/export.py").run()
    assert not at.exception
    run = at.session_state["population"]
    assert [b.key for b in at.get("download_button")] == ["download_population", "download_weights", "download_csv"]
    assert len(at.dataframe[0].value) == 4 and "test_acc" in at.dataframe[0].value.columns
    assert run.strategy == "kde"


# -- the UI-free helpers ----------------------------------------------------------------------------


def test_artifact_kind_recognises_each_directory(tiny_zoo_path, tiny_hyperrep_path, tmp_path):
    assert artifacts.artifact_kind(tiny_zoo_path) == artifacts.ZOO
    assert artifacts.artifact_kind(tiny_hyperrep_path) == artifacts.HYPERREP
    paper = tmp_path / "paper"
    paper.mkdir()
    (paper / "config_ae.json").write_text("{}")
    assert artifacts.artifact_kind(paper) == artifacts.PAPER
    write_modelzoo(tmp_path / "mz", Zoo.load(tiny_zoo_path), 1)
    assert artifacts.artifact_kind(tmp_path / "mz") == artifacts.MODELZOO
    with pytest.raises(ArtifactError, match="directory not found"):
        artifacts.artifact_kind(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ArtifactError, match="not a directory"):
        artifacts.artifact_kind(tmp_path / "file")
    (tmp_path / "building" / "partial").mkdir(parents=True)
    with pytest.raises(ArtifactError, match="has not finished"):
        artifacts.artifact_kind(tmp_path / "building")
    (tmp_path / "training" / "checkpoint").mkdir(parents=True)
    (tmp_path / "training" / "config.json").write_text("{}")
    with pytest.raises(ArtifactError, match="still in training"):
        artifacts.artifact_kind(tmp_path / "training")
    with pytest.raises(ArtifactError, match="not a zoo"):
        artifacts.artifact_kind(tmp_path / "paper" / "..")


def test_capped_request():
    assert settings.capped_request(10, cap=20) == (10, None)
    n, message = settings.capped_request(5000, cap=20)
    assert n == 20 and "capped at 20" in message
    assert settings.capped_request(0, cap=20)[0] == 1


def test_rows_from_selection_reads_custom_data_and_ignores_other_traces():
    selection = {"points": [{"customdata": [4]}, {"customdata": [2]}, {"customdata": [4]}, {"x": 1.0},
                            {"customdata": []}, {"customdata": 7.0}], "box": [], "lasso": []}
    assert regions.rows_from_selection(selection) == [2, 4, 7]
    assert regions.rows_from_selection(None) == []
    rows, label = regions.region_from_selection(selection, n_rows=10)
    assert rows.tolist() == [2, 4, 7] and "3 points" in label
    with pytest.raises(ValueError):
        regions.region_from_selection({"points": []}, n_rows=10)
    with pytest.raises(ValueError, match="out of range"):
        regions.region_from_selection(selection, n_rows=5)


def test_region_from_filters_counts():
    table = pd.DataFrame({"split": ["train"] * 6 + ["val"] * 2, "epoch": [0, 1] * 4,
                          "model_id": [1, 1, 2, 2, 3, 3, 4, 4], "test_acc": [0.1, 0.5, 0.2, 0.6, 0.3, 0.9, 0.4, 0.8]})
    rows, label = regions.region_from_filters(table, split="train", epochs=[1], accuracy=(0.0, 1.0), top_percent=100)
    assert rows.tolist() == [1, 3, 5] and "split train" in label and "epochs 1" in label
    rows, _ = regions.region_from_filters(table, split=None, epochs=None, accuracy=(0.0, 1.0), top_percent=25)
    assert rows.tolist() == [5, 7]
    with pytest.raises(ValueError, match="no anchors"):
        regions.region_from_filters(table, split="val", epochs=[0], accuracy=(0.5, 1.0), top_percent=100)


def test_sampler_parameters_follow_the_registry():
    kde = {p.name: p for p in sampling.sampler_parameters("kde")}
    assert set(kde) == {"bandwidth"} and kde["bandwidth"].kind == "optional_float"  # mode is fixed by the registry
    gmm = {p.name: p for p in sampling.sampler_parameters("gmm")}
    assert gmm["n_components"].kind == "int" and gmm["n_components"].default == 4
    assert sampling.sampler_parameters("gaussian")[0].kind == "bool"


def test_matched_noise_sigma_and_accuracy_tables():
    assert baselines.matched_noise_sigma(np.array([2.0, 4.0, np.nan, 6.0]), 16) == pytest.approx(1.0)
    assert baselines.matched_noise_sigma(np.array([np.nan]), 16) == 0.01
    summary = summaries.describe_accuracy({"a": np.array([0.5, np.nan, 0.7]), "b": np.array([0.2])})
    assert summary.loc[0, "not finite"] == 1 and summary.loc[0, "mean"] == pytest.approx(0.6)
    long = summaries.accuracy_groups({"a": np.array([0.5, np.nan, 0.7]), "b": np.array([0.2])})
    assert long["group"].tolist() == ["a", "a", "b"]


def test_learning_curves_band_is_the_95_percent_interval_of_the_mean():
    class Result:
        epochs = [0, 1]
        accuracy = np.array([[0.1, 0.5], [0.3, 0.7], [np.nan, np.nan]])

    curves = summaries.learning_curves({"samples": Result()})
    half = 1.96 * np.std([0.1, 0.3], ddof=1) / math.sqrt(2)
    assert curves["mean"].tolist() == pytest.approx([0.2, 0.6])
    assert curves["high"].iloc[0] - curves["mean"].iloc[0] == pytest.approx(half)
    assert curves["members"].tolist() == [2, 2]


def test_population_export_round_trip():
    weights, latents = torch.randn(3, 2464), torch.randn(3, 8)
    data = export.population_safetensors(weights, latents, {"strategy": "kde", "params": {"bandwidth": None}})
    loaded = load_safetensors(data)
    assert torch.equal(loaded["weights"], weights) and torch.equal(loaded["latents"], latents)
    table = pd.DataFrame({"sample": [0, 1, 2], "test_acc": [0.5, np.nan, 0.7]})
    assert pd.read_csv(io.BytesIO(export.population_csv(table)))["test_acc"].isna().tolist() == [False, True, False]


def test_headline_metrics_puts_reconstruction_quality_first():
    metrics = {"history": [{"loss": 1.0}], "train_seconds": 12.0,
               "quality": {"test": {"rsq": 0.8123, "acc_ratio_above_threshold": 0.95, "prediction_agreement": 0.9137,
                                    "mean_model": {"prediction_agreement": 0.7443}}, "val": {"rsq": 0.7}}}
    shown = summaries.headline_metrics(metrics)
    assert shown[0] == ("reconstruction R²", "0.812")
    assert shown[1] == ("accuracy kept", "95.0%")
    assert shown[2:4] == [("same predictions", "91.4%"), ("same predictions, zoo mean model", "74.4%")]
    assert ("quality/val/rsq", "0.7") in shown and all("history" not in label for label, _ in shown)


def test_throttled_progress_reports_every_step_and_the_end():
    shown = []
    callback = progress.ThrottledProgress(lambda fraction, text: shown.append((fraction, text)), "models", step=0.25)
    for done in range(0, 101):
        callback(done, 100)
    assert [f for f, _ in shown] == [0.0, 0.25, 0.5, 0.75, 1.0] and shown[-1][1] == "100/100 models"


def test_cpu_threads_default_to_one_per_core(monkeypatch):
    monkeypatch.delenv("HYPERREP_THREADS", raising=False)
    monkeypatch.setattr(settings.os, "cpu_count", lambda: 6)
    assert settings.cpu_threads() == 6
    monkeypatch.setenv("HYPERREP_THREADS", "4")
    assert settings.cpu_threads() == 4
    monkeypatch.setenv("HYPERREP_THREADS", "many")
    with pytest.raises(ValueError, match="HYPERREP_THREADS"):
        settings.cpu_threads()


def test_dataset_source_warns_for_other_datasets(monkeypatch):
    monkeypatch.delenv("HYPERREP_DATA", raising=False)
    source = artifacts.dataset_source({"dataset": {"name": "mnist", "normalisation": [0.1307, 0.3081]}})
    assert source.normalisation == (0.1307, 0.3081) and "mnist" in source.warning
    assert artifacts.dataset_source({"dataset": {"name": "fashion-mnist"}}).warning is None
