"""Typed errors of the actor runtime.

The tree::

    AgentplexError
    └── ActorError         ``actor`` names the actor concerned
        ├── ActorNotFound  no actor of that name is known
        ├── ActorExists    an actor of that name already runs (also a ValueError)
        ├── ActorStopped   the actor stopped before it could serve the message
        ├── CallTimeout    no reply within the call's timeout (also a TimeoutError)
        ├── MailboxFull    the mailbox stayed full for the whole timeout
        ├── PeerLost       the process hosting the actor stopped answering
        └── HandlerError   the actor's handler raised (``exc_type``, ``remote_traceback``)
"""

from __future__ import annotations

from ..errors import AgentplexError

__all__ = [
    "ActorError",
    "ActorExists",
    "ActorNotFound",
    "ActorStopped",
    "CallTimeout",
    "HandlerError",
    "MailboxFull",
    "PeerLost",
]


class ActorError(AgentplexError):
    """Base of every runtime error; ``actor`` names the actor concerned."""

    def __init__(self, message: str, *, actor: str | None = None) -> None:
        super().__init__(message)
        self.actor = actor


class ActorNotFound(ActorError):
    """No actor of that name is known to this runtime or its transport."""


class ActorExists(ActorError, ValueError):
    """An actor of that name already runs."""


class ActorStopped(ActorError):
    """The actor stopped (or is stopping) before it could serve the message."""


class CallTimeout(ActorError, TimeoutError):
    """The reply did not arrive within the call's timeout."""


class MailboxFull(ActorError):
    """The actor's mailbox stayed full for the whole timeout."""


class PeerLost(ActorError):
    """The process hosting the actor stopped answering while a call waited on it."""


class HandlerError(ActorError):
    """The actor's handler raised. ``exc_type`` and ``remote_traceback`` describe the error.

    In-process the original exception is also chained as ``__cause__``; across processes
    only its type name, message and formatted traceback travel.
    """

    def __init__(
        self,
        message: str,
        *,
        actor: str | None = None,
        exc_type: str = "Exception",
        remote_traceback: str = "",
    ) -> None:
        super().__init__(f"{exc_type} in actor {actor!r}: {message}", actor=actor)
        self.exc_type = exc_type
        self.remote_message = message
        self.remote_traceback = remote_traceback

    def __reduce__(self) -> tuple[object, ...]:  # keep pickling/copying sane for users
        return (
            _rebuild_handler_error,
            (self.remote_message, self.actor, self.exc_type, self.remote_traceback),
        )


def _rebuild_handler_error(
    message: str, actor: str | None, exc_type: str, remote_traceback: str
) -> HandlerError:
    return HandlerError(
        message, actor=actor, exc_type=exc_type, remote_traceback=remote_traceback
    )
