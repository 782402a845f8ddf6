"""How nodes find the user's code: ``agentplex node`` imports from its working directory
and from ``--path`` folders, and the nodes a command starts for a user's file import and
allow exactly that file's module."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from agentplex import connect
from agentplex.cli import NotUserCode
from agentplex.runtime import ActorError
from agentplex.sim.lowlevel import LocalNodes, use_import_path, user_code

pytestmark = pytest.mark.anyio

MODULE = '''
from agentplex import Actor


class Echo(Actor):
    async def handle_call(self, message):
        return f"{__name__}: {message}"
'''


def test_user_code_names_the_module_and_folder_of_a_file_or_a_module(tmp_path: Path
                                                                     ) -> None:
    assert user_code(f"{tmp_path}/opsim.py:Opinion") == ("opsim", tmp_path)
    assert user_code("sims/opsim.py") == ("opsim", Path("sims").resolve())
    assert user_code("agentplex.sim.games:Guess") == ("agentplex.sim.games", None)
    with pytest.raises(NotUserCode, match="not a module name"):
        user_code("sims/my-sim.py:Opinion")
    with pytest.raises(NotUserCode, match="neither"):
        user_code("not a module:X")


def test_use_import_path_puts_the_folders_first_for_this_process_and_its_children(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "code").mkdir()
    added = use_import_path([tmp_path / "code"])
    assert added == [str(tmp_path), str(tmp_path / "code")]
    assert sys.path[:2] == added
    assert os.environ["PYTHONPATH"] == os.pathsep.join([*added, "/elsewhere"])


async def test_nodes_started_for_a_users_file_import_it_and_allow_only_it(
        tmp_path: Path) -> None:
    """The file lives in a folder that is neither the nodes' working directory nor on
    anyone's path (the nodes run ``agentplex node``, not ``python -m``)."""
    sims = tmp_path / "sims"
    sims.mkdir()
    (sims / "opsim.py").write_text(MODULE)
    (sims / "other.py").write_text(MODULE)
    code = user_code(f"{sims}/opsim.py:Echo")
    nodes = LocalNodes(tmp_path / "logs", allow=[code.module],
                       path=[code.folder] if code.folder else [])
    try:
        endpoint = await nodes.start(1, heartbeat=30)
        async with connect(endpoint) as rt:
            transport = rt.transport
            ref = await transport.spawn("node-0", "opsim:Echo", name="e1")  # type: ignore[attr-defined]
            assert await ref.call("hi", timeout=30) == "opsim: hi"
            with pytest.raises(ActorError, match="'other' is not on this node's spawn allow-list"):
                await transport.spawn("node-0", "other:Echo", name="e2")  # type: ignore[attr-defined]
    finally:
        nodes.close()
