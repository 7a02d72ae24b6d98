"""Image datasets (IDX files, Fashion-MNIST by default) as `ImageSet`, and the rule (`DatasetRule`)
that says how a zoo's images are normalised and split. May import: io, runtime."""
