"""Time one stacked training step of CNN-s models as grouped convolutions and as im2col + bmm.

    python3 bench/gpu_conv_paths.py [--models 1000]     # on a CUDA machine; bench/gpu_check.sh runs it

Prints forward + backward of one step (best of 3 after a warm-up, `population._time_step`) at
batch 10 and 32: the measurement `population.gemm_is_faster` makes before a stacked GPU training.
`--record` appends the step times to docs/bench-results/gpu_conv_paths.csv (bench/record.py); the
bench states no goal, so `--check` has none to check.
"""

from __future__ import annotations

import argparse

import torch
from record import Figure, add_options, finish

from hyperrep.nets import population
from hyperrep.nets.cnn import CNN_S, init_vector
from hyperrep.runtime.device import pick_device


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=1000)
    args = add_options(parser).parse_args()
    device = pick_device()
    weights = torch.stack([init_vector(CNN_S, "uniform", torch.Generator().manual_seed(s)) for s in range(args.models)])
    weights = weights.to(device).requires_grad_(True)
    found = []
    for batch in (10, 32):
        images = torch.randn(args.models, batch, 1, 28, 28, device=device)
        grouped = population._time_step(CNN_S, "tanh", weights, images, False)
        gemm = population._time_step(CNN_S, "tanh", weights, images, True)
        print(f"forward+backward of {args.models} models x {batch} images on {device}: "
              f"grouped conv {grouped * 1e3:.2f} ms, im2col+bmm {gemm * 1e3:.2f} ms")
        found += [Figure(f"grouped_conv_ms_batch{batch}", grouped * 1e3), Figure(f"im2col_bmm_ms_batch{batch}", gemm * 1e3)]
    return finish(args, "gpu_conv_paths", found, device=device)


if __name__ == "__main__":
    raise SystemExit(main())
