"""Augmentation matrices: the image warp follows its matrix exactly; BEV draws are seeded."""
from __future__ import annotations

import numpy as np
import torch

from bev_ddp.data.transforms import (BEVAugConfig, ImageAugConfig, bev_aug_matrix, image_aug_matrix, to_img_aug4,
                                     warp_image)


def test_warp_moves_a_pixel_where_the_matrix_says():
    src = torch.zeros(1, 90, 160)
    src[0, 30, 100] = 1.0  # pixel centre (100.5, 30.5)
    gen = torch.Generator().manual_seed(3)
    config = ImageAugConfig(resize_range=(1.3, 1.3), rotate_deg=(10.0, 10.0), flip=1.0)
    m = image_aug_matrix((90, 160), (48, 96), config, gen)
    out = warp_image(src, m, (48, 96))
    u, v, _ = m @ np.array([100.5, 30.5, 1.0])
    peak = torch.nonzero(out[0] == out[0].max())[0]
    assert abs(peak[1].item() + 0.5 - u) <= 1.0 and abs(peak[0].item() + 0.5 - v) <= 1.0
    assert m[0, 0] < 0  # flipped
    aug4 = to_img_aug4(m)
    np.testing.assert_allclose(aug4 @ np.array([100.5, 30.5, 7.0, 1.0]), [u, v, 7.0, 1.0])


def test_eval_matrix_fits_the_width_and_keeps_the_bottom():
    m = image_aug_matrix((900, 1600), (256, 704), ImageAugConfig(resize_range=(1.0, 1.0), rotate_deg=(0.0, 0.0)), None)
    np.testing.assert_allclose(m @ [0, 900, 1], [0, 256, 1], atol=1e-9)
    np.testing.assert_allclose(m @ [1600, 900, 1], [704, 256, 1], atol=1e-9)


def test_bev_aug_is_seeded_and_identity_without_generator():
    config = BEVAugConfig()
    a = bev_aug_matrix(config, torch.Generator().manual_seed(1))
    b = bev_aug_matrix(config, torch.Generator().manual_seed(1))
    c = bev_aug_matrix(config, torch.Generator().manual_seed(2))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    np.testing.assert_array_equal(bev_aug_matrix(config, None), np.eye(4))
    scale = abs(np.linalg.det(a[:2, :2])) ** 0.5
    assert 0.9 <= scale <= 1.1 and np.isclose(abs(a[2, 2]), scale)
