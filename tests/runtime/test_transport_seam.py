"""The runtime-transport seam stays closed: code outside ``agentplex/runtime`` reaches the
runtime only through its public names, and the methods ``_transport.py`` lists for
transports exist. Inside, cells and refs call only what ``_runtime.py`` lists for them."""

import ast
import asyncio
import re
from pathlib import Path
from typing import Any

import anyio
import pytest

import agentplex
from agentplex.runtime import Actor, ActorNotFound, MailboxFull, Runtime
from agentplex.runtime.lowlevel import Envelope, Kind

SRC = Path(agentplex.__file__).parent
RUNTIME = SRC / "runtime"


def _modules(root: Path) -> list[Path]:
    return sorted(root.rglob("*.py"))


def _private_names_of_runtime() -> set[str]:
    """Every ``_name`` the runtime defines: methods, attributes set on ``self``, slots."""
    names: set[str] = set()
    for path in _modules(RUNTIME):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.add(node.value)  # __slots__ entries
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def _is_self(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id in ("self", "cls")


def _private_module_imports(path: Path, package: str) -> list[str]:
    """Imports of ``agentplex.<package>._private`` modules in ``path``."""
    found = []
    pattern = re.compile(rf"^(agentplex\.|\.{{1,2}}){package}\._\w+")
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            if pattern.match(module):
                found.append(f"{path.relative_to(SRC)}:{node.lineno} from {module}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if pattern.match(alias.name):
                    found.append(f"{path.relative_to(SRC)}:{node.lineno} import {alias.name}")
    return found


def test_nothing_outside_the_runtime_reads_its_private_names() -> None:
    """Transports (the in-process one included) and everything else outside the runtime."""
    private = _private_names_of_runtime()
    assert {"_cells", "_topics", "_route", "_cancel"} <= private  # the scan sees them
    offences = []
    for path in _modules(SRC):
        if RUNTIME in path.parents and path.name != "_transport.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Attribute) and node.attr in private
                    and not _is_self(node.value)):
                offences.append(f"{path.relative_to(SRC)}:{node.lineno} .{node.attr}")
    assert offences == []


PACKAGES = sorted(p.name for p in SRC.iterdir() if (p / "__init__.py").exists())


def test_no_package_imports_another_packages_private_modules() -> None:
    assert {"runtime", "bus", "model", "cluster", "tracing"} <= set(PACKAGES)
    offences = []
    for package in PACKAGES:
        for path in _modules(SRC):
            if (SRC / package) not in path.parents:
                offences += _private_module_imports(path, package)
    assert offences == []


def test_the_methods_listed_for_transports_are_public_runtime_methods() -> None:
    doc = (RUNTIME / "_transport.py").read_text().split('"""')[1]
    listed = set(re.findall(r"``(?:await )?runtime\.(\w+)", doc))
    assert {"offer_local", "deliver_local", "publish_local", "interrupt_local", "accepts",
            "names", "topics"} <= listed
    runtime = Runtime()
    for name in listed:
        assert not name.startswith("_")
        assert hasattr(runtime, name), name


def _runtime_attributes(path: Path) -> list[tuple[int, str, bool]]:
    """``(line, name, stored)`` of every ``<...>runtime.<name>`` in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute):
            owner = node.value
            owner_name = owner.id if isinstance(owner, ast.Name) else (
                owner.attr if isinstance(owner, ast.Attribute) else "")
            if owner_name in ("runtime", "_runtime"):
                stored = not isinstance(node.ctx, ast.Load)
                found.append((node.lineno, node.attr, stored))  # ``+=`` stores too
    return found


def test_cells_and_refs_use_only_the_runtime_methods_listed_for_them() -> None:
    """``_runtime.py``'s docstring lists what cells and refs call on the runtime; they call
    nothing else of it and set none of its attributes."""
    doc = (RUNTIME / "_runtime.py").read_text().split('"""')[1]
    listed = set(re.findall(r"``runtime\.(\w+)", doc))
    assert {"mark_busy", "mark_settled", "call_deadlines", "_route", "_cancel"} <= listed
    runtime = Runtime()
    for name in listed:
        assert hasattr(runtime, name), name
    offences = []
    for module in ("_cell.py", "_ref.py"):
        for line, name, stored in _runtime_attributes(RUNTIME / module):
            if stored or (name.startswith("_") and name not in listed):
                offences.append(f"{module}:{line} .{name}{' set' if stored else ''}")
    assert offences == []


class _Slow(Actor):
    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.seen: list[Any] = []

    async def handle_call(self, message: Any) -> Any:
        await self.gate.wait()
        self.seen.append(message)
        return message

    async def handle_publish(self, topic: str, message: Any) -> None:
        self.seen.append((topic, message))


@pytest.mark.anyio
async def test_the_methods_a_transport_calls_on_the_runtime() -> None:
    async with Runtime(mailbox_size=1) as rt:
        slow = _Slow()
        await rt.spawn(slow, "slow")
        assert rt.accepts("slow") and not rt.accepts("nobody")
        loop = asyncio.get_running_loop()
        first = Envelope(Kind.CALL, "slow", 1, waiter=loop.create_future())
        assert rt.offer_local(first)
        await asyncio.sleep(0)  # the handler takes it and waits at the gate
        queued = Envelope(Kind.CALL, "slow", 2, waiter=loop.create_future())
        assert rt.offer_local(queued)
        assert not rt.offer_local(Envelope(Kind.TELL, "slow", 3))  # mailbox of 1 is full
        with pytest.raises(MailboxFull):
            await rt.deliver_local(Envelope(Kind.TELL, "slow", 3), 0.01)
        with pytest.raises(ActorNotFound):
            rt.offer_local(Envelope(Kind.TELL, "nobody", 0))
        with pytest.raises(ActorNotFound):
            await rt.deliver_local(Envelope(Kind.TELL, "nobody", 0), 1)
        assert rt.interrupt_local(first)  # its caller gave up: the running handler stops
        assert not rt.interrupt_local(Envelope(Kind.CALL, "nobody", 0))
        slow.gate.set()
        with anyio.fail_after(5):
            assert await queued.waiter == 2
        assert first.waiter.cancelled()
        await rt.subscribe("news", "slow")
        assert rt.topics() == ["news"] and rt.names() == ["slow"]
        await rt.publish_local(Envelope(Kind.PUBLISH, "", "hello", topic="news"), 1)
        await rt.idle()
        assert slow.seen == [2, ("news", "hello")]
