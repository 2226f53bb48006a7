"""YAML configs: inheritance, overrides with types, unknown keys with close matches, cycles."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pytest

from bev_ddp.config import apply_overrides, load_config, to_dict
from bev_ddp.errors import ConfigError, InputError


@dataclass
class Optim:
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: Optional[float] = 35.0


@dataclass
class Schema:
    task: str = "bev"
    iters: int = 10
    amp: bool = True
    name: str = "run"
    optim: Optim = field(default_factory=Optim)
    extra: dict = field(default_factory=dict)  # free-form: any sub-key accepted


def _write(path, text):
    path.write_text(text)
    return path


def test_inheritance_chain_and_list_of_bases(tmp_path):
    _write(tmp_path / "a.yaml", "iters: 1\nname: a\noptim:\n  lr: 0.1\n")
    _write(tmp_path / "b.yaml", "amp: false\nname: b\n")
    (tmp_path / "sub").mkdir()
    child = _write(tmp_path / "sub" / "c.yaml", "_base_: [../a.yaml, ../b.yaml]\nname: c\noptim:\n  grad_clip: null\n")
    cfg = load_config(child, schema=Schema)
    assert cfg.iters == 1 and cfg.amp is False and cfg.name == "c"  # later base and the file itself win
    assert cfg.optim.lr == 0.1 and cfg.optim.grad_clip is None and cfg.optim.betas == [0.9, 0.999]
    assert "_base_" not in to_dict(cfg)


def test_override_types_are_checked_and_converted(tmp_path):
    path = _write(tmp_path / "c.yaml", "iters: 5\n")
    cfg = load_config(path, ["iters=7", "amp=false", "optim.lr=2e-4", "optim.betas=[0.8,0.9]", "extra.anything=3"],
                      schema=Schema)
    assert cfg.iters == 7 and isinstance(cfg.iters, int)
    assert cfg.amp is False
    assert cfg.optim.lr == pytest.approx(2e-4)
    assert list(cfg.optim.betas) == [0.8, 0.9]
    assert cfg.extra.anything == 3
    with pytest.raises(ConfigError, match="bad override value"):
        load_config(path, ["iters=many"], schema=Schema)
    with pytest.raises(ConfigError, match="key=value"):
        load_config(path, ["iters"], schema=Schema)


def test_unknown_keys_list_close_matches(tmp_path):
    path = _write(tmp_path / "c.yaml", "itres: 5\noptim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path, schema=Schema)
    message = str(exc.value)
    assert "itres (did you mean iters" in message and "optim.lrr (did you mean optim.lr" in message
    assert str(path) in message
    ok = _write(tmp_path / "ok.yaml", "iters: 5\n")
    with pytest.raises(ConfigError, match=r"optim\.grad_clp \(did you mean optim\.grad_clip"):
        load_config(ok, ["optim.grad_clp=1"], schema=Schema)


def test_inheritance_cycle_and_missing_or_bad_files(tmp_path):
    _write(tmp_path / "x.yaml", "_base_: y.yaml\n")
    _write(tmp_path / "y.yaml", "_base_: x.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "x.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path / "bad.yaml", "a: [1, 2\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(_write(tmp_path / "list.yaml", "- 1\n- 2\n"))
    assert issubclass(ConfigError, InputError)


def test_without_schema_overrides_must_name_existing_keys(tmp_path):
    cfg = load_config(_write(tmp_path / "c.yaml", "a:\n  b: 1\n"))
    assert apply_overrides(cfg, ["a.b=2"]).a.b == 2
    with pytest.raises(ConfigError, match=r"a\.c"):
        apply_overrides(cfg, ["a.c=2"])
    assert apply_overrides(cfg, ["a.c=2"], strict=False).a.c == 2


def test_schema_must_be_a_dataclass(tmp_path):
    with pytest.raises(TypeError):
        load_config(_write(tmp_path / "c.yaml", "a: 1\n"), schema=dict)
