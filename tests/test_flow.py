"""The flow-matching sampler: it learns a toy distribution, is seeded, guides towards high scores,
stops early on request, saves and loads back only for its own hyper-representation, and runs from
the pipeline, the command line and the app."""

from __future__ import annotations

import re
from concurrent import futures
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import point_app_at
from streamlit.testing.v1 import AppTest

from hyperrep.ae.artifact import hyperrep_fingerprint, load_hyperrep
from hyperrep.cli import build_parser, main
from hyperrep.pipeline import experiment
from hyperrep.pipeline.export import read_population
from hyperrep.pipeline.report_types import ReportConfig
from hyperrep.sampling.flow import FlowMatchingSampler, flow_parameters, load_flow_sampler
from hyperrep.sampling.population import draw_from_fitted
from hyperrep.sampling.samplers import SAMPLERS, make_sampler

APP = Path(__file__).resolve().parent.parent / "app.py"
QUICK = dict(steps=600, width=64, depth=2)  # a second on one thread, enough for 2-D blobs
TINY = dict(steps=40, width=32, depth=1)  # the tiny hyper-representation: seconds in all


@pytest.fixture(scope="module")
def blobs() -> np.ndarray:
    """Two separated 2-D Gaussian blobs, 150 points at (-3, 0) and 50 at (3, 0)."""
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal([-3, 0], 0.3, (150, 2)), rng.normal([3, 0], 0.3, (50, 2))])


@pytest.fixture(scope="module")
def unconditional(blobs) -> FlowMatchingSampler:
    return make_sampler("flow", **QUICK).fit(blobs)


def test_learns_two_blobs_with_their_proportions_and_does_not_copy(blobs, unconditional):
    drawn = unconditional.sample(1000, seed=1).numpy()
    left, right = drawn[drawn[:, 0] < 0], drawn[drawn[:, 0] >= 0]
    assert abs(len(left) / len(drawn) - 0.75) < 0.08
    assert np.allclose(left.mean(axis=0), [-3, 0], atol=0.3) and np.allclose(right.mean(axis=0), [3, 0], atol=0.3)
    assert 0.15 < left[:, 0].std() < 0.6  # a blob, neither collapsed nor smeared over the gap
    nearest = np.linalg.norm(drawn[:, None, :] - blobs[None, :, :], axis=2).min(axis=1)
    assert (nearest > 1e-3).mean() > 0.95  # new points, not copies of the anchors
    assert (np.abs(drawn[:, 0]) < 1.5).mean() < 0.1  # few land between the blobs


def test_same_seed_same_samples_other_seed_other_samples(unconditional):
    assert torch.equal(unconditional.sample(20, seed=5), unconditional.sample(20, seed=5))
    assert not torch.allclose(unconditional.sample(20, seed=5), unconditional.sample(20, seed=6))


def test_the_training_seed_decides_the_network(blobs):
    a, b = (make_sampler("flow", steps=20, width=16, depth=1, random_state=s).fit(blobs) for s in (0, 0))
    assert torch.equal(a.sample(10, seed=0), b.sample(10, seed=0))
    other = make_sampler("flow", steps=20, width=16, depth=1, random_state=1).fit(blobs)
    assert not torch.allclose(a.sample(10, seed=0), other.sample(10, seed=0))


def test_guidance_on_a_score_moves_the_samples_towards_high_scores(blobs, unconditional):
    """Score = the first coordinate: the guided samples' mean score is well above the unconditional ones'."""
    guided = make_sampler("flow_cfg", **QUICK, guidance=2.0).fit(blobs, scores=blobs[:, 0])
    plain = unconditional.sample(500, seed=2).numpy()[:, 0].mean()
    assert guided.target_ == pytest.approx(np.quantile(blobs[:, 0], 0.9))
    assert guided.sample(500, seed=2).numpy()[:, 0].mean() > plain + 2.0


def test_should_stop_ends_training_early_and_the_sampler_still_samples(blobs):
    done = []
    sampler = FlowMatchingSampler(**QUICK, progress=lambda step, total: done.append((step, total)),
                                  should_stop=lambda: len(done) >= 7).fit(blobs)
    assert sampler.steps_done_ == 7 and done[-1] == (7, QUICK["steps"])
    assert torch.isfinite(sampler.sample(5, seed=0)).all()


@pytest.mark.parametrize("params, message", [
    (dict(steps=-1), "steps must be a whole number >= 0"), (dict(width=0), "width"), (dict(solver="rk4"), "solver"),
    (dict(target_quantile=1.5), "target_quantile"), (dict(learning_rate=0.0), "learning_rate"),
])
def test_bad_parameters_are_value_errors(params, message):
    with pytest.raises(ValueError, match=message):
        FlowMatchingSampler(**params)


def test_bad_or_missing_scores_are_value_errors(blobs):
    with pytest.raises(ValueError, match=r"scores must be one number per anchor \(200\)"):
        make_sampler("flow_cfg", steps=1).fit(blobs, scores=np.ones(10))
    with pytest.raises(ValueError, match="scores contain NaN"):
        make_sampler("flow", steps=1).fit(blobs, scores=np.full(200, np.nan))
    with pytest.raises(ValueError, match="conditioned on the anchors' scores"):
        make_sampler("flow_cfg", steps=1).fit(blobs)
    assert make_sampler("kde").fit(blobs, scores=blobs[:, 0]).sample(3, 0).shape == (3, 2)  # others ignore them


def test_registry_and_parameters():
    assert SAMPLERS["flow"].paper_name == "S_Flow" and SAMPLERS["flow_cfg"].min_anchors == 2
    plain, guided = ({p.name for p in flow_parameters(c)} for c in (False, True))
    assert {"steps", "width", "depth", "ode_steps", "solver", "random_state"} <= plain
    assert guided - plain == {"guidance", "target_quantile", "target", "condition_dropout"}
    assert "progress" not in guided and "condition" not in guided
    ReportConfig(samplers=["kde", "flow", "flow_cfg"]).validate()


def test_draw_population_uses_the_tables_accuracy_or_given_scores(tiny_hyperrep_path):
    hyperrep = load_hyperrep(tiny_hyperrep_path)
    rows = experiment.top_train_anchors(hyperrep.latent_table, 0.5)
    population = experiment.draw_population(hyperrep, "flow_cfg", TINY, rows, 4, seed=0)
    assert population.weights.shape == (4, hyperrep.arch.n_params) and torch.isfinite(population.weights).all()
    sampler = experiment.build_sampler(hyperrep, "flow_cfg", TINY)
    experiment.draw_population(hyperrep, "flow_cfg", {}, rows, 4, seed=0, scores=np.linspace(0, 1, len(rows)), sampler=sampler)
    assert sampler.target_ == pytest.approx(0.9) and sampler.fingerprint_ == hyperrep_fingerprint(hyperrep)


def test_saved_sampler_loads_back_only_for_its_own_hyper_representation(tiny_hyperrep_path, tiny_hyperrep_no_lwln_path,
                                                                         tmp_path):
    own, other = load_hyperrep(tiny_hyperrep_path), load_hyperrep(tiny_hyperrep_no_lwln_path)
    rows = experiment.top_train_anchors(own.latent_table, 0.5)
    sampler = experiment.build_sampler(own, "flow_cfg", TINY)
    first = experiment.draw_population(own, "flow_cfg", TINY, rows, 6, seed=3, sampler=sampler)
    loaded = load_flow_sampler(sampler.save(tmp_path / "flow"), own)
    assert loaded.name == "flow_cfg" and loaded.steps_done_ == TINY["steps"] and loaded.params() == sampler.params()
    again = experiment.draw_population(own, "flow_cfg", {}, rows, 6, seed=3, sampler=loaded)
    assert torch.equal(first.latents, again.latents) and torch.equal(first.weights, again.weights)
    with pytest.raises(ValueError, match=r"trained on the latents of hyper-representation .*tiny \(zoo .*\), "
                                         r"not of hyper-representation .*tiny-no-lwln"):
        load_flow_sampler(tmp_path / "flow", other)
    with pytest.raises(ValueError, match="fitted on the latents of hyper-representation .*tiny.*not of .*tiny-no-lwln"):
        experiment.draw_population(other, "flow_cfg", {}, rows, 2, seed=0, sampler=loaded)
    with pytest.raises(ValueError, match="not of"):
        draw_from_fitted(other.model, loaded, 2, 0, fingerprint=hyperrep_fingerprint(other))


def test_cli_trains_saves_and_reuses_a_flow_sampler(tiny_hyperrep_path, tiny_hyperrep_no_lwln_path, idx_dir, tmp_path,
                                                    capsys):
    common = ["-n", "4", "--seed", "1", "--test-images", "100", "--data-dir", str(idx_dir), "--anchors", "top50"]
    flags = ["--flow-steps", "30", "--flow-width", "32", "--flow-depth", "1", "--flow-guidance", "1.5"]
    assert main(["sample", str(tiny_hyperrep_path), str(tmp_path / "a"), *common, "--method", "flow_cfg", *flags,
                 "--save-sampler", str(tmp_path / "sampler")]) == 0
    out = capsys.readouterr().out
    assert "flow sampler (30 training steps) written to" in out and "4 models from flow_cfg" in out
    first = read_population(tmp_path / "a")
    assert first.metadata["strategy"] == "flow_cfg" and first.table["test_acc"].notna().all()
    assert {"steps": 30, "width": 32, "depth": 1, "guidance": 1.5, "condition": True}.items() <= first.metadata["params"].items()
    assert main(["sample", str(tiny_hyperrep_path), str(tmp_path / "b"), *common, "--sampler", str(tmp_path / "sampler")]) == 0
    assert torch.equal(read_population(tmp_path / "b").weights, first.weights)
    capsys.readouterr()
    assert main(["sample", str(tiny_hyperrep_no_lwln_path), str(tmp_path / "c"), *common,
                 "--sampler", str(tmp_path / "sampler")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(r"trained on the latents of .*not of .*tiny-no-lwln", err), err


def test_cli_flow_flags_are_checked(tiny_hyperrep_path, tmp_path, capsys):
    common = ["sample", str(tiny_hyperrep_path), str(tmp_path / "x"), "-n", "2", "--no-evaluate"]
    for extra, message in ((["--method", "kde", "--flow-steps", "3"], "--flow-steps: parameters of --method flow or flow_cfg"),
                           (["--method", "flow", "--flow-guidance", "3"], "--flow-guidance: parameters of --method flow_cfg"),
                           (["--method", "kde", "--save-sampler", str(tmp_path / "s")], "--save-sampler: only the flow"),
                           (["--method", "flow", "--flow-steps", "-2"], "steps must be a whole number >= 0")):
        assert main([*common, *extra]) == 2
        assert message in capsys.readouterr().err


def test_cli_help_states_the_constructors_defaults():
    help_text = " ".join(build_parser()._subparsers._group_actions[0].choices["sample"].format_help().split())
    defaults = {p.name: p.default for p in flow_parameters(condition=True)}
    from hyperrep.cli.model_commands import FLOW_CFG_FLAGS

    for name, flag in FLOW_CFG_FLAGS.items():
        assert re.search(rf"{flag} \S+ with --method flow[^(]*\(default {defaults[name]}\)", help_text), flag


def test_the_sample_page_trains_a_flow_sampler_keeps_it_and_stops_on_request(monkeypatch, tiny_zoo_path,
                                                                             tiny_hyperrep_path, idx_dir, tmp_path):
    """Training runs in the background; the trained sampler is reused by the next click; the stop
    button ends a long training and the network trained so far samples, while earlier samples stay."""
    point_app_at(monkeypatch, tmp_path, zoo=tiny_zoo_path, model=tiny_hyperrep_path, data=idx_dir)
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    at.switch_page("pages/sample.py").run()
    at.selectbox(key="sample_strategy").set_value("flow").run()
    assert at.selectbox(key="param_flow_solver").options == ["euler", "heun"]
    for name, value in (("steps", 30), ("width", 32), ("depth", 1)):
        at.number_input(key=f"param_flow_{name}").set_value(value)
    at.number_input(key="sample_n").set_value(4)
    first = finish_training(at.button(key="sample_button").click().run())
    assert first.strategy == "flow" and len(first.population) == 4 and first.params["steps"] == 30
    assert len(at.session_state["trained_samplers"]) == 1
    at.number_input(key="sample_seed").set_value(1)
    at.button(key="sample_button").click().run()
    assert "training_job" not in at.session_state  # the kept sampler, no new training
    again = at.session_state["population"]
    assert again.seed == 1 and not torch.equal(again.population.latents, first.population.latents)

    at.number_input(key="param_flow_steps").set_value(1_000_000)
    at.button(key="sample_button").click().run()
    assert not at.exception, at.exception
    assert at.session_state["population"] is again  # the earlier samples stay while it trains
    at.button(key="stop_training").click().run()
    stopped = finish_training(at)
    assert stopped is not again and stopped.params["steps"] == 1_000_000 and len(stopped.population) == 4
    assert len(at.session_state["trained_samplers"]) == 1  # a stopped sampler is not kept as trained


def finish_training(at: AppTest):
    """Wait for the session's background training, rerun the page (it samples), return the new run."""
    assert not at.exception, at.exception
    if "training_job" in at.session_state:
        futures.wait([at.session_state["training_job"]["future"]], timeout=120)
        at.run()
    assert not at.exception, at.exception
    assert "training_job" not in at.session_state
    return at.session_state["population"]
