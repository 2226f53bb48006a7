"""The authors' seg/depth augmentations: seeded per item, label/depth moved with the image, ranges held."""
from __future__ import annotations

import math

import torch

from bev_ddp.data.image_augment import (NYU_VALID_REGION, color_aug, photometric_distortion, random_rotate,
                                        valid_region_crop)
from bev_ddp.data.image_pipelines import IGNORE_INDEX, DepthPipeline, SegPipeline


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_photometric_distortion_is_seeded_and_within_mmseg_ranges():
    img = torch.full((3, 4, 4), 100, dtype=torch.uint8)
    outs = [photometric_distortion(img, gen(s)) for s in range(40)]
    assert torch.equal(photometric_distortion(img, gen(7)), outs[7])
    assert len({int(o.float().mean()) for o in outs}) > 5  # it does change images
    # a grey image has no saturation or hue: only brightness (+-32) then contrast (x0.5..1.5) act
    for o in outs:
        assert (o == o[0, 0, 0]).all() and 34 <= int(o[0, 0, 0]) <= 198  # (100-32)*0.5 .. (100+32)*1.5
    assert any(int(o[0, 0, 0]) != 100 for o in outs)


def test_color_aug_range_and_identity_when_skipped():
    img = torch.full((3, 2, 2), 128, dtype=torch.uint8)
    assert torch.equal(color_aug(img, gen(0), prob=0.0), img)
    out = color_aug(img, gen(0), prob=1.0).float()
    lo, hi = (128 / 255) ** 1.1 * 0.9 * 0.9 * 255, (128 / 255) ** 0.9 * 1.1 * 1.1 * 255
    assert (out >= math.floor(lo)).all() and (out <= math.ceil(hi)).all() and not torch.equal(out, img.float())


def test_random_rotate_moves_depth_with_the_image_and_never_blends_depth():
    img = torch.zeros(3, 401, 401, dtype=torch.uint8)
    img[:, 200, 390] = 255
    depth = torch.zeros(401, 401)
    depth[200, 390] = 7.0  # 190 px right of the centre
    r_img, r_depth = random_rotate(img, depth, gen(1), prob=1.0, degree=2.5)
    assert set(r_depth.unique().tolist()) <= {0.0, 7.0}  # nearest: no mixed values
    (y, x), = (r_depth == 7.0).nonzero().tolist()
    assert 1 <= abs(y - 200) <= 190 * math.sin(math.radians(2.5)) + 1 and abs(x - 390) <= 1
    iy, ix = divmod(int(r_img[0].flatten().argmax()), 401)
    assert abs(iy - y) <= 1 and abs(ix - x) <= 1  # the image's bright pixel went to the same place
    same_img, same_depth = random_rotate(img, depth, gen(1), prob=0.0)
    assert same_img is img and same_depth is depth


def test_nyu_valid_region_crop_indices():
    depth = torch.arange(480 * 640, dtype=torch.float32).view(480, 640)
    img = torch.zeros(3, 480, 640, dtype=torch.uint8)
    c_img, c_depth = valid_region_crop(img, depth)
    assert NYU_VALID_REGION == (45, 472, 43, 608)
    assert c_depth.shape == (427, 565) and c_img.shape == (3, 427, 565)
    assert c_depth[0, 0] == 45 * 640 + 43 and c_depth[-1, -1] == 471 * 640 + 607
    pipe = DepthPipeline(valid_region=True, flip_prob=0.0)
    assert pipe(img, depth, training=False, gen=gen(0))[1].shape == (480, 640)  # tests keep the full frame
    assert pipe(img, depth, training=True, gen=gen(0))[1].shape == (427, 565)


def test_cat_max_ratio_rejects_crops_dominated_by_one_class():
    label = torch.zeros(64, 64, dtype=torch.int64)
    label[:, 56:] = 1  # class 1 only in the right 8 columns
    img = torch.zeros(3, 64, 64, dtype=torch.uint8)
    plain = SegPipeline(crop_size=(16, 16), ratio_range=None, flip_prob=0.0)
    ratio = SegPipeline(crop_size=(16, 16), ratio_range=None, flip_prob=0.0, cat_max_ratio=0.75)

    def share(pipe, seed):
        lab = pipe(img, label, training=True, gen=gen(seed))[1]
        lab = lab[lab != IGNORE_INDEX]
        return float(torch.bincount(lab, minlength=2).max()) / lab.numel()

    plain_ok = sum(share(plain, s) < 0.75 for s in range(60))
    ratio_ok = sum(share(ratio, s) < 0.75 for s in range(60))
    assert ratio_ok > 2 * plain_ok and ratio_ok >= 30  # ~1/7 of random crops pass; 10 redraws make most pass


def test_seg_photometric_flag_changes_only_the_image():
    label = torch.randint(0, 5, (16, 16))
    img = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    base = SegPipeline(ratio_range=None, flip_prob=0.0)
    photo = SegPipeline(ratio_range=None, flip_prob=0.0, photometric=True)
    out = [photo(img, label, training=True, gen=gen(s)) for s in range(5)]
    assert all(torch.equal(o[1], label) for o in out)
    assert any(not torch.equal(o[0], base(img, label, training=True, gen=gen(s))[0]) for s, o in enumerate(out))
