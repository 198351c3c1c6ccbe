"""The separable bilinear resize of attribute maps against torch's own interpolation."""

import pytest
import torch
import torch.nn.functional as F

from reidexplain._resize import interpolation_matrix, upsample_maps


def _reference(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False).clamp_min(0)


@pytest.mark.parametrize("grid, size", [((16, 8), (128, 64)), ((8, 4), (128, 64)), ((10, 5), (128, 64)),
                                        ((7, 3), (33, 17)), ((16, 8), (16, 8)), ((16, 8), (5, 3)),
                                        ((1, 1), (4, 2)), ((3, 1), (9, 4))])
def test_matches_interpolate(grid: tuple[int, int], size: tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 4, *grid, generator=gen)  # negative values too: both clamp at 0
    out = upsample_maps(maps, size)
    assert out.shape == (3, 4, *size)
    torch.testing.assert_close(out, _reference(maps, size), atol=1e-6, rtol=1e-5)
    assert bool((out >= 0).all())


def test_float64_and_gradients() -> None:
    maps = torch.rand(2, 3, 4, 2, dtype=torch.float64, requires_grad=True)
    out = upsample_maps(maps, (16, 8))
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, _reference(maps, (16, 8)), atol=1e-12, rtol=1e-12)
    out.sum().backward()
    ref = maps.detach().clone().requires_grad_(True)
    _reference(ref, (16, 8)).sum().backward()
    torch.testing.assert_close(maps.grad, ref.grad, atol=1e-12, rtol=1e-12)


def test_rows_of_the_matrix_sum_to_one() -> None:
    for size_in, size_out in [(16, 128), (5, 3), (1, 7), (8, 8)]:
        m = interpolation_matrix(size_in, size_out, dtype=torch.float64)
        assert m.shape == (size_out, size_in)
        torch.testing.assert_close(m.sum(1), torch.ones(size_out, dtype=torch.float64))
        assert int((m > 0).sum(1).max()) <= 2


def test_matrix_is_a_copy_and_bad_sizes_raise() -> None:
    m = interpolation_matrix(2, 4)
    m.zero_()  # must not reach the cache
    assert float(interpolation_matrix(2, 4).sum()) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="sizes must be >= 1"):
        interpolation_matrix(0, 4)


def test_a_matrix_first_built_in_inference_mode_serves_autograd_later() -> None:
    size = (19, 11)  # a size no other test asks for: the cache is empty for it
    with torch.inference_mode():
        upsample_maps(torch.rand(1, 2, 5, 3), size)
    maps = torch.rand(1, 2, 5, 3, requires_grad=True)
    upsample_maps(maps, size).sum().backward()
    assert maps.grad is not None and maps.grad.shape == maps.shape
