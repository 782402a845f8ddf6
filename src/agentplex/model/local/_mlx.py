"""Apple's MLX framework through ``mlx-lm``: :class:`MLXChatModel` (smolagents' ``MLXModel``).

``mlx`` runs on Apple silicon and, with the ``mlx-cpu`` wheel, on Linux CPUs too. One worker
thread per model generates (MLX streams are thread-local); calls queue for it. The prompt,
tool rendering and output parsing (``<think>`` sections, ``<tool_call>`` calls) are those of
the Transformers model; structured output asks for JSON and validates it (one repair round),
as MLX has no constrained decoding here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ...engine.lowlevel import handoff_for, held_back
from ...message import Msg
from .._base import ChatModelBase, ChatResult, Messages, ToolChoice
from .._errors import ModelError, ModelNotAvailableError, UnsupportedOptionError
from .._formatting import normalize_tool_choice
from .._options import GenerationOptions, normalize_options, split_options
from .._response import ChatResponse, ChatUsage
from .._stream import ResponseBuilder
from .._structured import StructuredRequest, run_structured
from ._chat_format import to_chat, with_tool_prompt
from ._loading import cache_root, converted_folder, embedded_gguf, is_default_model
from ._output import THINK_BEGIN, OutputAssembler

__all__ = ["MLXChatModel"]

_UNSUPPORTED = frozenset({"presence_penalty", "frequency_penalty"})


def _default_folder(cache_dir: str | Path | None) -> Path:
    """The safetensors folder the Transformers model converted the embedded GGUF into."""
    folder = converted_folder(embedded_gguf(), Path(cache_dir) if cache_dir else cache_root())
    if not (folder / "config.json").exists():
        raise ModelNotAvailableError(
            f"the embedded model has not been converted yet ({folder}); load it once with "
            "TransformersChatModel('default') (the 'local' extra), which converts it",
            model="default", provider="mlx")
    return folder


class MLXChatModel(ChatModelBase):
    """A chat model running on MLX (``pip install 'agentplex[mlx]'``).

    Args:
        model_id: a local folder in the MLX / Hugging Face layout (safetensors, config,
            tokenizer), or ``"default"``: the embedded SmolLM2 as converted by
            :class:`TransformersChatModel`. Nothing is downloaded.
        stream: return async generators of chunks.
        max_tokens: default output budget per call.
        stop_sequences: default stop sequences, added to each call's own.
        cache_dir: where the converted default model lives.
        trust_remote_code / tokenizer_config: passed to ``mlx_lm.load``.
        model: an already loaded ``(model, tokenizer)`` pair.
        **generate_kwargs: default generation arguments (``temperature``, ``top_p``,
            ``top_k``, ``seed``, ``stop``, ``max_tokens``); the penalties raise
            :class:`UnsupportedOptionError`.
    """

    provider = "mlx"

    def __init__(
        self,
        model_id: str = "default",
        *,
        stream: bool = False,
        max_tokens: int = 1024,
        stop_sequences: list[str] | None = None,
        cache_dir: str | Path | None = None,
        trust_remote_code: bool = False,
        tokenizer_config: dict[str, Any] | None = None,
        model: tuple[Any, Any] | None = None,
        **generate_kwargs: Any,
    ) -> None:
        super().__init__(model_id, stream)
        self.max_tokens = max_tokens
        self.stop_sequences = list(stop_sequences or [])
        self.generate_kwargs = normalize_options(generate_kwargs)
        self._generation(dict(self.generate_kwargs))
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mlx")
        if model is not None:
            self.model, self.tokenizer = model
        else:
            path = _default_folder(cache_dir) if is_default_model(model_id) else Path(model_id)
            if not path.is_dir():
                raise ModelNotAvailableError(f"no model folder at {path}", model=model_id,
                                             provider=self.provider)
            self.model, self.tokenizer = self._executor.submit(
                self._load, str(path), trust_remote_code, tokenizer_config).result()

    @staticmethod
    def _load(path: str, trust_remote_code: bool, tokenizer_config: dict[str, Any] | None
              ) -> tuple[Any, Any]:
        from mlx_lm import load

        loaded = load(path, tokenizer_config=tokenizer_config,
                      trust_remote_code=trust_remote_code)
        return loaded[0], loaded[1]

    async def aclose(self) -> None:
        """Stop the worker thread (after the generation under way)."""
        await asyncio.to_thread(self._executor.shutdown, True)

    def _generation(self, kwargs: dict[str, Any]) -> GenerationOptions:
        options, rest = split_options(kwargs, provider=self.provider, model=self.model_name)
        refused = sorted((_UNSUPPORTED & set(options.given())) | set(rest))
        if refused:
            raise UnsupportedOptionError(f"mlx cannot honour {', '.join(refused)}",
                                         provider=self.provider, model=self.model_name,
                                         options=tuple(refused))
        return options

    def format_prompt(self, messages: Sequence[Msg | dict[str, Any]],
                      tools: list[dict[str, Any]] | None = None) -> str:
        """The prompt text, with the model's chat template applied."""
        chat = [m for msg in messages for m in to_chat(msg)]
        template = getattr(self.tokenizer, "chat_template", None)
        if tools and not (isinstance(template, str) and "tools" in template):
            chat, tools = with_tool_prompt(chat, tools), None
        if not template:
            lines = [f"{m['role']}: {m.get('content') or ''}" for m in chat]
            return "\n".join([*lines, "assistant:"])
        return str(self.tokenizer.apply_chat_template(
            chat, tools=tools or None, add_generation_prompt=True, tokenize=False))

    async def count_tokens(self, messages: Sequence[Msg | dict[str, Any]],
                           tools: Sequence[dict[str, Any]] | None = None) -> int:
        """The exact prompt length under the model's template and tokenizer."""
        prompt = self.format_prompt(messages, list(tools) if tools else None)
        return len(self.tokenizer.encode(prompt, add_special_tokens=False))

    async def _call(
        self,
        messages: Messages,
        tools: list[dict[str, Any]] | None,
        tool_choice: ToolChoice | None,
        structured_model: type[BaseModel] | None,
        **kwargs: Any,
    ) -> ChatResult:
        stream = bool(kwargs.pop("stream", self.stream))
        normalize_tool_choice(tool_choice, tools, self.provider, self.model_name)
        if tool_choice not in (None, "auto", "none"):
            raise UnsupportedOptionError(
                "mlx cannot force a tool call (no constrained decoding)",
                provider=self.provider, model=self.model_name, options=("tool_choice",))
        options = self._generation({**self.generate_kwargs, **normalize_options(kwargs)})
        history = list(messages)
        if structured_model is not None:
            async def attempt(h: list[Any], _: StructuredRequest) -> ChatResponse:
                return await _final(self._run(h, None, options))

            response = await run_structured(attempt, history, structured_model,
                                            mode="json_object", provider=self.provider,
                                            model=self.model_name)
            return _one_chunk(response) if stream else response
        use_tools = tools if tool_choice != "none" else None
        result = self._run(history, use_tools, options)
        return result if stream else await _final(result)

    async def _run(self, history: list[Any], tools: list[dict[str, Any]] | None,
                   options: GenerationOptions) -> AsyncGenerator[ChatResponse, None]:
        started = time.perf_counter()
        prompt = self.format_prompt(history, tools)
        stops = tuple(s for s in [*self.stop_sequences, *(options.stop or [])] if s)
        handoff = handoff_for(asyncio.get_running_loop())
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancelled = threading.Event()

        def put(kind: str, value: Any) -> None:
            handoff.send(queue, (kind, value))

        self._executor.submit(self._generate, prompt, options, stops, put, cancelled)
        assembler = OutputAssembler(ResponseBuilder(id=uuid.uuid4().hex),
                                    thinking=prompt.rstrip().endswith(THINK_BEGIN),
                                    parse_tools=bool(tools))
        text = ""
        try:
            while True:
                kind, value = await queue.get()
                if kind == "error":
                    raise ModelError(f"generation failed: {value}", provider=self.provider,
                                     model=self.model_name) from value
                if kind == "text":
                    text = value
                    if assembler.update(text, final=False):
                        yield assembler.builder.chunk()
                    continue
                reason, prompt_tokens, output_tokens = value
                assembler.update(text, final=True)
                usage = ChatUsage(input_tokens=prompt_tokens, output_tokens=output_tokens,
                                  time=time.perf_counter() - started)
                yield assembler.builder.chunk(is_last=True, usage=usage, finish_reason=reason)
                return
        finally:
            cancelled.set()

    def _generate(self, prompt: str, options: GenerationOptions, stops: tuple[str, ...],
                  put: Any, cancelled: threading.Event) -> None:
        """The worker: generate, sending the visible text so far and then the finish."""
        try:
            import mlx.core as mx
            from mlx_lm import stream_generate
            from mlx_lm.sample_utils import make_sampler

            if options.seed is not None:
                mx.random.seed(options.seed)
            sampler = make_sampler(temp=options.temperature or 0.0,
                                   top_p=options.top_p or 0.0, top_k=options.top_k or 0)
            budget = options.max_tokens or self.max_tokens
            eos = set(getattr(self.tokenizer, "eos_token_ids", None) or ())
            ids: list[int] = []
            text, reason, prompt_tokens, output_tokens, sent = "", "length", 0, 0, 0
            # token ids, not text: mlx-lm would add a BOS token the chat template already
            # decided about (the Transformers model and count_tokens add none either)
            prompt_ids = list(self.tokenizer.encode(prompt, add_special_tokens=False))
            for step in stream_generate(self.model, self.tokenizer, prompt_ids,
                                        max_tokens=budget, sampler=sampler):
                if cancelled.is_set():
                    return
                # decoded with the model's own tokenizer: mlx-lm's streaming detokenizers
                # guess the tokenizer's kind and garble byte-level BPE vocabularies they
                # do not recognise
                if int(step.token) not in eos:
                    ids.append(int(step.token))
                    text = self.tokenizer.decode(ids, skip_special_tokens=False)
                prompt_tokens, output_tokens = step.prompt_tokens, step.generation_tokens
                hit = min((text.find(s) for s in stops if s in text), default=-1)
                if hit >= 0:
                    text, reason = text[:hit], "stop"
                    break
                if step.finish_reason is not None:
                    reason = "stop" if step.finish_reason == "stop" else "length"
                if text.endswith("\ufffd"):  # half a UTF-8 character: wait for the rest
                    continue
                visible = len(text) - held_back(text, stops)
                if visible > sent:
                    sent = visible
                    put("text", text[:visible])
            put("text", text)
            put("done", (reason, prompt_tokens, output_tokens))
        except Exception as exc:
            put("error", exc)


async def _final(result: AsyncGenerator[ChatResponse, None]) -> ChatResponse:
    last: ChatResponse | None = None
    async for chunk in result:
        last = chunk
    assert last is not None
    return last


async def _one_chunk(response: ChatResponse) -> AsyncGenerator[ChatResponse, None]:
    yield response
