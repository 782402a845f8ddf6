"""The ``agentplex`` command."""

from ._app import app, main
from ._errors import NodesFailed, NotUserCode

__all__ = ["NodesFailed", "NotUserCode", "app", "main"]
