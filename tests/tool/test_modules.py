"""import_file: the one way a file a user names by path becomes a module (a tool's code,
a scenario file)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from agentplex.tool.lowlevel import import_file


def test_a_file_imports_under_its_name_and_stays_findable(tmp_path: Path) -> None:
    path = tmp_path / "mine.py"
    path.write_text("class Thing:\n    pass\nVALUE = 42\n")
    name = "agentplex_test_import_file_ok"
    try:
        module = import_file(path, name)
        assert module.VALUE == 42
        assert sys.modules[name] is module
        assert module.Thing.__module__ == name
    finally:
        sys.modules.pop(name, None)


def test_a_file_that_raises_leaves_no_half_module(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text("VALUE = 1\nraise RuntimeError('boom at import')\n")
    name = "agentplex_test_import_file_broken"
    with pytest.raises(RuntimeError, match="boom at import"):
        import_file(path, name)
    assert name not in sys.modules


def test_a_file_that_is_not_python_is_an_import_error(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("not python\n")
    with pytest.raises(ImportError) as caught:
        import_file(path, "agentplex_test_import_file_txt")
    assert caught.value.path == str(path)
