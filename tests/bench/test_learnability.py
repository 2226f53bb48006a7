"""``bev-ddp bench learnability``: run specs, reuse of finished runs, and the mean ± spread tables."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from bev_ddp.bench import learnability as lb
from bev_ddp.cli import main
from bev_ddp.errors import InputError
from bev_ddp.metrics.bev_iou import BEVIoUEvaluator

CLASSES = ["drivable_area", "divider"]


def evaluated(seed: int, steps=(1, 3)) -> dict:
    """Metrics of a real evaluator on random maps (the bench reads them like a training's)."""
    g = torch.Generator().manual_seed(seed)
    ev = BEVIoUEvaluator(classes=CLASSES, steps=list(steps))
    gt = torch.rand(2, 2, 16, 16, generator=g) > 0.5
    noise = torch.rand(2, 2, 16, 16, generator=g)
    ev.process({"gt_masks_bev": gt.float()},
               {s: SimpleNamespace(probs=(0.55 * gt + 0.5 * noise / s).clamp(0, 1), uncertainty=noise[:, 0])
                for s in steps})
    return ev.evaluate()


def test_parse_runs_defaults_and_rejects_bad_specs():
    assert [(s.name, s.base) for s in lb.parse_runs(None)] == [("baseline", "baseline"), ("ddp", "ddp")]
    spec = lb.parse_runs([["soft", "ddp", "model.head.ddp.reencode=soft"]])[0]
    assert spec == lb.RunSpec("soft", "ddp", ("model.head.ddp.reencode=soft",))
    for bad in (["x"], ["x", "conv"], ["x", "ddp", "no_equals"], ["a/b", "ddp"]):
        with pytest.raises(InputError):
            lb.parse_runs([bad])
    with pytest.raises(InputError, match="unique"):
        lb.parse_runs([["a", "ddp"], ["a", "baseline"]])


def test_recipe_overrides_give_the_half_metre_label_grid_and_head_specific_training(tmp_path):
    ddp = lb.run_config(lb.RunSpec("d", "ddp", ("model.head.ddp.reencode=soft",)), 3, lb.Recipe(), tmp_path)
    base = lb.run_config(lb.RunSpec("b", "baseline"), 3, lb.Recipe(), tmp_path)
    assert list(ddp.data.xbound) == [-32.0, 32.0, 0.5] and list(base.data.ybound) == [-32.0, 32.0, 0.5]
    assert list(ddp.model.head.input_scope[0]) == [-32.0, 32.0, 1.0]  # the encoders keep their 1 m grid
    assert ddp.train.iters == 1200 and ddp.train.self_aligned_iters == 200 and list(ddp.eval.steps) == [1, 2, 3]
    assert base.train.self_aligned_iters == 0 and list(base.eval.steps) == [1]
    assert ddp.train.seed == 3 and ddp.model.head.ddp.reencode == "soft"


def test_read_result_takes_the_threshold_0_50_row_and_the_best_threshold():
    metrics = evaluated(0)
    r = lb.read_result(lb.RunSpec("d", "ddp"), 0, metrics, 1.0)
    table = metrics["steps"]["3"]["per_threshold"]
    assert r.iou50["3"]["divider"] == table["per_class"]["divider"][table["thresholds"].index(0.5)]
    assert r.iou_best["3"]["divider"] == max(table["per_class"]["divider"])


def test_summary_mean_and_spread_over_seeds_and_markdown():
    spec = lb.RunSpec("d", "ddp")
    results = [lb.read_result(spec, s, evaluated(s), 10.0) for s in (0, 1, 2)]
    summary = lb.summarize([spec, lb.RunSpec("unused", "baseline")], results)
    assert list(summary) == ["d"]
    div = [r.iou50["1"]["divider"] for r in results]
    got = summary["d"]["steps"]["1"]["at_0.50"]["divider"]
    assert got["mean"] == pytest.approx(sum(div) / 3) and got["spread"] == pytest.approx(max(div) - min(div))
    means = [sum(r.iou50["3"].values()) / 2 for r in results]
    assert summary["d"]["steps"]["3"]["at_0.50"]["mean IoU"]["spread"] == pytest.approx(max(means) - min(means))
    md = lb.markdown_summary(summary, lb.Recipe())
    row = f"| d | 1 | 3 | {100 * got['mean']:.1f} ± {100 * got['spread']:.1f} |"
    assert any(line.startswith(row) for line in md.splitlines())


def test_finished_runs_are_reused_and_changed_configs_retrained(tmp_path, monkeypatch):
    calls = []

    def fake_train(cfg, *, task, work_dir, progress):
        from omegaconf import OmegaConf

        calls.append(cfg.train.seed)
        metrics = evaluated(cfg.train.seed)
        d = Path(work_dir) / "eval" / f"iter_{cfg.train.iters:07d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "metrics.json").write_text(json.dumps(metrics))
        OmegaConf.save(cfg, Path(work_dir) / "config.yaml")
        return SimpleNamespace(signum=None, evals={cfg.train.iters: SimpleNamespace(metrics=metrics)})

    monkeypatch.setattr("bev_ddp.engine.trainer.train", fake_train)
    recipe, world, spec = lb.Recipe(iters=4, self_aligned_iters=1), tmp_path / "world", lb.RunSpec("d", "ddp")
    first = lb.train_run(spec, 1, recipe, world, tmp_path / "run", log=lambda m: None)
    again = lb.train_run(spec, 1, recipe, world, tmp_path / "run", log=lambda m: None)
    assert calls == [1] and first.seconds is not None and again.seconds is None and again.iou50 == first.iou50
    lb.train_run(lb.RunSpec("d", "ddp", ("model.head.ddp.reencode=soft",)), 1, recipe, world, tmp_path / "run",
                 log=lambda m: None)
    assert calls == [1, 1]  # another config in the same folder is not taken for the old one
    lb.train_run(spec, 1, recipe, world, tmp_path / "run2", log=lambda m: None)
    lb.train_run(spec, 1, lb.Recipe(iters=4, self_aligned_iters=1, scenes=8), world, tmp_path / "run2", log=lambda m: None)
    assert calls == [1, 1, 1, 1]  # same config, but a town of another size under the same path: retrained
    lb.train_run(spec, 1, lb.Recipe(iters=4, self_aligned_iters=1, scenes=8), world, tmp_path / "run2", log=lambda m: None)
    assert calls == [1, 1, 1, 1]


@pytest.mark.parametrize("argv", [["--seeds", "a"], ["--iters", "5", "--self-aligned-iters", "5"],
                                  ["--summary", "../x"], ["--run", "x", "conv"], ["--rescore", "x", "nope", "a=1"]])
def test_bad_options_exit_2_before_any_work(tmp_path, argv, capsys):
    assert main(["bench", "learnability", "--out", str(tmp_path / "study"), *argv]) == 2
    assert not (tmp_path / "study" / "world").exists()
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_coarse_grid_counts_of_one_cell_and_two_cell_lines():
    gt = torch.zeros(1, 2, 8, 8, dtype=torch.bool)
    gt[0, 0, :, 2] = True  # one fine column: the left half of coarse column 1, missed by nearest-exact
    gt[0, 1, :, 2:4] = True  # two fine columns: exactly coarse column 1
    c = lb.coarse_grid_counts(gt, (4, 4))
    assert c["total"].tolist() == [8, 16]
    assert c["kept"].tolist() == [0, 16]  # nearest keeps the whole coarse column, or none of the thin line
    # one-cell line: covered fraction 0.5 in coarse column 1; bilinear to fine columns 2 and 3 gives
    # 0.75 * 0.5 = 0.375 < 0.5, so the coarse-fraction map holds nothing of it
    assert c["tp"].tolist()[0] == 0 and c["fp"].tolist()[0] == 0 and c["fn"].tolist()[0] == 8
    # two-cell line: fraction 1 -> 0.75 at fine columns 2 and 3 (kept), 0.25 beside them (dropped)
    assert c["tp"].tolist()[1] == 16 and c["fp"].tolist()[1] == 0 and c["fn"].tolist()[1] == 0


def test_rescore_specs_name_a_trained_run_and_give_overrides():
    specs = lb.parse_runs([["ddp", "ddp", "model.head.ddp.label_scale=0.05"]])
    got = lb.parse_rescores([["steps_mean", "ddp", "model.head.ddp.eval_protocol=mean_draws_steps"]], specs)
    assert got == [lb.RescoreSpec("steps_mean", "ddp", ("model.head.ddp.eval_protocol=mean_draws_steps",))]
    for bad in (["x", "nope", "a=1"], ["x", "ddp"], ["x", "ddp", "novalue"], ["ddp", "ddp", "a=1"]):
        with pytest.raises(InputError, match="--rescore|unique"):
            lb.parse_rescores([bad], specs)


def test_rescoring_loads_the_final_checkpoint_into_the_overridden_config_and_is_reused(tmp_path, monkeypatch):
    seen = []

    def fake_evaluate(cfg, task, model, *, device, out_dir, progress, stop):
        assert stop is not None  # a signal stops the pass between batches
        seen.append((cfg.model.head.ddp.eval_protocol, cfg.model.head.ddp.label_scale, cfg.train.seed))
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        metrics = evaluated(cfg.train.seed)
        (Path(out_dir) / "metrics.json").write_text(json.dumps(metrics))
        return SimpleNamespace(metrics=metrics, interrupted=False)

    loaded = []
    monkeypatch.setattr("bev_ddp.engine.evaluation.evaluate_task", fake_evaluate)
    monkeypatch.setattr("bev_ddp.engine.checkpoint.load_model_weights", lambda model, path: loaded.append(Path(path)))
    monkeypatch.setattr("bev_ddp.bev.task.TASK.build_model", lambda cfg: torch.nn.Identity())
    recipe, world = lb.Recipe(iters=4, self_aligned_iters=1), tmp_path / "world"
    trained = lb.RunSpec("ddp", "ddp", ("model.head.ddp.label_scale=0.05",))
    spec = lb.RescoreSpec("mean", "ddp", ("model.head.ddp.eval_protocol=mean_draws_steps",))
    first = lb.rescore_run(spec, trained, 2, recipe, world, tmp_path / "run", log=lambda m: None)
    again = lb.rescore_run(spec, trained, 2, recipe, world, tmp_path / "run", log=lambda m: None)
    assert seen == [("mean_draws_steps", 0.05, 2)]  # the trained run's overrides, then the rescoring's; once
    assert loaded == [tmp_path / "run" / "checkpoints" / "iter_0000004.pth"]
    assert first.name == "mean" and first.seconds is not None and again.seconds is None and again.iou50 == first.iou50
    assert (tmp_path / "run" / "rescore" / "mean" / "config.yaml").exists()
    lb.rescore_run(spec, trained, 2, lb.Recipe(iters=4, self_aligned_iters=1, world_seed=1), world, tmp_path / "run",
                   log=lambda m: None)
    assert len(seen) == 2  # another town under the same path is scored again


def test_an_interrupted_rescoring_raises_and_is_not_taken_for_finished(tmp_path, monkeypatch):
    import signal

    from bev_ddp.engine.interrupt import Interrupted

    def stopped(cfg, task, model, *, device, out_dir, progress, stop):
        stop._handle(signal.SIGTERM, None)  # as if the signal arrived during the pass
        return SimpleNamespace(metrics={}, interrupted=True)

    monkeypatch.setattr("bev_ddp.engine.evaluation.evaluate_task", stopped)
    monkeypatch.setattr("bev_ddp.engine.checkpoint.load_model_weights", lambda model, path: None)
    monkeypatch.setattr("bev_ddp.bev.task.TASK.build_model", lambda cfg: torch.nn.Identity())
    spec, trained = lb.RescoreSpec("mean", "ddp", ("model.head.ddp.eval_protocol=mean_draws_steps",)), lb.RunSpec("ddp", "ddp")
    with pytest.raises(Interrupted) as info:
        lb.rescore_run(spec, trained, 0, lb.Recipe(iters=4, self_aligned_iters=1), tmp_path / "world", tmp_path / "run",
                       log=lambda m: None)
    assert info.value.signum == signal.SIGTERM
    assert not (tmp_path / "run" / "rescore" / "mean" / "config.yaml").exists()
    assert not (tmp_path / "run" / "rescore" / "mean" / lb.WORLD_FILE).exists()
