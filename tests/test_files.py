"""bev_ddp.files: one reader for user JSON/YAML files, errors name the file and what it is."""
from __future__ import annotations

import pytest

from bev_ddp.errors import ConfigError, InputError
from bev_ddp.files import read_json, read_yaml


def test_reads_valid_files(tmp_path):
    (tmp_path / "a.json").write_text('{"x": [1, 2]}', encoding="utf-8")
    (tmp_path / "a.yaml").write_text("x: [1, 2]\n", encoding="utf-8")
    (tmp_path / "empty.yaml").write_text("", encoding="utf-8")
    assert read_json(tmp_path / "a.json", what="info file") == {"x": [1, 2]}
    assert read_yaml(tmp_path / "a.yaml", what="config file") == {"x": [1, 2]}
    assert read_yaml(tmp_path / "empty.yaml", what="config file") is None


@pytest.mark.parametrize("reader, text, kind", [(read_json, "{oops", "JSON"), (read_yaml, "x: [1,", "YAML")])
def test_missing_corrupt_and_binary_files_name_the_file(tmp_path, reader, text, kind):
    missing = tmp_path / "nope.txt"
    with pytest.raises(InputError, match=f"metrics file not found: {missing}"):
        reader(missing, what="metrics file")
    bad = tmp_path / "bad.txt"
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=f"metrics file {bad} is not valid {kind}"):
        reader(bad, what="metrics file")
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match=f"config file {binary} is not UTF-8"):
        reader(binary, what="config file", error=ConfigError)
