"""Agent memory: :class:`MemoryBase` and :class:`InMemoryMemory` (messages with marks)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable
from typing import Any

from ..message import Msg
from ._state import StateModule

__all__ = ["InMemoryMemory", "MemoryBase"]


class MemoryBase(StateModule):
    """What an agent remembers: an ordered list of messages, each with a set of marks."""

    @abstractmethod
    async def add(self, memories: Msg | Iterable[Msg] | None, marks: str | Iterable[str] = (),
                  allow_duplicates: bool = False) -> None:
        """Append messages (tagged with ``marks``)."""

    @abstractmethod
    async def get_memory(self, mark: str | None = None,
                         exclude_mark: str | None = None) -> list[Msg]:
        """The messages, optionally only those with ``mark`` / without ``exclude_mark``."""

    @abstractmethod
    async def delete(self, ids: str | Iterable[str]) -> int:
        """Remove messages by id; returns how many were removed."""

    @abstractmethod
    async def delete_by_mark(self, mark: str | Iterable[str]) -> int:
        """Remove every message carrying ``mark`` (any of them); returns how many."""

    @abstractmethod
    async def size(self) -> int:
        """How many messages are remembered."""

    @abstractmethod
    async def clear(self) -> None:
        """Forget everything."""


class InMemoryMemory(MemoryBase):
    """Memory held in a Python list.

    A message already present (same ``id``) is not added twice unless
    ``allow_duplicates``; marks given again are merged into its marks. Marks tag messages
    for later selection (``get_memory(mark="hint")``) or removal (``delete_by_mark``).
    """

    def __init__(self) -> None:
        self.content: list[tuple[Msg, set[str]]] = []
        self.register_state("content", _dump, _load)

    async def add(self, memories: Msg | Iterable[Msg] | None, marks: str | Iterable[str] = (),
                  allow_duplicates: bool = False) -> None:
        if memories is None:
            return
        msgs = [memories] if isinstance(memories, Msg) else list(memories)
        new_marks = {marks} if isinstance(marks, str) else set(marks)
        index = {msg.id: tags for msg, tags in self.content}
        for msg in msgs:
            if not isinstance(msg, Msg):
                raise TypeError(f"memory holds Msg objects, not {type(msg).__name__}")
            if msg.id in index and not allow_duplicates:
                index[msg.id].update(new_marks)
                continue
            tags = set(new_marks)
            self.content.append((msg, tags))
            index[msg.id] = tags

    async def get_memory(self, mark: str | None = None,
                         exclude_mark: str | None = None) -> list[Msg]:
        return [msg for msg, tags in self.content
                if (mark is None or mark in tags)
                and (exclude_mark is None or exclude_mark not in tags)]

    async def delete(self, ids: str | Iterable[str]) -> int:
        gone = {ids} if isinstance(ids, str) else set(ids)
        before = len(self.content)
        self.content = [(m, t) for m, t in self.content if m.id not in gone]
        return before - len(self.content)

    async def delete_by_mark(self, mark: str | Iterable[str]) -> int:
        marks = {mark} if isinstance(mark, str) else set(mark)
        before = len(self.content)
        self.content = [(m, t) for m, t in self.content if not t & marks]
        return before - len(self.content)

    async def update_marks(self, mark: str, ids: str | Iterable[str] | None = None,
                           remove: bool = False) -> int:
        """Add ``mark`` to (or, with ``remove``, take it from) the messages ``ids`` (all when
        ``None``); returns how many messages changed."""
        wanted = None if ids is None else ({ids} if isinstance(ids, str) else set(ids))
        changed = 0
        for msg, tags in self.content:
            if (wanted is not None and msg.id not in wanted) or (mark in tags) != remove:
                continue
            (tags.discard if remove else tags.add)(mark)
            changed += 1
        return changed

    async def get_marks(self, msg_id: str) -> set[str]:
        """The marks of message ``msg_id`` (empty when it is not remembered)."""
        return next((set(t) for m, t in self.content if m.id == msg_id), set())

    async def size(self) -> int:
        return len(self.content)

    async def clear(self) -> None:
        self.content = []

    def __len__(self) -> int:
        return len(self.content)

    def __repr__(self) -> str:
        return f"InMemoryMemory({len(self.content)} messages)"


def _dump(content: list[tuple[Msg, set[str]]]) -> list[dict[str, Any]]:
    return [{"msg": msg.to_dict(), "marks": sorted(tags)} for msg, tags in content]


def _load(data: list[dict[str, Any]]) -> list[tuple[Msg, set[str]]]:
    return [(Msg.from_dict(item["msg"]), set(item.get("marks", []))) for item in data]
