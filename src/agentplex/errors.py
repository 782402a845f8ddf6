"""The root of every error agentplex raises on purpose.

Each package defines its own errors in its errors module and derives them from
:class:`AgentplexError`, keeping the built-in base a user already catches (a timeout is
also a ``TimeoutError``, a bad argument also a ``ValueError``). ``except AgentplexError``
catches everything agentplex raised on purpose and nothing else.

This module imports nothing from agentplex, so every package, however low, may use it.

Where the errors live (each package's ``_errors.py`` draws its part of the tree, with the
built-in bases; ``docs/index.md`` draws all of it)::

    AgentplexError
    ├── agentplex.message   DecodeError, EncodeError
    ├── agentplex.tracing   ReplayMissing, InvalidPrices, InvalidBudget
    ├── agentplex.engine    EngineError, EngineClosed
    ├── agentplex.model     ModelError and its subclasses (FallbackError: an ExceptionGroup)
    ├── agentplex.tool      RemoteToolError, UntrustedCodeError
    ├── agentplex.runtime   ActorError and its subclasses
    ├── agentplex.bus       PayloadTooLarge (an ActorError), FrameError, InsecureBindError,
    │                       SpawnRefused
    ├── agentplex.agent     SandboxError
    ├── agentplex.serving   BadChatRequest, QueueFull, ServerFailed
    ├── agentplex.cluster   Unschedulable, NodeFailed, CodeRefused, CodeRejected
    └── agentplex.sim       SimError: ScenarioError, ParamsError, PlanError,
                            CheckpointError, NodesFailed, NotUserCode (both also
                            in agentplex.cli)
"""

from __future__ import annotations

__all__ = ["AgentplexError"]


class AgentplexError(Exception):
    """Base of every error agentplex raises on purpose."""
