"""A model call's result (a :data:`~agentplex.model.ChatResult`) as the test expects it:
one whole response or a stream, asserted, so the type checker knows which."""

from collections.abc import AsyncGenerator

from agentplex.model import ChatResponse, ChatResult


def as_response(result: ChatResult) -> ChatResponse:
    """``result``, which must be one whole response (not a stream)."""
    assert isinstance(result, ChatResponse), f"a stream, not one response: {result!r}"
    return result


def as_stream(result: ChatResult) -> AsyncGenerator[ChatResponse, None]:
    """``result``, which must be a stream of chunks (not one whole response)."""
    assert not isinstance(result, ChatResponse), f"one response, not a stream: {result!r}"
    return result
