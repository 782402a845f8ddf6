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
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ...engine import (
    BatchEngine,
    Constraint,
    EngineError,
    GenerationEvent,
    GenerationRequest,
    GrammarFactory,
    Sampling,
)
from ...engine.lowlevel import handoff_for
from ...message import Msg
from .._base import ChatModelBase, ChatResult, Messages, ToolChoice
from .._errors import (
    ModelError,
    ModelTimeoutError,
    StructuredOutputError,
    UnsupportedOptionError,
)
from .._formatting import normalize_tool_choice
from .._options import GenerationOptions, normalize_options, split_options
from .._response import ChatResponse, ChatUsage, TokenLogprob, TopLogprob
from .._stream import ResponseBuilder
from ._chat_format import end_of_generation_ids, to_chat, with_tool_prompt
from ._constraints import constraint_from_format, tool_constraint
from ._loading import (
    DEFAULT_MODEL,
    LoadedModel,
    is_default_model,
    load_local_model,
    quantize_for,
)
from ._output import THINK_BEGIN, OutputAssembler
from ._quantize import quantization_of

__all__ = ["TransformersChatModel", "create"]



class _Shared:
    """A loaded model with its engine and grammar factory, shared by equal instances."""

    def __init__(self, loaded: LoadedModel, max_batch_size: int, batch_wait: float,
                 **engine_options: Any) -> None:
        self.loaded = loaded
        tok = loaded.tokenizer
        generation = getattr(loaded.model, "generation_config", None)
        self.eos_ids = end_of_generation_ids(tok, getattr(generation, "eos_token_id", None))
        self.vocab_size = _vocab_size(loaded.model.get_output_embeddings())
        self._grammar: GrammarFactory | None = None
        self._lock = threading.Lock()
        if loaded.quantize is not None:  # bf16 keys and values (see docs/local-models.md)
            import torch

            engine_options.setdefault("kv_dtype", torch.bfloat16)
        self.engine = BatchEngine(loaded.model, tok, eos_ids=self.eos_ids,
                                  max_batch_size=max_batch_size, batch_wait=batch_wait,
                                  **engine_options)
        self.users = 0
        """Model instances using this engine (the cache frees it when none is left)."""

    def grammar(self) -> GrammarFactory:
        with self._lock:
            if self._grammar is None:
                self._grammar = GrammarFactory(self.loaded.tokenizer, self.vocab_size,
                                               sorted(self.eos_ids))
                self.engine.grammar = self._grammar
            return self._grammar


def _vocab_size(output: Any) -> int:
    """Rows of the output layer: a float ``Linear``'s weight, or a quantized one's
    ``out_features``."""
    features = getattr(output, "out_features", None)
    return int(features) if features is not None else int(output.weight.shape[0])


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
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:1"`` ...): shorthand for ``device_map``.
        max_new_tokens: default output budget per call (``max_tokens`` overrides it).
        stop_sequences: default stop sequences, added to each call's own.
        **generate_kwargs: default generation arguments for every call (``temperature``,
            ``top_p``, ``top_k``, ``seed``, ``stop``, ``max_tokens``, ``do_sample``);
            ``presence_penalty`` and ``frequency_penalty`` raise
            :class:`UnsupportedOptionError`.
        stream: return async generators of chunks.
        max_batch_size: most requests decoded together.
        batch_wait: how long an idle batch waits for more requests: until this passes without
            a new one (at most ten times this), so that requests sent together start together.
        cache_dir: where converted GGUF models are kept (default ``~/.cache/agentplex``).
        model: an already loaded ``(model, tokenizer)`` pair to serve instead of loading.
        prefix_cache_bytes: memory for the keys and values of prompt prefixes reused
            across calls (the same system prompt, an agent's growing history); 0: none.
        prefill_chunk: tokens per chunk when a long prompt joins requests that are
            decoding (default: sized so that a chunk costs about one decode step).
        prefix_block: tokens per block of the prefix cache: prompts share cached keys and
            values in whole blocks, so a smaller block reuses more of a shared prefix.
        gpu_memory: bytes of GPU memory this model may use (its placement's
            ``gpu_memory``): on CUDA the process's allocator is capped to it, and the
            prefix cache takes at most a quarter of it.
        quantize: ``"int8"``: the linear layers' weights in int8, on the CPU (weight-only;
            a batched row's values never depend on the rows beside it, but one row alone and
            the same row in a batch of more than four take different kernels, whose results
            differ in about 1 output in 10,000 by one bf16 step); ``"int4"``: 4-bit weights
            in groups of 32, the output layer int8 (the same batching rule, but the two
            kernels differ by one bf16 step in many outputs); ``"auto"`` (default): int4
            (int8 where torch lacks the int4 kernel) for the embedded model on a CPU with
            float32 weights, the float weights for any other model, device or dtype;
            ``None``: the float weights (a request's greedy tokens then do not depend on
            its batch). With ``model=``, quantize the pair first with
            :func:`~agentplex.model.local.quantize_model`.
        cpu_threads: torch's threads for the engine's thread on a CPU (``None``: 1 on a
            machine with at most 2 cores, torch's own count elsewhere; the caller's
            threads keep theirs).
        timeout: seconds a call may take, from its start to its last token (streamed: to
            each next chunk), before it is cancelled (its row leaves the batch) and raises
            :class:`ModelTimeoutError`; ``None`` (default): no limit. A call's own
            ``timeout=`` overrides it.

    Per call: ``timeout``, ``stop_sequences`` (or ``stop``), ``max_new_tokens`` / ``max_tokens``,
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
        device: str | None = None,
        prefix_cache_bytes: int = 512 * 2**20,
        prefill_chunk: int | None = None,
        prefix_block: int = 32,
        gpu_memory: int | None = None,
        quantize: str | None = "auto",
        cpu_threads: int | None = None,
        timeout: float | None = None,
        **generate_kwargs: Any,
    ) -> None:
        self.timeout = _checked_timeout(timeout)
        self.max_new_tokens = max_tokens if max_tokens is not None else max_new_tokens
        self.stop_sequences = list(stop_sequences or [])
        if device is not None:
            if device_map is not None:
                raise ValueError("give device or device_map, not both")
            device_map = device
        self.generate_kwargs = normalize_options(generate_kwargs)
        self._generation({k: v for k, v in self.generate_kwargs.items()  # bad arguments fail
                          if k not in ("logprobs", "top_logprobs")}, model_id)
        self._key: tuple[Any, ...] | None = None
        if gpu_memory:
            prefix_cache_bytes = min(prefix_cache_bytes, gpu_memory // 4)
        engine_options = {"prefix_cache_bytes": prefix_cache_bytes,
                          "prefill_chunk": prefill_chunk, "prefix_block": prefix_block,
                          "cpu_threads": cpu_threads}
        if model is not None:
            loaded = LoadedModel(model[0], model[1], model_id, "object", None,
                                 quantization_of(model[0]))
            self._shared = _Shared(loaded, max_batch_size, batch_wait, **engine_options)
        else:
            name = DEFAULT_MODEL if is_default_model(model_id) else model_id  # "default" too
            quantize = quantize_for(model_id, quantize, device_map, torch_dtype)  # "auto" too
            load_key = (name, repr(device_map), repr(torch_dtype), trust_remote_code,
                        repr(sorted((model_kwargs or {}).items())), str(cache_dir), gpu_memory,
                        quantize)
            self._key = (load_key, max_batch_size, batch_wait, prefix_cache_bytes, prefill_chunk,
                         prefix_block, cpu_threads)
            with _shared_lock:
                shared = _shared.get(self._key)
                if shared is None:
                    same_weights = next((s for k, s in _shared.items() if k[0] == load_key),
                                        None)
                    loaded = same_weights.loaded if same_weights is not None else (
                        load_local_model(model_id, device_map=device_map,
                                         torch_dtype=torch_dtype,
                                         trust_remote_code=trust_remote_code,
                                         model_kwargs=model_kwargs, cache_dir=cache_dir,
                                         gpu_memory=gpu_memory, quantize=quantize))
                    shared = _Shared(loaded, max_batch_size, batch_wait, **engine_options)
                    _shared[self._key] = shared
                shared.users += 1
            self._shared = shared
        self._closed = False
        super().__init__(self._shared.loaded.name, stream)

    async def aclose(self) -> None:
        """Release this instance; the last instance sharing an engine stops its worker
        and frees the weights (unless an engine with other batch settings still uses
        them). Idempotent."""
        if self._closed:
            return
        self._closed = True
        shared = self._shared
        with _shared_lock:
            shared.users -= 1
            last = shared.users <= 0
            if last and self._key is not None:
                _shared.pop(self._key, None)
        if last:
            await asyncio.to_thread(shared.engine.close)

    async def __aenter__(self) -> TransformersChatModel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

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

    @property
    def quantize(self) -> str | None:
        """The weights' quantization (``"int8"``, ``"int4"``), or ``None`` for float weights."""
        return self._shared.loaded.quantize

    @property
    def settings(self) -> dict[str, str]:
        """The weights (``int4``, ``int8``, or the float dtype: ``float32``, ``bfloat16``),
        for a run's manifest: the same model answers differently with each."""
        if self.quantize is not None:
            return {"weights": self.quantize}
        dtype = getattr(self._shared.loaded.model, "dtype", None)
        return {"weights": str(dtype).removeprefix("torch.")} if dtype is not None else {}

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
        chat = [m for msg in messages for m in to_chat(msg)]
        if tools and not self._supports_tools():
            chat = with_tool_prompt(chat, tools)
            tools = None
        if not getattr(self.tokenizer, "chat_template", None):
            lines = [f"{m['role']}: {m.get('content') or ''}" for m in chat]
            return "\n".join([*lines, "assistant:"])
        prompt = self.tokenizer.apply_chat_template(
            chat, tools=tools or None, add_generation_prompt=True, tokenize=False,
            **(chat_template_kwargs or {}),
        )
        return str(prompt)

    async def count_tokens(self, messages: Sequence[Msg | dict[str, Any]],
                           tools: Sequence[dict[str, Any]] | None = None) -> int:
        """The exact prompt length: the chat template applied, then the tokenizer."""
        prompt = self.format_prompt(list(messages), list(tools) if tools else None)  # type: ignore[arg-type]
        return len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])

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
        timeout = _checked_timeout(kwargs.pop("timeout", self.timeout))
        stream = bool(kwargs.pop("stream", self.stream))
        normalize_tool_choice(tool_choice, tools, self.provider, self.model_name)
        constraint, parse_tools = self._constraint(tools, tool_choice, structured_model, kwargs)
        use_tools = tools if tool_choice != "none" else None
        prompt = self.format_prompt(messages, use_tools, kwargs.pop("chat_template_kwargs", None))
        prompt_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        call = {**self.generate_kwargs, **normalize_options(kwargs)}
        top = call.pop("top_logprobs", None)
        scores = int(top or 0) if call.pop("logprobs", None) or top else None
        options, sampling = self._generation(call, self.model_name)
        stops = [*self.stop_sequences, *(options.stop or [])]
        budget = _first(options.max_tokens, self.max_new_tokens)
        matcher = self._shared.grammar().matcher(constraint) if constraint is not None else None
        handoff = handoff_for(asyncio.get_running_loop())
        events: asyncio.Queue[GenerationEvent] = asyncio.Queue()

        def emit(event: GenerationEvent) -> None:
            handoff.send(events, event)

        request = GenerationRequest(
            prompt_ids=list(prompt_ids), max_new_tokens=int(budget), emit=emit,
            sampling=sampling, stop=tuple(s for s in stops if s), matcher=matcher,
            logprobs=scores, stream=stream,
        )
        opened = prompt.rstrip().endswith(THINK_BEGIN)
        assembler = OutputAssembler(ResponseBuilder(id=uuid.uuid4().hex), thinking=opened,
                                    parse_tools=parse_tools)
        context = _CallContext(self, request, events, assembler, structured_model, constraint,
                               started, timeout)
        try:
            self.engine.submit(request)
        except EngineError as exc:
            raise ModelError(str(exc), provider=self.provider, model=self.model_name) from exc
        if stream:
            return context.stream()
        try:
            return await context.final()
        finally:
            request.cancel()

    def _generation(self, kwargs: dict[str, Any], model: str
                    ) -> tuple[GenerationOptions, Sampling]:
        """Our generation arguments and the engine's sampling from ``kwargs`` (emptied)."""
        do_sample = kwargs.pop("do_sample", None)
        options, rest = split_options(kwargs, provider=self.provider, model=model)
        refused = sorted({"presence_penalty", "frequency_penalty"} & set(options.given()))
        if refused:
            raise UnsupportedOptionError(
                f"transformers cannot honour {', '.join(refused)}", provider=self.provider,
                model=model, options=tuple(refused))
        if rest:
            raise UnsupportedOptionError(f"unknown arguments {sorted(rest)}",
                                         provider=self.provider, model=model,
                                         options=tuple(sorted(rest)))
        return options, _sampling(options, do_sample)

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
                 started: float, timeout: float | None) -> None:
        self.model = model
        self.timeout = timeout
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

    async def _next(self, deadline: float | None) -> GenerationEvent:
        """The next event, by ``deadline`` (``time.perf_counter()``) if given."""
        if deadline is None:
            event = await self.events.get()
        else:
            try:
                event = await asyncio.wait_for(self.events.get(),
                                               max(0.0, deadline - time.perf_counter()))
            except TimeoutError:
                raise ModelTimeoutError(
                    f"no answer within {self.timeout} s ({self.output_tokens} tokens so far)",
                    provider="transformers", model=self.model.model_name) from None
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
        deadline = None if self.timeout is None else self.started + self.timeout
        while True:
            event = await self._next(deadline)
            if event.finish_reason is not None:
                return self._last(event.finish_reason)

    async def stream(self) -> AsyncGenerator[ChatResponse, None]:
        try:
            while True:
                event = await self._next(None if self.timeout is None
                                         else time.perf_counter() + self.timeout)
                if event.finish_reason is not None:
                    yield self._last(event.finish_reason)
                    return
                if self.assembler.update(self.text, final=False):
                    yield self._chunk()
        finally:
            self.request.cancel()


def _checked_timeout(timeout: Any) -> float | None:
    """``timeout`` as seconds, or ``None``; anything else (zero, negative, not a number)
    raises :class:`UnsupportedOptionError`."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise UnsupportedOptionError(f"timeout must be a positive number of seconds or None, "
                                     f"not {timeout!r}", provider="transformers",
                                     options=("timeout",))
    return float(timeout)


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _sampling(options: GenerationOptions, do_sample: bool | None) -> Sampling:
    temperature = float(options.temperature or 0.0)
    if do_sample and temperature == 0.0:
        temperature = 1.0
    if do_sample is False:
        temperature = 0.0
    return Sampling(temperature=temperature, top_p=float(options.top_p or 1.0),
                    top_k=int(options.top_k or 0), seed=options.seed)
