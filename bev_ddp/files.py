"""Reading JSON and YAML files given by the user, with errors that name the file.

Every reader of a user-supplied JSON/YAML file (configs, info files, nuScenes tables, metrics,
export metadata) goes through :func:`read_json` / :func:`read_yaml`, so a missing or corrupt file
always ends in one :class:`~bev_ddp.errors.InputError` line: ``<what> not found: <path>`` or
``<what> <path> is not valid JSON: <reason>``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import yaml

from bev_ddp.errors import InputError


# format name -> (parser, the parser's error)
_PARSERS: dict[str, tuple[Callable[[str], Any], type[Exception]]] = {
    "JSON": (json.loads, json.JSONDecodeError),
    "YAML": (yaml.safe_load, yaml.YAMLError),
}


def _read(path: str | Path, what: str, error: type[InputError], kind: str) -> Any:
    path = Path(path)
    if path.is_dir():
        raise error(f"{what} {path} is a folder, not a file")
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    parse, parse_error = _PARSERS[kind]
    try:
        return parse(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text: {exc}") from exc
    except parse_error as exc:
        raise error(f"{what} {path} is not valid {kind}: {_one_line(exc)}") from exc


def _one_line(exc: Exception) -> str:
    """A parser error on one line: PyYAML's problem and its position (its text spans 5+ lines)."""
    problem, mark = getattr(exc, "problem", None), getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split())


def read_json(path: str | Path, *, what: str, error: type[InputError] = InputError) -> Any:
    """The parsed content of the JSON file ``path``; ``what`` names it in errors (e.g. ``"info file"``)."""
    return _read(path, what, error, "JSON")


def read_yaml(path: str | Path, *, what: str, error: type[InputError] = InputError) -> Any:
    """The parsed content of the YAML file ``path`` (None when empty); ``what`` names it in errors."""
    return _read(path, what, error, "YAML")
