"""Deletion/insertion curves against a brute-force loop, on toy distances whose truth is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from reidexplain.distance import pair_distance
from reidexplain.metrics.faithfulness import (
    curve_auc,
    deletion_auc,
    deletion_curve,
    gaussian_blur,
    insertion_auc,
    insertion_curve,
    partner_distance_fn,
)

H, W = 6, 4


def _pair(seed: int = 0, batch: int = 3):
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(batch, 3, H, W, generator=gen)
    b = torch.rand(batch, 3, H, W, generator=gen)
    weight = torch.rand(H, W, generator=gen) ** 3  # the toy model's per-pixel importance
    return a, b, weight


def _additive_distance(b: torch.Tensor, weight: torch.Tensor):
    """A 'model' whose distance is a weighted sum over pixels: the ideal map is known exactly."""

    def dist(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return ((x - b[idx]).abs().sum(1) * weight).flatten(1).sum(1)

    return dist


def _ref_curve(dist, a, heat, base, steps, insertion, patch=(1, 1)):
    ph, pw = patch
    patches = [[(r, c) for r in range(pr, min(pr + ph, H)) for c in range(pc, min(pc + pw, W))]
               for pr in range(0, H, ph) for pc in range(0, W, pw)]
    out = np.zeros((a.shape[0], steps + 1))
    for i in range(a.shape[0]):
        values = [float(np.mean([heat[i, r, c].item() for r, c in pixels])) for pixels in patches]
        # Decreasing mean map value, ties by patch index: what a stable descending sort gives.
        order = sorted(range(len(patches)), key=lambda p: (-values[p], p))
        for t in range(steps + 1):
            img = (base[i] if insertion else a[i]).clone()
            for p in order[: t * len(patches) // steps]:
                for r, c in patches[p]:
                    img[:, r, c] = a[i, :, r, c] if insertion else base[i, :, r, c]
            out[i, t] = dist(img[None], torch.tensor([i])).item()
    return out


@pytest.mark.parametrize("baseline", ["partner", "zero", "mean", "blur", "tensor"])
@pytest.mark.parametrize("insertion", [False, True])
def test_curves_match_brute_force(baseline, insertion):
    a, b, weight = _pair(1)
    heat = torch.randint(0, 5, (3, H, W), generator=torch.Generator().manual_seed(2)).float()  # ties
    dist = _additive_distance(b, weight)
    if baseline == "partner":
        base = b
    elif baseline == "zero":
        base = torch.zeros_like(a)
    elif baseline == "mean":
        base = a.mean(dim=(2, 3), keepdim=True).expand_as(a)
    elif baseline == "blur":
        base = gaussian_blur(a, 0.1 * min(H, W))
    else:
        baseline = base = torch.tensor([0.2, 0.5, 0.9])[:, None, None]
        base = base.expand_as(a)
    fn = insertion_curve if insertion else deletion_curve
    got = fn(dist, a, heat[:, None], partner=b, steps=5, baseline=baseline, batch_size=4)
    ref = _ref_curve(dist, a, heat, base, 5, insertion)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5)


@pytest.mark.parametrize("patch", [(2, 2), (4, 3), (1, 4)])
def test_patch_curves_match_brute_force(patch):
    a, b, weight = _pair(12)
    heat = torch.randn(3, H, W, generator=torch.Generator().manual_seed(13))
    dist = _additive_distance(b, weight)
    size = patch[0] if patch[0] == patch[1] else patch
    for insertion, fn in ((False, deletion_curve), (True, insertion_curve)):
        got = fn(dist, a, heat, partner=b, steps=3, patch_size=size)
        np.testing.assert_allclose(got.numpy(), _ref_curve(dist, a, heat, b, 3, insertion, patch), rtol=1e-5)
    # patch_size=1 is the pixel-wise default
    torch.testing.assert_close(deletion_curve(dist, a, heat, partner=b, steps=3, patch_size=(1, 1)),
                               deletion_curve(dist, a, heat, partner=b, steps=3))


def test_partner_curves_end_points_and_complement():
    a, b, weight = _pair(3)
    dist = _additive_distance(b, weight)
    heat = torch.randn(3, H, W, generator=torch.Generator().manual_seed(4))
    d0 = dist(a, torch.arange(3))
    dele = deletion_curve(dist, a, heat, partner=b, steps=8)
    ins = insertion_curve(dist, a, heat, partner=b, steps=8)
    torch.testing.assert_close(dele[:, 0], d0)
    torch.testing.assert_close(ins[:, -1], d0)
    torch.testing.assert_close(dele[:, -1], torch.zeros(3))
    torch.testing.assert_close(ins[:, 0], torch.zeros(3))
    # For a distance that is a sum over pixels, what deletion removed is what insertion revealed.
    torch.testing.assert_close(dele + ins, d0[:, None].expand(-1, 9))
    torch.testing.assert_close(deletion_auc(dele) + insertion_auc(ins), torch.ones(3))


def test_ideal_map_beats_random_and_reversed_orders():
    a, b, weight = _pair(5, batch=2)
    dist = _additive_distance(b, weight)
    ideal = (a - b).abs().sum(1) * weight  # each pixel's exact share of the distance
    gen = torch.Generator().manual_seed(6)
    kw = dict(partner=b, steps=24, batch_size=50)
    best = deletion_auc(deletion_curve(dist, a, ideal, **kw))
    worst = deletion_auc(deletion_curve(dist, a, -ideal, **kw))
    randoms = torch.stack([deletion_auc(deletion_curve(dist, a, torch.rand(2, H, W, generator=gen), **kw))
                           for _ in range(5)])
    assert (best < randoms.min(0).values).all() and (randoms.max(0).values < worst).all()
    # With these sparse cubed weights the ideal deletion curve drops much faster than a straight line.
    assert best.max() < 0.25 and worst.min() > 0.75
    ins_best = insertion_auc(insertion_curve(dist, a, ideal, **kw))
    assert (ins_best > 0.75).all()
    assert deletion_auc.higher_is_better is False and insertion_auc.higher_is_better is True


def test_chunking_does_not_change_the_curve_and_indices_are_right():
    a, b, weight = _pair(7, batch=3)
    heat = torch.rand(3, H, W, generator=torch.Generator().manual_seed(8))
    seen: list[torch.Tensor] = []
    base_fn = _additive_distance(b, weight)

    def recording(x, idx):
        seen.append(idx.clone())
        return base_fn(x, idx)

    c1 = deletion_curve(recording, a, heat, partner=b, steps=4, batch_size=1)
    assert len(seen) == 15 and torch.cat(seen).tolist() == [i for i in range(3) for _ in range(5)]
    c7 = deletion_curve(base_fn, a, heat, partner=b, steps=4, batch_size=7, progress=True)
    c_all = deletion_curve(base_fn, a, heat, partner=b, steps=4, batch_size=1000)
    torch.testing.assert_close(c1, c7)
    torch.testing.assert_close(c1, c_all)


def test_with_a_model_via_partner_distance_fn():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * H * W, 8)).eval()
    a, b, _ = _pair(9, batch=2)
    fn = partner_distance_fn(model, model(b).detach(), metric="euclidean")
    curve = deletion_curve(fn, a, torch.rand(2, 1, H, W), partner=b, steps=3)
    with torch.no_grad():
        torch.testing.assert_close(curve[:, 0], pair_distance(model(a), model(b)))
    assert curve[:, -1].max() < 1e-4  # d(b, b) is the epsilon floor of the Euclidean distance
    cos = partner_distance_fn(model, model(b).detach(), metric="cosine")
    assert insertion_curve(cos, a, torch.rand(2, H, W), partner=b, steps=3)[:, 0].abs().max() < 1e-5


def test_curve_auc_matches_trapezoid():
    gen = torch.Generator().manual_seed(10)
    curve = torch.rand(4, 11, generator=gen) + 0.1
    x = np.linspace(0.0, 1.0, 11)
    c = curve.numpy()
    np.testing.assert_allclose(curve_auc(curve).numpy(), np.trapezoid(c, x), rtol=1e-6)
    np.testing.assert_allclose(curve_auc(curve, "first").numpy(), np.trapezoid(c / c[:, :1], x), rtol=1e-6)
    np.testing.assert_allclose(insertion_auc(curve).numpy(), np.trapezoid(c / c[:, -1:], x), rtol=1e-6)
    assert curve_auc(torch.tensor([[1.0, 1.0]])).item() == pytest.approx(1.0)
    zero = deletion_auc(torch.tensor([[0.0, 0.0, 0.0], [2.0, 1.0, 0.0]]))
    assert math.isnan(zero[0]) and zero[1].item() == pytest.approx(0.5)


@pytest.mark.parametrize("sigma", [1.0, 1.7])
def test_gaussian_blur_matches_scipy(sigma):
    x = torch.rand(2, 3, 9, 7, generator=torch.Generator().manual_seed(11))
    ref = np.stack([gaussian_filter(img, sigma=(0, sigma, sigma), mode="nearest", truncate=3.0)
                    for img in x.numpy()])
    np.testing.assert_allclose(gaussian_blur(x, sigma).numpy(), ref, atol=1e-6)


def test_errors():
    a, b, weight = _pair(0, batch=2)
    dist = _additive_distance(b, weight)
    heat = torch.rand(2, H, W)
    with pytest.raises(ValueError, match="partner.*baseline='partner'"):
        deletion_curve(dist, a, heat)
    with pytest.raises(ValueError, match="partner.*shape"):
        deletion_curve(dist, a, heat, partner=b[:1])
    with pytest.raises(ValueError, match=r"heatmaps.*\(2, 1, 6, 4\)"):
        deletion_curve(dist, a, torch.rand(2, H, W + 1), partner=b)
    with pytest.raises(ValueError, match=r"heatmaps.*\(B,1,H,W\)"):
        insertion_curve(dist, a, torch.rand(2, 3, H, W), partner=b)
    with pytest.raises(ValueError, match="steps.*>= 1"):
        deletion_curve(dist, a, heat, partner=b, steps=0)
    with pytest.raises(ValueError, match="steps"):
        deletion_curve(dist, a, heat, partner=b, steps=True)
    with pytest.raises(ValueError, match="patch_size"):
        deletion_curve(dist, a, heat, partner=b, patch_size=0)
    with pytest.raises(ValueError, match="patch_size"):
        deletion_curve(dist, a, heat, partner=b, patch_size=(2, 2, 2))
    with pytest.raises(ValueError, match="batch_size.*>= 1"):
        insertion_curve(dist, a, heat, partner=b, batch_size=0)
    with pytest.raises(ValueError, match="baseline.*'blur'"):
        deletion_curve(dist, a, heat, baseline="noise")
    with pytest.raises(ValueError, match="baseline.*broadcast"):
        deletion_curve(dist, a, heat, baseline=torch.zeros(2))
    with pytest.raises(ValueError, match="baseline.*finite"):
        deletion_curve(dist, a, heat, baseline=torch.tensor(float("nan")))
    with pytest.raises(ValueError, match="sigma"):
        deletion_curve(dist, a, heat, baseline="blur", blur_sigma=0.0)
    with pytest.raises(ValueError, match=r"distance_fn.*shape \(6,\)"):
        deletion_curve(lambda x, i: dist(x, i)[:, None], a, heat, partner=b, steps=2)
    with pytest.raises(TypeError, match="distance_fn.*callable"):
        deletion_curve("euclidean", a, heat, partner=b)
    with pytest.raises(TypeError, match="images"):
        deletion_curve(dist, a.numpy(), heat, partner=b)
    with pytest.raises(ValueError, match=r"curve.*\(B, T\+1\)"):
        curve_auc(torch.zeros(3))
    with pytest.raises(ValueError, match=r"curve.*\(B, T\+1\)"):
        deletion_auc(torch.zeros(3, 1))
    with pytest.raises(ValueError, match="normalize"):
        curve_auc(torch.zeros(2, 3), normalize="max")
    with pytest.raises(ValueError, match="sigma"):
        gaussian_blur(a, -1.0)
    with pytest.raises(ValueError, match=r"partner_embeddings.*\(B,D\)"):
        partner_distance_fn(torch.nn.Identity(), torch.zeros(3))
    with pytest.raises(ValueError, match="metric"):
        partner_distance_fn(torch.nn.Identity(), torch.zeros(3, 2), metric="manhattan")
