"""The hyper-representation: the transformer autoencoder, its augmented views, its training settings
and training, how well it rebuilds models, the latent map, the trained folder, and the paper's
checkpoints. May import: io, runtime, images, nets, zoo, paper."""
