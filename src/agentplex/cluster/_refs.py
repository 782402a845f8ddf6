"""The refs of a batch (:class:`ActorRefs`): what ``spawn_many`` returns on every face of
the cluster."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import overload

from ..runtime import ActorRef, Runtime

__all__ = ["ActorRefs"]


class ActorRefs(Sequence[ActorRef]):
    """The refs of a batch, made on access (a million refs cost nothing until used)."""

    __slots__ = ("names", "runtime")

    def __init__(self, runtime: Runtime, names: Sequence[str]) -> None:
        self.runtime = runtime
        self.names = names

    def __len__(self) -> int:
        return len(self.names)

    @overload
    def __getitem__(self, i: int) -> ActorRef: ...

    @overload
    def __getitem__(self, i: slice) -> ActorRefs: ...

    def __getitem__(self, i: int | slice) -> ActorRef | ActorRefs:
        if isinstance(i, slice):
            return ActorRefs(self.runtime, self.names[i])
        return self.runtime.ref(self.names[i])

    def __iter__(self) -> Iterator[ActorRef]:
        ref = self.runtime.ref
        return (ref(n) for n in self.names)

    def __repr__(self) -> str:
        return f"<ActorRefs of {len(self)} actors>"
