"""Zoo-training throughput: the project's population training against a plain per-model loop.

Trains the same CNN-s models (same initial weights, same shuffling, Adam, batch 32) on the same
Fashion-MNIST images up to four ways and prints models/s side by side (docs/benchmarks.md):

  plain loop     an nn.Module per model, torch.optim.Adam, a DataLoader-free batch loop (the baseline)
  project        hyperrep.population.train_population with the device's default path
                 (per-model functional loop on a CPU, stacked grouped convolutions elsewhere)
  project, other the other path of train_population, for reference
  build pool     what `hyperrep zoo build` does on a CPU: a process pool, 1 thread per worker

Run:  .venv/bin/python bench/zoo_train.py [--models 8 --epochs 1 --images 5000 --repeats 2]
      add --threads 1 on a machine shared with other jobs (two threads per process oversubscribe it)
Device: HYPERREP_DEVICE, else CUDA / MPS / CPU (hyperrep.device.pick_device).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hyperrep.cnn import CNN_S, init_vector
from hyperrep.data import load_split
from hyperrep.device import pick_device
from hyperrep.population import train_population, use_batched_path

ACTIVATION = "tanh"


class PlainCNN(nn.Module):
    """CNN-s written the usual way, with the public zoos' module indices (0, 3, 6, 9, 11)."""

    def __init__(self):
        super().__init__()
        self.module_list = nn.ModuleList([
            nn.Conv2d(1, 8, 5), nn.MaxPool2d(2), nn.Tanh(),
            nn.Conv2d(8, 6, 5), nn.MaxPool2d(2), nn.Tanh(),
            nn.Conv2d(6, 4, 2), nn.Tanh(), nn.Flatten(),
            nn.Linear(36, 20), nn.Tanh(), nn.Linear(20, 10),
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.module_list:
            x = layer(x)
        return x


def train_plain_loop(starts, seeds, images, labels, epochs, lr, batch_size) -> torch.Tensor:
    """The baseline: one nn.Module and one Adam per model, shuffled with the model's seed."""
    finals = []
    for start, seed in zip(starts, seeds):
        model = PlainCNN().to(images.device)
        model.load_state_dict(CNN_S.vector_to_state_dict(start))
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        generator = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            order = torch.randperm(len(labels), generator=generator).to(images.device)
            for begin in range(0, len(order), batch_size):
                index = order[begin: begin + batch_size]
                loss = F.cross_entropy(model(images[index]), labels[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        finals.append(CNN_S.state_dict_to_vector({k: v.cpu() for k, v in model.state_dict().items()}))
    return torch.stack(finals)


def train_project(starts, seeds, data, epochs, lr, batch_size, batched) -> torch.Tensor:
    return train_population(CNN_S, ACTIVATION, starts, data, epochs=epochs, lr=lr, seeds=seeds,
                            batch_size=batch_size, batched=batched)[:, -1]


_POOL: dict = {}


def _pool_init(data, epochs, lr, batch_size) -> None:
    torch.set_num_threads(1)  # as build_zoo's workers
    _POOL.update(data=data, epochs=epochs, lr=lr, batch_size=batch_size)


def _pool_train(job: tuple[torch.Tensor, int]) -> torch.Tensor:
    start, seed = job
    return train_project(start[None], [seed], _POOL["data"], _POOL["epochs"], _POOL["lr"], _POOL["batch_size"], False)[0]


def train_pool(starts, seeds, data, epochs, lr, batch_size, workers) -> torch.Tensor:
    """build_zoo's process pool (fork, 1 thread per worker, one model per task); start-up included."""
    context = mp.get_context("fork")
    with context.Pool(workers, initializer=_pool_init, initargs=(data, epochs, lr, batch_size)) as pool:
        return torch.stack(pool.map(_pool_train, list(zip(starts, seeds)), chunksize=1))


@dataclass
class Timing:
    name: str
    seconds: float
    finals: torch.Tensor


def timed(name: str, device: torch.device, run) -> Timing:
    if device.type == "cuda":
        torch.cuda.synchronize()
    begin = time.perf_counter()
    finals = run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return Timing(name, time.perf_counter() - begin, finals.cpu())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--images", type=int, default=5000, help="training images (the first N of the train split)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats; the best time of each path counts")
    parser.add_argument("--workers", type=int, default=2, help="processes of the build pool (CPU only; 0 skips it)")
    parser.add_argument("--data-dir", default=None, help="IDX folder (default: HYPERREP_DATA or Debian's Fashion-MNIST)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the main process (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = pick_device()
    cpu_data = load_split("train", args.data_dir)
    cpu_data = cpu_data.subset(torch.arange(min(args.images, len(cpu_data))))
    data = cpu_data.to(device)
    seeds = list(range(1, args.models + 1))
    starts = torch.stack([init_vector(CNN_S, "kaiming_uniform", torch.Generator().manual_seed(s)) for s in seeds])
    default_batched = use_batched_path(device)

    # warm-up (allocator, kernels, lazy init) on a few batches, untimed
    warm = data.subset(torch.arange(min(256, len(data))))
    train_plain_loop(starts[:2], seeds[:2], warm.images, warm.labels, 1, args.lr, args.batch_size)
    train_project(starts[:2], seeds[:2], warm, 1, args.lr, args.batch_size, True)
    train_project(starts[:2], seeds[:2], warm, 1, args.lr, args.batch_size, False)

    common = (args.epochs, args.lr, args.batch_size)
    paths = {
        "plain loop (nn.Module + Adam per model)":
            lambda: train_plain_loop(starts, seeds, data.images, data.labels, *common),
        f"project default: train_population, {'stacked' if default_batched else 'per-model'} path":
            lambda: train_project(starts, seeds, data, *common, default_batched),
        f"project other: train_population, {'per-model' if default_batched else 'stacked'} path":
            lambda: train_project(starts, seeds, data, *common, not default_batched),
    }
    if device.type == "cpu" and args.workers > 0:
        paths[f"build pool: {args.workers} processes x 1 thread, per-model path"] = (
            lambda: train_pool(starts, seeds, cpu_data, *common, args.workers))
    load_before = os.getloadavg()[0]
    best: dict[str, Timing] = {}
    for _ in range(args.repeats):  # interleaved, so a burst of load on the machine hits every path alike
        for name, run in paths.items():
            timing = timed(name, device, run)
            if name not in best or timing.seconds < best[name].seconds:
                best[name] = timing
    runs = list(best.values())

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device {device} ({name}), {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads in the main process")
    print(f"{args.models} CNN-s models x {args.epochs} epoch(s) x {len(data)} images, batch {args.batch_size}, "
          f"Adam lr {args.lr}, {ACTIVATION}; best of {args.repeats} interleaved repeats; "
          f"1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after\n")
    baseline = runs[0]
    print(f"| path | seconds | models/s | vs plain loop | max abs weight difference to plain loop |")
    print(f"|---|---:|---:|---:|---:|")
    for run in runs:
        difference = (run.finals - baseline.finals).abs().max().item()
        print(f"| {run.name} | {run.seconds:.2f} | {args.models / run.seconds:.2f} | "
              f"{baseline.seconds / run.seconds:.2f}x | {difference:.1e} |")


if __name__ == "__main__":
    main()
