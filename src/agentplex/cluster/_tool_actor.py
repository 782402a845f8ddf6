"""Tool actors: tools hosted as actors, shared by many agents anywhere on the bus.

:class:`ToolActor` hosts tools (a loaded pipeline, say) and serves many calls at once;
:class:`PipelineToolActor` builds a :func:`~agentplex.tool.pipeline_tool` from msgpack-able
arguments, so the cluster can place it on a GPU node. :class:`ActorTool` is the
:class:`~agentplex.tool.Tool` agents register to call one: its calls cross the bus as
``tool_use`` blocks and come back as ``tool_result`` blocks (streamed, for tools that stream), media
included.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from ..message import TextBlock, ToolResultBlock, ToolUseBlock
from ..runtime import Actor, ActorRef, get_runtime
from ..tool import FunctionSchema, OutputBlock, Tool, Toolkit, ToolResponse, pipeline_tool

__all__ = ["ActorTool", "PipelineToolActor", "ToolActor"]


class ToolActor(Actor):
    """Hosts tools and runs the calls sent to it (``tool_use`` blocks).

    Give it tools in-process, or subclass it and override :meth:`make_tools` so a node can
    build them from msgpack-able arguments (as :class:`PipelineToolActor` does). Each
    tool's ``setup`` runs once, on the first call; calls run concurrently (up to
    ``max_concurrency``), blocking tools in threads.

    Args:
        tools: tools or functions to host.
        timeout: seconds one call may take (default: no limit).
    """

    max_concurrency = 64

    def __init__(self, *tools: Tool | Callable[..., Any], timeout: float | None = None) -> None:
        self._given = list(tools)
        self.toolkit = Toolkit(timeout=timeout)
        self.served = 0

    def make_tools(self) -> Iterable[Tool | Callable[..., Any]]:
        """The tools to host (default: those given to the constructor)."""
        return self._given

    async def on_start(self) -> None:
        for tool in self.make_tools():
            self.toolkit.register_tool_function(tool)
        if not self.toolkit.tools:
            raise ValueError(f"{type(self).__name__} hosts no tools")

    def describe(self) -> dict[str, Any]:
        """Each tool's schema, and how many calls were served."""
        return {"tools": [t.schema.json_schema for t in self.toolkit.tools.values()],
                "served": self.served,
                "loaded": [t.name for t in self.toolkit.tools.values()
                           if t.tool is not None and t.tool.is_initialized]}

    async def handle_call(self, message: Any) -> Any:
        if message == "describe":
            return self.describe()
        self.served += 1
        return await self.toolkit.execute(_tool_call(message))

    async def handle_stream(self, message: Any) -> AsyncIterator[ToolResultBlock]:
        """The call's result so far, one ``tool_result`` block per step (a generator
        tool streams several; the last is the final result)."""
        call = _tool_call(message)
        self.served += 1
        sent: ToolResultBlock | None = None
        async for chunk in self.toolkit.call_tool_function(call):
            block = chunk.to_block(call.id, call.name)
            if block != sent:  # the toolkit repeats the last step as the final result
                yield block
            sent = block


def _tool_call(message: Any) -> ToolUseBlock:
    if not isinstance(message, ToolUseBlock):
        raise TypeError(f"a tool actor takes tool_use blocks, not {type(message).__name__}")
    return message


class PipelineToolActor(ToolActor):
    """A :class:`ToolActor` hosting ``pipeline_tool(task, model, **kwargs)``.

    Its arguments are msgpack-able, so ``cluster.spawn("agentplex.cluster:PipelineToolActor",
    "text-classification", "path/or/name", tool_name="sentiment", resources=Resources(gpus=1))``
    places it on a GPU node, where the pipeline loads once on first use and serves every
    agent. ``tool_name`` names the tool (``name`` names the actor); other keyword arguments
    go to :func:`~agentplex.tool.pipeline_tool`.
    """

    def __init__(self, task: str, model: str | None = None, *, tool_name: str | None = None,
                 timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(timeout=timeout)
        self.task = task
        self.model = model
        self.tool_name = tool_name
        self.kwargs = kwargs

    def make_tools(self) -> list[Tool]:
        return [pipeline_tool(self.task, self.model, name=self.tool_name, **self.kwargs)]


class ActorTool(Tool):
    """A tool whose calls run in a :class:`ToolActor`, wherever it is.

    Build it with :meth:`connect` (which asks the actor for the tool's schema), or give
    the schema yourself.

    Args:
        actor: the tool actor's ref or name.
        name: the tool's name in that actor.
        description: what the tool does.
        parameters: the JSON schema of its arguments.
        timeout: seconds a call may take.
    """

    def __init__(self, actor: ActorRef | str, name: str, description: str = "",
                 parameters: dict[str, Any] | None = None, *,
                 timeout: float | None = None) -> None:
        super().__init__()
        self.actor = actor
        self.name = name  # type: ignore[misc]
        self.description = description  # type: ignore[misc]
        self.parameters = parameters or {"type": "object", "properties": {}}
        self.timeout = timeout
        self.is_initialized = True  # nothing to set up here: the actor does
        self._ids = itertools.count(1)

    @classmethod
    async def connect(cls, actor: ActorRef | str, name: str | None = None, *,
                      timeout: float | None = 30.0) -> ActorTool:
        """The tool ``name`` (default: the only one) of the tool actor ``actor``."""
        ref = actor if isinstance(actor, ActorRef) else get_runtime().ref(actor)
        described = await ref.call("describe", timeout=timeout)
        if not (isinstance(described, dict) and isinstance(described.get("tools"), list)):
            raise TypeError(f"the actor {ref.name!r} is not a tool actor")
        functions = [t["function"] for t in described["tools"]]
        chosen = [f for f in functions if name is None or f["name"] == name]
        if len(chosen) != 1:
            names = [f["name"] for f in functions]
            raise LookupError(f"the tool actor {ref.name!r} has tools {names}; "
                              + (f"none is {name!r}" if name else "name one"))
        function = chosen[0]
        return cls(ref, function["name"], function.get("description", ""),
                   function.get("parameters"), timeout=timeout)

    def schema(self, preset: Iterable[str] = ()) -> FunctionSchema:
        hidden = set(preset)
        parameters = dict(self.parameters)
        parameters["properties"] = {k: v for k, v in parameters.get("properties", {}).items()
                                    if k not in hidden}
        if "required" in parameters:
            parameters["required"] = [k for k in parameters["required"] if k not in hidden]
        return FunctionSchema(self.name, self.description, parameters)

    async def forward(self, **kwargs: Any) -> AsyncIterator[ToolResponse]:
        """Stream the call's result so far from the actor (``timeout`` bounds each step)."""
        ref = self.actor if isinstance(self.actor, ActorRef) else get_runtime().ref(self.actor)
        call = ToolUseBlock(id=f"{self.name}-{next(self._ids)}", name=self.name, input=kwargs)
        async with ref.stream(call, timeout=self.timeout) as results:
            async for result in results:
                output = result.output
                content: list[OutputBlock] = list(output) if isinstance(output, list) else (
                    [TextBlock(text=output)] if output else [])
                yield ToolResponse(content=content, is_error=result.is_error)
