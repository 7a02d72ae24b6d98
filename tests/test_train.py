"""Training on the tiny zoo: loss falls, the artifact loads, resume is exact, bad configs are refused."""

from __future__ import annotations

import json

import pytest
import torch

from hyperrep.ae.artifact import load_hyperrep
from hyperrep.ae.config import TrainConfig
from hyperrep.ae.train import train_hyperrep
from hyperrep.cli import main
from hyperrep.io.files import read_tensors
from hyperrep.nets.cnn import CNN_L
from hyperrep.nets.permutations import index_dict
from hyperrep.zoo.format import Zoo

TINY = {
    "model": {"d_model": 16, "n_heads": 2, "n_blocks": 1, "d_ff": 32, "latent_dim": 8, "scale_inputs": True},
    "augmentation": {"permute": True, "erase_p": 0.0, "target": "clean"},
    "epochs": 3, "batch_size": 8, "lr": 3e-3, "warmup_epochs": 0, "gamma": 0.05, "eval_every": 1,
    "eval_images": 50, "final_eval_images": 50, "map_method": "pca",
}


def tiny_config(**overrides) -> TrainConfig:
    raw = json.loads(json.dumps(TINY))
    raw.update(overrides)
    return TrainConfig.from_dict(raw)


def test_training_lowers_the_loss_and_writes_a_loadable_artifact(tiny_zoo_path, idx_dir, tmp_path):
    out = tmp_path / "hyperrep"
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(TINY))
    assert main(["train", str(tiny_zoo_path), str(out), "--config", str(config_path), "--data-dir", str(idx_dir)]) == 0
    rep = load_hyperrep(out)
    history = rep.metrics["history"]
    assert len(history) == 3 and history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["val_loss_recon"] < history[0]["val_loss_recon"]
    assert {"val_rsq_l0", "val_rsq_l4", "val_acc_reconstructed", "loss_recon_l1"} <= set(history[-1])
    zoo = Zoo.load(tiny_zoo_path)
    assert rep.zoo_path == tiny_zoo_path.resolve()
    assert rep.latents.shape == (zoo.n_models * len(zoo.epochs), 8) and rep.map_coords.shape == (len(rep.latents), 2)
    assert rep.latent_table[["model_id", "epoch"]].values.tolist() == [[int(m), e] for m in zoo.model_ids for e in zoo.epochs]
    assert {"split", "test_acc"} <= set(rep.latent_table.columns)
    assert set(rep.metrics["quality"]) == {"train", "val", "test"}
    test_quality = rep.metrics["quality"]["test"]
    assert {"acc_ratio_above_threshold", "acc_correlation", "prediction_agreement"} <= set(test_quality)
    assert 0 <= test_quality["mean_model"]["prediction_agreement"] <= 1
    assert test_quality["mean_model"]["acc_correlation"] is None  # one model: no spread to correlate
    for split in ("val", "test"):  # held-out splits carry the no-latent references of hyperrep.zoo.references
        nearest, pca = rep.metrics["quality"][split]["nearest_train"], rep.metrics["quality"][split]["pca"]
        assert nearest["distance"] > 0 and 0 <= nearest["prediction_agreement"] <= 1
        assert pca["components"] == min(8, len(zoo.splits["train"]) * len(zoo.epochs) - 1) and pca["rsq"] <= 1
    assert "nearest_train" not in rep.metrics["quality"]["train"]  # a train model is its own nearest
    with torch.no_grad():
        torch.testing.assert_close(rep.model.encode(zoo.weights[:, 0]), rep.latents[:: len(zoo.epochs)], rtol=1e-4, atol=1e-5)
    assert not (out / "checkpoint").exists()
    # sigma per layer comes from the train split only
    train, _ = zoo.samples("train")
    every = zoo.weights.reshape(-1, zoo.architecture.n_params)
    for i, part in enumerate(zoo.architecture.layer_slices()):
        assert rep.model.layer_scales[i].item() == pytest.approx(train[:, part].flatten().std().item(), rel=1e-5)
    assert not torch.allclose(rep.model.layer_scales, torch.stack([every[:, p].flatten().std() for p in zoo.architecture.layer_slices()]))
    moved = rep.to("cpu")
    assert moved.model is not rep.model and moved.latents.device.type == "cpu"


class Interrupt(Exception):
    pass


def test_resume_continues_exactly_where_it_stopped(tiny_zoo_path, idx_dir, tmp_path):
    config = tiny_config()
    straight = train_hyperrep(tiny_zoo_path, tmp_path / "straight", config, data_dir=idx_dir, device="cpu")

    def stop_in_second_epoch(done: int, total: int) -> None:
        if done == total // 3 + 1:  # one step into epoch 2, after epoch 1's checkpoint
            raise Interrupt

    with pytest.raises(Interrupt):
        train_hyperrep(tiny_zoo_path, tmp_path / "resumed", config, data_dir=idx_dir, device="cpu",
                       progress=stop_in_second_epoch)
    state = json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 1
    with pytest.raises(ValueError, match="--resume"):
        train_hyperrep(tiny_zoo_path, tmp_path / "resumed", config, data_dir=idx_dir, device="cpu")
    with pytest.raises(ValueError, match="another config"):
        train_hyperrep(tiny_zoo_path, tmp_path / "resumed", tiny_config(lr=1e-3), resume=True, data_dir=idx_dir, device="cpu")
    resumed = train_hyperrep(tiny_zoo_path, tmp_path / "resumed", config, resume=True, data_dir=idx_dir, device="cpu")
    a, b = read_tensors(straight / "model.safetensors"), read_tensors(resumed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    history_a = json.loads((straight / "metrics.json").read_text())["history"]
    history_b = json.loads((resumed / "metrics.json").read_text())["history"]
    assert [row["loss"] for row in history_a] == [row["loss"] for row in history_b]


def test_a_killed_training_leaves_no_artifact_and_resumes_to_the_same_weights(tiny_zoo_path, idx_dir, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps({**TINY, "epochs": 40}))
    command = [sys.executable, "-m", "hyperrep.cli", "train", str(tiny_zoo_path), "", "--config", str(config_path),
               "--data-dir", str(idx_dir), "--threads", "1"]
    straight = tmp_path / "straight"
    done = subprocess.run(command[:5] + [str(straight)] + command[6:], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    printed = done.stdout + done.stderr
    assert "epoch 40/40:" in printed and "ETA 0:00:00" in printed and "step/s" in printed  # epoch, s/epoch, ETA, bar
    killed = tmp_path / "killed"
    run = subprocess.Popen(command[:5] + [str(killed)] + command[6:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = killed / "checkpoint" / "state.json"
    while run.poll() is None and not (state.is_file() and json.loads(state.read_text())["epoch"] >= 3):
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert run.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "model.safetensors").exists() and not (killed / "metrics.json").exists()
    resumed = subprocess.run(command[:5] + [str(killed)] + command[6:] + ["--resume"], capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch" in resumed.stdout + resumed.stderr
    a, b = read_tensors(straight / "model.safetensors"), read_tensors(killed / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_configs_for_another_architecture_are_refused(tiny_zoo_path, tmp_path):
    wrong = tiny_config(model={**TINY["model"], "architecture": "cnn_l"})
    with pytest.raises(ValueError, match="cnn_l .*cnn_s"):
        train_hyperrep(tiny_zoo_path, tmp_path / "a", wrong, device="cpu")
    paper = {
        "model::encoding": "neuron", "model::i_dim": CNN_L.n_params, "model::index_dict": index_dict(CNN_L),
        "model::N_attention_blocks": 1, "model::N_attention_heads": 2, "model::dim_attention_embedding": 16,
        "model::attention_hidden_dim": 32, "model::latent_dim": 8, "model::dropout": 0.0, "model::normalize": True,
    }
    path = tmp_path / "config_ae.json"
    path.write_text(json.dumps(paper))
    assert main(["train", str(tiny_zoo_path), str(tmp_path / "b"), "--config", str(path)]) == 2
    path.write_text(json.dumps({**paper, "model::i_dim": 1234}))
    assert main(["train", str(tiny_zoo_path), str(tmp_path / "c"), "--config", str(path)]) == 2
    with pytest.raises(ValueError, match="zoo_epochs"):
        train_hyperrep(tiny_zoo_path, tmp_path / "d", tiny_config(zoo_epochs=[7]), device="cpu")
    assert not (tmp_path / "a").exists() and not (tmp_path / "d").exists()


@pytest.mark.parametrize("change,named", [
    ({"model": {**TINY["model"], "latent_dim": 16 * 48 + 1}}, "latent_dim 769 is larger"),
    ({"model": {**TINY["model"], "d_model": 18, "n_heads": 4}}, "d_model 18 is not divisible by n_heads 4"),
    ({"batch_size": 10_000}, "fewer than batch_size 10000"),
])
def test_a_bad_config_stops_with_one_line_before_training(tiny_zoo_path, tmp_path, capsys, change, named):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**TINY, **change}))
    assert main(["train", str(tiny_zoo_path), str(tmp_path / "out"), "--config", str(path)]) == 2
    error = capsys.readouterr().err.strip()
    assert named in error and len(error.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_loading_refuses_foreign_or_incomplete_directories(tmp_path):
    from hyperrep.io.files import ArtifactError

    with pytest.raises(ArtifactError, match="not a directory"):
        load_hyperrep(tmp_path / "missing")
    (tmp_path / "config.json").write_text(json.dumps({"format": "something-else", "model": {}, "zoo": "."}))
    with pytest.raises(ArtifactError, match="config.json"):
        load_hyperrep(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "hyperrep-hyper-representation",
                                                      "model": TINY["model"], "zoo": "."}))
    with pytest.raises(ArtifactError, match="model.safetensors: file not found"):
        load_hyperrep(tmp_path)


def test_accuracy_figures_tell_a_copy_from_a_constant_model():
    import numpy as np

    from hyperrep.nets.population import Evaluation
    from hyperrep.zoo.references import accuracy_figures

    predictions = torch.tensor([[0, 1, 2, 3], [0, 1, 1, 1], [2, 2, 2, 2]], dtype=torch.int8)
    accuracy = np.array([1.0, 0.75, 0.6])
    original = Evaluation(accuracy, np.zeros(3), np.ones(3, dtype=bool), predictions)
    copy = accuracy_figures(original, original)
    assert copy["acc_ratio_above_threshold"] == 1 and copy["acc_correlation"] == pytest.approx(1)
    assert copy["prediction_agreement"] == 1 and copy["share_above_90pct"] == 1
    constant = Evaluation(np.full(3, 0.75), np.zeros(3), np.ones(3, dtype=bool),
                          torch.tensor([0, 1, 1, 1], dtype=torch.int8).expand(3, -1))
    figures = accuracy_figures(original, constant)
    assert figures["acc_ratio_above_threshold"] == pytest.approx((0.75 + 1 + 1.25) / 3)
    assert figures["acc_correlation"] is None
    assert figures["prediction_agreement"] == pytest.approx((2 / 4 + 1 + 0) / 3)


def test_a_zoo_without_validation_models_is_refused_before_training(tiny_zoo, tmp_path):
    zoo = Zoo.load(tiny_zoo.path)
    zoo.properties.loc[zoo.properties["split"] == "val", "split"] = "test"
    zoo.save(tmp_path / "no-val")
    with pytest.raises(ValueError, match="no val models .*models per split"):
        train_hyperrep(tmp_path / "no-val", tmp_path / "out", tiny_config(), device="cpu")
    assert not (tmp_path / "out").exists()


def test_float16_storage_halves_the_files_and_decodes_what_float32_decodes(tiny_zoo_path, idx_dir, tmp_path):
    import importlib.util

    full, half = tmp_path / "full", tmp_path / "half"
    train_hyperrep(tiny_zoo_path, full, tiny_config(), data_dir=idx_dir, device="cpu")
    train_hyperrep(tiny_zoo_path, half, tiny_config(storage_dtype="float16"), data_dir=idx_dir, device="cpu")
    assert {v.dtype for v in read_tensors(half / "model.safetensors").values() if v.is_floating_point()} == {torch.float16}
    assert read_tensors(half / "latents.safetensors")["latents"].dtype == torch.float16
    assert read_tensors(half / "latents.safetensors")["model_id"].dtype == read_tensors(full / "latents.safetensors")["model_id"].dtype
    size = lambda folder: (folder / "model.safetensors").stat().st_size  # noqa: E731
    assert size(half) < 0.55 * size(full)
    a, b = load_hyperrep(full), load_hyperrep(half)
    assert next(b.model.parameters()).dtype == torch.float32  # loading casts back
    weights = Zoo.load(tiny_zoo_path).weights[:4, -1]
    with torch.no_grad():
        decoded_a, decoded_b = (h.model.decode(h.model.encode(weights)) for h in (a, b))
    assert 0 < (decoded_a - decoded_b).abs().max() < 1e-2  # the same run, rounded once
    assert torch.allclose(a.latents, b.latents, atol=1e-2)
    # bench/weights_16bit.py --write turns the float32 artifact into the float16 one, file for file
    spec = importlib.util.spec_from_file_location("weights_16bit", "bench/weights_16bit.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.write_16bit(full)
    for name in ("model.safetensors", "latents.safetensors"):
        converted, trained = read_tensors(full / name), read_tensors(half / name)
        assert all(torch.equal(converted[k], trained[k]) for k in trained)
    assert json.loads((full / "config.json").read_text())["training"]["storage_dtype"] == "float16"
    with pytest.raises(ValueError, match="storage_dtype"):
        tiny_config(storage_dtype="int8")


def test_an_artifact_stored_without_its_projection_head_decodes_as_with_it(tiny_zoo_path, idx_dir, tmp_path):
    import importlib.util

    full, slim = tmp_path / "full", tmp_path / "slim"
    train_hyperrep(tiny_zoo_path, full, tiny_config(), data_dir=idx_dir, device="cpu")
    train_hyperrep(tiny_zoo_path, slim, tiny_config(store_projection_head=False), data_dir=idx_dir, device="cpu")
    kept = set(read_tensors(slim / "model.safetensors"))
    assert kept and not any(k.startswith("projection_head.") for k in kept)
    assert set(read_tensors(full / "model.safetensors")) - kept == {k for k in read_tensors(full / "model.safetensors")
                                                                    if k.startswith("projection_head.")} != set()
    a, b = load_hyperrep(full), load_hyperrep(slim)
    assert a.model.projection_head is not None and b.model.projection_head is None
    assert b.model.config.latent_dim == a.model.config.latent_dim
    weights = Zoo.load(tiny_zoo_path).weights[:4, -1]
    with torch.no_grad():
        assert torch.equal(a.model.decode(a.model.encode(weights)), b.model.decode(b.model.encode(weights)))
    assert torch.equal(a.latents, b.latents)
    spec = importlib.util.spec_from_file_location("weights_16bit", "bench/weights_16bit.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.write_16bit(full, drop_projection_head=True)
    assert set(read_tensors(full / "model.safetensors")) == kept
    assert load_hyperrep(full).model.projection_head is None
