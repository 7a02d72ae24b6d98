"""Exporting a zoo in the public Model Zoo layout, and importing it back into the same zoo."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from hyperrep import cli
from hyperrep.io.files import ArtifactError
from hyperrep.zoo.export import export_modelzoo
from hyperrep.zoo.format import Zoo
from hyperrep.zoo.public_folders import read_state_dict
from hyperrep.zoo.public_import import import_modelzoo

SHARED_COLUMNS = ["model_id", "epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "init", "split"]


def test_export_then_import_gives_back_the_same_zoo(tiny_zoo_path, tmp_path, capsys):
    zoo = Zoo.load(tiny_zoo_path)
    dest = tmp_path / "modelzoo"
    assert cli.main(["zoo", "export", str(tiny_zoo_path), str(dest), "--modelzoo"]) == 0
    assert "12 models x 3 epochs written" in capsys.readouterr().out

    trials = sorted(p for p in dest.iterdir() if p.is_dir())
    assert len(trials) == 12 and trials[0].name == "NN_tune_trainable_hyperrep_00000_seed=1"
    params = json.loads((trials[0] / "params.json").read_text())
    first = zoo.properties[(zoo.properties["model_id"] == 1) & (zoo.properties["epoch"] == 0)].iloc[0]
    assert params["seed"] == 1 and params["model::nlin"] == "tanh" and params["optim::lr"] == first["lr"]
    assert params["model::init_type"] == first["init"] and params["training::batchsize"] == 32
    lines = [json.loads(line) for line in (trials[0] / "result.json").read_text().splitlines()]
    assert [line["training_iteration"] for line in lines] == [0, 1, 2]
    assert lines[2]["test_acc"] == zoo.properties.set_index(["model_id", "epoch"]).loc[(1, 2), "test_acc"]
    state = read_state_dict(trials[0] / "checkpoint_2" / "checkpoints")
    assert torch.equal(zoo.architecture.state_dict_to_vector(dict(state)), zoo.weights[0, 2])

    back, report = import_modelzoo(dest, tmp_path / "back")
    assert report.kept == 12 and report.dropped == []
    assert torch.equal(back.model_ids, zoo.model_ids) and torch.equal(back.weights, zoo.weights)
    assert back.epochs == zoo.epochs and back.architecture.name == zoo.architecture.name
    assert back.activation == zoo.activation and back.splits == zoo.splits
    assert back.manifest["dataset"]["name"] == zoo.manifest["dataset"]["name"]
    assert back.manifest["dataset"]["normalisation"] == zoo.manifest["dataset"]["normalisation"]
    mine = zoo.properties[SHARED_COLUMNS].sort_values(["model_id", "epoch"]).reset_index(drop=True)
    theirs = back.properties[SHARED_COLUMNS].sort_values(["model_id", "epoch"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(theirs, mine, check_dtype=False)
    assert (back.properties["seed"].astype(int) == back.properties["model_id"]).all()


def test_export_refuses_a_folder_that_holds_files(tiny_zoo, tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(ArtifactError, match="not an empty folder"):
        export_modelzoo(tiny_zoo, tmp_path / "full")
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    assert cli.main(["zoo", "export", str(tiny_zoo.path), str(tmp_path / "new")]) == 2
    assert "--modelzoo" in capsys.readouterr().err and not (tmp_path / "new").exists()
