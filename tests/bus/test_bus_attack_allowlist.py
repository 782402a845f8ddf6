"""Attacks on the spawn allow-list: a peer tries to reach classes an allowed module imports
(re-exports, dotted walks through attributes), over plain and CURVE connections."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentplex import Actor, Runtime
from agentplex.bus import KeyPair, SpawnRefused, ZmqTransport
from agentplex.bus.lowlevel import resolve_actor_class
from agentplex.runtime import ActorError
from tests.support import redactors

pytestmark = pytest.mark.anyio

ALLOW = [redactors.__name__]
MOD = redactors.__name__
TRICKS = [
    f"{MOD}:agentplex.cluster.EngineActor",  # a dotted walk through `import agentplex`
    f"{MOD}:agentplex.agent.CodeAgent",
    f"{MOD}:EngineActor",  # re-exported: defined in agentplex.cluster, not here
    f"{MOD}:CodeAgent",
    f"{MOD}:Actor",
    f"{MOD}:Redactor.Inner",  # nested: a dotted name even when the class is defined here
    f"{MOD}:Redactor.__mro__",
    f"{MOD}:Redactor.__base__",
    f"{MOD}:agentplex",  # a module, not a class
    f"{MOD}:__builtins__",
    f"{MOD}:Any",
    f"{MOD}.agentplex:Actor",  # a module path through an attribute
    f"{MOD}:",
    f":{MOD}",
    "agentplex.cluster:EngineActor",  # not allowed at all
]


REFUSED = r"allow-list|not an actor|expected|dotted|cannot import"


@pytest.mark.parametrize("path", TRICKS)
def test_resolve_refuses_every_trick(path: str) -> None:
    with pytest.raises(SpawnRefused):
        resolve_actor_class(path, ALLOW)


NAMES = ["Redactor", "Alias", "Inner", "agentplex", "cluster", "agent", "EngineActor",
         "CodeAgent", "Actor", "Any", "__mro__", "__base__", "__class__", "__subclasses__",
         "__dict__", "__builtins__", "__init__", "__globals__", "__module__", "redactors",
         "support", "tests", ""]
modules = st.sampled_from([MOD, f"{MOD}.agentplex", f"{MOD}.Redactor", "tests.support",
                           "tests", "agentplex", "agentplex.cluster", "builtins", "",
                           f" {MOD}", f"{MOD}\x00"]) | st.text(max_size=12)
dotted = st.lists(st.sampled_from(NAMES) | st.text(max_size=6), min_size=1,
                  max_size=4).map(".".join)
paths = st.builds(lambda m, sep, c: f"{m}{sep}{c}", modules,
                  st.sampled_from([":", ".", "::", ""]), dotted)


@settings(max_examples=400, deadline=None)
@given(path=paths)
def test_whatever_the_path_only_a_class_defined_in_the_module_comes_back(path: str) -> None:
    """Paths built from what an allowed module holds (re-exports, its imports, nested
    classes, dunders), in any order and separator: each is refused with SpawnRefused, or
    names a top-level actor class that the allowed module itself defines."""
    try:
        found = resolve_actor_class(path, ALLOW)
    except SpawnRefused:
        return
    assert isinstance(found, type) and issubclass(found, Actor)
    assert found.__module__ == MOD and found.__qualname__ == found.__name__
    assert path.partition(":")[2] in ("Redactor", "Alias"), path


def test_classes_defined_in_an_allowed_module_are_admitted() -> None:
    assert resolve_actor_class(f"{MOD}:Redactor", ALLOW) is redactors.Redactor
    assert resolve_actor_class(f"{MOD}:Alias", ALLOW) is redactors.Redactor
    # a package on the list admits classes its modules define, re-exported or not
    assert resolve_actor_class(f"{MOD}:Redactor", ["tests.support"]) is redactors.Redactor


@pytest.mark.parametrize("curve", [False, True], ids=["plain", "curve"])
async def test_remote_spawn_tricks_are_refused(nodes: Any, curve: bool) -> None:
    head_keys, node_keys = KeyPair.generate(), KeyPair.generate()
    env: dict[str, str] = {"SPAWN_ALLOW": MOD}
    if curve:
        head_t = ZmqTransport(keys=head_keys, allow=[node_keys.public])
        env.update({"AGENTPLEX_PUBLIC_KEY": node_keys.public,
                    "AGENTPLEX_SECRET_KEY": node_keys.secret,
                    "HEAD_KEY": head_keys.public, "ALLOW_KEYS": head_keys.public})
    else:
        head_t = ZmqTransport()
    async with Runtime(head_t, default_timeout=20):
        await nodes(head_t.endpoint, node_id="worker", env=env, curve=curve)
        ref = await head_t.spawn("worker", f"{MOD}:Redactor", name="legit")
        assert await ref.call("secret") == "[redacted]"
        for i, path in enumerate(TRICKS):
            with pytest.raises(ActorError, match=REFUSED):
                await head_t.spawn("worker", path, {"model": "scripted:pwned"},
                                   name=f"bad-{i}")
