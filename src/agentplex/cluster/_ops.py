"""The head's operations: one table of the requests a cluster manager answers, each a typed
model carrying the spawn options, and the answer envelope that brings a cluster error back
to the caller as its own type.

A request travels as ``{"op": NAME, **fields}``; the answer as ``{"ok": value}`` or
``{"error": {"type": ..., "message": ..., ...}}``. :func:`ask` sends one and raises what
came back; :func:`answer` runs a handler and wraps what it returned or raised. Node
agents answer their head in the same envelope.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from ..bus import SpawnRefused
from ..runtime import ActorExists, ActorRef
from ._errors import (
    CodeRefused,
    CodeRejected,
    NodeFailed,
    NodesMissing,
    NotSupported,
    Unschedulable,
)
from ._options import BatchOptions, SpawnOptions
from ._resources import NodeSpec, Resources
from ._scheduler import Placement

__all__ = [
    "REQUESTS",
    "Checkpoint",
    "EndDriver",
    "NodeExited",
    "PlacementOf",
    "Recover",
    "Respawn",
    "Register",
    "Request",
    "Serve",
    "ServedStatus",
    "Spawn",
    "SpawnMany",
    "Status",
    "Stop",
    "StopBatch",
    "Unserve",
    "WaitForNodes",
    "answer",
    "ask",
    "error_from_wire",
    "error_to_wire",
    "placement_from_wire",
    "placement_to_wire",
    "request_from_wire",
    "unwrap",
]


class Request(BaseModel):
    """One operation of the head; ``op`` names it on the wire."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    op: ClassVar[str]

    def to_wire(self) -> dict[str, Any]:
        """The request as msgpack-able data (big ``Any`` fields are passed as they are)."""
        data: dict[str, Any] = {"op": self.op}
        for name in type(self).model_fields:
            value = getattr(self, name)
            data[name] = value.model_dump() if isinstance(value, BaseModel) else value
        return data


class Register(Request):
    """A node process joins: its node agent answers at ``node:<spec.id>``."""

    op: ClassVar[str] = "register"
    spec: NodeSpec


class Spawn(Request):
    op: ClassVar[str] = "spawn"
    target: str
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    name: str | None = None
    options: SpawnOptions = Field(default_factory=SpawnOptions)
    driver: str | None = None
    """The caller's driver actor when the spawn belongs to a run it drives (see
    :class:`EndDriver`)."""


class SpawnMany(Request):
    op: ClassVar[str] = "spawn_many"
    target: str
    args: Any
    """A count, or each actor's positional arguments (a list of lists; not validated
    here: a batch may carry a million)."""
    names: Any = None
    """A prefix (a string), the names as :func:`~._shares.names_to_wire` writes them, or
    ``None``."""
    kwargs: dict[str, Any] = Field(default_factory=dict)
    options: BatchOptions = Field(default_factory=BatchOptions)
    driver: str | None = None


class Stop(Request):
    op: ClassVar[str] = "stop"
    name: str


class StopBatch(Request):
    op: ClassVar[str] = "stop_batch"
    names: Any
    """The batch's names (or its first) as :func:`~._shares.names_to_wire` writes them."""


class Recover(Request):
    op: ClassVar[str] = "recover"
    names: list[str]


class Respawn(Request):
    """Start the lost actors of ``names`` again, as created (the run's driver restores
    their state)."""

    op: ClassVar[str] = "respawn"
    names: list[str]


class Checkpoint(Request):
    op: ClassVar[str] = "checkpoint"
    name: str | None = None
    timeout: float = 10.0


class Status(Request):
    op: ClassVar[str] = "status"


class PlacementOf(Request):
    op: ClassVar[str] = "placement_of"
    name: str


class Serve(Request):
    op: ClassVar[str] = "serve"
    model: str
    engine: str = "agentplex"
    resources: Resources | None = None
    replicas: int = 1
    options: dict[str, Any] = Field(default_factory=dict)


class Unserve(Request):
    op: ClassVar[str] = "unserve"
    name: str


class ServedStatus(Request):
    op: ClassVar[str] = "served_status"


class WaitForNodes(Request):
    op: ClassVar[str] = "wait_for_nodes"
    count: int = Field(ge=0)
    timeout: float = Field(ge=0)


class EndDriver(Request):
    """A driver ends: the head stops what it spawned for its runs, except what it
    detached. The head also does so by itself when the driver's process is lost."""

    op: ClassVar[str] = "end_driver"
    driver: str


class NodeExited(Request):
    """What launched a node says its process ended: the head, once the node does not
    answer a ping either, declares it dead at once (its actors restarted or lost, the bus
    told), rather than after ``dead_after`` seconds of silence."""

    op: ClassVar[str] = "node_exited"
    node: str = Field(max_length=200)
    reason: str = Field(max_length=500)


REQUESTS: dict[str, type[Request]] = {r.op: r for r in (
    Register, Spawn, SpawnMany, Stop, StopBatch, Recover, Respawn, Checkpoint, Status, PlacementOf,
    Serve, Unserve, ServedStatus, WaitForNodes, EndDriver, NodeExited)}
"""Every operation of the head, by wire name."""


def request_from_wire(message: Any) -> Request:
    """The request ``message`` stands for; ``ValueError`` for an unknown or malformed one."""
    kind = REQUESTS.get(str(message.get("op"))) if isinstance(message, dict) else None
    if kind is None:
        raise ValueError(f"unknown cluster request {message!r:.200}")
    return kind.model_validate({k: v for k, v in message.items() if k != "op"})


def placement_to_wire(placement: Placement | None) -> dict[str, Any] | None:
    """A :class:`Placement` as msgpack-able data."""
    if placement is None:
        return None
    return {"id": placement.id, "node_id": placement.node_id,
            "gpu_indices": list(placement.gpu_indices),
            "resources": placement.resources.model_dump(), "count": placement.count}


def placement_from_wire(data: dict[str, Any] | None) -> Placement | None:
    """The :class:`Placement` :func:`placement_to_wire` wrote."""
    if data is None:
        return None
    return Placement(data.get("id", 0), data["node_id"], tuple(data.get("gpu_indices", ())),
                     Resources.model_validate(data.get("resources") or {}),
                     data.get("count", 1))


# -- errors across the bus --------------------------------------------------------------------

_ERRORS: dict[str, tuple[type[BaseException], Callable[[dict[str, Any]], Exception]]] = {
    "Unschedulable": (Unschedulable, lambda d: Unschedulable(
        d["message"], retryable=bool(d.get("retryable")))),
    "NodeFailed": (NodeFailed, lambda d: NodeFailed(d["message"])),
    "NodesMissing": (NodesMissing, lambda d: NodesMissing(
        d["message"], joined=int(d.get("joined", 0)))),
    "NotSupported": (NotSupported, lambda d: NotSupported(d["message"])),
    "ActorExists": (ActorExists, lambda d: ActorExists(d["message"], actor=d.get("actor"))),
    "SpawnRefused": (SpawnRefused, lambda d: SpawnRefused(d["message"])),
    "CodeRefused": (CodeRefused, lambda d: CodeRefused(d["message"])),
    "CodeRejected": (CodeRejected, lambda d: CodeRejected(d["message"])),
    "ValueError": (ValueError, lambda d: ValueError(d["message"])),
}
"""The errors that cross the bus as their own type, most specific first (``ActorExists``
is also a ``ValueError``)."""


def error_to_wire(exc: BaseException) -> dict[str, Any] | None:
    """``exc`` as data when it is a cluster error the caller should get as its type."""
    for name, (kind, _) in _ERRORS.items():
        if isinstance(exc, kind):
            data: dict[str, Any] = {"type": name, "message": str(exc)}
            for attr in ("retryable", "actor", "joined"):
                if hasattr(exc, attr):
                    data[attr] = getattr(exc, attr)
            return data
    return None


def error_from_wire(data: dict[str, Any]) -> Exception:
    """The error ``data`` (from :func:`error_to_wire`) describes."""
    entry = _ERRORS.get(str(data.get("type")))
    if entry is None:
        return RuntimeError(f"{data.get('type')}: {data.get('message')}")
    return entry[1](data)


async def answer(handled: Awaitable[Any]) -> dict[str, Any]:
    """What ``handled`` returned as ``{"ok": value}``, or a cluster error it raised as
    ``{"error": ...}``; any other error propagates (the caller gets a ``HandlerError``)."""
    try:
        return {"ok": await handled}
    except Exception as exc:
        wire = error_to_wire(exc)
        if wire is None:
            raise
        return {"error": wire}


def unwrap(reply: Any) -> Any:
    """The value of an answer envelope; raises the error it carries."""
    if isinstance(reply, dict) and "error" in reply:
        raise error_from_wire(reply["error"])
    if not isinstance(reply, dict) or "ok" not in reply:
        raise ValueError(f"malformed cluster answer {reply!r:.200}")
    return reply["ok"]


async def ask(ref: ActorRef, request: Request | dict[str, Any], *, timeout: float) -> Any:
    """Send ``request`` to the manager (or a node agent) behind ``ref`` and return its
    answer's value, raising a cluster error it carries as its own type."""
    message = request.to_wire() if isinstance(request, Request) else request
    return unwrap(await ref.call(message, timeout=timeout))
