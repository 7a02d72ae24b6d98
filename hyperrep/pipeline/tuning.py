"""The honest protocol: hyperparameters are chosen on validation images, results reported on test images.

The validation images are the first images of the training split's validation part (no zoo model
trained on them and fine-tuning never draws them); the test images are the first images of the test
split. Anchors are chosen by their accuracy on the validation images, never by the recorded test
accuracy. `ImageSplit.record()` is what a report writes about the two sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hyperrep.images.datasets import ImageSet
from hyperrep.nets.population import evaluate_population
from hyperrep.sampling.anchors import select_rows, top_fraction
from hyperrep.zoo.format import Zoo, zoo_dataset_rule

VALIDATION_COLUMN = "val_acc"  # a latent table's accuracy on the validation images


@dataclass
class ImageSplit:
    """The two image sets of the protocol: `validation` chooses, `test` reports."""

    validation: ImageSet
    test: ImageSet
    validation_source: str
    test_source: str

    def record(self) -> dict:
        return {"validation": {"images": len(self.validation), "source": self.validation_source},
                "test": {"images": len(self.test), "source": self.test_source}}


def load_image_split(zoo: Zoo, validation_images: int, test_images: int,
                     data_dir: Path | str | None = None) -> ImageSplit:
    """The first `validation_images` of the zoo's validation part and the first `test_images` of its test split."""
    rule = zoo_dataset_rule(zoo.manifest, data_dir)
    validation = rule.validation_images(validation_images, data_dir)
    test = rule.first_images(test_images, data_dir)
    return ImageSplit(validation, test,
                      f"train split of {rule.name}: the first {len(validation)} images of its validation part "
                      f"(val_fraction {rule.val_fraction:.4g}, data seed {rule.data_seed})",
                      f"test split of {rule.name}: its first {len(test)} images")


def with_validation_accuracy(table: pd.DataFrame, zoo: Zoo, validation: ImageSet, split: str = "train") -> pd.DataFrame:
    """A copy of a latent table with `val_acc`: each `split` row's zoo model (at its epoch)
    evaluated on the validation images; NaN for the other rows."""
    table = table.reset_index(drop=True).copy()
    rows = select_rows(table, split=split)
    picked = table.iloc[rows]
    models = torch.tensor(zoo.rows_of(picked["model_id"].tolist()), dtype=torch.long)
    epochs = torch.tensor([zoo.epoch_position(int(e)) for e in picked["epoch"]], dtype=torch.long)
    accuracy = evaluate_population(zoo.architecture, zoo.activation, zoo.weights[models, epochs], validation).accuracy
    table[VALIDATION_COLUMN] = np.nan
    table.loc[rows, VALIDATION_COLUMN] = accuracy
    return table


def validation_anchor_rows(table: pd.DataFrame, fraction: float) -> np.ndarray:
    """The top `fraction` of the train rows by validation accuracy (`with_validation_accuracy`)."""
    if VALIDATION_COLUMN not in table:
        raise ValueError(f"the table has no {VALIDATION_COLUMN} column: call with_validation_accuracy first")
    return top_fraction(table, fraction, among=select_rows(table, split="train"), column=VALIDATION_COLUMN)
