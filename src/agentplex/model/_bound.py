"""Models derived by the LangChain-style methods: bound, configurable, structured."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel

from ..message import TextBlock
from ._base import ChatModelBase, ChatResult, Messages, ToolChoice
from ._errors import StructuredOutputError
from ._options import ALIASES, NAMES
from ._response import ChatResponse
from ._runnable import BatchMethods, ModelInput, RunnableConfig
from ._structured import structured_schema
from .wrappers import WrapperModel

__all__ = ["BoundChatModel", "ConfigurableChatModel", "StructuredChatModel", "tool_dict"]


def tool_dict(tool: Any) -> dict[str, Any]:
    """A ``{"type": "function", "function": ...}`` dict for one of ``bind_tools``' tools."""
    if isinstance(tool, Mapping):
        if "function" in tool or "name" not in tool:
            return dict(tool)
        return {"type": "function", "function": dict(tool)}
    if isinstance(tool, type) and issubclass(tool, BaseModel):
        from ._structured import forced_tool

        return forced_tool(tool)
    for holder in (tool, getattr(tool, "schema", None)):
        make = getattr(holder, "json_schema", None)
        if callable(make):
            return tool_dict(make())
    raise TypeError(
        f"cannot make a tool of {tool!r}: give a function-schema dict, a pydantic model, "
        "or agentplex.tool.function_schema(your_function)")


def _merged(*configs: RunnableConfig | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for config in configs:
        for key, value in (config or {}).items():
            if key == "configurable":
                out["configurable"] = {**out.get("configurable", {}), **value}
            else:
                out[key] = value
    return out


class BoundChatModel(WrapperModel):
    """``model`` with tools, call keywords, config or configurable fields fixed
    (what ``bind_tools``, ``bind``, ``with_config`` and ``configurable_fields`` return).
    A call's own arguments win; ``config=`` may be given to a call too."""

    def __init__(
        self,
        model: ChatModelBase,
        *,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: ToolChoice | None = None,
        kwargs: Mapping[str, Any] | None = None,
        config: RunnableConfig | None = None,
        config_fields: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(model)
        self.tools = tools
        self.tool_choice = tool_choice
        self.kwargs = dict(kwargs or {})
        self.config = dict(config or {})
        self.config_fields = dict(config_fields or {})

    def _configured(self, config: RunnableConfig | None, kwargs: dict[str, Any]
                    ) -> dict[str, Any]:
        return {**kwargs, "config": config} if config else kwargs

    async def _call(
        self,
        messages: Messages,
        tools: list[dict[str, Any]] | None,
        tool_choice: ToolChoice | None,
        structured_model: type[BaseModel] | None,
        **kwargs: Any,
    ) -> ChatResult:
        config = _merged(self.config, kwargs.pop("config", None))
        values = config.get("configurable") or {}
        from_config = {name: values[key] for key, name in self.config_fields.items()
                       if key in values}
        call = {**self.kwargs, **from_config, **kwargs}
        if config and isinstance(self.model, (BoundChatModel, ConfigurableChatModel)):
            call["config"] = config
        return await self.model(messages, self.tools if tools is None else tools,
                                self.tool_choice if tool_choice is None else tool_choice,
                                structured_model, **call)


class ConfigurableChatModel(ChatModelBase):
    """A model chosen per call: ``init_chat_model(configurable_fields=...)``.

    ``config["configurable"]`` may set ``model`` (``"provider:model"`` or a name with
    ``model_provider``) and any other field listed in ``configurable_fields`` (``"any"``:
    every field), each key prefixed with ``config_prefix`` + ``_`` when a prefix is given.
    Generation arguments are passed per call; other fields build a model (kept for reuse,
    closed by :meth:`aclose`).
    """

    provider = "configurable"

    def __init__(self, defaults: Mapping[str, Any], fields: Literal["any"] | Sequence[str],
                 prefix: str = "") -> None:
        self.defaults = dict(defaults)
        self.fields = fields if fields == "any" else frozenset(fields)
        self.prefix = f"{prefix}_" if prefix else ""
        super().__init__(str(self.defaults.get("model") or "configurable"),
                         bool(self.defaults.get("stream", False)))
        self._models: dict[str, ChatModelBase] = {}

    def _configured(self, config: RunnableConfig | None, kwargs: dict[str, Any]
                    ) -> dict[str, Any]:
        return {**kwargs, "config": config} if config else kwargs

    def _values(self, config: RunnableConfig | None) -> dict[str, Any]:
        values = dict((config or {}).get("configurable") or {})
        out = {}
        for key, value in values.items():
            if self.prefix and not key.startswith(self.prefix):
                continue
            name = key[len(self.prefix):]
            if self.fields == "any" or name in self.fields:
                out[name] = value
        return out

    def model_for(self, config: RunnableConfig | None = None) -> tuple[ChatModelBase,
                                                                      dict[str, Any]]:
        """The model ``config`` selects and the call keywords it sets."""
        from ._registry import init_chat_model

        settings = {**self.defaults, **self._values(config)}
        per_call = {k: settings.pop(k) for k in list(settings)
                    if k in NAMES or k in ALIASES}
        model = settings.pop("model", None)
        if not model:
            raise ValueError("no model configured: give model= or config "
                             "{'configurable': {'model': 'provider:model'}}")
        provider = settings.pop("model_provider", None) or settings.pop("provider", None)
        key = repr((model, provider, sorted(settings.items(), key=lambda kv: kv[0])))
        if key not in self._models:
            self._models[key] = init_chat_model(model, provider=provider, **settings)
        return self._models[key], per_call

    async def __call__(
        self,
        messages: Messages,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: ToolChoice | None = None,
        structured_model: type[BaseModel] | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """Answer through the chosen model, which traces its own call (as a
        :class:`WrapperModel` does)."""
        return await self._call(messages, tools, tool_choice, structured_model, **kwargs)

    async def _call(
        self,
        messages: Messages,
        tools: list[dict[str, Any]] | None,
        tool_choice: ToolChoice | None,
        structured_model: type[BaseModel] | None,
        **kwargs: Any,
    ) -> ChatResult:
        model, per_call = self.model_for(kwargs.pop("config", None))
        return await model(messages, tools, tool_choice, structured_model,
                           **{**per_call, **kwargs})

    async def aclose(self) -> None:
        """Close every model built so far."""
        models, self._models = list(self._models.values()), {}
        for model in models:
            close = getattr(model, "aclose", None)
            if close is not None:
                await close()


_METHODS = {"json_schema": "native", "function_calling": "tool", "json_mode": "json_object"}


class StructuredChatModel(BatchMethods):
    """What ``with_structured_output`` returns: answers are schema instances or dicts."""

    def __init__(self, model: ChatModelBase, schema: Any, *, include_raw: bool = False,
                 method: str | None = None, kwargs: Mapping[str, Any] | None = None) -> None:
        if method is not None and method not in _METHODS:
            raise ValueError(f"method must be one of {sorted(_METHODS)}, not {method!r}")
        self.model = model
        self.schema = schema
        self.pydantic, self.instances = structured_schema(schema)
        self.include_raw = include_raw
        self.kwargs = dict(kwargs or {})
        if method is not None:
            self.kwargs["structured_output"] = _METHODS[method]

    async def ainvoke(self, input: ModelInput, config: RunnableConfig | None = None,
                      **kwargs: Any) -> Any:
        """The parsed answer (or the ``raw`` / ``parsed`` / ``parsing_error`` dict)."""
        call = {**self.kwargs, **kwargs, "stream": False}
        try:
            response = await self.model.ainvoke(input, config, structured_model=self.pydantic,
                                                **call)
        except StructuredOutputError as exc:
            if not self.include_raw:
                raise
            raw = ChatResponse(content=[TextBlock(text=exc.raw)])
            return {"raw": raw, "parsed": None, "parsing_error": exc}
        data = response.metadata or {}
        parsed = self.pydantic.model_validate(data) if self.instances else dict(data)
        if self.include_raw:
            return {"raw": response, "parsed": parsed, "parsing_error": None}
        return parsed

    async def astream(self, input: ModelInput, config: RunnableConfig | None = None,
                      **kwargs: Any) -> Any:
        """One item: the parsed answer (validation needs the whole output)."""
        yield await self.ainvoke(input, config, **kwargs)

    def __repr__(self) -> str:
        return f"StructuredChatModel({self.model!r}, {getattr(self.schema, '__name__', 'schema')})"
