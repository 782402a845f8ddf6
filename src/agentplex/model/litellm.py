"""LiteLLM as a provider: :class:`LiteLLMChatModel` over ``litellm.acompletion``.

For the providers we do not wrap natively (Bedrock, Vertex AI, Mistral, Groq, DeepSeek,
...): ``init_chat_model("litellm:groq/llama-3.1-8b-instant")``. LiteLLM speaks the
chat-completions schema in and out, so the request body and the answer readers are those of
:mod:`agentplex.model.openai`; LiteLLM translates them to each provider's wire.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ._errors import ModelError, UnsupportedOptionError
from .openai import ChatCompletionsModel

__all__ = ["LiteLLMChatModel"]


def _litellm() -> Any:
    # LiteLLM fetches its model-price map from the network on import unless told not to.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    return litellm


class LiteLLMChatModel(ChatCompletionsModel):
    """Any model LiteLLM routes to, through its async ``acompletion``.

    Args:
        model_name: LiteLLM's ``provider/model`` name (``bedrock/...``, ``groq/...``,
            ``openai/...`` for any OpenAI-compatible server with ``api_base``).
        api_key: the key (default: the provider's usual variable, read by LiteLLM).
        stream: stream chunks.
        api_base: the server's URL (``base_url`` is accepted too).
        generate_kwargs / client_args: more ``acompletion`` arguments for every call
            (``aws_region_name``, ``vertex_project``, ``drop_params``, ``extra_headers``
            ...); a ``timeout`` or ``max_retries`` in ``client_args`` sets the model's own.
        **kwargs: generation arguments, ``max_retries``, ``timeout``,
            ``custom_role_conversions``, ``retry_policy``, ``structured_output``, and any
            other ``acompletion`` argument.

    Retries are ours (LiteLLM's ``num_retries`` is 0); an argument LiteLLM says the
    target provider does not take raises :class:`UnsupportedOptionError`.
    """

    provider = "litellm"

    def __init__(
        self,
        model_name: str,
        api_key: str | None = None,
        stream: bool = False,
        api_base: str | None = None,
        base_url: str | None = None,
        generate_kwargs: dict[str, Any] | None = None,
        client_args: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_name, stream, generate_kwargs=generate_kwargs, **kwargs)
        self.api_key = api_key
        self.api_base = api_base or base_url
        self.client_args = self._client_args(client_args)
        """More ``acompletion`` arguments (``extra_headers`` ...); ``timeout`` and
        ``max_retries`` set this model's own."""

    def _call_args(self, body: dict[str, Any]) -> dict[str, Any]:
        args = {**self.client_args, **body, "num_retries": 0}
        if self.timeout is not None:
            args["timeout"] = self.timeout
        if self.api_key is not None:
            args["api_key"] = self.api_key
        if self.api_base is not None:
            args["api_base"] = self.api_base
        return args

    async def _send(self, body: dict[str, Any]) -> Any:
        return await _litellm().acompletion(**self._call_args(body))

    async def _send_stream(
        self, body: dict[str, Any]
    ) -> tuple[AsyncIterator[Any], Callable[[], Awaitable[None]]]:
        stream = await _litellm().acompletion(**self._call_args(body))

        async def close() -> None:
            closer = getattr(stream, "aclose", None)
            if closer is not None:
                await closer()

        return stream, close

    def _map_error(self, exc: Exception) -> ModelError:
        import openai

        litellm = _litellm()
        if isinstance(exc, litellm.UnsupportedParamsError):
            return UnsupportedOptionError(str(exc), provider=self.provider,
                                          model=self.model_name)
        return self._map_sdk_error(openai, exc)
