"""Models for the server attack tests: one that streams without ever suspending, and
one that streams big chunks for ever (for clients that stop reading)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from agentplex.message import TextBlock
from agentplex.model import ChatModelBase, ChatResponse, ChatResult, Messages


class Hog(ChatModelBase):
    """Streams ``chunks`` chunks of ``size`` characters, never awaiting anything real
    (``suspend=False``) or sleeping briefly between them; records how far it got."""

    provider = "test"

    def __init__(self, chunks: int, size: int = 10, suspend: bool = False) -> None:
        super().__init__("hog", stream=True)
        self.chunks, self.size, self.suspend = chunks, size, suspend
        self.sent = 0
        self.closed = asyncio.Event()
        self.finished = False

    async def _call(self, messages: Messages, tools: Any = None, tool_choice: Any = None,
                    structured_model: Any = None, **kwargs: Any) -> ChatResult:
        return self._stream()

    async def _stream(self) -> AsyncGenerator[ChatResponse, None]:
        piece = "x" * self.size
        try:
            for _ in range(self.chunks):
                self.sent += 1
                yield ChatResponse(content=[TextBlock(text=piece)],
                                   delta=[TextBlock(text=piece)], is_last=False)
                if self.suspend:
                    await asyncio.sleep(0.001)
            self.finished = True
            yield ChatResponse(content=[TextBlock(text=piece)], is_last=True,
                               finish_reason="stop")
        finally:
            self.closed.set()
