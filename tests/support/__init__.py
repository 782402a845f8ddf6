"""Helpers the tests share: actors, node and driver processes, loopback wire servers.

Import them as ``from tests.support.X import Y``. A helper that runs as its own process is
started as ``python -m tests.support.X`` with the repository root, :data:`ROOT`, as its
working directory.
"""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository root: the working directory of every helper process."""


def pythonpath() -> str:
    """``PYTHONPATH`` for a process that imports ``tests.support`` from elsewhere than
    :data:`ROOT`: the root ahead of what this process inherited."""
    return os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
