"""Agents: actors that reply, observe and print; ReAct, code and user agents; memory; sessions."""

from ._agent import AgentBase
from ._code import CODE_SYSTEM_PROMPT, CodeAgent
from ._context import TruncationPolicy, turn_groups
from ._errors import SandboxError
from ._memory import InMemoryMemory, MemoryBase
from ._middleware import AgentCall, Middleware, Next
from ._react import FINISH_TOOL, ReActAgent
from ._sandbox import DEFAULT_IMPORTS, PythonSandbox, SandboxResult
from ._session import load_session, save_session
from ._state import StateModule
from ._user import UserAgent, UserInput

__all__ = [
    "AgentBase",
    "AgentCall",
    "CODE_SYSTEM_PROMPT",
    "CodeAgent",
    "DEFAULT_IMPORTS",
    "FINISH_TOOL",
    "InMemoryMemory",
    "MemoryBase",
    "Middleware",
    "Next",
    "PythonSandbox",
    "ReActAgent",
    "SandboxError",
    "SandboxResult",
    "StateModule",
    "TruncationPolicy",
    "UserAgent",
    "UserInput",
    "load_session",
    "save_session",
    "turn_groups",
]
