"""The paper's pickled files, read through the allow-list, and imported as a zoo.

The fixtures under tests/fixtures/paper/ were made once with the paper's own classes (seed-code,
MIT: SimCLRDataset, PropertyDataset, torch's TensorDataset, vector_to_checkpoint) on a 4-model
ray-tune zoo of CNN-s checkpoints whose weights are base + 0.05 * epoch and whose test accuracy is
0.1 + 0.2 * epoch + 0.03 * (model position), seeds 3, 7, 11, 19. tests/fixtures/paper/malicious/
holds pickles that run exec() when unpickled normally, or name a class of another package.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from test_app import app_env  # noqa: F401  (a fixture)

from hyperrep.cli import main
from hyperrep.io.files import ArtifactError, load_torch_file
from hyperrep.io.paper_pickles import load_paper_pickle, read_image_dataset
from hyperrep.nets.cnn import CNN_S
from hyperrep.paper.files import read_model_dataset, read_property_dataset
from hyperrep.paper.importing import (
    find_dataset_file,
    find_zoo_folder,
    import_paper_dataset,
    paper_sample_populations,
    paper_testsplit,
)
from hyperrep.zoo.format import Zoo

FIXTURES = Path(__file__).parent / "fixtures" / "paper"
HYPER = FIXTURES / "hyper_reps" / "mnist"
ZOOS = FIXTURES / "zoos" / "mnist"
MALICIOUS = FIXTURES / "malicious"
SEEDS = [3, 7, 11, 19]


def test_dataset_pt_splits_hold_weights_and_properties():
    splits = read_model_dataset(HYPER / "dataset.pt")
    assert set(splits) == {"train", "test"}
    train = splits["train"]
    assert train.weights.shape == (4, CNN_S.n_params) and train.weights.dtype == torch.float32
    assert train.layer_lst == [(0, "conv2d"), (3, "conv2d"), (6, "conv2d"), (9, "fc"), (11, "fc")]
    assert train.table["epoch"].tolist() == [1, 2, 1, 2]
    assert train.table["training_iteration"].tolist() == [1, 2, 1, 2]
    assert train.table["model::nlin"].unique().tolist() == ["tanh"]
    # the same model's two epochs differ by 0.05 in every weight (the fixture's recipe)
    assert torch.allclose(train.weights[1] - train.weights[0], torch.full((CNN_S.n_params,), 0.05), atol=1e-5)


def test_paper_vector_order_is_our_flat_order():
    """samples/direct/checkpoint_0.pt = vector_to_checkpoint(trainset sample 0 + noise 0.01)."""
    train = read_model_dataset(HYPER / "dataset.pt")["train"]
    samples = paper_sample_populations(HYPER, CNN_S)
    assert set(samples) == {"direct", "kde_z_train"} and samples["direct"].shape == (2, CNN_S.n_params)
    difference = (samples["direct"][0] - train.weights[0]).abs()
    assert difference.max() < 0.06 and difference.mean() < 0.01  # noise only: the same order
    shuffled = torch.roll(train.weights[0], 1)
    assert (samples["direct"][0] - shuffled).abs().mean() > 0.05


def test_import_paper_dataset_writes_a_zoo_with_the_files_splits(tmp_path):
    zoo, report = import_paper_dataset(HYPER, tmp_path / "zoo")
    loaded = Zoo.load(tmp_path / "zoo")
    assert report.kept == 4 and report.epochs == [1, 2] and report.activation == "tanh" and report.dataset == "mnist"
    assert loaded.architecture.name == "cnn_s" and loaded.epochs == [1, 2]
    assert sorted(loaded.model_ids.tolist()) == SEEDS
    splits = read_model_dataset(HYPER / "dataset.pt")
    train_seeds = sorted({int(p.split("seed=")[1].split("_")[0]) for p in splits["train"].table["path"]})
    assert loaded.splits["train"] == train_seeds and sorted(loaded.splits["test"]) == sorted(set(SEEDS) - set(train_seeds))
    assert loaded.manifest["dataset"] == {"name": "mnist", "normalisation": [0.1307, 0.3081]}
    table = loaded.properties.set_index(["model_id", "epoch"])
    for position, seed in enumerate(SEEDS):
        assert table.loc[(seed, 2), "test_acc"] == pytest.approx(0.1 + 0.4 + 0.03 * position)
    row = loaded.rows_of([train_seeds[0]])[0]
    first = splits["train"].table.index[splits["train"].table["path"].str.contains(f"seed={train_seeds[0]}_")][0]
    assert torch.equal(loaded.weights[row, 0], splits["train"].weights[first])


def test_zoo_import_cli_accepts_dataset_pt_and_an_unzipped_hyper_reps_folder(tmp_path, capsys):
    assert main(["zoo", "import", str(HYPER / "dataset.pt"), str(tmp_path / "z")]) == 0
    assert "imported 4 of 4 models" in capsys.readouterr().out
    assert Zoo.load(tmp_path / "z").n_models == 4
    assert main(["zoo", "import", str(FIXTURES / "hyper_reps"), str(tmp_path / "y")]) == 0  # one zoo per dataset
    assert Zoo.load(tmp_path / "y" / "mnist").n_models == 4
    with pytest.raises(ArtifactError, match="holds several paper hyper-representations \\(mnist\\)"):
        find_dataset_file(FIXTURES / "hyper_reps")
    with pytest.raises(ArtifactError, match="no weights"):
        find_dataset_file(ZOOS)


def test_a_public_model_zoo_with_its_own_dataset_pt_is_still_a_model_zoo(tmp_path):
    """The public zoos keep their images in a dataset.pt beside the model folders; that is no paper file."""
    from hyperrep.paper.importing import looks_like_paper_dataset

    zoo = tmp_path / "tune_zoo_mnist_uniform"
    (zoo / "NN_tune_trainable_a_seed=1").mkdir(parents=True)
    (zoo / "NN_tune_trainable_a_seed=1" / "params.json").write_text("{}")
    torch.save({"trainset": None}, zoo / "dataset.pt")
    assert not looks_like_paper_dataset(zoo)
    assert looks_like_paper_dataset(HYPER) and looks_like_paper_dataset(FIXTURES / "hyper_reps")


def test_image_dataset_and_testsplit():
    images = read_image_dataset(ZOOS / "image_dataset.pt")
    assert {k: tuple(v[0].shape) for k, v in images.items()} == {
        "train": (6, 1, 28, 28), "val": (2, 1, 28, 28), "test": (4, 1, 28, 28)}
    assert images["test"][1].dtype == torch.int64
    table = paper_testsplit(ZOOS)
    # the paper's PropertyDataset reads result.json line `epoch - 1` (its offset quirk); each row
    # keeps the accuracy of the iteration it records, so accuracy and epoch stay paired
    assert sorted(zip(table["epoch"], table["test_acc"])) == [(0, 0.1), (1, 0.3), (2, 0.5)]
    assert find_zoo_folder(HYPER) == ZOOS.resolve()


@pytest.mark.parametrize("name, refused", [
    ("exec_payload.pt", "builtins.exec"),
    ("hidden_payload.pt", "builtins.exec"),
    ("unknown_class.pt", "somepackage.models.Unknown"),
])
def test_malicious_pickles_are_refused_by_name_and_never_run(name, refused, tmp_path):
    for marker in ("HYPERREP_PAYLOAD_TOPLEVEL", "HYPERREP_PAYLOAD_HIDDEN"):
        os.environ.pop(marker, None)
    with pytest.raises(ArtifactError, match=f"refused to load '{refused}'") as err:
        load_paper_pickle(MALICIOUS / name)
    assert name in str(err.value)
    with pytest.raises(ArtifactError, match="refused"):
        read_model_dataset(MALICIOUS / name)
    with pytest.raises(ArtifactError, match="refused"):
        import_paper_dataset(MALICIOUS / name, tmp_path / "zoo")
    assert "HYPERREP_PAYLOAD_TOPLEVEL" not in os.environ and "HYPERREP_PAYLOAD_HIDDEN" not in os.environ
    assert not (tmp_path / "zoo").exists()


def test_the_malicious_fixture_really_runs_code_when_unpickled_plainly():
    """Guard for the test above: a plain torch.load would execute the payload."""
    os.environ.pop("HYPERREP_PAYLOAD_TOPLEVEL", None)
    try:
        torch.load(MALICIOUS / "exec_payload.pt", weights_only=False)
        assert os.environ.get("HYPERREP_PAYLOAD_TOPLEVEL") == "ran"
    finally:
        os.environ.pop("HYPERREP_PAYLOAD_TOPLEVEL", None)


def test_plain_pickles_with_system_calls_are_refused(tmp_path):
    class Shell:
        def __reduce__(self):
            return (os.system, ("echo should-not-run > " + str(tmp_path / "ran.txt"),))

    path = tmp_path / "plain.pt"
    torch.save({"trainset": Shell()}, path)
    with pytest.raises(ArtifactError, match=r"refused to load '(posix|os)\.system'"):
        load_paper_pickle(path)
    assert not (tmp_path / "ran.txt").exists()
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps({"a": Shell()}, protocol=2))
    with pytest.raises(ArtifactError, match="refused|unreadable"):
        load_paper_pickle(legacy)
    assert not (tmp_path / "ran.txt").exists()


def test_random_bytes_are_not_a_paper_file(tmp_path, capsys):
    """Bytes that torch.save never writes are named as no paper file, not as a pickle's load key."""
    path = tmp_path / "mnist" / "dataset.pt"
    path.parent.mkdir()
    path.write_bytes(b"\xf2" + np.random.default_rng(0).bytes(4095))
    expected = f"{path}: not a paper file; expected a torch-saved paper dataset"
    for read in (load_paper_pickle, read_model_dataset, read_image_dataset, read_property_dataset):
        with pytest.raises(ArtifactError) as err:
            read(path)
        assert str(err.value).startswith(expected) and "load key" not in str(err.value)
    assert main(["zoo", "import", str(path), str(tmp_path / "zoo")]) == 2
    assert capsys.readouterr().err.startswith(f"hyperrep: error: {expected}")
    assert not (tmp_path / "zoo").exists()
    with pytest.raises(ArtifactError, match="not a torch file; expected one written by torch.save"):
        load_torch_file(path)  # the weights_only loader of checkpoints says the same of such bytes


def test_wrong_content_is_named(tmp_path):
    path = tmp_path / "tensors.pt"
    torch.save({"trainset": torch.zeros(3)}, path)
    with pytest.raises(ArtifactError, match="trainset is a Tensor, not one of the paper's model datasets"):
        read_model_dataset(path)
    with pytest.raises(ArtifactError, match="PropertyDataset"):
        read_property_dataset(path)
    with pytest.raises(ArtifactError, match="not a TensorDataset"):
        read_image_dataset(path)
    assert np.isnan(paper_testsplit(ZOOS)["test_acc"]).sum() == 0


def write_paper_autoencoder(folder: Path, tiny_hyperrep_dir: Path) -> None:
    """config_ae.json + checkpoint_ae.pt of a tiny autoencoder, in the paper's key names (docs/formats.md)."""
    import json

    from hyperrep.ae.artifact import load_hyperrep
    from hyperrep.nets.permutations import index_dict

    tiny = load_hyperrep(tiny_hyperrep_dir).model
    config = tiny.config
    paper_config = {
        "model::type": "transformer", "model::encoding": "neuron", "model::i_dim": 2464, "model::index_dict": index_dict(CNN_S),
        "model::N_attention_blocks": config.n_blocks, "model::N_attention_heads": config.n_heads,
        "model::dim_attention_embedding": config.d_model, "model::attention_hidden_dim": config.d_ff,
        "model::latent_dim": config.latent_dim, "model::dropout": 0.0, "model::normalize": True,
        "model::compression": "linear", "model::bottleneck": config.bottleneck, "model::decoder_bias": False,
    }
    (folder / "config_ae.json").write_text(json.dumps(paper_config))
    torch.save({k: v for k, v in tiny.state_dict().items() if k.startswith(("encoder.", "decoder."))},
               folder / "checkpoint_ae.pt")


def test_a_paper_folder_opens_in_the_app_with_its_own_zoo(app_env, tmp_path):
    import shutil

    from test_app import metric, start, texts

    folder = tmp_path / "hyper_reps" / "mnist"
    shutil.copytree(HYPER, folder)
    write_paper_autoencoder(folder, app_env["model"])
    at = start()
    at.text_input(key="model_path").set_value(str(folder)).run()
    assert not at.exception and not at.sidebar.error, texts(at.sidebar.error)
    assert metric(at, "models") == "4" and "paper-mnist" in texts(at.markdown)
    assert "latent dim 8, 8 embedded models" in texts(at.sidebar.caption)
    cached = list((tmp_path / "imports").iterdir())
    assert len(cached) == 1 and Zoo.load(cached[0]).n_models == 4


def test_paper_folder_adds_its_samples_and_b_t_as_comparison_rows(app_env, tmp_path):
    import shutil

    from test_app import sample, start, texts

    root = tmp_path / "ghrp"
    folder = root / "hyper_reps" / "mnist"
    shutil.copytree(HYPER, folder)
    shutil.copytree(ZOOS, root / "zoos" / "mnist")
    write_paper_autoencoder(folder, app_env["model"])
    at = start()
    at.text_input(key="model_path").set_value(str(folder)).run()
    at.switch_page("pages/sample.py").run()
    sample(at, 3, strategy="kde_legacy")  # the fixture's top 30 % is a single anchor
    assert not at.error, texts(at.error)
    baselines = at.session_state["population"].baselines
    assert len(baselines["S_KDE train (paper)"]) == 2 and len(baselines["B_F (paper's direct: zoo models, last epoch)"]) == 2
    assert baselines["B_T (paper's zoo_testsplit, epoch 0, as recorded)"].tolist() == [0.1]
    assert baselines["B_T (paper's zoo_testsplit, epoch 2, as recorded)"].tolist() == [0.5]
    summary = at.dataframe[0].value
    assert {"S_KDE train (paper)", "B_T (paper's zoo_testsplit, epoch 2, as recorded)"} <= set(summary["group"])


def test_a_paper_zoos_folder_is_an_image_source(tmp_path):
    from hyperrep.images.datasets import load_split

    test = load_split("test", ZOOS, (0.1307, 0.3081), dataset="mnist", shape=(1, 28))
    stored = read_image_dataset(ZOOS / "image_dataset.pt")["test"]
    assert torch.equal(test.images, stored[0]) and torch.equal(test.labels, stored[1])  # no second normalisation
    with pytest.raises(ArtifactError, match=r"images are \(1, 28, 28\), the zoo's CNN takes \(3, 32, 32\)"):
        load_split("train", ZOOS, shape=(3, 32))


def test_legacy_torch_format_is_read_and_guarded_the_same_way(tmp_path):
    """torch.save before the zip format (torch < 1.6) goes through the same allow-list."""
    from torch.utils.data import TensorDataset

    good = tmp_path / "legacy.pt"
    torch.save({"trainset": TensorDataset(torch.zeros(2, 1, 28, 28), torch.tensor([1, 2]))}, good,
               _use_new_zipfile_serialization=False)
    assert read_image_dataset(good)["train"][1].tolist() == [1, 2]

    class Shell:
        def __reduce__(self):
            return (os.system, ("echo should-not-run > " + str(tmp_path / "ran.txt"),))

    bad = tmp_path / "legacy_bad.pt"
    torch.save({"trainset": Shell()}, bad, _use_new_zipfile_serialization=False)
    with pytest.raises(ArtifactError, match=r"refused to load '(posix|os)\.system'"):
        load_paper_pickle(bad)
    assert not (tmp_path / "ran.txt").exists()
