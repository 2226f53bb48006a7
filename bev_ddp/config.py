"""YAML configs with inheritance, command-line overrides and schema checking.

A config is a YAML file.  ``_base_: other.yaml`` (or a list of files, relative to the including
file) names configs to start from; the including file overrides their keys.  Overrides given as
``key.sub=value`` strings are applied last.  When a schema dataclass is given, unknown keys are
rejected with the closest valid names, so a typo never silently trains the wrong model.

Example::

    cfg = load_config("configs/bev/synth_tiny_fusion.yaml", ["optim.lr=1e-3"], schema=BEVConfig)
"""
from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any, Iterable

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from bev_ddp.errors import ConfigError
from bev_ddp.files import read_yaml

BASE_KEY = "_base_"


def _read_yaml(path: Path) -> dict[str, Any]:
    data = read_yaml(path, what="config file", error=ConfigError)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at top level, got {type(data).__name__}")
    return data


def _load_with_bases(path: Path, seen: tuple[Path, ...] = ()) -> DictConfig:
    try:
        path = path.resolve()
    except (RuntimeError, OSError) as exc:  # Python < 3.13 raises RuntimeError("Symlink loop ...")
        via = f" (a {BASE_KEY} of {seen[-1]})" if seen else ""
        raise ConfigError(f"config file {path}{via} cannot be resolved: a symlink loop ({exc})") from None
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError(f"config inheritance cycle: {chain}")
    data = _read_yaml(path)
    bases = data.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) and b for b in bases):
        raise ConfigError(f"config file {path}: {BASE_KEY} must be a file name or a list of file names, got {bases!r}")
    merged = OmegaConf.create()
    for base in bases:
        merged = OmegaConf.merge(merged, _load_with_bases(path.parent / base, (*seen, path)))
    return OmegaConf.merge(merged, OmegaConf.create(data))


def _all_keys(node: Any, prefix: str = "") -> list[str]:
    keys: list[str] = []
    if isinstance(node, DictConfig):
        for key in node.keys():
            full = f"{prefix}{key}"
            keys.append(full)
            keys.extend(_all_keys(node._get_node(key), full + "."))  # type: ignore[attr-defined]
    return keys


def _unknown_keys(cfg: DictConfig, reference: DictConfig, prefix: str = "") -> list[str]:
    unknown: list[str] = []
    for key in cfg.keys():
        full = f"{prefix}{key}"
        if key not in reference:
            unknown.append(full)
            continue
        sub_cfg, sub_ref = cfg._get_node(key), reference._get_node(key)  # type: ignore[attr-defined]
        if isinstance(sub_cfg, DictConfig) and isinstance(sub_ref, DictConfig):
            # a schema field typed as a plain dict accepts any sub-key; a dataclass field does not
            if dataclasses.is_dataclass(sub_ref._metadata.object_type):  # type: ignore[attr-defined]
                unknown.extend(_unknown_keys(sub_cfg, sub_ref, full + "."))
    return unknown


def _raise_unknown(unknown: list[str], valid: list[str], source: str) -> None:
    """One line: every unknown key with its closest valid names."""
    items = []
    for key in unknown:
        close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        items.append(f"{key}{hint}")
    raise ConfigError(f"unknown config key(s) in {source}: " + "; ".join(items))


def _value_error(exc: Exception, where: str) -> ConfigError:
    """One line for an OmegaConf (or number conversion) error: where, the key, then OmegaConf's
    message without its ``full_key`` / ``object_type`` lines."""
    key = getattr(exc, "full_key", None)
    message = str(getattr(exc, "msg", None) or exc).strip().splitlines()[0]
    if isinstance(exc, OverflowError):
        message = f"a number too large for a float ({message})"
    return ConfigError(f"{where}: " + (f"config key {key}: " if key else "") + message)


def _in_free_form_dict(cfg: DictConfig, key: str) -> bool:
    """True when ``key`` lies inside a schema field typed as a plain dict (any sub-key allowed)."""
    node: Any = cfg
    for part in key.split(".")[:-1]:
        if not isinstance(node, DictConfig) or part not in node:
            return False
        parent_is_dataclass = dataclasses.is_dataclass(node._metadata.object_type)  # type: ignore[attr-defined]
        node = node._get_node(part)  # type: ignore[attr-defined]
        if (parent_is_dataclass and isinstance(node, DictConfig)
                and not dataclasses.is_dataclass(node._metadata.object_type)):  # type: ignore[attr-defined]
            return True
    return False


def apply_overrides(cfg: DictConfig, overrides: Iterable[str], *, strict: bool = True) -> DictConfig:
    """Apply ``key.sub=value`` overrides; with ``strict`` every key must already exist."""
    overrides = list(overrides)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
    if not overrides:
        return cfg
    patch = OmegaConf.from_dotlist(overrides)
    if strict:
        unknown = [
            k for k in _all_keys(patch)
            if OmegaConf.select(cfg, k, default="__missing__") == "__missing__" and not _in_free_form_dict(cfg, k)
        ]
        # only report leaf-most unknown keys once
        unknown = [k for k in unknown if not any(u != k and k.startswith(u + ".") for u in unknown)]
        if unknown:
            _raise_unknown(unknown, _all_keys(cfg), "command-line overrides")
    try:
        return OmegaConf.merge(cfg, patch)  # type: ignore[return-value]
    except (OmegaConfBaseException, OverflowError, ValueError) as exc:
        raise _value_error(exc, _failing_override(cfg, overrides)) from exc


def _failing_override(cfg: DictConfig, overrides: list[str]) -> str:
    """``bad override value KEY=VALUE`` (shortened) of the first override that fails on its own."""
    for item in overrides:
        try:
            OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
        except (OmegaConfBaseException, OverflowError, ValueError):
            return f"bad override value {item if len(item) <= 60 else item[:57] + '...'}"
    return "bad override value"


def load_config(path: str | Path, overrides: Iterable[str] = (), *, schema: type | None = None) -> DictConfig:
    """Load ``path`` with its ``_base_`` chain, validate it against ``schema``, apply overrides.

    Args:
        path: YAML file.
        overrides: ``key.sub=value`` strings (OmegaConf dot-list syntax).
        schema: optional dataclass; keys not in it raise :class:`ConfigError` with close matches,
            values of the wrong type raise too.  Missing keys take the schema's defaults.
    """
    path = Path(path)
    return _checked(_load_with_bases(path), overrides, schema=schema, source=str(path))


def config_from_dict(data: dict[str, Any], overrides: Iterable[str] = (), *, schema: type | None = None,
                     source: str = "saved config") -> DictConfig:
    """:func:`load_config` of a plain dict, e.g. the resolved config a training checkpoint carries
    (:func:`to_dict`): ``config_from_dict(to_dict(cfg), schema=S)`` equals ``cfg``.  ``source`` names it
    in errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a mapping, got {type(data).__name__}")
    return _checked(OmegaConf.create(data), overrides, schema=schema, source=source)


def _checked(cfg: DictConfig, overrides: Iterable[str], *, schema: type | None, source: str) -> DictConfig:
    """Merge ``cfg`` into ``schema`` (unknown keys and wrong types raise), apply overrides, check values."""
    if schema is not None:
        if not dataclasses.is_dataclass(schema):
            raise TypeError("schema must be a dataclass type")
        reference = OmegaConf.structured(schema)
        unknown = _unknown_keys(cfg, reference)
        if unknown:
            _raise_unknown(unknown, _all_keys(reference), source)
        try:
            cfg = OmegaConf.merge(reference, cfg)  # type: ignore[assignment]
        except (ConfigKeyError, OmegaConfBaseException, OverflowError, ValueError) as exc:
            raise _value_error(exc, f"bad value in config {source}") from exc
    cfg = apply_overrides(cfg, overrides)
    if schema is not None:
        validate(cfg)
    return cfg


# ---------------------------------------------------------------------------------- value rules
RULES_KEY = "bev_ddp.rules"
_COMPARE = {"gt": (lambda v, b: v > b, ">"), "ge": (lambda v, b: v >= b, ">="),
            "lt": (lambda v, b: v < b, "<"), "le": (lambda v, b: v <= b, "<=")}


def constrained(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, **rules: Any) -> Any:
    """A dataclass field whose value :func:`validate` checks at load time.

    Rules: ``gt``/``ge``/``lt``/``le`` (bounds), ``choices`` (allowed values), ``non_empty`` (a
    list), and the same with an ``each_`` prefix for every element of a list (``each_ge=1``).
    ``None`` is accepted for ``Optional`` fields.  Example: ``lr: float = constrained(2e-4, gt=0)``.
    """
    unknown = set(rules) - {*_COMPARE, "choices", "non_empty", *(f"each_{k}" for k in (*_COMPARE, "choices"))}
    if unknown:
        raise TypeError(f"unknown rule(s) {sorted(unknown)}")
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata={RULES_KEY: rules})
    return dataclasses.field(default=default, metadata={RULES_KEY: rules})


def _broken_rule(value: Any, rules: dict[str, Any], prefix: str = "") -> str | None:
    for name, (ok, sign) in _COMPARE.items():
        bound = rules.get(prefix + name)
        if bound is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"must be a number {sign} {bound}, got {value!r}"
            if value != value or not ok(value, bound):  # NaN fails every bound
                return f"must be {sign} {bound}, got {value!r}"
    choices = rules.get(prefix + "choices")
    if choices is not None and value not in choices:
        return f"must be one of {', '.join(map(str, choices))}, got {value!r}"
    return None


def validate(cfg: DictConfig, prefix: str = "") -> None:
    """Check every value against the rules of its schema field (see :func:`constrained`).

    Raises:
        ConfigError: naming the dotted key, the rule and the value.
    """
    object_type = cfg._metadata.object_type  # type: ignore[attr-defined]
    if dataclasses.is_dataclass(object_type):
        for f in dataclasses.fields(object_type):
            rules = f.metadata.get(RULES_KEY)
            if not rules or f.name not in cfg:
                continue
            value = cfg[f.name]
            if value is None:
                continue
            key = prefix + f.name
            if isinstance(value, (list, tuple)) or (hasattr(value, "__len__") and not isinstance(value, (str, DictConfig))):
                items = list(value)
                if rules.get("non_empty") and not items:
                    raise ConfigError(f"config key {key} must not be empty")
                for i, item in enumerate(items):
                    broken = _broken_rule(item, rules, "each_")
                    if broken:
                        raise ConfigError(f"config key {key}[{i}] {broken}")
                continue
            broken = _broken_rule(value, rules)
            if broken:
                raise ConfigError(f"config key {key} {broken}")
    for key in cfg.keys():
        node = cfg._get_node(key)  # type: ignore[attr-defined]
        if isinstance(node, DictConfig) and not node._is_none():  # type: ignore[attr-defined]
            validate(node, f"{prefix}{key}.")


def to_dict(cfg: DictConfig) -> dict[str, Any]:
    """Plain-python copy of a config (for checkpoints and logs)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def to_plain(node: Any, *, tuples: bool = False) -> Any:
    """Plain Python containers from a config node (libraries such as timm expect them).

    With ``tuples`` every list becomes a tuple (timm's architecture arguments); plain values pass through.
    """
    value = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    if not tuples:
        return value
    if isinstance(value, dict):
        return {k: to_plain(v, tuples=True) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return tuple(to_plain(v, tuples=True) for v in value)
    return value


def int_tuple(value: Any) -> tuple[int, ...] | None:
    """A config list of sizes (e.g. ``crop_size: [512, 512]``) as a tuple of ints; None stays None."""
    return tuple(int(v) for v in value) if value is not None else None
