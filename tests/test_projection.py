"""The 2-D latent map: fitting and placing new points on a stored map."""

from __future__ import annotations

import pytest
import torch

from hyperrep.ae.map import fit_map, place_on_map


def test_pca_map_is_deterministic_and_keeps_the_main_direction():
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(50, 6, generator=generator) * torch.tensor([5.0, 2.0, 0.1, 0.1, 0.1, 0.1])
    coords = fit_map(latents, method="pca")
    assert coords.shape == (50, 2)
    assert torch.equal(coords, fit_map(latents, method="pca"))
    torch.testing.assert_close(coords[:, 0].abs(), (latents[:, 0] - latents[:, 0].mean()).abs(), rtol=0.1, atol=0.5)


def test_fit_map_refuses_unknown_methods_and_tiny_inputs():
    with pytest.raises(ValueError, match="unknown"):
        fit_map(torch.randn(10, 3), method="tsne")
    with pytest.raises(ValueError, match="at least 3"):
        fit_map(torch.randn(2, 3), method="pca")


def test_place_on_map_hits_references_exactly_and_interpolates_between_them():
    ref = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 10.0]])
    coords = torch.tensor([[0.0, 0.0], [2.0, 0.0], [50.0, 50.0]])
    placed = place_on_map(ref, ref, coords, k=2)
    torch.testing.assert_close(placed, coords)
    midpoint = place_on_map(torch.tensor([[0.5, 0.0]]), ref, coords, k=2)
    torch.testing.assert_close(midpoint, torch.tensor([[1.0, 0.0]]))
    near_first = place_on_map(torch.tensor([[0.1, 0.0]]), ref, coords, k=2)  # weights 0.9 / 0.1
    torch.testing.assert_close(near_first, torch.tensor([[0.2, 0.0]]))
