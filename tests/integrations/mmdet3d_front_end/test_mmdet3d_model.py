"""The mmdet3d front end gives our model the inputs of our own front end: same probabilities, same losses.

The synthetic world is read once by bev_ddp's dataset and once by mmdet3d's ``NuScenesDataset`` with
the config's pipeline (mmdet3d's point and image loaders, our image augmentation, map labels and
packing, mmdet3d's data preprocessor), then handed to the same weights.
"""
from __future__ import annotations

import pytest
import torch

from mmdet3d_helpers import BEV_CONFIG, mmdet3d_batch, our_batch, same_weights

pytest.importorskip("mmdet3d", reason="the mmdet3d extra is not installed (make mmdet3d)")


@pytest.fixture(scope="module")
def wrapper(registered):
    from mmdet3d.registry import MODELS

    return MODELS.build(dict(type="BEVDDPMapModel", config=str(BEV_CONFIG), steps=[1, 3])).eval()


def test_inputs_match_our_dataset(wrapper, mmdet3d_world, tmp_path):
    data = wrapper.data_preprocessor(mmdet3d_batch(mmdet3d_world, tmp_path, "val", [0, 1]), training=False)
    batch = wrapper._batch(data["inputs"], data["data_samples"], with_labels=True)
    ours = our_batch(mmdet3d_world, "val", [0, 1])
    torch.testing.assert_close(batch["img"], ours["img"], rtol=0, atol=1e-4)  # normalised pixels
    for a, b in zip(batch["points"], ours["points"]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)  # m, s
    for name in ("intrinsics", "camera2lidar", "img_aug", "lidar_aug"):
        torch.testing.assert_close(getattr(batch["geometry"], name), getattr(ours["geometry"], name),
                                   rtol=0, atol=1e-5, msg=name)
    assert torch.equal(batch["gt_masks_bev"], ours["gt_masks_bev"])
    assert batch["gt_masks_bev"].sum() > 0


def test_same_weights_give_the_same_probabilities_through_both_front_ends(wrapper, mmdet3d_world, tmp_path):
    ours = same_weights(wrapper, seed=3)
    ours.eval()
    data = wrapper.data_preprocessor(mmdet3d_batch(mmdet3d_world, tmp_path, "val", [0, 1]), training=False)
    with torch.no_grad():
        samples = wrapper(**data, mode="predict")
        expected = ours.predict(our_batch(mmdet3d_world, "val", [0, 1]), steps=[1, 3], seed=wrapper.seed)
        # the same weights on the batch the mmdet3d front end built: equal at every step count
        own = ours.predict(wrapper._batch(data["inputs"], data["data_samples"], with_labels=False), steps=[1, 3],
                           seed=wrapper.seed)
    for step in (1, 3):
        got = torch.stack([s.pred_masks_bev_steps[step] for s in samples])
        assert got.shape == expected[step].probs.shape == (2, 6, 64, 64)
        assert (got - own[step].probs).abs().max() <= 1e-5, step
        unc = torch.stack([s.uncertainty_bev_steps[step] for s in samples])
        torch.testing.assert_close(unc, own[step].uncertainty, rtol=0, atol=1e-5)
    # through both front ends end to end: the normalised images differ by up to 1e-4 (mmdet3d's data
    # preprocessor normalises after the augmentation warp, ours before), which moves a 1-step map by
    # <= 1e-5.  Later steps re-encode the thresholded map (Alg. 3), so a probability that close to 0.5
    # can flip a cell and move its neighbourhood at the next step: there, all but a few cells agree.
    got = torch.stack([s.pred_masks_bev_steps[1] for s in samples])
    assert (got - expected[1].probs).abs().max() <= 1e-5
    got = torch.stack([s.pred_masks_bev_steps[3] for s in samples])
    assert ((got - expected[3].probs).abs() <= 1e-5).float().mean() >= 0.99
    # a different noise seed changes the 3-step maps: the comparison above can fail
    other = ours.predict(our_batch(mmdet3d_world, "val", [0, 1]), steps=[3], seed=wrapper.seed + 1)
    assert (other[3].probs - expected[3].probs).abs().max() > 1e-4


def test_loss_mode_gives_our_losses(wrapper, mmdet3d_world, tmp_path):
    ours = same_weights(wrapper, seed=4)
    data = wrapper.data_preprocessor(mmdet3d_batch(mmdet3d_world, tmp_path, "val", [2]), training=False)
    wrapper.train(), ours.train()
    torch.manual_seed(11)
    losses = wrapper(**data, mode="loss")
    torch.manual_seed(11)
    _, expected = ours(our_batch(mmdet3d_world, "val", [2]))
    wrapper.eval()
    assert set(losses) == set(expected) == {"loss_ddp"}
    torch.testing.assert_close(losses["loss_ddp"], expected["loss_ddp"], rtol=1e-5, atol=1e-6)
    features = wrapper(**data, mode="tensor")
    assert features.ndim == 4 and features.shape[0] == 1


def test_checkpoint_argument_loads_our_weights_unpermuted(registered, tmp_path):
    """mmdet3d, once imported, reads unversioned spconv kernels in spconv 1.x's order; our loaders tag
    our checkpoints with our modules' versions, so the sparse encoder's kernels arrive as saved."""
    from mmdet3d.registry import MODELS

    from bev_ddp.api import init_model

    torch.manual_seed(8)
    ours = init_model(BEV_CONFIG)
    path = tmp_path / "weights.pth"
    torch.save({k: v.clone() for k, v in ours.state_dict().items()}, path)  # a plain dict: no module versions
    wrapper = MODELS.build(dict(type="BEVDDPMapModel", config=str(BEV_CONFIG), checkpoint=str(path)))
    loaded = wrapper.model.state_dict()
    kernels = [k for k in loaded if k.startswith("lidar.sparse_encoder") and loaded[k].ndim == 5]
    assert kernels
    for key, value in ours.state_dict().items():
        assert torch.equal(loaded[key], value), key
