"""The guided sampler: latents refined by the task loss through the frozen decoder, and its
equal-cost reference, the same steps on the decoded weights."""

from __future__ import annotations

import re

import pytest
import numpy as np
import pandas as pd
import torch

from hyperrep.ae.artifact import decode_latents, encode_weights
from hyperrep.ae.model import HyperRepresentation, ModelConfig
from hyperrep.cli import GUIDED_FLAGS, build_parser, main
from hyperrep.images.datasets import load_split
from hyperrep.nets.population import evaluate_population
from hyperrep.pipeline import experiment
from hyperrep.pipeline.export import read_population
from hyperrep.pipeline.report import run_report
from hyperrep.pipeline.report_types import ReportConfig
from hyperrep.pipeline.tuning import TuningConfig
from hyperrep.sampling.guided import (
    GuidedSampler,
    _task_loss,
    guidance_batch,
    guided_parameters,
    refine_latents,
    refine_weights,
)
from hyperrep.sampling.samplers import make_sampler
from hyperrep.zoo.format import zoo_dataset_rule


@pytest.fixture()
def setting(tiny_zoo, idx_dir):
    torch.manual_seed(0)
    model = HyperRepresentation(ModelConfig(d_model=16, n_heads=2, n_blocks=1, d_ff=16, latent_dim=8)).eval()
    train = load_split("train", idx_dir, (0.286, 0.353))
    anchors = encode_weights(model, tiny_zoo.samples(split="train", epochs=[2])[0])
    return model, train, anchors


def test_refining_latents_lowers_the_loss_and_keeps_the_decoder(setting, tiny_zoo):
    model, train, anchors = setting
    batch = guidance_batch(train, 64, seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    start = anchors[:4]
    refined = refine_latents(model, tiny_zoo.activation, start, batch, steps=5, step_size=0.05)
    assert refined.shape == start.shape and not torch.equal(refined, start)
    with torch.no_grad():
        loss = [float(_task_loss(model.arch, tiny_zoo.activation, model.decode(z), batch)) for z in (start, refined)]
    assert loss[1] < loss[0]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the decoder is frozen
    assert all(p.requires_grad and p.grad is None for p in model.parameters())  # no flag changed, no .grad left
    with torch.no_grad():  # the steps take their gradient also inside no_grad
        assert torch.allclose(refine_latents(model, tiny_zoo.activation, start, batch, steps=5, step_size=0.05), refined)
    assert torch.equal(refine_latents(model, tiny_zoo.activation, start, batch, steps=0, step_size=0.05), start)
    calls = []
    refine_latents(model, tiny_zoo.activation, start, batch, steps=3, step_size=0.05, progress=lambda *a: calls.append(a))
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_refining_weights_lowers_the_loss(setting, tiny_zoo):
    model, train, anchors = setting
    batch = guidance_batch(train, 64, seed=1)
    start = decode_latents(model, anchors[:3])
    refined = refine_weights(model.arch, tiny_zoo.activation, start, batch, steps=5, step_size=1e-3)
    with torch.no_grad():
        loss = [float(_task_loss(model.arch, tiny_zoo.activation, w, batch)) for w in (start, refined)]
    assert loss[1] < loss[0]


def test_guided_sampler_is_seeded_and_starts_from_its_base(setting, tiny_zoo):
    model, train, anchors = setting
    guided = GuidedSampler(model, tiny_zoo.activation, train, base="kde", steps=3, images=32, step_size=0.05).fit(anchors)
    a, b = guided.sample(5, seed=7), guided.sample(5, seed=7)
    assert a.shape == (5, 8) and torch.equal(a, b)
    base = make_sampler("kde").fit(anchors).sample(5, seed=7)
    assert torch.allclose(guided.start_weights(5, seed=7), decode_latents(model, base))
    unguided = GuidedSampler(model, tiny_zoo.activation, train, base="kde", steps=0, images=32).fit(anchors)
    assert torch.allclose(unguided.sample(5, seed=7), base)


def test_guided_sampler_bad_parameters(setting, tiny_zoo):
    model, train, anchors = setting
    with pytest.raises(ValueError, match="steps"):
        GuidedSampler(model, tiny_zoo.activation, train, steps=-1)
    with pytest.raises(ValueError, match="step_size"):
        GuidedSampler(model, tiny_zoo.activation, train, step_size=0.0)
    with pytest.raises(ValueError, match="asked for"):
        guidance_batch(train, len(train) + 1, seed=0)
    with pytest.raises(ValueError, match="unknown sampler"):
        GuidedSampler(model, tiny_zoo.activation, train, base="nope").fit(anchors)


def test_guided_parameters_are_the_constructor_defaults():
    params = {p.name: p for p in guided_parameters()}
    assert list(params) == ["base", "steps", "images", "step_size"]  # no progress callback among them
    assert params["base"].kind == "choice" and params["base"].default == "kde" and "gaussian" in params["base"].options
    assert (params["steps"].kind, params["images"].kind, params["step_size"].kind) == ("int", "int", "float")
    assert experiment.strategy_parameters("guided") == guided_parameters()
    assert experiment.strategy_names()[-1] == "guided" and experiment.strategy_title("guided") == "S_guided (guided)"
    assert experiment.guidance_images_needed("kde", {}) == 0
    assert experiment.guidance_images_needed("guided", {}) == params["images"].default
    assert experiment.strategy_cost("guided", {"steps": 3, "images": 10}, 4).startswith("3 steps × 10 images × 4 models = 120 ")
    assert experiment.strategy_cost("kde", {}, 4) is None
    help_text = build_parser()._subparsers._group_actions[0].choices["sample"].format_help()
    for name, flag in GUIDED_FLAGS.items():  # the CLI's help states the constructor's defaults
        assert f"{flag}" in help_text and f"(default {params[name].default})" in " ".join(help_text.split())


def test_cli_samples_with_the_guided_sampler(tiny_hyperrep_path, tiny_zoo, idx_dir, tmp_path, capsys):
    """`hyperrep sample --method guided` writes the population; its models do better on the guide
    images than the unguided draw of its base sampler with the same seed, which it starts from."""
    common = [str(tiny_hyperrep_path), "-n", "6", "--seed", "3", "--test-images", "100", "--data-dir", str(idx_dir)]
    guide = ["--guided-steps", "20", "--guided-images", "64"]
    assert main(["sample", common[0], str(tmp_path / "guided"), *common[1:], "--method", "guided", *guide, "--compare"]) == 0
    out = capsys.readouterr().out
    assert "6 models from guided" in out
    assert re.search(r"frontier of the anchors: (Δ = [+-]\d+\.\d pp \[95 % CI [+-]\d+\.\d, [+-]\d+\.\d\]|No frontier)", out), out
    assert main(["sample", common[0], str(tmp_path / "kde"), *common[1:], "--method", "kde"]) == 0
    assert main(["sample", common[0], str(tmp_path / "start"), *common[1:], "--method", "guided", "--guided-steps", "0",
                 "--guided-images", "64"]) == 0
    guided, unguided, start = (read_population(tmp_path / name) for name in ("guided", "kde", "start"))
    assert guided.weights.shape == unguided.weights.shape == (6, tiny_zoo.architecture.n_params)
    assert guided.metadata["strategy"] == "guided" and guided.metadata["params"] == {"base": "kde", "steps": 20, "images": 64,
                                                                                 "step_size": 0.1}
    assert len(guided.table) == 6 and guided.table["test_acc"].notna().all() and guided.metadata["compared"] is True
    assert {"distance", "misclassification_iou", "map_x"} <= set(guided.table.columns)
    assert torch.allclose(start.weights, unguided.weights, atol=1e-6)  # 0 steps: the base sampler's draw
    assert not torch.allclose(guided.weights, unguided.weights, atol=1e-3)
    images = zoo_dataset_rule(tiny_zoo.manifest, idx_dir).training_images(64, 0, idx_dir)  # the guide images
    accuracy = {name: evaluate_population(tiny_zoo.architecture, tiny_zoo.activation, population.weights, images).accuracy
                for name, population in (("guided", guided), ("kde", unguided))}
    assert accuracy["guided"].mean() > accuracy["kde"].mean() + 0.03, accuracy


def test_cli_guided_flags_are_checked(tiny_hyperrep_path, idx_dir, tmp_path, capsys):
    common = [str(tiny_hyperrep_path), str(tmp_path / "x"), "-n", "2", "--no-evaluate", "--data-dir", str(idx_dir)]
    assert main(["sample", *common, "--method", "kde", "--guided-steps", "3"]) == 2
    assert "--guided-steps: parameters of --method guided, not of --method kde" in capsys.readouterr().err
    assert main(["sample", *common, "--method", "guided", "--guided-base", "nope"]) == 2
    assert "unknown sampler 'nope'" in capsys.readouterr().err
    assert main(["sample", *common, "--method", "guided", "--guided-images", "0"]) == 2
    assert "images must be at least 1" in capsys.readouterr().err
    assert main(["sample", *common, "--method", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown sampler 'nope'; known:" in err and "guided" in err
    assert not (tmp_path / "x").exists()


def test_report_compares_guided_and_weight_steps_at_equal_budgets(tiny_hyperrep_path, idx_dir, tmp_path):
    config = ReportConfig(models_per_method=4, fine_tune_models=2, test_images=100, fine_tune_images=64, fine_tune_epochs=[0],
                          samplers=["kde"], ablation_samplers=[], frontier_sigmas=[0.02, 0.2], frontier_average_sizes=[2],
                          frontier_gaussian_scales=[0.5], frontier_models=4, bootstrap_resamples=200,
                          tuning=TuningConfig(validation_images=60, models=2, anchor_fractions=[0.3], bandwidths=[0.3],
                                              gmm_components=[1], budgets=[2, 4], images=16,
                                              latent_step_sizes=[0.1], weight_step_sizes=[0.003, 0.03]))
    run_report(tiny_hyperrep_path, tmp_path, config=config, data_dir=idx_dir, workers=1)
    budgets = pd.read_csv(tmp_path / "budgets.csv")
    assert sorted(set(budgets["budget"])) == [2, 4] and budgets.groupby("budget")["method"].nunique().eq(4).all()
    assert (budgets["seconds_per_model"] > 0).all() and set(budgets["step_size"]) <= {0.1, 0.003, 0.03}
    differences = pd.read_csv(tmp_path / "budget_differences.csv")
    delta = budgets.set_index(["method", "budget"])["delta"]
    for _, row in differences.iterrows():
        assert row["difference"] == pytest.approx(delta[(row["a"], row["budget"])] - delta[(row["b"], row["budget"])], abs=1e-5)
        assert row["difference_lo"] <= row["difference"] + 1e-9 <= row["difference_hi"] + 2e-9 or not np.isfinite(row["difference_lo"])
    assert "## Guided latent steps vs weight steps at equal budgets" in (tmp_path / "report.md").read_text()


