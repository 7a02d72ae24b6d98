"""The guided sampler: latents refined by the task loss through the frozen decoder, and its
equal-cost reference, the same steps on the decoded weights."""

from __future__ import annotations

import pytest
import torch

from hyperrep.data import load_split
from hyperrep.guided import GuidedSampler, _task_loss, guidance_batch, refine_latents, refine_weights
from hyperrep.model import HyperRepresentation, ModelConfig
from hyperrep.sampling import decode_latents, encode_weights, make_sampler


@pytest.fixture()
def setting(tiny_zoo, idx_dir):
    torch.manual_seed(0)
    model = HyperRepresentation(ModelConfig(d_model=16, n_heads=2, n_blocks=1, d_ff=16, latent_dim=8)).eval()
    train = load_split("train", idx_dir, (0.286, 0.353))
    anchors = encode_weights(model, tiny_zoo.samples(split="train", epochs=[2])[0])
    return model, train, anchors


def test_refining_latents_lowers_the_loss_and_keeps_the_decoder(setting, tiny_zoo):
    model, train, anchors = setting
    batch = guidance_batch(train, 64, seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    start = anchors[:4]
    refined = refine_latents(model, tiny_zoo.activation, start, batch, steps=5, step_size=0.05)
    assert refined.shape == start.shape and not torch.equal(refined, start)
    with torch.no_grad():
        loss = [float(_task_loss(model.arch, tiny_zoo.activation, model.decode(z), batch)) for z in (start, refined)]
    assert loss[1] < loss[0]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the decoder is frozen
    assert all(p.requires_grad for p in model.parameters())  # and handed back as it was
    assert torch.equal(refine_latents(model, tiny_zoo.activation, start, batch, steps=0, step_size=0.05), start)


def test_refining_weights_lowers_the_loss(setting, tiny_zoo):
    model, train, anchors = setting
    batch = guidance_batch(train, 64, seed=1)
    start = decode_latents(model, anchors[:3])
    refined = refine_weights(model.arch, tiny_zoo.activation, start, batch, steps=5, step_size=1e-3)
    with torch.no_grad():
        loss = [float(_task_loss(model.arch, tiny_zoo.activation, w, batch)) for w in (start, refined)]
    assert loss[1] < loss[0]


def test_guided_sampler_is_seeded_and_starts_from_its_base(setting, tiny_zoo):
    model, train, anchors = setting
    guided = GuidedSampler(model, tiny_zoo.activation, train, base="kde", steps=3, images=32, step_size=0.05).fit(anchors)
    a, b = guided.sample(5, seed=7), guided.sample(5, seed=7)
    assert a.shape == (5, 8) and torch.equal(a, b)
    base = make_sampler("kde").fit(anchors).sample(5, seed=7)
    assert torch.allclose(guided.start_weights(5, seed=7), decode_latents(model, base))
    unguided = GuidedSampler(model, tiny_zoo.activation, train, base="kde", steps=0, images=32).fit(anchors)
    assert torch.allclose(unguided.sample(5, seed=7), base)


def test_guided_sampler_bad_parameters(setting, tiny_zoo):
    model, train, anchors = setting
    with pytest.raises(ValueError, match="steps"):
        GuidedSampler(model, tiny_zoo.activation, train, steps=-1)
    with pytest.raises(ValueError, match="step_size"):
        GuidedSampler(model, tiny_zoo.activation, train, step_size=0.0)
    with pytest.raises(ValueError, match="asked for"):
        guidance_batch(train, len(train) + 1, seed=0)
    with pytest.raises(ValueError, match="unknown sampler"):
        GuidedSampler(model, tiny_zoo.activation, train, base="nope").fit(anchors)
