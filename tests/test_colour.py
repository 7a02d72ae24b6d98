"""CNN-s with 3 input channels and CNN-l end to end on a tiny synthetic colour dataset in CIFAR-10's
binary format: zoo build -> hyper-representation -> samples -> evaluation, fine-tuning, report, app."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_TUNING, point_app_at

from hyperrep.ae.artifact import load_hyperrep
from hyperrep.ae.config import TrainConfig
from hyperrep.ae.model import ModelConfig
from hyperrep.ae.train import train_hyperrep
from hyperrep.cli import main
from hyperrep.nets.population import evaluate_population
from hyperrep.pipeline.report import load_test_images, run_report
from hyperrep.pipeline.report_types import ReportConfig
from hyperrep.zoo.build import BuildConfig, build_zoo
from hyperrep.zoo.format import Zoo

CLASS_COLOURS = np.random.default_rng(5).integers(30, 226, size=(10, 3))


def synthetic_colour_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """32x32 RGB images whose class sets the colour of a centre square over noise (learnable in 1 epoch)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n)
    images = rng.integers(0, 256, size=(n, 32, 32, 3)).astype(np.int16)
    images[:, 8:24, 8:24] = CLASS_COLOURS[labels][:, None, None, :] + rng.integers(-20, 21, size=(n, 16, 16, 3))
    return np.clip(images, 0, 255).astype(np.uint8), labels


def write_cifar_batches(folder, n_train: int, n_test: int) -> None:
    """The CIFAR-10 binary layout: data_batch_1..5.bin and test_batch.bin, 3073-byte records."""
    folder.mkdir(parents=True, exist_ok=True)
    per_batch = n_train // 5
    for k, name in enumerate([f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]):
        n = n_test if name == "test_batch.bin" else per_batch
        images, labels = synthetic_colour_images(n, seed=100 + k)
        records = np.concatenate([labels[:, None].astype(np.uint8), images.transpose(0, 3, 1, 2).reshape(n, -1)], axis=1)
        (folder / name).write_bytes(records.tobytes())


@pytest.fixture(scope="module")
def colour_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cifar") / "cifar-10-batches-bin"
    write_cifar_batches(folder, n_train=1000, n_test=300)
    return folder.parent


def colour_build(architecture: str) -> BuildConfig:
    return BuildConfig(name=f"colour-{architecture}", architecture=architecture, dataset="cifar10", n_models=8,
                       epochs=2, train_images=600, train_metric_images=200, test_images=300, batch_size=32,
                       learning_rate=[3e-3, 1e-2], init="kaiming_uniform", init_families=1)


def tiny_training(architecture: str) -> TrainConfig:
    model = ModelConfig(architecture=architecture, d_model=16, n_heads=2, n_blocks=1, d_ff=32, latent_dim=8)
    return TrainConfig(model=model, epochs=2,
                       batch_size=8, map_method="pca", eval_images=100, final_eval_images=100)


@pytest.fixture(scope="module", params=["cnn_s3", "cnn_l"])
def colour_artifacts(request, tmp_path_factory, colour_dir):
    folder = tmp_path_factory.mktemp(request.param)
    zoo = build_zoo(colour_build(request.param), folder / "zoo", data_dir=colour_dir, workers=1)
    hyperrep = train_hyperrep(folder / "zoo", folder / "hyperrep", tiny_training(request.param), data_dir=colour_dir, device="cpu")
    return {"zoo": zoo, "zoo_path": folder / "zoo", "hyperrep": hyperrep, "data": colour_dir, "arch": request.param}


def test_colour_zoo_learns_and_its_recorded_accuracy_is_what_evaluation_gives(colour_artifacts):
    zoo = Zoo.load(colour_artifacts["zoo_path"])
    arch = zoo.architecture
    assert arch.name == colour_artifacts["arch"] and arch.in_channels == 3
    assert zoo.manifest["dataset"]["name"] == "cifar10" and zoo.manifest["dataset"]["normalisation"] == [0.5, 0.5]
    final = zoo.properties[zoo.properties["epoch"] == 2].sort_values("model_id")
    assert final["test_acc"].median() > 0.3  # chance is 0.1
    test = load_test_images(zoo, 300, colour_artifacts["data"])
    assert tuple(test.images.shape[1:]) == (3, arch.image_size, arch.image_size)
    weights = zoo.weights[zoo.rows_of(final["model_id"].tolist()), zoo.epoch_position(2)]
    result = evaluate_population(arch, zoo.activation, weights, test)
    np.testing.assert_allclose(result.accuracy, final["test_acc"].to_numpy(), atol=1e-6)


def test_sample_command_decodes_and_evaluates_colour_models(colour_artifacts, tmp_path, capsys):
    out = tmp_path / "samples"
    code = main(["sample", str(colour_artifacts["hyperrep"]), str(out), "--method", "gaussian", "-n", "4",
                 "--data-dir", str(colour_artifacts["data"]), "--test-images", "300"])
    assert code == 0, capsys.readouterr().err
    table = pd.read_csv(out / "samples.csv")
    assert len(table) == 4 and table["test_acc"].notna().all()
    hyperrep = load_hyperrep(colour_artifacts["hyperrep"])
    assert hyperrep.arch.name == colour_artifacts["arch"]


def test_report_fine_tunes_and_compares_colour_populations(colour_artifacts, tmp_path):
    config = ReportConfig(models_per_method=3, test_images=200, tuning=TINY_TUNING, fine_tune_images=200, fine_tune_epochs=[0, 1],
                          samplers=["gaussian"], ablation_samplers=[], noise_sigmas=[0.04], ensemble_size=2,
                          bootstrap_resamples=100)
    summary = run_report(colour_artifacts["hyperrep"], tmp_path / "report", config=config,
                         data_dir=colour_artifacts["data"], workers=1)
    methods = set(summary["method"])
    assert {"B_T (re-trained)", "B_F (anchor pool)"} <= methods and any(m.startswith("S_Dist") for m in methods)
    at_one = summary[summary["epoch"] == 1].set_index("method")
    assert at_one.loc["B_T (re-trained)", "mean"] > 0.15  # one epoch of training from scratch learns the colours
    assert (tmp_path / "report" / "report.md").is_file()
    assert torch.isfinite(torch.tensor(summary["mean"].to_numpy(dtype=float))).all()


def test_app_samples_and_evaluates_colour_models(colour_artifacts, monkeypatch, tmp_path):
    from test_app import PAGES, metric, sample, start, texts

    point_app_at(monkeypatch, tmp_path, zoo=colour_artifacts["zoo_path"], model=colour_artifacts["hyperrep"],
                 data=colour_artifacts["data"])
    for page in PAGES:  # every page renders on CNN-s3 / CNN-l artifacts
        assert not start(page).error, page
    at = start("pages/sample.py")
    sample(at, 3, strategy="gaussian")
    assert not at.error, texts(at.error)
    run = at.session_state["population"]
    zoo = Zoo.load(colour_artifacts["zoo_path"])
    assert run.population.weights.shape == (3, zoo.architecture.n_params)
    assert metric(at, "models") == "3 / 3 finite"
    test = load_test_images(zoo, 10_000, colour_artifacts["data"])
    direct = evaluate_population(zoo.architecture, zoo.activation, run.population.weights, test)
    np.testing.assert_allclose(run.full.accuracy, direct.accuracy, atol=1e-6)


def public_layout(folder) -> None:
    """Leave only what the public Model Zoos' params.json carry (no dataset or hyperrep keys; the
    type "CNN"), so that the import detects the architecture from the checkpoint shapes and the
    dataset from the directory name, as for a downloaded zoo."""
    import json

    for path in [folder / "config.json", *folder.glob("*/params.json")]:
        params = {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith(("dataset::", "hyperrep::"))}
        path.write_text(json.dumps({**params, "model::type": "CNN"}))


def test_an_imported_colour_model_zoo_goes_through_the_app_and_the_report(colour_artifacts, tmp_path, monkeypatch):
    """zoo export --modelzoo -> public layout -> zoo import -> train -> the app (on the Model Zoo
    directory itself) -> report, with the recorded accuracies kept at every step."""
    from test_app import metric, sample, start, texts

    from hyperrep.pipeline.report_types import ZOO_B_T

    arch, data, original = colour_artifacts["arch"], colour_artifacts["data"], Zoo.load(colour_artifacts["zoo_path"])
    source, imported = tmp_path / "tune_zoo_cifar10_colour", tmp_path / "imported"
    assert main(["zoo", "export", str(colour_artifacts["zoo_path"]), str(source), "--modelzoo"]) == 0
    public_layout(source)
    assert main(["zoo", "import", str(source), str(imported)]) == 0
    zoo = Zoo.load(imported)
    assert zoo.architecture.name == arch and zoo.manifest["dataset"] == {"name": "cifar10", "normalisation": [0.5, 0.5]}
    assert torch.equal(zoo.weights, original.weights) and zoo.splits == original.splits
    recorded = zoo.properties.set_index(["model_id", "epoch"])["test_acc"].sort_index()
    assert recorded.equals(original.properties.set_index(["model_id", "epoch"])["test_acc"].sort_index())

    hyperrep = train_hyperrep(imported, tmp_path / "hyperrep", tiny_training(arch), data_dir=data, device="cpu")
    point_app_at(monkeypatch, tmp_path, zoo=source, model=hyperrep, data=data)
    at = start()
    assert not at.sidebar.error, texts(at.sidebar.error)
    assert metric(at, "models") == "8"
    at.switch_page("pages/sample.py").run()
    sample(at, 3, strategy="gaussian")
    assert not at.error, texts(at.error)
    run = at.session_state["population"]
    test = load_test_images(zoo, 10_000, data)
    direct = evaluate_population(zoo.architecture, zoo.activation, run.population.weights, test)
    np.testing.assert_allclose(run.full.accuracy, direct.accuracy, atol=1e-6)

    config = ReportConfig(models_per_method=3, test_images=300, tuning=TINY_TUNING, fine_tune_images=200, fine_tune_epochs=[0, 1],
                          samplers=["gaussian"], ablation_samplers=[], ensemble_size=2,
                          bootstrap_resamples=100, frontier_models=3)
    summary = run_report(hyperrep, tmp_path / "report", config=config, data_dir=data, workers=1)
    rows = summary.set_index(["method", "epoch"])
    test_split = zoo.properties[zoo.properties["model_id"].isin(zoo.splits["test"])]
    for epoch in (0, 1):  # B_T: the imported test-split models, re-evaluated on the whole test set
        expected = test_split.loc[test_split["epoch"] == epoch, "test_acc"].mean()
        assert rows.loc[(ZOO_B_T, epoch), "mean"] == pytest.approx(expected, abs=1e-6)
    assert any(m.startswith("S_Dist") for m in summary["method"]) and (tmp_path / "report" / "report.md").is_file()
