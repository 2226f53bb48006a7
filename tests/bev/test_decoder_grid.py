"""``model.head.ddp.decoder_grid: encoder``: the whole DDP decoder on the encoder grid, logits resized
bilinearly to the label grid (the cheapest head: 128² instead of 200² queries at the full config)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from bev_ddp.bev.build import build_head
from bev_ddp.errors import ConfigError


def _head(noise_grid: str = "encoder", decoder_grid: str = "encoder"):
    cfg = OmegaConf.create({
        "type": "ddp", "focal_alpha": -1.0, "focal_gamma": 2.0,
        "input_scope": [[-4.0, 4.0, 1.0], [-4.0, 4.0, 1.0]],  # encoder grid 8 x 8
        "ddp": {"map_channels": 8, "embed_dims": 16, "depth": 1, "num_heads": 2, "num_points": 2, "ffn_dims": 32,
                "dropout": 0.0, "label_scale": 0.01, "schedule": "cosine", "td": 1.0, "noise_grid": noise_grid,
                "decoder_grid": decoder_grid, "fuse_order": "map_first", "time_conditioning": True,
                "eval_protocol": "last_step", "eval_draws": 1, "head_kernel": 1},
    })
    torch.manual_seed(0)
    # label grid 10 x 10 at 0.5 m inside the encoder grid
    return build_head(cfg, in_channels=12, classes=["a", "b", "c"], xbound=[-2.5, 2.5, 0.5], ybound=[-2.5, 2.5, 0.5])


def test_decoder_layers_run_on_the_encoder_grid_and_the_map_comes_out_on_the_label_grid():
    head = _head().eval()
    queries = []
    head.ddp.decoder.layers[0].register_forward_hook(lambda m, i, o: queries.append(i[0].shape[1]))
    feats = torch.randn(2, 12, 8, 8)
    pred = head.predict(feats, steps=[1, 2], seed=3)
    assert set(queries) == {8 * 8}  # [B, 64 queries, C] on the encoder grid, never the 100 label cells
    assert pred[2].probs.shape == (2, 3, 10, 10)
    # the map is the decoder's encoder-grid logits resized bilinearly to the label grid
    decoder_logits = head.ddp.predict(feats, steps=2, seed=3).logits  # [2, 3, 8, 8]
    assert decoder_logits.shape[-2:] == (8, 8)
    expected = F.interpolate(decoder_logits, size=(10, 10), mode="bilinear", align_corners=False).sigmoid()
    torch.testing.assert_close(pred[2].probs, expected)


def test_training_loss_compares_resized_logits_with_the_label_grid_target():
    head = _head().train()
    feats = torch.randn(2, 12, 8, 8)
    target = (torch.rand(2, 3, 10, 10) < 0.3).float()
    _, losses = head(feats, target, generator=torch.Generator().manual_seed(0))
    losses["loss_ddp"].backward()
    assert torch.isfinite(losses["loss_ddp"]) and head.ddp.decoder.fuse.weight.grad.abs().sum() > 0


def test_authors_layout_keeps_the_layers_on_the_label_grid():
    head = _head(decoder_grid="label").eval()
    queries = []
    head.ddp.decoder.layers[0].register_forward_hook(lambda m, i, o: queries.append(i[0].shape[1]))
    head.predict(torch.randn(1, 12, 8, 8), steps=[1])
    assert queries == [10 * 10]


@pytest.mark.parametrize("noise_grid, decoder_grid", [("label", "encoder"), ("encoder", "nowhere")])
def test_an_impossible_decoder_grid_is_a_config_error_naming_the_key(noise_grid, decoder_grid):
    with pytest.raises(ConfigError, match="model.head.ddp.decoder_grid"):
        _head(noise_grid=noise_grid, decoder_grid=decoder_grid)
