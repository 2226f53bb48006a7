"""Helpers of the fault-injection suite (child processes, message checks, small mounts)."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for folder in (HERE, ROOT / "tests" / "engine", ROOT / "tests" / "replay"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

TOY_YAML = """\
task: toy
train: {{iters: {iters}, batch_size: 4, log_interval: 1, checkpoint_interval: 4, amp: false, work_dir: {work_dir}}}
optim: {{lr: 0.05, warmup_iters: 2}}
eval: {{batch_size: 1, num_vis: 2}}
"""


def write_toy_config(folder: Path, *, iters: int = 8, name: str = "toy.yaml") -> Path:
    path = folder / name
    path.write_text(TOY_YAML.format(iters=iters, work_dir=folder / "work"))
    return path


class Child:
    """A ``bev-ddp`` child process (through :mod:`fault_driver`) with helpers to signal it."""

    def __init__(self, args: list[str], tmp_path: Path, *, sleep: float = 0.0):
        self.marker = tmp_path / "started.marker"
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               "FAULTS_MARKER": str(self.marker), "FAULTS_SLEEP": str(sleep), "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, str(HERE / "fault_driver.py"), *map(str, args)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)

    def wait_for(self, condition, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                raise AssertionError(f"child exited early with {self.proc.returncode}:\n{out}\n{err}")
            if time.monotonic() > end:
                self.proc.kill()
                raise AssertionError("child did not reach the expected point in time")
            time.sleep(0.05)

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def finish(self, timeout: float = 60.0) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err


def one_line(err: str, prefix: str) -> str:
    """The single stderr line starting with ``prefix`` (asserts there is exactly one and no traceback)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, err
    return lines[0]


def no_temporaries(folder: Path) -> None:
    left = [p for p in folder.rglob("*") if p.name.startswith(".") and ".tmp" in p.name]
    assert not left, left


def fill_disk(disk: Path, leave: int = 0) -> None:
    """Fill ``disk`` up to ``leave`` bytes of free space (a file named ``filler``)."""
    with open(disk / "filler", "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    os.truncate(disk / "filler", max(0, os.path.getsize(disk / "filler") - leave))


def mount_tmpfs(target: Path, options: str) -> bool:
    target.mkdir(parents=True, exist_ok=True)
    if sys.platform != "linux" or os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True)
    return done.returncode == 0


def unmount(target: Path) -> None:
    subprocess.run(["umount", "-l", str(target)], capture_output=True)


SIGNALS = [pytest.param(signal.SIGINT, id="SIGINT"), pytest.param(signal.SIGTERM, id="SIGTERM")]

REPLAY_CONFIG = ROOT / "configs" / "bev" / "synth_tiny_fusion_ddp.yaml"
REPLAY_FRAMES = 12


