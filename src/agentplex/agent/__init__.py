"""Agents: actors that reply, observe and print; ReAct and user agents; memory; sessions."""

from ._agent import AgentBase
from ._memory import InMemoryMemory, MemoryBase
from ._middleware import AgentCall, Middleware, Next
from ._react import FINISH_TOOL, ReActAgent
from ._session import load_session, save_session
from ._state import StateModule
from ._user import UserAgent, UserInput

__all__ = [
    "AgentBase",
    "AgentCall",
    "FINISH_TOOL",
    "InMemoryMemory",
    "MemoryBase",
    "Middleware",
    "Next",
    "ReActAgent",
    "StateModule",
    "UserAgent",
    "UserInput",
    "load_session",
    "save_session",
]
