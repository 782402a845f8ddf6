"""The ``agentplex`` command."""

from ._app import app, main
from ._errors import NodesFailed

__all__ = ["NodesFailed", "app", "main"]
