"""The message every agent sends and receives."""

from __future__ import annotations

import os
import random
import time
from datetime import UTC, datetime
from typing import Any, Literal, overload

from pydantic import BaseModel, ConfigDict, Field

from ._blocks import (
    AudioBlock,
    Block,
    ContentBlock,
    ImageBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    VideoBlock,
)

__all__ = ["Msg", "Role"]

Role = Literal["user", "assistant", "system"]

BlockType = Literal["text", "thinking", "tool_use", "tool_result", "image", "audio", "video"]

_BLOCK_CLASSES: dict[str, type[Block]] = {
    "text": TextBlock,
    "thinking": ThinkingBlock,
    "tool_use": ToolUseBlock,
    "tool_result": ToolResultBlock,
    "image": ImageBlock,
    "audio": AudioBlock,
    "video": VideoBlock,
}


_second: tuple[int, str] = (-1, "")


def _now() -> str:
    """The current UTC time as ``datetime.isoformat`` writes it, to the microsecond
    (``2025-01-01T12:00:00.000001+00:00``); the date part is formatted once a second."""
    global _second
    now = time.time()
    sec = int(now)
    if sec != _second[0]:
        _second = (sec, datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{_second[1]}.{int((now - sec) * 1e6):06d}+00:00"


_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)  # a forked process draws its own ids


def _new_id() -> str:
    """128 random bits as 32 hex digits (a uuid4's size, without its syscall)."""
    return f"{_ids.getrandbits(128):032x}"


FIELDS = frozenset({"id", "name", "role", "content", "metadata", "timestamp"})
"""The fields of a :class:`Msg` (the keys of its ``__dict__``)."""

ROLES = frozenset({"user", "assistant", "system"})
"""The values of :data:`Role`."""

_new = object.__new__
_set = object.__setattr__


def assemble(cls: type[Msg], fields: dict[str, Any], fields_set: set[str]) -> Msg:
    """A message of class ``cls`` holding ``fields`` as its ``__dict__``, without
    validation: for values already checked (or copied from a message), never for input."""
    new = _new(cls)
    _set(new, "__dict__", fields)
    _set(new, "__pydantic_fields_set__", fields_set)
    _set(new, "__pydantic_extra__", None)
    _set(new, "__pydantic_private__", None)
    return new


class Msg(BaseModel):
    """A message: who sent it (``name``, ``role``) and what it says (``content``).

    ``content`` is either a string or a list of content blocks. Dicts given as blocks are
    validated into block models, so ``Msg("bob", [{"type": "text", "text": "hi"}], "user")``
    works. ``Msg(name, content, role)`` may be called positionally, as in AgentScope.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    id: str = Field(default_factory=_new_id)
    name: str
    role: Role
    content: str | list[ContentBlock]
    metadata: dict[str, Any] | None = None
    timestamp: str = Field(default_factory=_now)

    def __init__(
        self,
        name: str | None = None,
        content: str | list[Any] | None = None,
        role: Role | None = None,
        /,
        **data: Any,
    ) -> None:
        if name is not None:
            data["name"] = name
        if content is not None:
            data["content"] = content
        if role is not None:
            data["role"] = role
        super().__init__(**data)

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Msg:
        if isinstance(self.content, str) and self.metadata is None:
            # every field is immutable: a shallow copy is a deep one
            return assemble(type(self), self.__dict__.copy(),
                            self.__pydantic_fields_set__.copy())
        return super().__deepcopy__(memo)

    # -- content helpers -------------------------------------------------------------

    def get_text_content(self, separator: str = "\n") -> str | None:
        """Return the text of the message, its text blocks joined by ``separator``.

        Returns ``None`` when the message holds no text at all.
        """
        if isinstance(self.content, str):
            return self.content
        texts = [b.text for b in self.content if isinstance(b, TextBlock)]
        return separator.join(texts) if texts else None

    @overload
    def get_content_blocks(self, block_type: Literal["text"]) -> list[TextBlock]: ...
    @overload
    def get_content_blocks(self, block_type: Literal["thinking"]) -> list[ThinkingBlock]: ...
    @overload
    def get_content_blocks(self, block_type: Literal["tool_use"]) -> list[ToolUseBlock]: ...
    @overload
    def get_content_blocks(self, block_type: Literal["tool_result"]) -> list[ToolResultBlock]: ...
    @overload
    def get_content_blocks(self, block_type: None = None) -> list[Block]: ...
    @overload
    def get_content_blocks(self, block_type: BlockType) -> list[Block]: ...

    def get_content_blocks(self, block_type: BlockType | None = None) -> list[Any]:
        """Return the content as blocks, optionally only those of ``block_type``.

        A string content counts as one text block.
        """
        if block_type is not None and block_type not in _BLOCK_CLASSES:
            raise ValueError(f"unknown block type {block_type!r}")
        blocks: list[Block] = (
            [TextBlock(text=self.content)] if isinstance(self.content, str) else list(self.content)
        )
        if block_type is None:
            return blocks
        return [b for b in blocks if b.type == block_type]

    def has_content_blocks(self, block_type: BlockType | None = None) -> bool:
        """Whether the message holds at least one block (of ``block_type``, if given)."""
        return bool(self.get_content_blocks(block_type))

    # -- JSON forms ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict; :meth:`from_dict` reverses it exactly."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Msg:
        """Build a message from :meth:`to_dict`'s output, validating every field."""
        return cls.model_validate(data)

    def __repr__(self) -> str:
        text = self.get_text_content() if isinstance(self.content, str) else None
        shown = text if text is not None else f"<{len(self.content)} blocks>"
        if len(shown) > 60:
            shown = shown[:57] + "..."
        return f"Msg(name={self.name!r}, role={self.role!r}, content={shown!r})"
