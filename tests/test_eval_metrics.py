"""Occlusion maps, rank correlation and box metrics against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from vlcam.eval.localization import box_from_map, box_iou, box_ratio
from vlcam.eval.occlusion import occlusion_map, rank_correlation


def region_sum(images: torch.Tensor) -> torch.Tensor:
    """The toy score: the sum of rows 4..7, columns 4..7 of every image."""
    return images[:, :, 4:8, 4:8].sum(dim=(1, 2, 3))


# --- occlusion_map ---------------------------------------------------------------------

def test_occlusion_is_positive_exactly_where_patches_overlap_the_region() -> None:
    image = torch.ones(1, 1, 12, 12)
    heat = occlusion_map(region_sum, image, patch=4, stride=2)
    assert heat.shape == (12, 12)
    # Corners 0, 2, 4, 6, 8 per axis; the patches at 2, 4, 6 overlap rows/cols 4..7,
    # so they reach rows/cols 2..9 and nothing else.
    expected = torch.zeros(12, 12, dtype=torch.bool)
    expected[2:10, 2:10] = True
    assert torch.equal(heat > 0, expected)
    # (5, 5) is covered by corners {2, 4} x {2, 4}: drops 2*2, 2*4, 4*2, 4*4, mean 9.
    assert heat[5, 5].item() == pytest.approx(9.0)
    # (3, 3) is covered by corners {0, 2} x {0, 2}: only (2, 2) hides 2*2 pixels, mean 1.
    assert heat[3, 3].item() == pytest.approx(1.0)
    peak = int(heat.argmax())
    assert 4 <= peak // 12 < 8 and 4 <= peak % 12 < 8


def test_single_pixel_occlusion_recovers_the_image_inside_the_region() -> None:
    image = torch.rand(1, 1, 10, 10, generator=torch.Generator().manual_seed(0)) + 0.5
    heat = occlusion_map(region_sum, image, patch=1, stride=1, fill=0.0)
    expected = torch.zeros(10, 10)
    expected[4:8, 4:8] = image[0, 0, 4:8, 4:8]
    torch.testing.assert_close(heat, expected)


def test_last_patch_is_flush_with_the_border() -> None:
    # 10 pixels, patch 4, stride 4: corners 0, 4 and the flush 6, so columns 8..9 are
    # covered only by the corner-6 patch, which hides columns 6..7 of the region.
    image = torch.ones(1, 1, 10, 10)
    heat = occlusion_map(region_sum, image, patch=4, stride=4)
    assert heat[9, 9].item() == pytest.approx(4.0)


def test_batch_size_does_not_change_the_map() -> None:
    image = torch.rand(1, 3, 14, 11, generator=torch.Generator().manual_seed(1))

    def score(images: torch.Tensor) -> torch.Tensor:
        return (images[:, 0] * images[:, 1]).flatten(1).logsumexp(dim=1)

    maps = [occlusion_map(score, image, patch=5, stride=3, fill=0.5, batch_size=b) for b in (1, 7, 1000)]
    for heat in maps[1:]:
        torch.testing.assert_close(heat, maps[0])


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"patch": 0}, ValueError, "patch must be a positive int"),
        ({"patch": 13}, ValueError, "patch must be <= the image size"),
        ({"stride": 1.5}, TypeError, "stride must be an int"),
        ({"stride": True}, TypeError, "stride must be an int"),
        ({"patch": 2, "stride": 3}, ValueError, "stride must be <= patch"),
        ({"batch_size": -1}, ValueError, "batch_size must be a positive int"),
    ],
)
def test_occlusion_rejects_bad_arguments(kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        occlusion_map(region_sum, torch.ones(1, 1, 12, 12), **kwargs)


def test_occlusion_rejects_bad_image_and_score_fn() -> None:
    with pytest.raises(ValueError, match=r"\[1, C, H, W\], got \(1, 12, 12\)"):
        occlusion_map(region_sum, torch.ones(1, 12, 12))
    with pytest.raises(ValueError, match=r"\[1, C, H, W\], got \(2, 1, 12, 12\)"):
        occlusion_map(region_sum, torch.ones(2, 1, 12, 12))
    with pytest.raises(ValueError, match=r"score_fn must return shape \[N\]"):
        occlusion_map(lambda x: region_sum(x)[:, None], torch.ones(1, 1, 12, 12), patch=4, stride=2)
    with pytest.raises(TypeError, match="score_fn must return a Tensor"):
        occlusion_map(lambda x: 1.0, torch.ones(1, 1, 12, 12), patch=4, stride=2)


# --- rank_correlation ------------------------------------------------------------------

def test_rank_correlation_of_monotone_and_reversed_maps() -> None:
    a = torch.arange(12.0).reshape(3, 4)
    assert rank_correlation(a, a.exp()) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)


def test_rank_correlation_with_ties_matches_hand_computation() -> None:
    # Ranks [1, 2.5, 2.5, 4] and [1, 3, 2, 4]: cov 4.5, variances 4.5 and 5.
    a = torch.tensor([[1.0, 2.0], [2.0, 3.0]])
    b = torch.tensor([[1.0, 3.0], [2.0, 4.0]])
    assert rank_correlation(a, b) == pytest.approx(4.5 / math.sqrt(4.5 * 5.0))


def test_rank_correlation_of_a_constant_map_is_zero_and_shapes_must_match() -> None:
    assert rank_correlation(torch.full((3, 3), 2.0), torch.rand(3, 3)) == 0.0
    with pytest.raises(ValueError, match=r"same shape, got \(3, 3\) and \(9,\)"):
        rank_correlation(torch.rand(3, 3), torch.rand(9))


# --- box_from_map ----------------------------------------------------------------------

def two_blobs() -> torch.Tensor:
    heat = torch.zeros(10, 12)
    heat[1:3, 1:4] = 1.0   # small, bright: 6 pixels
    heat[5:9, 6:11] = 0.5  # large, dim: 20 pixels
    heat[9, 11] = 0.5      # touches the large blob only diagonally
    return heat


def test_box_from_map_returns_the_largest_8_connected_segment() -> None:
    assert box_from_map(two_blobs()) == (6, 5, 6, 5)


def test_box_from_map_thresholds_relative_to_the_maximum() -> None:
    assert box_from_map(two_blobs(), threshold=0.5) == (6, 5, 6, 5)  # 0.5 >= 0.5 * 1.0
    assert box_from_map(two_blobs(), threshold=0.6) == (1, 1, 3, 2)
    with pytest.raises(ValueError, match=r"threshold .* \(0, 1\], got 0"):
        box_from_map(two_blobs(), threshold=0)


def test_box_from_map_is_none_for_a_zero_map() -> None:
    assert box_from_map(torch.zeros(5, 5)) is None


# --- box_iou ---------------------------------------------------------------------------

def test_box_iou() -> None:
    assert box_iou([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert box_iou([0, 0, 2, 2], [2, 0, 2, 2]) == 0.0  # adjacent columns, no shared pixel
    assert box_iou([0, 0, 4, 4], [2, 2, 4, 4]) == pytest.approx(4 / 28)
    with pytest.raises(ValueError, match="positive width and height"):
        box_iou([0, 0, 0, 4], [0, 0, 4, 4])


# --- box_ratio -------------------------------------------------------------------------

def test_box_ratio_values() -> None:
    assert box_ratio(torch.full((6, 8), 5.0), [2, 1, 3, 2]) == pytest.approx(1.0)
    heat = torch.ones(6, 8)
    heat[1:3, 2:5] = 3.0
    assert box_ratio(heat, [2, 1, 3, 2]) == pytest.approx(3.0)
    only_inside = torch.zeros(6, 8)
    only_inside[1:3, 2:5] = 1.0
    assert box_ratio(only_inside, [2, 1, 3, 2]) == math.inf


def test_box_ratio_errors() -> None:
    heat = torch.ones(6, 8)
    with pytest.raises(ValueError, match="outside the 6x8 map"):
        box_ratio(heat, [20, 20, 2, 2])
    with pytest.raises(ValueError, match="covers the whole 6x8 map"):
        box_ratio(heat, [0, 0, 8, 6])
    with pytest.raises(ValueError, match="positive width and height"):
        box_ratio(heat, [1, 1, 0, 2])
    with pytest.raises(ValueError, match="undefined"):
        box_ratio(torch.zeros(6, 8), [1, 1, 2, 2])
