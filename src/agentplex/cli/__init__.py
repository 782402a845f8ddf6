"""The ``agentplex`` command."""

from ..sim import NodesFailed
from ._app import app, main

__all__ = ["NodesFailed", "app", "main"]
