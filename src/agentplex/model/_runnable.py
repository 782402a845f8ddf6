"""The LangChain-style surface every chat model has (:class:`RunnableMethods`).

``ainvoke`` / ``astream`` / ``abatch`` / ``batch_as_completed`` take what LangChain's chat
models take — a plain string, one ``Msg``, or a list of ``Msg`` objects, role/content dicts
and ``(role, content)`` pairs — plus an optional ``config`` whose ``configurable`` values
fill the fields named by :meth:`RunnableMethods.configurable_fields`. ``bind_tools``,
``bind``, ``with_config`` and ``with_structured_output`` return new objects; the model
itself is never changed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from ..message import Msg
from ._response import ChatResponse

if TYPE_CHECKING:
    from ._bound import BoundChatModel, StructuredChatModel

__all__ = ["BatchMethods", "ModelInput", "RunnableConfig", "RunnableMethods", "to_messages"]

ModelInput: TypeAlias = (
    str | Msg | Sequence[Msg | Mapping[str, Any] | tuple[str, Any]]
)
"""What ``ainvoke`` takes: a user's text, one message, or a history."""

RunnableConfig: TypeAlias = Mapping[str, Any]
"""LangChain's config: ``configurable`` values (and ``max_concurrency`` for batches)."""

_ROLES = {"human": "user", "user": "user", "ai": "assistant", "assistant": "assistant",
          "system": "system", "developer": "system"}


def to_messages(value: ModelInput) -> list[Msg | dict[str, Any]]:
    """A history from ``value``: ``"hi"`` is one user message; ``("human", "hi")`` pairs
    use LangChain's role names (``human``, ``ai``, ``system``); dicts pass unchanged."""
    if isinstance(value, str):
        return [Msg("user", value, "user")]
    if isinstance(value, Msg):
        return [value]
    if isinstance(value, Mapping) or not isinstance(value, Sequence):
        raise TypeError(f"expected a string, a Msg or a list of messages, not "
                        f"{type(value).__name__}")
    out: list[Msg | dict[str, Any]] = []
    for item in value:
        if isinstance(item, Msg):
            out.append(item)
        elif isinstance(item, Mapping):
            out.append(dict(item))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            role = _ROLES.get(item[0])
            if role is None:
                raise ValueError(f"unknown role {item[0]!r} (use one of {sorted(_ROLES)})")
            out.append(Msg(role, item[1], role))  # type: ignore[arg-type]
        elif isinstance(item, str):
            out.append(Msg("user", item, "user"))
        else:
            raise TypeError(f"cannot make a message of {item!r}")
    return out


class BatchMethods:
    """``abatch`` and ``batch_as_completed`` over an ``ainvoke``."""

    if TYPE_CHECKING:
        async def ainvoke(self, input: ModelInput, config: RunnableConfig | None = None,
                          **kwargs: Any) -> Any: ...

    async def abatch(self, inputs: Sequence[ModelInput],
                     config: RunnableConfig | Sequence[RunnableConfig] | None = None, *,
                     return_exceptions: bool = False, **kwargs: Any
                     ) -> list[Any]:
        """``ainvoke`` over ``inputs`` concurrently (``config["max_concurrency"]``, default
        8), results in the order of ``inputs``."""
        configs = _configs(config, len(inputs))
        gate = asyncio.Semaphore(_concurrency(configs))

        async def one(item: ModelInput, cfg: RunnableConfig | None) -> Any:
            async with gate:
                return await self.ainvoke(item, cfg, **kwargs)

        return list(await asyncio.gather(*(one(i, c) for i, c in zip(inputs, configs, strict=True)),
                                         return_exceptions=return_exceptions))

    async def batch_as_completed(
        self, inputs: Sequence[ModelInput],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None, *,
        return_exceptions: bool = False, **kwargs: Any,
    ) -> AsyncIterator[tuple[int, Any]]:
        """``(index, response)`` pairs as each answer arrives, fastest first."""
        configs = _configs(config, len(inputs))
        gate = asyncio.Semaphore(_concurrency(configs))

        async def one(index: int) -> tuple[int, Any]:
            async with gate:
                try:
                    return index, await self.ainvoke(inputs[index], configs[index], **kwargs)
                except Exception as exc:
                    if not return_exceptions:
                        raise
                    return index, exc

        tasks = [asyncio.ensure_future(one(i)) for i in range(len(inputs))]
        try:
            for done in asyncio.as_completed(tasks):
                yield await done
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    abatch_as_completed = batch_as_completed


class RunnableMethods(BatchMethods):
    """Mixed into :class:`~agentplex.model.ChatModelBase`; see the module docstring."""

    config_fields: Mapping[str, str] = {}
    """``configurable`` key -> call keyword, set by :meth:`configurable_fields`."""

    if TYPE_CHECKING:
        stream: bool

        async def __call__(self, messages: Any, *args: Any, **kwargs: Any) -> Any: ...

        async def batch(self, histories: Sequence[Any], **kwargs: Any) -> list[Any]: ...

    def _configured(self, config: RunnableConfig | None, kwargs: dict[str, Any]
                    ) -> dict[str, Any]:
        values = dict((config or {}).get("configurable") or {})
        out = {self.config_fields[k]: v for k, v in values.items() if k in self.config_fields}
        return {**out, **kwargs}

    async def ainvoke(self, input: ModelInput, config: RunnableConfig | None = None, *,
                      stop: list[str] | None = None, **kwargs: Any) -> ChatResponse:
        """Answer ``input`` with one whole :class:`ChatResponse` (a stream is consumed)."""
        from ._base import collect

        if stop is not None:
            kwargs["stop"] = stop
        return await collect(await self(to_messages(input), **self._configured(config, kwargs)))

    async def astream(self, input: ModelInput, config: RunnableConfig | None = None,
                      **kwargs: Any) -> AsyncGenerator[ChatResponse, None]:
        """Answer ``input`` chunk by chunk (every model streams here, whatever its
        ``stream`` setting; each chunk's ``delta`` holds what it added)."""
        from ._base import chunks_of

        kwargs = self._configured(config, {**kwargs, "stream": True})
        async with aclosing(chunks_of(await self(to_messages(input), **kwargs))) as stream:
            async for chunk in stream:
                yield chunk

    # -- derived models ----------------------------------------------------------------

    def bind(self, **kwargs: Any) -> BoundChatModel:
        """This model with ``kwargs`` sent on every call (a call's own win)."""
        from ._bound import BoundChatModel

        return BoundChatModel(self, kwargs=kwargs)  # type: ignore[arg-type]

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: str | bool | None = None,
                   **kwargs: Any) -> BoundChatModel:
        """This model with ``tools`` on every call.

        A tool may be a ``{"type": "function", "function": ...}`` dict, a bare function
        dict, a pydantic model (its fields are the arguments, its docstring the
        description), or anything with a ``json_schema()`` method or a ``schema``
        attribute that has one (``agentplex.tool``'s ``FunctionSchema`` and ``Tool``).
        ``tool_choice`` also takes LangChain's ``"any"`` and ``True`` (= ``"required"``).
        """
        from ._bound import BoundChatModel, tool_dict

        choice = "required" if tool_choice is True or tool_choice == "any" else (
            tool_choice or None)
        return BoundChatModel(self, tools=[tool_dict(t) for t in tools],  # type: ignore[arg-type]
                              tool_choice=choice, kwargs=kwargs)

    def with_config(self, config: RunnableConfig | None = None, **values: Any
                    ) -> BoundChatModel:
        """This model with ``config`` (or ``configurable=...``) applied to every call."""
        from ._bound import BoundChatModel

        merged = {**(config or {}), **values}
        return BoundChatModel(self, config=merged)  # type: ignore[arg-type]

    def configurable_fields(self, **fields: Any) -> BoundChatModel:
        """Make call keywords settable per call through ``config["configurable"]``.

        ``model.configurable_fields(temperature="temp")`` (or LangChain's
        ``ConfigurableField(id="temp")``, anything with an ``id``) then
        ``await m.ainvoke("hi", {"configurable": {"temp": 0.1}})``.
        """
        from ._bound import BoundChatModel

        mapping = {str(getattr(v, "id", v)): k for k, v in fields.items()}
        return BoundChatModel(self, config_fields=mapping)  # type: ignore[arg-type]

    def with_structured_output(
        self, schema: Any, *, include_raw: bool = False,
        method: Literal["json_schema", "function_calling", "json_mode"] | None = None,
        **kwargs: Any,
    ) -> StructuredChatModel:
        """A runnable whose answers are ``schema`` instances (pydantic), or dicts (for a
        TypedDict or a JSON schema); with ``include_raw`` each answer is
        ``{"raw": ChatResponse, "parsed": ..., "parsing_error": error or None}``.
        ``method`` picks the mode (``json_schema`` = native, ``function_calling`` = tool,
        ``json_mode`` = json_object; default: the model's ``structured_output``)."""
        from ._bound import StructuredChatModel

        return StructuredChatModel(self, schema, include_raw=include_raw,  # type: ignore[arg-type]
                                   method=method, kwargs=kwargs)


def _configs(config: RunnableConfig | Sequence[RunnableConfig] | None, n: int
             ) -> list[RunnableConfig | None]:
    if config is None or isinstance(config, Mapping):
        return [config] * n
    configs = list(config)
    if len(configs) != n:
        raise ValueError(f"{len(configs)} configs for {n} inputs")
    return configs  # type: ignore[return-value]


def _concurrency(configs: Sequence[RunnableConfig | None]) -> int:
    values = [int(c["max_concurrency"]) for c in configs if c and c.get("max_concurrency")]
    return min(values) if values else 8
