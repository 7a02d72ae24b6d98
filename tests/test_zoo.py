"""The zoo format (save/load, splits, corrupt files) and the resumable zoo build."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from hyperrep import cli
from hyperrep.io.files import ArtifactError, read_json, read_tensor_metadata, read_tensors, write_json, write_tensors
from hyperrep.zoo.build import BuildConfig, build_zoo
from hyperrep.zoo.format import Zoo

SMALL = dict(name="small", n_models=4, epochs=1, train_images=300, train_metric_images=100, test_images=200,
             learning_rate=[0.001, 0.01])


def test_round_trip_is_bit_identical(tiny_zoo, tmp_path):
    assert tuple(tiny_zoo.weights.shape) == (12, 3, 2464)
    assert tiny_zoo.epochs == [0, 1, 2] and tiny_zoo.model_ids.tolist() == list(range(1, 13))
    tiny_zoo.save(tmp_path / "copy")
    loaded = Zoo.load(tmp_path / "copy")
    assert torch.equal(loaded.weights, tiny_zoo.weights) and torch.equal(loaded.model_ids, tiny_zoo.model_ids)
    pd.testing.assert_frame_equal(loaded.properties, tiny_zoo.properties)
    assert loaded.manifest == tiny_zoo.manifest


def test_splits_are_by_model(tiny_zoo):
    splits = tiny_zoo.splits
    assert [len(splits[s]) for s in ("train", "val", "test")] == [8, 2, 2]
    ids = [set(v) for v in splits.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert set.union(*ids) == set(tiny_zoo.model_ids.tolist())
    per_model = tiny_zoo.properties.groupby("model_id")["split"]
    assert (per_model.nunique() == 1).all()  # every epoch of a model lies in one split
    assert all(split in splits and model in splits[split] for model, split in per_model.first().items())
    weights, rows = tiny_zoo.samples(split="test", epochs=[2])
    assert weights.shape == (2, 2464) and rows["model_id"].tolist() == splits["test"]
    assert torch.equal(weights[0], tiny_zoo.weights[tiny_zoo.rows_of([splits["test"][0]])[0], 2])


def test_tiny_zoo_models_learn(tiny_zoo):
    accuracy = tiny_zoo.properties.groupby("epoch")["test_acc"].median()
    assert accuracy[0] < 0.25 and accuracy[2] > 0.5  # 10 classes: chance is 0.1


def _first_files(partial: Path) -> dict[int, torch.Tensor]:
    return {int(p.stem.split("_")[1]): read_tensors(p)["weights"] for p in sorted(partial.glob("model_*.safetensors"))}


def test_interrupted_build_resumes_and_matches_an_uninterrupted_build(idx_dir, tmp_path):
    config = BuildConfig(**SMALL)
    out = tmp_path / "interrupted"

    def stop_after_two(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_zoo(config, out, data_dir=idx_dir, workers=1, progress=stop_after_two)
    finished = _first_files(out / "partial")
    assert sorted(finished) == [1, 2] and not (out / "zoo.json").exists()

    seen = []
    resumed = build_zoo(config, out, data_dir=idx_dir, workers=1, progress=lambda d, t: seen.append(d))
    assert seen == [2, 3, 4]  # resumed at the two finished models
    assert resumed.model_ids.tolist() == [1, 2, 3, 4] and not (out / "partial").exists()
    for seed, weights in finished.items():
        assert torch.equal(resumed.weights[seed - 1], weights)

    fresh = build_zoo(config, tmp_path / "fresh", data_dir=idx_dir, workers=1)
    assert torch.equal(fresh.weights, resumed.weights)
    pd.testing.assert_frame_equal(fresh.properties, resumed.properties)
    assert Zoo.load(out).splits == fresh.splits


def test_resume_with_other_settings_is_refused(idx_dir, tmp_path):
    out = tmp_path / "zoo"
    (out / "partial").mkdir(parents=True)
    write_json(out / "partial" / "config.json", {**BuildConfig(**SMALL).__dict__, "epochs": 3})
    with pytest.raises(ArtifactError, match="other settings \\(epochs\\)") as err:
        build_zoo(BuildConfig(**SMALL), out, data_dir=idx_dir, workers=1)
    assert str(out / "partial" / "config.json") in str(err.value)


def test_non_finite_models_are_dropped_and_counted(idx_dir, tmp_path):
    config = BuildConfig(**SMALL)
    out = tmp_path / "zoo"
    rows = [{"model_id": 3, "seed": 3, "epoch": e, "lr": 0.01, "init": "kaiming_uniform", "train_loss": float("nan"),
             "train_acc": float("nan"), "test_loss": float("nan"), "test_acc": float("nan")} for e in (0, 1)]
    broken = torch.zeros(2, 2464)
    broken[1, 7] = float("nan")
    write_tensors(out / "partial" / "model_000003.safetensors", {"weights": broken}, {"rows": json.dumps(rows)})
    zoo = build_zoo(config, out, data_dir=idx_dir, workers=1)
    assert zoo.model_ids.tolist() == [1, 2, 4]
    assert zoo.manifest["dropped"] == {"non_finite": 1, "non_finite_ids": [3]}
    assert 3 not in sum(zoo.splits.values(), []) and 3 not in zoo.properties["model_id"].tolist()
    assert torch.isfinite(Zoo.load(out).weights).all()


@pytest.fixture()
def zoo_copy(tiny_zoo_path, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_zoo_path, tmp_path / "zoo"))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _wrong_shape(path: Path) -> None:
    tensors = read_tensors(path)
    save_file({"weights": tensors["weights"][:, :2].contiguous(), "model_ids": tensors["model_ids"]}, str(path))


def _missing_rows(path: Path) -> None:
    pd.read_parquet(path).iloc[:-3].to_parquet(path, index=False)


def _duplicated_row(path: Path) -> None:
    table = pd.read_parquet(path)
    table.iloc[-1] = table.iloc[0]
    table.to_parquet(path, index=False)


@pytest.mark.parametrize(
    ("name", "damage", "message"),
    [
        ("weights.safetensors", _truncate, "not a readable safetensors file"),
        ("weights.safetensors", lambda p: p.write_bytes(b"\x00" * 64), "not a readable safetensors file"),
        ("weights.safetensors", _wrong_shape, r"weights have shape \(12, 2, 2464\), the manifest needs \(12, 3, 2464\)"),
        ("zoo.json", lambda p: p.write_text("{not json"), "not valid JSON"),
        ("zoo.json", lambda p: p.write_text('{"format": "something-else", "version": 1}'), "not a hyperrep zoo manifest"),
        ("zoo.json", lambda p: p.unlink(), "file not found"),
        ("models.parquet", _missing_rows, "33 rows, expected one per model and epoch"),
        ("models.parquet", _duplicated_row, "rows do not cover each model at each saved epoch once"),
        ("models.parquet", _truncate, "not a readable parquet table"),
    ],
)
def test_damaged_files_raise_an_error_naming_the_file(zoo_copy, name, damage, message):
    damage(zoo_copy / name)
    with pytest.raises(ArtifactError, match=message) as err:
        Zoo.load(zoo_copy)
    assert str(zoo_copy / name) in str(err.value)


def test_not_a_zoo_directory(tmp_path):
    with pytest.raises(ArtifactError, match="not a directory"):
        Zoo.load(tmp_path / "missing")


def test_cli_zoo_info(tiny_zoo_path, tiny_zoo, capsys):
    assert cli.main(["zoo", "info", str(tiny_zoo_path)]) == 0
    printed = capsys.readouterr().out
    assert "models 12, saved epochs [0, 1, 2]" in printed
    assert "cnn_s (2464 parameters), activation tanh" in printed
    assert "splits train 8, val 2, test 2" in printed
    assert "median" in printed and "q95" in printed
    last = tiny_zoo.properties[tiny_zoo.properties["epoch"] == 2]["test_acc"]
    epoch_line = next(line.split() for line in printed.splitlines() if line.strip().startswith("2 "))
    assert epoch_line[:3] == ["2", "12", f"{last.mean():.3f}"]
    assert epoch_line[-1] == f"{last.max():.3f}" and epoch_line[6] == f"{last.median():.3f}"
    assert cli.main(["zoo", "info", str(tiny_zoo_path / "nope")]) == 2
    assert "nope: directory not found" in capsys.readouterr().err


def test_partial_files_carry_their_property_rows(idx_dir, tmp_path):
    config = BuildConfig(**{**SMALL, "n_models": 1})

    def stop(done: int, total: int) -> None:
        if done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_zoo(config, tmp_path / "zoo", data_dir=idx_dir, workers=1, progress=stop)
    path = tmp_path / "zoo" / "partial" / "model_000001.safetensors"
    rows = json.loads(read_tensor_metadata(path)["rows"])
    assert [r["epoch"] for r in rows] == [0, 1] and all(0 <= r["test_acc"] <= 1 for r in rows)
    assert read_json(tmp_path / "zoo" / "partial" / "config.json")["n_models"] == 1


def test_init_families_share_initial_states_but_not_data_order(idx_dir, tmp_path):
    config = BuildConfig(**{**SMALL, "init": {"kaiming_uniform": 0.5, "xavier_normal": 0.5}, "init_families": 2})
    zoo = build_zoo(config, tmp_path / "zoo", data_dir=idx_dir, workers=1)
    start, end = zoo.weights[:, 0], zoo.weights[:, -1]
    family = zoo.model_ids % 2
    for a in range(4):
        for b in range(a + 1, 4):
            assert torch.equal(start[a], start[b]) == bool(family[a] == family[b])
            assert not torch.equal(end[a], end[b])  # own data order and learning rate
    rows = zoo.properties[zoo.properties["epoch"] == 0].set_index("model_id")
    assert rows.groupby("init_seed")["init"].nunique().max() == 1  # one init type per family
    assert sorted(rows["init_seed"].unique()) == [1_000_000_000, 1_000_000_001]


def test_seed_zoo_starts_each_model_from_its_own_seed():
    config = BuildConfig(**SMALL, init={"kaiming_uniform": 0.5, "uniform": 0.5})
    assert [config.hyperparameters(s)["init_seed"] for s in (1, 2, 3)] == [1, 2, 3]
    with pytest.raises(ValueError, match="init_families"):
        BuildConfig(**SMALL, init_families=0).validate()
