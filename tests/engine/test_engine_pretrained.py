"""A checkpoint carries its config (``bev_ddp.engine.pretrained``), and every entry point samples the
model's own default number of steps (``model.head.ddp.steps``) when none is asked for."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import bev_ddp
from bev_ddp.bench import frontier
from bev_ddp.cli import main
from bev_ddp.config import config_from_dict, load_config, to_dict
from bev_ddp.data.create_infos import create_infos
from bev_ddp.data.synthetic import tiny_world
from bev_ddp.engine.cli_support import load_task_config, task_name_of
from bev_ddp.engine.pretrained import resolve_model_source, split_config_and_checkpoint
from bev_ddp.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "bev" / "synth_tiny_fusion_ddp.yaml"
TASK_CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if "task:" in p.read_text() or "_base_" in p.read_text())


# -- the saved config ---------------------------------------------------------------------------------
@pytest.mark.parametrize("path", TASK_CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_a_saved_config_round_trips_exactly(path, tmp_path):
    cfg, task = load_task_config(path)
    saved = to_dict(cfg)  # what a training checkpoint carries
    again = config_from_dict(saved, schema=task.schema)
    assert to_dict(again) == saved and OmegaConf.get_type(again) is OmegaConf.get_type(cfg)
    yaml = tmp_path / "config.yaml"  # what the trainer writes beside the checkpoints
    yaml.write_text(OmegaConf.to_yaml(cfg))
    assert to_dict(load_config(yaml, schema=task.schema)) == saved
    assert task_name_of(yaml) == cfg.task


@pytest.mark.parametrize("paths, expected", [
    (["run"], (None, "run")),
    (["run/latest.pth"], (None, "run/latest.pth")),
    (["a.yaml"], ("a.yaml", None)),
    (["a.YML", "c.pth"], ("a.YML", "c.pth")),
])
def test_one_path_is_a_config_only_when_it_is_yaml(paths, expected):
    got = split_config_and_checkpoint(paths)
    assert tuple(None if p is None else str(p) for p in got) == expected


@pytest.mark.parametrize("paths, message", [
    (["c.pth", "a.yaml"], "config before the checkpoint"),
    (["a.yaml", "b.pth", "c.pth"], "3 paths"),
])
def test_bad_path_lists_name_the_problem(paths, message):
    with pytest.raises(InputError, match=message):
        split_config_and_checkpoint(paths)


def test_a_bare_state_dict_needs_the_config_and_a_run_folder_needs_its_latest(tmp_path):
    bare = tmp_path / "weights.pth"
    torch.save({"a": torch.zeros(1)}, bare)
    with pytest.raises(InputError, match=r"carries no config .*CONFIG CHECKPOINT"):
        resolve_model_source(None, bare)
    with pytest.raises(InputError, match="has no latest.pth"):
        resolve_model_source(None, tmp_path)
    with pytest.raises(InputError, match="checkpoint not found"):
        resolve_model_source(CONFIG, tmp_path / "missing.pth")
    source = resolve_model_source(CONFIG, bare)  # with the config, a bare file is accepted as before
    assert source.checkpoint == bare and source.cfg.task == "bev"


# -- a trained run folder ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """One training iteration of the tiny fusion model on the tiny world: a real run folder."""
    base = tmp_path_factory.mktemp("pretrained")
    world = tiny_world(base)  # two scenes of three keyframes: one to train, one held out
    create_infos(world, "v1.0-mini", base / "infos", max_sweeps=3)
    data = [f"data.dataroot={world}", f"data.info_dir={base / 'infos'}"]
    folder = base / "run"
    assert main(["train", str(CONFIG), *data, "train.iters=1", "train.self_aligned_iters=0", "train.batch_size=1", "--work-dir", str(folder),
                 "--no-eval", "--no-progress"]) == 0
    return {"folder": folder, "data": data, "world": world}


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_a_run_folder_evaluates_and_replays_without_a_config(run, tmp_path):
    folder, data = run["folder"], run["data"]
    common = ["--steps", "1,2", "--max-samples", "2", "--no-progress"]
    assert main(["eval", str(folder), *common, "--out", str(tmp_path / "bare")]) == 0
    assert main(["eval", str(CONFIG), str(folder / "latest.pth"), *data, *common, "--out", str(tmp_path / "cfg")]) == 0
    bare, with_config = _metrics(tmp_path / "bare"), _metrics(tmp_path / "cfg")
    assert bare["num_samples"] == with_config["num_samples"] == 2
    for step in ("1", "2"):
        assert bare["steps"][step]["counts"] == with_config["steps"][step]["counts"]
        assert bare["steps"][step]["summary"] == with_config["steps"][step]["summary"]

    replay = ["--scene", "synth-0000", "--dataroot", str(run["world"]), "--steps", "2", "--max-frames", "2",
              "--no-progress"]
    assert main(["replay", str(folder), *replay, "--out", str(tmp_path / "r_bare")]) == 0
    assert main(["replay", str(CONFIG), str(folder / "latest.pth"), *data, *replay, "--out",
                 str(tmp_path / "r_cfg")]) == 0
    frames = [(tmp_path / d / "frames.jsonl").read_text().splitlines() for d in ("r_bare", "r_cfg")]
    keep = ("index", "flags", "sweeps", "steps", "occupied_fraction", "mean_uncertainty")  # not the latency
    rows = [[{k: json.loads(line)[k] for k in keep} for line in f] for f in frames]
    assert len(rows[0]) == 2 and rows[0] == rows[1]

    model = bev_ddp.init_model(folder)  # the Python API reads the same folder
    assert model.cfg.data.dataroot == str(run["world"]) and not model.training


@pytest.mark.slow
def test_every_entry_point_samples_the_model_default_steps(run, tmp_path):
    folder, world = run["folder"], run["world"]
    four = ["model.head.ddp.steps=4", "eval.steps=null"]  # a default no entry point uses on its own

    model = bev_ddp.init_model(folder, overrides=four)  # API
    assert model.steps == 4
    from bev_ddp.bev.task import BEVTask
    from bev_ddp.data.structures import collate_samples

    sample = BEVTask().build_dataset(model.cfg, "val")[0]
    pred = bev_ddp.inference_bev(model, sample, seed=3)
    assert len(pred.step_probs) == 4
    with torch.inference_mode():
        direct = model.predict(collate_samples([sample]), seed=3)
    assert list(direct) == [4]
    torch.testing.assert_close(direct[4].probs, pred.probs, rtol=0, atol=0)

    assert main(["eval", str(folder), *four, "--max-samples", "1", "--no-progress", "--out", str(tmp_path / "e")]) == 0
    assert list(_metrics(tmp_path / "e")["steps"]) == ["4"]  # eval without --steps

    assert main(["replay", str(folder), *four, "--scene", "synth-0000", "--dataroot", str(world), "--max-frames", "1",
                 "--no-progress", "--out", str(tmp_path / "r")]) == 0
    record = json.loads((tmp_path / "r" / "frames.jsonl").read_text().splitlines()[0])
    assert record["steps"] == 4  # replay without --steps

    parser = argparse.ArgumentParser()
    frontier.add_arguments(parser)
    args = parser.parse_args(["--checkpoint", str(folder), "--no-latency", "--draws", "1", "--max-samples", "1",
                              "--threads", "1", "--out", str(tmp_path / "f.json")])
    assert frontier.run(args) == 0
    points = json.loads((tmp_path / "f.json").read_text())["quality_points"]
    assert [(p["steps"], p["draws"]) for p in points] == [(2, 1)]  # the checkpoint's own default (BEV: 2)
