"""Serving: the OpenAI-compatible HTTP server over any chat model (``agentplex serve``), and
the launchers of inference engines' own servers that the cluster places and supervises.

``create_app`` builds the ASGI app, :class:`ModelServer` runs it inside a program,
:func:`serve` runs it until a signal (:func:`run_server`: on a fresh event loop, uvloop's
when installed). The wire's pydantic models live in ``agentplex.serving.schema``. The HTTP
parts need the ``serve`` extra (Starlette, uvicorn, prometheus_client) and are imported on
first use; the engine launchers need nothing more than the standard library.
"""

import typing as _typing

from ._engines import ENGINES, EngineConfig, EngineName, EngineProcess, engine_command
from ._errors import BadChatRequest, QueueFull, ServerFailed

if _typing.TYPE_CHECKING:
    from ._app import OpenAIServer, create_app
    from ._guard import HttpLimits
    from ._server import ModelServer, run_server, serve

__all__ = [
    "BadChatRequest",
    "ENGINES",
    "EngineConfig",
    "EngineName",
    "EngineProcess",
    "HttpLimits",
    "ModelServer",
    "OpenAIServer",
    "QueueFull",
    "ServerFailed",
    "create_app",
    "engine_command",
    "run_server",
    "serve",
]

_HTTP = {"HttpLimits": "_guard", "OpenAIServer": "_app", "create_app": "_app",
         "ModelServer": "_server", "run_server": "_server", "serve": "_server"}


def __getattr__(name: str) -> _typing.Any:
    """Import the HTTP server (and Starlette) on first use."""
    module = _HTTP.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
