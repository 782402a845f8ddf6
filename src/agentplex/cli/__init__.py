"""The ``agentplex`` command."""

from ..sim import NodesFailed, NotUserCode
from ._app import app, main

__all__ = ["NodesFailed", "NotUserCode", "app", "main"]
