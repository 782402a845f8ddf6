"""A local Transformers model: :class:`TransformersChatModel`.

Loads the embedded SmolLM2-135M-Instruct (or any local folder, GGUF file or cached hub id)
without network access, batches concurrent calls into one generation loop, and enforces
structured output, tool calls and grammars during decoding, so they always parse.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ...message import Msg, TextBlock, ThinkingBlock, ToolResultBlock, ToolUseBlock
from .._base import ChatModelBase, ChatResult, Messages, ToolChoice
from .._errors import ModelError, StructuredOutputError, UnsupportedOptionError
from .._response import ChatResponse, ChatUsage, TokenLogprob, TopLogprob
from .._stream import ResponseBuilder
from ._engine import BatchEngine, GenerationEvent, GenerationRequest, Sampling
from ._grammars import (
    TOOL_CALL_BEGIN,
    TOOL_CALL_END,
    Constraint,
    GrammarFactory,
    constraint_from_format,
    tool_constraint,
)
from ._loading import DEFAULT_MODEL, LoadedModel, load_local_model
from ._output import THINK_BEGIN, OutputAssembler

__all__ = ["TransformersChatModel", "create"]

_SAMPLING_KEYS = ("temperature", "top_p", "top_k", "seed", "do_sample")


class _Shared:
    """A loaded model with its engine and grammar factory, shared by equal instances."""

    def __init__(self, loaded: LoadedModel, max_batch_size: int, batch_wait: float,
                 **engine_options: Any) -> None:
        self.loaded = loaded
        tok = loaded.tokenizer
        eos = {tok.eos_token_id} if tok.eos_token_id is not None else set()
        generation = getattr(loaded.model, "generation_config", None)
        extra = getattr(generation, "eos_token_id", None)
        eos |= set(extra) if isinstance(extra, list) else ({extra} if extra is not None else set())
        self.eos_ids = {int(e) for e in eos}
        self.vocab_size = int(loaded.model.get_output_embeddings().weight.shape[0])
        self._grammar: GrammarFactory | None = None
        self._lock = threading.Lock()
        self.engine = BatchEngine(loaded.model, tok, eos_ids=self.eos_ids,
                                  max_batch_size=max_batch_size, batch_wait=batch_wait,
                                  **engine_options)

    def grammar(self) -> GrammarFactory:
        with self._lock:
            if self._grammar is None:
                self._grammar = GrammarFactory(self.loaded.tokenizer, self.vocab_size,
                                               sorted(self.eos_ids))
                self.engine.grammar = self._grammar
            return self._grammar


_shared: dict[tuple[Any, ...], _Shared] = {}
_shared_lock = threading.Lock()


class TransformersChatModel(ChatModelBase):
    """A chat model running locally through Transformers, batched across concurrent callers.

    Args:
        model_id: ``"default"`` (the embedded SmolLM2-135M-Instruct), a folder, a ``.gguf``
            file, or a hub id already in the local Hugging Face cache. Nothing is downloaded.
        device_map: ``"cpu"``, ``"cuda"``, ``"auto"`` or a dict; default CUDA when present.
        torch_dtype: e.g. ``"bfloat16"``; default bf16 on CUDA, float32 on CPU. On CPUs
            with AVX512-BF16, ``"bfloat16"`` about doubles batched throughput, but batched
            greedy output then may differ from the same request decoded alone (float32
            keeps them identical).
        trust_remote_code: let the model folder run its own code.
        model_kwargs: more arguments for ``AutoModelForCausalLM.from_pretrained``.
        max_new_tokens: default output budget per call (``max_tokens`` overrides it).
        stop_sequences: default stop sequences, added to each call's own.
        stream: return async generators of chunks.
        max_batch_size: most requests decoded together.
        batch_wait: seconds to wait for more requests before starting an idle batch.
        cache_dir: where converted GGUF models are kept (default ``~/.cache/agentplex``).
        model: an already loaded ``(model, tokenizer)`` pair to serve instead of loading.
        prefix_cache_bytes: memory for the keys and values of prompt prefixes reused
            across calls (the same system prompt, an agent's growing history); 0: none.
        prefill_chunk: tokens per chunk when a long prompt joins requests that are
            decoding (default: sized so that a chunk costs about one decode step).
        gpu_memory: bytes of GPU memory this model may use (its placement's
            ``gpu_memory``): on CUDA the process's allocator is capped to it, and the
            prefix cache takes at most a quarter of it.

    Per call: ``stop_sequences`` (or ``stop``), ``max_new_tokens`` / ``max_tokens``,
    ``temperature``, ``top_p``, ``top_k``, ``seed``, ``do_sample``, ``grammar`` /
    ``response_format`` (``{"type": "json" | "regex" | "ebnf", "value": ...}``),
    ``chat_template_kwargs`` and ``logprobs`` / ``top_logprobs`` (each output token's
    log-probability in :attr:`ChatResponse.logprobs`). Decoding is greedy unless a
    temperature is given.
    """

    provider = "transformers"

    def __init__(
        self,
        model_id: str = DEFAULT_MODEL,
        *,
        device_map: Any = None,
        torch_dtype: Any = None,
        trust_remote_code: bool = False,
        model_kwargs: dict[str, Any] | None = None,
        max_new_tokens: int = 4096,
        max_tokens: int | None = None,
        stop_sequences: list[str] | None = None,
        stream: bool = False,
        max_batch_size: int = 64,
        batch_wait: float = 0.005,
        cache_dir: str | Path | None = None,
        model: tuple[Any, Any] | None = None,
        prefix_cache_bytes: int = 512 * 2**20,
        prefill_chunk: int | None = None,
        gpu_memory: int | None = None,
    ) -> None:
        self.max_new_tokens = max_tokens if max_tokens is not None else max_new_tokens
        self.stop_sequences = list(stop_sequences or [])
        if gpu_memory:
            prefix_cache_bytes = min(prefix_cache_bytes, gpu_memory // 4)
        engine_options = {"prefix_cache_bytes": prefix_cache_bytes,
                          "prefill_chunk": prefill_chunk}
        if model is not None:
            loaded = LoadedModel(model[0], model[1], model_id, "object", None)
            self._shared = _Shared(loaded, max_batch_size, batch_wait, **engine_options)
        else:
            key = (model_id, repr(device_map), repr(torch_dtype), trust_remote_code,
                   repr(sorted((model_kwargs or {}).items())), str(cache_dir))
            with _shared_lock:
                shared = _shared.get(key)
                if shared is None:
                    loaded = load_local_model(model_id, device_map=device_map,
                                              torch_dtype=torch_dtype,
                                              trust_remote_code=trust_remote_code,
                                              model_kwargs=model_kwargs, cache_dir=cache_dir,
                                              gpu_memory=gpu_memory)
                    shared = _Shared(loaded, max_batch_size, batch_wait, **engine_options)
                    _shared[key] = shared
            self._shared = shared
        super().__init__(self._shared.loaded.name, stream)

    @property
    def model(self) -> Any:
        """The underlying Transformers model."""
        return self._shared.loaded.model

    @property
    def tokenizer(self) -> Any:
        """The underlying tokenizer."""
        return self._shared.loaded.tokenizer

    @property
    def engine(self) -> BatchEngine:
        """The batching engine shared by every instance serving this model."""
        return self._shared.engine

    @property
    def source(self) -> str:
        """Where the weights came from: gguf, cache, folder, hub-cache or object."""
        return self._shared.loaded.source

    # -- formatting ----------------------------------------------------------------------

    def _supports_tools(self) -> bool:
        template = getattr(self.tokenizer, "chat_template", None) or ""
        return isinstance(template, str) and "tools" in template

    def format_prompt(
        self,
        messages: Messages,
        tools: list[dict[str, Any]] | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
    ) -> str:
        """The prompt text the model continues, with its chat template applied."""
        chat = [m for msg in messages for m in _to_chat(msg)]
        if tools and not self._supports_tools():
            chat = _with_tool_prompt(chat, tools)
            tools = None
        if not getattr(self.tokenizer, "chat_template", None):
            lines = [f"{m['role']}: {m.get('content') or ''}" for m in chat]
            return "\n".join([*lines, "assistant:"])
        prompt = self.tokenizer.apply_chat_template(
            chat, tools=tools or None, add_generation_prompt=True, tokenize=False,
            **(chat_template_kwargs or {}),
        )
        return str(prompt)

    # -- the call ------------------------------------------------------------------------

    async def _call(
        self,
        messages: Messages,
        tools: list[dict[str, Any]] | None,
        tool_choice: ToolChoice | None,
        structured_model: type[BaseModel] | None,
        **kwargs: Any,
    ) -> ChatResult:
        """Answer ``messages``; see the class docstring for the keyword arguments."""
        started = time.perf_counter()
        stream = bool(kwargs.pop("stream", self.stream))
        constraint, parse_tools = self._constraint(tools, tool_choice, structured_model, kwargs)
        use_tools = tools if tool_choice != "none" else None
        prompt = self.format_prompt(messages, use_tools, kwargs.pop("chat_template_kwargs", None))
        prompt_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        stops = [*self.stop_sequences, *_as_list(kwargs.pop("stop_sequences", None)),
                 *_as_list(kwargs.pop("stop", None))]
        budget = _first(kwargs.pop("max_tokens", None), kwargs.pop("max_new_tokens", None),
                        self.max_new_tokens)
        sampling = _sampling(kwargs)
        top = kwargs.pop("top_logprobs", None)
        scores = int(top or 0) if kwargs.pop("logprobs", None) or top else None
        if kwargs:
            raise UnsupportedOptionError(f"unknown arguments {sorted(kwargs)}",
                                         provider=self.provider, model=self.model_name)
        matcher = self._shared.grammar().matcher(constraint) if constraint is not None else None
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[GenerationEvent] = asyncio.Queue()

        def emit(event: GenerationEvent) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        request = GenerationRequest(
            prompt_ids=list(prompt_ids), max_new_tokens=int(budget), emit=emit,
            sampling=sampling, stop=tuple(s for s in stops if s), matcher=matcher,
            logprobs=scores,
        )
        opened = prompt.rstrip().endswith(THINK_BEGIN)
        assembler = OutputAssembler(ResponseBuilder(id=uuid.uuid4().hex), thinking=opened,
                                    parse_tools=parse_tools)
        context = _CallContext(self, request, events, assembler, structured_model, constraint,
                               started)
        try:
            self.engine.submit(request)
        except RuntimeError as exc:
            raise ModelError(str(exc), provider=self.provider, model=self.model_name) from exc
        if stream:
            return context.stream()
        try:
            return await context.final()
        finally:
            request.cancel()

    def _constraint(
        self,
        tools: list[dict[str, Any]] | None,
        tool_choice: ToolChoice | None,
        structured_model: type[BaseModel] | None,
        kwargs: dict[str, Any],
    ) -> tuple[Constraint | None, bool]:
        grammar = _first(kwargs.pop("grammar", None), kwargs.pop("response_format", None))
        if structured_model is not None:
            return constraint_from_format(structured_model), False
        if grammar is not None:
            return constraint_from_format(grammar), False
        if tools:
            return tool_constraint(tools, tool_choice), True
        return None, True


def create(model_name: str = "default", **kwargs: Any) -> TransformersChatModel:
    """The factory behind ``init_chat_model("transformers:<model id or path>")``."""
    return TransformersChatModel(model_name or "default", **kwargs)


class _CallContext:
    """One call's state on the caller's side: turns worker events into responses."""

    def __init__(self, model: TransformersChatModel, request: GenerationRequest,
                 events: asyncio.Queue[GenerationEvent], assembler: OutputAssembler,
                 structured_model: type[BaseModel] | None, constraint: Constraint | None,
                 started: float) -> None:
        self.model = model
        self.request = request
        self.events = events
        self.assembler = assembler
        self.structured_model = structured_model
        self.constraint = constraint
        self.started = started
        self.text = ""
        self.output_tokens = 0
        self.logprobs: list[TokenLogprob] | None = [] if request.logprobs is not None else None

    def _error(self, exc: BaseException) -> ModelError:
        error = ModelError(f"generation failed: {exc}", provider="transformers",
                           model=self.model.model_name)
        error.__cause__ = exc
        return error

    async def _next(self) -> GenerationEvent:
        event = await self.events.get()
        if event.error is not None:
            raise self._error(event.error)
        self.text += event.text
        self.output_tokens = max(self.output_tokens, event.output_tokens)
        if self.logprobs is not None:
            self.logprobs.extend(
                TokenLogprob(token=token, logprob=value,
                             top_logprobs=[TopLogprob(token=t, logprob=v) for t, v in top])
                for token, value, top in event.logprobs)
        return event

    def _chunk(self, **kwargs: Any) -> ChatResponse:
        chunk = self.assembler.builder.chunk(**kwargs)
        if self.logprobs is not None:
            chunk.logprobs = list(self.logprobs)
        return chunk

    def _last(self, reason: str) -> ChatResponse:
        self.assembler.update(self.text, final=True)
        usage = ChatUsage(input_tokens=len(self.request.prompt_ids),
                          output_tokens=self.output_tokens,
                          time=time.perf_counter() - self.started)
        return self._chunk(is_last=True, usage=usage, finish_reason=reason,
                           metadata=self._metadata())

    def _metadata(self) -> dict[str, Any] | None:
        if self.structured_model is not None:
            try:
                return self.structured_model.model_validate_json(self.text).model_dump()
            except ValidationError as exc:
                raise StructuredOutputError(
                    f"output does not validate against {self.structured_model.__name__} "
                    f"(finish: {self.request.finish_reason}): {exc}", raw=self.text,
                    provider="transformers", model=self.model.model_name) from exc
        if self.constraint is not None and self.constraint.kind == "json":
            try:
                value = json.loads(self.text)
            except ValueError as exc:
                raise StructuredOutputError("output is not JSON", raw=self.text,
                                            provider="transformers",
                                            model=self.model.model_name) from exc
            return value if isinstance(value, dict) else {"value": value}
        return None

    async def final(self) -> ChatResponse:
        while True:
            event = await self._next()
            if event.finish_reason is not None:
                return self._last(event.finish_reason)

    async def stream(self) -> AsyncGenerator[ChatResponse, None]:
        try:
            while True:
                event = await self._next()
                if event.finish_reason is not None:
                    yield self._last(event.finish_reason)
                    return
                if self.assembler.update(self.text, final=False):
                    yield self._chunk()
        finally:
            self.request.cancel()


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _sampling(kwargs: dict[str, Any]) -> Sampling:
    values = {k: kwargs.pop(k) for k in _SAMPLING_KEYS if k in kwargs}
    do_sample = values.pop("do_sample", None)
    temperature = float(values.get("temperature") or 0.0)
    if do_sample and temperature == 0.0:
        temperature = 1.0
    if do_sample is False:
        temperature = 0.0
    return Sampling(temperature=temperature, top_p=float(values.get("top_p") or 1.0),
                    top_k=int(values.get("top_k") or 0), seed=values.get("seed"))


def _to_chat(message: Msg | dict[str, Any]) -> list[dict[str, Any]]:
    """One history entry as chat-template messages (tool results become ``tool`` messages)."""
    if isinstance(message, dict):
        content = message.get("content")
        if isinstance(content, list):
            parts = [p.get("text", "") for p in content if p.get("type") == "text"]
            return [{**message, "content": "\n".join(parts)}]
        return [dict(message)]
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    out: list[dict[str, Any]] = []
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.content:
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ToolUseBlock):
            calls.append({"type": "function", "id": block.id,
                          "function": {"name": block.name, "arguments": block.input}})
            texts.append(f"{TOOL_CALL_BEGIN}\n"
                         f"{json.dumps({'name': block.name, 'arguments': block.input})}\n"
                         f"{TOOL_CALL_END}")
        elif isinstance(block, ToolResultBlock):
            media = [] if isinstance(block.output, str) else [
                b.type for b in block.output if not isinstance(b, TextBlock)]
            if media:
                raise UnsupportedOptionError(
                    f"the tool {block.name!r} returned {', '.join(media)} content, which "
                    "local text models cannot take", provider="transformers")
            output = block.output if isinstance(block.output, str) else "\n".join(
                b.text for b in block.output if isinstance(b, TextBlock))
            out.append({"role": "tool", "name": block.name, "tool_call_id": block.id,
                        "content": output})
        elif not isinstance(block, ThinkingBlock):
            raise UnsupportedOptionError(f"{block.type} blocks are not supported by local "
                                         "text models", provider="transformers")
    head: list[dict[str, Any]] = []
    if texts or calls:
        head = [{"role": message.role, "content": "\n".join(texts)}]
    return head + out


def _with_tool_prompt(
    chat: list[dict[str, Any]], tools: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Describe ``tools`` in the system message, for templates that know no tools."""
    specs = "\n".join(json.dumps(t.get("function", t)) for t in tools)
    note = (
        "You can call these tools:\n" + specs + "\nTo call one, answer with\n"
        f'{TOOL_CALL_BEGIN}\n{{"name": <tool name>, "arguments": <arguments object>}}\n'
        f"{TOOL_CALL_END}"
    )
    if chat and chat[0].get("role") == "system":
        return [{**chat[0], "content": f"{chat[0].get('content') or ''}\n\n{note}"}, *chat[1:]]
    return [{"role": "system", "content": note}, *chat]
