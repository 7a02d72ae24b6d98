"""Zoo-training throughput: hyperrep's stacked population trainer against a plain per-model loop.

Trains CNN-s models (tanh, Adam, each model with its own initial weights and its own per-seed
shuffling) on the same Fashion-MNIST images, at batch 10 (the paper's) and batch 32, three ways:

  plain loop   an nn.Module and a torch.optim.Adam per model, a DataLoader-free batch loop: the
               baseline, timed with 1 torch thread (its fastest on this 2-core CPU: tiny ops gain
               nothing from a second thread, and lose up to 10x when other jobs share the cores);
               `--loop-threads 1 2` times it with both and the faster counts.
  per-model    hyperrep.nets.population.train_population(batched=False): the functional per-model loop
  stacked      train_population(batched=True): every model steps together; on a CPU the gradients
               come from the compiled kernel (hyperrep.nets.native), on a GPU from grouped convolutions

Each path's time per model-epoch is the best of interleaved repeats; the stacked path trains
`--models` models at once, the loops `--loop-models` (their cost per model does not depend on how
many there are). GFLOP/s counts the nominal 1.16 MFLOP of a dense CNN-s training step per image.
On a machine shared with other jobs the wall-clock ratio flatters the stacked path (its two
threads get more of the machine than the loop's one); the CPU-seconds ratio beside it does not
count the second thread at all. Read the two as bounds. The last two lines are the figures
the goals are set on (GOALS: on a CPU batch 10 >= 20x and batch 32 >= 4x; on CUDA batch 10 >= 50x
and the projected 1,000-model zoo <= 30 min):
  stacked, batch 10: R x the plain loop
  stacked, batch 32: R x the plain loop

Run:  .venv/bin/python bench/zoo_train.py [--models 100 --images 2000 --repeats 2] [--check] [--record]
Device: HYPERREP_DEVICE, else CUDA / MPS / CPU (hyperrep.runtime.device.pick_device). `--check` exits 1
when a ratio (or the projection) misses its goal; `--record` appends the figures to
docs/bench-results/zoo_train.csv (bench/record.py).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from record import Figure, add_options, finish, matmul_gflops
from torch import nn

from hyperrep.images.datasets import ImageSet, load_split
from hyperrep.nets.cnn import CNN_S, init_vector
from hyperrep.nets.population import train_population
from hyperrep.runtime.device import pick_device

ACTIVATION = "tanh"
FLOP_PER_TRAINING_IMAGE = 1.16e6  # CNN-s forward + backward, dense (platform notes)
SEED_ZOO = dict(models=300, epochs=25, images=50_000)  # the seed zoo's size, at batch 10
GPU_ZOO = dict(models=1000, epochs=25, images=50_000)
# stacked over the plain loop, per device type and batch size (speed-ups below these miss)
GOALS = {"cpu": {10: 20.0, 32: 4.0}, "cuda": {10: 50.0}}
PROJECTION_GOAL_MINUTES = {"cuda": 30.0}  # the projected GPU_ZOO at batch 10


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


@dataclass
class Timing:
    name: str
    models: int
    seconds: float
    cpu_seconds: float
    finals: torch.Tensor

    def per_model(self) -> float:
        return self.seconds / self.models


def timed(name: str, models: int, device: torch.device, run, threads: int | None = None) -> Timing:
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.cuda.synchronize()
    began, cpu_began = time.perf_counter(), time.process_time()
    finals = run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    timing = Timing(name, models, time.perf_counter() - began, time.process_time() - cpu_began, finals.cpu())
    torch.set_num_threads(before)
    return timing


def measure_batch(batch: int, starts, seeds, data: ImageSet, args, device) -> dict[str, Timing]:
    """Best-of-repeats timing of each path at one batch size (interleaved, so load hits all alike)."""
    n_loop = min(args.loop_models, len(seeds))
    common = dict(epochs=args.epochs, lr=args.lr, batch_size=batch)
    project = lambda m, batched: train_population(  # noqa: E731
        CNN_S, ACTIVATION, starts[:m], data, seeds=seeds[:m], batched=batched, **common)[:, -1]
    plain = lambda: train_plain_loop(starts[:n_loop], seeds[:n_loop], data.images, data.labels,  # noqa: E731
                                     args.epochs, args.lr, batch)
    paths = {f"plain loop, {t} thread{'s' * (t > 1)}": (n_loop, plain, t) for t in args.loop_threads}
    paths[f"per-model train_population, {args.loop_threads[0]} thread(s)"] = (
        n_loop, lambda: project(n_loop, False), args.loop_threads[0])
    paths[f"stacked train_population, {args.threads} thread(s)"] = (len(seeds), lambda: project(len(seeds), True), None)
    best: dict[str, Timing] = {}
    for _ in range(args.repeats):
        for name, (models, run, threads) in paths.items():
            timing = timed(name, models, device, run, threads)
            if name not in best or timing.per_model() < best[name].per_model():
                best[name] = timing
    return best


def report_batch(batch: int, best: dict[str, Timing], images: int, epochs: int, matmul: float) -> float:
    plain = min((t for name, t in best.items() if name.startswith("plain loop")), key=Timing.per_model)
    stacked = next(t for name, t in best.items() if name.startswith("stacked"))
    flop = images * epochs * FLOP_PER_TRAINING_IMAGE
    print(f"\nbatch {batch}: {images} images x {epochs} epoch(s) per model; the plain loop counts at its best, "
          f"'{plain.name}'")
    print("| path | models | seconds | s per model-epoch | CPU s per model-epoch | GFLOP/s | vs plain loop |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for timing in best.values():
        per_epoch = timing.per_model() / epochs
        print(f"| {timing.name} | {timing.models} | {timing.seconds:.2f} | {per_epoch:.3f} | "
              f"{timing.cpu_seconds / timing.models / epochs:.3f} | {flop / timing.per_model() / 1e9:.1f} | "
              f"{plain.per_model() / timing.per_model():.2f}x |")
    shared = min(plain.finals.shape[0], stacked.finals.shape[0])
    difference = (stacked.finals[:shared] - plain.finals[:shared]).abs().max().item()
    print(f"stacked vs plain loop, the same {shared} models: max abs weight difference {difference:.1e}; "
          f"stacked reaches {flop / stacked.per_model() / 1e9:.1f} GFLOP/s = {flop / stacked.per_model() / 1e9 / matmul:.0%} "
          f"of the {matmul:.0f} GFLOP/s fp32 matmul rate")
    cpu_ratio = (plain.cpu_seconds / plain.models) / (stacked.cpu_seconds / stacked.models)
    return plain.per_model() / stacked.per_model(), stacked.per_model() / (images * epochs), cpu_ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=100, help="models the stacked path trains at once")
    parser.add_argument("--loop-models", type=int, default=4, help="models each per-model loop trains")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--images", type=int, default=2000, help="training images (the first N of the train split)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[10, 32])
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats; the best time of each path counts")
    parser.add_argument("--data-dir", default=None, help="IDX folder (default: HYPERREP_DATA or Debian's Fashion-MNIST)")
    parser.add_argument("--threads", type=int, default=None, help="threads of the stacked path (default: torch's)")
    parser.add_argument("--loop-threads", type=int, nargs="+", default=[1], help="thread counts to time the loops with")
    args = add_options(parser).parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()

    device = pick_device()
    data = load_split("train", args.data_dir)
    data = data.subset(torch.arange(min(args.images, len(data)))).to(device)
    seeds = list(range(1, args.models + 1))
    starts = torch.stack([init_vector(CNN_S, "uniform", torch.Generator().manual_seed(s)) for s in seeds])
    warm = data.subset(torch.arange(min(100, len(data))))  # allocator, kernel build, lazy init: untimed
    train_population(CNN_S, ACTIVATION, starts[:2], warm, epochs=1, lr=args.lr, seeds=seeds[:2], batch_size=10, batched=True)
    train_population(CNN_S, ACTIVATION, starts[:1], warm, epochs=1, lr=args.lr, seeds=seeds[:1], batch_size=10, batched=False)
    train_plain_loop(starts[:1], seeds[:1], warm.images, warm.labels, 1, args.lr, 10)
    matmul = matmul_gflops(device)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    load_before = os.getloadavg()[0]
    print(f"device {device} ({name}), {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} torch threads; "
          f"fp32 matmul {matmul:.0f} GFLOP/s")
    print(f"CNN-s, {ACTIVATION}, U(0,1) init, Adam lr {args.lr}; best of {args.repeats} interleaved repeats")
    ratios = {}
    for batch in args.batch_sizes:
        best = measure_batch(batch, starts, seeds, data, args, device)
        ratios[batch] = report_batch(batch, best, len(data), args.epochs, matmul)
    load = f"1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    print(f"\n{load}")
    minutes = None
    if 10 in ratios:
        zoo = GPU_ZOO if device.type == "cuda" else SEED_ZOO
        hours = ratios[10][1] * zoo["models"] * zoo["epochs"] * zoo["images"] / 3600
        minutes = hours * 60
        print(f"projected: {zoo['models']} models x {zoo['epochs']} epochs x {zoo['images']} images at batch 10 "
              f"in {hours:.2f} h ({hours * 60:.0f} min) on this {device.type}")
    for batch, (ratio, _, cpu_ratio) in ratios.items():
        print(f"stacked, batch {batch}: {ratio:.1f} x the plain loop (CPU seconds per model: {cpu_ratio:.1f} x; {load})")
    return finish(args, "zoo_train", bench_figures(ratios, minutes, device.type, matmul), matmul)


def bench_figures(ratios: dict[int, tuple[float, float, float]], projected_minutes: float | None, device_type: str,
                  matmul: float) -> list[Figure]:
    """The bench's figures for --check and --record: per batch size the wall-clock and CPU-seconds
    ratios (the wall-clock one against GOALS for this device type), the projection, the matmul rate."""
    goals = GOALS.get(device_type, {})
    found = []
    for batch, (ratio, _, cpu_ratio) in ratios.items():
        found.append(Figure(f"stacked_vs_plain_batch{batch}", ratio, at_least=goals.get(batch)))
        found.append(Figure(f"stacked_vs_plain_cpu_seconds_batch{batch}", cpu_ratio))
    if projected_minutes is not None:
        found.append(Figure("projected_zoo_minutes", projected_minutes,
                            at_most=PROJECTION_GOAL_MINUTES.get(device_type)))
    return found + [Figure("matmul_gflops", matmul)]


if __name__ == "__main__":
    raise SystemExit(main())
