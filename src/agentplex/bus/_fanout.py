"""Where the answers of one CALL_MANY frame go on the calling side, for
:meth:`Calls.call_many <agentplex.bus._calls.Calls.call_many>`: straight into the caller's
lists of replies and errors, without an envelope or a future per call."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..runtime import ActorNotFound
from ..runtime.lowlevel import Envelope
from ._errors import FrameError
from ._frames import error_from_wire

__all__ = ["FanOut"]


class FanOut:
    """The calls of one CALL_MANY frame to ``node``: call ``k`` of the frame is call
    ``at[k]`` of the fan-out, whose reply goes to ``replies[at[k]]`` or error to
    ``errors[at[k]]``. A call whose actor is not on the node any more is handed to ``moved``
    (which sends it again, as an envelope of its own, kept in ``retry``)."""

    __slots__ = ("_got", "at", "corr", "errors", "left", "moved", "node", "replies", "retry")

    def __init__(self, node: str, corr: int, at: Sequence[int], replies: list[Any],
                 errors: dict[int, BaseException],
                 moved: Callable[[int, ActorNotFound], Envelope]) -> None:
        self.node = node
        self.corr = corr
        self.at = at
        self.replies = replies
        self.errors = errors
        self.moved = moved
        self.retry: list[tuple[int, Envelope]] = []
        self.left = len(at)
        self._got = bytearray(len(at))

    def answer(self, items: Any) -> None:
        """A chunk of the node's answer: ``[[k, ok, reply or error], ...]``."""
        if not isinstance(items, list):
            raise FrameError("a call_many answer is not a list")
        at, got, n = self.at, self._got, len(self.at)
        for item in items:
            if type(item) is not list or len(item) != 3:
                raise FrameError("malformed call_many answer")
            k, ok, value = item
            if type(k) is not int or not 0 <= k < n:
                raise FrameError("malformed call_many answer")
            if got[k]:
                continue
            got[k] = 1
            self.left -= 1
            if ok is True:
                self.replies[at[k]] = value
                continue
            failure = error_from_wire(value)
            if isinstance(failure, ActorNotFound):  # the actor may have moved: ask again
                self.retry.append((at[k], self.moved(at[k], failure)))
            else:
                self.errors[at[k]] = failure

    def fail(self, err: Callable[[int], BaseException]) -> None:
        """Every call not answered yet fails with ``err(i)``."""
        if not self.left:
            return
        got = self._got
        for k, i in enumerate(self.at):
            if not got[k]:
                got[k] = 1
                self.errors[i] = err(i)
        self.left = 0
