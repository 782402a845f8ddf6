"""Serving: the OpenAI-compatible HTTP server over any chat model (``agentplex serve``), and
the launchers of inference engines' own servers that the cluster places and supervises.

``create_app`` builds the ASGI app, :class:`ModelServer` runs it inside a program,
:func:`serve` runs it until a signal (:func:`run_server`: on
a fresh event loop, uvloop's when installed). The wire's pydantic models live in
``agentplex.serving.schema``.
"""

from ._app import OpenAIServer, create_app
from ._server import ModelServer, run_server, serve

__all__ = ["ModelServer", "OpenAIServer", "create_app", "run_server", "serve"]
