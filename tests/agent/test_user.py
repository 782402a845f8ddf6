"""UserAgent fed by a program: a queue, an async iterable, a function."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import anyio
import pytest

from agentplex.agent import UserAgent
from agentplex.message import Msg
from agentplex.runtime import HandlerError, Runtime

pytestmark = pytest.mark.anyio


async def test_fed_through_feed() -> None:
    async with Runtime():
        user = UserAgent("ann")
        user.console = io.StringIO()
        user.feed("hello", Msg("ann", "as a msg", "user"))
        with anyio.fail_after(10):
            first = await user()
            second = await user(Msg("bot", "question?", "assistant"))
        assert (first.name, first.role, first.get_text_content()) == ("ann", "user", "hello")
        assert second.get_text_content() == "as a msg"
        assert "ann: hello" in user.console.getvalue()


async def test_waits_for_input_that_arrives_later() -> None:
    queue: asyncio.Queue[str] = asyncio.Queue()
    async with Runtime():
        user = UserAgent("ann", source=queue)
        user.set_console_output_enabled(False)
        pending = asyncio.ensure_future(user())
        await asyncio.sleep(0)
        assert not pending.done()
        queue.put_nowait("late")
        with anyio.fail_after(10):
            assert (await pending).get_text_content() == "late"


async def test_async_iterable_source_and_exhaustion() -> None:
    async def lines() -> AsyncIterator[str]:
        yield "one"
        yield "two"

    async with Runtime():
        user = UserAgent("ann", source=lines())
        user.set_console_output_enabled(False)
        with anyio.fail_after(10):
            assert (await user()).get_text_content() == "one"
            assert (await user()).get_text_content() == "two"
            with pytest.raises(HandlerError, match="exhausted"):
                await user()


async def test_function_source_sees_the_message() -> None:
    async def answer(msg: Msg | None) -> str:
        return f"re: {msg.get_text_content() if msg else '-'}"

    async with Runtime():
        user = UserAgent("ann", source=answer)
        user.set_console_output_enabled(False)
        with anyio.fail_after(10):
            assert (await user(Msg("bot", "hi", "assistant"))).get_text_content() == "re: hi"
            assert (await user()).get_text_content() == "re: -"
        with pytest.raises(RuntimeError):
            user.feed("x")


async def test_input_timeout() -> None:
    async with Runtime():
        user = UserAgent("ann", source=asyncio.Queue(), input_timeout=0.05)
        user.set_console_output_enabled(False)
        with anyio.fail_after(10), pytest.raises(HandlerError):
            await user()


def test_bad_source() -> None:
    with pytest.raises(TypeError):
        UserAgent("ann", source=42)  # type: ignore[arg-type]
