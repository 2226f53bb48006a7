"""Fixtures of the fault-injection suite: toy configs and checkpoints, child processes, small disks.

ENOSPC and read-only folders come from small tmpfs mounts where this process may mount (root in
CI containers); otherwise those tests are skipped and the simulated writer failures (always run)
cover the same code paths.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from fault_helpers import REPLAY_CONFIG, REPLAY_FRAMES, mount_tmpfs, unmount, write_toy_config

@pytest.fixture()
def toy_task(monkeypatch):
    """``task: toy`` resolves to the slow toy task in this process."""
    from bev_ddp.engine import task as task_module

    monkeypatch.setitem(task_module.TASK_MODULES, "toy", "fault_driver")
    import fault_driver

    return fault_driver.TASK


@pytest.fixture(scope="session")
def toy_checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    """(config, checkpoint) of a 4-step toy training, shared by the eval tests."""
    import fault_driver
    from bev_ddp.config import load_config
    from bev_ddp.engine.trainer import train

    folder = tmp_path_factory.mktemp("toy_ckpt")
    config = write_toy_config(folder, iters=4)
    cfg = load_config(config, schema=fault_driver.TASK.schema)
    train(cfg, task=fault_driver.TASK, work_dir=folder / "work", progress=False, final_eval=False)
    return config, folder / "work" / "latest.pth"


# ------------------------------------------------------------------------------ small disks
@pytest.fixture()
def small_disk(tmp_path):
    """Factory: ``small_disk(kib)`` mounts a tmpfs of that size (skips where mounting is impossible)."""
    mounted: list[Path] = []

    def make(kib: int) -> Path:
        target = tmp_path / f"disk{len(mounted)}"
        if not mount_tmpfs(target, f"size={kib}k"):
            pytest.skip("cannot mount a tmpfs here (not root or no mount)")
        mounted.append(target)
        return target

    yield make
    for target in mounted:
        unmount(target)


@pytest.fixture()
def read_only_dir(tmp_path):
    """A folder nothing can be written into: a read-only tmpfs (root) or mode 0555 (other users)."""
    target = tmp_path / "ro"
    if mount_tmpfs(target, "ro,size=64k"):
        yield target
        unmount(target)
        return
    if os.geteuid() == 0:
        pytest.skip("root ignores folder permissions and cannot mount here")
    target.chmod(0o555)
    yield target
    target.chmod(0o755)



@pytest.fixture(scope="session")
def replay_bag(tmp_path_factory) -> dict:
    """A ROS 2 bag of the synthetic rig (random clouds and images), for the replay fault tests."""
    from replay_helpers import rig_recording

    from bev_ddp.replay import export
    from bev_ddp.replay.topics import default_topic_map

    folder = tmp_path_factory.mktemp("fault_bag")
    bag = export.write_rosbag2(rig_recording(default_topic_map(), frames=REPLAY_FRAMES), folder / "bag")
    return {"bag": bag, "config": REPLAY_CONFIG, "frames": REPLAY_FRAMES}
