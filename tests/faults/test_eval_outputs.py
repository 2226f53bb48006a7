"""``eval`` on a disk that fills up mid-run, and SIGINT inside the DDP sampling loop."""
from __future__ import annotations

import os
import signal

import torch
from fault_helpers import Child, fill_disk, one_line


def test_eval_on_a_disk_that_fills_up_is_one_line_and_no_zipfile_noise(tmp_path, toy_checkpoint, small_disk):
    config, ckpt = toy_checkpoint
    disk = small_disk(1536)  # passes the 1 MiB probe, then fills while the model runs
    out = disk / "report"
    child = Child(["eval", config, ckpt, "--out", out, "--no-progress", "--steps", "1"], tmp_path, sleep=0.3)
    child.wait_for(child.marker.is_file)
    fill_disk(disk)
    rc, _, err = child.finish()
    assert rc == 1, err
    line = one_line(err, "bev-ddp eval: error:")
    assert "No space left on device" in line
    assert [text for text in err.strip().splitlines() if not text.startswith(("20", "["))] == [line], err
    assert "Exception ignored" not in err
    assert all(p.stat().st_size > 0 for p in out.iterdir())
    os.unlink(disk / "filler")


class _SamplingModel(torch.nn.Module):
    """``predict`` runs the DDIM loop for ``steps``; the third decoder call sends SIGINT to this process."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def predict(self, batch, steps, seed=0):
        from bev_ddp.diffusion.sampler import DDIMSampler

        def denoise(x_t, t):
            self.calls += 1
            if self.calls == 3:
                os.kill(os.getpid(), signal.SIGINT)
            return x_t

        noise = torch.zeros(1, 1, 2, 2)
        return DDIMSampler().sample_many(noise, steps=steps, denoise=denoise, encode_prediction=lambda p: p)


class _NoEvaluator:
    def reset(self):
        pass

    def process(self, batch, preds):
        pass

    def evaluate(self):
        return {"ok": True}


def test_sigint_stops_eval_between_sampling_steps_not_after_the_batch():
    from bev_ddp.engine.evaluation import evaluate_model
    from bev_ddp.engine.interrupt import StopRequest

    model = _SamplingModel()
    with StopRequest() as stop:
        result = evaluate_model(model, [{"x": torch.zeros(1)}] * 2, _NoEvaluator(), steps=[5000], seed=0,
                                device=torch.device("cpu"), progress=False, stop=stop)
    assert result.interrupted and result.batches == 0 and stop.signum == signal.SIGINT
    assert model.calls == 3  # the loop stopped before its fourth decoder call, not after 5000
