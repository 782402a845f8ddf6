"""Importing a Python file as a module, for code a user names by path (a tool's
``tool.py``, a scenario's ``FILE.py``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["import_file"]


def import_file(path: Path, module: str) -> ModuleType:
    """Import the file ``path`` as the module named ``module`` (kept in ``sys.modules``
    under that name, so its classes can be found again by import path). A file that
    raises while it runs is taken out of ``sys.modules`` again and its error raised.

    Raises:
        ImportError: ``path`` cannot be loaded as Python.
    """
    spec = importlib.util.spec_from_file_location(module, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} as Python", path=str(path))
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[module] = loaded
    try:
        spec.loader.exec_module(loaded)
    except BaseException:
        sys.modules.pop(module, None)
        raise
    return loaded
