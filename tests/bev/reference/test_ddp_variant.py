"""The DDP authors' BEV head variant: switches on MapDecoder / DDPBEVHead and the K-draw protocol."""
from __future__ import annotations

import torch
from omegaconf import OmegaConf

from bev_ddp.bev.build import build_head
from bev_ddp.diffusion.encoding import ClassEmbeddingEncoder
from bev_ddp.nn import MapDecoder

SMALL = dict(cond_channels=12, map_channels=8, out_channels=3, embed_dims=16, depth=2, num_heads=2, num_points=2,
             ffn_dims=32)


def _decoder(**kw) -> MapDecoder:
    torch.manual_seed(0)
    return MapDecoder(**SMALL, **kw).eval()


def test_features_first_fuse_order_is_the_same_conv_with_swapped_input_columns():
    ours, theirs = _decoder(), _decoder(fuse_order="features_first")
    state = ours.state_dict()
    w = state["fuse.weight"]  # [E, map 8 + cond 12, 1, 1]
    state["fuse.weight"] = torch.cat([w[:, 8:], w[:, :8]], dim=1)  # -> [cond, map]
    theirs.load_state_dict(state)
    cond, x_t, log_snr = torch.randn(2, 12, 6, 5), torch.randn(2, 8, 6, 5), torch.tensor([-2.0, 3.0])
    torch.testing.assert_close(theirs(cond, x_t, log_snr), ours(cond, x_t, log_snr))
    assert not torch.allclose(_decoder(fuse_order="features_first")(cond, x_t, log_snr), ours(cond, x_t, log_snr))


def test_without_time_conditioning_the_output_ignores_the_noise_level():
    plain, timed = _decoder(time_conditioning=False), _decoder()
    assert len(plain.films) == 0 and len(timed.films) == 2
    assert sum(p.numel() for p in timed.parameters()) - sum(p.numel() for p in plain.parameters()) == 2 * (64 * 32 + 32)  # FiLM Linear(T 64 -> 2 x 16)
    cond, x_t = torch.randn(1, 12, 4, 4), torch.randn(1, 8, 4, 4)
    torch.testing.assert_close(plain(cond, x_t, torch.tensor([-5.0])), plain(cond, x_t, torch.tensor([5.0])))
    assert not torch.allclose(timed(cond, x_t, torch.tensor([-5.0])), timed(cond, x_t, torch.tensor([5.0])))


def _authors_head(draws: int = 3):
    cfg = OmegaConf.create({
        "type": "ddp", "focal_alpha": -1.0, "focal_gamma": 2.0,
        "input_scope": [[-4.0, 4.0, 1.0], [-4.0, 4.0, 1.0]],  # encoder grid 8 x 8
        "ddp": {"map_channels": 8, "embed_dims": 16, "depth": 1, "num_heads": 2, "num_points": 2, "ffn_dims": 32, "dropout": 0.0,
                "label_scale": 0.01, "schedule": "cosine", "td": 1.0, "noise_grid": "encoder", "decoder_grid": "label",
                "fuse_order": "features_first", "time_conditioning": False, "eval_protocol": "mean_draws_steps",
                "eval_draws": draws},
    })
    torch.manual_seed(0)
    # label grid 10 x 10 at 0.5 m inside the encoder grid
    return build_head(cfg, in_channels=12, classes=["a", "b", "c"], xbound=[-2.5, 2.5, 0.5], ybound=[-2.5, 2.5, 0.5]).eval()


def test_encoder_grid_noise_fuses_at_the_encoder_grid_and_predicts_on_the_label_grid():
    head = _authors_head()
    seen = {}
    head.ddp.decoder.fuse.register_forward_hook(lambda m, i, o: seen.__setitem__("fuse_in", tuple(i[0].shape)))
    feats = torch.randn(2, 12, 8, 8)
    target = (torch.rand(2, 3, 10, 10) < 0.3).float()
    head.train()
    _, losses = head(feats, target)
    assert seen["fuse_in"] == (2, 12 + 8, 8, 8)  # noisy map on the encoder grid
    assert losses["loss_ddp"].ndim == 0 and torch.isfinite(losses["loss_ddp"])
    head.eval()
    assert head.predict(feats, steps=[2])[2].probs.shape == (2, 3, 10, 10)


def test_mean_draws_steps_averages_the_sigmoid_of_k_seeded_draws_times_every_step():
    head = _authors_head(draws=3)
    feats = torch.randn(2, 12, 8, 8)
    pred = head.predict(feats, steps=[3], seed=7)[3]
    manual = []
    for r in range(3):  # each draw alone, seed 7 + r, batch of the two samples
        out = head.ddp.predict(feats, steps=3, seed=7 + r)
        manual += [logits.sigmoid() for logits in out.step_logits]
    torch.testing.assert_close(pred.probs, torch.stack(manual).mean(0), rtol=1e-5, atol=1e-6)
    assert "3 draws" in head.protocol_label


def test_metrics_name_the_evaluation_protocol():
    from pathlib import Path

    from bev_ddp.bev.schema import BEVConfig
    from bev_ddp.bev.task import TASK
    from bev_ddp.config import load_config

    configs = Path(__file__).resolve().parents[3] / "configs" / "bev"
    labels = {}
    for name in ("reference/ddp_fusion", "reference/ddp_camera", "nuscenes_fusion_ddp", "reference/bevfusion_fusion"):
        cfg = load_config(configs / f"{name}.yaml", schema=BEVConfig)
        labels[name] = TASK.build_evaluator(cfg, [3]).evaluate()["protocol"]
    assert labels == {"reference/ddp_fusion": "DDP: mean sigmoid of 4 draws x all steps",
                      "reference/ddp_camera": "DDP: mean sigmoid of 5 draws x all steps",
                      "nuscenes_fusion_ddp": "DDP: last step of 1 draw",
                      "reference/bevfusion_fusion": "conv head"}


def test_reference_configs_keep_the_authors_reencoding_and_target_shrinking():
    from pathlib import Path

    from bev_ddp.bev.build import build_head
    from bev_ddp.bev.schema import BEVConfig
    from bev_ddp.config import load_config

    configs = Path(__file__).resolve().parents[3] / "configs" / "bev"
    for name in ("reference/ddp_fusion", "reference/ddp_camera"):
        cfg = load_config(configs / f"{name}.yaml", schema=BEVConfig)
        d = cfg.model.head.ddp
        assert (d.reencode, d.target_pooling, d.label_encoding) == ("threshold", "nearest", "class_embedding"), name
    head = _authors_head()  # a section built without the schema (no such keys) gets the authors' behaviour
    assert head.ddp.reencode == "threshold" and head.ddp.label_encoder.target_pooling == "nearest"
    assert isinstance(head.ddp.label_encoder, ClassEmbeddingEncoder)
