"""The batched training augmentation: shapes, ranges, and the burnt-in markers of the "wide" setting."""

from __future__ import annotations

import pytest
import torch

from fracture_detector.augment import AUGMENTATIONS, augment, burn_in_markers


@pytest.mark.parametrize("strength", list(AUGMENTATIONS))
def test_augment_keeps_shape_and_range(strength):
    x = torch.rand(16, 1, 48, 48)
    y = augment(x, torch.Generator().manual_seed(0), strength)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert not torch.equal(y, x)


def test_markers_are_stamped_on_the_chosen_share_only():
    black = torch.zeros(64, 1, 96, 96)
    stamped = burn_in_markers(black, torch.Generator().manual_seed(0), p=1.0)
    bright = (stamped > 0.5).flatten(1).sum(1)
    # Every image gets one letter, in a square 8-16% of the image high: tens of bright pixels, not the image.
    assert (bright > 5).all() and (bright < 0.1 * 96 * 96).all(), bright
    assert stamped.max() <= 1.0
    assert torch.equal(burn_in_markers(black, torch.Generator().manual_seed(0), p=0.0), black)


def test_wide_reaches_darker_than_standard():
    x = torch.full((512, 1, 16, 16), 0.5)
    means = {s: augment(x, torch.Generator().manual_seed(1), s).mean(dim=(1, 2, 3)) for s in AUGMENTATIONS}
    assert means["wide"].min() < means["standard"].min()
