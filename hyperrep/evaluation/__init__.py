"""Judging populations: ensembles and fine-tuning, novelty (distance and mistake overlap), the
accuracy-novelty frontier, held-out rebuilds, and the statistics every comparison reports. May
import: everything below (io to sampling)."""
