"""The paper-style report, the experiment pipeline of `hyperrep sample` and the population format,
on a tiny real zoo and tiny hyper-representations."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from hyperrep.ae.artifact import load_hyperrep
from hyperrep.cli import main
from hyperrep.evaluation.statistics import bootstrap_ci, holm, mann_whitney_floor, mann_whitney_p
from hyperrep.io.files import ArtifactError
from hyperrep.pipeline import experiment
from hyperrep.pipeline.experiment import choose_anchors
from hyperrep.pipeline.export import population_zip, read_population, write_population, write_population_zoo
from hyperrep.pipeline.report import load_test_images, run_report, summarise
from hyperrep.pipeline.report_files import markdown_table
from hyperrep.pipeline.report_types import MethodResult, ReportConfig
from hyperrep.pipeline.tuning import TuningConfig
from hyperrep.zoo.format import Zoo

TINY_REPORT = dict(models_per_method=6, fine_tune_models=4, test_images=200, fine_tune_images=200, fine_tune_epochs=[0, 1],
                   samplers=["uniform_unit", "kde_legacy", "gaussian"], ablation_samplers=["kde_legacy"],
                   tuning=TuningConfig(validation_images=100, models=3, anchor_fractions=[0.3], bandwidths=[0.2, 0.5],
                                       gmm_components=[1], budgets=[2], images=32, latent_step_sizes=[0.1, 1.0],
                                       weight_step_sizes=[0.003, 0.03]), noise_sigmas=[0.04], frontier_sigmas=[0.02, 0.2],
                   frontier_average_sizes=[2], frontier_gaussian_scales=[0.5], frontier_models=4, ensemble_size=2,
                   bootstrap_resamples=200)


@pytest.fixture(scope="module")
def tiny_hyperreps(tiny_hyperrep_path, tiny_hyperrep_no_lwln_path):
    """The shared tiny hyper-representations (tests/conftest.py), with and without LWLN."""
    return tiny_hyperrep_path, tiny_hyperrep_no_lwln_path


def test_statistics_helpers():
    values = np.array([0.5, 0.6, 0.7, 0.8, np.nan])
    low, high = bootstrap_ci(values, 500)
    assert low < 0.65 < high and high - low < 0.3
    assert bootstrap_ci(np.array([0.4, 0.4]), 100) == (0.4, 0.4)
    assert mann_whitney_p(np.array([0.9, 0.91, 0.92, 0.93, 0.94]), np.array([0.1, 0.11, 0.12, 0.13, 0.14])) < 0.01
    assert np.isnan(mann_whitney_p(np.array([np.nan]), np.array([0.1])))
    floor = mann_whitney_floor(20, 20)
    assert floor == pytest.approx(6.8e-08, rel=0.01)  # the p of every complete separation of 20 against 20
    assert mann_whitney_p(np.linspace(0.5, 0.6, 20), np.linspace(0.1, 0.2, 20)) == pytest.approx(floor)
    assert mann_whitney_p(np.linspace(0.5, 0.6, 20), np.linspace(0.1, 0.55, 20)) > floor
    np.testing.assert_allclose(holm(np.array([0.01, 0.04, np.nan, 0.03, 0.5])), [0.04, 0.09, np.nan, 0.09, 0.5])


def test_summary_and_markdown_compare_against_b_t():
    novelty = pd.DataFrame({"distance": [1.0, 2.0], "nearest_model_id": [3, 4], "nearest_epoch": [1, 1],
                            "misclassification_iou": [0.5, 0.7]})
    scratch = MethodResult("B_T (zoo test split)", "baseline", "-", [0, 1], np.array([[0.1, 0.5], [0.12, 0.52], [0.1, 0.55]]),
                           np.ones((3, 2), bool), {0: np.array([0.1]), 1: np.array([0.6])}, novelty)
    sampled = MethodResult("S_KDE", "sampler", "LWLN", [0, 1], np.array([[0.7, 0.75], [np.nan, np.nan], [0.72, 0.8]]),
                           np.array([[True, True], [False, False], [True, True]]), {0: np.array([0.74])}, novelty)
    summary = summarise([scratch, sampled], ReportConfig(bootstrap_resamples=200))
    row = summary.set_index(["method", "epoch"]).loc[("S_KDE", 0)]
    assert row["models"] == 3 and row["invalid"] == 1
    assert row["mean"] == pytest.approx(0.71) and row["median"] == pytest.approx(0.71)
    assert row["p_vs_B_T"] == pytest.approx(mann_whitney_p(np.array([0.7, 0.72]), np.array([0.1, 0.12, 0.1])))
    assert row["ensemble_mean"] == pytest.approx(0.74) and row["distance_median"] == 1.5
    assert np.isnan(summary.set_index(["method", "epoch"]).loc[("B_T (zoo test split)", 0), "p_vs_B_T"])
    assert row["p_floor"] == pytest.approx(mann_whitney_floor(2, 3)) and row["separated"] and row["above_B_T"]
    table = markdown_table(summary)
    lines = table.splitlines()
    assert len(lines) == 4 and lines[0].startswith("| method | hyper-rep | models (ep. 0/1) | acc. epoch 0 (%) | acc. epoch 1 (%)")
    assert "| S_KDE | LWLN | 3/3 | 71.0 ± 1.4 [" in lines[3] and lines[3].endswith("| – / – | sep. / sep. | 74.0 / – | 1.50 / 1.50 | 0.60 / – | 1 |")


def test_report_on_tiny_artifacts_writes_every_output(tiny_hyperreps, idx_dir, tmp_path):
    with_lwln, without = tiny_hyperreps
    steps = []
    summary = run_report(with_lwln, tmp_path / "report", ablation_dir=without, config=ReportConfig(**TINY_REPORT),
                         data_dir=idx_dir, workers=2, progress=lambda done, total: steps.append((done, total)))
    methods = list(dict.fromkeys(summary["method"]))
    assert methods[:2] == ["B_T (zoo test split)", "B_T (re-trained)"]
    tuning = json.loads((tmp_path / "report" / "tuning.json").read_text())
    sigmas = tuning["frontier_sigmas"]
    assert sigmas[:2] == [0.02, 0.2] and sigmas == sorted(sigmas)  # extended past the farthest candidate
    frontier = ["anchors", *[f"noise σ={s:g}" for s in sigmas], "average of 2", "weight Gaussian ×0.5"]
    lr = tuning["step_sizes"]
    steps_rows = [f"{m} (2 steps × 32 images, lr {lr[m]['2']:g})" for m in
                  ("guided", "weights from decoded", "weights from anchors", "guided then weights")]
    assert set(methods) == {"B_T (zoo test split)", "B_T (re-trained)", "B_T (kaiming-uniform, re-trained)",
                            "S_U (uniform_unit)", "S_KDE (kde_legacy, top 30%)", "S_Dist (gaussian, top 30%)", *steps_rows,
                            "reconstructed (top 30%)", "B_F (anchor pool)", "noise σ=0.04 (top 30%)",
                            "S_KDE (kde_legacy, top 30%) [no LWLN]", "reconstructed (top 30%) [no LWLN]", *frontier}
    populations = len(methods) - 1
    assert steps[-1] == (populations, populations)  # every population but the zoo's own trajectories, by a worker
    assert len(summary) == 2 * len(methods) and set(summary["epoch"]) == {0, 1}
    assert summary.loc[summary["method"].isin(frontier), "kind"].eq("frontier").all()
    counts = summary[summary["method"] == "S_Dist (gaussian, top 30%)"].set_index("epoch")["models"]
    assert counts.to_dict() == {0: 6, 1: 4}  # every member zero-shot, the first 4 fine-tuned
    assert {"frontier_delta", "frontier_delta_lo", "frontier_delta_hi", "distance_ratio", "iou_max_median",
            "p_holm", "separated", "distance_train_median", "frontier_delta_fw_lo", "frontier_delta_p_holm",
            "nearest_early_share"} <= set(summary.columns)
    samplers = summary[(summary["kind"] == "sampler") & summary["frontier_delta_fw_lo"].notna()]
    assert (samplers["frontier_delta_fw_lo"] <= samplers["frontier_delta_lo"] + 1e-12).all()  # family-wise is wider
    assert (samplers["frontier_delta_fw_hi"] >= samplers["frontier_delta_hi"] - 1e-12).all()
    anchors = summary[summary["method"] == "anchors"].set_index("epoch")
    assert anchors.loc[0, "distance_median"] == 0.0 and anchors.loc[0, "frontier_delta"] == pytest.approx(0.0, abs=1e-12)
    bad = summary[~(summary["iou_max_median"] >= summary["iou_median"] - 1e-12)]  # the largest overlap is at least the nearest's
    assert bad.empty, bad[["method", "epoch", "iou_median", "iou_max_median", "invalid", "distance_median"]].to_string()
    scratch = summary[summary["method"] == "B_T (re-trained)"].set_index("epoch")
    assert summary.loc[summary["method"] == "S_KDE (kde_legacy, top 30%) [no LWLN]", "hyperrep"].eq("no LWLN").all()
    assert scratch.loc[0, "mean"] < 0.3 and scratch.loc[1, "mean"] > scratch.loc[0, "mean"] + 0.1  # fresh inits learn in one epoch
    zoo_models = summary[summary["method"] == "B_F (anchor pool)"].iloc[0]
    assert zoo_models["distance_median"] == pytest.approx(0.0, abs=1e-9)  # B_F members are zoo models
    assert zoo_models["iou_median"] == pytest.approx(1.0)
    aligned = summary[summary["method"] == "B_T (zoo test split)"].iloc[0]
    assert aligned["distance_median"] == pytest.approx(0.0, abs=1e-9)  # the zoo's own test models
    tested = summary[(summary["method"] != "B_T (zoo test split)") & (summary["kind"] != "frontier")]
    assert tested["p_vs_B_T"].between(0, 1).all() and (tested["p_holm"] >= tested["p_vs_B_T"]).all()
    assert summary.loc[summary["kind"] == "frontier", "p_vs_B_T"].isna().all()  # not in the family Holm corrects for
    for name in ("report.md", "report.csv", "members.csv", "novelty.csv", "frontier.csv", "report.png", "frontier.png",
                 "report_config.json", "tuning.json", "tuning.csv", "budgets.csv", "budget_differences.csv"):
        assert (tmp_path / "report" / name).stat().st_size > 100, name
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| B_T (zoo test split) | - |" in text and "S_KDE (kde_legacy, top 30%) [no LWLN]" in text
    assert "| anchors |" not in text and "\n- S_Dist (gaussian, top 30%): distance " in text  # readings, no frontier rows
    members = pd.read_csv(tmp_path / "report" / "members.csv")
    assert {"acc_epoch_0", "acc_epoch_1", "method"} <= set(members.columns)
    assert members.groupby("method")["acc_epoch_1"].count().loc["S_Dist (gaussian, top 30%)"] == 4
    assert pd.read_csv(tmp_path / "report" / "report.csv").shape == summary.shape
    assert len(pd.read_csv(tmp_path / "report" / "frontier.csv")) == len(frontier) * 2


def test_report_is_the_same_in_one_process_and_in_workers(tiny_hyperreps, idx_dir, tmp_path):
    config = dict(TINY_REPORT, samplers=["kde_legacy"], noise_sigmas=[], fine_tune_epochs=[0, 1])
    here = run_report(tiny_hyperreps[0], tmp_path / "a", config=ReportConfig(**config), data_dir=idx_dir, workers=1)
    spread = run_report(tiny_hyperreps[0], tmp_path / "b", config=ReportConfig(**config), data_dir=idx_dir, workers=2)
    pd.testing.assert_frame_equal(here, spread)


def test_choose_anchors(tiny_hyperreps):
    table = load_hyperrep(tiny_hyperreps[0]).latent_table
    top, label = choose_anchors(table, "top30")
    assert table.iloc[top]["split"].eq("train").all() and label == "anchors: top 30 % of the train split"
    assert np.array_equal(top, experiment.top_train_anchors(table))  # the one top-30 % rule
    assert len(choose_anchors(table, "all")[0]) == (table["split"] == "train").sum()
    ids = table["model_id"].unique()[:2].tolist()
    rows, label = choose_anchors(table, ids)
    assert len(rows) == 2 and table.iloc[rows]["epoch"].eq(table["epoch"].max()).all() and "last epoch" in label
    assert len(choose_anchors(table, ids, epochs=[0, 1])[0]) == 4
    with pytest.raises(ValueError, match="topNN"):
        choose_anchors(table, "best")
    with pytest.raises(ValueError, match="no anchors selected"):
        choose_anchors(table, [10_000])


def sampled_run(hyperrep_dir, idx_dir, n: int = 5, compare: bool = False):
    hyperrep = load_hyperrep(hyperrep_dir)
    zoo = Zoo.load(hyperrep.zoo_path)
    rows, label = choose_anchors(hyperrep.latent_table, "top30")
    test = load_test_images(zoo, 1200, idx_dir)
    run = experiment.run_sampling(hyperrep, zoo, "kde", {}, rows, label, n, 1, test, comparisons=compare)
    return hyperrep, zoo, test, run


def test_population_format_round_trip_folder_and_zip(tiny_hyperreps, idx_dir, tmp_path):
    hyperrep, zoo, test, run = sampled_run(tiny_hyperreps[0], idx_dir)
    table, metadata = run.members_table(), run.metadata(zoo, hyperrep)
    write_population(tmp_path / "flat", run.population.weights, run.population.latents, table, metadata)
    (tmp_path / "flat.zip").write_bytes(population_zip(run.population.weights, run.population.latents, table, metadata))
    for source in (tmp_path / "flat", tmp_path / "flat.zip"):
        saved = read_population(source)
        assert torch.equal(saved.weights, run.population.weights) and torch.equal(saved.latents, run.population.latents)
        assert saved.metadata == metadata and saved.metadata["architecture"] == "cnn_s"
        assert saved.metadata["dataset"] == zoo.manifest["dataset"] and saved.metadata["anchors"].endswith("train split")
        np.testing.assert_allclose(saved.table["test_acc"], table["test_acc"], atol=1e-9)
        assert list(saved.table.columns) == list(table.columns) and len(saved.table) == 5
    assert table["test_acc"].between(0, 1).all() and np.allclose(table["test_acc"], run.full.accuracy)
    write_population_zoo(run.population, table, tmp_path / "as-zoo", zoo)
    exported = Zoo.load(tmp_path / "as-zoo")
    assert exported.weights.shape == (5, 1, zoo.architecture.n_params) and exported.epochs == [0]
    assert torch.equal(exported.weights[:, 0], run.population.weights)
    np.testing.assert_allclose(exported.properties["test_acc"], table["test_acc"], atol=1e-6)
    with pytest.raises(ValueError, match="needs the test accuracy"):
        write_population_zoo(run.population, run.population.members, tmp_path / "bad", zoo)


def test_population_loader_refuses_other_files(tiny_hyperreps, idx_dir, tmp_path):
    hyperrep, zoo, test, run = sampled_run(tiny_hyperreps[0], idx_dir, n=3)
    table, metadata = run.members_table(), run.metadata(zoo, hyperrep)
    write_population(tmp_path / "p", run.population.weights, None, table, metadata)
    assert read_population(tmp_path / "p").latents is None
    with pytest.raises(ArtifactError, match="not a population folder"):
        read_population(tmp_path / "missing")
    (tmp_path / "p" / "samples.csv").write_text("member\n0\n")
    with pytest.raises(ArtifactError, match="1 rows for 3 models"):
        read_population(tmp_path / "p")
    (tmp_path / "z").mkdir()
    zoo.save(tmp_path / "z" / "zoo")
    from hyperrep.io.files import write_tensors

    write_tensors(tmp_path / "z" / "weights.safetensors", {"weights": torch.zeros(2, 3)}, {"label": "x"})
    with pytest.raises(ArtifactError, match="not a hyperrep population"):
        read_population(tmp_path / "z")


def test_cli_sample_and_report(tiny_hyperreps, idx_dir, tmp_path, capsys):
    with_lwln, _ = tiny_hyperreps
    assert main(["sample", str(with_lwln), str(tmp_path / "s"), "--method", "gaussian", "-n", "6", "--seed", "2",
                 "--test-images", "100", "--data-dir", str(idx_dir)]) == 0
    assert "6 models from gaussian" in capsys.readouterr().out
    saved = read_population(tmp_path / "s")
    assert len(saved.table) == 6 and saved.metadata["strategy"] == "gaussian" and saved.metadata["compared"] is False
    assert main(["sample", str(with_lwln), str(tmp_path / "c"), "--method", "kde", "-n", "4", "--compare",
                 "--test-images", "1200", "--data-dir", str(idx_dir)]) == 0
    out = capsys.readouterr().out
    assert "B_T (random init): mean accuracy" in out and "median distance to the nearest zoo model" in out
    compared = read_population(tmp_path / "c")
    assert compared.metadata["compared"] is True
    assert {"distance", "misclassification_iou", "map_x", "test_acc_first_1000"} <= set(compared.table.columns)
    ids = load_hyperrep(with_lwln).latent_table["model_id"].unique()[:2]
    assert main(["sample", str(with_lwln), str(tmp_path / "i"), "--method", "interpolate", "-n", "3", "--anchors",
                 *map(str, ids), "--format", "zoo", "--test-images", "100", "--data-dir", str(idx_dir)]) == 0
    assert Zoo.load(tmp_path / "i").n_models == 3
    assert main(["sample", str(with_lwln), str(tmp_path / "x"), "--method", "gmm", "--anchors", str(ids[0]),
                 "--no-evaluate"]) == 2
    assert "sampler 'gmm' needs at least 8 anchors, got 1" in capsys.readouterr().err
    assert main(["report", "--hyperrep", str(with_lwln), "--ablation", str(tmp_path / "missing"), "--out",
                 str(tmp_path / "r"), "--models", "3", "--test-images", "100", "--fine-tune-images", "100",
                 "--data-dir", str(idx_dir), "--workers", "1", "--frontier-sigmas", "0.05", "0.6", "--tuning-models", "2",
                 "--step-budgets", "2", "--step-images", "16", "--validation-images", "50"]) == 0
    assert "no ablation hyper-representation" in capsys.readouterr().err
    assert (tmp_path / "r" / "report.md").is_file()
    assert json.loads((tmp_path / "r" / "report_config.json").read_text())["frontier_sigmas"][:2] == [0.05, 0.6]
    noise = pd.read_csv(tmp_path / "r" / "frontier.csv").query("family == 'noise' and level > 0")
    assert sorted(set(noise["level"]))[:2] == [0.05, 0.6]


def test_update_readme_replaces_only_the_marked_table(tmp_path):
    from hyperrep.pipeline.report_files import update_readme

    report_md = tmp_path / "report.md"
    report_md.write_text("# title\ntext\n| a | b |\n|---|---|\n| 1 | 2 |\n\nafter\n")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- report:start (generated) -->\n| old |\n<!-- report:end -->\noutro\n")
    update_readme(readme, report_md)
    assert readme.read_text() == "intro\n<!-- report:start (generated) -->\n| a | b |\n|---|---|\n| 1 | 2 |\n<!-- report:end -->\noutro\n"
    (tmp_path / "plain.md").write_text("no markers\n")
    with pytest.raises(ValueError, match="markers"):
        update_readme(tmp_path / "plain.md", report_md)


def test_readme_block_carries_table_readings_and_frontier_plot(tmp_path):
    from hyperrep.pipeline.report_files import readme_block, readme_report_block, update_readme

    out = tmp_path / "docs" / "report"
    out.mkdir(parents=True)
    (out / "report.md").write_text("# title\ntext\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nReadings, generated from the table "
                                   "(Δ: …):\n- x: above the frontier.\n- y: below the frontier.\n\n"
                                   "![accuracy vs distance: the frontier](frontier.png)\n\n![accuracy per method](report.png)\n")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- report:start (generated) -->\nold\n<!-- report:end -->\noutro\n")
    update_readme(readme, out / "report.md")
    block = readme_report_block(readme)
    assert block == readme_block(out / "report.md", tmp_path)
    assert block.splitlines() == ["| a | b |", "|---|---|", "| 1 | 2 |", "", "Readings, generated from the table (Δ: …):",
                                  "- x: above the frontier.", "- y: below the frontier.", "",
                                  "![accuracy vs distance: the frontier](docs/report/frontier.png)"]
    assert readme.read_text().startswith("intro\n") and readme.read_text().endswith("<!-- report:end -->\noutro\n")


def test_the_readme_shows_the_committed_report():
    """The README's report block is exactly what `hyperrep report --readme README.md` writes from
    docs/report/report.md: no number in it was edited by hand."""
    from pathlib import Path

    from hyperrep.pipeline.report_files import readme_block, readme_report_block

    root = Path(__file__).resolve().parent.parent
    assert readme_report_block(root / "README.md") == readme_block(root / "docs" / "report" / "report.md", root)


def test_changing_the_test_images_cannot_change_a_tuned_choice(tiny_hyperreps, idx_dir, tmp_path):
    with_lwln, _ = tiny_hyperreps
    config = dict(TINY_REPORT, samplers=["kde", "gmm"], noise_sigmas=[], fine_tune_epochs=[0])
    choices = []
    for images in (120, 200):
        run_report(with_lwln, tmp_path / str(images), config=ReportConfig(**dict(config, test_images=images)),
                   data_dir=idx_dir, workers=1)
        tuning = json.loads((tmp_path / str(images) / "tuning.json").read_text())
        assert tuning["images"]["test"]["images"] == images and tuning["images"]["validation"]["images"] == 100
        choices.append({k: v for k, v in tuning.items() if k != "images"})
        searches = pd.read_csv(tmp_path / str(images) / "tuning.csv")
        assert searches["chosen"].any() and set(searches["search"]) == {"anchors", "sampler", "steps"}
    assert choices[0] == choices[1]
    assert set(choices[0]["sampler_params"]) == {"kde", "gmm"} and choices[0]["step_sizes"]["guided"]["2"] in (0.1, 1.0)
