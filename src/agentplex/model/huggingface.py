"""Hugging Face inference: :class:`HuggingFaceChatModel` over ``AsyncInferenceClient``.

Hugging Face's chat-completion route speaks the OpenAI wire schema, so the request body
and the answer readers are those of :mod:`agentplex.model.openai`; only the client (the
official ``huggingface_hub`` async inference client), its errors and the form of a schema
sent to a server of one's own differ.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ._errors import ModelError
from ._hosted import Request
from ._structured import StructuredMode
from .openai import ChatCompletionsModel

__all__ = ["HuggingFaceChatModel"]


class HuggingFaceChatModel(ChatCompletionsModel):
    """A model on Hugging Face's inference providers, an Inference Endpoint or a TGI server.

    Args:
        model_name: the model id (e.g. ``meta-llama/Llama-3.1-8B-Instruct``).
        stream: stream chunks.
        provider: the inference provider (``together``, ``hf-inference``, ``auto`` ...).
        base_url: a server's URL (an endpoint, TGI, vLLM); ``/v1/chat/completions`` is
            appended by the client. ``provider`` is then not used.
        api_key: the access token (every provider's name for it); defaults to ``HF_TOKEN``
            or the token ``hf auth login`` saved.
        token: the same, under the Hugging Face client's own name.
        bill_to: the organization billed for the requests.
        client_args / generate_kwargs: more arguments for the client / every call.
        **kwargs: generation arguments (``temperature``, ``max_tokens``, ``stop`` ...;
            ``top_k`` is not on this wire), ``max_retries``, ``timeout``,
            ``custom_role_conversions``, ``retry_policy``, ``structured_output``, and any
            other argument of ``chat_completion``.
    """

    provider = "huggingface"
    json_object_mode = False  # its response_format is TGI's grammar, which needs a schema

    def __init__(
        self,
        model_name: str,
        stream: bool = False,
        provider: str | None = None,
        base_url: str | None = None,
        token: str | None = None,
        bill_to: str | None = None,
        api_key: str | None = None,
        client_args: dict[str, Any] | None = None,
        generate_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        from huggingface_hub import AsyncInferenceClient, get_token

        super().__init__(model_name, stream, generate_kwargs=generate_kwargs, **kwargs)
        self.own_server = base_url is not None
        # the hub's own token (HF_TOKEN or the one `hf auth login` saved) unless given;
        # a server of one's own (base_url) may need none
        self.client = AsyncInferenceClient(**self._client_args(
            client_args, provider=None if base_url else provider, base_url=base_url,
            token=self._credential(api_key or token or get_token(), "HF_TOKEN",
                                   required=base_url is None),
            bill_to=bill_to, timeout=self.timeout))

    def _build(self, request: Request) -> dict[str, Any]:
        """The OpenAI body; for a server of one's own (``base_url``), the schema goes in the
        grammar form both TGI (``value``) and llama.cpp's server (``schema``) enforce (the
        client would turn OpenAI's ``json_schema`` form into TGI's alone, which llama.cpp's
        server reads as "any JSON object")."""
        body = super()._build(request)
        if request.schema is not None and self.own_server:
            schema = request.schema.model_json_schema()
            body["response_format"] = {"type": "json_object", "value": schema,
                                       "schema": schema}
        return body

    def _structured_how(self, mode: StructuredMode) -> str:
        if mode != "native":
            return super()._structured_how(mode)
        if self.own_server:
            return ("the schema sent as a grammar (response_format json_object with the "
                    "schema as 'value' and 'schema'), which TGI and llama.cpp's server "
                    "enforce but other servers (vLLM's among them) ignore; "
                    "structured_output='tool' asks for a forced tool call instead")
        return ("the schema sent as a JSON-schema response format, which huggingface_hub "
                "converts to the inference provider's form; a provider may not enforce it "
                "(structured_output='tool' asks for a forced tool call instead)")

    async def _send(self, body: dict[str, Any]) -> Any:
        await _detect_agent_off_the_loop()
        return await self.client.chat_completion(**body)

    async def _send_stream(
        self, body: dict[str, Any]
    ) -> tuple[AsyncIterator[Any], Callable[[], Awaitable[None]]]:
        await _detect_agent_off_the_loop()
        stream = await self.client.chat_completion(**body)

        async def close() -> None:
            await stream.aclose()

        return stream, close

    def _map_error(self, exc: Exception) -> ModelError:
        from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError

        if isinstance(exc, InferenceTimeoutError):
            return self._timeout_error(exc)
        if isinstance(exc, HfHubHTTPError) and exc.response is not None:
            status = exc.response.status_code
            return self._http_error(status, f"HTTP {status}: {exc}", exc.response.headers)
        return self._generic_error(exc)


_agent_detected = False


async def _detect_agent_off_the_loop() -> None:
    """huggingface_hub names the calling agent in every request's User-Agent; the first time
    in a process it fetches a registry from the Hub for that with a blocking GET (up to 3 s,
    whatever ``base_url`` says). Run that once in a thread, never on the event loop."""
    global _agent_detected
    if _agent_detected:
        return
    from huggingface_hub import utils

    detect_agent = getattr(utils, "detect_agent", None)  # absent from older SDKs
    if detect_agent is not None:
        await asyncio.to_thread(detect_agent)
    _agent_detected = True
