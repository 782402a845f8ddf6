"""Model actors: one chat model hosted as an actor, shared by many agents anywhere.

:class:`ModelActor` hosts any :class:`ChatModelBase` and serves many requests at once
(``max_concurrency``), so a batching model (a local Transformers model) sees concurrent
requests together. :class:`RemoteChatModel` is a :class:`ChatModelBase` that calls model
actors through their refs — over the in-process bus or ZeroMQ alike, streaming included —
and balances several replicas by the number of requests it has outstanding on each.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing, nullcontext
from typing import Any, ClassVar

import jsonschema
from pydantic import BaseModel, ConfigDict, model_validator

from ..model import (
    ChatModelBase,
    ChatResponse,
    ChatResult,
    Messages,
    ToolChoice,
    chunks_of,
    collect,
    init_chat_model,
)
from ..model.lowlevel import counted_by_caller
from ..runtime import Actor, ActorRef, get_runtime
from ._balance import LeastOutstanding

__all__ = ["ModelActor", "RemoteChatModel", "schema_model"]


def schema_model(name: str, schema: dict[str, Any]) -> type[BaseModel]:
    """A pydantic class standing for a structured-output class known only by its JSON
    schema (it crossed the wire): same schema, validation by ``jsonschema``."""

    class _Schema(BaseModel):
        model_config = ConfigDict(extra="allow")
        json_schema: ClassVar[dict[str, Any]] = schema

        @classmethod
        def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
            return dict(cls.json_schema)

        @model_validator(mode="before")
        @classmethod
        def _validate(cls, data: Any) -> Any:
            try:
                jsonschema.validate(data, cls.json_schema)
            except jsonschema.ValidationError as exc:
                raise ValueError(f"does not match the schema of {name}: {exc.message}") from None
            return data

    _Schema.__name__ = _Schema.__qualname__ = name
    return _Schema


def _request(messages: Messages, tools: list[dict[str, Any]] | None,
             tool_choice: ToolChoice | None, structured_model: type[BaseModel] | None,
             kwargs: dict[str, Any]) -> dict[str, Any]:
    structured = None
    if structured_model is not None:
        structured = {"name": structured_model.__name__,
                      "schema": structured_model.model_json_schema()}
    # "counted": the caller's own instrumentation counts and records this call
    return {"messages": list(messages), "tools": tools, "tool_choice": tool_choice,
            "structured": structured, "kwargs": kwargs, "counted": True}


class ModelActor(Actor):
    """Hosts ``model`` (a :class:`ChatModelBase`, or an ``init_chat_model`` string built
    when the actor starts, e.g. on a GPU node) and answers model requests.

    Calls return the final :class:`ChatResponse`; streams yield every chunk.
    """

    max_concurrency = 256

    def __init__(self, model: ChatModelBase | str, **model_kwargs: Any) -> None:
        self._spec = model if isinstance(model, str) else None
        self._model_kwargs = model_kwargs
        self.model: ChatModelBase | None = model if isinstance(model, ChatModelBase) else None
        self.served = 0

    async def on_start(self) -> None:
        if self.model is None:
            assert self._spec is not None
            kwargs = dict(self._model_kwargs)
            placement = getattr(self, "placement", None)
            if (self._spec.startswith("transformers") and placement is not None
                    and placement.resources.gpu_memory):  # the engine keeps to its share
                kwargs.setdefault("gpu_memory", placement.resources.gpu_memory)
            self.model = init_chat_model(self._spec, **kwargs)

    async def _run(self, request: dict[str, Any]) -> ChatResult:
        if self.model is None:
            await self.on_start()
        assert self.model is not None
        structured = request.get("structured")
        self.served += 1
        with counted_by_caller() if request.get("counted") else nullcontext():
            return await self.model(
                request["messages"],
                tools=request.get("tools"),
                tool_choice=request.get("tool_choice"),
                structured_model=schema_model(structured["name"], structured["schema"])
                if structured else None,
                **(request.get("kwargs") or {}),
            )

    async def handle_call(self, message: Any) -> Any:
        if message == "describe":
            assert self.model is not None or self._spec is not None
            return {"model_name": self.model.model_name if self.model else self._spec,
                    "served": self.served, "engine": self._engine_totals()}
        return await collect(await self._run(message))

    def _engine_totals(self) -> dict[str, float] | None:
        """A local model's engine totals (passes, prefill and decode seconds, ...): where
        its time went; ``None`` for a model without an embedded engine."""
        counters = getattr(getattr(self.model, "engine", None), "counters", None)
        if counters is None:
            return None
        forward = counters.forward_seconds
        return {"steps": counters.steps, "max_rows": counters.max_rows_seen,
                "forward_s": forward, "prefill_s": counters.prefill_seconds,
                "decode_s": forward - counters.prefill_seconds,
                "select_s": counters.select_seconds,
                "prefill_tokens": counters.prefill_tokens}

    async def handle_stream(self, message: Any) -> AsyncIterator[Any]:
        result = await self._run(message)
        async with aclosing(chunks_of(result)) as chunks:  # closes the model's stream
            async for chunk in chunks:
                yield chunk


class RemoteChatModel(ChatModelBase):
    """A chat model that is really one or more :class:`ModelActor` replicas.

    Args:
        replicas: refs (or names) of model actors serving the same model.
        model_name: reported name (default: the first replica's name).
        stream: return an async generator of chunks streamed from the actor.
        timeout: seconds to wait for a reply (or, streaming, for each chunk).
    """

    provider = "agentplex-remote"

    def __init__(self, replicas: ActorRef | str | Sequence[ActorRef | str], *,
                 model_name: str | None = None, stream: bool = False,
                 timeout: float | None = None) -> None:
        targets = [replicas] if isinstance(replicas, (ActorRef, str)) else list(replicas)
        if not targets:
            raise ValueError("RemoteChatModel needs at least one model actor")
        first = targets[0]
        super().__init__(model_name or (first.name if isinstance(first, ActorRef) else first),
                         stream)
        self._targets = targets
        self._refs: list[ActorRef] | None = None
        self._balancer = LeastOutstanding(len(targets))
        self.timeout = timeout

    def _ref(self, index: int) -> ActorRef:
        if self._refs is None:
            runtime = get_runtime()
            self._refs = [t if isinstance(t, ActorRef) else runtime.ref(t)
                          for t in self._targets]
        return self._refs[index]

    async def _call(
        self,
        messages: Messages,
        tools: list[dict[str, Any]] | None,
        tool_choice: ToolChoice | None,
        structured_model: type[BaseModel] | None,
        **kwargs: Any,
    ) -> ChatResult:
        request = _request(messages, tools, tool_choice, structured_model, kwargs)
        index = self._balancer.pick()
        ref = self._ref(index)
        if self.stream:
            return self._stream(index, ref, request, structured_model)
        with self._balancer.holding(index):
            response: ChatResponse = await ref.call(request, timeout=self.timeout)
        return _validated(response, structured_model)

    async def _stream(self, index: int, ref: ActorRef, request: dict[str, Any],
                      structured_model: type[BaseModel] | None
                      ) -> AsyncGenerator[ChatResponse, None]:
        with self._balancer.holding(index):
            async with ref.stream(request, timeout=self.timeout) as chunks:
                async for chunk in chunks:
                    yield _validated(chunk, structured_model) if chunk.is_last else chunk


def _validated(response: ChatResponse, structured_model: type[BaseModel] | None
               ) -> ChatResponse:
    """Re-validate remote structured output with the caller's own class."""
    if structured_model is None or not response.metadata:
        return response
    value = structured_model.model_validate(response.metadata)
    return response.model_copy(update={"metadata": value.model_dump()})

