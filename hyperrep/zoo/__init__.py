"""Model zoos: the on-disk format (`Zoo`), building one by training (locally or on Ray), importing
and exporting the public Model Zoo layout, and the references a rebuild must beat without a
latent. May import: io, runtime, images, nets."""
