"""Autoencoder training throughput, as a fraction of this machine's fp32 matmul rate.

    .venv/bin/python bench/ae_train.py [--configs seed,paper] [--batches 16,128] [--steps 4] [--threads N]
    .venv/bin/python bench/ae_train.py --profile paper --batches 128
    .venv/bin/python bench/ae_train.py --parts                     # the two replaced parts, old vs new

Each (config, batch) times hyperrep.ae.train.train_step, the step the trainer runs (two augmented
views per model, LWLN reconstruction + NT-Xent, backward, gradient clipping, the optimiser), on
the seed zoo's train states (data/seed-zoo, epochs 21-25). Configs:

  seed   configs/paper_seed_hyperrep.json as shipped (d_model 128, latent 96, d_ff 256, 2+2 blocks)
  paper  the same recipe at the authors' 2021 MNIST seed-zoo sizes: d_model 800, latent 700,
         d_ff 900, 4 heads, 2+2 blocks, projection head 4 layers 400 -> 50 (about 70 M parameters)

FLOPs are counted from the config, not measured: hyperrep.ae.model.matmul_flops gives 2 per
multiply-add of every matrix product of one view's forward pass; a step counts 3x that (the
backward pass computes input and weight gradients, two products per forward product) for each of
its 2B views. Norms, softmax, activations, the loss and the optimiser are not counted: they are
the overhead. The matmul rate is the best of several fp32 2048x2048 products timed in the same
run, before and after the configs (the machine's clock and neighbours change over minutes).
The last lines read `ae train <name>, batch B: G GFLOP/s = F % of matmul`. The goal
(MATMUL_SHARE_GOAL): the paper-sized config at batch >= 128 reaches >= 40 % of the matmul rate;
`--check` exits 1 when it is missed, `--record` appends the figures to
docs/bench-results/ae_train.csv (bench/record.py).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from record import Figure, add_options, finish, matmul_gflops

from hyperrep.ae.config import TrainConfig
from hyperrep.ae.model import HyperRepresentation, matmul_flops
from hyperrep.ae.train import make_optimizer, set_learning_rate, train_step

REPO = Path(__file__).resolve().parent.parent
PAPER_SIZES = {"d_model": 800, "latent_dim": 700, "d_ff": 900, "n_heads": 4, "n_blocks": 2,
               "projection_layers": 4, "projection_dim": 400, "projection_out": 50}
MATMUL_SHARE_GOAL = {"paper": (128, 40.0)}  # config: (from this batch size on, at least this % of matmul)
MATMUL_SECONDS = 2.0  # each matmul measurement: the machine's clock and neighbours change over minutes


def bench_config(name: str, batch: int) -> TrainConfig:
    config = TrainConfig.from_file(REPO / "configs" / "paper_seed_hyperrep.json")
    raw = config.to_dict()
    raw["batch_size"] = batch
    if name == "paper":
        raw["model"].update(PAPER_SIZES)
    elif name != "seed":
        raise SystemExit(f"unknown config {name!r}; known: seed, paper")
    return TrainConfig.from_dict(raw)


def train_states() -> torch.Tensor:
    """The seed zoo's train states at epochs 21-25, or fresh uniform vectors where it is absent (speed does not depend on the values)."""
    zoo_path = REPO / "data" / "seed-zoo"
    if (zoo_path / "zoo.json").is_file():
        from hyperrep.zoo.format import Zoo

        return Zoo.load(zoo_path).samples("train", [21, 22, 23, 24, 25])[0]
    return torch.rand(1050, 2464, generator=torch.Generator().manual_seed(0))


class Run:
    """A model, its optimiser and a stream of batches: what train_step needs."""

    def __init__(self, config: TrainConfig, states: torch.Tensor):
        torch.manual_seed(config.seed)
        self.config, self.states = config, states
        self.model = HyperRepresentation(config.model)
        self.model.set_train_statistics(states)
        self.model.train()
        self.optimizer = make_optimizer(self.model, config)
        set_learning_rate(self.optimizer, config.lr)
        self.generator = torch.Generator().manual_seed(0)

    def step(self) -> torch.Tensor:
        rows = torch.randint(len(self.states), (self.config.batch_size,), generator=self.generator)
        return train_step(self.model, self.optimizer, self.config, self.states[rows], self.generator)

    def seconds_per_step(self, steps: int) -> float:
        self.step()  # warm-up: allocator, oneDNN primitives, optimiser state
        self.step()
        began = time.perf_counter()
        for _ in range(steps):
            parts = self.step()
        parts.tolist()
        return (time.perf_counter() - began) / steps


def step_flops(config: TrainConfig) -> int:
    views = 2 * config.batch_size
    return 3 * matmul_flops(config.model) * views


def profile(name: str, batch: int, rows: int = 16) -> None:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    config = bench_config(name, batch)
    run = Run(config, train_states())
    run.seconds_per_step(1)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            run.step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    print(f"ae train {name}, batch {batch}: self CPU time per step by operator (2 steps, threads {torch.get_num_threads()})")
    for event in events[:rows]:
        print(f"  {event.key:48s} {event.self_cpu_time_total / 2 / 1e6:7.3f} s  {100 * event.self_cpu_time_total / total:5.1f} %")


def best_ms(run, repeats: int = 5) -> float:
    run()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return 1000 * min(times)


def compare_parts(batch: int = 128) -> None:
    """The two parts this bench's profile pointed at, the formulation the step had before next to the
    one it has now, on the paper-sized config's shapes: the Norm's forward + backward on one
    [2B x 48, 800] activation, and one AdamW step over the paper-sized model's parameters."""
    from hyperrep.ae.model import Norm

    d = PAPER_SIZES["d_model"]
    x = torch.randn(2 * batch * 48, d, requires_grad=True)
    grad = torch.randn_like(x)
    norm = Norm(d)

    def elementwise() -> None:  # the paper's formula as written: seven elementwise passes
        y = norm.alpha * (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + norm.eps) + norm.bias
        y.backward(grad)

    old, new = best_ms(elementwise), best_ms(lambda: norm(x).backward(grad))
    print(f"Norm forward+backward on [{x.shape[0]}, {d}]: elementwise {old:.0f} ms, fused layer_norm {new:.0f} ms "
          f"({old / new:.1f}x)")
    model = HyperRepresentation(bench_config("paper", batch).model)
    for param in model.parameters():
        param.grad = torch.randn_like(param)
    timings = {}
    for label, options in (("per-tensor loop", {"foreach": False}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, **options)
        timings[label] = best_ms(optimizer.step)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"AdamW step over {params:.1f} M parameters: " + ", ".join(f"{k} {v:.0f} ms" for k, v in timings.items())
          + f" (fused {timings['per-tensor loop'] / timings['fused']:.1f}x the loop)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--configs", default="seed,paper", help="comma-separated: seed, paper")
    parser.add_argument("--batches", default="16,128", help="comma-separated models per step (two views each)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per (config, batch) after 2 warm-up steps")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--profile", metavar="CONFIG", default=None, help="print a per-operator profile of CONFIG instead")
    parser.add_argument("--parts", action="store_true", help="time the Norm and the optimiser step, old vs new, instead")
    args = add_options(parser).parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.parts:
        compare_parts()
        return finish(args, "ae_train", [])
    batches = [int(b) for b in args.batches.split(",")]
    if args.profile:
        for batch in batches:
            profile(args.profile, batch)
        return finish(args, "ae_train", [])

    states = train_states()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {len(states)} train states")
    peak = matmul_gflops(seconds=MATMUL_SECONDS)
    results = []
    for name in args.configs.split(","):
        for batch in batches:
            config = bench_config(name, batch)
            run = Run(config, states)
            seconds = run.seconds_per_step(args.steps)
            params = sum(p.numel() for p in run.model.parameters())
            gflops = step_flops(config) / seconds / 1e9
            results.append((name, batch, gflops))
            print(f"  {name:5s} batch {batch:4d}: {params / 1e6:5.1f} M parameters, {1 / seconds:7.2f} steps/s, "
                  f"{batch / seconds:7.1f} models/s, {step_flops(config) / 1e9:8.1f} GFLOP per step (counted)")
            del run
    peak = max(peak, matmul_gflops(seconds=MATMUL_SECONDS))
    print(f"fp32 matmul 2048^2, best in this run: {peak:.1f} GFLOP/s")
    for name, batch, gflops in results:
        print(f"ae train {name}, batch {batch}: {gflops:.1f} GFLOP/s = {100 * gflops / peak:.0f} % of matmul")
    return finish(args, "ae_train", bench_figures(results, peak), peak)


def bench_figures(results: list[tuple[str, int, float]], peak: float) -> list[Figure]:
    """Per (config, batch) the counted GFLOP/s and its share of the matmul rate, the share against
    MATMUL_SHARE_GOAL where the config and batch size have one."""
    found = []
    for name, batch, gflops in results:
        from_batch, share = MATMUL_SHARE_GOAL.get(name, (None, None))
        goal = share if from_batch is not None and batch >= from_batch else None
        found.append(Figure(f"{name}_batch{batch}_gflops", gflops))
        found.append(Figure(f"{name}_batch{batch}_matmul_percent", 100 * gflops / peak, at_least=goal))
    return found + [Figure("matmul_gflops", peak)]


if __name__ == "__main__":
    raise SystemExit(main())
