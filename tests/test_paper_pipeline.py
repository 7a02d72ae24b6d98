"""The paper's published files end to end: `hyperrep zoo import` -> the app -> `hyperrep report`.

tests/fixtures/paper/hyper_reps/mnist/ is a paper hyper-representation folder made with the paper's
own code (tests/fixtures/paper/README.md): dataset.pt (4 CNN-s models of seeds 3, 7, 11, 19 at
epochs 1 and 2, test accuracy 0.1 + 0.2 * epoch + 0.03 * position), config_ae.json +
checkpoint_ae.pt (a tiny AE_attn, briefly trained by the paper's module), samples/{direct,
kde_z_train}/checkpoint_{0,1}.pt; zoos/mnist/ holds zoo_testsplit.pt (one test model: 0.1, 0.3,
0.5 at epochs 0, 1, 2) and image_dataset.pt (6 train and 4 test images), the images used here.
paper_ae_outputs.pt holds what the paper's AE computed for the dataset's weights.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import point_app_at

from hyperrep.ae.paper_checkpoint import load_paper_hyperrep
from hyperrep.cli import main
from hyperrep.nets.cnn import CNN_S
from hyperrep.nets.population import evaluate_population
from hyperrep.paper.files import read_model_dataset, seed_from_path
from hyperrep.paper.importing import paper_sample_populations
from hyperrep.pipeline import artifacts
from hyperrep.pipeline.report import load_test_images, recorded_test_split
from hyperrep.pipeline.report_types import PAPER_B_T, RETRAINED_B_T, ZOO_B_T, ReportConfig
from hyperrep.zoo.format import Zoo

FIXTURES = Path(__file__).parent / "fixtures" / "paper"
HYPER = FIXTURES / "hyper_reps" / "mnist"
ZOOS = FIXTURES / "zoos" / "mnist"
KDE = "S_KDE train (paper)"
DIRECT = "B_F (paper's direct: zoo models, last epoch)"


@pytest.fixture()
def paper_root(tmp_path) -> Path:
    """The two unzipped archives side by side, as the paper's download unpacks them."""
    root = tmp_path / "ghrp"
    shutil.copytree(HYPER, root / "hyper_reps" / "mnist")
    shutil.copytree(ZOOS, root / "zoos" / "mnist")
    return root


@pytest.fixture()
def paper_env(monkeypatch, paper_root, tmp_path):
    """The app pointed at the paper folder, with the paper's own images (zoos/mnist/image_dataset.pt)."""
    point_app_at(monkeypatch, tmp_path, model=paper_root / "hyper_reps" / "mnist", data=paper_root / "zoos" / "mnist")
    return paper_root


def recorded_accuracies() -> dict[tuple[int, int], float]:
    """(seed, epoch) -> test accuracy as dataset.pt records it."""
    out = {}
    for part in read_model_dataset(HYPER / "dataset.pt").values():
        for path, epoch, acc in zip(part.table["path"], part.table["epoch"], part.table["test_acc"]):
            out[(seed_from_path(path), int(epoch))] = float(acc)
    return out


def test_the_autoencoder_fixture_computes_what_the_papers_code_computed():
    reference = torch.load(FIXTURES / "paper_ae_outputs.pt", weights_only=True)
    splits = read_model_dataset(HYPER / "dataset.pt")
    assert torch.equal(reference["weights"], torch.cat([splits["train"].weights, splits["test"].weights]))
    model = load_paper_hyperrep(HYPER)
    with torch.no_grad():
        latents = model.encode(reference["weights"])
        torch.testing.assert_close(latents, reference["latents"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.decode(latents), reference["reconstructions"], atol=1e-5, rtol=1e-5)


def test_zoo_import_keeps_the_recorded_weights_and_accuracies(paper_root, tmp_path, capsys):
    out = tmp_path / "paper-zoo"
    assert main(["zoo", "import", str(paper_root / "hyper_reps" / "mnist"), str(out)]) == 0
    assert "imported 4 of 4 models (8 samples)" in capsys.readouterr().out
    zoo = Zoo.load(out)
    recorded = recorded_accuracies()
    table = zoo.properties.set_index(["model_id", "epoch"])["test_acc"]
    assert sorted(table.index) == sorted(recorded)
    for key, value in recorded.items():
        assert table.loc[key] == pytest.approx(value)
    for position, seed in enumerate([3, 7, 11, 19]):  # the fixture's recipe
        assert table.loc[(seed, 2)] == pytest.approx(0.5 + 0.03 * position)


def test_the_app_opens_the_paper_folder_with_the_imported_zoo_and_its_rows(paper_env, tmp_path):
    from test_app import metric, sample, start, texts

    folder = paper_env / "hyper_reps" / "mnist"
    assert main(["zoo", "import", str(folder), str(tmp_path / "cli-zoo")]) == 0
    cli_zoo = Zoo.load(tmp_path / "cli-zoo")
    at = start()
    assert not at.sidebar.error, texts(at.sidebar.error)
    assert metric(at, "models") == "4" and "paper-mnist" in texts(at.markdown)
    assert "latent dim 8, 8 embedded models" in texts(at.sidebar.caption)
    (cached,) = list((tmp_path / "imports").iterdir())  # the app's own import equals the command's
    app_zoo = Zoo.load(cached)
    assert torch.equal(app_zoo.weights, cli_zoo.weights) and app_zoo.splits == cli_zoo.splits
    pd.testing.assert_frame_equal(app_zoo.properties, cli_zoo.properties)

    at.switch_page("pages/sample.py").run()
    sample(at, 3, strategy="kde_legacy")  # the fixture's top 30 % is a single anchor
    assert not at.error, texts(at.error)
    run = at.session_state["population"]
    baselines = run.baselines
    assert baselines["B_T (paper's zoo_testsplit, epoch 0, as recorded)"].tolist() == [0.1]
    assert baselines["B_T (paper's zoo_testsplit, epoch 2, as recorded)"].tolist() == [0.5]
    test = load_test_images(app_zoo, run.quick_images, paper_env / "zoos" / "mnist")
    assert run.quick_images == 4  # image_dataset.pt's test split
    for method, label in (("kde_z_train", KDE), ("direct", DIRECT)):
        weights = paper_sample_populations(folder, CNN_S)[method]
        np.testing.assert_allclose(baselines[label], evaluate_population(CNN_S, "tanh", weights, test).accuracy)
    summary = at.dataframe[0].value
    assert {KDE, DIRECT, "B_T (paper's zoo_testsplit, epoch 2, as recorded)"} <= set(summary["group"])


def test_the_app_embeds_the_zoo_with_the_papers_autoencoder(paper_env):
    """The latents the app maps are the paper code's encodings of the zoo's weights."""
    hyperrep, zoo, notes = artifacts.load_hyperrep_with_zoo(paper_env / "hyper_reps" / "mnist")
    assert notes and "imported 4 of 4 models" in notes[0]
    reference = torch.load(FIXTURES / "paper_ae_outputs.pt", weights_only=True)
    flat = zoo.weights.reshape(-1, CNN_S.n_params)
    match = [int(torch.nonzero((reference["weights"] == row).all(dim=1))[0]) for row in flat]
    torch.testing.assert_close(hyperrep.latents, reference["latents"][match], atol=1e-5, rtol=1e-5)


def report_command(folder: Path, out: Path, data: Path, ablation: Path, epochs: list[int]) -> list[str]:
    """`hyperrep report` on the fixture in a few seconds: 4 models per method, 2 of them fine-tuned."""
    return ["report", "--hyperrep", str(folder), "--ablation", str(ablation), "--out", str(out), "--models", "4",
            "--fine-tune-models", "2", "--epochs", *map(str, epochs), "--frontier-models", "4", "--step-budgets", "2",
            "--step-images", "6", "--validation-images", "20", "--tuning-models", "2", "--test-images", "4", "--fine-tune-images", "6", "--data-dir", str(data),
            "--workers", "1"]


def test_report_on_a_paper_folder_has_its_b_t_and_its_populations(paper_root, tmp_path, monkeypatch,
                                                                  tiny_hyperrep_no_lwln_path):
    monkeypatch.setenv("HYPERREP_IMPORT_CACHE", str(tmp_path / "imports"))
    folder, data, out = paper_root / "hyper_reps" / "mnist", paper_root / "zoos" / "mnist", tmp_path / "report"
    assert main(report_command(folder, out, data, tiny_hyperrep_no_lwln_path, [0, 1, 2])) == 0
    summary = pd.read_csv(out / "report.csv")
    rows = summary.set_index(["method", "epoch"])
    # B_T: the test split's accuracies as zoo_testsplit.pt recorded them, the reference of every p-value
    assert [rows.loc[(PAPER_B_T, e), "mean"] for e in (0, 1, 2)] == pytest.approx([0.1, 0.3, 0.5])
    assert (rows.loc[PAPER_B_T, "models"] == 1).all() and np.isnan(rows.loc[PAPER_B_T, "distance_median"]).all()
    assert ZOO_B_T not in set(summary["method"])  # dataset.pt saved epochs 1 and 2 only
    assert np.isfinite(rows.loc[(RETRAINED_B_T, 1), "p_vs_B_T"])  # compared with the recorded B_T
    # the authors' populations, evaluated on the same images as every other row
    zoo = Zoo.load(next((tmp_path / "imports").iterdir()))
    test = load_test_images(zoo, 4, data)
    for method, label, kind in (("kde_z_train", KDE, "sampler"), ("direct", DIRECT, "baseline")):
        accuracy = evaluate_population(CNN_S, "tanh", paper_sample_populations(folder, CNN_S)[method], test).accuracy
        assert rows.loc[(label, 0), "mean"] == pytest.approx(accuracy.mean())
        assert rows.loc[(label, 0), "models"] == 2 and rows.loc[(label, 0), "hyperrep"] == "paper"
        assert rows.loc[(label, 0), "kind"] == kind and rows.loc[(label, 2), "models"] == 2  # fine-tuned too
    members = pd.read_csv(out / "members.csv")
    assert len(members[members["method"] == KDE]) == 2
    text = (out / "report.md").read_text()
    assert "A paper hyper-representation folder: its zoo is imported 4 of 4 models" in text
    assert f"| {PAPER_B_T} | - | 1/1/1 | 10.0 ± – [10.0, 10.0] | 30.0 ± – [30.0, 30.0] | 50.0 ± – [50.0, 50.0] |" in text
    assert f"the ablation {tiny_hyperrep_no_lwln_path} (trained on" in text  # another zoo: left out, said so
    assert not any("[no LWLN]" in m for m in summary["method"])


def test_recorded_b_t_names_what_is_missing(paper_root, tmp_path):
    folder = paper_root / "hyper_reps" / "mnist"
    result, why = recorded_test_split(folder, ReportConfig(fine_tune_epochs=[0, 1, 5]))
    assert result is None and "records no accuracy at epochs [5]" in why
    alone = tmp_path / "alone" / "hyper_reps" / "mnist"
    shutil.copytree(HYPER, alone)
    result, why = recorded_test_split(alone, ReportConfig(fine_tune_epochs=[0, 1]))
    assert result is None and "no zoos/<dataset>/zoo_testsplit.pt beside" in why
    result, why = recorded_test_split(folder, ReportConfig(fine_tune_epochs=[2, 1]))
    assert why is None and result.epochs == [0, 1, 2] and result.accuracy.tolist() == [[0.1, 0.3, 0.5]]


def test_transfer_from_a_paper_folder_fine_tunes_its_samples_on_another_dataset(paper_root, tmp_path, monkeypatch):
    from hyperrep.images.datasets import write_digits_idx
    from hyperrep.pipeline.transfer import run_transfer

    monkeypatch.setenv("HYPERREP_IMPORT_CACHE", str(tmp_path / "imports"))
    digits = tmp_path / "digits"
    write_digits_idx(digits)
    config = ReportConfig(models_per_method=3, test_images=200, fine_tune_images=300, fine_tune_epochs=[0, 1],
                          samplers=["kde_legacy"], ablation_samplers=[], noise_sigmas=[], fine_tune_models=None,
                          ensemble_size=2, bootstrap_resamples=100)
    summary = run_transfer(paper_root / "hyper_reps" / "mnist", digits, tmp_path / "t", config=config, workers=1)
    rows = summary.set_index(["method", "epoch"])
    assert list(dict.fromkeys(summary["method"]))[0] == "B_T" and "B_F" in set(summary["method"])
    assert rows.loc[(KDE, 0), "models"] == 2 and rows.loc[(KDE, 0), "hyperrep"] == "paper"
    assert DIRECT not in set(summary["method"])  # B_F is the zoo's models, once
    assert rows.loc[("B_T", 1), "mean"] > 0.2  # one epoch on 300 digits learns (chance: 0.1)
    assert "Transfer learning: zoo `paper-mnist` (mnist) -> `digits`" in (tmp_path / "t" / "transfer.md").read_text()


def test_a_paper_autoencoder_without_its_dataset_is_named(tmp_path, capsys):
    folder = tmp_path / "ae-only"
    folder.mkdir()
    for name in ("config_ae.json", "checkpoint_ae.pt"):
        shutil.copy(HYPER / name, folder / name)
    assert main(["report", "--hyperrep", str(folder), "--out", str(tmp_path / "r"), "--ablation", "none"]) == 2
    assert "a paper hyper-representation without its dataset.pt" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
