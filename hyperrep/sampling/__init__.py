"""New latents and populations: the samplers and their registry, anchor choice, decoded populations,
the baselines, the guided sampler and map regions. May import: everything below (io to ae)."""
