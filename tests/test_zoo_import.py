"""Importing public Model Zoo directories (ray-tune layout), written here exactly as the zoos ship them."""

from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path

import pytest
import torch

from hyperrep import cli
from hyperrep.io.files import ArtifactError
from hyperrep.nets.cnn import CNN_S, init_vector
from hyperrep.zoo.format import Zoo
from hyperrep.zoo.public_folders import read_state_dict
from hyperrep.zoo.public_import import import_modelzoo, parse_epochs

EPOCHS = [0, 1, 2]


def model_vectors(seed: int) -> torch.Tensor:
    """Distinct, plausible CNN-s weights [epochs, P] for one fake trial."""
    start = init_vector(CNN_S, "kaiming_uniform", torch.Generator().manual_seed(seed))
    return torch.stack([start * (1 + 0.1 * e) for e in EPOCHS])


def result_line(epoch: int, seed: int) -> dict:
    """A ray result line; accuracies encode (seed, epoch) so a mismatch is visible."""
    untrained = epoch == 0
    return {
        "train_loss": -999 if untrained else 2.0 - epoch / 10, "train_acc": -999 if untrained else 0.5 + epoch / 100,
        "test_loss": 2.5 - epoch / 10, "test_acc": round(0.1 + epoch / 10 + seed / 1000, 6),
        "training_iteration": epoch, "trial_id": f"t{seed}", "config": {"seed": seed},
    }


def write_trial(
    root: Path, name: str, seed: int, vectors: torch.Tensor, *, with_init_line: bool = True, padded: bool = False,
    nlin: str = "tanh",
) -> Path:
    """One trial folder in the public layout: params.json, result.json, checkpoint_<N>/checkpoints."""
    folder = root / name
    folder.mkdir(parents=True)
    params = {"model::type": "CNN", "model::channels_in": 1, "model::nlin": nlin, "model::init_type": "kaiming_uniform",
              "optim::optimizer": "adam", "optim::lr": 0.0003, "seed": seed, "training::batchsize": 10,
              "dataset::dump": "/zoos/F_MNIST/tune_zoo_f_mnist_uniform/dataset.pt"}
    (folder / "params.json").write_text(json.dumps(params))
    lines = [result_line(e, seed) for e in EPOCHS if with_init_line or e > 0]
    (folder / "result.json").write_text("".join(json.dumps(line) + "\n" for line in lines))
    for epoch, vector in zip(EPOCHS, vectors):
        checkpoint = folder / (f"checkpoint_{epoch:06d}" if padded else f"checkpoint_{epoch}")
        checkpoint.mkdir()
        torch.save(CNN_S.vector_to_state_dict(vector), checkpoint / "checkpoints")
        torch.save({"state": {}, "param_groups": []}, checkpoint / "optimizer")
    return folder


@pytest.fixture()
def modelzoo(tmp_path) -> tuple[Path, dict[int, torch.Tensor]]:
    """Four good trials (both checkpoint namings, with and without the epoch-0 line), folder names unsorted by seed."""
    root = tmp_path / "tune_zoo_f_mnist_uniform"
    vectors = {seed: model_vectors(seed) for seed in (7, 3, 11, 5)}
    write_trial(root, "NN_tune_trainable_a_0_seed=7", 7, vectors[7])
    write_trial(root, "NN_tune_trainable_b_1_seed=3", 3, vectors[3], padded=True)
    write_trial(root, "NN_tune_trainable_c_2_seed=11", 11, vectors[11], with_init_line=False)
    write_trial(root, "NN_tune_trainable_d_3_seed=5", 5, vectors[5], padded=True, with_init_line=False)
    (root / "config.json").write_text("{}")
    return root, vectors


def test_import_keeps_weights_and_matches_results_by_training_iteration(modelzoo, tmp_path):
    root, vectors = modelzoo
    calls = []
    zoo, report = import_modelzoo(root, tmp_path / "out", progress=lambda d, t: calls.append((d, t)))
    assert (report.found, report.kept, report.dropped) == (4, 4, [])
    assert (report.architecture, report.activation, report.dataset) == ("cnn_s", "tanh", "fashion-mnist")
    assert calls[-1] == (4, 4)
    assert zoo.epochs == EPOCHS
    assert zoo.model_ids.tolist() == [7, 3, 11, 5]  # seeds, in sorted folder order
    for row, seed in enumerate(zoo.model_ids.tolist()):
        assert torch.equal(zoo.weights[row], vectors[seed])
    props = zoo.properties.set_index(["model_id", "epoch"])
    for seed, first in ((7, 0), (3, 0), (11, 1), (5, 1)):
        for epoch in EPOCHS[first:]:
            assert props.loc[(seed, epoch), "test_acc"] == pytest.approx(0.1 + epoch / 10 + seed / 1000)
    # the untrained state logs train metrics as -999, and two trials lack the epoch-0 line entirely
    assert math.isnan(props.loc[(7, 0), "train_acc"]) and props.loc[(7, 0), "test_acc"] == pytest.approx(0.107)
    assert math.isnan(props.loc[(11, 0), "test_acc"]) and math.isnan(props.loc[(5, 0), "test_loss"])
    assert props.loc[(3, 2), "train_acc"] == pytest.approx(0.52)
    assert props.loc[(5, 1), "lr"] == pytest.approx(0.0003) and props.loc[(5, 1), "init"] == "kaiming_uniform"
    assert zoo.manifest["dataset"] == {"name": "fashion-mnist", "normalisation": [0.5, 0.5]}
    reloaded = Zoo.load(tmp_path / "out")
    assert torch.equal(reloaded.weights, zoo.weights)
    assert sorted(sum(reloaded.splits.values(), [])) == [3, 5, 7, 11]


def test_import_is_deterministic_and_selects_epochs(modelzoo, tmp_path):
    root, vectors = modelzoo
    first, _ = import_modelzoo(root, tmp_path / "a", epochs=[2, 1])
    second, _ = import_modelzoo(root, tmp_path / "b", epochs=[1, 2])
    assert first.epochs == [1, 2]
    assert torch.equal(first.weights, second.weights) and first.splits == second.splits
    assert torch.equal(first.weights[0], vectors[7][1:])


def test_nan_exploded_missing_and_truncated_models_are_dropped_and_named(modelzoo, tmp_path):
    root, _ = modelzoo
    nan = model_vectors(21)
    nan[2, 100] = float("nan")
    write_trial(root, "NN_tune_trainable_e_4_seed=21", 21, nan)
    exploded = model_vectors(22)
    exploded[1, 5] = 500.0
    write_trial(root, "NN_tune_trainable_f_5_seed=22", 22, exploded)
    missing = write_trial(root, "NN_tune_trainable_g_6_seed=23", 23, model_vectors(23))
    (missing / "result.json").unlink()
    truncated = write_trial(root, "NN_tune_trainable_h_7_seed=24", 24, model_vectors(24))
    checkpoint = truncated / "checkpoint_1" / "checkpoints"
    checkpoint.write_bytes(checkpoint.read_bytes()[:300])

    zoo, report = import_modelzoo(root, tmp_path / "out")
    assert report.counts() == {"non_finite": 1, "exploded": 1, "missing_file": 1, "unreadable_file": 1}
    assert (report.found, report.kept, zoo.n_models) == (8, 4, 4)
    assert sorted(zoo.model_ids.tolist()) == [3, 5, 7, 11]
    detail = {m.folder: m.detail for m in report.dropped}
    assert str(checkpoint) in detail["NN_tune_trainable_h_7_seed=24"]
    assert str(missing / "result.json") in detail["NN_tune_trainable_g_6_seed=23"]
    assert "500" in detail["NN_tune_trainable_f_5_seed=22"] and "epoch 1" in detail["NN_tune_trainable_f_5_seed=22"]
    assert zoo.manifest["dropped"]["exploded_folders"] == ["NN_tune_trainable_f_5_seed=22"]
    assert zoo.manifest["dropped"]["non_finite"] == 1
    # a higher threshold keeps the exploded model
    _, relaxed = import_modelzoo(root, tmp_path / "relaxed", weight_threshold=1000)
    assert "exploded" not in relaxed.counts()


class WritesMarker:
    """Unpickling this would run code: it asks pickle to call os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_code_in_a_checkpoint_is_refused_and_never_runs(modelzoo, tmp_path):
    root, _ = modelzoo
    marker = tmp_path / "pwned"
    evil = write_trial(root, "NN_tune_trainable_z_9_seed=99", 99, model_vectors(99))
    path = evil / "checkpoint_2" / "checkpoints"
    state = CNN_S.vector_to_state_dict(model_vectors(99)[2])
    torch.save({**state, "payload": WritesMarker(marker)}, path)

    with zipfile.ZipFile(path) as archive:  # the file really asks pickle to call os.system
        pickled = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    assert b"system" in pickled and str(marker).encode() in pickled

    with pytest.raises(ArtifactError, match="never pickled code") as refused:
        read_state_dict(path)
    assert str(path) in str(refused.value)
    assert not marker.exists()
    zoo, report = import_modelzoo(root, tmp_path / "out")
    assert [(m.folder, m.reason) for m in report.dropped] == [("NN_tune_trainable_z_9_seed=99", "unreadable_file")]
    assert 99 not in zoo.model_ids.tolist()
    assert not marker.exists()


def test_ids_fall_back_to_sorted_folder_positions_when_seeds_repeat(tmp_path):
    root = tmp_path / "zoo"
    for name in ("trial_c", "trial_a", "trial_b"):
        write_trial(root, name, 1, model_vectors(len(name) + ord(name[-1])))
    zoo, _ = import_modelzoo(root, tmp_path / "out")
    assert zoo.model_ids.tolist() == [0, 1, 2]
    assert zoo.properties.groupby("model_id")["folder"].first().tolist() == ["trial_a", "trial_b", "trial_c"]
    assert zoo.properties["seed"].tolist() == [1] * 9


def test_activation_and_architecture_choices(modelzoo, tmp_path):
    root, _ = modelzoo
    write_trial(root, "NN_tune_trainable_r_8_seed=31", 31, model_vectors(31), nlin="relu")
    with pytest.raises(ArtifactError, match="several activations"):
        import_modelzoo(root, tmp_path / "out")
    zoo, report = import_modelzoo(root, tmp_path / "out", activation="relu")
    assert zoo.model_ids.tolist() == [31] and report.counts() == {"other_activation": 4}
    with pytest.raises(ArtifactError, match="no model could be imported"):
        import_modelzoo(root, tmp_path / "large", activation="tanh", architecture="cnn_l")


def test_missing_or_empty_sources_raise_clear_errors(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        import_modelzoo(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="no model folders"):
        import_modelzoo(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "other" / "notes").mkdir(parents=True)
    with pytest.raises(ArtifactError, match="no model folders"):
        import_modelzoo(tmp_path / "other", tmp_path / "out")
    (tmp_path / "broken" / "trial_a" / "checkpoint_1").mkdir(parents=True)
    with pytest.raises(ArtifactError, match="none of the 1 model folders is readable") as err:
        import_modelzoo(tmp_path / "broken", tmp_path / "out")
    assert str(tmp_path / "broken" / "trial_a" / "params.json") in str(err.value)
    assert not (tmp_path / "out").exists()


def test_parse_epochs():
    assert parse_epochs("21-25") == [21, 22, 23, 24, 25]
    assert parse_epochs("0,5,10") == [0, 5, 10]
    with pytest.raises(ValueError):
        parse_epochs("a-b")


def test_cli_zoo_import(modelzoo, tmp_path, capsys):
    root, _ = modelzoo
    assert cli.main(["zoo", "import", str(root), str(tmp_path / "out"), "--epochs", "1-2"]) == 0
    printed = capsys.readouterr().out
    assert "imported 4 of 4 models" in printed and "saved epochs [1, 2]" in printed
    assert cli.main(["zoo", "import", str(tmp_path / "missing"), str(tmp_path / "x")]) == 2
    assert "Model Zoo directory not found" in capsys.readouterr().err


def test_a_missing_result_line_keeps_nan_metrics_and_combines_with_a_paper_hyperrep(modelzoo, tmp_path):
    """An epoch without a result.json line used to make the paper embedding fail with
    "lacks rows"; the state is kept with NaN metrics, reported, and never chosen as an anchor."""
    from test_paper_compat import paper_config, random_state_dict, write_paper_dir

    from hyperrep.ae.artifact import latent_table
    from hyperrep.pipeline import artifacts
    from hyperrep.sampling.anchors import top_fraction

    root, _ = modelzoo
    folder = root / "NN_tune_trainable_a_0_seed=7"
    lines = (folder / "result.json").read_text().splitlines()
    (folder / "result.json").write_text("\n".join(line for line in lines if '"training_iteration": 2' not in line) + "\n")
    zoo, report = import_modelzoo(root, tmp_path / "zoo")
    assert report.without_results["NN_tune_trainable_a_0_seed=7"] == [2]
    assert any("no result.json line" in line and "NN_tune_trainable_a_0_seed=7 epochs [2]" in line for line in report.lines())
    paper = write_paper_dir(tmp_path / "paper", paper_config(), random_state_dict(48, "linear", torch.Generator().manual_seed(0)))
    embedded = artifacts.paper_hyperrep(paper, zoo)
    table = embedded.latent_table
    assert len(table) == 4 * len(EPOCHS)
    assert math.isnan(table.set_index(["model_id", "epoch"]).loc[(7, 2), "test_acc"])
    anchors = top_fraction(table, 1.0)
    assert len(anchors) == int(table["test_acc"].notna().sum()) and table["test_acc"].iloc[anchors].notna().all()
    with pytest.raises(ArtifactError, match=r"no row for 1 embedded \(model_id, epoch\) pairs, e.g. \[\(99, 1\)\]"):
        latent_table(tmp_path / "zoo", torch.tensor([7, 99]), torch.tensor([1, 1]))
