"""How well a trained autoencoder rebuilds models: R² per layer, the reconstruction loss, and the
accuracy, agreement and ratio of rebuilt against original models, beside the mean model, the
nearest train model and PCA (the figures of metrics.json)."""

from __future__ import annotations

from pathlib import Path

import torch

from hyperrep.ae.artifact import reconstruct_weights
from hyperrep.ae.model import reconstruction_loss
from hyperrep.nets.population import evaluate_population
from hyperrep.nets.weight_stats import r_squared, r_squared_per_layer
from hyperrep.zoo.format import Zoo, zoo_dataset_rule
from hyperrep.zoo.references import accuracy_figures, mean_model_figures, references


# -- evaluation ----------------------------------------------------------------------------------------
def reconstruction_quality(model, weights, train_mean, activation, images, lwln: bool,
                           train_states: torch.Tensor | None = None) -> dict:
    """R^2 per layer, reconstruction loss, and accuracy of reconstructed vs original models, with
    the train split's mean model as a reference; given the train states (in the decoder's neuron
    order), also the nearest train state and PCA with latent_dim components (hyperrep.zoo.references)."""
    arch = model.arch
    output = reconstruct_weights(model, weights).to(weights.device)
    weights = model.comparable(weights)  # R^2 up to the neuron order the decoder produces
    rsq = r_squared_per_layer(arch, output, weights, train_mean)
    scales = model.layer_scales.cpu() if lwln else None
    loss, _ = reconstruction_loss(arch, output, weights, scales)
    quality = {"loss_recon": float(loss), "rsq": r_squared(output, weights, train_mean)}
    quality.update({f"rsq_l{i}": float(v) for i, v in enumerate(rsq)})
    if images is not None:
        evaluate = lambda w: evaluate_population(arch, activation, w, images, keep_predictions=True)  # noqa: E731
        original = evaluate(weights)
        quality.update(accuracy_figures(original, evaluate(output)))
        # What a reconstruction must beat: the train split's mean model, the same for every input.
        quality["mean_model"] = mean_model_figures(arch, activation, train_mean.to(weights.device), original, images)
        if train_states is not None:
            count = model.latent_dim
            found = references(arch, activation, train_states, weights, images, components=(count,),
                               canonical=False, original=original)
            quality["nearest_train"] = found["nearest"]
            quality["pca"] = {"components": min(count, len(train_states) - 1), **found["pca"][count]}
    return quality


def load_eval_images(zoo: Zoo, count: int, data_dir: Path | str | None, device: torch.device):
    """The first `count` test images of the zoo's dataset, normalised as the zoo was."""
    if count <= 0:
        return None
    return zoo_dataset_rule(zoo.manifest, data_dir).first_images(count, data_dir).to(device)
