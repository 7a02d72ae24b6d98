"""The chunked zoo build: stacked chunks give each model its own training, resume loses at most a chunk."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from hyperrep.nets import native
from hyperrep.nets.cnn import get_architecture, init_vector
from hyperrep.nets.population import train_population
from hyperrep.zoo import build as zoo_build
from hyperrep.zoo.build import BuildConfig, build_zoo, load_build_data

SMALL = dict(name="small", n_models=4, epochs=1, train_images=300, train_metric_images=100, test_images=200,
             learning_rate=[0.001, 0.01], init={"kaiming_uniform": 0.5, "uniform": 0.5})


def test_each_model_of_a_chunk_gets_its_own_init_data_order_and_learning_rate(idx_dir, tmp_path):
    config = BuildConfig(**{**SMALL, "epochs": 2, "chunk_models": 3})  # chunks [1, 2, 3] and [4]
    seen = []
    zoo = build_zoo(config, tmp_path / "zoo", data_dir=idx_dir, workers=1, progress=lambda d, t: seen.append(d))
    assert seen == [0, 1.5, 1, 2, 3, 3.5, 4]  # half of a chunk's epochs count as half of its models
    arch, data = get_architecture("cnn_s"), load_build_data(config, idx_dir)
    table = zoo.properties.set_index(["model_id", "epoch"])
    for row, seed in enumerate(config.seeds()):
        hyper = config.hyperparameters(seed)
        start = init_vector(arch, hyper["init"], torch.Generator().manual_seed(hyper["init_seed"]))
        assert torch.equal(zoo.weights[row, 0], start)
        alone = train_population(arch, "tanh", start[None], data.train, epochs=2, lr=hyper["lr"], seeds=[seed],
                                 batch_size=config.batch_size, batched=False)[0]
        torch.testing.assert_close(zoo.weights[row], alone, atol=2e-3, rtol=0)
        assert (zoo.weights[row, 2] - alone[2]).abs().max() < 0.01 * (alone[2] - start).abs().max()
        assert table.loc[(seed, 2), "lr"] == hyper["lr"] and table.loc[(seed, 0), "init"] == hyper["init"]
    assert len({float(zoo.weights[r, 2, 0]) for r in range(4)}) == 4


def test_a_resumed_build_trains_only_the_unfinished_models_and_rewrites_nothing(idx_dir, tmp_path, monkeypatch):
    config = BuildConfig(**{**SMALL, "chunk_models": 2})  # chunks [1, 2] and [3, 4]
    trained = []
    real_train_chunk = zoo_build.train_chunk
    monkeypatch.setattr(zoo_build, "train_chunk", lambda c, d, seeds, **kw: trained.append(seeds) or real_train_chunk(c, d, seeds, **kw))
    out = tmp_path / "zoo"

    def stop_at(n):
        def progress(done, total):
            if done == n:
                raise KeyboardInterrupt
        return progress

    with pytest.raises(KeyboardInterrupt):  # killed while writing chunk [3, 4]: model 3 is on disk
        build_zoo(config, out, data_dir=idx_dir, workers=1, progress=stop_at(3))
    assert trained == [[1, 2], [3, 4]] and sorted(zoo_build.finished_seeds(out / "partial")) == [1, 2, 3]
    before = {s: zoo_build.model_path(out / "partial", s).stat().st_mtime_ns for s in (1, 2, 3)}

    trained.clear()
    with pytest.raises(KeyboardInterrupt):  # resumed: only model 4 trains, and 1-3 are kept as they were
        build_zoo(config, out, data_dir=idx_dir, workers=1, progress=stop_at(4))
    assert trained == [[4]]
    assert {s: zoo_build.model_path(out / "partial", s).stat().st_mtime_ns for s in (1, 2, 3)} == before

    trained.clear()
    resumed = build_zoo(config, out, data_dir=idx_dir, workers=1)
    assert trained == []  # every model was on disk
    fresh = build_zoo(config, tmp_path / "fresh", data_dir=idx_dir, workers=1)
    arch = get_architecture("cnn_s")
    if native.available(arch, "tanh"):  # the compiled kernel: a model's bits do not depend on its chunk mates
        assert torch.equal(resumed.weights, fresh.weights)
        pd.testing.assert_frame_equal(resumed.properties, fresh.properties)
    torch.testing.assert_close(resumed.weights, fresh.weights, atol=1e-5, rtol=0)


def test_worker_processes_build_the_same_zoo(idx_dir, tmp_path):
    config = BuildConfig(**{**SMALL, "epochs": 2, "chunk_models": 2})
    seen = []
    pooled = build_zoo(config, tmp_path / "pooled", data_dir=idx_dir, workers=2, progress=lambda d, t: seen.append(d))
    single = build_zoo(config, tmp_path / "single", data_dir=idx_dir, workers=1)
    assert torch.equal(pooled.weights, single.weights)
    pd.testing.assert_frame_equal(pooled.properties, single.properties)
    assert seen[0] == 0 and seen[-1] == 4 and seen == sorted(seen) and 1.0 in seen  # a chunk at epoch 1 of 2


def test_chunk_models_is_checked_and_may_change_on_resume(idx_dir, tmp_path):
    with pytest.raises(ValueError, match="chunk_models"):
        BuildConfig(**SMALL, chunk_models=0).validate()
    assert BuildConfig(**SMALL, chunk_models=3).chunks() == [[1, 2, 3], [4]]
    zoo_build.start_build(BuildConfig(**SMALL, chunk_models=2), tmp_path)
    plan = zoo_build.start_build(BuildConfig(**SMALL, chunk_models=3), tmp_path)  # regrouping is allowed
    assert plan.todo == [[1, 2, 3], [4]]
    zoo_build.write_models(tmp_path / "partial", [zoo_build.TrainedModel(2, torch.zeros(2, 2464), [])])
    assert zoo_build.start_build(BuildConfig(**SMALL, chunk_models=3), tmp_path).todo == [[1, 3], [4]]
    with pytest.raises(zoo_build.ArtifactError, match="other settings \\(batch_size\\)"):
        zoo_build.start_build(BuildConfig(**SMALL, chunk_models=3, batch_size=10), tmp_path)
