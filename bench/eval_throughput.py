"""Population evaluation throughput: hyperrep's evaluate_population vs a plain per-model loop.

    .venv/bin/python bench/eval_throughput.py [--models 100] [--images 10000] [--repeats 3] [--threads N]
    .venv/bin/python bench/eval_throughput.py --profile [--threads 1]

Both paths evaluate the same models (the default zoo's last epoch if present, else fresh
initialisations; speed does not depend on the values) on the same test images, and must give
identical predictions. Also measured: the machine's fp32 matmul rate, to put the evaluation's
arithmetic rate (useful FLOPs of the CNN forward per second) in context. `--profile` instead
prints where a per-model forward spends its CPU time (torch.profiler, one model, 1,000 images)
and the cost per element of tanh and sigmoid. The goal (SPEEDUP_GOAL, on a CPU): evaluate_population
>= 4x the loop; `--check` exits 1 when it is missed, `--record` appends the figures to
docs/bench-results/eval_throughput.csv (bench/record.py).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from record import Figure, add_options, finish, matmul_gflops, synchronize

from hyperrep.images.datasets import ImageSet, load_split
from hyperrep.nets.cnn import CNN_S, Architecture, forward, init_vector
from hyperrep.nets.population import evaluate_population
from hyperrep.runtime.device import pick_device

REPO = Path(__file__).resolve().parent.parent
SPEEDUP_GOAL = {"cpu": 4.0}  # evaluate_population over the per-model loop, per device type


def forward_flops(arch: Architecture) -> int:
    """Multiply-adds x 2 of one image through one model (convs and linears; pools and activations not counted)."""
    size, flops = arch.image_size, 0
    for layer in arch.layers:
        if layer.kind == "conv":
            size = size - layer.kernel + 1
            flops += 2 * size * size * layer.n_weights
            size = size // 2 if layer.pool else size
        else:
            flops += 2 * layer.n_weights
    return flops


def benchmark_models(n: int) -> tuple[torch.Tensor, str]:
    zoo_path = REPO / "data" / "zoo"
    if (zoo_path / "zoo.json").is_file():
        from hyperrep.zoo.format import Zoo

        zoo = Zoo.load(zoo_path)
        if zoo.architecture.name == "cnn_s":
            rows = torch.arange(n) % zoo.n_models
            return zoo.weights[rows, -1].clone(), f"data/zoo, last epoch ({zoo.activation})"
    generator = torch.Generator().manual_seed(0)
    return torch.stack([init_vector(CNN_S, "kaiming_uniform", generator) for _ in range(n)]), "fresh kaiming inits"


def per_model_loop(weights: torch.Tensor, data: ImageSet, activation: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain reference: each model on all images at once."""
    predictions, losses = [], []
    with torch.no_grad():
        for flat in weights:
            logits = forward(CNN_S, activation, flat.to(data.images.device), data.images)
            losses.append(F.cross_entropy(logits, data.labels))
            predictions.append(logits.argmax(dim=1))
    return torch.stack(predictions).cpu(), torch.stack(losses).cpu()


def best_time(run, repeats: int, device: torch.device) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        synchronize(device)
        began = time.perf_counter()
        result = run()
        synchronize(device)
        times.append(time.perf_counter() - began)
    return min(times), result


def profile_per_model(activation: str, rows: int = 8) -> None:
    """CPU time per operator of one model's forward on 1,000 images, and tanh vs sigmoid per element."""
    from torch.profiler import ProfilerActivity, profile

    weights, source = benchmark_models(1)
    data = load_split("test").subset(torch.arange(1000))
    with torch.no_grad():
        forward(CNN_S, activation, weights[0], data.images)  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                forward(CNN_S, activation, weights[0], data.images)
    print(f"one CNN-s model ({source}) x 1,000 images, 5 runs, threads {torch.get_num_threads()}: CPU time per run")
    for event in sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:rows]:
        print(f"  {event.key:32s} {event.self_cpu_time_total / 5 / 1000:7.2f} ms")
    x = torch.randn(4_000_000)
    for name, op in (("tanh", torch.tanh), ("sigmoid", torch.sigmoid)):
        seconds, _ = best_time(lambda: op(x), 5, torch.device("cpu"))
        print(f"  torch.{name:8s} {seconds / x.numel() * 1e9:5.2f} ns per element (best of 5, 4 M elements)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per path; the best is reported")
    parser.add_argument("--activation", default="tanh")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    parser.add_argument("--profile", action="store_true", help="profile a per-model forward instead (CPU)")
    args = add_options(parser).parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.profile:
        profile_per_model(args.activation)
        return finish(args, "eval_throughput", [])

    device = pick_device()
    weights, source = benchmark_models(args.models)
    data = load_split("test").subset(torch.arange(args.images)).to(device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{args.models} CNN-s models ({source}) x {len(data)} test images, best of {args.repeats}")

    loop_s, (loop_pred, loop_loss) = best_time(lambda: per_model_loop(weights, data, args.activation), args.repeats, device)
    ours_s, metrics = best_time(lambda: evaluate_population(CNN_S, args.activation, weights, data, keep_predictions=True),
                                args.repeats, device)
    predictions = metrics.predictions.long()
    identical = bool(torch.equal(predictions, loop_pred.long()))
    differing = int((predictions != loop_pred).sum())
    loss_error = float(abs(metrics.loss - loop_loss.double().numpy()).max())
    peak = matmul_gflops(device, repeats=5)
    useful = forward_flops(CNN_S) * args.models * len(data) / 1e9

    figures = {
        "device": str(device), "models": args.models, "images": len(data), "threads": torch.get_num_threads(),
        "per_model_loop_s": round(loop_s, 3), "evaluate_population_s": round(ours_s, 3),
        "speedup": round(loop_s / ours_s, 2), "predictions_identical": identical, "differing_predictions": differing,
        "max_loss_difference": loss_error, "matmul_gflops": round(peak, 1),
        "loop_gflops": round(useful / loop_s, 1), "evaluate_population_gflops": round(useful / ours_s, 1),
        "model_images_per_s": round(args.models * len(data) / ours_s),
    }
    print(f"  plain per-model loop     {loop_s:8.2f} s   {useful / loop_s:7.1f} GFLOP/s")
    print(f"  evaluate_population      {ours_s:8.2f} s   {useful / ours_s:7.1f} GFLOP/s   {loop_s / ours_s:.2f}x the loop")
    print(f"  fp32 matmul {2048}^2        {peak:7.1f} GFLOP/s  (evaluation reaches {100 * useful / ours_s / peak:.0f} % of it)")
    print(f"  predictions identical to the loop: {identical} ({differing} of {args.models * len(data)} differ); "
          f"max loss difference {loss_error:.2e}")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return finish(args, "eval_throughput", bench_figures(figures), peak)


def bench_figures(figures: dict) -> list[Figure]:
    """The numeric figures as `Figure`s for --check and --record; the speed-up against SPEEDUP_GOAL."""
    goal = SPEEDUP_GOAL.get(figures["device"].split(":")[0])
    names = ("per_model_loop_s", "evaluate_population_s", "differing_predictions", "max_loss_difference",
             "matmul_gflops", "loop_gflops", "evaluate_population_gflops", "model_images_per_s")
    return [Figure("speedup", figures["speedup"], at_least=goal), *(Figure(n, float(figures[n])) for n in names)]


if __name__ == "__main__":
    raise SystemExit(main())
