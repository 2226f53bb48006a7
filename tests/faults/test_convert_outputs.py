"""``bev-ddp convert`` never overwrites its source, probes OUT's folder before the work, and a
SIGTERM at any moment of the checkpoint write leaves OUT absent or whole."""
from __future__ import annotations

import os
import signal

import pytest
import torch
from fault_helpers import no_temporaries, one_line

from bev_ddp.cli import main
from bev_ddp.engine import checkpoint as engine_checkpoint
from bev_ddp.engine.interrupt import Interrupted, interruptible


def _source(tmp_path):
    src = tmp_path / "published.pth"
    torch.save({"state_dict": {"encoders.lidar.w": torch.randn(3)}}, src)
    return src, src.read_bytes()


@pytest.mark.parametrize("as_link", [False, True], ids=["same-path", "symlink"])
def test_convert_refuses_out_that_is_the_source(tmp_path, capsys, as_link):
    src, before = _source(tmp_path)
    out = src
    if as_link:
        out = tmp_path / "link.pth"
        out.symlink_to(src)
    assert main(["convert", str(src), str(out), "--from", "bevfusion"]) == 2
    line = one_line(capsys.readouterr().err, "bev-ddp convert: error:")
    assert f"OUT {out} is the source checkpoint" in line
    assert src.read_bytes() == before
    no_temporaries(tmp_path)


def test_convert_probes_a_read_only_out_folder_before_reading_the_source(tmp_path, read_only_dir, capsys,
                                                                         monkeypatch):
    import bev_ddp.convert as convert

    src, _ = _source(tmp_path)
    monkeypatch.setattr(convert, "read_state_dict", lambda path: pytest.fail("read the source before the probe"))
    out = read_only_dir / "out.pth"
    assert main(["convert", str(src), str(out), "--from", "bevfusion"]) == 2
    line = one_line(capsys.readouterr().err, "bev-ddp convert: error:")
    assert f"OUT {out}: folder {read_only_dir} is not writable" in line
    assert ".tmp" not in line


def test_convert_refuses_out_that_is_a_folder(tmp_path, capsys):
    src, _ = _source(tmp_path)
    assert main(["convert", str(src), str(tmp_path), "--from", "bevfusion"]) == 2
    assert f"OUT {tmp_path} is a folder" in one_line(capsys.readouterr().err, "bev-ddp convert: error:")


@pytest.mark.parametrize("at_write", [1, 3, 6])
def test_a_signal_inside_the_checkpoint_write_leaves_it_whole(tmp_path, monkeypatch, at_write):
    """torch.save's C++ writer turned a signal raised in its write callback into
    ``RuntimeError: unexpected pos``; the write now finishes, then the signal takes effect."""
    real_fdopen = os.fdopen

    class SignalOnWrite:
        def __init__(self, fh):
            self.fh, self.writes = fh, 0

        def write(self, data):
            self.writes += 1
            if self.writes == at_write:
                signal.raise_signal(signal.SIGTERM)
            return self.fh.write(data)

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.fh.__exit__(*exc)

    monkeypatch.setattr(os, "fdopen", lambda *a, **k: SignalOnWrite(real_fdopen(*a, **k)))
    state = {f"w{i}": torch.randn(100) for i in range(5)}
    out = tmp_path / "out.pth"
    with pytest.raises(Interrupted) as caught, interruptible():
        engine_checkpoint.save_atomic({"model": state}, out)
    assert caught.value.signum == signal.SIGTERM
    loaded = torch.load(out, weights_only=True)["model"]
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    no_temporaries(tmp_path)


def test_a_raw_pickle_is_refused_in_one_line_without_a_torch_warning(tmp_path, capsys):
    import pickle

    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    assert main(["convert", str(raw), str(tmp_path / "out.pth"), "--from", "bevfusion"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [one_line(err, "bev-ddp convert: error:")]
    assert "not a plain tensor checkpoint" in err and "UserWarning" not in err


def test_a_missing_source_leaves_no_out_folder_behind(tmp_path, capsys):
    out = tmp_path / "new" / "out.pth"
    assert main(["convert", str(tmp_path / "none.pth"), str(out), "--from", "bevfusion"]) == 2
    assert "checkpoint not found" in one_line(capsys.readouterr().err, "bev-ddp convert: error:")
    assert not out.parent.exists()
