""":class:`PerActor`: one message per actor, for :meth:`Runtime.call_many`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

__all__ = ["PerActor"]


class PerActor(Sequence[Any]):
    """The messages of a fan-out that gives each actor its own:
    ``await rt.call_many(refs, PerActor(messages))`` calls ``refs[i]`` with
    ``messages[i]`` (a :exc:`ValueError` if the lengths differ).

    A plain list passed to ``call_many`` is *one* message for every actor (an agent's
    ``reply`` takes a list of ``Msg``), hence the wrapper. Slicing gives a ``PerActor``
    again, so a caller that works in windows slices refs and messages alike.
    """

    __slots__ = ("messages",)

    def __init__(self, messages: Iterable[Any]) -> None:
        self.messages: list[Any] = messages if type(messages) is list else list(messages)

    def __len__(self) -> int:
        return len(self.messages)

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> PerActor: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return PerActor(self.messages[index])
        return self.messages[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.messages)

    def __repr__(self) -> str:
        return f"PerActor(<{len(self.messages)} messages>)"
