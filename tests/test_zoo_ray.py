"""Zoo builds on a real local Ray cluster (head + 2 worker nodes on this machine): a worker node killed
mid-build, a driver stopped and resumed, and both give exactly the local build."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import hyperrep
from hyperrep import cli
from hyperrep.zoo.build import BuildConfig, build_zoo, finished_seeds
from hyperrep.zoo.format import Zoo
from hyperrep.zoo.ray_build import RayNotInstalled, build_zoo_on_ray, import_ray

# 6 models in 3 chunks of 2; each chunk trains a few seconds, long enough to be caught mid-run.
CONFIG = dict(name="ray", n_models=6, chunk_models=2, epochs=2, train_images=1500, train_metric_images=100,
              test_images=200, learning_rate=[0.001, 0.01], init={"kaiming_uniform": 0.5, "uniform": 0.5})
TASK_TITLE = b"ray::_train_chunk_task"  # Ray names a worker process after the task it runs
WATCHDOG_S = 300  # a hung build stops the cluster, so the test fails instead of CI hanging


def test_without_ray_the_error_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` does when it is not installed
    with pytest.raises(RayNotInstalled, match=r'pip install "hyperrep\[ray\]"'):
        import_ray()
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    assert cli.main(["zoo", "build", str(tmp_path / "config.json"), str(tmp_path / "out"), "--ray"]) == 2
    assert "needs the optional dependency ray" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing was started


@pytest.fixture(scope="module")
def cluster():
    """Head (no CPUs: it only runs the driver's bookkeeping) and two 1-CPU worker nodes; always shut down."""
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    # The worker processes must import this checkout's hyperrep, as the driver does.
    root = str(Path(hyperrep.__file__).resolve().parent.parent)
    old_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([root, *([old_path] if old_path else [])])
    # Ray's own choice of this machine's address: with node_ip_address="127.0.0.1" ray.init(address)
    # looks for the GCS at the machine's other address and never connects (Ray 2.60).
    node = dict(include_dashboard=False, object_store_memory=100 * 2**20)
    cluster = Cluster(initialize_head=True, head_node_args={**node, "num_cpus": 0})
    try:
        workers = [cluster.add_node(**node, num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        yield cluster, workers
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()
        if old_path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old_path


@pytest.fixture(scope="module")
def local_zoo(idx_dir, tmp_path_factory) -> Zoo:
    return build_zoo(BuildConfig(**CONFIG), tmp_path_factory.mktemp("local") / "zoo", data_dir=idx_dir, workers=1)


def _assert_same_zoo(zoo: Zoo, expected: Zoo) -> None:
    assert torch.equal(zoo.model_ids, expected.model_ids)
    assert torch.equal(zoo.weights, expected.weights)
    pd.testing.assert_frame_equal(zoo.properties, expected.properties)
    assert zoo.splits == expected.splits


def _running_task_node(cluster, workers):
    """The worker node whose raylet is the parent of a process running a chunk task, if any."""
    raylets = {node.all_processes["raylet"][0].process.pid: node for node in workers if node in cluster.worker_nodes}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if title.startswith(TASK_TITLE) and parent in raylets:
            return raylets[parent]
    return None


def test_a_worker_node_killed_mid_build_loses_nothing(cluster, local_zoo, idx_dir, tmp_path):
    ray_cluster, workers = cluster
    killed = []

    def kill_a_busy_worker():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            node = _running_task_node(ray_cluster, workers)
            if node is not None:
                ray_cluster.remove_node(node)  # kills the node's raylet and its workers mid-chunk
                killed.append(node)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_busy_worker, daemon=True)
    watchdog = threading.Timer(WATCHDOG_S, ray_cluster.shutdown)
    killer.start()
    watchdog.start()
    try:
        zoo = build_zoo_on_ray(BuildConfig(**CONFIG), tmp_path / "zoo", address=ray_cluster.address, data_dir=idx_dir)
    finally:
        watchdog.cancel()
        killer.join()
    assert killed, "no chunk task was seen running, so no worker was killed"
    _assert_same_zoo(zoo, local_zoo)
    _assert_same_zoo(Zoo.load(tmp_path / "zoo"), local_zoo)


def test_a_stopped_driver_resumes_through_the_cli(cluster, local_zoo, idx_dir, tmp_path, capsys):
    ray_cluster, _ = cluster
    if len(ray_cluster.worker_nodes) < 1:
        ray_cluster.add_node(include_dashboard=False, object_store_memory=100 * 2**20, num_cpus=1)
    config, out = BuildConfig(**CONFIG), tmp_path / "zoo"

    seen = []

    def stop_after_first_chunk(done, total):
        seen.append(done)
        if len(finished_seeds(out / "partial")) == 2:  # called right after each model file is written
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_zoo_on_ray(config, out, address=ray_cluster.address, data_dir=idx_dir, progress=stop_after_first_chunk)
    first = {s: (out / "partial" / f"model_{s:06d}.safetensors").read_bytes() for s in finished_seeds(out / "partial")}
    assert len(first) == 2 and not (out / "zoo.json").exists()
    assert any(isinstance(done, float) for done in seen)  # an epoch report from a worker moved the bar

    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    args = ["zoo", "build", str(tmp_path / "config.json"), str(out), "--ray", ray_cluster.address, "--data-dir", str(idx_dir)]
    assert cli.main(args) == 0
    assert "models 6, saved epochs [0, 1, 2]" in capsys.readouterr().out
    _assert_same_zoo(Zoo.load(out), local_zoo)
    assert not (out / "partial").exists()
