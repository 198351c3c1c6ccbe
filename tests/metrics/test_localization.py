"""Localisation metrics against brute-force references and hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.ndimage import distance_transform_edt

from reidexplain.metrics.localization import (
    dilate_masks,
    exclusive_union_mask,
    per_attribute_localization,
    pointing_game,
    reduce_scores,
    relevance_mass,
)


def _random_case(seed: int, batch: int = 6, height: int = 9, width: int = 7):
    gen = torch.Generator().manual_seed(seed)
    # Coarse values so that several pixels share the maximum and the tie rules matter.
    heat = torch.randint(0, 4, (batch, height, width), generator=gen).float() - 1.0
    masks = torch.rand(batch, height, width, generator=gen) < 0.2
    masks[0] = False  # one image without ground truth
    return heat, masks


def _ref_dilate(mask: np.ndarray, tol: float) -> np.ndarray:
    if not mask.any():
        return mask
    # Distance of every pixel to the nearest mask pixel, by scipy's exact Euclidean transform.
    return distance_transform_edt(~mask) <= tol


def _ref_pointing(heat: torch.Tensor, masks: torch.Tensor, tol: float, ties: str) -> list[float]:
    out = []
    for h, m in zip(heat.numpy(), masks.numpy(), strict=True):
        if not m.any():
            out.append(math.nan)
            continue
        inside = _ref_dilate(m, tol)
        peak = h.max()
        maxima = [(r, c) for r in range(h.shape[0]) for c in range(h.shape[1]) if h[r, c] == peak]
        hits = [bool(inside[r, c]) for r, c in maxima]
        if ties == "first":
            out.append(float(hits[0]))
        elif ties == "any":
            out.append(float(any(hits)))
        else:
            out.append(sum(hits) / len(hits))
    return out


@pytest.mark.parametrize("tol", [0, 1, 1.5, 2.3])
def test_dilate_masks_matches_scipy_distance_transform(tol):
    _, masks = _random_case(1)
    masks[1] = False
    masks[1, 0, 0] = True  # a corner pixel: the disc is cut by the border
    got = dilate_masks(masks, tol).numpy()
    for g, m in zip(got, masks.numpy(), strict=True):
        np.testing.assert_array_equal(g, _ref_dilate(m, tol))


def test_dilate_masks_disc_sizes():
    m = torch.zeros(1, 9, 9, dtype=torch.bool)
    m[0, 4, 4] = True
    sizes = [int(dilate_masks(m, t).sum()) for t in (0, 1, 1.5, 2, 3)]
    assert sizes == [1, 5, 9, 13, 29]


@pytest.mark.parametrize("ties", ["first", "any", "expected"])
@pytest.mark.parametrize("tol", [0, 1.5])
def test_pointing_game_matches_brute_force(ties, tol):
    for seed in range(3):
        heat, masks = _random_case(seed)
        got = pointing_game(heat, masks, tolerance=tol, ties=ties)
        np.testing.assert_allclose(got.numpy(), _ref_pointing(heat, masks, tol, ties), equal_nan=True)


def test_pointing_game_hand_cases():
    heat = torch.zeros(4, 3, 3)
    heat[0, 1, 1] = 1.0  # peak at the centre, mask at the centre: hit
    heat[1, 0, 0] = 1.0  # peak at a corner: miss, but within 1.5 px of the centre
    heat[2, 1, 1] = -5.0  # the most negative value is not the peak: maximum is 0 at (0,0)
    masks = torch.zeros(4, 3, 3, dtype=torch.bool)
    masks[:3, 1, 1] = True  # image 3 has an empty mask
    assert pointing_game(heat, masks).tolist()[:3] == [1.0, 0.0, 0.0]
    assert math.isnan(pointing_game(heat, masks)[3])
    assert pointing_game(heat, masks, tolerance=1.5).tolist()[:3] == [1.0, 1.0, 1.0]
    assert pointing_game(heat, masks, tolerance=1).tolist()[:3] == [1.0, 0.0, 0.0]  # corner: sqrt(2) > 1


def test_pointing_game_constant_map_tie_rules():
    heat = torch.ones(1, 4, 4)
    masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    masks[0, 2:, :] = True  # bottom half; the first pixel (0,0) is outside
    assert pointing_game(heat, masks, ties="first").item() == pytest.approx(0.0, abs=1e-9)
    assert pointing_game(heat, masks, ties="any").item() == pytest.approx(1.0)
    assert pointing_game(heat, masks, ties="expected").item() == pytest.approx(0.5)


def test_pointing_game_accepts_channel_axis_and_uint8_masks():
    heat, masks = _random_case(4)
    a = pointing_game(heat[:, None], masks.to(torch.uint8))
    b = pointing_game(heat, masks)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert pointing_game.higher_is_better is True


def test_relevance_mass_matches_reference():
    gen = torch.Generator().manual_seed(7)
    heat = torch.randn(5, 6, 4, generator=gen)
    masks = torch.rand(5, 6, 4, generator=gen) < 0.3
    masks[2] = False
    got = relevance_mass(heat[:, None], masks).numpy()
    for i, (h, m) in enumerate(zip(heat.numpy(), masks.numpy(), strict=True)):
        if not m.any():
            assert math.isnan(got[i])
            continue
        pos = np.maximum(h, 0.0)
        assert got[i] == pytest.approx(pos[m].sum() / pos.sum(), rel=1e-5)
    assert relevance_mass.higher_is_better is True


def test_relevance_mass_hand_cases():
    masks = torch.zeros(4, 2, 2, dtype=torch.bool)
    masks[:, 0, 0] = True
    heat = torch.tensor([
        [[1.0, 1.0], [1.0, 1.0]],    # uniform: area fraction 1/4
        [[0.0, 0.0], [0.0, 0.0]],    # no mass at all: 0
        [[-1.0, -2.0], [0.0, -3.0]],  # no positive mass: 0
        [[2.0, -9.0], [0.0, 0.0]],   # all positive mass inside: 1
    ])
    assert relevance_mass(heat, masks).tolist() == pytest.approx([0.25, 0.0, 0.0, 1.0])


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000))
def test_relevance_mass_bounds_and_complement(seed):
    gen = torch.Generator().manual_seed(seed)
    heat = torch.randn(3, 5, 4, generator=gen)
    masks = torch.rand(3, 5, 4, generator=gen) < 0.5
    masks[:, 0, 0] = True
    masks[:, 0, 1] = False  # both the mask and its complement are non-empty
    inside = relevance_mass(heat, masks)
    outside = relevance_mass(heat, ~masks)
    assert ((inside >= 0) & (inside <= 1)).all()
    has_mass = heat.clamp_min(0).flatten(1).sum(1) > 0
    torch.testing.assert_close(inside[has_mass] + outside[has_mass], torch.ones(int(has_mass.sum())))


def test_reduce_scores():
    scores = torch.tensor([1.0, float("nan"), 0.0, 1.0])
    assert reduce_scores(scores).item() == pytest.approx(2 / 3)
    assert reduce_scores(scores, "sum").item() == pytest.approx(2.0)
    assert reduce_scores(scores, "none") is scores
    assert math.isnan(reduce_scores(torch.tensor([float("nan")])).item())


def test_exclusive_union_mask():
    gen = torch.Generator().manual_seed(3)
    a = torch.randint(0, 2, (4, 5), generator=gen)
    b = torch.randint(0, 2, (4, 5), generator=gen)
    b[0] = a[0]  # same attributes: empty union
    masks = torch.rand(4, 5, 6, 3, generator=gen) < 0.3
    got = exclusive_union_mask(a, b, masks)
    for i in range(4):
        ref = torch.zeros(6, 3, dtype=torch.bool)
        for k in range(5):
            if a[i, k] != b[i, k]:
                ref |= masks[i, k]
        assert torch.equal(got[i], ref)
    assert not got[0].any()
    with pytest.warns(UserWarning, match="-1/"):
        signed = exclusive_union_mask(2 * a - 1, b, masks)
    assert torch.equal(signed, got)


def test_per_attribute_localization_matches_loop():
    gen = torch.Generator().manual_seed(11)
    maps = torch.rand(6, 3, 5, 4, generator=gen)
    masks = torch.rand(6, 3, 5, 4, generator=gen) < 0.3
    masks[1, 0] = False  # selected but without ground truth: skipped
    select = torch.rand(6, 3, generator=gen) < 0.6
    select[:, 2] = False  # nothing selected: NaN
    select[1, 0] = True
    out = per_attribute_localization(maps, masks, select, tolerance=1)
    for k in range(3):
        rows = [i for i in range(6) if select[i, k] and masks[i, k].any()]
        assert out["count"][k].item() == len(rows)
        if not rows:
            assert math.isnan(out["pointing"][k]) and math.isnan(out["relevance_mass"][k])
            continue
        pg = pointing_game(maps[rows, k], masks[rows, k], tolerance=1).mean()
        rm = relevance_mass(maps[rows, k], masks[rows, k]).mean()
        assert out["pointing"][k].item() == pytest.approx(pg.item())
        assert out["relevance_mass"][k].item() == pytest.approx(rm.item())
    everything = per_attribute_localization(maps, masks)
    assert everything["count"].tolist() == masks.flatten(2).any(2).sum(0).tolist()


# ---------------------------------------------------------------- errors
def test_errors():
    heat, masks = _random_case(0)
    with pytest.raises(TypeError, match="heatmaps"):
        pointing_game(heat.numpy(), masks)
    with pytest.raises(ValueError, match=r"heatmaps.*\(B,1,H,W\)"):
        pointing_game(heat[:, None].expand(-1, 2, -1, -1), masks)
    with pytest.raises(ValueError, match="heatmaps.*finite"):
        pointing_game(heat.masked_fill(masks, float("nan")), masks)
    with pytest.raises(ValueError, match="heatmaps.*non-empty"):
        relevance_mass(heat[:0], masks[:0])
    with pytest.raises(ValueError, match=r"masks.*expected shape \(6, 9, 7\)"):
        pointing_game(heat, masks[:, :4])
    with pytest.raises(ValueError, match="masks.*0/1"):
        relevance_mass(heat, masks.float() * 2)
    with pytest.raises(ValueError, match="ties"):
        pointing_game(heat, masks, ties="random")
    with pytest.raises(ValueError, match="tolerance"):
        pointing_game(heat, masks, tolerance=-1)
    with pytest.raises(TypeError, match="tolerance"):
        pointing_game(heat, masks, tolerance="2")
    with pytest.raises(ValueError, match="masks.*\\(B,H,W\\)"):
        dilate_masks(masks[0], 1)
    with pytest.raises(ValueError, match="reduction"):
        reduce_scores(torch.zeros(2), "median")
    a = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="attrs_b"):
        exclusive_union_mask(a, torch.zeros(2, 4), torch.zeros(2, 3, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="attrs_b"):
        exclusive_union_mask(a, torch.zeros(3, 3), torch.zeros(2, 3, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"masks.*\(2, 3, H, W\)"):
        exclusive_union_mask(a, a, torch.zeros(2, 4, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="attrs_a.*binary"):
        exclusive_union_mask(a + 3, a, torch.zeros(2, 3, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"maps.*\(B,M,H,W\)"):
        per_attribute_localization(heat, masks)
    with pytest.raises(ValueError, match=r"select.*\(2, 3\)"):
        per_attribute_localization(torch.rand(2, 3, 4, 4), torch.ones(2, 3, 4, 4, dtype=torch.bool),
                                   select=torch.ones(2, 4, dtype=torch.bool))
