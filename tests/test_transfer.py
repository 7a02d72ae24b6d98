"""Transfer learning: a Fashion-MNIST hyper-representation's samples fine-tuned on scikit-learn's bundled
handwritten digits (8x8, resized to 28x28 and written as IDX files), against B_T and B_F."""

from __future__ import annotations

import numpy as np
import pytest
from test_app import app_env  # noqa: F401  (a fixture)

from hyperrep.cli import main
from hyperrep.images.datasets import read_idx, write_digits_idx
from hyperrep.pipeline.report_types import ReportConfig
from hyperrep.pipeline.transfer import run_transfer, target_rule
from hyperrep.zoo.format import Zoo


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits") / "digits"
    write_digits_idx(folder)
    return folder


@pytest.fixture()
def source_hyperrep(tiny_hyperrep_path):
    """conftest's shared tiny autoencoder of the tiny Fashion-MNIST zoo."""
    return tiny_hyperrep_path


def test_digits_are_written_as_idx_and_read_with_their_own_statistics(digits_dir, tiny_zoo_path):
    assert read_idx(digits_dir / "train-images-idx3-ubyte.gz").shape == (1400, 28, 28)
    rule = target_rule(Zoo.load(tiny_zoo_path), digits_dir)
    assert rule.name == "digits" and rule.shape == (1, 28)
    test = rule.load("test", digits_dir)
    assert test.images.shape == (397, 1, 28, 28) and sorted(test.labels.unique().tolist()) == list(range(10))
    # normalised by the digits' own statistics: mean 0 and std 1 over the training images
    train = rule.load("train", digits_dir)
    assert abs(train.images.mean().item()) < 1e-3 and train.images.std().item() == pytest.approx(1.0, abs=1e-3)


def test_transfer_table_has_b_t_b_f_and_samples_with_cis(source_hyperrep, digits_dir, tmp_path):
    config = ReportConfig(models_per_method=4, test_images=300, fine_tune_images=600, fine_tune_epochs=[0, 1],
                          samplers=["gaussian"], noise_sigmas=[], ensemble_size=2, bootstrap_resamples=200)
    summary = run_transfer(source_hyperrep, digits_dir, tmp_path / "t", config=config, workers=1)
    methods = list(dict.fromkeys(summary["method"]))
    assert methods[0] == "B_T" and "B_F" in methods and any(m.startswith("S_Dist") for m in methods)
    assert not any(m.startswith("reconstructed") or m.startswith("noise") for m in methods)
    rows = summary.set_index(["method", "epoch"])
    assert rows.loc[("B_T", 1), "mean"] > 0.3  # one epoch on 600 digits: well above chance (0.1)
    for method in methods:
        for epoch in (0, 1):
            r = rows.loc[(method, epoch)]
            assert r["models"] == 4 and r["ci_low"] <= r["mean"] <= r["ci_high"]
            assert (method == "B_T") == np.isnan(r["p_vs_B_T"])
    text = (tmp_path / "t" / "transfer.md").read_text()
    assert "Transfer learning: zoo `tiny` (fashion-mnist) -> `digits`" in text and "| B_T | - |" in text
    assert "fine-tuned on 600 training images" in text and "first 300 test images" in text


def test_transfer_command_prints_the_table(source_hyperrep, digits_dir, tmp_path, capsys):
    code = main(["transfer", str(source_hyperrep), str(digits_dir), "--out", str(tmp_path / "cli"), "--models", "3",
                 "--epochs", "0", "1", "--samplers", "gaussian", "--test-images", "200", "--fine-tune-images", "300",
                 "--workers", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "| B_F | - |" in captured.out and (tmp_path / "cli" / "transfer.md").is_file()
    assert main(["transfer", str(source_hyperrep), str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_digits_idx_round_trip(tmp_path):
    folder = write_digits_idx(tmp_path / "d", n_train=1000)
    images = read_idx(folder / "train-images-idx3-ubyte.gz")
    assert images.shape == (1000, 28, 28) and images.max() == 255 and images.dtype == np.uint8
    assert read_idx(folder / "t10k-labels-idx1-ubyte.gz").shape == (797,)


def test_fine_tune_page_on_another_dataset(app_env, digits_dir):
    from test_app import chart_keys, sample, start, texts

    at = start("pages/sample.py")
    sample(at, 3, strategy="gaussian")
    at.switch_page("pages/finetune.py").run()
    at.number_input(key="ft_models").set_value(2)
    at.number_input(key="ft_epochs").set_value(1)
    at.select_slider(key="ft_train_images").set_value(500)
    at.select_slider(key="ft_test_images").set_value(500)
    at.text_input(key="ft_other_data").set_value(str(digits_dir))
    at.button(key="finetune_button").click().run()
    assert not at.exception and not at.error, texts(at.error)
    assert "finetune_plot" in chart_keys(at)
    assert f"of `{digits_dir}` (transfer learning)" in texts(at.caption)
    curves = at.dataframe[0].value
    assert list(curves["population"].unique()) == ["samples", "B_T (from scratch)", "B_F (zoo, last epoch)"]
    stored = at.session_state["finetune"]
    assert stored["test_images"] == 397 and stored["dataset"] == str(digits_dir)  # the digits' whole test split
