"""Middleware around an agent's ``reply`` and ``observe``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from ._agent import AgentBase

__all__ = ["AgentCall", "Middleware", "Next"]


@dataclass
class AgentCall:
    """One call of ``reply`` or ``observe`` as middleware sees it.

    Middleware may rewrite ``args`` / ``kwargs`` before calling ``next``, or the result
    after it.
    """

    agent: AgentBase
    method: Literal["reply", "observe"]
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def msg(self) -> Any:
        """The first argument (the message), or ``None``."""
        return self.args[0] if self.args else self.kwargs.get("msg")


Next = Callable[[AgentCall], Awaitable[Any]]
"""Calls the next middleware (or, for the innermost one, the method itself)."""


class Middleware(Protocol):
    """``async def mw(call: AgentCall, next: Next) -> Any``.

    Middleware registered first runs outermost. Not calling ``next`` short-circuits the
    method: the middleware's return value becomes the result.
    """

    def __call__(self, call: AgentCall, next: Next, /) -> Awaitable[Any]: ...
