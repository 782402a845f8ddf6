"""Names of many actors at once: :class:`NameRange` (``player-0`` … ``player-99999``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import overload

__all__ = ["NameRange", "split_name"]


def split_name(name: str) -> tuple[str, int] | None:
    """``"player-42"`` as ``("player-", 42)``; ``None`` when the name does not end in a
    number written without leading zeros (so it cannot be in any :class:`NameRange`)."""
    prefix = name.rstrip("0123456789")
    digits = name[len(prefix):]
    if not digits or (digits[0] == "0" and len(digits) > 1):
        return None
    return prefix, int(digits)


class NameRange(Sequence[str]):
    """The names ``f"{prefix}{i}"`` for ``start <= i < stop``, without a string each.

    What :meth:`Runtime.spawn_many <agentplex.runtime.Runtime.spawn_many>` and the cluster's
    ``spawn_many`` take and give for generated names: a transport announces a whole range
    in one message, and a directory keeps it as one entry. ``prefix`` must not end in a
    digit (``"p1"`` + ``"2"`` would read as ``"p"`` + ``"12"``).
    """

    __slots__ = ("prefix", "start", "stop")

    def __init__(self, prefix: str, start: int, stop: int) -> None:
        if prefix[-1:].isdigit():
            raise ValueError(f"a name prefix must not end in a digit: {prefix!r}")
        if not 0 <= start <= stop:
            raise ValueError(f"bad name range {start}..{stop}")
        self.prefix = prefix
        self.start = start
        self.stop = stop

    def __len__(self) -> int:
        return self.stop - self.start

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[str]: ...

    def __getitem__(self, i: int | slice) -> str | Sequence[str]:
        """A name; a slice is a :class:`NameRange` again (a list of names with a step)."""
        n = self.stop - self.start
        if isinstance(i, slice):
            a, b, step = i.indices(n)
            if step != 1:
                return [f"{self.prefix}{self.start + j}" for j in range(a, b, step)]
            return NameRange(self.prefix, self.start + a, self.start + max(a, b))
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        return f"{self.prefix}{self.start + i}"

    def __iter__(self) -> Iterator[str]:
        prefix = self.prefix
        return (f"{prefix}{i}" for i in range(self.start, self.stop))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.position(name) is not None

    def position(self, name: str) -> int | None:
        """The position of ``name`` in the range, or ``None``."""
        parts = split_name(name)
        if parts is None or parts[0] != self.prefix or not self.start <= parts[1] < self.stop:
            return None
        return parts[1] - self.start

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NameRange) and (self.prefix, self.start, self.stop) == (
            other.prefix, other.start, other.stop)

    def __hash__(self) -> int:
        return hash((self.prefix, self.start, self.stop))

    def __repr__(self) -> str:
        return f"NameRange({self.prefix!r}, {self.start}, {self.stop})"

    def to_wire(self) -> list[object]:
        """``[prefix, start, stop]``, msgpack-able."""
        return [self.prefix, self.start, self.stop]
