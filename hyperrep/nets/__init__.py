"""The small CNNs as flat weight vectors: layouts, forward passes of whole populations, the stacked
trainer, its optimiser and compiled kernel (`kernels/`), function-preserving neuron permutations,
and statistics of weight populations. May import: io, runtime, images."""
