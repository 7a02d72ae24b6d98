"""Are generated models new, or copies of zoo models?

For each generated model: the L2 distance to its nearest zoo model over neuron orderings (the
plain order, the canonical order of weights.canonicalize, and a layer-wise matching, so a
permuted copy is at distance 0 and a slightly perturbed one stays close), which zoo model
(id, epoch) that is, and how much their mistakes overlap: the IoU of the sets of
misclassified test images. A copy has distance 0 and IoU 1; a new model is far away with a
lower IoU. The noise baseline (anchor + sigma * N(0, 1)) gives a scale for both numbers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from hyperrep.images.datasets import ImageSet
from hyperrep.nets.cnn import Architecture
from hyperrep.nets.permutations import canonicalize, permutation_index, permute, tokenize
from hyperrep.nets.population import evaluate_population
from hyperrep.runtime import cores


def nearest_reference(
    arch: Architecture, weights: torch.Tensor, reference: torch.Tensor, *, invariant: bool = True,
    candidates: int = 5, chunk: int = 256, excluded: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """For each row of weights [n, P]: the L2 distance to the nearest row of reference [R, P] and
    that row's index. With `invariant`, the distance is taken over neuron orderings: the smaller
    of the plain and the canonical-order distance (weights.canonicalize: a permuted copy is at 0)
    picks `candidates` nearest references, and each is refined by `matched_distance`. Every
    ordering tried is function-preserving, so the result is an upper bound on the distance
    minimised over all permutations. `excluded` [n, R] (bool) marks pairs not to consider (a zoo
    model's own rows, when measuring the zoo's spacing). Non-finite rows get distance NaN and index -1."""
    with cores.job():
        return _nearest_reference(arch, weights, reference, invariant, candidates, chunk, excluded)


def _nearest_reference(
    arch: Architecture, weights: torch.Tensor, reference: torch.Tensor, invariant: bool, candidates: int, chunk: int,
    excluded: torch.Tensor | None,
) -> tuple[np.ndarray, np.ndarray]:
    weights, reference = weights.double(), reference.double()
    distance, index = np.full(len(weights), np.nan), np.full(len(weights), -1, dtype=np.int64)
    rows = torch.nonzero(torch.isfinite(weights).all(dim=1)).flatten()
    if invariant:
        with cores.turn():
            canonical_weights, canonical_reference = canonicalize(arch, weights), canonicalize(arch, reference)
    for start in range(0, len(rows), chunk):
        block = rows[start: start + chunk]
        with cores.turn():  # distances of a block, then each row's matching: one turn each (hyperrep.runtime.cores)
            d = _exact_cdist(weights[block], reference)
            if invariant:
                d = torch.minimum(d, _exact_cdist(canonical_weights[block], canonical_reference))
            if excluded is not None:
                d = d.masked_fill(excluded[block], float("inf"))
            if invariant:
                near = d.topk(min(candidates, len(reference)), dim=1, largest=False).indices
        if invariant:
            for row, (i, options) in enumerate(zip(block.tolist(), near.tolist())):
                with cores.turn():
                    for j in options:
                        if excluded is not None and bool(excluded[i, j]):
                            continue
                        d[row, j] = min(float(d[row, j]), matched_distance(arch, weights[i], reference[j]))
        best, where = d.min(dim=1)
        distance[block.numpy()] = best.numpy()
        index[block.numpy()] = where.numpy()
    return distance, index


def _exact_cdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise L2 distances without the |a|^2 + |b|^2 - 2ab shortcut, so a copy is at exactly 0."""
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def matched_distance(arch: Architecture, weights: torch.Tensor, reference: torch.Tensor) -> float:
    """L2 distance after aligning the hidden units of `weights` [P] to `reference` [P] layer by
    layer (each unit's incoming weights and bias, inputs already aligned; Hungarian matching)."""
    from scipy.optimize import linear_sum_assignment

    orders = [torch.arange(layer.out_features)[None] for layer in arch.layers[:-1]]
    target_tokens = tokenize(arch, reference[None])
    for layer in range(len(orders)):
        aligned = permute(weights[None], permutation_index(arch, orders))
        cost = torch.cdist(target_tokens[layer][0], tokenize(arch, aligned)[layer][0]).square()
        _, unit_for_position = linear_sum_assignment(cost.numpy())
        orders[layer] = torch.as_tensor(unit_for_position)[None]
    aligned = permute(weights[None], permutation_index(arch, orders))[0]
    return float((aligned - reference).norm())


def _iou(intersection: torch.Tensor, wrong_a: torch.Tensor, wrong_b: torch.Tensor) -> torch.Tensor:
    """IoU of misclassified sets from their overlap and sizes; 1 when neither set has a mistake."""
    union = wrong_a + wrong_b - intersection
    return torch.where(union > 0, intersection / union.clamp_min(1), torch.ones_like(union))


def misclassification_iou(predictions_a: torch.Tensor, predictions_b: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """IoU of the misclassified image sets of paired models, [n] from predictions [n, N] each;
    1 when neither makes a mistake, NaN where either is not finite (predictions -1)."""
    wrong_a, wrong_b = (predictions_a.long() != labels).double(), (predictions_b.long() != labels).double()
    iou = _iou((wrong_a * wrong_b).sum(dim=1), wrong_a.sum(dim=1), wrong_b.sum(dim=1)).numpy()
    invalid = ((predictions_a < 0).any(dim=1) | (predictions_b < 0).any(dim=1)).numpy()
    iou[invalid] = np.nan
    return iou


def mistake_overlap(predictions: torch.Tensor, reference_predictions: torch.Tensor, labels: torch.Tensor,
                    chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """For each model (predictions [n, N]): the largest misclassification IoU with any reference
    model (reference_predictions [R, N]) and that model's index; rows with a -1 prediction (not
    finite) get NaN and index -1."""
    labels = labels.cpu()
    ref_wrong = (reference_predictions.cpu().long() != labels).double()  # exact counts and ratios
    ref_count = ref_wrong.sum(dim=1)
    best, where = np.full(len(predictions), np.nan), np.full(len(predictions), -1, dtype=np.int64)
    valid = ~(predictions.cpu() < 0).any(dim=1)
    ref_valid = ~(reference_predictions.cpu() < 0).any(dim=1)
    for start in range(0, len(predictions), chunk):
        wrong = (predictions[start: start + chunk].cpu().long() != labels).double()
        iou = _iou(wrong @ ref_wrong.T, wrong.sum(dim=1, keepdim=True), ref_count)
        iou[:, ~ref_valid] = -1.0
        value, index = iou.max(dim=1)
        rows = slice(start, start + len(wrong))
        best[rows], where[rows] = value.numpy(), index.numpy()
    best[~valid.numpy()], where[~valid.numpy()] = np.nan, -1
    return best, where


def novelty_table(
    arch: Architecture, activation: str, weights: torch.Tensor, predictions: torch.Tensor,
    reference: torch.Tensor, reference_table: pd.DataFrame, test: ImageSet, *, invariant: bool = True,
) -> pd.DataFrame:
    """One row per generated model: distance to the nearest reference (zoo) model, its model_id
    and epoch, and the misclassification IoU with it. `predictions` [n, N] are the generated
    models' predictions on `test`; the nearest references are evaluated here."""
    distance, index = nearest_reference(arch, weights, reference, invariant=invariant)
    found = index >= 0
    iou = np.full(len(weights), np.nan)
    if found.any():
        unique, inverse = np.unique(index[found], return_inverse=True)
        nearest = evaluate_population(arch, activation, reference[torch.as_tensor(unique)], test, keep_predictions=True)
        labels = test.labels.cpu()
        iou[found] = misclassification_iou(predictions[torch.as_tensor(np.flatnonzero(found))].long(),
                                           nearest.predictions[torch.as_tensor(inverse)].long(), labels)
    table = reference_table.reset_index(drop=True)
    return pd.DataFrame({
        "distance": distance,
        "nearest_model_id": np.where(found, table["model_id"].to_numpy()[np.maximum(index, 0)], -1),
        "nearest_epoch": np.where(found, table["epoch"].to_numpy()[np.maximum(index, 0)], -1),
        "misclassification_iou": iou,
    })
