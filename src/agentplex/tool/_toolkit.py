""":class:`Toolkit`: registers tools, describes them to models and runs their calls."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jsonschema
from pydantic import ValidationError

from ..message import TextBlock, ToolResultBlock, ToolUseBlock
from ..tracing.lowlevel import tool_span
from ._response import ToolResponse, to_tool_response
from ._schema import FunctionSchema, function_schema
from ._tool import Tool

if TYPE_CHECKING:
    from ._mcp import MCPClient

__all__ = ["META_TOOL", "RegisteredTool", "ToolGroup", "Toolkit"]

BASIC = "basic"
META_TOOL = "reset_equipped_tools"
"""The tool through which an agent switches tool groups (see ``enable_group_switching``)."""
_DONE = object()


@dataclass
class ToolGroup:
    """A named set of tools switched on and off together; ``notes`` tell the agent how
    to use them while the group is active."""

    name: str
    description: str = ""
    active: bool = False
    notes: str | None = None


@dataclass
class RegisteredTool:
    """A tool as the toolkit holds it."""

    schema: FunctionSchema
    func: Callable[..., Any]
    group: str = BASIC
    preset_kwargs: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    media: str | None = None
    tool: Tool | None = None
    samplerate: int = 16000

    @property
    def name(self) -> str:
        return self.schema.name


class Toolkit:
    """The tools an agent may call.

    Register plain functions, async functions, (async) generators that stream partial
    results, :class:`Tool` instances and MCP servers' tools. Tools belong to groups; only
    the tools of active groups are offered to the model (the ``basic`` group is always
    active). Calls are validated against the schema before they run; a bad call, an
    exception or a timeout becomes an error result the model can read.

    Args:
        timeout: default seconds a tool call may take (``None``: no limit).
        run_sync_in_thread: run plain functions in a worker thread so they do not block
            the event loop (default) or inline.

    Its state (:meth:`state_dict`) is which groups are active.
    """

    def __init__(self, timeout: float | None = None, run_sync_in_thread: bool = True) -> None:
        self.timeout = timeout
        self.run_sync_in_thread = run_sync_in_thread
        self.tools: dict[str, RegisteredTool] = {}
        self.groups: dict[str, ToolGroup] = {BASIC: ToolGroup(BASIC, "always available", True)}
        self.group_switching = False

    # -- registration -------------------------------------------------------------------

    def register_tool_function(
        self,
        tool_func: Callable[..., Any] | Tool,
        group_name: str = BASIC,
        preset_kwargs: dict[str, Any] | None = None,
        func_description: str | None = None,
        json_schema: dict[str, Any] | None = None,
        name: str | None = None,
        timeout: float | None = None,
        media: str | None = None,
        samplerate: int | None = None,
    ) -> RegisteredTool:
        """Register a function (or :class:`Tool`) as a tool.

        Args:
            tool_func: the function, async function, generator, or ``Tool`` instance.
            group_name: the group it belongs to (create groups with
                :meth:`create_tool_group`).
            preset_kwargs: arguments always passed and hidden from the model.
            func_description: replaces the docstring's description.
            json_schema: a ``{"type": "function", ...}`` or parameters schema to use
                instead of deriving one (arguments are then checked with JSON Schema).
            name: the tool's name (default: the function's).
            timeout: seconds a call may take (default: the toolkit's).
            media: ``image``, ``audio`` or ``video``: what returned bytes, arrays and
                tensors are (default: a ``Tool``'s ``outputs``; PIL images, agent types
                and encoded media are recognised anyway).
            samplerate: the sample rate of audio returned as a bare array (default: a
                ``Tool``'s ``samplerate``, else 16000).
        """
        if media not in (None, "image", "audio", "video"):
            raise ValueError(f"media must be 'image', 'audio' or 'video', not {media!r}")
        if group_name not in self.groups:
            raise ValueError(f"no tool group {group_name!r}; create it first")
        preset = dict(preset_kwargs or {})
        tool: Tool | None = tool_func if isinstance(tool_func, Tool) else None
        if tool is not None:
            schema = tool.schema(preset=preset)
            func: Callable[..., Any] = tool.entry_point()
        else:
            func = tool_func
            schema = function_schema(func, name=name, description=func_description, preset=preset)
        if json_schema is not None:
            schema = _schema_from_json(json_schema, schema.name, schema.description, preset)
        if name is not None:
            schema.name = name
        if func_description is not None:
            schema.description = func_description
        if schema.name in self.tools:
            raise ValueError(f"a tool named {schema.name!r} is already registered")
        registered = RegisteredTool(
            schema, func, group_name, preset, timeout, media or (tool.media if tool else None),
            tool, samplerate or (tool.samplerate if tool else 16000))
        self.tools[schema.name] = registered
        return registered

    def remove_tool_function(self, name: str) -> None:
        """Unregister the tool ``name`` (no error when there is none)."""
        self.tools.pop(name, None)

    async def register_mcp_client(
        self,
        client: MCPClient,
        group_name: str = BASIC,
        enable_funcs: Iterable[str] | None = None,
        disable_funcs: Iterable[str] | None = None,
        timeout: float | None = None,
    ) -> list[str]:
        """Register the tools of a connected MCP client; returns their names."""
        enabled = set(enable_funcs) if enable_funcs is not None else None
        disabled = set(disable_funcs or ())
        names: list[str] = []
        for func in await client.get_tool_functions():
            if (enabled is not None and func.name not in enabled) or func.name in disabled:
                continue
            self.register_tool_function(func, group_name, json_schema=func.json_schema,
                                        name=func.name, timeout=timeout)
            names.append(func.name)
        return names

    # -- groups -------------------------------------------------------------------------

    def create_tool_group(self, group_name: str, description: str = "", active: bool = False,
                          notes: str | None = None) -> ToolGroup:
        """Create a group of tools, inactive unless ``active``."""
        if group_name in self.groups:
            raise ValueError(f"tool group {group_name!r} already exists")
        group = ToolGroup(group_name, description, active, notes)
        self.groups[group_name] = group
        return group

    def update_tool_groups(self, group_names: Iterable[str], active: bool) -> None:
        """Switch the named groups on or off (``basic`` always stays on)."""
        for name in group_names:
            if name not in self.groups:
                raise ValueError(f"no tool group {name!r}")
            if name != BASIC:
                self.groups[name].active = active

    def remove_tool_groups(self, group_names: Iterable[str]) -> None:
        """Delete the named groups and their tools."""
        names = set(group_names) - {BASIC}
        for name in names:
            self.groups.pop(name, None)
        self.tools = {k: t for k, t in self.tools.items() if t.group not in names}

    def active_groups(self) -> list[str]:
        """The names of the active groups."""
        return [g.name for g in self.groups.values() if g.active]

    def get_activated_notes(self) -> str:
        """The notes of the active groups, for an agent's system prompt."""
        return "\n\n".join(f"## {g.name}\n{g.notes}" for g in self.groups.values()
                           if g.active and g.notes)

    def get_json_schemas(self) -> list[dict[str, Any]]:
        """The schemas of the tools in active groups, in the form models take."""
        schemas = [t.schema.json_schema for t in self.tools.values()
                   if self.groups[t.group].active]
        if self.group_switching and len(self.groups) > 1:
            schemas.append(self._switch_schema().json_schema)
        return schemas

    def enable_group_switching(self, enabled: bool = True) -> None:
        """Offer the model a ``reset_equipped_tools`` tool: one boolean per tool group,
        so the agent itself chooses which groups are active (the rest are switched off)."""
        self.group_switching = enabled

    def _switch_schema(self) -> FunctionSchema:
        properties = {
            g.name: {"type": "boolean", "default": False,
                     "description": g.description or f"the {g.name} tools"}
            for g in self.groups.values() if g.name != BASIC
        }
        return FunctionSchema(
            META_TOOL,
            "Choose the tool groups you need now: true activates a group, false or "
            "leaving it out deactivates it.",
            {"type": "object", "properties": properties, "additionalProperties": False},
        )

    def _switch_groups(self, args: dict[str, Any]) -> ToolResponse:
        try:
            jsonschema.validate(args, self._switch_schema().parameters)
        except jsonschema.ValidationError as exc:
            return ToolResponse.error(f"Error: invalid arguments for {META_TOOL!r}: "
                                      f"{exc.message}")
        for group in self.groups.values():
            if group.name != BASIC:
                group.active = bool(args.get(group.name, False))
        active = [g for g in self.active_groups() if g != BASIC]
        text = f"Active tool groups: {', '.join(active) or 'none'}."
        notes = self.get_activated_notes()
        return ToolResponse(content=[TextBlock(text=f"{text}\n\n{notes}" if notes else text)])

    # -- state ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The toolkit's state: which groups are active (same contract as ``StateModule``)."""
        return {"active_groups": self.active_groups()}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """Restore :meth:`state_dict`; with ``strict``, unknown groups raise ``KeyError``."""
        active = set(state.get("active_groups", [BASIC]))
        missing = active - set(self.groups)
        if missing and strict:
            raise KeyError(f"the toolkit has no tool groups {sorted(missing)}")
        for group in self.groups.values():
            group.active = group.name == BASIC or group.name in active

    # -- execution ----------------------------------------------------------------------

    async def execute(self, tool_call: ToolUseBlock) -> ToolResultBlock:
        """Run ``tool_call`` to completion and return its ``tool_result`` block."""
        last = ToolResponse()
        async for chunk in self.call_tool_function(tool_call):
            last = chunk
        return last.to_block(tool_call.id, tool_call.name)

    async def call_tool_function(
        self, tool_call: ToolUseBlock
    ) -> AsyncGenerator[ToolResponse, None]:
        """Run ``tool_call``, yielding its result so far; the last has ``is_last=True``.

        Never raises for the tool's own failures: they come back as error results.
        Cancellation (an interrupt) propagates.
        """
        tool = self.tools.get(tool_call.name)
        if tool is None and tool_call.name == META_TOOL and self.group_switching:
            with tool_span(META_TOOL, tool_call.id):
                yield self._switch_groups(tool_call.input)
            return
        if tool is None:
            available = ", ".join(sorted(self._active_names())) or "none"
            yield ToolResponse.error(f"Error: there is no tool named {tool_call.name!r}. "
                                     f"Available tools: {available}.")
            return
        if not self.groups[tool.group].active:
            yield ToolResponse.error(f"Error: the tool {tool.name!r} belongs to the inactive "
                                     f"group {tool.group!r} and cannot be called now.")
            return
        with tool_span(tool.name, tool_call.id):
            try:
                kwargs = self._arguments(tool, tool_call)
            except ValueError as exc:
                yield ToolResponse.error(f"Error: invalid arguments for {tool.name!r}: {exc}")
                return
            async for chunk in self._run(tool, kwargs):
                yield chunk

    def _active_names(self) -> list[str]:
        return [n for n, t in self.tools.items() if self.groups[t.group].active]

    def _arguments(self, tool: RegisteredTool, tool_call: ToolUseBlock) -> dict[str, Any]:
        args: Any = tool_call.input
        if not args and tool_call.raw_input and tool_call.raw_input.strip():
            try:
                args = json.loads(tool_call.raw_input)
            except json.JSONDecodeError as exc:
                raise ValueError(f"the arguments are not valid JSON ({exc})") from None
        if not isinstance(args, dict):
            raise ValueError("the arguments must be a JSON object")
        schema = tool.schema
        if schema.model is None:
            try:
                jsonschema.validate(args, schema.parameters)
            except jsonschema.ValidationError as exc:
                where = "/".join(str(p) for p in exc.absolute_path)
                raise ValueError(f"{where + ': ' if where else ''}{exc.message}") from None
            return {**args, **tool.preset_kwargs}
        try:
            model = schema.model.model_validate(args)
        except ValidationError as exc:
            raise ValueError(_describe(exc)) from None
        names = schema.arg_names or {}
        kwargs = {names.get(k, k): getattr(model, k) for k in type(model).model_fields}
        kwargs.update(model.model_extra or {})
        return {**kwargs, **tool.preset_kwargs}

    async def _run(self, tool: RegisteredTool, kwargs: dict[str, Any]
                   ) -> AsyncGenerator[ToolResponse, None]:
        timeout = tool.timeout if tool.timeout is not None else self.timeout
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        chunks = self._chunks(tool, kwargs)
        last: ToolResponse | None = None
        try:
            while True:
                scope = asyncio.timeout_at(deadline)
                try:
                    async with scope:
                        chunk = await anext(chunks, _DONE)
                except Exception as exc:
                    if isinstance(exc, TimeoutError) and scope.expired():
                        text = f"Error: the tool {tool.name!r} timed out after {timeout:g}s."
                    else:
                        text = f"Error: {type(exc).__name__}: {exc}"
                    yield _failed(last, text)
                    return
                if chunk is _DONE:
                    break
                assert isinstance(chunk, ToolResponse)
                last = chunk
                yield chunk
        finally:
            await chunks.aclose()
        if last is None:
            yield ToolResponse()
        elif not last.is_last:
            yield ToolResponse(content=last.content, metadata=last.metadata, stream=True,
                               is_error=last.is_error)

    async def _chunks(self, tool: RegisteredTool, kwargs: dict[str, Any]
                      ) -> AsyncGenerator[ToolResponse, None]:
        """The tool's results so far, as ``ToolResponse``s (``is_last`` only when final)."""
        if tool.tool is not None:
            await tool.tool.ensure_setup()
        func = tool.func
        if inspect.isasyncgenfunction(func):
            async for value in func(**kwargs):
                yield _partial(value, tool)
            return
        if inspect.isgeneratorfunction(func):
            async for value in self._iterate_sync(func(**kwargs)):
                yield _partial(value, tool)
            return
        blocking = tool.tool is not None and tool.tool.blocking
        if _is_async(func) or not (self.run_sync_in_thread or blocking):
            result = func(**kwargs)
        else:
            result = await asyncio.to_thread(func, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        if inspect.isasyncgen(result):
            async for value in result:
                yield _partial(value, tool)
            return
        yield to_tool_response(result, tool.media, tool.samplerate)

    async def _iterate_sync(self, iterator: Any) -> AsyncIterator[Any]:
        while True:
            if self.run_sync_in_thread:
                value = await asyncio.to_thread(next, iterator, _DONE)
            else:
                value = next(iterator, _DONE)
            if value is _DONE:
                return
            yield value

    def __repr__(self) -> str:
        return f"Toolkit(tools={list(self.tools)}, active_groups={self.active_groups()})"


def _is_async(func: Any) -> bool:
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        type(func).__call__ if not inspect.isfunction(func) else None)


def _partial(value: Any, tool: RegisteredTool) -> ToolResponse:
    response = to_tool_response(value, tool.media, tool.samplerate)
    if response is value:  # do not alter the tool's own object
        response = ToolResponse(content=list(response.content), metadata=response.metadata,
                                is_error=response.is_error)
    response.is_last, response.stream = False, True
    return response


def _failed(last: ToolResponse | None, text: str) -> ToolResponse:
    content = list(last.content) if last is not None else []
    return ToolResponse(content=[*content, TextBlock(text=text)], is_error=True)


def _describe(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        problems.append(f"{where}: {err['msg']}" if where else err["msg"])
    return "; ".join(problems)


def _schema_from_json(json_schema: dict[str, Any], name: str, description: str,
                      preset: dict[str, Any]) -> FunctionSchema:
    function = json_schema.get("function", json_schema)
    if "parameters" in function or json_schema.get("type") == "function":
        parameters = dict(function.get("parameters") or {"type": "object", "properties": {}})
        name = function.get("name", name)
        description = function.get("description", description)
    else:
        parameters = dict(json_schema)
    if preset:  # preset arguments are the toolkit's business, not the model's
        parameters["properties"] = {k: v for k, v in parameters.get("properties", {}).items()
                                    if k not in preset}
        if "required" in parameters:
            parameters["required"] = [k for k in parameters["required"] if k not in preset]
    return FunctionSchema(name, description, parameters)
