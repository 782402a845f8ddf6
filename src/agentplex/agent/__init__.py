"""Agents: actors that reply, observe and print."""

from ._agent import HUB_TOPIC_PREFIX, AgentBase
from ._middleware import AgentCall, Middleware, Next
from ._state import StateModule

__all__ = ["HUB_TOPIC_PREFIX", "AgentBase", "AgentCall", "Middleware", "Next", "StateModule"]
