"""Bench result files go through ``output_files``' atomic writer: a disk that fills up mid-write
leaves the previous file and no temporary behind."""
from __future__ import annotations

import argparse
import errno
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from bev_ddp.bench import gpu_check, model, ops


@dataclass
class _FakeModelResult:
    device: str = "cpu"


class _FakeOpsResult:
    def to_dict(self) -> dict:
        return {"device": "cpu"}


def _args(module, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(list(argv))


def _run_ops(out: Path, monkeypatch) -> Path:
    monkeypatch.setattr(ops, "bench_ops", lambda *a, **k: _FakeOpsResult())
    monkeypatch.setattr(ops, "format_result", lambda result: "table")
    ops.run(_args(ops, "--out", str(out / "ops.json")))
    return out / "ops.json"


def _run_model(out: Path, monkeypatch) -> Path:
    monkeypatch.setattr(model, "bench_model", lambda **k: _FakeModelResult())
    monkeypatch.setattr(model, "print_result", lambda result: None)
    model.run(_args(model, "--out", str(out / "model.json")))
    return out / "model.json"


def _run_gpu_check(out: Path, monkeypatch) -> Path:
    monkeypatch.setattr(gpu_check, "run_checks", lambda settings, only: [])
    gpu_check.run(_args(gpu_check, "--device", "cpu", "--tiny", "--out", str(out)))
    return out / "gpu_check.json"


@pytest.mark.parametrize("bench", [_run_ops, _run_model, _run_gpu_check])
def test_a_full_disk_mid_write_keeps_the_previous_result_and_no_temporary(bench, tmp_path, monkeypatch):
    path = bench(tmp_path, monkeypatch)  # a first, complete result
    previous = path.read_bytes()
    assert previous.startswith(b"{")

    def half_then_enospc(self, data, *args, **kwargs):
        with open(self, "wb") as fh:
            fh.write((data.encode() if isinstance(data, str) else data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", half_then_enospc)
    monkeypatch.setattr(Path, "write_bytes", half_then_enospc)
    with pytest.raises(OSError, match="No space left"):
        bench(tmp_path, monkeypatch)
    assert path.read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        {path.name, "gpu_check.md"} if bench is _run_gpu_check else {path.name})


def test_atomic_outputs_get_the_mode_of_a_plain_open(tmp_path):
    """Written through a temporary name, yet readable like any file the user writes (0o666 less
    the umask), not the 0o600 of a private temporary file."""
    import os

    from bev_ddp.output_files import write_text_atomic

    old = os.umask(0o022)
    try:
        out = write_text_atomic(tmp_path / "result.json", "{}")
        plain = tmp_path / "plain.json"
        plain.write_text("{}")
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.json", "result.json"]  # no temporary left
